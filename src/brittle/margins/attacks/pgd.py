"""Fixed-budget attacks for adversarial training and robust accuracy: PGD, FGSM-RS and APGD-CE.

Each attack takes ``(model, x, y, eps)`` and returns adversarial inputs inside the ε-ball around ``x``
(L∞ or L2) and inside the input domain. ``eps`` is a number or a per-sample tensor of shape ``(N,)``.
The loss is cross-entropy by default, or any callable ``loss(logits, y) -> per-sample losses`` (e.g. the
KL term of TRADES). Gradients are taken with respect to the inputs only: parameter ``.grad`` is untouched
and the model's train/eval mode is left as the caller set it. Randomness (random starts) comes from
``generator`` when given, else from torch's global generator.

- `pgd`: projected gradient ascent (Madry et al. 2018), random start, fixed step, optional restarts.
- `fgsm_rs`: one signed-gradient step of size ``alpha`` (default 1.25 ε) from a uniform random start,
  the "fast" adversarial training attack of Wong, Rice & Kolter (2020).
- `apgd_ce`: Auto-PGD (Croce & Hein 2020) with momentum and the checkpointed step-size schedule.
- `apgd_t`: targeted Auto-PGD on the targeted DLR loss, one run per runner-up class (top-k by the clean
  logits), as in AutoAttack's APGD-T.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...core.validation import check_norm, check_positive_int
from ...data.loading import Domain
from ...errors import InputError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_TINY = 1e-12

__all__ = ["LossFn", "pgd", "fgsm_rs", "apgd_ce", "apgd_t", "square_linf", "dlr_targeted_loss", "project", "eps_tensor", "random_start", "run_attack",
           "FIXED_BUDGET_ATTACKS"]


def eps_tensor(eps: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``eps`` as a float tensor of shape ``(N, 1, ..., 1)`` broadcastable against ``x``; checks ``eps >= 0``."""
    e = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if e.ndim == 0:
        e = e.expand(len(x))
    e = e.reshape(-1)
    if e.numel() != len(x):
        raise InputError(f"eps has {e.numel()} values for {len(x)} inputs",
                         "pass one eps or one per sample, shape (N,)")
    if not bool(torch.isfinite(e).all()) or bool((e < 0).any()):
        raise InputError("eps must be finite and >= 0", "pass a non-negative perturbation budget")
    return e.view(-1, *([1] * (x.ndim - 1)))


def _per_sample_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    flat = t.reshape(len(t), -1)
    out = flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)
    return out.view(-1, *([1] * (t.ndim - 1)))


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: torch.Tensor, norm: str, domain: Domain) -> torch.Tensor:
    """Project ``x_adv`` onto the ε-ball around ``x`` (per-sample ``eps`` of shape (N, 1, ...)) and the domain.

    For L∞ the result is exactly in the intersection; for L2 the ball projection is followed by the box clip,
    which can only shrink the perturbation, so the result stays inside both.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, eps), -eps)
    else:
        n = _per_sample_norm(delta, "l2")
        delta = delta * torch.clamp(eps / (n + _TINY), max=1.0)
    return (x + delta).clamp(domain[0], domain[1])


def random_start(x: torch.Tensor, eps: torch.Tensor, norm: str, domain: Domain,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform random point of the ε-ball around ``x`` (clipped to the domain)."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        delta = (2 * u - 1) * eps
    else:
        g = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        g = g / (_per_sample_norm(g, "l2") + _TINY)
        d = x[0].numel()
        r = torch.rand((len(x),) + (1,) * (x.ndim - 1), generator=generator, dtype=x.dtype, device=x.device)
        delta = g * eps * r ** (1.0 / d)
    return (x + delta).clamp(domain[0], domain[1])


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _resolve_loss(loss: str | LossFn) -> LossFn:
    if callable(loss):
        return loss
    if loss == "ce":
        return _ce
    raise InputError(f"unknown attack loss {loss!r}", "use 'ce' or a callable loss(logits, y) -> per-sample loss")


def _grad(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
          loss_fn: LossFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample loss, its input gradient and the logits at ``x_adv``."""
    with torch.enable_grad():
        xa = x_adv.detach().requires_grad_(True)
        logits = model(xa)
        losses = loss_fn(logits, y)
        (g,) = torch.autograd.grad(losses.sum(), xa)
    return losses.detach(), g.detach(), logits.detach()


def _grad_active(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                 active: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_grad` on the ``active`` rows only (others: loss -inf, gradient 0, logits 0); saves passes on fooled rows."""
    if active is None or bool(active.all()):
        return _grad(model, x_adv, y, loss_fn)
    idx = active.nonzero().flatten()
    losses_a, g_a, logits_a = _grad(model, x_adv[idx], y[idx], loss_fn)
    losses = torch.full((len(x_adv),), -math.inf, dtype=losses_a.dtype, device=x_adv.device)
    g = torch.zeros_like(x_adv)
    losses[idx], g[idx] = losses_a, g_a
    logits = torch.zeros((len(x_adv), logits_a.shape[1]), dtype=logits_a.dtype, device=x_adv.device)
    logits[idx] = logits_a
    return losses, g, logits


def _ascent_direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return g.sign()
    return g / (_per_sample_norm(g, "l2") + _TINY)


def _check(x: torch.Tensor, y: torch.Tensor, steps: int | None = None) -> None:
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"labels have shape {tuple(y.shape)} for {len(x)} inputs", "pass one label per input")
    if steps is not None:
        check_positive_int(steps, "steps", "pass a positive number of attack steps")


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


def _apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD checks its step size.

    The paper's p0 = 0, p1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), in the integer form of the
    reference code: first interval ⌊0.22 N⌋, each next one ⌊0.03 N⌋ shorter, never below ⌊0.06 N⌋ (all >= 1).
    """
    interval = max(int(0.22 * steps), 1)
    shrink, floor = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, it = [], interval
    while it < steps:
        out.append(it)
        interval = max(interval - shrink, floor)
        it += interval
    return out


def apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *, norm: str = "linf",
            steps: int = 100, restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
            domain: Domain = (0.0, 1.0), loss: str | LossFn = "ce", rand_init: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Auto-PGD on the cross-entropy loss (Croce & Hein 2020), L∞ or L2.

    Step size starts at 2ε and is halved per sample at checkpoints where fewer than a ``rho`` fraction of
    the steps since the previous checkpoint increased the loss, or where neither the step size nor the best
    loss changed since the previous checkpoint; after a halving the sample restarts from its best point.
    Updates use momentum: ``x+ = P(x + m (z - x) + (1 - m)(x - x_prev))`` with ``z = P(x + η·dir(∇))``.
    Returns per sample the first misclassified iterate, else the highest-loss iterate.
    """
    norm = check_norm(norm)
    _check(x, y, steps)
    if not 0 < rho <= 1:
        raise InputError(f"rho must be in (0, 1], got {rho}", "use the default 0.75")
    loss_fn = _resolve_loss(loss)
    subset_ok = not callable(loss)
    x = x.detach()
    e = eps_tensor(eps, x)
    shape = (-1,) + (1,) * (x.ndim - 1)
    checkpoints = set(_apgd_checkpoints(steps))
    out = x.clone()
    out_loss = torch.full((len(x),), -math.inf, device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)

    def record(x_new: torch.Tensor, losses: torch.Tensor, logits: torch.Tensor) -> None:
        nonlocal out, out_loss, fooled
        wrong = (logits.argmax(1) != y) & ~fooled if subset_ok else logits.argmax(1) != y
        take = ~fooled & (wrong | (losses > out_loss))
        out = torch.where(take.view(shape), x_new, out)
        out_loss = torch.where(take, losses, out_loss)
        fooled = fooled | wrong

    for _ in range(restarts):
        if rand_init:
            if norm == "linf":
                t = 2 * torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) - 1
                x_adv = x + e * t / (_per_sample_norm(t, "linf") + _TINY)
            else:
                t = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x_adv = x + e * t / (_per_sample_norm(t, "l2") + _TINY)
            x_adv = project(x, x_adv, e, norm, domain)
        else:
            x_adv = x.clone()
        eta = 2 * e.clone()
        losses, g, logits = _grad(model, x_adv, y, loss_fn)
        record(x_adv, losses, logits)
        x_best, g_best, loss_best = x_adv.clone(), g.clone(), losses.clone()
        x_prev = x_adv.clone()
        increases = torch.zeros(len(x), device=x.device)
        last_cp, best_at_cp = 0, loss_best.clone()
        reduced_at_cp = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        loss_prev = losses
        for k in range(steps):
            z = project(x, x_adv + eta * _ascent_direction(g, norm), e, norm, domain)
            m = 1.0 if k == 0 else momentum
            x_new = project(x, x_adv + m * (z - x_adv) + (1 - m) * (x_adv - x_prev), e, norm, domain)
            x_prev, x_adv = x_adv, x_new
            losses, g, logits = _grad_active(model, x_adv, y, loss_fn, ~fooled if subset_ok else None)
            record(x_adv, losses, logits)
            if bool(fooled.all()):
                return out
            increases += (losses > loss_prev).float()
            loss_prev = losses
            improved = losses > loss_best
            x_best = torch.where(improved.view(shape), x_adv, x_best)
            g_best = torch.where(improved.view(shape), g, g_best)
            loss_best = torch.where(improved, losses, loss_best)
            it = k + 1
            if it in checkpoints:
                osc = increases < rho * (it - last_cp)
                stalled = ~reduced_at_cp & (best_at_cp >= loss_best)
                reduce = osc | stalled
                eta = torch.where(reduce.view(shape), eta / 2, eta)
                x_adv = torch.where(reduce.view(shape), x_best, x_adv)
                g = torch.where(reduce.view(shape), g_best, g)
                reduced_at_cp, best_at_cp = reduce, loss_best.clone()
                increases.zero_()
                last_cp = it
    return out


def dlr_targeted_loss(target: torch.Tensor) -> LossFn:
    """Targeted DLR loss toward ``target`` (Croce & Hein 2020): ``-(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2)``.

    ``π`` sorts the logits in decreasing order; the scale makes the loss invariant to shifting and scaling the
    logits. With fewer than four classes the denominator is ``z_π1 - z_πC`` (three) or 1 (two).
    """
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(y), device=logits.device)
        gap = logits[rows, y] - logits[rows, target]
        classes = logits.shape[1]
        if classes >= 4:
            top = logits.sort(1, descending=True).values
            scale = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3])
        elif classes == 3:
            top = logits.sort(1, descending=True).values
            scale = top[:, 0] - top[:, 2]
        else:
            scale = torch.ones_like(gap)
        return -gap / (scale + _TINY)
    return loss


def apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *, norm: str = "linf",
           steps: int = 100, targets: int = 9, restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
           domain: Domain = (0.0, 1.0), loss: str | LossFn = "dlr-targeted", rand_init: bool = True,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Targeted Auto-PGD (APGD-T of AutoAttack): APGD on the targeted DLR loss, once per target class.

    The targets are the ``targets`` classes ranked highest after the top one by the clean logits (runner-up
    first); each run attacks only the samples no earlier run fooled, with ``steps`` iterations and the step
    size schedule of `apgd_ce`. ``loss`` is accepted for a uniform signature and must be ``"dlr-targeted"``
    (or ``"ce"``, read as the same: a fixed-budget attack name selects its own loss). Returns per sample the
    first misclassified iterate found, else the last run's highest-loss iterate.
    """
    norm = check_norm(norm)
    _check(x, y, steps)
    if not isinstance(targets, int) or targets < 1:
        raise InputError(f"targets must be an integer >= 1, got {targets!r}", "pass e.g. targets=9")
    if callable(loss) or loss not in ("dlr-targeted", "ce"):
        raise InputError(f"apgd-t uses the targeted DLR loss, got loss={loss!r}", "leave loss at its default")
    x = x.detach()
    e = eps_tensor(eps, x).reshape(-1)
    with torch.no_grad():
        logits = model(x)
    order = logits.sort(1, descending=True).indices
    out = x.clone()
    fooled = logits.argmax(1) != y
    for t in range(1, min(targets, logits.shape[1] - 1) + 1):
        idx = (~fooled).nonzero().flatten()
        if len(idx) == 0:
            break
        target = order[idx, t]  # unfooled samples are predicted y, so order[:, 0] == y and the target is not y
        x_adv = apgd_ce(model, x[idx], y[idx], e[idx], norm=norm, steps=steps, restarts=restarts, rho=rho,
                        momentum=momentum, domain=domain, loss=dlr_targeted_loss(target), rand_init=rand_init,
                        generator=generator)
        with torch.no_grad():
            wrong = model(x_adv).argmax(1) != y[idx]
        out[idx] = x_adv
        fooled[idx] = wrong
    return out


def _square_p(p_init: float, it: int, queries: int) -> float:
    """Share of pixels a Square window covers at query ``it`` (AutoAttack's schedule, rescaled to ``queries``)."""
    it = int(it / max(queries, 1) * 10000)
    for bound, div in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16), (200, 8),
                       (50, 4), (10, 2)):
        if it > bound:
            return p_init / div
    return p_init


def square_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *,
                queries: int = 1000, p_init: float = 0.8, domain: Domain = (0.0, 1.0),
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Square Attack, L∞ (Andriushchenko et al. 2020): gradient-free random search on the margin loss.

    Starts from vertical stripes of ±ε, then per query redraws a random square window of ±ε per channel and
    keeps it where the margin ``z_y - max_{j != y} z_j`` drops. Images only (``(N, C, H, W)``; other shapes
    are treated as ``(N, 1, 1, D)``). Only samples not yet misclassified spend queries (one forward each).
    Returns per sample the first misclassified point, else the lowest-margin point.
    """
    _check(x, y)
    shape = x.shape
    xi = x.detach().reshape(len(x), 1, 1, -1) if x.ndim != 4 else x.detach()
    n, c, h, w = xi.shape
    e = eps_tensor(eps, xi)
    lo, hi = domain
    dev = x.device

    def margin(xq: torch.Tensor, yq: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = model(xq.reshape(len(xq), *shape[1:]))
        rows = torch.arange(len(yq), device=dev)
        other = logits.clone()
        other[rows, yq] = -torch.inf
        return logits[rows, yq] - other.amax(1)

    sign = torch.randint(0, 2, (n, c, 1, w), generator=generator, device=dev).to(xi.dtype) * 2 - 1
    best = (xi + e * sign).clamp(lo, hi)
    m_best = margin(best, y)
    for i in range(queries):
        idx = (m_best > 0).nonzero().flatten()
        if len(idx) == 0:
            break
        p = _square_p(p_init, i, queries)
        size = min(max(int(round(math.sqrt(p * h * w))), 1), max(h - 1, 1)) if h > 1 else \
            min(max(int(round(p * w)), 1), w)
        vh = int(torch.randint(0, max(h - size, 0) + 1, (1,), generator=generator, device=dev)) if h > 1 else 0
        hs = size if h > 1 else 1
        vw = int(torch.randint(0, max(w - size, 0) + 1, (1,), generator=generator, device=dev))
        xb, cur = xi[idx], best[idx]
        new = cur.clone()
        draw = torch.randint(0, 2, (len(idx), c, 1, 1), generator=generator, device=dev).to(xi.dtype) * 2 - 1
        new[:, :, vh:vh + hs, vw:vw + size] = (xb[:, :, vh:vh + hs, vw:vw + size]
                                               + e[idx] * draw).clamp(lo, hi)
        m_new = margin(new, y[idx])
        take = m_new < m_best[idx]
        best[idx[take]] = new[take]
        m_best[idx[take]] = m_new[take]
    return best.reshape(shape)


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
