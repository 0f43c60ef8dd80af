"""Input margins: the smallest L∞ / L2 perturbation, inside the input box, that changes the predicted class.

Attacks give verified upper bounds (``inf`` where nothing was found in budget, never 0); optional bound
propagation (IBP / CROWN) gives certified lower bounds, and ``method="exact"`` solves small ReLU networks
exactly (L∞, by MILP). Everything runs batch by batch through `margins_for_batch`, which the run store and
distributed backends call per batch.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .attacks import AttackResult, Cost, Ensemble, MinimalNormAttack, keep_best, make_attack, verify
from ..core.validation import check_norm
from ..data.loading import Domain, as_data
from ..errors import InputError, ModelError
from ..models.loading import check_logits, device_mismatch_error, keeps_model_mode, resolve_device
from .settings import (INPUT_MARGIN_METHODS, LOWER_METHODS, build_attack, check_budgets,  # noqa: F401 - API
                       check_margin_settings, check_method, prepared_for_margins)

@dataclass
class InputMargins:
    """Per-sample input-margin brackets ``lower <= d_in(x) <= upper`` and the adversarial examples found.

    Attributes:
        upper: verified upper bounds (norm of ``x_adv - x``); ``inf`` where nothing was found.
        lower: certified lower bounds (zeros unless a lower-bound method ran; ``inf`` where the prediction
            is certified over the whole domain).
        x_adv: adversarial inputs (the clean input where nothing was found), same shape as the data.
        adv_class: class predicted at ``x_adv`` (-1 where nothing was found).
        pred: the model's predicted class on the clean input.
        norm: ``"linf"`` or ``"l2"``.
        method: the method that produced ``upper`` (ensembles list their members).
        forward_passes, backward_passes: per-sample passes spent in total.
        seconds: wall time in total.
    """

    upper: np.ndarray
    lower: np.ndarray
    x_adv: np.ndarray
    adv_class: np.ndarray
    pred: np.ndarray
    norm: str
    method: str
    forward_passes: int = 0
    backward_passes: int = 0
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.upper)

    def __repr__(self) -> str:
        found = np.isfinite(self.upper)
        median = f"{float(np.median(self.upper[found])):.4g}" if found.any() else "none"
        return (f"InputMargins(n={len(self)}, norm={self.norm!r}, method={self.method!r}, found={int(found.sum())}, "
                f"median_upper={median}, seconds={self.seconds:.3g})")

    @property
    def found(self) -> np.ndarray:
        """Whether an adversarial example was found, per sample."""
        return np.isfinite(self.upper)

    def to_frame(self) -> pd.DataFrame:
        """One row per sample: ``upper``, ``lower``, ``adv_class``, ``pred``."""
        return pd.DataFrame({"upper": self.upper, "lower": self.lower, "adv_class": self.adv_class,
                             "pred": self.pred})


@dataclass
class BatchMargins:
    """`margins_for_batch` outcome: tensors for one batch, on the CPU, and what it cost."""

    upper: torch.Tensor
    lower: torch.Tensor
    x_adv: torch.Tensor
    adv_class: torch.Tensor
    pred: torch.Tensor
    cost: Cost
    seconds: float


def method_label(method: str, attack: MinimalNormAttack | None) -> str:
    """A readable name of a method, e.g. ``ensemble(brittle+fab-autoattack)``."""
    if isinstance(attack, Ensemble):
        return f"ensemble({'+'.join(attack.members)})"
    return method


def _clean_pass(model: nn.Module, x: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """Predicted classes; `ModelError` on bad logits or a model whose logits carry no gradient."""
    probe = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(probe)
    if not isinstance(logits, torch.Tensor):
        raise ModelError(f"the model returned {type(logits).__name__}, not a tensor of logits",
                         "prepare it with brittle.prepare_model(model, sample=x) or return logits")
    check_logits(logits.detach(), len(x), num_classes)
    if not logits.requires_grad:
        raise ModelError("the model's logits are not differentiable with respect to its input "
                         "(torch.no_grad, .detach() or a non-differentiable op in forward)",
                         "make forward differentiable: input margins are found with gradient-based attacks")
    return logits.detach().argmax(1)


def margins_for_batch(model: nn.Module, x: torch.Tensor, pred: torch.Tensor | None = None, *, norm: str = "linf",
                      method: str = "brittle", domain: Domain = (0.0, 1.0), seed: int = 0, lower: str | None = None,
                      attack: MinimalNormAttack | None = None, num_classes: int | None = None,
                      **method_options: Any) -> BatchMargins:
    """Input-margin brackets of one batch ``x`` (already on the model's device, inside ``domain``).

    ``model`` must be ready (eval mode, right device: see `brittle.prepare_model`). ``pred`` defaults to the
    model's prediction; ``attack`` (e.g. from `build_attack`) skips rebuilding the attack for every batch.
    Returns CPU tensors; ``upper`` is ``inf`` where nothing was found.
    """
    norm = check_norm(norm)
    check_method(method, lower)
    start = time.perf_counter()
    if attack is None:
        attack = build_attack(method, norm, seed=seed, **method_options)
    elif attack.norm != norm:
        raise InputError(f"the attack is for {attack.norm} but norm={norm!r}", "build the attack for this norm")
    mismatch = device_mismatch_error(model, x.device)
    if mismatch is not None:
        raise mismatch
    clean_pred = _clean_pass(model, x, num_classes)
    if pred is None:
        pred = clean_pred
    cost = Cost(forward=len(x))
    lower_t = torch.zeros(len(x))
    if method == "exact":
        result, exact_lower = _exact(model, x, pred, norm, domain, seed, method_options)
        lower_t = torch.maximum(lower_t, exact_lower)
    else:
        assert attack is not None
        result = attack(model, x, pred, domain)
    cost += result.cost
    upper = result.upper.detach().float().cpu()
    if lower is not None:
        from .bounds import certified_lower_bounds

        certified = certified_lower_bounds(model, x, pred, norm, domain, method=lower, upper=upper)
        lower_t = torch.maximum(lower_t, certified.detach().float().cpu())
    if bool((lower_t > upper * (1 + 1e-4) + 1e-6).any()):
        warnings.warn("a certified lower bound exceeds a verified upper bound: one of the two methods is unsound "
                      "on this model", RuntimeWarning, stacklevel=2)
    return BatchMargins(upper, lower_t, result.x_adv.detach().cpu(), result.adv_class.detach().cpu(),
                        pred.detach().cpu(), cost, time.perf_counter() - start)


def _exact(model: nn.Module, x: torch.Tensor, pred: torch.Tensor, norm: str, domain: Domain, seed: int,
           options: dict[str, Any]) -> tuple[AttackResult, torch.Tensor]:
    """brittle's attack, then the MILP of `brittle.margins.bounds.exact_margins` warm-started with its bound."""
    from .bounds import exact_margins

    options = dict(options)
    time_limit = options.pop("time_limit", 60.0)
    attack_result = make_attack("brittle", norm, seed=seed, **options)(model, x, pred, domain)
    exact = exact_margins(model, x, pred, norm, domain, time_limit=time_limit, upper=attack_result.upper.cpu())
    missed = int((~exact.exact.bool()).sum())
    if missed:
        warnings.warn(f"method='exact': {missed} of {len(x)} sample(s) were not solved and verified within "
                      f"time_limit={time_limit:g} s; their upper bound is the attack's and their lower bound the "
                      "solver's best so far", RuntimeWarning, stacklevel=4)
    milp = verify(model, x, exact.x_adv.to(x.device, x.dtype), pred, norm, domain)
    milp.cost = Cost(forward=len(x))
    best = keep_best(attack_result, milp)
    return best, exact.lower.detach().float().cpu().nan_to_num(nan=0.0, posinf=math.inf)


@keeps_model_mode  # eval mode inside, the caller's mode afterwards
def input_margins(model: nn.Module, data: Any, norm: str = "linf", method: str = "brittle", *,
                  batch_size: int = 256, device: str | torch.device | None = "auto", seed: int = 0,
                  lower: str | None = None, **method_options: Any) -> InputMargins:
    """Input margins of every sample of ``data`` (anything `brittle.as_data` accepts; labels not needed).

    Args:
        model: a PyTorch classifier returning logits.
        data: the inputs (their box domain comes from ``data``; default ``[0, 1]``).
        norm: ``"linf"`` or ``"l2"``.
        method: ``"brittle"`` (default, brittle's fast boundary attack), a reference attack
            (``"fab-autoattack"``, ``"fab-torchattacks"``, ``"deepfool-torchattacks"``, ``"ddn-foolbox"``,
            ``"fmn-foolbox"``; optional extras), ``"ensemble"`` (best verified bound of several attacks) or
            ``"exact"`` (brittle's attack, then an MILP: small ReLU networks, L∞ only).
        batch_size: samples attacked together.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        seed: seed of the attacks' randomness (results are deterministic given seed and batch_size).
        lower: ``"ibp"``, ``"crown-ibp"`` or ``"crown"`` to add certified lower bounds (ReLU networks of
            Linear / Conv2d; ``"crown"`` is the tightest and much the slowest on convolutional layers).
        **method_options: options of the attack (e.g. ``steps=200``; ``attacks=[...]`` for ``"ensemble"``;
            ``time_limit`` for ``"exact"``). For ``"brittle"``: ``strength="fast" | "default" | "thorough"``,
            and ``budgets=[ε, ...]``, the perturbation budgets at which robust accuracy will be read off the
            margins: samples whose bound lies just above a budget are then attacked at that ε itself
            (APGD-CE, APGD-T, Square), so that the margins imply a robust accuracy at those ε as low as
            AutoAttack's, at a fraction of its time (see ``benchmarks/RESULTS.md``).

    Returns:
        `InputMargins` with numpy arrays per sample: ``upper`` is ``inf`` where nothing was found, never 0.
    """
    settings = check_margin_settings(norm=norm, method=method, lower=lower, batch_size=batch_size, seed=seed,
                                     method_options=method_options)
    norm, seed = settings.norm, settings.seed
    data = as_data(data)
    check_budgets(settings, data)
    dev = resolve_device(device, like=data.x)
    model = prepared_for_margins(model, data, settings, dev)
    attack = build_attack(method, norm, seed=seed, **method_options)
    n = len(data)
    upper, low = np.empty(n, np.float32), np.empty(n, np.float32)
    adv_class, pred = np.empty(n, np.int64), np.empty(n, np.int64)
    x_adv = np.empty((n, *data.input_shape), np.float32)
    cost, seconds = Cost(), 0.0
    for lo, xb, _ in data.batches(batch_size):
        out = margins_for_batch(model, xb.to(dev), norm=norm, method=method, domain=data.domain, seed=seed,
                                lower=lower, attack=attack, num_classes=data.num_classes, **method_options)
        hi = lo + len(xb)
        upper[lo:hi], low[lo:hi] = out.upper.numpy(), out.lower.numpy()
        adv_class[lo:hi], pred[lo:hi] = out.adv_class.numpy(), out.pred.numpy()
        x_adv[lo:hi] = out.x_adv.float().numpy()
        cost += out.cost
        seconds += out.seconds
    return InputMargins(upper, low, x_adv, adv_class, pred, norm, method_label(method, attack),
                        cost.forward, cost.backward, seconds)
