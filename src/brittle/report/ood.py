"""The HTML report of an OOD benchmark run (``brittle ood``): detector × OOD-set table, which detector wins
where, ID-vs-OOD score histograms and ROC curves. Reads ``summary.json`` and ``scores.parquet`` from a run
directory, writes ``report.html`` beside them; figures are embedded PNG ``data:`` URIs (opens offline)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from . import _plots as plots
from ._render import _environment, _version, _write

SET_COLORS = ["#dd6b20", "#6b46c1", "#2f855a", "#c53030", "#d69e2e", "#319795", "#b83280", "#4a5568", "#805ad5"]
ID_COLOR = "#2b6cb0"


def load_ood_run(run_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """``(summary, scores)`` of an OOD run directory; `InputError` when it is not one."""
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        scores = pd.read_parquet(run_dir / "scores.parquet")
    except FileNotFoundError:
        raise InputError(f"{run_dir} is not an OOD run (summary.json / scores.parquet missing)",
                         "pass a directory written by `brittle ood`") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(f"{run_dir} holds an unreadable OOD run ({type(exc).__name__}: {str(exc)[:200]})",
                         "re-run `brittle ood`") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several unrelated types for corrupt files
        raise InputError(f"{run_dir} holds an unreadable OOD run ({type(exc).__name__})", "re-run `brittle ood`") from None
    if not isinstance(summary, dict) or "metrics" not in summary or "ood_sets" not in summary:
        raise InputError(f"{run_dir}/summary.json is not an OOD summary", "pass a directory written by `brittle ood`")
    return summary, scores


def _detectors(summary: dict[str, Any]) -> list[str]:
    return list(summary["metrics"])


@plots._styled
def histograms(summary: dict[str, Any], scores: pd.DataFrame) -> str | None:
    """One panel per detector: ID test scores against every OOD set (density histograms, shared bins)."""
    dets = [d for d in _detectors(summary) if d in scores.columns]
    if not dets:
        return None
    cols = 4
    rows = math.ceil(len(dets) / cols)
    fig = plots.new_figure(10.0, 2.1 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    sets = summary["ood_sets"]
    for ax, det in zip(axes.ravel(), dets):
        vals = scores[det].to_numpy()
        finite = vals[np.isfinite(vals)]
        lo, hi = np.quantile(finite, [0.005, 0.995]) if len(finite) else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
        idv = scores.loc[scores["set"] == "id_test", det].to_numpy()
        ax.hist(np.clip(idv, lo, hi), bins=bins, density=True, color=ID_COLOR, alpha=0.45, label="ID test")
        for i, s in enumerate(sets):
            v = scores.loc[scores["set"] == s, det].to_numpy()
            ax.hist(np.clip(v, lo, hi), bins=bins, density=True, histtype="step", lw=1.1,
                    color=SET_COLORS[i % len(SET_COLORS)], label=plots.plain(s, 18))
        ax.set_title(plots.plain(det, 24))
        ax.set_yticks([])
    for ax in axes.ravel()[len(dets):]:
        ax.set_visible(False)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 8))
    return plots.to_data_uri(fig)


@plots._styled
def roc_curves(summary: dict[str, Any], scores: pd.DataFrame) -> str | None:
    """One panel per OOD set: every detector's ROC curve (OOD positives)."""
    from sklearn.metrics import roc_curve

    dets = [d for d in _detectors(summary) if d in scores.columns]
    sets = summary["ood_sets"]
    if not dets or not sets:
        return None
    cols = min(4, len(sets))
    rows = math.ceil(len(sets) / cols)
    fig = plots.new_figure(10.0, 2.5 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    idmask = (scores["set"] == "id_test").to_numpy()
    for ax, s in zip(axes.ravel(), sets):
        mask = (scores["set"] == s).to_numpy()
        y = np.r_[np.zeros(idmask.sum()), np.ones(mask.sum())]
        for j, det in enumerate(dets):
            v = np.r_[scores.loc[idmask, det].to_numpy(), scores.loc[mask, det].to_numpy()]
            fpr, tpr, _ = roc_curve(y, v)
            ax.plot(fpr, tpr, lw=1.0, color=cmap(j % 20), label=plots.plain(det, 18))
        ax.plot([0, 1], [0, 1], color="#a0aec0", lw=0.8, ls="--")
        ax.set_title(plots.plain(s, 24))
        ax.set_xlabel("FPR (ID flagged)")
        ax.set_ylabel("TPR (OOD flagged)")
    for ax in axes.ravel()[len(sets):]:
        ax.set_visible(False)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6))
    return plots.to_data_uri(fig)


def report_context(summary: dict[str, Any], scores: pd.DataFrame) -> dict[str, Any]:
    sets = list(summary["ood_sets"])
    dets = _detectors(summary)
    best = {s: {"auroc": max(summary["metrics"][d][s]["auroc"] for d in dets),
                "fpr": min(summary["metrics"][d][s]["fpr_at_tpr"] for d in dets)} for s in sets}
    rows = []
    for d in dets:
        cells = []
        for s in sets:
            m = summary["metrics"][d][s]
            cells.append({"auroc": m["auroc"], "fpr": m["fpr_at_tpr"], "aupr_in": m["aupr_in"],
                          "aupr_out": m["aupr_out"], "best_auroc": m["auroc"] == best[s]["auroc"],
                          "best_fpr": m["fpr_at_tpr"] == best[s]["fpr"]})
        info = summary.get("detectors", {}).get(d, {})
        rows.append({"name": d, "cells": cells, "mean": summary.get("mean_auroc", {}).get(d),
                     "paper": info.get("paper", ""), "fit": info.get("fit"), "score": info.get("score")})
    # every detector tied for best (the table bolds them all; summary.json names the first)
    winners = {k: dict(v) for k, v in (summary.get("winners", {}) or {}).items()}
    for s in sets:
        if s in winners:
            winners[s]["auroc"] = ", ".join(d for d in dets if summary["metrics"][d][s]["auroc"] == best[s]["auroc"])
            winners[s]["fpr_at_tpr"] = ", ".join(d for d in dets
                                                 if summary["metrics"][d][s]["fpr_at_tpr"] == best[s]["fpr"])
    return {"title": f"OOD detection: {summary.get('model') or 'model'} on {summary.get('benchmark')}",
            "summary": summary, "sets": sets, "rows": rows, "winners": winners,
            "n_sets": summary.get("sets", {}), "hist": histograms(summary, scores), "roc": roc_curves(summary, scores),
            "extras": {k: v for k, v in summary.items() if isinstance(v, dict) and k.startswith("combin")},
            "versions": [(str(k), str(v)) for k, v in (summary.get("versions") or {}).items()],
            "brittle_version": _version()}


def render_ood_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render ``report.html`` of an OOD run directory (or to ``out``)."""
    summary, scores = load_ood_run(run_dir)
    html = _environment().get_template("ood.html.j2").render(**report_context(summary, scores))
    return _write(html, Path(out) if out is not None else Path(run_dir) / "report.html")
