"""Throughput of `brittle.logit_margins` against the plain forward pass it is built on.

Usage::

    python benchmarks/bench_logit_margin.py --models standard,linf_madry --n 10000 --batch-size 1024 --repeats 7

Both sides see the same model, the same 10k bundled MNIST test images and the same batch size; the plain side
is ``model(x[i:i+B])`` under ``torch.inference_mode()`` in a loop (the least any scorer must do), brittle's
side is the full public call (validation, device placement, logit checks, top-2, numpy results). The two are
timed alternately, ``--repeats`` times each, so load from other processes hits both alike; the figure is
the ratio of median throughputs (target ≥ 0.95). Prints one JSON object (``--out`` also writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

import brittle
import brittle.models.zoo as zoo
from brittle.data.loading import load_mnist
from brittle.models.loading import resolve_device


def resnet50_case(n: int) -> tuple[torch.nn.Module, "brittle.Data"]:
    """torchvision ResNet-50 with random weights (timing only) and ``n`` random 224-px RGB images in [0, 1]."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.rand(n, 3, 224, 224)
    return model, brittle.as_data(x, num_classes=1000)


def plain_forward(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> None:
    with torch.inference_mode():
        for lo in range(0, len(x), batch_size):
            model(x[lo:lo + batch_size].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()


def brittle_scores(model: torch.nn.Module, data, batch_size: int, device: torch.device) -> None:
    brittle.logit_margins(model, data, batch_size=batch_size, device=device)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="standard,linf_madry",
                   help="zoo names, and/or resnet50 (torchvision, random weights, random 224-px images)")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    mnist = load_mnist().head(args.n)
    rows = []
    for name in args.models.split(","):
        if name == "resnet50":
            model, data = resnet50_case(args.n)
            model = model.to(device)
        else:
            model, data = zoo.load(name).to(device).eval(), mnist
        plain_forward(model, data.x, args.batch_size, device)  # warm-up (allocator, kernels)
        brittle_scores(model, data, args.batch_size, device)
        plain_s, brittle_s = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            plain_forward(model, data.x, args.batch_size, device)
            plain_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            brittle_scores(model, data, args.batch_size, device)
            brittle_s.append(time.perf_counter() - t0)
        plain, ours = statistics.median(plain_s), statistics.median(brittle_s)
        rows.append({"model": name, "images": args.n, "batch_size": args.batch_size, "plain_forward_s": round(plain, 4),
                     "logit_margins_s": round(ours, 4), "plain_images_per_s": round(args.n / plain),
                     "logit_margins_images_per_s": round(args.n / ours),
                     "throughput_ratio": round(plain / ours, 3)})
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "logit_margin_throughput", "device": str(device), "torch": torch.__version__,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
              "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
              "load_average": os.getloadavg(), "batch_size": args.batch_size, "repeats": args.repeats,
              "results": rows}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
