"""The audit: margins of every input, then what margin consistency says about them.

``audit(model, data, ...)`` computes (resumably) logit margins and input-margin brackets, then the summary:
clean and robust accuracy at each ε (bracketed), Kendall τ-b / Spearman / Pearson with bootstrap CIs,
detection of non-robust inputs from the logit margin (AUROC, AUPR, FPR@95%TPR, curves), expected
robustness, and the most brittle inputs. ``Audit.save(DIR)`` writes ``summary.json``, ``samples.parquet``,
``curves.json`` and ``examples.npz``; `load_run` reads them back.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .attacks.base import check_norm
from .backends import check_backend, worker_device
from .consistency import detection_metrics, margin_correlations, robust_accuracy
from .data import Data, as_data
from .errors import InputError, StoreError
from .models import prepare_model, resolve_device
from .robustness import expected_robustness, robust_accuracy_from_margins
from .runner import compute_margins, run_config, versions
from .store import RunStore

DEFAULT_EPS = {"linf": (0.1, 0.2, 0.3), "l2": (1.0, 1.5, 2.0)}  # the standard MNIST budgets


def check_eps(eps: Any) -> list[float]:
    """A non-empty list of finite ε > 0 (sorted), or `InputError`."""
    values = [eps] if isinstance(eps, (int, float)) else list(eps)
    if not values:
        raise InputError("no ε was given", "pass e.g. eps=[0.1, 0.2, 0.3]")
    out = []
    for e in values:
        try:
            f = float(e)
        except (TypeError, ValueError):
            raise InputError(f"ε {e!r} is not a number", "pass numbers, e.g. eps=[0.1, 0.2]") from None
        if not math.isfinite(f) or f <= 0:
            raise InputError(f"ε must be finite and > 0, got {e!r}", "pass positive budgets, e.g. eps=[0.1, 0.2]")
        out.append(f)
    return sorted(set(out))


@dataclass
class Audit:
    """Result of `audit`: per-sample ``table`` (pandas), ``summary`` (JSON-ready dict), ROC/PR ``curves``,
    the most brittle inputs in ``examples`` (arrays), and the run ``directory`` when saved."""

    table: pd.DataFrame
    summary: dict[str, Any]
    curves: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, np.ndarray] | None = None
    directory: Path | None = None

    def save(self, directory: str | os.PathLike) -> Path:
        """Write summary.json, samples.parquet, curves.json and examples.npz into ``directory``."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            _atomic_write(directory / "summary.json", json.dumps(_jsonable(self.summary), indent=2).encode())
            _atomic_write(directory / "curves.json", json.dumps(_jsonable(self.curves)).encode())
            tmp = directory / "samples.parquet.tmp"
            self.table.to_parquet(tmp, index=False)
            os.replace(tmp, directory / "samples.parquet")
            if self.examples is not None:
                with open(directory / "examples.npz.tmp", "wb") as fh:
                    np.savez_compressed(fh, **self.examples)
                os.replace(directory / "examples.npz.tmp", directory / "examples.npz")
        except OSError as exc:
            raise StoreError(f"cannot write results to {directory} ({exc.strerror or exc})",
                             "choose a writable --out directory with free space") from None
        self.directory = directory
        return directory

    def report(self, out: str | os.PathLike | None = None) -> Path:
        """Render the HTML report of a saved audit (``DIR/report.html``)."""
        from .report import render_report

        if self.directory is None:
            raise InputError("the audit has not been saved yet", "call audit.save(DIR) (or pass out=DIR) first")
        return render_report(self.directory, out)


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _finite_or_none(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def expected_robustness_from_margins(upper: np.ndarray, correct: np.ndarray, eps_max: float,
                                     points: int = 201) -> float:
    """Accuracy averaged uniformly over ε ∈ [0, eps_max] implied by attack margins (trapezoid rule)."""
    grid = np.linspace(0.0, eps_max, points)
    curve = robust_accuracy_from_margins(upper, correct, grid)
    return expected_robustness(grid, curve["robust_accuracy"].to_numpy())


def analyse(table: pd.DataFrame, *, norm: str, eps: list[float], n_boot: int = 1000, seed: int = 0,
            samples: str = "all") -> tuple[dict[str, Any], dict[str, Any]]:
    """Summary metrics and ROC/PR curves from a per-sample margin table."""
    upper = table["input_margin_upper"].to_numpy(dtype=float)
    lower = table["input_margin_lower"].to_numpy(dtype=float)
    logit = table["logit_margin"].to_numpy(dtype=float)
    has_labels = "correct" in table
    correct = table["correct"].to_numpy(dtype=bool) if has_labels else None
    summary: dict[str, Any] = {"n": len(table), "norm": norm, "eps": eps,
                               "share_censored": float(np.mean(~np.isfinite(upper))),
                               "median_input_margin": float(np.median(upper)),
                               "median_bracket_gap": _median_gap(lower, upper)}
    if has_labels:
        summary["clean_accuracy"] = float(correct.mean())
        has_lower = bool(np.any(lower > 0))
        ra = robust_accuracy(eps, correct, attack_margin=upper, certified_margin=lower if has_lower else None)
        summary["robust_accuracy"] = {
            str(e): {"upper": float(r.robust_acc_attack),
                     "lower": _finite_or_none(r.robust_acc_certified) if has_lower else None}
            for e, r in zip(eps, ra.itertuples())}
        summary["expected_robustness"] = {"eps_max": max(eps),
                                          "from_margins": expected_robustness_from_margins(upper, correct, max(eps))}
    if len(table) >= 2:
        corr = margin_correlations(upper, logit, n_boot=n_boot, seed=seed, correct=correct,
                                   samples=samples if has_labels else "all")
        for key, c in (("kendall_tau", corr.kendall), ("spearman", corr.spearman), ("pearson", corr.pearson)):
            summary[key] = {"value": _finite_or_none(c.value), "ci_low": _finite_or_none(c.ci_low),
                            "ci_high": _finite_or_none(c.ci_high), "n": c.n}
    detections = detection_metrics(upper, logit, eps, correct=correct, samples=samples if has_labels else "all")
    summary["detection"] = {}
    curves: dict[str, Any] = {}
    for e, det in zip(eps, detections):
        summary["detection"][str(e)] = {"auroc": _finite_or_none(det.auroc), "aupr": _finite_or_none(det.aupr),
                                        "fpr_at_95_tpr": _finite_or_none(det.fpr_at_95tpr),
                                        "threshold_at_95_tpr": _finite_or_none(det.threshold_at_95tpr),
                                        "n_positive": det.n_positive, "n_negative": det.n - det.n_positive,
                                        "reason": det.reason}
        curves[str(e)] = {"roc": {"fpr": det.roc_fpr, "tpr": det.roc_tpr},
                          "pr": {"precision": det.pr_precision, "recall": det.pr_recall}}
    return summary, curves


def _median_gap(lower: np.ndarray, upper: np.ndarray) -> float | None:
    ok = (lower > 0) & np.isfinite(upper)
    return float(np.median(upper[ok] / lower[ok])) if ok.any() else None


def _examples(data: Data, table: pd.DataFrame, x_adv: np.ndarray, k: int) -> dict[str, np.ndarray] | None:
    """The ``k`` inputs with the smallest verified input margin (correct ones first when labels exist)."""
    if k <= 0 or data.x.ndim != 4:
        return None
    upper = table["input_margin_upper"].to_numpy(dtype=float)
    candidates = np.isfinite(upper)
    if "correct" in table:
        candidates &= table["correct"].to_numpy(dtype=bool)
    idx = np.flatnonzero(candidates)
    if len(idx) == 0:
        return None
    idx = idx[np.argsort(upper[idx], kind="stable")[:k]]
    return {"index": idx, "x": data.x[idx].numpy(), "x_adv": x_adv[idx], "pred": table["pred"].to_numpy()[idx],
            "adv_class": table["adv_class"].to_numpy()[idx], "input_margin": upper[idx],
            "logit_margin": table["logit_margin"].to_numpy()[idx]}


def audit(model: nn.Module, data: Any, *, norm: str = "linf", eps: Any = None, method: str = "brittle",
          lower: str | None = None, batch_size: int = 250, device: str | torch.device | None = "auto",
          seed: int = 0, out: str | os.PathLike | None = None, overwrite: bool = False, progress: bool = False,
          n_boot: int = 1000, samples: str = "all", n_examples: int = 12, model_name: str | None = None,
          command: str | None = None, method_options: dict[str, Any] | None = None, backend: str = "local",
          workers: int = 1, gpus_per_worker: float = 0.0, address: str | None = None) -> Audit:
    """Audit ``model`` on ``data``: margins of every input and what margin consistency says about them.

    With ``out``, margins are computed into a resumable run store there (re-running resumes; a different
    run is refused unless ``overwrite``) and the results and report are written there too. ``backend``,
    ``workers``, ``gpus_per_worker`` and ``address`` choose where margins are computed (see `compute_margins`).
    """
    norm = check_norm(norm)
    eps = check_eps(DEFAULT_EPS[norm] if eps is None else eps)
    data = as_data(data)
    check_backend(backend, workers, gpus_per_worker, address)
    dev = resolve_device(device)
    where = str(dev) if backend == "local" else f"ray: {workers} workers ({worker_device(device, gpus_per_worker)})"
    model = prepare_model(model, device=dev, sample=data.x[:2], num_classes=data.num_classes)
    t0 = time.perf_counter()
    config = run_config(model, data, job="audit", norm=norm, method=method, lower=lower, batch_size=batch_size,
                        seed=seed, method_options=method_options or {})
    store = RunStore(out, config, overwrite=overwrite) if out is not None else None
    try:
        margins = compute_margins(model, data, norm=norm, method=method, lower=lower, batch_size=batch_size,
                                  device=dev if backend == "local" else device, seed=seed, store=store,
                                  progress=progress, method_options=method_options, backend=backend,
                                  workers=workers, gpus_per_worker=gpus_per_worker, address=address)
    finally:
        if store is not None:
            store.close()
    summary, curves = analyse(margins.table, norm=norm, eps=eps, n_boot=n_boot, seed=seed, samples=samples)
    summary = {"model": model_name or type(model).__name__, "data": data.name, "method": method,
               "lower_bound_method": lower, **summary,
               "forward_passes": margins.forward_passes, "backward_passes": margins.backward_passes,
               "attack_seconds": margins.seconds, "seconds": time.perf_counter() - t0, "seed": seed,
               "device": where, "versions": versions(), "command": command or "brittle.audit(...)"}
    result = Audit(margins.table, summary, curves, _examples(data, margins.table, margins.x_adv, n_examples))
    if out is not None:
        result.save(out)
    return result


def load_run(directory: str | os.PathLike) -> pd.DataFrame:
    """Per-sample results of a saved run as a DataFrame; its summary is in ``df.attrs["summary"]``."""
    directory = Path(directory)
    for name in ("samples.parquet", "margins.parquet"):
        path = directory / name
        if path.exists():
            df = pd.read_parquet(path)
            summary = directory / "summary.json"
            df.attrs["summary"] = json.loads(summary.read_text()) if summary.exists() else {}
            return df
    raise InputError(f"{directory} holds no finished run (no samples.parquet or margins.parquet)",
                     "run `brittle audit`/`brittle margins` with --out there first (re-running resumes)")
