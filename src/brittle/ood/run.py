"""A resumable OOD benchmark run into a directory (what ``brittle ood`` calls).

Files written into ``out``: ``run.sqlite`` (the crash-safe `RunStore`: one artifact per fitted detector,
one job per detector × set holding its scores — re-running the same command resumes, a different run is
refused unless ``overwrite``), ``summary.json`` (detector × OOD set metrics, winners, timings, settings),
``scores.parquet`` (one row per input: ``set``, ``index`` and one column per detector; sets ``id_val``,
``id_test`` and each OOD set) and ``report.html``. Detectors are keyed by `brittle.ood.benchmark.detector_labels`
(the name, or the name and the parameters that differ where several detectors share a name).

**Extension point** (combinations of detectors, issue #16): ``extensions`` is a list of callables
``ext(ctx: RunContext) -> dict | None`` run after every detector is scored; each may add rows to
``ctx.table`` (a list of metric dicts, as `Benchmark.metrics` writes), columns to ``ctx.scores``
(label → set → scores) and return a dict merged into ``summary.json`` under its ``"name"`` key. They get the
`RunStore` (``ctx.store``) to be resumable too.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from ..errors import BrittleError, StoreError
from ..execution.store import RunStore
from ..scores.base import Scorer, scorer_from_dict
from .benchmark import Benchmark, Session, detector_labels
from ..core.serialize import json_default, jsonable

CONVENTION = ("higher score = more OOD; AUROC with either class positive; AUPR-In: ID positives; AUPR-Out: OOD "
              "positives; FPR@TPR: ID positives — the threshold accepts the target share of ID test inputs and "
              "FPR is the share of OOD inputs it also accepts (OpenOOD / Hendrycks convention)")


@dataclass
class RunContext:
    """What extensions see: the benchmark, the model, fitted detectors, scores, metric rows, the store."""

    bench: Benchmark
    model: nn.Module
    session: Session
    detectors: dict[str, Scorer]
    scores: dict[str, dict[str, np.ndarray]]
    table: list[dict[str, Any]]
    store: RunStore
    target_tpr: float
    options: dict[str, Any] = field(default_factory=dict)


def run_ood(model: nn.Module, bench: Benchmark, detectors: Sequence[Scorer], out: str | os.PathLike, *,
            config: dict[str, Any], target_tpr: float = 0.95, overwrite: bool = False, batch_size: int = 512,
            device: Any = "auto", progress: Callable[[str, int, int], None] | None = None,
            extensions: Sequence[Callable[[RunContext], dict[str, Any] | None]] = (),
            options: dict[str, Any] | None = None, report: bool = True, command: str | None = None) -> dict[str, Any]:
    """Fit and score every detector (resumably), write the results; returns the summary."""
    from ..margins.compute import versions

    t_start = time.perf_counter()
    out = Path(out)
    session = bench.session(model, batch_size=batch_size, device=device)
    session.prepare(detectors)
    labels = detector_labels(detectors)  # distinct store keys, e.g. vim(dim=10) and vim(dim=60)
    session.check_fit(detectors)         # a degenerate fit set is refused before out/ is created
    fitted: dict[str, Scorer] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, dict[str, float]] = {}
    sets = bench.score_sets
    total, step = len(detectors) * (len(sets) + 1), 0
    with RunStore(out, config, overwrite=overwrite) as store:
        for det, label in zip(detectors, labels):
            # the seconds of every session that fitted or scored (stored with the results): a resumed run
            # reports the work its earlier sessions did too, not only this session's
            fit_seconds = score_seconds = 0.0
            saved = store.get_artifact(f"detector/{label}")
            if saved is not None:
                try:
                    det = scorer_from_dict(json.loads(saved.decode()))
                except (ValueError, UnicodeDecodeError, RecursionError, BrittleError):
                    if not overwrite:
                        raise StoreError(f"{store.path}: the saved detector {label!r} cannot be read",
                                         "pass --overwrite (Python: overwrite=True) to fit it again; the rest of the "
                                         "run is kept") from None
                    store.drop_artifact(f"detector/{label}")
                    saved = None
            if saved is None:
                t0 = time.perf_counter()
                session.fit(det)
                fit_seconds = time.perf_counter() - t0
                store.put_artifact(f"detector/{label}", json.dumps(det.to_dict()).encode())
                store.put_artifact(f"seconds/{label}", json.dumps(fit_seconds).encode())
            else:
                stored = store.get_artifact(f"seconds/{label}")
                fit_seconds = float(json.loads(stored.decode())) if stored is not None else 0.0
            step += 1
            if progress:
                progress(f"{label}: fitted", step, total)
            scores[label] = {}
            for name in sets:
                job = f"scores/{label}/{name}"
                if 0 in store.done(job):
                    kept = store.gather(job)
                    scores[label][name] = kept["score"]
                    score_seconds += float(kept["seconds"].sum()) if "seconds" in kept else 0.0
                else:
                    t0 = time.perf_counter()
                    s = session.score(det, name)
                    elapsed = time.perf_counter() - t0
                    store.put_batch(job, 0, 0, len(s), {"score": s, "seconds": np.array([elapsed])})
                    scores[label][name] = s
                    score_seconds += elapsed
                step += 1
                if progress:
                    progress(f"{label}: {name}", step, total)
            seconds[label] = {"fit": fit_seconds, "score": score_seconds}
            fitted[label] = det
        table = bench.metrics(scores, target_tpr).to_dict("records")
        ctx = RunContext(bench, model, session, fitted, scores, table, store, target_tpr, dict(options or {}))
        extra: dict[str, Any] = {}
        for ext in extensions:
            res = ext(ctx)
            if res:
                extra[str(res.pop("name", getattr(ext, "__name__", "extension")))] = res
    summary = _summary(bench, ctx, seconds, config, versions(), time.perf_counter() - t_start, extra)
    summary["command"] = command or "brittle.ood.run_ood(...)"
    _write(out, bench, ctx, summary)
    if report:
        from ..report.ood import render_ood_report

        render_ood_report(out)
    return summary


def _summary(bench: Benchmark, ctx: RunContext, seconds: dict[str, dict[str, float]], config: dict[str, Any],
             vers: dict[str, str], elapsed: float, extra: dict[str, Any]) -> dict[str, Any]:
    df = pd.DataFrame(ctx.table)
    metrics: dict[str, dict[str, Any]] = {}
    for row in ctx.table:
        metrics.setdefault(row["detector"], {})[row["ood_set"]] = {k: v for k, v in row.items()
                                                                    if k not in ("detector", "ood_set")}
    p = df.pivot(index="detector", columns="ood_set", values="auroc")
    f = df.pivot(index="detector", columns="ood_set", values="fpr_at_tpr")
    winners = {s: {"auroc": str(p[s].idxmax()), "fpr_at_tpr": str(f[s].idxmin())} for s in bench.ood}
    mean_auroc = p.mean(axis=1)
    winners["mean"] = {"auroc": str(mean_auroc.idxmax()), "fpr_at_tpr": str(f.mean(axis=1).idxmin())}
    dets = {}
    for label, det in ctx.detectors.items():
        dets[label] = {"scorer": det.name, "params": det.get_params(), "paper": getattr(det, "paper", ""),
                       "layers": list(det.layers), "needs_model": bool(det.needs_model), **seconds.get(label, {})}
    return {
        "command": config.get("command"), "model": config.get("model_name"), "benchmark": bench.name,
        "notes": bench.notes, "target_tpr": ctx.target_tpr, "convention": CONVENTION,
        "sets": {"id_fit": len(bench.fit_data), "id_val": len(bench.val_data) if bench.val_data is not None else 0,
                 "id_test": len(bench.test_data), **{k: len(v) for k, v in bench.ood.items()}},
        "ood_sets": list(bench.ood), "detectors": dets, "metrics": metrics, "winners": winners,
        "mean_auroc": {k: float(v) for k, v in mean_auroc.items()}, "seed": config.get("seed"),
        "versions": vers, "seconds": elapsed, **extra,
    }


def _write(out: Path, bench: Benchmark, ctx: RunContext, summary: dict[str, Any]) -> None:
    frames = []
    for name in bench.score_sets:
        n = len(bench.data(name))
        cols = {"set": np.full(n, name), "index": np.arange(n)}
        for label, per_set in ctx.scores.items():
            if name in per_set:
                cols[label] = per_set[name]
        frames.append(pd.DataFrame(cols))
    pd.concat(frames, ignore_index=True).to_parquet(out / "scores.parquet", index=False)
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(jsonable(summary), indent=2, default=json_default))  # strict JSON: inf -> null
    tmp.replace(out / "summary.json")

