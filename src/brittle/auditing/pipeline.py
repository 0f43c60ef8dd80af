"""The audit: margins of every input, then what margin consistency says about them.

``audit(model, data, ...)`` computes (resumably) logit margins and input-margin brackets, then the summary:
clean and robust accuracy at each ε (bracketed), Kendall τ-b / Spearman / Pearson with bootstrap CIs,
detection of non-robust inputs from the logit margin (AUROC, AUPR, FPR@95%TPR, curves), expected
robustness, and the most brittle inputs. ``Audit.save(DIR)`` writes ``summary.json``, ``samples.parquet``,
``curves.json`` and ``examples.npz``; `load_run` reads them back.

Optionally (``pseudo_margin=``, ``monitor_eps=``) the audited samples are split with the audit's seed into a
fit half and an evaluation half (column ``split``): a `brittle.scores.pseudo_margin.PseudoMargin` is fitted on the fit
half's input margins and compared with the logit margin on the evaluation half (``summary["pseudo_margin"]``,
column ``pseudo_margin``, file ``pseudo_margin.json``), and a `brittle.monitoring.monitor.Monitor` is calibrated on the fit
half and measured on the evaluation half (``summary["monitor"]``, column ``monitor_flag``, file
``monitor.json``) — or, when its score is the pseudo-margin, calibrated on half of the evaluation half
(``split == "calib"``, unseen by the pseudo-margin) and measured on the rest. Both are cheap next to the
margins and are recomputed on every run, resumed ones included: they are not part of the run store's
fingerprint, since the stored margins do not depend on them.
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

from ..core.validation import check_norm
from ..execution.ray import check_backend, worker_device
from ..analysis.consistency import detection_metrics, margin_correlations, robust_accuracy
from ..data.loading import Data, as_data
from ..errors import InputError, StoreError
from ..core.validation import check_eps
from ..models.loading import prepare_model, resolve_device
from ..monitoring.monitor import Monitor
from ..scores.pseudo_margin import PseudoMargin, evaluate_pseudo_margin
from ..models.features import extract_features, resolve_layer
from ..analysis.robustness import expected_robustness, robust_accuracy_from_margins
from ..margins.compute import compute_margins, run_config, versions
from ..execution.store import RunStore

DEFAULT_EPS = {"linf": (0.1, 0.2, 0.3), "l2": (1.0, 1.5, 2.0)}  # the standard MNIST budgets
MIN_SPLIT_SAMPLES = 10  # pseudo-margin / monitor: at least 5 samples in each half
PSEUDO_MARGIN_FILE, MONITOR_FILE = "pseudo_margin.json", "monitor.json"


@dataclass
class Audit:
    """Result of `audit`: per-sample ``table`` (pandas), ``summary`` (JSON-ready dict), ROC/PR ``curves``,
    the most brittle inputs in ``examples`` (arrays), and the run ``directory`` when saved."""

    table: pd.DataFrame
    summary: dict[str, Any]
    curves: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, np.ndarray] | None = None
    directory: Path | None = None
    pseudo_margin: PseudoMargin | None = None
    monitor: Monitor | None = None

    def save(self, directory: str | os.PathLike) -> Path:
        """Write summary.json, samples.parquet, curves.json and examples.npz into ``directory``, and
        pseudo_margin.json / monitor.json when the audit fitted them (stale ones from an earlier run are removed)."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name, obj in ((PSEUDO_MARGIN_FILE, self.pseudo_margin), (MONITOR_FILE, self.monitor)):
                if obj is None:
                    (directory / name).unlink(missing_ok=True)
                else:
                    obj.save(directory / (name + ".tmp"))
                    os.replace(directory / (name + ".tmp"), directory / name)
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
        from ..report import render_report

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


# --------------------------------------------------------------------------------------------
# Pseudo-margin and deployment monitor on a fit / evaluation split of the audited samples
# --------------------------------------------------------------------------------------------

def split_halves(n: int, seed: int) -> np.ndarray:
    """Boolean mask of the fit half (``ceil(n / 2)`` samples, drawn with ``seed``); the rest is the evaluation half."""
    fit = np.zeros(n, dtype=bool)
    fit[np.random.default_rng(seed).permutation(n)[:(n + 1) // 2]] = True
    return fit


def check_extras(model: nn.Module, n: int, pseudo_margin: Any, monitor_eps: Any, monitor_recall: Any,
                 norm: str) -> tuple[str | None, float | None, float]:
    """Validate the pseudo-margin / monitor arguments of `audit` (before any margin is computed)."""
    if pseudo_margin is not None:
        if not isinstance(pseudo_margin, str) or not pseudo_margin:
            raise InputError(f"pseudo_margin must be 'logits' or a layer name, got {pseudo_margin!r}",
                             "pass pseudo_margin='logits' or a name from brittle.models.layer_names(model)")
        if pseudo_margin != "logits" and isinstance(model, nn.Module):  # not a module: prepare_model refuses it
            if isinstance(model, torch.jit.ScriptModule):
                raise InputError(f"the layers of a TorchScript model cannot be hooked, so pseudo_margin="
                                 f"{pseudo_margin!r} is not available",
                                 "pass pseudo_margin='logits' (--pseudo-margin logits), or load the model as "
                                 "module:factory with --weights")
            try:
                resolve_layer(model, pseudo_margin)
            except InputError as exc:
                raise InputError(exc.problem, "pass pseudo_margin='logits' or one of those layer names "
                                 "(--pseudo-margin NAME on the command line)") from None
    if monitor_eps is not None:
        value = _as_float(monitor_eps)
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"monitor_eps must be a finite number > 0 in the audit's norm units ({norm}), "
                             f"got {monitor_eps!r}",
                             "pass e.g. monitor_eps=0.1 (--monitor-eps 0.1), in the same units as eps")
        monitor_eps = value
    recall = _as_float(monitor_recall)
    if not 0 < recall <= 1:
        raise InputError(f"monitor_recall must be in (0, 1], got {monitor_recall!r}",
                         "pass e.g. monitor_recall=0.95 (--monitor-recall 0.95)")
    if (pseudo_margin is not None or monitor_eps is not None) and n < MIN_SPLIT_SAMPLES:
        raise InputError(f"the pseudo-margin and the monitor need at least {MIN_SPLIT_SAMPLES} samples to split "
                         f"into a fit half and an evaluation half, got {n}",
                         "audit more samples, or leave out pseudo_margin / monitor_eps")
    return pseudo_margin, monitor_eps, recall


def _as_float(value: Any) -> float:
    """``value`` as a float; NaN for anything that is not a real number (bools and strings included)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def pseudo_margin_model(pseudo_margin: str, options: dict[str, Any] | None, seed: int) -> PseudoMargin:
    """The unfitted `PseudoMargin` an audit uses: inputs from ``pseudo_margin`` ("logits" or a layer name),
    the audit's seed, then ``options``; `InputError` for options it does not take."""
    if options is not None and not isinstance(options, dict):
        raise InputError(f"pseudo_margin_options must be a dict, got {type(options).__name__}",
                         "pass e.g. pseudo_margin_options={'loss': 'ranking'}")
    # ranking by default: on the zoo study (docs/margin-consistency.md) it raised τ on 9 of 12 model x norm
    # pairs where the regression on sqrt(margin) over-fitted a 500-point half (6 of 12)
    settings = {"inputs": "logits" if pseudo_margin == "logits" else "both", "loss": "ranking", "seed": seed,
                **(options or {})}
    if pseudo_margin == "logits" and settings["inputs"] != "logits":
        raise InputError(f"pseudo_margin='logits' gives no layer output for inputs={settings['inputs']!r}",
                         "name a layer in pseudo_margin, or leave 'inputs' out of pseudo_margin_options")
    try:
        return PseudoMargin(**settings)
    except TypeError:
        import inspect

        allowed = [k for k in inspect.signature(PseudoMargin).parameters]
        unknown = sorted(set(settings) - set(allowed))
        raise InputError(f"unknown pseudo_margin_options {', '.join(map(repr, unknown)) or repr(options)}",
                         f"use only {', '.join(allowed)}") from None


def _kept(out: Any) -> str:
    return (f"; the margins are kept in {out}, so re-running does not recompute them" if out is not None else "")


def _by_eps(rows: pd.DataFrame, eps: list[float], column: str) -> dict[str, float | None]:
    return {str(e): _finite_or_none(rows.loc[np.isclose(rows["eps"], e, rtol=1e-12, atol=0), column].iloc[0])
            for e in eps}


def fit_extras(model: nn.Module, data: Data, table: pd.DataFrame, *, norm: str, eps: list[float], seed: int,
               pseudo_margin: str | None, monitor_eps: float | None, monitor_recall: float = 0.95,
               pseudo_margin_options: dict[str, Any] | None = None, n_boot: int = 1000,
               device: str | torch.device | None = "auto", out: Any = None
               ) -> tuple[pd.DataFrame, dict[str, Any], PseudoMargin | None, Monitor | None]:
    """Pseudo-margin and monitor of an audit: fitted / calibrated on the fit half, measured on the evaluation half.

    With both, the monitor (whose score is then the pseudo-margin) is calibrated on half of the evaluation half
    (``"calib"``), which the pseudo-margin never saw, and measured on the rest (``"eval"``); the pseudo-margin
    is measured on both. Returns the table with columns ``split`` (``"fit"``/``"calib"``/``"eval"``),
    ``pseudo_margin`` and ``monitor_flag``
    where computed, the summary entries ``pseudo_margin`` and ``monitor``, and the fitted objects.
    """
    table = table.copy()
    summary: dict[str, Any] = {}
    fit = split_halves(len(table), seed)
    split = np.where(fit, "fit", "eval").astype(object)
    fit_idx, eval_idx = np.flatnonzero(fit), np.flatnonzero(~fit)
    # a monitor on the pseudo-margin is calibrated on points the pseudo-margin has not seen: half of the
    # evaluation half ("calib"), and measured on the other half
    calib_idx, test_idx = fit_idx, eval_idx
    if pseudo_margin is not None and monitor_eps is not None:
        perm = np.random.default_rng(seed + 1).permutation(len(eval_idx))
        k = (len(eval_idx) + 1) // 2
        calib_idx, test_idx = np.sort(eval_idx[perm[:k]]), np.sort(eval_idx[perm[k:]])
        split[calib_idx] = "calib"
    table["split"] = split
    upper = table["input_margin_upper"].to_numpy(dtype=float)
    pm: PseudoMargin | None = None
    if pseudo_margin is not None:
        layer = None if pseudo_margin == "logits" else pseudo_margin
        features = extract_features(model, data, layer, device=device)
        pm = pseudo_margin_model(pseudo_margin, pseudo_margin_options, seed)
        try:
            pm.fit(features.subset(fit_idx), upper[fit_idx])
        except InputError as exc:
            raise InputError(f"cannot fit the pseudo-margin on the fit half ({len(fit_idx)} samples): {exc.problem}",
                             f"audit more samples or pass a stronger attack{_kept(out)}") from None
        table["pseudo_margin"] = pm.predict(features)
        rows = evaluate_pseudo_margin(pm, features.subset(eval_idx), upper[eval_idx], eps, n_boot=n_boot, seed=seed)
        before, after = rows[rows["score"] == "logit_margin"], rows[rows["score"] == "pseudo_margin"]
        entry: dict[str, Any] = {"layer": pseudo_margin, "inputs": pm.inputs, "loss": pm.loss,
                                 "n_fit": len(fit_idx), "n_eval": len(eval_idx), "seed": seed,
                                 "evaluated_on": "every sample outside the fit half", "file": PSEUDO_MARGIN_FILE}
        for tag, part in (("before", before), ("after", after)):
            first = part.iloc[0]
            entry[f"kendall_tau_{tag}"] = _finite_or_none(first["kendall_tau"])
            entry[f"kendall_tau_{tag}_ci"] = {"ci_low": _finite_or_none(first["tau_ci_low"]),
                                               "ci_high": _finite_or_none(first["tau_ci_high"])}
            for key, column in (("auroc", "auroc"), ("aupr", "aupr"), ("fpr_at_95_tpr", "fpr_at_95tpr")):
                entry[f"{key}_{tag}"] = _by_eps(part, eps, column)
        summary["pseudo_margin"] = entry
    mon: Monitor | None = None
    if monitor_eps is not None:
        where = "fit half" if pm is None else "calibration quarter"
        n_pos = int(np.sum(upper[calib_idx] <= monitor_eps))
        if n_pos == 0:
            raise InputError(f"no input of the {where} ({len(calib_idx)} samples) is non-robust at monitor_eps="
                             f"{monitor_eps:g} ({norm}; smallest input margin there: {np.min(upper[calib_idx]):.4g}), "
                             "so the monitor cannot be calibrated",
                             f"pass a larger monitor_eps in the same units as eps{_kept(out)}")
        mon = Monitor.calibrate(model, data.subset(calib_idx), upper[calib_idx], monitor_eps,
                                target_recall=monitor_recall, score=pm if pm is not None else "logit", norm=norm)
        table["monitor_flag"] = np.asarray(mon.scores(data) <= mon.threshold)
        rep = mon.evaluate(data.subset(test_idx), upper[test_idx])
        summary["monitor"] = {"eps": monitor_eps, "norm": norm, "score": mon.score_kind, "threshold": mon.threshold,
                              "target_recall": monitor_recall, "recall": _finite_or_none(rep.recall),
                              "false_alarm_rate": _finite_or_none(rep.false_alarm_rate),
                              "flag_rate": _finite_or_none(rep.flag_rate), "precision": _finite_or_none(rep.precision),
                              "n": rep.n, "n_nonrobust": rep.n_nonrobust, "notes": rep.notes,
                              "calibrated_on": where, "n_calibration": len(calib_idx),
                              "evaluated_on": "eval half" if pm is None else "evaluation quarter",
                              "calibration": mon.calibration, "file": MONITOR_FILE}
    return table, summary, pm, mon


def audit(model: nn.Module, data: Any, *, norm: str = "linf", eps: Any = None, method: str = "brittle",
          lower: str | None = None, batch_size: int = 250, device: str | torch.device | None = "auto",
          seed: int = 0, out: str | os.PathLike | None = None, overwrite: bool = False, progress: bool = False,
          n_boot: int = 1000, samples: str = "all", n_examples: int = 12, model_name: str | None = None,
          command: str | None = None, method_options: dict[str, Any] | None = None, backend: str = "local",
          workers: int = 1, gpus_per_worker: float = 0.0, address: str | None = None,
          pseudo_margin: str | None = None, monitor_eps: float | None = None, monitor_recall: float = 0.95,
          pseudo_margin_options: dict[str, Any] | None = None) -> Audit:
    """Audit ``model`` on ``data``: margins of every input and what margin consistency says about them.

    With ``out``, margins are computed into a resumable run store there (re-running resumes; a different
    run is refused unless ``overwrite``) and the results and report are written there too. ``backend``,
    ``workers``, ``gpus_per_worker`` and ``address`` choose where margins are computed (see `compute_margins`).

    ``pseudo_margin="logits"`` (sorted logit gaps) or a layer name (that layer's output plus the logits) fits
    a `PseudoMargin` (``pseudo_margin_options`` are passed to it; default: the pairwise ranking loss, which
    over-fits less than the paper's regression on the square root of the margin, ``{"loss": "regression"}``) on a random half of the samples (seeded by ``seed``) and reports Kendall τ / AUROC / AUPR /
    FPR@95 of the logit margin (before) and the pseudo-margin (after) on the other half. ``monitor_eps`` calibrates
    a `Monitor` (score: the pseudo-margin when fitted, else the logit margin) on the fit half for a recall of
    ``monitor_recall`` of the inputs non-robust at ``monitor_eps`` (same norm and units as ``eps``) and reports
    its recall and false-alarm rate on the other half. Neither changes the stored margins: a resumed run simply
    recomputes them.
    """
    norm = check_norm(norm)
    eps = check_eps(DEFAULT_EPS[norm] if eps is None else eps)
    data = as_data(data)
    check_backend(backend, workers, gpus_per_worker, address)
    pseudo_margin, monitor_eps, monitor_recall = check_extras(model, len(data), pseudo_margin, monitor_eps,
                                                              monitor_recall, norm)
    if pseudo_margin is not None:
        pseudo_margin_model(pseudo_margin, pseudo_margin_options, seed)  # refuse bad options before the attacks
    elif pseudo_margin_options:
        raise InputError("pseudo_margin_options were given without pseudo_margin",
                         "pass pseudo_margin='logits' or a layer name as well, or leave the options out")
    dev = resolve_device(device)
    where = str(dev) if backend == "local" else f"ray: {workers} workers ({worker_device(device, gpus_per_worker)})"
    user_model = model  # layer names, hooks and the monitor's fingerprint refer to the model as given
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
    table, extras, pm, monitor = margins.table, {}, None, None
    if pseudo_margin is not None or monitor_eps is not None:
        table, extras, pm, monitor = fit_extras(
            user_model, data, table, norm=norm, eps=eps, seed=seed, pseudo_margin=pseudo_margin,
            monitor_eps=monitor_eps, monitor_recall=monitor_recall, pseudo_margin_options=pseudo_margin_options,
            n_boot=n_boot, device=dev, out=out)
    summary, curves = analyse(table, norm=norm, eps=eps, n_boot=n_boot, seed=seed, samples=samples)
    summary = {"model": model_name or type(model).__name__, "data": data.name, "method": method,
               "lower_bound_method": lower, **summary, **extras,
               "forward_passes": margins.forward_passes, "backward_passes": margins.backward_passes,
               "attack_seconds": margins.seconds, "seconds": time.perf_counter() - t0, "seed": seed,
               "device": where, "versions": versions(), "command": command or "brittle.audit(...)"}
    result = Audit(table, summary, curves, _examples(data, table, margins.x_adv, n_examples),
                   pseudo_margin=pm, monitor=monitor)
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
