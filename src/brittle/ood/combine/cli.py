"""``brittle ood --combine vote,ecdf,copula,ot``: the combination strategies as an extension of the ``ood`` run.

`validate_cli` checks the strategy names (and, given the run's detectors, that there are at least two) before
the output directory exists; `cli_extension` returns the callable `brittle.ood.run.run_ood` runs after every
detector is scored: each strategy is fitted on the detectors' scores of the **ID validation** split
(``id_val``; never OOD data) over all the detectors of the run (``--detectors``), scores ``id_test`` and every
OOD set, and adds a row per OOD set to the run's table
(detector label ``combine:<strategy>``) — so the combinations appear in ``summary.json``, ``scores.parquet``
and the report next to the single detectors — plus a ``combination`` section in ``summary.json``: per strategy,
the detectors, mean AUROC, whether it beats the best single detector, and its threshold at the target TPR.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...errors import InputError
from .base import make_combiner, strategy_names


def check_enough_detectors(detectors: list[str]) -> None:
    """A combination needs the scores of at least two detectors (checked by `validate_cli` before the run, and
    by the extension itself for callers of `brittle.ood.run.run_ood`)."""
    if len(detectors) < 2:
        got = f"only {detectors[0]!r}" if detectors else "none"
        raise InputError(f"--combine needs at least two detectors, got {got}",
                         "pass --detectors with two or more names (or drop --combine)")


def validate_cli(names: list[str], detectors: list[str] | None = None) -> list[str]:
    """The strategy names (``all`` expanded), checked; with ``detectors`` (the run's detector names) also that
    there are enough of them — all before the output directory exists."""
    known = strategy_names()
    if not names:
        raise InputError("--combine is empty", f"pass some of {', '.join(known)}")
    if "all" in names:
        names = known
    bad = [n for n in names if n not in known]
    if bad:
        raise InputError(f"unknown combination strategy {bad[0]!r}", f"use some of {', '.join(known)} or 'all'")
    if "ot" in names:
        try:
            import ot  # noqa: F401
        except ImportError:
            raise InputError("--combine ot needs POT (Python Optimal Transport)", "pip install 'brittle[ood]'") from None
    if detectors is not None:
        check_enough_detectors(list(detectors))
    return list(dict.fromkeys(names))


def cli_extension(names: list[str], options: dict[str, Any]) -> Callable[[Any], dict[str, Any]]:
    def combination(ctx: Any) -> dict[str, Any]:
        from ...analysis.detection import ood_metrics

        labels = [lab for lab in ctx.detectors if not lab.startswith("combine:")]
        check_enough_detectors(labels)
        if "id_val" not in ctx.scores[labels[0]]:
            raise InputError("--combine needs an ID validation split to fit on", "use a benchmark with a val split")
        dets = ctx.detectors

        def mat(set_name: str) -> np.ndarray:
            return np.column_stack([dets[lab].risk(ctx.scores[lab][set_name]) for lab in labels])

        singles: dict[str, float] = {}
        for lab in labels:
            singles[lab] = float(np.mean([r["auroc"] for r in ctx.table if r["detector"] == lab]))
        best_single = max(singles, key=singles.get)
        out: dict[str, Any] = {"name": "combination", "detectors": labels, "fitted_on": "id_val",
                               "best_single": {"detector": best_single, "mean_auroc": singles[best_single]},
                               "strategies": {}}
        for name in names:
            comb = make_combiner(name, seed=int(options.get("seed", 0))) if name in ("copula", "ot") else make_combiner(name)
            comb.fit(mat("id_val"))
            label = f"combine:{name}"
            ctx.scores[label] = {s: comb.score(mat(s)) for s in ctx.scores[labels[0]]}
            aurocs = []
            for o in ctx.bench.ood:
                m = ood_metrics(ctx.scores[label]["id_test"], ctx.scores[label][o], target_tpr=ctx.target_tpr)
                ctx.table.append({"detector": label, "ood_set": o, **m.summary()})
                aurocs.append(m.auroc)
            mean = float(np.mean(aurocs))
            out["strategies"][name] = {"mean_auroc": mean, "beats_best_single": mean > singles[best_single],
                                       "threshold": comb.threshold(ctx.target_tpr),
                                       "per_set_auroc": dict(zip(ctx.bench.ood, aurocs))}
        return out

    return combination
