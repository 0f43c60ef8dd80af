"""Combining OOD detectors on the zoo benchmark (issue #16): single detectors, GROOD, four combination
strategies, and choosing the detectors without OOD data.

    python scripts/ood_combination_study.py --model standard --out docs/ood-combination.md

* ``Benchmark.mnist()`` (bundled MNIST test split: fit 0–3,999, val 4,000–4,999, test 5,000–9,999; OOD =
  Fashion-MNIST and the generated sets, one per name) plus four **synthetic outlier** sets made from the ID
  *validation* images (`brittle.ood.combine.selection`); every detector is fitted once on the fit split and
  scores every set (one forward pass per set, shared).
* The ID validation split is cut in two halves: **val-a** fits every combination strategy, **val-b** is the ID
  side of the synthetic AUROCs used to choose a combination without OOD data.
* Every subset of size 2 and 3 of ``--pool`` × every strategy is evaluated on the synthetic sets (the OOD-free
  choice = best mean synthetic AUROC) and on the real OOD sets (the best in hindsight = best mean real AUROC).
* The page lists every single detector, and each strategy over the same detector sets: two fixed sets, the
  OOD-free choice and the hindsight choice. Every number is computed here; outputs: the markdown page and a
  JSON file beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")

from brittle.analysis.detection import ood_metrics  # noqa: E402
from brittle.models import zoo  # noqa: E402
from brittle.ood.benchmark import Benchmark  # noqa: E402
from brittle.ood.combine.base import make_combiner  # noqa: E402
from brittle.ood.combine.selection import SYNTHETIC_SETS, evaluate_subset, rank_subsets, synthetic_outliers  # noqa: E402
from brittle.ood.registry import detector_names, make_detector  # noqa: E402
from brittle.data.loading import Data  # noqa: E402

STRATEGIES = ("vote", "ecdf", "copula", "ot")
FIXED_SETS = {"feature trio": ("mahalanobis", "vim", "knn"), "logit+feature": ("energy", "mahalanobis", "vim")}
DEFAULT_POOL = "msp,energy,gen,mahalanobis,rmd,knn,vim,she,grood"


METHODS = """# Combining OOD detectors, choosing them without OOD data, and GROOD

brittle fuses the scores of several OOD detectors into one detector (Novello, Prudent, Dalmau, Friedrich,
Pequignot, *Improving Out-of-Distribution Detection by Combining Existing Post-hoc Methods*, arXiv 2407.07135)
and adds GROOD (ElAraby et al., TMLR 2025, arXiv 2312.14427). Single detectors, their metrics and the benchmark
are described in the OOD detectors page (issue #15); this page is about `brittle.ood.combine` and
`brittle.ood.grood`.

## What is implemented

Every strategy is fitted on the ``(N, d)`` scores of ``d`` detectors on **in-distribution validation** inputs
only (columns oriented higher = more OOD), scores a new vector with one number (higher = more OOD), and
calibrates a threshold at a target TPR (`threshold(tpr)`: the ``ceil(tpr·n)``-th smallest fitted score).

| strategy | `--combine` | score | acceptance regions |
|---|---|---|---|
| majority vote | `vote` | the ``⌊d/2⌋+1``-th largest marginal normal score ``Φ⁻¹(F̂_k(s_k))``; per-detector thresholds are one common ID quantile, calibrated jointly so the *vote* accepts the target share | quorum regions |
| empirical CDF | `ecdf` | share of ID vectors dominated component-wise, ``#{i : s_i ≤ s}/n`` (bit-set AND + popcount; equals the brute-force count) | lower sets, one-sided |
| copula CDF | `copula` | Gaussian copula CDF ``Φ_R(z)`` over empirical margins with Gaussian tails; ``R`` = correlation of ID normal scores; Genz's integrand on fixed Sobol points | smooth lower sets |
| center-outward | `ot` | ``‖F±(s)‖``: exact OT (POT `ot.emd`) of standardised ID scores onto a spherical-uniform grid; out of sample by kernel interpolation of the fitted map, plus the standardised norm's excess beyond the ID cloud | center-outward quantile contours, two-sided |

Why a Gaussian copula: the detectors' scores are positively, pair-wise differently dependent; the Gaussian
family has one parameter per pair, is fitted in closed form from ranks, works in any ``d`` and reduces to the
marginal at ``d = 1``; Archimedean copulas force one dependence for all pairs. Why kernel interpolation for the
OT map: the semi-discrete Laguerre-cell extension of the exact plan's dual potentials does not reproduce the
fitted ranks (the network simplex's duals are degenerate), the interpolation does (in 1-D the rank is
``|2F̂ − 1|``, tested). Multi-dimensional AUROC and FPR@TPR (`multidim_metrics`) sweep the strategy's nested
regions; for ``d = 1`` they equal the scalar metrics exactly for vote and copula and up to the fit sample's
resolution for the ECDF (tested). `CombinedDetector` is a registered `Scorer` (``flag_below = False``) over
fitted detectors, usable by the monitor; `brittle ood --combine vote,ecdf,copula,ot --detectors …` fits each
strategy on the run's ID validation split over all the run's detectors and adds `combine:<strategy>` rows to
`summary.json`, `scores.parquet` and the report, with a `combination` section (best single detector, whether
each strategy beats it, thresholds).

**Choosing without OOD data** (`brittle.ood.combine.selection`): four synthetic outlier sets are made from ID
validation images — strong Gaussian noise, 4×4 patch shuffling (not a fixed pixel permutation, which is one
of the real OOD sets), averages of two images of different classes, heavy blur with a quarter occluded — and
every subset × strategy is ranked by its mean AUROC of held-out ID images vs these sets.

**GROOD** (`brittle.ood.grood.GROOD`, registry name `grood`): class prototypes = class means of the penultimate
features; OOD prototype = the mean penultimate feature of the class means of the *first Conv/Linear layer's
output*, mixed pairwise (every class pair, λ = ½) and pushed through the rest of the network (a forward hook
replaces that layer's output; `prepare_fit`, which `Benchmark` calls, needs the model at fit time only); NCP
logits ``−‖h − p_k‖/τ`` (Euclidean, τ = 1); closed-form gradient of the cross-entropy at the nearest ID
prototype w.r.t. the OOD prototype, ``s_ood·(h − p_ood)/(τ‖h − p_ood‖)`` (equal to autograd, tested; the ID
label does not matter); score = Euclidean distance to the nearest of ≤ 5,000 training gradients. Scoring needs
only penultimate features. Choices the abstract leaves open and brittle made: the early layer, the pair set and
λ, Euclidean (not squared) distances, τ, the label of the loss, k = 1, the training-gradient budget.

"""


START, END = "<!-- ood-combination:start -->", "<!-- ood-combination:end -->"


def append_section(page: Path, text: str, full: Path) -> None:
    """Put the results section into ``page`` between the markers (appended the first time)."""
    rel = os.path.relpath(full, page.parent)
    block = f"{START}\n{text}\nMethods, GROOD's choices and the OOD-free selection: [{rel}]({rel}).\n{END}\n"
    old = page.read_text() if page.exists() else ""
    if START in old and END in old:
        new = old[:old.index(START)] + block + old[old.index(END) + len(END) + 1:]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    page.write_text(new)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="standard")
    ap.add_argument("--pool", default=DEFAULT_POOL, help="candidate detectors for the subset search")
    ap.add_argument("--out", default="docs/ood-combination.md")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-qmc", type=int, default=256, help="QMC points of the copula CDF")
    ap.add_argument("--append-to", default=None, help="also put the results section into this page (e.g. "
                    "docs/ood.md), between ood-combination markers (replaced on re-runs)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t_start = time.time()

    model = zoo.load(args.model)
    base = Benchmark.mnist(seed=args.seed)
    real_sets = list(base.ood)
    val = base.val_data
    synth = synthetic_outliers(val.x, val.y.numpy(), seed=args.seed)
    ood = {**base.ood, **{f"syn:{k}": Data(v, None, val.domain, val.num_classes, f"syn:{k}") for k, v in synth.items()}}
    bench = Benchmark(base.fit_data, base.test_data, ood, val=val, name="mnist+synthetic", notes=base.notes)
    syn_sets = [f"syn:{k}" for k in SYNTHETIC_SETS]

    names = detector_names("all")
    dets = [make_detector(n) for n in names]
    log(f"evaluating {len(dets)} detectors on {len(real_sets)} real + {len(syn_sets)} synthetic sets")
    res = bench.evaluate(model, dets, progress=lambda d: log(f"  {d}"))
    scores = {d: dict(per) for d, per in res.scores.items()}
    n_val = len(scores[names[0]]["id_val"])
    half = n_val // 2
    for d in scores:                                   # oriented: every detector is higher = more OOD
        scores[d]["id_val_a"] = scores[d]["id_val"][:half]
        scores[d]["id_val_b"] = scores[d]["id_val"][half:]

    # --- single detectors ---------------------------------------------------------------------------
    def metrics_of(s_id: np.ndarray, per_set: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
        out = {}
        for o in real_sets:
            m = ood_metrics(s_id, per_set[o])
            out[o] = {"auroc": m.auroc, "fpr95": m.fpr_at_tpr}
        return out

    rows: list[dict] = []
    for d in names:
        m = metrics_of(scores[d]["id_test"], scores[d])
        syn = np.mean([ood_metrics(scores[d]["id_val_b"], scores[d][s]).auroc for s in syn_sets])
        rows.append({"kind": "single", "detectors": d, "strategy": "—", "per_set": m, "synthetic_auroc": float(syn)})

    # --- subset search --------------------------------------------------------------------------------
    pool = [p for p in args.pool.split(",") if p in scores]
    log(f"subset search over {pool}")
    t0 = time.time()
    params = {"copula": {"n_qmc": args.n_qmc}}
    combos = []
    from itertools import combinations
    for size in (2, 3):
        for subset in combinations(pool, size):
            for strat in STRATEGIES:
                syn = evaluate_subset(scores, subset, strat, fit_set="id_val_a", id_set="id_val_b",
                                      ood_sets=syn_sets, **params.get(strat, {}))
                combos.append({"subset": subset, "strategy": strat, "synthetic_auroc": float(np.mean(list(syn.values())))})
    log(f"  synthetic ranking of {len(combos)} combinations: {time.time() - t0:.0f}s")

    def real_eval(subset: tuple[str, ...], strat: str) -> dict[str, dict[str, float]]:
        mat = lambda s: np.column_stack([scores[d][s] for d in subset])  # noqa: E731
        comb = make_combiner(strat, **params.get(strat, {})).fit(mat("id_val_a"))
        s_id = comb.score(mat("id_test"))
        return metrics_of(s_id, {o: comb.score(mat(o)) for o in real_sets})

    t0 = time.time()
    for c in combos:
        c["per_set"] = real_eval(c["subset"], c["strategy"])
        c["real_auroc"] = float(np.mean([v["auroc"] for v in c["per_set"].values()]))
    log(f"  real evaluation of {len(combos)} combinations: {time.time() - t0:.0f}s")

    chosen = max(combos, key=lambda c: c["synthetic_auroc"])
    hindsight = max(combos, key=lambda c: c["real_auroc"])
    single_syn_best = max((r for r in rows if r["detectors"] in pool), key=lambda r: r["synthetic_auroc"])
    sets = dict(FIXED_SETS)
    sets["OOD-free choice"] = chosen["subset"]
    sets["best in hindsight"] = hindsight["subset"]
    for label, subset in sets.items():
        subset = tuple(d for d in subset if d in scores)
        if all(d in pool for d in subset):   # the search's order, so the synthetic AUROC is found
            subset = tuple(sorted(subset, key=pool.index))
        for strat in STRATEGIES:
            found = next((c for c in combos if c["subset"] == subset and c["strategy"] == strat), None)
            per = found["per_set"] if found else real_eval(subset, strat)
            rows.append({"kind": label, "detectors": "+".join(subset), "strategy": strat, "per_set": per,
                         "synthetic_auroc": found["synthetic_auroc"] if found else None})

    # --- outputs ---------------------------------------------------------------------------------------
    def mean(r: dict, key: str) -> float:
        return float(np.mean([r["per_set"][o][key] for o in real_sets]))

    best_single = max((r for r in rows if r["kind"] == "single"), key=lambda r: mean(r, "auroc"))
    best_per_set = {o: max((r for r in rows if r["kind"] == "single"), key=lambda r: r["per_set"][o]["auroc"])
                    for o in real_sets}
    comb_rows = [r for r in rows if r["kind"] != "single"]
    best_comb = max(comb_rows, key=lambda r: mean(r, "auroc"))
    strat_rank = sorted(((c["real_auroc"], c["strategy"]) for c in combos), reverse=True)
    wins = {s: sum(1 for c in combos if c["strategy"] == s and c["real_auroc"] > mean(best_single, "auroc"))
            for s in STRATEGIES}
    n_per = {s: sum(1 for c in combos if c["strategy"] == s) for s in STRATEGIES}
    chosen_rank = 1 + sum(1 for c in combos if c["real_auroc"] > chosen["real_auroc"])

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    short = {"fashion-mnist": "fashion", "uniform": "uniform", "gaussian": "gauss", "rotated": "rot90",
             "inverted": "invert", "permuted": "perm", "digits": "digits"}
    head = "| detectors | strategy | " + " | ".join(short.get(o, o) for o in real_sets) + " | mean AUROC | mean FPR@95 | synthetic AUROC |"
    lines = [head, "|" + "---|" * (len(real_sets) + 5)]
    last_kind = None
    for r in rows:
        if r["kind"] != last_kind:
            lines.append(f"| **{r['kind']}** |" + " |" * (len(real_sets) + 4))
            last_kind = r["kind"]
        cells = []
        for o in real_sets:
            v = r["per_set"][o]["auroc"]
            bold = r["kind"] == "single" and best_per_set[o] is r
            cells.append(f"**{v:.3f}**" if bold else f"{v:.3f}")
        syn = "" if r["synthetic_auroc"] is None else f"{r['synthetic_auroc']:.3f}"
        lines.append(f"| {r['detectors']} | {r['strategy']} | " + " | ".join(cells)
                     + f" | {mean(r, 'auroc'):.3f} | {mean(r, 'fpr95'):.3f} | {syn} |")
    table = "\n".join(lines)

    beats = mean(best_comb, "auroc") > mean(best_single, "auroc")
    text = f"""## Combining detectors, GROOD, and choosing without OOD data (issue #16)

Model `{args.model}` (zoo), `Benchmark.mnist()` — {'; '.join(base.notes)}; OOD sets: {', '.join(real_sets)}
(test sizes: ID {len(scores[names[0]]['id_test'])}, OOD {', '.join(str(len(scores[names[0]][o])) for o in real_sets)}).
Every detector is fitted on the ID fit split; every combination strategy is fitted on **val-a** (the first
{half} ID validation images, scores of inputs the detectors were not fitted on) and never sees OOD data. AUROC per
OOD set (ID test vs OOD; bold = best single detector on that set), mean AUROC and mean FPR@95%TPR over the
{len(real_sets)} real sets, and the mean AUROC of val-b vs the four synthetic outlier sets (the only thing the
OOD-free choice looks at). Made by `{cmd}` in {time.time() - t_start:.0f} s on {platform.processor() or platform.machine()}
({os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), brittle's git head at the time of the run; numbers in
[{out.with_suffix('.json').name}]({out.with_suffix('.json').name}).

{table}

**Does combining beat the best single detector?** The best single detector on average is
`{best_single['detectors']}` (mean AUROC {mean(best_single, 'auroc'):.3f}, mean FPR@95 {mean(best_single, 'fpr95'):.3f}); the best single detector
per set: {', '.join(f"{short.get(o, o)} `{best_per_set[o]['detectors']}` {best_per_set[o]['per_set'][o]['auroc']:.3f}" for o in real_sets)}.
The best combination listed above is `{best_comb['detectors']}` / {best_comb['strategy']} (mean AUROC {mean(best_comb, 'auroc'):.3f},
mean FPR@95 {mean(best_comb, 'fpr95'):.3f}) — {'higher' if beats else 'not higher'} than the best single detector's mean.
Over all {len(combos)} subset × strategy combinations searched ({len(pool)} candidates, sizes 2 and 3), the
number whose mean real AUROC exceeds the best single detector's: {', '.join(f'{s} {wins[s]}/{n_per[s]}' for s in STRATEGIES)}.
Best strategy in the search: {strat_rank[0][1]} ({strat_rank[0][0]:.3f}).

**Choosing without OOD data.** The subset × strategy with the best synthetic AUROC is
`{'+'.join(chosen['subset'])}` / {chosen['strategy']} (synthetic {chosen['synthetic_auroc']:.3f}); on the real sets it reaches mean AUROC
{chosen['real_auroc']:.3f}, rank {chosen_rank} of {len(combos)}. The best in hindsight is `{'+'.join(hindsight['subset'])}` /
{hindsight['strategy']} (mean real AUROC {hindsight['real_auroc']:.3f}; its synthetic AUROC {hindsight['synthetic_auroc']:.3f}). The single detector with
the best synthetic AUROC in the pool is `{single_syn_best['detectors']}` (synthetic {single_syn_best['synthetic_auroc']:.3f}, real mean
{mean(single_syn_best, 'auroc'):.3f}). Spearman correlation between synthetic and real mean AUROC over the searched combinations:
{pd.Series([c['synthetic_auroc'] for c in combos]).corr(pd.Series([c['real_auroc'] for c in combos]), method='spearman'):.2f}.
"""
    out.write_text(METHODS + text)
    if args.append_to:
        append_section(Path(args.append_to), text, out)
    payload = {"model": args.model, "command": cmd, "date": dt.datetime.now().isoformat(timespec="seconds"),
               "real_sets": real_sets, "synthetic_sets": syn_sets, "pool": pool, "rows": rows,
               "search": [{**c, "subset": list(c["subset"])} for c in combos],
               "chosen": {**chosen, "subset": list(chosen["subset"])},
               "hindsight": {**hindsight, "subset": list(hindsight["subset"])},
               "seconds": res.seconds}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=float))
    log(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
