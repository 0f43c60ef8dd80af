"""How tight are brittle's input margins? Against a per-sample bisection over ε with fixed-ε APGD-CE.

For every model and norm, on the same MNIST test images:

* ``brittle`` (the default) and optionally ``before`` (the attack without its descent stage and fallback:
  ``steps=100, patience=10, descent_steps=0, fallback=False``) and ``fab-autoattack``: wall / CPU time,
  per-sample forward and backward passes, share found;
* ``apgd-bisect``: per sample, the smallest ε at which APGD-CE (``--apgd-steps`` steps, one random start)
  flips the prediction, by ``--levels`` bisection levels over ``[0, u]`` (``u`` the bound of the first
  method; its 0.99 u first), each level seeded anew;
* per method the median / 90th-percentile ratio of its bound to the per-sample best of all, and robust
  accuracy at three ε implied by its margins (correct and margin > ε), next to the robust accuracy of
  APGD-CE at those fixed ε (``apgd-ce-fixed``).

Example::

    python benchmarks/bench_tightness.py --models linf_madry,standard --norms linf,l2 --n 500 \\
        --methods before,brittle --out /tmp/tightness.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch

from brittle import input_margins, load_mnist
from brittle.models import zoo
from brittle.margins.attacks.base import is_flipped, perturbation_norm
from brittle.margins.attacks.pgd import apgd_ce

EPS = {"linf": (0.1, 0.2, 0.3), "l2": (1.0, 1.5, 2.0)}
BEFORE = {"steps": 100, "patience": 10, "descent_steps": 0, "fallback": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="linf_madry,linf_madry_ls,standard,l2_madry")
    p.add_argument("--norms", default="linf,l2")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--methods", default="before,brittle", help="before, brittle, fab-autoattack (comma-separated)")
    p.add_argument("--levels", type=int, default=10, help="bisection levels of apgd-bisect (0: skip it)")
    p.add_argument("--apgd-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--repeats", type=int, default=1, help="runs per method; the fastest time is reported")
    p.add_argument("--out", default=None, help="JSON file for the results")
    return p.parse_args(argv)


def apgd_flips(model: torch.nn.Module, x: torch.Tensor, pred: torch.Tensor, eps: torch.Tensor, norm: str,
               steps: int, seed: int, batch: int = 500) -> tuple[torch.Tensor, int]:
    """Per sample, whether APGD-CE at (per-sample) ``eps`` changes the prediction; and backward passes spent."""
    out = torch.zeros(len(x), dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    passes = 0
    for i in range(0, len(x), batch):
        xb, pb, eb = x[i:i + batch], pred[i:i + batch], eps[i:i + batch]
        x_adv = apgd_ce(model, xb, pb, eb, norm=norm, steps=steps, generator=gen)
        with torch.no_grad():
            flipped = is_flipped(model(x_adv), pb)
        assert bool((perturbation_norm(x_adv - xb, norm) <= eb * (1 + 1e-5) + 1e-6).all())
        out[i:i + batch] = flipped
        passes += len(xb) * (steps + 1)  # an upper bound: APGD stops early on fooled samples
    return out, passes


def apgd_bisect(model: torch.nn.Module, x: torch.Tensor, pred: torch.Tensor, upper: np.ndarray, norm: str,
                levels: int, steps: int) -> np.ndarray:
    cap = 1.0 if norm == "linf" else float(np.sqrt(x[0].numel()))
    u = torch.from_numpy(upper).float()
    hi = torch.where(torch.isfinite(u), u, torch.full_like(u, cap))
    lo = torch.zeros_like(hi)
    found = torch.isfinite(u)
    for level in range(levels):
        mid = 0.99 * hi if level == 0 else (lo + hi) / 2
        flipped, _ = apgd_flips(model, x, pred, mid, norm, steps, seed=level)
        hi, lo = torch.where(flipped, mid, hi), torch.where(flipped, lo, mid)
        found |= flipped
    return torch.where(found, hi, torch.full_like(hi, float("inf"))).numpy()


def run_method(name: str, model: torch.nn.Module, data: Any, norm: str, batch_size: int) -> Any:
    method, options = ("brittle", BEFORE) if name == "before" else (name, {})
    wall, cpu = time.perf_counter(), time.process_time()
    res = input_margins(model, data, norm, method, device="cpu", batch_size=batch_size, **options)
    return res, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    methods = [m for m in args.methods.split(",") if m]
    data = load_mnist().head(args.n)
    x, y = data.x, data.y
    report: dict[str, Any] = {"config": vars(args), "threads": torch.get_num_threads(),
                              "load_average": os.getloadavg(), "results": []}
    for model_name in filter(None, args.models.split(",")):
        model = zoo.load(model_name).eval()
        for norm in filter(None, args.norms.split(",")):
            runs: dict[str, Any] = {}
            timing: dict[str, tuple[float, float]] = {}
            for _ in range(args.repeats):
                for m in methods:
                    res, wall, cpu = run_method(m, model, data, norm, args.batch_size)
                    runs[m] = res
                    best = timing.get(m, (np.inf, np.inf))
                    timing[m] = (min(best[0], wall), min(best[1], cpu))
            pred = torch.from_numpy(runs[methods[0]].pred)
            correct = (pred == y).numpy()
            uppers = {m: r.upper for m, r in runs.items()}
            if args.levels:
                start = time.perf_counter()
                uppers["apgd-bisect"] = apgd_bisect(model, x, pred, runs[methods[0]].upper, norm, args.levels,
                                                    args.apgd_steps)
                timing["apgd-bisect"] = (time.perf_counter() - start, float("nan"))
            best = np.min(np.stack(list(uppers.values())), axis=0)
            finite = np.isfinite(best)
            fixed = {}
            for eps in EPS[norm]:
                flipped, _ = apgd_flips(model, x, pred, torch.full((len(x),), eps), norm, args.apgd_steps, seed=99)
                fixed[str(eps)] = float(np.mean(correct & ~flipped.numpy()))
            entry: dict[str, Any] = {"model": model_name, "norm": norm, "samples": len(x),
                                     "apgd-ce-fixed_robust_accuracy": fixed, "methods": {}}
            for m, u in uppers.items():
                ratio = u[finite] / best[finite]
                row = {"wall_s": round(timing[m][0], 2), "cpu_s": round(timing[m][1], 2),
                       "found": float(np.mean(np.isfinite(u))), "median_upper": float(np.median(u)),
                       "median_ratio_to_best": float(np.median(ratio)),
                       "p90_ratio_to_best": float(np.percentile(ratio, 90)),
                       "robust_accuracy": {str(e): float(np.mean(correct & (u > e))) for e in EPS[norm]}}
                if m in runs:
                    row["forward_per_sample"] = runs[m].forward_passes / len(x)
                    row["backward_per_sample"] = runs[m].backward_passes / len(x)
                entry["methods"][m] = row
            report["results"].append(entry)
            print(f"{model_name} {norm}: APGD-CE-{args.apgd_steps} fixed-eps robust accuracy {fixed}")
            for m, row in entry["methods"].items():
                print(f"  {m:16s} wall {row['wall_s']:7.2f}s cpu {row['cpu_s']:7.2f}s "
                      f"fwd {row.get('forward_per_sample', float('nan')):6.1f} "
                      f"bwd {row.get('backward_per_sample', float('nan')):6.1f} found {row['found']:.3f} "
                      f"ratio med {row['median_ratio_to_best']:.4f} p90 {row['p90_ratio_to_best']:.4f} "
                      f"RA {row['robust_accuracy']}", flush=True)
            if args.out:
                with open(args.out, "w") as fh:
                    json.dump(report, fh, indent=2)
    return report


if __name__ == "__main__":
    main()
