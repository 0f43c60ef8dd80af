"""Throughput of test-time adaptation (images/s): each brittle method, gated vs not, against a plain torch TENT
loop written the obvious way (no test-time-adaptation library installs offline to compare with).

The plain loop puts the model in train mode with BatchNorm's running statistics switched off (batch
statistics, as TENT's reference code), and Adam-steps the entropy of the softmax w.r.t. the BatchNorm affine
parameters. brittle's TENT with ``bn_stats="batch"`` must produce the same predictions (checked, max |Δlogit|
reported). Timings interleave the variants (best of ``--repeat``) so a busy machine slows all alike.

    OMP_NUM_THREADS=1 python benchmarks/bench_adaptation.py --n 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
from torch import nn
from brittle.core.provenance import cpu_name


def plain_tent(model: nn.Module, x: torch.Tensor, batch: int, lr: float = 1e-3) -> torch.Tensor:
    net = copy.deepcopy(model)
    net.train()
    net.requires_grad_(False)
    params = []
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
            m.weight.requires_grad_(True)
            m.bias.requires_grad_(True)
            params += [m.weight, m.bias]
    opt = torch.optim.Adam(params, lr=lr)
    outs = []
    for i in range(0, len(x), batch):
        logits = net(x[i:i + batch])
        loss = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        outs.append(logits.detach())
    return torch.cat(outs)


def brittle_run(model: nn.Module, x: torch.Tensor, batch: int, method: str, **kw) -> torch.Tensor:
    from brittle.adaptation import make_adapter

    a = make_adapter(method, **kw).fit(model)
    return torch.cat([a.step(x[i:i + batch]).logits for i in range(0, len(x), batch)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--batches", default="128,16,1")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(1)
    from brittle.data import corrupt, load_mnist
    from brittle.models.loading import load_model

    model = load_model("standard_bn", device="cpu")
    x = corrupt(load_mnist("test").head(args.n), "fog", 5).x
    variants = {
        "plain torch TENT loop": lambda b: plain_tent(model, x, b),
        "source (no adaptation)": lambda b: brittle_run(model, x, b, "source"),
        "bn statistics": lambda b: brittle_run(model, x, b, "bn"),
        "tent": lambda b: brittle_run(model, x, b, "tent"),
        "tent (bn_stats=batch)": lambda b: brittle_run(model, x, b, "tent", bn_stats="batch"),
        "tent + least (threshold, 20 steps)": lambda b: brittle_run(model, x, b, "tent", gate="least",
                                                                    window_unit="steps"),
        "tent + least-single": lambda b: brittle_run(model, x, b, "tent", gate="least-single"),
        "pl": lambda b: brittle_run(model, x, b, "pl"),
        "pl + least-single": lambda b: brittle_run(model, x, b, "pl", gate="least-single"),
        "shot-im": lambda b: brittle_run(model, x, b, "shot-im"),
        "shot-im + least-single": lambda b: brittle_run(model, x, b, "shot-im", gate="least-single"),
    }
    results = []
    for fn in (variants["plain torch TENT loop"], variants["tent"]):  # warm-up (allocator, kernels)
        fn(128)
    for b in (int(v) for v in args.batches.split(",")):
        best: dict[str, float] = {}
        outputs: dict[str, torch.Tensor] = {}
        for _ in range(args.repeat):
            for name, fn in variants.items():
                if b == 1 and (name.startswith("plain") or "bn_stats=batch" in name):
                    continue  # batch statistics of one image: train-mode BatchNorm1d refuses it, so does brittle
                t0 = time.perf_counter()
                outputs[name] = fn(b)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
        ref = outputs.get("plain torch TENT loop")
        for name, sec in best.items():
            diff = None
            if ref is not None and name == "tent (bn_stats=batch)":
                diff = float((outputs[name] - ref).abs().max())
            results.append({"batch": b, "variant": name, "images_per_s": round(args.n / sec, 1),
                            "seconds": round(sec, 3), "max_abs_logit_diff_vs_plain": diff})
            print(f"batch {b:4d}  {name:36s} {args.n / sec:9.1f} img/s" + (f"  max|Δlogit| vs plain {diff:.2e}"
                                                                             if diff is not None else ""), flush=True)
    machine = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread"
    print(machine)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "n": args.n, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
