"""Fixed-budget attacks for adversarial training and robust accuracy, and their registry by name.

Each attack takes ``(model, x, y, eps)`` and returns adversarial inputs inside the ε-ball around ``x``
(L∞ or L2) and inside the input domain. ``eps`` is a number or a per-sample tensor of shape ``(N,)``.
The loss is cross-entropy by default, or any callable ``loss(logits, y) -> per-sample losses`` (e.g. the
KL term of TRADES). Gradients are taken with respect to the inputs only: parameter ``.grad`` is untouched
and the model's train/eval mode is left as the caller set it. Randomness (random starts) comes from
``generator`` when given, else from torch's global generator.

- `pgd`: projected gradient ascent (Madry et al. 2018), random start, fixed step, optional restarts.
- `fgsm_rs`: one signed-gradient step of size ``alpha`` (default 1.25 ε) from a uniform random start,
  the "fast" adversarial training attack of Wong, Rice & Kolter (2020).
- `apgd_ce`, `apgd_t`, `apgd_stacked` (in `brittle.margins.attacks.apgd`): Auto-PGD (Croce & Hein 2020).
- `square_linf` (in `brittle.margins.attacks.square`): the gradient-free Square Attack.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ...core.validation import check_norm
from ...data.loading import Domain
from ...errors import InputError
from ._fixed import (LossFn, _ascent_direction, _check, _grad, _grad_active, _resolve_loss, eps_tensor, project,
                     random_start)
from .apgd import apgd_ce, apgd_stacked, apgd_t, dlr_targeted_loss
from .square import square_linf

__all__ = ["LossFn", "pgd", "fgsm_rs", "apgd_ce", "apgd_t", "apgd_stacked", "square_linf", "dlr_targeted_loss",
           "project", "eps_tensor", "random_start", "run_attack", "FIXED_BUDGET_ATTACKS"]


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *, norm: str = "linf",
        steps: int = 10, step_size: float | torch.Tensor | None = None, rand_init: bool = True, restarts: int = 1,
        domain: Domain = (0.0, 1.0), loss: str | LossFn = "ce", keep_best: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent on ``loss`` within the ε-ball (L∞: signed steps; L2: normalised steps).

    ``step_size`` defaults to ``2.5 * eps / steps``. With ``keep_best`` (default) each sample returns the
    first iterate that is misclassified (``argmax != y``), else its highest-loss iterate; without it, the
    last iterate (the usual choice for adversarial training).
    """
    norm = check_norm(norm)
    _check(x, y, steps)
    if not isinstance(restarts, int) or restarts < 1:
        raise InputError(f"restarts must be an integer >= 1, got {restarts!r}", "pass a positive number of restarts")
    loss_fn = _resolve_loss(loss)
    subset_ok = not callable(loss)  # a custom loss may close over full-batch tensors
    x = x.detach()
    e = eps_tensor(eps, x)
    alpha = 2.5 * e / steps if step_size is None else eps_tensor(step_size, x)
    best = x.clone()
    best_loss = torch.full((len(x),), -math.inf, device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    shape = (-1,) + (1,) * (x.ndim - 1)
    for _ in range(restarts):
        x_adv = random_start(x, e, norm, domain, generator) if rand_init else x.clone()
        for it in range(steps + 1):
            active = ~fooled if keep_best and subset_ok else None
            losses, g, logits = _grad_active(model, x_adv, y, loss_fn, active)
            if keep_best:
                wrong = (logits.argmax(1) != y) & (~fooled if active is not None else True)
                take = (~fooled & wrong) | (~fooled & ~wrong & (losses > best_loss))
                best = torch.where(take.view(shape), x_adv, best)
                best_loss = torch.where(take, losses, best_loss)
                fooled = fooled | wrong
                if bool(fooled.all()):
                    return best
            if it == steps:
                break
            x_adv = project(x, x_adv + alpha * _ascent_direction(g, norm), e, norm, domain)
        if not keep_best:
            return x_adv.detach()
    return best


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *, norm: str = "linf",
            alpha: float | torch.Tensor | None = None, domain: Domain = (0.0, 1.0), loss: str | LossFn = "ce",
            generator: torch.Generator | None = None) -> torch.Tensor:
    """FGSM from a uniform random start (Wong et al. 2020): one step of size ``alpha`` (default 1.25 ε), projected.

    For L2 the step is along the normalised gradient. Returns the projected point (not verified to fool).
    """
    norm = check_norm(norm)
    _check(x, y)
    loss_fn = _resolve_loss(loss)
    x = x.detach()
    e = eps_tensor(eps, x)
    a = 1.25 * e if alpha is None else eps_tensor(alpha, x)
    x0 = random_start(x, e, norm, domain, generator)
    _, g, _ = _grad(model, x0, y, loss_fn)
    return project(x, x0 + a * _ascent_direction(g, norm), e, norm, domain).detach()


AttackFn = Callable[..., torch.Tensor]
#: Fixed-budget attacks by name, as accepted by training and robust accuracy.
FIXED_BUDGET_ATTACKS: dict[str, AttackFn] = {"pgd": pgd, "fgsm-rs": fgsm_rs, "apgd-ce": apgd_ce, "apgd-t": apgd_t}


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *,
               norm: str = "linf", steps: int = 10, domain: Domain = (0.0, 1.0), loss: str | LossFn = "ce",
               step_ratio: float | None = None, keep_best: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Dispatch to a fixed-budget attack by name (``"pgd"``, ``"fgsm-rs"``, ``"apgd-ce"``, ``"apgd-t"``).

    ``step_ratio`` is the step size as a multiple of ε (PGD default 2.5/steps, FGSM-RS default 1.25; APGD
    adapts its own). ``keep_best=False`` returns PGD's last iterate (training).
    """
    if name not in FIXED_BUDGET_ATTACKS:
        raise InputError(f"unknown attack {name!r}", f"use one of {sorted(FIXED_BUDGET_ATTACKS)}")
    if name == "pgd":
        step = None if step_ratio is None else step_ratio * eps_tensor(eps, x).reshape(-1)
        return pgd(model, x, y, eps, norm=norm, steps=steps, step_size=step, domain=domain, loss=loss,
                   keep_best=keep_best, generator=generator)
    if name == "fgsm-rs":
        alpha = None if step_ratio is None else step_ratio * eps_tensor(eps, x).reshape(-1)
        return fgsm_rs(model, x, y, eps, norm=norm, alpha=alpha, domain=domain, loss=loss, generator=generator)
    if name == "apgd-t":
        if not (isinstance(loss, str) and loss == "ce"):
            raise InputError(f"apgd-t uses its own targeted DLR loss and cannot maximise loss={loss!r}",
                             "use apgd-ce or pgd with a custom loss")
        return apgd_t(model, x, y, eps, norm=norm, steps=steps, domain=domain, generator=generator)
    return apgd_ce(model, x, y, eps, norm=norm, steps=steps, domain=domain, loss=loss, generator=generator)
