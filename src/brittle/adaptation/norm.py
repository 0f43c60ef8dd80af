"""BatchNorm at test time: which statistics normalise a test batch.

A BatchNorm layer of the adapted copy of the model is switched to a test-time policy (its class is swapped
for a subclass with its own ``forward``; parameters, buffers and ``state_dict`` keys are unchanged, so the
adapted weights load into the original architecture):

- ``"source"``: the running statistics of training (the model as deployed; no statistics adaptation);
- ``"batch"``: the statistics of the current test batch, with gradients through them — TENT's choice
  (Wang et al., 2021) and the "BN adapt" baseline (Schneider et al., 2020). Needs at least two values per
  channel (a batch of one image is refused by ``BatchNorm1d`` layers; ``BatchNorm2d`` would normalise one
  image by its own spatial statistics — instance norm — which is not what was trained, so it is refused too);
- ``"ema"``: an exponential moving average of test statistics including the current batch (as RoTTA's
  robust BN): ``mean = (1 - m) running + m batch_mean``, ``var = (1 - m) running_var + m batch_var +
  m (1 - m) (batch_mean - running)^2`` (the variance of the mixture), gradients flow through the current
  batch's share. ``m = 1 - (1 - rate)^n`` for a batch of ``n`` samples, so the average spans about
  ``1 / rate`` samples whatever the batch size (``rate`` = ``bn_momentum``, default 0.01: ~100 samples).
  Works for a batch of one;
- ``"auto"`` (default): ``"batch"`` for batches of at least `AUTO_MIN_BATCH` samples, else ``"ema"``.

In ``"batch"`` mode the running statistics are also updated with the same per-sample rate (PyTorch's
running-average update with momentum ``m``: unbiased batch variance), so a saved adapted model, evaluated in eval mode, normalises with the statistics of the test stream. ``frozen`` layers (used
for predictions that must not change the state, e.g. the forgetting evaluation) update nothing: with
``"batch"`` they normalise each evaluation batch by its own statistics, with ``"ema"`` by the running (EMA)
statistics as they stand (no share of the evaluation batch), and ``"auto"`` follows the policy of the last
adaptation step (so a model adapted with batches of one is evaluated with its EMA statistics).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

BN_POLICIES = ("auto", "batch", "ema", "source")
#: ``bn_stats="auto"`` uses the batch statistics from this batch size on.
AUTO_MIN_BATCH = 16

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _TestTimeBN:
    """Mixin placed before the BatchNorm class of a module (see `convert_batchnorm`)."""

    tta_policy: str = "auto"
    tta_rate: float = 0.01
    tta_frozen: bool = False
    tta_last: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        self._check_input_dim(x)  # type: ignore[attr-defined]
        policy = self.tta_policy
        if policy == "auto":
            if self.tta_frozen and self.tta_last is not None:
                policy = self.tta_last  # predictions that change nothing follow the stream's policy
            else:
                policy = "batch" if x.shape[0] >= AUTO_MIN_BATCH else "ema"
        if not self.tta_frozen:
            self.tta_last = policy
        w, b, eps = self.weight, self.bias, self.eps  # type: ignore[attr-defined]
        rm, rv = self.running_mean, self.running_var  # type: ignore[attr-defined]
        if policy == "source" or rm is None:
            return F.batch_norm(x, rm, rv, w, b, False, 0.0, eps)
        dims = [0] + list(range(2, x.ndim))
        per_channel = x.numel() // max(x.shape[1], 1)
        m = 1.0 - (1.0 - self.tta_rate) ** x.shape[0]
        if policy == "batch":
            if per_channel < 2 or (x.shape[0] < 2 and x.ndim > 2):
                raise InputError(f"bn_stats='batch' needs batches of at least 2 samples, got {x.shape[0]}",
                                 "use bn_stats='ema' (or 'auto') for small batches")
            if self.tta_frozen:
                return F.batch_norm(x, None, None, w, b, True, 0.0, eps)
            # normalise by the batch's statistics; the running ones move by the per-sample EMA (one fused op)
            return F.batch_norm(x, rm, rv, w, b, True, m, eps)
        if self.tta_frozen:  # the adapted statistics as they stand, whatever the batch
            return F.batch_norm(x, rm, rv, w, b, False, 0.0, eps)
        bm, bv = x.mean(dims), x.var(dims, unbiased=False)
        rm_, rv_ = rm.detach(), rv.detach()
        mean = (1 - m) * rm_ + m * bm
        var = (1 - m) * rv_ + m * bv + m * (1 - m) * (bm - rm_) ** 2
        if not self.tta_frozen:
            with torch.no_grad():
                rm.copy_(mean.detach())
                rv.copy_(var.detach())
        shape = [1, -1] + [1] * (x.ndim - 2)
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + eps)
        if w is not None:
            y = y * w.reshape(shape) + b.reshape(shape)
        return y



_CLASSES: dict[type, type] = {}


def _tta_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"TestTime{cls.__name__}", (_TestTimeBN, cls), {"__module__": __name__})
    return _CLASSES[cls]


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every BatchNorm layer of ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BN_TYPES)]


def convert_batchnorm(model: nn.Module, policy: str = "auto", rate: float = 0.01) -> int:
    """Switch every BatchNorm layer of ``model`` (in place) to the test-time ``policy``; returns how many."""
    check_policy(policy, rate)
    count = 0
    for _, mod in batchnorm_layers(model):
        if not isinstance(mod, _TestTimeBN):
            mod.__class__ = _tta_class(type(mod))
        mod.tta_policy, mod.tta_rate, mod.tta_frozen, mod.tta_last = policy, float(rate), False, None
        count += 1
    return count


def set_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) the running statistics of every converted BatchNorm layer."""
    for _, mod in batchnorm_layers(model):
        if isinstance(mod, _TestTimeBN):
            mod.tta_frozen = frozen


def check_policy(policy: Any, rate: Any) -> None:
    if policy not in BN_POLICIES:
        raise InputError(f"unknown bn_stats policy {policy!r}", f"use one of {', '.join(BN_POLICIES)}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < float(rate) <= 1:
        raise InputError(f"bn_momentum must be a number in (0, 1], got {rate!r}", "pass e.g. bn_momentum=0.01")
