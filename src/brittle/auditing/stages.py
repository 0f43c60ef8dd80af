"""Audit stages that follow the margins: registered steps, each validated before anything is computed.

A stage is a class with a registry ``name``; `audit` runs the stages it is given after the margins, in
``order``. Each stage checks its own settings in `AuditStage.check` (called before any run directory, store,
cluster or worker exists), then `AuditStage.run` adds columns to the per-sample table, a section to the
summary and, optionally, a fitted object saved next to the results (``file``).

Built-in stages: `PseudoMarginStage` (``"pseudo_margin"``), `MonitorStage` (``"monitor"``) and
`SubsetEstimateStage` (``"subset_estimate"``). The first two work on a
fit / evaluation split of the audited samples (column ``split``): a pseudo-margin is fitted on the fit half
and measured on the evaluation half; a monitor is calibrated on the fit half, or — when a pseudo-margin is
its score — on half of the evaluation half (``"calib"``), which the pseudo-margin never saw, and measured on
the rest. A new stage is a new subclass with ``@register_stage``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data.loading import Data
from ..errors import InputError
from ..models.features import extract_features, resolve_layer
from ..monitoring.monitor import Monitor
from ..scores.pseudo_margin import PseudoMargin, evaluate_pseudo_margin

MIN_SPLIT_SAMPLES = 10  # pseudo-margin / monitor: at least 5 samples in each half
PSEUDO_MARGIN_FILE, MONITOR_FILE = "pseudo_margin.json", "monitor.json"

#: name → stage class
STAGES: dict[str, type["AuditStage"]] = {}


def register_stage(cls: type["AuditStage"]) -> type["AuditStage"]:
    STAGES[cls.name] = cls
    return cls


@dataclass
class AuditContext:
    """What a stage reads and extends: the audited model and data, the margin table, the summary so far."""

    model: nn.Module
    data: Data
    table: pd.DataFrame
    norm: str
    eps: list[float]
    seed: int
    n_boot: int
    device: torch.device | str | None
    out: Any = None
    summary: dict[str, Any] = field(default_factory=dict)
    fitted: dict[str, Any] = field(default_factory=dict)  # stage name → fitted object (saved to ``file``)

    @property
    def upper(self) -> np.ndarray:
        return self.table["input_margin_upper"].to_numpy(dtype=float)

    def split(self) -> np.ndarray:
        """The ``split`` column, created on first use: ``"fit"`` for a seeded half, ``"eval"`` for the rest."""
        if "split" not in self.table:
            self.table["split"] = np.where(split_halves(len(self.table), self.seed), "fit", "eval").astype(object)
        return self.table["split"].to_numpy()


class AuditStage(ABC):
    """One step of an audit after the margins (see the module docstring)."""

    name: ClassVar[str]
    order: ClassVar[int]
    file: ClassVar[str | None] = None

    @abstractmethod
    def check(self, model: nn.Module, n: int, norm: str) -> None:
        """Validate the settings against the model and the number of samples; `InputError` otherwise."""

    @abstractmethod
    def run(self, ctx: AuditContext) -> None:
        """Extend ``ctx.table`` / ``ctx.summary`` / ``ctx.fitted``."""


def split_halves(n: int, seed: int) -> np.ndarray:
    """Boolean mask of the fit half (``ceil(n / 2)`` samples, drawn with ``seed``); the rest is the evaluation half."""
    fit = np.zeros(n, dtype=bool)
    fit[np.random.default_rng(seed).permutation(n)[:(n + 1) // 2]] = True
    return fit


def _check_split_size(n: int) -> None:
    if n < MIN_SPLIT_SAMPLES:
        raise InputError(f"the pseudo-margin and the monitor need at least {MIN_SPLIT_SAMPLES} samples to split "
                         f"into a fit half and an evaluation half, got {n}",
                         "audit more samples, or leave out pseudo_margin / monitor_eps")


def _as_float(value: Any) -> float:
    """``value`` as a float; NaN for anything that is not a real number (bools and strings included)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite_or_none(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _kept(out: Any) -> str:
    return (f"; the margins are kept in {out}, so re-running does not recompute them" if out is not None else "")


def _by_eps(rows: pd.DataFrame, eps: list[float], column: str) -> dict[float, float | None]:
    return {e: _finite_or_none(rows.loc[np.isclose(rows["eps"], e, rtol=1e-12, atol=0), column].iloc[0])
            for e in eps}


@register_stage
class PseudoMarginStage(AuditStage):
    """Fit a `PseudoMargin` on the fit half; report τ / AUROC / AUPR / FPR@95 before (logit margin) and after
    on the evaluation half. ``layer``: ``"logits"`` (sorted logit gaps) or a layer name (its output plus the
    logits); ``options`` go to `PseudoMargin` (default: the ranking loss, seeded by the audit's seed)."""

    name = "pseudo_margin"
    order = 10
    file = PSEUDO_MARGIN_FILE

    def __init__(self, layer: str = "logits", options: dict[str, Any] | None = None):
        if not isinstance(layer, str) or not layer:
            raise InputError(f"pseudo_margin must be 'logits' or a layer name, got {layer!r}",
                             "pass pseudo_margin='logits' or a name from brittle.models.layer_names(model)")
        if options is not None and not isinstance(options, dict):
            raise InputError(f"pseudo_margin_options must be a dict, got {type(options).__name__}",
                             "pass e.g. pseudo_margin_options={'loss': 'ranking'}")
        self.layer, self.options = layer, dict(options or {})

    def model_for(self, seed: int) -> PseudoMargin:
        """The unfitted `PseudoMargin`: inputs from ``layer``, the audit's seed, then ``options``."""
        # ranking by default: on the zoo study (docs/margin-consistency.md) it raised τ on 9 of 12 model x norm
        # pairs where the regression on sqrt(margin) over-fitted a 500-point half (6 of 12)
        settings = {"inputs": "logits" if self.layer == "logits" else "both", "loss": "ranking", "seed": seed,
                    **self.options}
        if self.layer == "logits" and settings["inputs"] != "logits":
            raise InputError(f"pseudo_margin='logits' gives no layer output for inputs={settings['inputs']!r}",
                             "name a layer in pseudo_margin, or leave 'inputs' out of pseudo_margin_options")
        import inspect

        allowed = [k for k in inspect.signature(PseudoMargin).parameters]
        unknown = sorted(set(settings) - set(allowed), key=str)
        if unknown:
            raise InputError(f"unknown pseudo_margin_options {', '.join(map(repr, unknown))}",
                             f"use only {', '.join(allowed)}")
        return PseudoMargin(**settings)  # a known option with a bad value: PseudoMargin's own error names it

    def check(self, model: nn.Module, n: int, norm: str) -> None:
        if self.layer != "logits" and isinstance(model, nn.Module):  # not a module: prepare_model refuses it
            if isinstance(model, torch.jit.ScriptModule):
                raise InputError(f"the layers of a TorchScript model cannot be hooked, so pseudo_margin="
                                 f"{self.layer!r} is not available",
                                 "pass pseudo_margin='logits' (--pseudo-margin logits), or load the model as "
                                 "module:factory with --weights")
            try:
                resolve_layer(model, self.layer)
            except InputError as exc:
                raise InputError(exc.problem, "pass pseudo_margin='logits' or one of those layer names "
                                 "(--pseudo-margin NAME on the command line)") from None
        _check_split_size(n)
        self.model_for(0)  # bad options are refused now, not after the attacks

    def run(self, ctx: AuditContext) -> None:
        split = ctx.split()
        fit_idx, eval_idx = np.flatnonzero(split == "fit"), np.flatnonzero(split != "fit")
        upper = ctx.upper
        layer = None if self.layer == "logits" else self.layer
        features = extract_features(ctx.model, ctx.data, layer, device=ctx.device)
        pm = self.model_for(ctx.seed)
        try:
            pm.fit(features.subset(fit_idx), upper[fit_idx])
        except InputError as exc:
            raise InputError(f"cannot fit the pseudo-margin on the fit half ({len(fit_idx)} samples): {exc.problem}",
                             f"audit more samples or pass a stronger attack{_kept(ctx.out)}") from None
        ctx.table["pseudo_margin"] = pm.predict(features)
        rows = evaluate_pseudo_margin(pm, features.subset(eval_idx), upper[eval_idx], ctx.eps, n_boot=ctx.n_boot,
                                      seed=ctx.seed)
        before, after = rows[rows["score"] == "logit_margin"], rows[rows["score"] == "pseudo_margin"]
        entry: dict[str, Any] = {"layer": self.layer, "inputs": pm.inputs, "loss": pm.loss,
                                 "n_fit": len(fit_idx), "n_eval": len(eval_idx), "seed": ctx.seed,
                                 "evaluated_on": "every sample outside the fit half", "file": self.file}
        for tag, part in (("before", before), ("after", after)):
            first = part.iloc[0]
            entry[f"kendall_tau_{tag}"] = _finite_or_none(first["kendall_tau"])
            entry[f"kendall_tau_{tag}_ci"] = {"ci_low": _finite_or_none(first["tau_ci_low"]),
                                               "ci_high": _finite_or_none(first["tau_ci_high"])}
            for key, column in (("auroc", "auroc"), ("aupr", "aupr"), ("fpr_at_95_tpr", "fpr_at_95tpr")):
                entry[f"{key}_{tag}"] = _by_eps(part, ctx.eps, column)
        ctx.summary["pseudo_margin"] = entry
        ctx.fitted[self.name] = pm


@register_stage
class MonitorStage(AuditStage):
    """Calibrate a `Monitor` for a recall of ``recall`` of the inputs non-robust at ``eps`` (the audit's norm
    and units); its score is the audit's pseudo-margin when one was fitted, else the logit margin."""

    name = "monitor"
    order = 20
    file = MONITOR_FILE

    def __init__(self, eps: float, recall: float = 0.95):
        self.eps, self.recall = eps, recall

    def check(self, model: nn.Module, n: int, norm: str) -> None:
        value = _as_float(self.eps)
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"monitor_eps must be a finite number > 0 in the audit's norm units ({norm}), "
                             f"got {self.eps!r}",
                             "pass e.g. monitor_eps=0.1 (--monitor-eps 0.1), in the same units as eps")
        recall = _as_float(self.recall)
        if not 0 < recall <= 1:
            raise InputError(f"monitor_recall must be in (0, 1], got {self.recall!r}",
                             "pass e.g. monitor_recall=0.95 (--monitor-recall 0.95)")
        _check_split_size(n)
        self.eps, self.recall = value, recall

    def run(self, ctx: AuditContext) -> None:
        split = ctx.split()
        pm = ctx.fitted.get(PseudoMarginStage.name)
        upper = ctx.upper
        if pm is None:
            calib_idx, test_idx = np.flatnonzero(split == "fit"), np.flatnonzero(split != "fit")
        else:  # calibrate on points the pseudo-margin has not seen: half of the evaluation half
            eval_idx = np.flatnonzero(split != "fit")
            perm = np.random.default_rng(ctx.seed + 1).permutation(len(eval_idx))
            k = (len(eval_idx) + 1) // 2
            calib_idx, test_idx = np.sort(eval_idx[perm[:k]]), np.sort(eval_idx[perm[k:]])
            split = split.copy()
            split[calib_idx] = "calib"
            ctx.table["split"] = split
        where = "fit half" if pm is None else "calibration quarter"
        if not np.any(upper[calib_idx] <= self.eps):
            raise InputError(f"no input of the {where} ({len(calib_idx)} samples) is non-robust at monitor_eps="
                             f"{self.eps:g} ({ctx.norm}; smallest input margin there: {np.min(upper[calib_idx]):.4g}), "
                             "so the monitor cannot be calibrated",
                             f"pass a larger monitor_eps in the same units as eps{_kept(ctx.out)}")
        mon = Monitor.calibrate(ctx.model, ctx.data.subset(calib_idx), upper[calib_idx], self.eps,
                                target_recall=self.recall, score=pm if pm is not None else "logit", norm=ctx.norm)
        ctx.table["monitor_flag"] = np.asarray(mon.flags(mon.scores(ctx.data)))
        rep = mon.evaluate(ctx.data.subset(test_idx), upper[test_idx])
        ctx.summary["monitor"] = {
            "eps": self.eps, "norm": ctx.norm, "score": mon.score_kind, "threshold": mon.threshold,
            "target_recall": self.recall, "recall": _finite_or_none(rep.recall),
            "false_alarm_rate": _finite_or_none(rep.false_alarm_rate),
            "flag_rate": _finite_or_none(rep.flag_rate), "precision": _finite_or_none(rep.precision),
            "n": rep.n, "n_nonrobust": rep.n_nonrobust, "notes": rep.notes,
            "calibrated_on": where, "n_calibration": len(calib_idx),
            "evaluated_on": "eval half" if pm is None else "evaluation quarter",
            "calibration": mon.calibration, "file": self.file}
        ctx.fitted[self.name] = mon


def stages_from_options(pseudo_margin: str | None = None, monitor_eps: Any = None, monitor_recall: Any = 0.95,
                        pseudo_margin_options: dict[str, Any] | None = None,
                        subset_estimate: int | None = None) -> list[AuditStage]:
    """The stages behind `audit`'s shortcut arguments (and the CLI's ``--pseudo-margin`` / ``--monitor-eps`` /
    ``--subset-estimate``)."""
    stages: list[AuditStage] = []
    if subset_estimate is not None:
        stages.append(SubsetEstimateStage(subset_estimate))
    if pseudo_margin is not None:
        stages.append(PseudoMarginStage(pseudo_margin, pseudo_margin_options))
    elif pseudo_margin_options:
        raise InputError("pseudo_margin_options were given without pseudo_margin",
                         "pass pseudo_margin='logits' or a layer name as well, or leave the options out")
    if monitor_eps is not None:
        stages.append(MonitorStage(monitor_eps, monitor_recall))
    elif monitor_recall != 0.95:
        MonitorStage(1.0, monitor_recall).check(None, MIN_SPLIT_SAMPLES, "linf")  # a bad recall is still refused
    return stages


@register_stage
class SubsetEstimateStage(AuditStage):
    """How well robust accuracy is estimated from attacking only ``n`` of the audited inputs (the logit margin
    standing in for the rest), per ε and method, with the full audit's value as the truth it is checked
    against: the check to run before trusting cheap estimates on a larger set (`brittle.analysis.subset`)."""

    name = "subset_estimate"
    order = 30

    def __init__(self, n: int = 100, methods: tuple[str, ...] = ("isotonic", "threshold"), n_boot: int = 200):
        from ..analysis.subset import ESTIMATION_METHODS

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise InputError(f"the subset size must be an integer >= 2, got {n!r}", "pass e.g. subset_estimate=100 (CLI: --subset-estimate 100)")
        unknown = [m for m in methods if m not in ESTIMATION_METHODS]
        if unknown or not methods:
            raise InputError(f"unknown subset-estimation method(s) {unknown or methods!r}", f"use some of {ESTIMATION_METHODS}")
        self.n, self.methods, self.n_boot = int(n), tuple(methods), int(n_boot)

    def check(self, model: nn.Module, n: int, norm: str) -> None:
        if n <= self.n:
            raise InputError(f"a subset of {self.n} of the {n} audited inputs estimates nothing the audit does "
                             "not already measure", "audit more inputs or pass a smaller subset size")

    def run(self, ctx: AuditContext) -> None:
        from ..analysis.subset import estimate_robust_accuracy

        if "correct" not in ctx.table:
            ctx.summary["subset_estimates"] = []
            return
        logit, correct = ctx.table["logit_margin"].to_numpy(float), ctx.table["correct"].to_numpy(bool)
        rows = []
        for e in ctx.eps:
            for method in self.methods:
                est = estimate_robust_accuracy(logit, correct, ctx.upper, e, self.n, method=method, seed=ctx.seed,
                                               n_boot=self.n_boot)
                rows.append({"eps": e, "n": est.n_attacked, "method": method, "estimate": est.estimate,
                             "ci_low": est.ci_low, "ci_high": est.ci_high, "true": est.truth})
        ctx.summary["subset_estimates"] = rows
