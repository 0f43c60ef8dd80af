"""Several monitors on one model in one forward pass: e.g. a brittleness flag (logit margin or pseudo-margin)
and an OOD flag (any fitted detector) for every input at once.

    brittle_mon = Monitor.calibrate(model, x_cal, margins_cal, eps=0.1)           # flags small margins
    ood_mon = Monitor.calibrate_tpr(model, x_id_val, vim, target_tpr=0.95)       # flags high OOD scores
    both = CombinedMonitor({"brittle": brittle_mon, "ood": ood_mon})
    out = both(x)              # out.pred, out.logits, out.scores["ood"], out.flags["brittle"], out.any_flag

Each monitor keeps its own scorer, threshold and orientation; the combined monitor hooks the union of their
layers once, runs the model once, and scores every monitor from the same logits and layer outputs (scorers
that need the model — ODIN, Mahalanobis with noise — run their own gradient pass after it). As `Monitor`, it runs
the model in eval mode and gives it back in the mode it was in, adapts a tuple / dict output once, and takes
its turn with the member monitors' own calls (it holds their locks during a call).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError, ModelError
from ..models.features import resolve_layer
from ..models.loading import evaluation_mode
from .monitor import Monitor, _as_batch, _forward_pass, _model_device


@dataclass
class CombinedOutput:
    """Predictions and logits of one forward pass, with each monitor's scores and flags (by name)."""

    pred: torch.Tensor
    logits: torch.Tensor
    scores: dict[str, torch.Tensor]
    flags: dict[str, torch.Tensor]

    @property
    def any_flag(self) -> torch.Tensor:
        """True where at least one monitor flags the input."""
        return torch.stack(list(self.flags.values())).any(0)


class CombinedMonitor:
    """Monitors sharing one model and one forward pass (see the module docstring)."""

    def __init__(self, monitors: dict[str, Monitor]):
        if not isinstance(monitors, dict) or not monitors or not all(isinstance(m, Monitor) for m in monitors.values()):
            raise InputError("monitors must be a non-empty dict name → Monitor", "pass e.g. {'brittle': m1, 'ood': m2}")
        models = {id(m.model) for m in monitors.values()}
        if len(models) != 1:
            raise ModelError("the monitors watch different model objects", "build every monitor on the same model")
        self.monitors = dict(monitors)
        self.model = next(iter(monitors.values())).model
        layers = list(dict.fromkeys(name for m in monitors.values() for name in m.scorer.layers))
        self._layers = {name: resolve_layer(self.model, name) for name in layers}
        self._net: nn.Module = self.model  # adapted once if the model returns a tuple / dict

    def __call__(self, x: Any) -> CombinedOutput:
        """Predictions, logits and every monitor's scores and flags of a batch ``(N, ...)`` (empty: empty)."""
        x = _as_batch(x, _model_device(self.model))
        distinct = sorted({id(m): m for m in self.monitors.values()}.values(), key=id)
        with ExitStack() as stack:
            for mon in distinct:  # always in the same order, so two combined monitors cannot deadlock
                stack.enter_context(mon._lock)
            stack.enter_context(evaluation_mode(self.model))
            self._net, logits, outputs = _forward_pass(self._net, x, self._layers)
            scores, flags = {}, {}
            for name, mon in self.monitors.items():
                if len(x) == 0:
                    s = torch.empty(0, dtype=torch.float64, device=logits.device)
                elif mon.scorer.needs_model:
                    s = mon.scorer.score_batch(self._net, x)
                else:
                    with torch.inference_mode():
                        s = mon.scorer.score_tensor(logits, {k: outputs[k] for k in mon.scorer.layers})
                s = s.to(logits.device).double()
                scores[name], flags[name] = s, mon.flags(s)
        return CombinedOutput(logits.argmax(1), logits, scores, flags)
