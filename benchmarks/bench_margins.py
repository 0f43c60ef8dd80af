"""Benchmark minimal-norm attacks side by side on MNIST test images: bound tightness, passes, wall time.

Examples::

    python benchmarks/bench_margins.py --models standard,linf_madry --n 500 --norms linf,l2 \\
        --out benchmarks/results/margins.json
    python benchmarks/bench_margins.py --model brittle.models.zoo.architectures:mnist_cnn --weights cnn.pt --n 200

For every model and norm, each method runs on the same images; per method the report gives wall time,
per-sample forward / backward passes, the fraction of samples with a verified adversarial example, the
median bound, and the median / 90th percentile per-sample ratio of its bound to the best bound any method
found (1.0 = always the best). With ``--lower ibp|crown`` it adds the median bracket gap
``(best upper - certified lower) / best upper``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brittle import input_margins, load_mnist, load_model
from brittle.margins.attacks import available

DEFAULT_METHODS = "brittle,fab-autoattack,fab-torchattacks"
#: benchmark-only variants of a method: (method, its options)
VARIANTS = {"brittle-eager": ("brittle", {"cuda_graphs": False})}  # brittle without CUDA graphs (same bounds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="", help="comma-separated zoo model names")
    p.add_argument("--model", action="append", default=[], help="module:factory (or a TorchScript file); repeatable")
    p.add_argument("--weights", action="append", default=[], help="state dict for the --model at the same position")
    p.add_argument("--n", type=int, default=500, help="MNIST test images (the first n, after --offset)")
    p.add_argument("--offset", type=int, default=0, help="index of the first test image")
    p.add_argument("--norms", default="linf,l2")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--lower", choices=["ibp", "crown-ibp", "crown"], default=None, help="add certified lower bounds")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file for the results")
    return p.parse_args(argv)


def models_from(args: argparse.Namespace) -> list[tuple[str, torch.nn.Module]]:
    out = [(name, load_model(name, device=args.device)) for name in filter(None, args.models.split(","))]
    if args.weights and len(args.weights) != len(args.model):
        sys.exit("--weights must be given once per --model (same order)")
    for i, spec in enumerate(args.model):
        weights = args.weights[i] if args.weights else None
        out.append((spec if weights is None else f"{spec}@{Path(weights).name}",
                    load_model(spec, weights, device=args.device)))
    if not out:
        sys.exit("no model: pass --models NAME[,NAME] (zoo) or --model module:factory --weights PATH")
    return out


def summarize(runs: dict[str, Any], lower: np.ndarray | None) -> dict[str, Any]:
    """Per-method statistics relative to the per-sample best bound of all methods."""
    best = np.min(np.stack([r.upper for r in runs.values()]), axis=0)
    finite = np.isfinite(best)
    table: dict[str, Any] = {}
    for name, r in runs.items():
        ratio = np.where(finite, r.upper / np.where(finite, best, 1.0), np.nan)[finite]
        table[name] = {
            "method": r.method, "seconds": round(r.seconds, 3),
            "forward_per_sample": r.forward_passes / len(r), "backward_per_sample": r.backward_passes / len(r),
            "found": float(np.mean(np.isfinite(r.upper))),
            "median_upper": float(np.median(r.upper)),
            "median_ratio_to_best": float(np.median(ratio)) if ratio.size else None,
            # "higher": no interpolation, so a method that found nothing for >10% of samples gets inf, not nan
            "p90_ratio_to_best": float(np.percentile(ratio, 90, method="higher")) if ratio.size else None,
            "share_best": float(np.mean(r.upper[finite] <= best[finite] * (1 + 1e-6))) if finite.any() else None,
        }
    out: dict[str, Any] = {"methods": table, "samples": int(len(best)), "best_found": float(finite.mean())}
    if lower is not None:
        both = finite & np.isfinite(lower)
        gap = (best[both] - lower[both]) / best[both]
        factor = best[both] / np.maximum(lower[both], 1e-12)
        out["bracket"] = {"median_lower": float(np.median(lower)), "median_best_upper": float(np.median(best)),
                          "median_relative_gap": float(np.median(gap)) if gap.size else None,
                          "median_upper_over_lower": float(np.median(factor)) if factor.size else None}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    missing = [m for m in methods if m not in ("brittle", "ensemble", *VARIANTS) and not available(m)]
    if missing:
        print(f"skipping methods whose library is not installed: {', '.join(missing)}", file=sys.stderr)
        methods = [m for m in methods if m not in missing]
    data = load_mnist().subset(slice(args.offset, args.offset + args.n))
    results = []
    for model_name, model in models_from(args):
        for norm in filter(None, args.norms.split(",")):
            runs = {}
            for method in methods:
                if method in ("deepfool-torchattacks", "ddn-foolbox") and norm != "l2":
                    continue
                name, options = VARIANTS.get(method, (method, {}))
                # warm-up on a few images (CUDA context, kernel selection), so that no method pays for it
                input_margins(model, data.head(8), norm, name, batch_size=8, device=args.device, seed=args.seed,
                              **options)
                start = time.perf_counter()
                runs[method] = input_margins(model, data, norm, name, batch_size=args.batch_size,
                                             device=args.device, seed=args.seed, **options)
                print(f"{model_name} {norm} {method}: {time.perf_counter() - start:.1f}s", file=sys.stderr)
            lower = None
            if args.lower:
                from brittle.margins.bounds import certified_lower_bounds

                pred = torch.from_numpy(runs[methods[0]].pred)
                best = np.min(np.stack([r.upper for r in runs.values()]), axis=0)
                lower = certified_lower_bounds(model.cpu(), data.x, pred, norm, data.domain, method=args.lower,
                                               upper=torch.from_numpy(best)).numpy()
            summary = summarize(runs, lower)
            results.append({"model": model_name, "norm": norm, **summary})
            print_table(model_name, norm, summary)
            write(args, results)  # after every model and norm, so a long run keeps what it finished
    return write(args, results)


def write(args: argparse.Namespace, results: list[dict[str, Any]]) -> dict[str, Any]:
    report = {
        "config": dict(vars(args)),
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
                        "cuda": torch.cuda.is_available()},
        "results": results,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


def print_table(model: str, norm: str, summary: dict[str, Any]) -> None:
    print(f"\n{model} / {norm} ({summary['samples']} images)")
    print(f"{'method':<22}{'time s':>9}{'fwd/x':>8}{'bwd/x':>8}{'found':>7}{'median':>10}{'med/best':>10}"
          f"{'p90/best':>10}")
    for name, row in summary["methods"].items():
        print(f"{name:<22}{row['seconds']:>9.2f}{row['forward_per_sample']:>8.0f}{row['backward_per_sample']:>8.0f}"
              f"{row['found']:>7.3f}{row['median_upper']:>10.4f}{row['median_ratio_to_best'] or float('nan'):>10.4f}"
              f"{row['p90_ratio_to_best'] or float('nan'):>10.4f}")
    if "bracket" in summary:
        b = summary["bracket"]
        print(f"bracket: median lower {b['median_lower']:.4f}, median best upper {b['median_best_upper']:.4f}, "
              f"median relative gap {b['median_relative_gap']}")


if __name__ == "__main__":
    main()
