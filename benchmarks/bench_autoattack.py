"""Robust accuracy read off brittle's input margins against AutoAttack's standard ensemble, at fixed ε.

For every (model, norm) row group, on the same MNIST test images:

* ``brittle``: one minimal-norm run (``brittle.input_margins``, default options unless ``--strength`` /
  ``--options``, with ``budgets`` = the row group's three ε) gives every ε at once: a sample counts as robust
  at ε when it is classified correctly and its verified upper-bound margin exceeds ε; ``brittle_plain`` is
  the same without ``budgets`` (margins that know of no ε);
* ``autoattack``: AutoAttack ``version="standard"`` (APGD-CE, APGD-T, FAB-T, Square; PyPI ``pyautoattack``),
  one run per ε, seed 0;
* ``union``: robust only if neither attack flips the sample (how much each attack adds to the other).

Wall time and per-sample forward / backward passes are recorded for both (AutoAttack's model is wrapped in
brittle's pass counter). AutoAttack's per-sample outcome is kept in the JSON (``robust`` as a string of 0/1),
and ``--aa-cache FILE`` reuses AutoAttack results already computed for the same model, norm, ε, images and
device (AutoAttack does not depend on brittle's code), so brittle's side can be re-measured alone.

Examples::

    OMP_NUM_THREADS=1 python benchmarks/bench_autoattack.py --n 500 --device cpu \\
        --aa-cache benchmarks/results/autoattack_cpu_aa.json --out benchmarks/results/autoattack_cpu.json
    python benchmarks/bench_autoattack.py --n 1000 --device cuda --out /tmp/autoattack_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
import torch

from brittle import input_margins, load_mnist
from brittle.margins.attacks.base import CountingModel, is_flipped
from brittle.models import zoo
from brittle.models.loading import resolve_device

EPS = {"linf": (0.1, 0.2, 0.3), "l2": (1.0, 1.5, 2.0)}
#: the issue's row groups: the L∞-trained models in L∞, the L2-trained one in L2, the standard model in both
GROUPS = ("linf_madry:linf,linf_madry_ls:linf,linf_trades:linf,l2_madry:l2,standard:linf,standard:l2,"
          "linf_small:linf")
#: the other norm of each robust model (the attack must hold there too)
CROSS = "linf_madry:l2,linf_madry_ls:l2,linf_trades:l2,linf_small:l2,l2_madry:linf"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", default=GROUPS, help="comma-separated model:norm pairs ('cross' adds the other "
                                                    "norm of each robust model)")
    p.add_argument("--n", type=int, default=500, help="first n MNIST test images")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=500, help="brittle's and AutoAttack's batch size")
    p.add_argument("--strength", default=None, help="brittle's strength setting (default: the default)")
    p.add_argument("--options", default="{}", help="JSON of extra brittle attack options")
    p.add_argument("--no-budgets", action="store_true",
                   help="run brittle without budgets=<the row's ε> (by default brittle gets them, and a second "
                        "run without them is reported as brittle_plain)")
    p.add_argument("--aa-cache", default=None, help="JSON file of AutoAttack results to reuse and extend")
    p.add_argument("--skip-aa", action="store_true", help="brittle only (AutoAttack from the cache if there)")
    p.add_argument("--aa-device", default=None, help="with --skip-aa: read AutoAttack's results measured on this "
                                                     "device type (e.g. cuda) from the cache, to set brittle on "
                                                     "--device against them (times are then not comparable)")
    p.add_argument("--time-limit", type=float, default=None, help="stop starting new groups after this many s")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--table", default=None, metavar="JSON",
                   help="print the markdown table of a results file (as in benchmarks/RESULTS.md) and exit")
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
                   device: torch.device, batch_size: int) -> dict[str, Any]:
    """AutoAttack standard at ``eps``: per-sample robustness (correct and not flipped), time, passes."""
    from pyautoattack import AutoAttack

    counting = CountingModel(model).eval()
    adversary = AutoAttack(counting, norm="Linf" if norm == "linf" else "L2", eps=eps, version="standard",
                           seed=0, device=device)
    adversary.verbose = False
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    _sync(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    with torch.no_grad():
        logits = model(x_adv.to(device))
    dist = (x_adv - x).reshape(len(x), -1)
    dist = dist.abs().amax(1) if norm == "linf" else dist.norm(dim=1)
    ok = dist <= eps * (1 + 1e-5) + 1e-6
    robust = (logits.argmax(1) == y) & ~(is_flipped(logits, y) & ok)
    return {"robust": "".join("1" if r else "0" for r in robust.cpu().tolist()),
            "robust_accuracy": float(robust.float().mean()), "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 3),
            "forward_per_sample": counting.cost.forward / len(x),
            "backward_per_sample": counting.cost.backward / len(x)}


def markdown_table(report: dict[str, Any]) -> str:
    """RESULTS.md's table of a results file: times are process CPU times on the CPU, wall times on a GPU."""
    cpu = not str(report["device"]).startswith("cuda")
    key = "cpu_seconds" if cpu else "seconds"
    lines = ["| model | norm | ε | brittle (budgets) | brittle plain | AutoAttack | union | gap (pt) | "
             "brittle s (budgets / plain) | AutoAttack s | time ratio (summed) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    pct = lambda v: "" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for r in report["results"]:
        ratio = r.get("cpu_time_ratio" if cpu else "time_ratio")
        for i, e in enumerate(r["eps"]):
            first = i == 0
            gap = e.get("gap_points")
            lines.append("| " + " | ".join([
                r["model"] if first else "", r["norm"] if first else "", str(e['eps']),
                pct(e["brittle_robust_accuracy"]), pct(e["brittle_plain_robust_accuracy"]),
                pct(e.get("autoattack_robust_accuracy")), pct(e.get("union_robust_accuracy")),
                "" if gap is None else (f"**{gap:+.1f}**" if gap > 0.2 else f"{gap:+.1f}"),
                f"{r['brittle'][key]:.2f} / {r['brittle_plain'][key]:.2f}" if first else "",
                "" if e.get(f"autoattack_{key}") is None else f"{e[f'autoattack_{key}']:.1f}",
                f"**{ratio:.3f}**" if first and ratio is not None else ""]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.table:
        with open(args.table) as fh:
            report = json.load(fh)
        print(markdown_table(report))
        return report
    if args.aa_device and not args.skip_aa:
        raise SystemExit("--aa-device reads AutoAttack's results from the cache: add --skip-aa")
    device = resolve_device(args.device)
    options = json.loads(args.options)
    if args.strength is not None:
        options["strength"] = args.strength
    data = load_mnist().head(args.n)
    x, y = data.x.to(device), data.y.to(device)
    cache: dict[str, Any] = {}
    if args.aa_cache and os.path.exists(args.aa_cache):
        with open(args.aa_cache) as fh:
            cache = json.load(fh)
    groups = args.groups.replace("cross", CROSS)
    report: dict[str, Any] = {
        "benchmark": "autoattack_comparison", "config": vars(args), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
        "results": []}
    try:
        from importlib.metadata import version
        report["pyautoattack"] = version("pyautoattack")
    except Exception:  # noqa: BLE001 - only a label
        report["pyautoattack"] = None
    from brittle import __version__
    report["brittle"] = __version__
    if device.type == "cuda":  # warm-up (kernels, cuDNN handles), outside every timed run
        first, first_norm = groups.split(",")[0].split(":")
        input_margins(zoo.load(first).to(device).eval(), data.head(16), first_norm, device=device)
    t_start = time.perf_counter()
    for spec in filter(None, groups.split(",")):
        if args.time_limit is not None and time.perf_counter() - t_start > args.time_limit:
            print(f"time limit reached, skipping {spec}", flush=True)
            continue
        name, norm = spec.split(":")
        model = zoo.load(name).to(device).eval()
        def brittle_run(extra: dict[str, Any]) -> tuple[Any, float, float]:
            _sync(device)
            start, cpu = time.perf_counter(), time.process_time()
            out = input_margins(model, data, norm, device=device, batch_size=args.batch_size, **options, **extra)
            _sync(device)
            return out, time.perf_counter() - start, time.process_time() - cpu

        plain, p_seconds, p_cpu = brittle_run({})
        if args.no_budgets:
            res, b_seconds, b_cpu = plain, p_seconds, p_cpu
        else:
            res, b_seconds, b_cpu = brittle_run({"budgets": list(EPS[norm])})
        correct = res.pred == data.y.numpy()
        entry: dict[str, Any] = {
            "model": name, "norm": norm, "samples": args.n, "clean_accuracy": float(correct.mean()),
            "brittle": {"seconds": round(b_seconds, 3), "cpu_seconds": round(b_cpu, 3), "forward_per_sample": res.forward_passes / args.n,
                        "backward_per_sample": res.backward_passes / args.n,
                        "found": float(np.isfinite(res.upper).mean()),
                        "median_upper": float(np.median(res.upper))},
            "brittle_plain": {"seconds": round(p_seconds, 3), "cpu_seconds": round(p_cpu, 3),
                              "forward_per_sample": plain.forward_passes / args.n,
                              "backward_per_sample": plain.backward_passes / args.n},
            "budgets": not args.no_budgets, "eps": []}
        aa_total, aa_cpu = 0.0, 0.0
        for eps in EPS[norm]:
            key = f"{name}|{norm}|{eps}|{args.n}|{args.aa_device or device.type}"
            aa = cache.get(key)
            if aa is None and not args.skip_aa:
                aa = run_autoattack(model, x, y, norm, eps, device, args.batch_size)
                cache[key] = aa
                if args.aa_cache:
                    with open(args.aa_cache, "w") as fh:
                        json.dump(cache, fh)
            b_robust = correct & (res.upper > eps)
            row: dict[str, Any] = {"eps": eps, "brittle_robust_accuracy": float(b_robust.mean()),
                                   "brittle_plain_robust_accuracy": float((correct & (plain.upper > eps)).mean())}
            if aa is not None:
                a_robust = np.array([c == "1" for c in aa["robust"]])
                aa_total += aa["seconds"]
                aa_cpu += aa.get("cpu_seconds", float("nan"))
                row.update({"autoattack_robust_accuracy": float(a_robust.mean()),
                            "union_robust_accuracy": float((b_robust & a_robust).mean()),
                            "flipped_by_autoattack_only": int((b_robust & ~a_robust).sum()),
                            "flipped_by_brittle_only": int((a_robust & ~b_robust).sum()),
                            "gap_points": round(100 * float(b_robust.mean() - a_robust.mean()), 2),
                            "autoattack_seconds": aa["seconds"], "autoattack_cpu_seconds": aa.get("cpu_seconds"),
                            "autoattack_forward_per_sample": aa["forward_per_sample"],
                            "autoattack_backward_per_sample": aa["backward_per_sample"]})
            entry["eps"].append(row)
            print(f"{name} {norm} eps={eps}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "eps"),
                  flush=True)
        if aa_total:
            entry["autoattack_seconds_summed"] = round(aa_total, 3)
            entry["autoattack_cpu_seconds_summed"] = round(aa_cpu, 3)
            entry["time_ratio"] = round(b_seconds / aa_total, 4)
            # on a shared CPU the process time is the fairer figure (both sides run on one thread)
            entry["cpu_time_ratio"] = round(b_cpu / aa_cpu, 4) if device.type == "cpu" else None
            entry["max_gap_points"] = max(r["gap_points"] for r in entry["eps"])
            ratio = entry["cpu_time_ratio"] if device.type == "cpu" else entry["time_ratio"]
            entry["meets_targets"] = bool(entry["max_gap_points"] <= 0.2 and ratio <= 0.2)
        print(f"{name} {norm}: brittle {b_seconds:.2f}s (cpu {b_cpu:.2f}s), AutoAttack summed {aa_total:.2f}s "
              f"(cpu {aa_cpu:.2f}s), ratio {entry.get('time_ratio')} / cpu {entry.get('cpu_time_ratio')}, max gap {entry.get('max_gap_points')} pt", flush=True)
        report["results"].append(entry)
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(report, fh, indent=1)
    return report


if __name__ == "__main__":
    main()
