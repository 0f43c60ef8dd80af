"""What an input-margin run is computed with, checked before anything is written or started: the method
and its options (`check_method`, `build_attack`), the settings of a run (`check_margin_settings` →
`MarginSettings`), budgets in the data's units (`check_budgets`), and the model itself on the data
(`prepared_for_margins`). `brittle.margins.input` and `brittle.margins.compute` both validate through here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.validation import check_eps_for_domain, check_nonnegative_int, check_norm, check_positive
from ..data.loading import Data
from ..errors import InputError, ModelError
from ..models.loading import prepare_model
from .attacks import ATTACK_METHODS, MinimalNormAttack, make_attack
from .bounds.certify import BOUND_METHODS

#: every ``method`` of `input_margins`
INPUT_MARGIN_METHODS = (*ATTACK_METHODS, "exact")
#: every ``lower`` of `input_margins` (besides None)
LOWER_METHODS = BOUND_METHODS  # certified lower bounds (brittle.margins.bounds)


def check_method(method: Any, lower: Any) -> None:
    if not isinstance(method, str) or method not in INPUT_MARGIN_METHODS:
        raise InputError(f"unknown input-margin method {method!r}", f"use one of: {', '.join(INPUT_MARGIN_METHODS)}")
    if lower is not None and lower not in LOWER_METHODS:
        raise InputError(f"unknown lower-bound method {lower!r}", f"use one of {LOWER_METHODS} or None")


def build_attack(method: str, norm: str, *, seed: int = 0, **method_options: Any) -> MinimalNormAttack | None:
    """The attack behind ``method`` (validated); None for ``"exact"``, which runs brittle's attack first itself."""
    check_method(method, None)
    if method == "exact":  # its attack's options and the MILP's time limit, checked now
        options = dict(method_options)
        check_positive(options.pop("time_limit", 60.0), "time_limit", "pass seconds, e.g. time_limit=60")
        make_attack("brittle", norm, seed=seed, **options)
        return None
    return make_attack(method, norm, seed=seed, **method_options)


def check_labels_fit(model: nn.Module, data: Data, device: torch.device) -> None:
    """Refuse labels that name classes the model does not have."""
    if data.y is None:
        return
    with torch.inference_mode():
        classes = model(data.x[:1].to(device)).shape[1]
    top = int(data.y.max())
    if top >= classes:
        raise InputError(f"labels go up to {top} but the model has {classes} outputs (classes 0..{classes - 1})",
                         "map the labels to the model's class indices, or use the model trained for this data")


@dataclass(frozen=True)
class MarginSettings:
    """Everything besides model and data that a batch of `compute_margins` is computed with."""

    norm: str
    method: str
    lower: str | None
    batch_size: int
    seed: int
    method_options: dict[str, Any]


def check_margin_settings(*, norm: str, method: str, lower: str | None, batch_size: Any, seed: Any,
                          method_options: dict[str, Any] | None) -> MarginSettings:
    """Every margin setting validated (norm, method name and options, lower-bound method, batch size, seed)
    before anything is written or started."""
    norm = check_norm(norm)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}", "pass e.g. batch_size=250 (CLI: --batch-size 250)")
    seed = check_nonnegative_int(seed, "seed", "pass e.g. seed=0 (CLI: --seed 0)")
    options = dict(method_options or {})
    check_method(method, lower)
    if method == "exact" and norm != "linf":
        raise InputError(f"method 'exact' supports norm 'linf' only, not {norm!r} (the L2 margin needs a "
                         "mixed-integer quadratic program)",
                         "bracket L2 margins with an attack and a lower bound instead, e.g. --lower crown")
    build_attack(method, norm, seed=int(seed), **options)  # unknown options: InputError now, not mid-run
    return MarginSettings(norm, method, lower, batch_size, int(seed), options)


def check_budgets(settings: MarginSettings, data: Data) -> None:
    """The attack's ``budgets`` (the ε the margins will be read at) in the data's units: `check_eps_for_domain`
    (e.g. 8 meant as 8/255 on [0, 1] is refused, not silently never reached)."""
    budgets = settings.method_options.get("budgets")
    if budgets is not None and np.size(budgets):
        check_eps_for_domain(budgets, settings.norm, data.domain, int(np.prod(data.input_shape)))


RANDOM_MODEL = ("the model's predictions changed between two identical forward passes: its forward pass is "
                "random (e.g. dropout called with training=True) or depends on earlier calls",
                "make forward deterministic in eval mode; margins of a random model are not defined")


BATCH_DEPENDENT_MODEL = ("the model's logits for an input change with the other inputs of its batch (e.g. a "
                         "normalisation or softmax over the batch dimension): its margins would depend on how the "
                         "data is batched",
                         "make forward treat each input on its own (normalise per input, or BatchNorm in eval mode)")


def prepared_for_margins(model: nn.Module, data: Data, settings: MarginSettings, device: torch.device) -> nn.Module:
    """``model`` ready for `batch_margins` on ``device`` (`prepare_model`), with everything about it that a
    run needs checked first: its output on ``data``, labels within its classes, and, for certified lower
    bounds or exact margins, layers the bound propagation supports."""
    model = prepare_model(model, device=device, sample=data.x[:2], num_classes=data.num_classes)
    check_labels_fit(model, data, device)
    with torch.inference_mode():
        probe = data.x[:64].to(device)
        logits = model(probe)
        if not torch.equal(logits.argmax(1), model(probe).argmax(1)):
            raise ModelError(*RANDOM_MODEL)
        half = len(probe) // 2
        if half >= 2 and bool(torch.isfinite(logits).all()):  # an input's logits must not depend on its batch
            alone = model(probe[:half]).float()
            scale = float(logits.float().abs().max().clamp_min(1.0))
            if not torch.allclose(alone, logits[:half].float(), rtol=1e-3, atol=1e-3 * scale):
                raise ModelError(*BATCH_DEPENDENT_MODEL)
    if settings.lower is not None or settings.method == "exact":
        from .bounds.network import Network

        Network(model, data.input_shape)  # an unsupported layer: ModelError now, not after the first attack
    return model
