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

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..analysis.consistency import detection_metrics, margin_correlations, robust_accuracy
from ..analysis.robustness import expected_robustness, robust_accuracy_from_margins
from ..core.serialize import jsonable
from ..core.validation import check_eps, check_eps_for_domain, check_nonnegative_int, check_norm
from ..data.loading import Data, as_data
from ..errors import InputError
from ..execution.executor import Executor, as_executor
from ..execution.store import RunStore
from ..margins.compute import (check_margin_settings, compute_margins, prepared_for_margins, run_config,
                               versions)
from ..models.loading import keeps_model_mode
from .result import Audit, eps_keyed, load_run, with_eps_keys  # noqa: F401 - load_run: auditing's reader
from .stages import AuditContext, AuditStage, stages_from_options

DEFAULT_EPS = {"linf": (0.1, 0.2, 0.3), "l2": (1.0, 1.5, 2.0)}  # the standard MNIST budgets
MIN_SPLIT_SAMPLES = 10  # pseudo-margin / monitor: at least 5 samples in each half
PSEUDO_MARGIN_FILE, MONITOR_FILE = "pseudo_margin.json", "monitor.json"


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
            e: {"upper": float(r.robust_acc_attack),
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
    else:  # one input: no correlation, but the keys every audit has (summary["kendall_tau"]["value"] is None)
        for key in ("kendall_tau", "spearman", "pearson"):
            summary[key] = {"value": None, "ci_low": None, "ci_high": None, "n": len(table)}
    detections = detection_metrics(upper, logit, eps, correct=correct, samples=samples if has_labels else "all")
    summary["detection"] = {}
    curves: dict[str, Any] = {}
    for e, det in zip(eps, detections):
        summary["detection"][e] = {"auroc": _finite_or_none(det.auroc), "aupr": _finite_or_none(det.aupr),
                                        "fpr_at_95_tpr": _finite_or_none(det.fpr_at_95tpr),
                                        "threshold_at_95_tpr": _finite_or_none(det.threshold_at_95tpr),
                                        "n_positive": det.n_positive, "n_negative": det.n - det.n_positive,
                                        "reason": det.reason}
        curves[e] = {"roc": {"fpr": det.roc_fpr, "tpr": det.roc_tpr},
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


def check_analysis_settings(*, n_boot: Any, samples: Any, n_examples: Any) -> None:
    """The settings of `analyse` and the examples, checked before an audit computes anything."""
    check_nonnegative_int(n_boot, "n_boot", "pass e.g. n_boot=1000")
    if samples not in ("all", "correct"):
        raise InputError(f"samples must be 'all' or 'correct', got {samples!r}", "pass samples='all' or 'correct'")
    check_nonnegative_int(n_examples, "n_examples", "pass e.g. n_examples=12")


def attack_text(method: str, options: dict[str, Any]) -> str:
    """How the margins were attacked, for a report: the method, its strength and the other options set
    (``budgets`` by the audit's ε, which the report shows anyway, left out)."""
    shown = {k: v for k, v in (options or {}).items() if k != "budgets"}
    if method == "brittle":
        shown = {"strength": shown.pop("strength", "default"), **shown}
    return method + (f" ({', '.join(f'{k} {v}' for k, v in shown.items())})" if shown else "")


@keeps_model_mode  # eval mode inside, every module's own mode afterwards (also after an error)
def audit(model: nn.Module, data: Any, *, norm: str = "linf", eps: Any = None, method: str = "brittle",
          lower: str | None = None, batch_size: int = 250, device: str | torch.device | None = "auto",
          seed: int = 0, out: str | os.PathLike | None = None, overwrite: bool = False, progress: bool = False,
          n_boot: int = 1000, samples: str = "all", n_examples: int = 12, model_name: str | None = None,
          command: str | None = None, method_options: dict[str, Any] | None = None,
          executor: Executor | str | None = None, stages: Sequence[AuditStage] = (),
          pseudo_margin: str | None = None, monitor_eps: float | None = None, monitor_recall: float = 0.95,
          pseudo_margin_options: dict[str, Any] | None = None, subset_estimate: int | None = None,
          report: bool = True) -> Audit:
    """Audit ``model`` on ``data``: margins of every input and what margin consistency says about them.

    With ``out``, margins are computed into a resumable run store there (re-running resumes; a different
    run is refused unless ``overwrite``) and the results — and, with ``report`` (default), ``report.html`` —
    are written there too. ``executor`` chooses where margins are computed (default: this process; see
    `brittle.execution.make_executor`). With the default method the attack also attacks, at each audited ε,
    the samples whose bound lies just above it (``budgets=eps``; see `brittle.input_margins`), so robust
    accuracy read off the margins matches AutoAttack's (benchmarks/RESULTS.md); ``method_options={"budgets":
    []}`` skips that stage.

    ``stages`` are the steps after the margins (`brittle.auditing.stages`); ``pseudo_margin=`` /
    ``pseudo_margin_options=``, ``monitor_eps=`` / ``monitor_recall=`` and ``subset_estimate=N`` are shortcuts
    for `PseudoMarginStage`, `MonitorStage` and `SubsetEstimateStage` (robust accuracy estimated from attacking
    only N inputs, checked against the full audit). ``pseudo_margin="logits"`` (sorted logit gaps) or a layer name
    (that layer's output plus the logits) fits a `PseudoMargin` (default: the pairwise ranking loss, which
    over-fits less than the paper's regression on the square root of the margin, ``{"loss": "regression"}``)
    on a random half of the samples (seeded by ``seed``) and reports Kendall τ / AUROC / AUPR / FPR@95 of the
    logit margin (before) and the pseudo-margin (after) on the other half. ``monitor_eps`` calibrates a
    `Monitor` (score: the pseudo-margin when fitted, else the logit margin) for a recall of ``monitor_recall``
    of the inputs non-robust at ``monitor_eps`` (same norm and units as ``eps``) and reports its recall and
    false-alarm rate on held-out samples. Neither changes the stored margins: a resumed run recomputes them.

    Every setting, the model and the data are checked before anything is written or started.
    """
    # --- validation: everything before any side effect (run directory, store, cluster, worker) ---
    norm = check_norm(norm)
    eps = check_eps(DEFAULT_EPS[norm] if eps is None else eps)
    data = as_data(data)
    eps = check_eps_for_domain(eps, norm, data.domain, int(np.prod(data.input_shape)))  # e.g. 8 meant as 8/255
    method_options = dict(method_options or {})
    if method == "brittle" and "budgets" not in method_options:
        # the audit reads robust accuracy off the margins at these ε: the attack spends its extra stage
        # (APGD-CE, APGD-T, Square at that ε) on the samples whose bound sits just above one of them
        method_options["budgets"] = list(eps)
    settings = check_margin_settings(norm=norm, method=method, lower=lower, batch_size=batch_size, seed=seed,
                                     method_options=method_options)
    if (isinstance(monitor_eps, (int, float)) and not isinstance(monitor_eps, bool) and math.isfinite(monitor_eps)
            and monitor_eps > 0):  # invalid values get the stage's own message below
        check_eps_for_domain([monitor_eps], norm, data.domain, int(np.prod(data.input_shape)))
    executor = as_executor(executor)
    stages = sorted([*stages, *stages_from_options(pseudo_margin, monitor_eps, monitor_recall,
                                                   pseudo_margin_options, subset_estimate)], key=lambda s: s.order)
    for stage in stages:
        if not isinstance(stage, AuditStage):
            raise InputError(f"stages must be AuditStage objects, got {type(stage).__name__}",
                             "pass e.g. stages=[PseudoMarginStage('logits'), MonitorStage(eps=0.1)]")
        stage.check(model, len(data), norm)
    if len({s.name for s in stages}) < len(stages):
        raise InputError("a stage was given twice", "pass each stage once")
    check_analysis_settings(n_boot=n_boot, samples=samples, n_examples=n_examples)
    dev = executor.driver_device(device)
    user_model = model  # layer names, hooks and the monitor's fingerprint refer to the model as given
    model = prepared_for_margins(model, data, settings, dev)
    if samples == "correct" and data.y is not None:  # the analysis needs two correct inputs: known in one pass
        from ..margins.logit import logit_margins

        n_correct = int((logit_margins(model, data, batch_size=batch_size, device=dev).pred == data.y.numpy()).sum())
        if n_correct < 2:
            raise InputError(f"samples='correct' but only {n_correct} input(s) are correctly classified",
                             "pass more inputs, or samples='all'")
    executor.prepare(device)  # Ray: the device, the cluster's connection and resources, before the store exists
    config = run_config(model, data, job="audit", norm=norm, method=method, lower=lower, batch_size=batch_size,
                        seed=seed, method_options=settings.method_options)
    # --- work ---
    t0 = time.perf_counter()
    store = None
    try:
        store = RunStore(out, config, overwrite=overwrite) if out is not None else None
        margins = compute_margins(model, data, norm=norm, method=method, lower=lower, batch_size=batch_size,
                                  device=dev if executor.name == "local" else device, seed=seed, store=store,
                                  progress=progress, method_options=method_options, executor=executor)
    finally:
        executor.close()  # what prepare opened, also when the store failed (compute_margins closes it too)
        if store is not None:
            store.close()
    ctx = AuditContext(user_model, data, margins.table.copy(), norm, eps, seed, n_boot, dev, out)
    for stage in stages:
        stage.run(ctx)
    table, extras = ctx.table, ctx.summary
    summary, curves = analyse(table, norm=norm, eps=eps, n_boot=n_boot, seed=seed, samples=samples)
    summary = {"model": model_name or type(model).__name__, "data": data.name, "method": method,
               "lower_bound_method": lower, **summary, **extras,
               "forward_passes": margins.forward_passes, "backward_passes": margins.backward_passes,
               "attack_seconds": margins.seconds, "seconds": time.perf_counter() - t0, "seed": seed,
               "device": executor.describe(device) if executor.name != "local" else str(dev),
               "attack_options": jsonable(method_options), "attack": attack_text(method, method_options),
               "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "versions": versions(), "command": command or "brittle.audit(...)"}
    result = Audit(table, with_eps_keys(summary), eps_keyed(curves),
                   _examples(data, table, margins.x_adv, n_examples), fitted=ctx.fitted)
    if out is not None:
        result.save(out)
        if report:
            result.report()
    return result
