"""A deployment monitor: flag likely non-robust decisions from the forward pass that makes them.

A `Monitor` wraps a classifier and any `brittle.scores.Scorer` — the logit margin, a fitted `PseudoMargin`,
an OOD detector — with a threshold. It flags an input when the score is on the scorer's flagged side of the
threshold: ``score <= threshold`` for margins (``flag_below``), ``score >= threshold`` for detectors.

* Margin scorers are calibrated on data whose input margins are known (`Monitor.calibrate`): the threshold
  flags at least ``target_recall`` of the calibration inputs that are non-robust at ε (input margin
  ``<= eps``) and sits between two calibration scores, clear of both, so on the calibration data the recall is
  >= the target by construction, in whatever batches they are served; `Monitor.evaluate` measures recall and
  false-alarm rate on other data.
* Any scorer can be calibrated on in-distribution data alone (`Monitor.calibrate_tpr`): the threshold accepts
  (does not flag) at least ``target_tpr`` of the calibration inputs.

In serving code (one forward pass per batch; pseudo-margin features come from a forward hook)::

    monitor = Monitor.load("monitor.json", model)     # refuses a model with other weights
    out = monitor(x)                                   # MonitorOutput: pred, score, flag, logits
    for i in out.flag.nonzero().flatten().tolist():
        send_to_human_review(x[i], out.pred[i])        # likely brittle decisions
    return out.pred

Calibrate once, offline::

    monitor = Monitor.calibrate(model, x_calib, input_margins_calib, eps=0.1, target_recall=0.95)
    monitor.save("monitor.json")

Threads: calls of one `Monitor` are serialised by a lock of its own (eval mode, hooks and the forward pass
belong to one call at a time), so a monitor can be shared by serving threads, which then take turns. For
parallel serving give each worker its own model replica and its own `Monitor`: two monitors on one model
object would still see each other's forward passes.

The model is stored by fingerprint (`brittle.models.loading.model_fingerprint`), never by value.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.serialize import read_json_file
from ..core.validation import (
    as_margin_array,
    check_norm,
    check_positive,
    check_unit_interval,
)
from ..data.loading import as_data
from ..errors import InputError, ModelError
from ..models.features import capture_many, resolve_layer
from ..models.loading import (
    check_input_scale,
    checked_forward,
    evaluation_mode,
    keeps_model_mode,
    model_fingerprint,
    prepare_model,
    weights_fingerprint,
)
from ..scores.base import Scorer, scorer_from_dict
from ..scores.logit_margin import LogitMarginScorer
from ..scores.pseudo_margin import PseudoMargin

FORMAT = "brittle.monitor"
FORMAT_VERSION = 1


@dataclass
class MonitorOutput:
    """What one monitored forward pass returns (tensors on the model's device, one row per input)."""

    pred: torch.Tensor
    score: torch.Tensor
    flag: torch.Tensor
    logits: torch.Tensor

    def __len__(self) -> int:
        return len(self.pred)


@dataclass
class MonitorReport:
    """Measured behaviour of the monitor on inputs with known input margins.

    ``recall``: flagged fraction of the non-robust inputs (input margin <= ε); ``false_alarm_rate``: flagged
    fraction of the robust ones; NaN (with a note) when a class is absent.
    """

    eps: float
    threshold: float
    n: int
    n_nonrobust: int
    recall: float
    false_alarm_rate: float
    flag_rate: float
    precision: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"eps": self.eps, "threshold": self.threshold, "n": self.n, "n_nonrobust": self.n_nonrobust,
                "recall": self.recall, "false_alarm_rate": self.false_alarm_rate, "flag_rate": self.flag_rate,
                "precision": self.precision, "notes": list(self.notes)}


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _as_batch(x: Any, device: torch.device) -> torch.Tensor:
    """A serving batch as a float32 tensor on ``device``: a tensor or array with a batch dimension."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x has type {type(x).__name__}", "pass a batch as a torch tensor or numpy array")
    if x.ndim == 0:
        raise InputError("x is a scalar", "pass a batch of inputs, shape (N, ...)")
    if x.ndim == 1:
        raise InputError(f"x has shape {tuple(x.shape)}: expected (N, ...) with one row per input",
                         "add a batch dimension, e.g. x[None] for a single input")
    if x.dtype == torch.uint8:  # raw pixels: the model's scores of 0-255 inputs would flag nothing
        raise InputError("x holds uint8 pixels (0-255), not the float inputs the model takes",
                         "pass x.float() / 255 (or the preprocessing the model was trained with)")
    return x.to(device, dtype=torch.float32)


def _forward_pass(net: nn.Module, x: torch.Tensor, layers: dict[str, nn.Module]
                  ) -> tuple[nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    """``(net, float32 logits, layer outputs)`` of one checked forward pass (`checked_forward`: a failing model
    is reported in one line, a structured output is adapted once and the adapted ``net`` returned, the logits
    are checked). The caller holds the lock and eval mode. An empty batch hooks nothing."""
    if len(x) == 0:
        layers = {}
    with capture_many(layers) as holder, torch.inference_mode():
        net, out = checked_forward(net, x)
    missing = [name for name in layers if name not in holder]
    if missing:
        raise ModelError(f"layer {missing[0]!r} did not run during the forward pass",
                         "use the model the scorer was fitted on")
    return net, out.float(), dict(holder)


#: A calibrated threshold keeps at least this share of the scores' scale clear of the calibration score it is
#: set from: float32 scores of one input move by about 1e-5 of their scale with the batch they are computed in.
THRESHOLD_CLEARANCE = 1e-4


def _threshold_above(cut: float, values: np.ndarray) -> float:
    """A threshold strictly above ``cut`` for ``values <= threshold``: the midpoint between ``cut`` and the next
    larger value, and at least `THRESHOLD_CLEARANCE` of the values' scale above ``cut`` (so that the values at or
    below ``cut`` stay below the threshold whatever batch they are scored in)."""
    if not math.isfinite(cut):
        return cut
    finite = np.abs(values[np.isfinite(values)])
    scale = max(abs(cut), float(np.median(finite)) if len(finite) else 0.0)
    floor_ = cut + THRESHOLD_CLEARANCE * scale if scale > 0 else float(np.nextafter(cut, np.inf))
    above = values[(values > cut) & np.isfinite(values)]
    return max(0.5 * (cut + float(above.min())), floor_) if len(above) else floor_


def _report(flags: np.ndarray, d_in: np.ndarray, eps: float, threshold: float) -> MonitorReport:
    pos = d_in <= eps
    n, n_pos = len(pos), int(pos.sum())
    notes = []
    nan = float("nan")
    recall = float(flags[pos].mean()) if n_pos else nan
    far = float(flags[~pos].mean()) if n_pos < n else nan
    precision = float(pos[flags].mean()) if flags.any() else nan
    if not n_pos:
        notes.append(f"no non-robust input at eps={eps:g}: recall is undefined")
    if n_pos == n:
        notes.append(f"every input is non-robust at eps={eps:g}: false-alarm rate is undefined")
    return MonitorReport(eps, threshold, n, n_pos, recall, far, float(flags.mean()), precision, notes)


class Monitor:
    """Flag inputs whose decision is likely non-robust at ε, in the forward pass that classifies them.

    Args:
        model: the classifier (its fingerprint is recorded; it is not copied).
        score: ``"logit"`` (the logit margin), a fitted `PseudoMargin` (fitted on `extract_features` output) or
            any fitted `brittle.scores.Scorer` (e.g. an OOD detector).
        threshold: flag when ``score <= threshold`` (margin scorers) or ``score >= threshold`` (detectors).
        eps: the ε the threshold was calibrated for (margin scorers; informational unless calibrated).
        norm: ``"linf"`` or ``"l2"``, the norm of the input margins.
        target_recall: the recall (margins) or ID acceptance rate (`calibrate_tpr`) the threshold was set for.
        calibration: measured rates on the calibration data (filled by the calibrate methods).
    """

    def __init__(self, model: nn.Module, score: str | Scorer = "logit", *, threshold: float,
                 eps: float | None = None, norm: str = "linf", target_recall: float | None = None,
                 calibration: dict[str, Any] | None = None):
        if not isinstance(model, nn.Module):
            raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}", "pass the classifier")
        self.scorer = self._check_scorer(score)
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise InputError(f"threshold must be a number, got {threshold!r}", "pass a float threshold") from None
        if math.isnan(threshold):
            raise InputError("threshold is NaN", "calibrate the monitor with Monitor.calibrate")
        if eps is not None:
            eps = check_positive(eps)
        self.model = model
        self.threshold = threshold
        self.eps = None if eps is None else float(eps)
        self.norm = check_norm(norm)
        self.target_recall = None if target_recall is None else check_unit_interval(target_recall, "target_recall")
        if calibration is not None and not isinstance(calibration, dict):
            raise InputError(f"calibration must be a dict of measured rates, got {type(calibration).__name__}",
                             "pass the dict a calibrate method filled, or None")
        self.calibration = dict(calibration or {})
        self.fingerprint = model_fingerprint(model)
        self._layers = {name: resolve_layer(model, name) for name in self.scorer.layers}
        self._net: nn.Module = model  # evaluated in eval mode (`_forward`); the model keeps its own mode
        self._lock = threading.Lock()  # one call at a time: eval mode, hooks and forward pass (module docstring)
        self._scale_checked = False  # the first served batch is checked against the model's input range

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)  # a lock is not copied or pickled: every copy gets its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @staticmethod
    def _check_scorer(score: Any) -> Scorer:
        if isinstance(score, str):
            if score != "logit":
                raise InputError(f"score must be 'logit' or a fitted Scorer (PseudoMargin, OOD detector), got {score!r}",
                                 "pass score='logit' or a fitted scorer")
            return LogitMarginScorer()
        if not isinstance(score, Scorer):
            raise InputError(f"score must be 'logit' or a brittle Scorer, got {type(score).__name__}",
                             "pass score='logit', a fitted PseudoMargin or a fitted OOD detector")
        if isinstance(score, PseudoMargin):
            if score.net is None:
                raise InputError("the pseudo-margin is not fitted", "fit it before building a monitor")
            if score.source != "features":
                raise InputError("the pseudo-margin was fitted on a raw array, so the monitor cannot rebuild its "
                                 "inputs from a forward pass",
                                 "fit it on brittle.extract_features(model, data, layer) output")
        score.check_fitted()
        return score

    @property
    def score(self) -> str | Scorer:
        """``"logit"`` for the logit margin, else the scorer."""
        return "logit" if isinstance(self.scorer, LogitMarginScorer) else self.scorer

    @property
    def score_kind(self) -> str:
        if isinstance(self.scorer, LogitMarginScorer):
            return "logit"
        return self.scorer.name

    def flags(self, score: Any) -> Any:
        """The flag of each score (tensor or array) under this monitor's threshold and the scorer's orientation."""
        return score <= self.threshold if self.scorer.flag_below else score >= self.threshold

    # --- forward --------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, score)`` of a batch in one forward pass (plus the scorer's own passes if it needs the model),
        in eval mode, one call at a time (the monitor's lock); the model is left in the mode it was in."""
        with self._lock, evaluation_mode(self.model):
            return self._forward_eval(x)

    def _forward_eval(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._net, logits, outputs = _forward_pass(self._net, x, self._layers)
        if len(x) == 0:
            score = torch.empty(0, dtype=torch.float64, device=logits.device)
        elif self.scorer.needs_model:
            score = self.scorer.score_batch(self._net, x).to(logits.device)
        else:
            with torch.inference_mode():
                score = self.scorer.score_tensor(logits, outputs).to(logits.device)
        return logits, score.double()

    def __call__(self, x: Any) -> MonitorOutput:
        """Prediction, score and flag (``score <= threshold``) of a batch, from one forward pass.

        ``x`` has a batch dimension, ``(N, ...)``; an empty batch gives an empty output. Concurrent calls take
        turns (see the module docstring)."""
        x = _as_batch(x, _model_device(self.model))
        if not getattr(self, "_scale_checked", False) and len(x):  # once: inputs outside the model's declared range (0-255 floats)
            check_input_scale(self.model, x)
            self._scale_checked = True
        logits, score = self._forward(x)
        return MonitorOutput(logits.argmax(1), score, self.flags(score), logits)

    predict = __call__

    def scores(self, data: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Score of every input of ``data`` (anything `brittle.as_data` accepts), in batches."""
        d = as_data(data)
        dev = _model_device(self.model)
        out = [self._forward(xb.to(dev))[1].cpu() for _, xb, _ in d.batches(batch_size)]
        return torch.cat(out).numpy().astype(np.float64)

    # --- calibration and evaluation -----------------------------------------------------------
    @classmethod
    @keeps_model_mode
    def calibrate(cls, model: nn.Module, calib_data_x: Any, input_margins: Any, eps: float, *,
                  target_recall: float = 0.95, score: str | Scorer = "logit", norm: str = "linf",
                  batch_size: int = 1024) -> "Monitor":
        """Pick the threshold on calibration data so that recall of non-robust inputs is >= ``target_recall``.

        ``input_margins`` are the calibration inputs' margins (``inf`` = censored, robust at every ε). The
        threshold lies strictly above the ``ceil(target_recall · P)``-th smallest score among the ``P``
        non-robust inputs: midway to the next larger calibration score, and at least `THRESHOLD_CLEARANCE` of
        the scores' scale above it, so the recall on the calibration inputs stays >= the target when they are
        served in other batches (float32 scores move slightly with the batch composition).
        Use data the pseudo-margin was not fitted on.
        """
        eps = check_positive(eps)
        target_recall = check_unit_interval(target_recall, "target_recall")
        monitor = cls(model, score, threshold=0.0, eps=float(eps), norm=norm, target_recall=target_recall)
        if not monitor.scorer.flag_below:
            raise InputError(f"calibrate() flags non-robust inputs by a margin; {monitor.score_kind!r} is a detector "
                             "(it flags high scores)", "use Monitor.calibrate_tpr(model, id_data, target_tpr=...)")
        data = as_data(calib_data_x)
        d_in = as_margin_array(input_margins, "input_margins", n=len(data))
        prepare_model(model, device=_model_device(model), sample=data.x[:2], num_classes=data.num_classes)
        s = monitor.scores(data, batch_size=batch_size)
        pos = d_in <= eps
        n_pos = int(pos.sum())
        if n_pos == 0:
            raise InputError(f"no calibration input is non-robust at eps={eps:g} (input margin <= eps)",
                             "calibrate on more data, or on a larger eps")
        k = max(1, math.ceil(target_recall * n_pos - 1e-9))
        monitor.threshold = _threshold_above(float(np.sort(s[pos])[k - 1]), s)
        rep = _report(s <= monitor.threshold, d_in, float(eps), monitor.threshold)
        monitor.calibration = {"n": rep.n, "n_nonrobust": rep.n_nonrobust, "recall": rep.recall,
                               "false_alarm_rate": rep.false_alarm_rate, "flag_rate": rep.flag_rate}
        return monitor

    @classmethod
    @keeps_model_mode
    def calibrate_tpr(cls, model: nn.Module, id_data: Any, score: str | Scorer = "logit", *, target_tpr: float = 0.95,
                      batch_size: int = 1024) -> "Monitor":
        """Threshold from in-distribution data alone: at least ``target_tpr`` of ``id_data`` is accepted (not
        flagged). Works for any scorer (OOD detectors, margins); no input margins needed. The threshold sits
        between the last accepted and the next score, clear of the accepted ones as in `calibrate`."""
        target_tpr = check_unit_interval(target_tpr, "target_tpr")
        monitor = cls(model, score, threshold=0.0, target_recall=target_tpr)
        data = as_data(id_data)
        prepare_model(model, device=_model_device(model), sample=data.x[:2], num_classes=data.num_classes)
        scores = monitor.scores(data, batch_size=batch_size)
        risk = monitor.scorer.risk(scores)
        k = max(1, math.ceil(target_tpr * len(risk) - 1e-9))  # accept the k lowest-risk inputs (and their ties)
        cut = _threshold_above(float(np.sort(risk)[k - 1]), risk)  # accepted: risk < cut
        # detectors flag score >= t with score = risk; margins flag score <= t with score = -risk
        monitor.threshold = -cut if monitor.scorer.flag_below else cut
        accepted = ~np.asarray(monitor.flags(scores))
        monitor.calibration = {"n": len(risk), "accept_rate": float(accepted.mean()), "target_tpr": target_tpr}
        return monitor

    def evaluate(self, x: Any, input_margins: Any, *, eps: float | None = None, batch_size: int = 1024) -> MonitorReport:
        """Measured recall and false-alarm rate on inputs ``x`` with known ``input_margins`` (at ``eps``,
        default the calibrated ε)."""
        eps = self.eps if eps is None else eps
        eps = check_positive(eps, fix="pass eps= or calibrate the monitor")
        data = as_data(x)
        d_in = as_margin_array(input_margins, "input_margins", n=len(data))
        s = self.scores(data, batch_size=batch_size)
        return _report(np.asarray(self.flags(s)), d_in, float(eps), self.threshold)

    # --- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "threshold": self.threshold, "eps": self.eps,
                "norm": self.norm, "score": self.score_kind, "target_recall": self.target_recall,
                "model_fingerprint": self.fingerprint, "calibration": self.calibration,
                "pseudo_margin": self.scorer.to_dict() if isinstance(self.scorer, PseudoMargin) else None,
                "scorer": None if self.score_kind in ("logit", "pseudo_margin") else self.scorer.to_dict()}

    def save(self, path: str | os.PathLike) -> None:
        """Write threshold, ε, norm, score kind, pseudo-margin parameters and the model fingerprint to one JSON file."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike, model: nn.Module) -> "Monitor":
        """Read a monitor written by `save` for ``model``; refuses a model whose fingerprint differs."""
        d = read_json_file(path, "monitor", "re-save it with Monitor.save")
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"{path} is not a brittle monitor file", "load a file written by Monitor.save")
        if d.get("version") != FORMAT_VERSION:
            raise InputError(f"monitor format version {d.get('version')!r} is not supported (expected {FORMAT_VERSION})",
                             "recalibrate and save it with this version of brittle")
        if not isinstance(model, nn.Module):
            raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}", "pass the classifier")
        fp = model_fingerprint(model)
        # monitors saved by brittle 0.3.0 and earlier carry the fingerprint of the weights alone
        if d.get("model_fingerprint") not in (fp, weights_fingerprint(model)):
            raise ModelError(f"the model's fingerprint {fp[:12]}… differs from the one the monitor was calibrated on "
                             f"({str(d.get('model_fingerprint'))[:12]}…)",
                             "load the same architecture and weights, or recalibrate the monitor for this model")
        calibration = d.get("calibration")
        if calibration is not None and not isinstance(calibration, dict):
            raise InputError(f"monitor file {path} is corrupt: 'calibration' is a {type(calibration).__name__}, "
                             "not a dict", "re-save it with Monitor.save")
        try:
            if d["score"] == "pseudo_margin":
                score: str | Scorer = PseudoMargin.from_dict(d["pseudo_margin"])
            elif d["score"] == "logit":
                score = "logit"
            else:
                score = scorer_from_dict(d.get("scorer"))
            return cls(model, score, threshold=d["threshold"], eps=d["eps"], norm=d["norm"],
                       target_recall=d["target_recall"], calibration=calibration)
        except KeyError as exc:
            raise InputError(f"monitor file {path} lacks the field {exc}", "re-save it with Monitor.save") from None

    def __repr__(self) -> str:
        return (f"Monitor(score={self.score_kind!r}, threshold={self.threshold:.6g}, eps={self.eps}, "
                f"norm={self.norm!r}, target_recall={self.target_recall})")
