"""Studies of the budget stage of brittle's attack (issue #13), on the CPU, one torch thread.

``vs-aa``: robust accuracy read off brittle's margins (``budgets=[ε]``, attack options as JSON) on the first
``n`` MNIST test images, against AutoAttack's per-sample results kept in
``benchmarks/results/autoattack_gpu_aa.json`` (the H200 run, 1,000 images), with the flips only one of the
two finds and brittle's process CPU time::

    python benchmarks/study_budget_stage.py vs-aa linf_madry 0.3 --n 1000 --options '{"square_candidates": 5}'

``vs-apgd-t``: the same against brittle's own fixed-ε APGD-T (9 targets, 100 steps; weaker than AutoAttack
but minutes instead of hours on the CPU), for any model and norm, e.g. the robust models in their other norm::

    python benchmarks/study_budget_stage.py vs-apgd-t --groups linf_madry:l2,linf_madry_ls:l2,l2_madry:linf \
        --n 200 --out /tmp/cross.json

``where``: which budget attack (APGD-CE, then APGD-T, then Square, each on the rows the earlier ones left)
flips each row, by the row's bound relative to ε before the stage, for L∞ models at 0.1 / 0.2 / 0.3. The
stage is re-run here attack by attack so that each flip is attributed (the compact order of
`FastBoundaryAttack`), with both windows widened (default 25%) to see past them::

    python benchmarks/study_budget_stage.py where --models standard,linf_madry,linf_madry_ls,linf_trades,linf_small \\
        --n 500 --out /tmp/where.json
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from typing import ClassVar

import numpy as np
import torch

from brittle import input_margins, load_mnist
from brittle.margins.attacks.apgd import apgd_ce, apgd_t
from brittle.margins.attacks.base import perturbation_norm
from brittle.margins.attacks.fast_boundary import FastBoundaryAttack
from brittle.margins.attacks.square import square_linf
from brittle.models import zoo

AA_CACHE = "benchmarks/results/autoattack_gpu_aa.json"


def vs_aa(args: argparse.Namespace) -> None:
    opts = json.loads(args.options)
    with open(AA_CACHE) as fh:
        aa = json.load(fh)[f"{args.model}|linf|{args.eps}|1000|cuda"]
    aa_robust = np.array([c == "1" for c in aa["robust"]])[:args.n]
    data = load_mnist().head(args.n)
    model = zoo.load(args.model).eval()
    start = time.process_time()
    out = input_margins(model, data, "linf", batch_size=500, budgets=[args.eps], **opts)
    seconds = time.process_time() - start
    robust = (out.pred == data.y.numpy()) & (out.upper > args.eps)
    print(f"{args.model} eps={args.eps} n={args.n} {opts}: brittle {robust.mean() * 100:.1f}% "
          f"AutoAttack {aa_robust.mean() * 100:.1f}% AutoAttack-only flips {(robust & ~aa_robust).sum()} "
          f"brittle-only flips {(aa_robust & ~robust).sum()} cpu {seconds:.1f}s")


EPS = {"linf": (0.1, 0.2, 0.3), "l2": (1.0, 1.5, 2.0)}


def vs_apgd_t(args: argparse.Namespace) -> None:
    data = load_mnist().head(args.n)
    y = data.y
    results = []
    for spec in args.groups.split(","):
        name, norm = spec.split(":")
        model = zoo.load(name).eval()
        start = time.process_time()
        out = input_margins(model, data, norm, batch_size=500, budgets=list(EPS[norm]))
        seconds = time.process_time() - start
        correct = out.pred == y.numpy()
        row = {"model": name, "norm": norm, "n": args.n, "brittle_cpu_seconds": round(seconds, 2), "eps": []}
        for eps in EPS[norm]:
            x_adv = apgd_t(model, data.x, y, eps, norm=norm, steps=100, targets=9,
                           generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                apgd_robust = correct & (model(x_adv).argmax(1) == y).numpy()
            robust = correct & (out.upper > eps)
            row["eps"].append({"eps": eps, "brittle": float(robust.mean()), "apgd_t": float(apgd_robust.mean()),
                               "apgd_t_only_flips": int((robust & ~apgd_robust).sum())})
            print(f"{name} {norm} eps={eps}: brittle (budgets) {robust.mean() * 100:.1f}%, APGD-T "
                  f"{apgd_robust.mean() * 100:.1f}%, APGD-T-only flips {(robust & ~apgd_robust).sum()}", flush=True)
        results.append(row)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"config": vars(args), "results": results}, fh, indent=1)


class AttributingAttack(FastBoundaryAttack):
    """`FastBoundaryAttack` whose budget stage records, per row, which attack flipped it (compact order)."""

    records: ClassVar[list[tuple[str, float, float, bool, bool, bool]]] = []
    model_name = ""

    def _budget_attacks(self, model, x0, pred, x_best, n_best, lo, hi, windows, masked):
        (eps, rows), = windows  # compact mode: one window per call
        if len(rows) == 0:
            return x_best, n_best
        xs, ps = x0[rows].reshape(len(rows), *self._shape), pred[rows]
        e = torch.full((len(rows),), eps)
        options = {"norm": self.norm, "steps": self.budget_steps, "domain": (lo, hi), "masked": False}
        xa = apgd_ce(model, xs, ps, e, **options)
        by_ce = self._flipped(model, xa, ps)
        by_t, by_square = torch.zeros_like(by_ce), torch.zeros_like(by_ce)
        left = (~by_ce).nonzero().flatten()
        if len(left):
            xa[left] = apgd_t(model, xs[left], ps[left], e[left], targets=self.budget_targets, **options)
            by_t[left] = self._flipped(model, xa[left], ps[left])
        left = (~(by_ce | by_t)).nonzero().flatten()
        if len(left):
            xa[left] = square_linf(model, xs[left], ps[left], e[left], queries=self.budget_queries,
                                   candidates=self.square_candidates, domain=(lo, hi), masked=False)
            by_square[left] = self._flipped(model, xa[left], ps[left])
        rel = (n_best[rows] / eps - 1).tolist()
        for i in range(len(rows)):
            self.records.append((self.model_name, eps, rel[i], bool(by_ce[i]), bool(by_t[i]), bool(by_square[i])))
        xa = xa.reshape(len(rows), -1)
        dist = perturbation_norm(xa - x0[rows], self.norm)
        better = self._flipped(model, xa, ps) & (dist < n_best[rows])
        n_best, x_best = n_best.clone(), x_best.clone()
        n_best[rows[better]], x_best[rows[better]] = dist[better], xa[better]
        return x_best, n_best


def where(args: argparse.Namespace) -> None:
    data = load_mnist().head(args.n)
    for name in args.models.split(","):
        AttributingAttack.model_name = name
        attack = AttributingAttack("linf", budgets=[0.1, 0.2, 0.3], budget_window=args.window,
                                   square_window=args.window, masked=False)
        model = zoo.load(name).eval()
        attack(model, data.x, model(data.x).argmax(1).detach(), data.domain)
    rec = AttributingAttack.records
    for label, col in (("APGD-CE", 3), ("APGD-T", 4), ("Square", 5)):
        flips = [r for r in rec if r[col]]
        by_group = collections.defaultdict(list)
        for r in flips:
            by_group[f"{r[0]} at {r[1]}"].append(round(r[2], 3))
        print(f"{label}: {len(flips)} flips, the farthest {max((r[2] for r in flips), default=0):.3f} above ε")
        for group, rels in sorted(by_group.items()):
            print(f"    {group}: {sorted(rels)}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"config": vars(args), "columns": ["model", "eps", "bound/eps-1", "apgd_ce", "apgd_t",
                                                         "square"], "rows": rec}, fh)


def main(argv: list[str] | None = None) -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="study", required=True)
    a = sub.add_parser("vs-aa")
    a.add_argument("model")
    a.add_argument("eps", type=float)
    a.add_argument("--n", type=int, default=1000)
    a.add_argument("--options", default="{}", help="JSON of brittle attack options")
    t = sub.add_parser("vs-apgd-t")
    t.add_argument("--groups", default="linf_madry:l2,linf_madry_ls:l2,linf_trades:l2,linf_small:l2,l2_madry:linf")
    t.add_argument("--n", type=int, default=200)
    t.add_argument("--out", default=None)
    w = sub.add_parser("where")
    w.add_argument("--models", default="standard,linf_madry,linf_madry_ls,linf_trades,linf_small")
    w.add_argument("--n", type=int, default=500)
    w.add_argument("--window", type=float, default=0.25)
    w.add_argument("--out", default=None)
    args = p.parse_args(argv)
    {"vs-aa": vs_aa, "vs-apgd-t": vs_apgd_t, "where": where}[args.study](args)


if __name__ == "__main__":
    main()
