"""Auto-PGD (Croce & Hein 2020): APGD-CE, APGD-T, and both stacked into one batch.

- `apgd_ce`: APGD on cross-entropy (or any per-sample loss) with momentum and the checkpointed step size.
- `apgd_t`: APGD on the targeted DLR loss, toward each of the top runner-up classes in turn (AutoAttack's APGD-T).
- `apgd_stacked`: APGD-CE and APGD-T toward every target as **one** batch of ``(1 + targets) × N`` rows; a
  sample stops as soon as any of its rows flips it. The same attacks as running them one after another, in
  one pass of ``steps`` iterations instead of ``1 + targets`` passes: on a GPU, where a step of a small batch
  costs its kernel launches whatever its size, that is ``1 + targets`` times fewer launches.

Two ways to skip finished rows (``masked``): on the CPU (default there) finished rows are dropped from the
batch at every step, which saves their passes; on a GPU (default there) the batch keeps its shape and
finished rows are masked, so no step waits for a read-back to the host (checked every ``check_every`` steps)
and every step reuses the same kernels' plans.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...core.validation import check_norm
from ...data.loading import Domain
from ...errors import InputError
from ._fixed import (_TINY, CHECK_EVERY, LossFn, _ascent_direction, _check, _grad, _grad_active, _per_sample_norm, _resolve_loss,
                     eps_tensor, masked_default, project)
from ._graphs import CudaGraphs, graphs_for

__all__ = ["apgd_ce", "apgd_t", "apgd_stacked", "dlr_targeted_loss"]

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


def _any_per_group(flags: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """Per row: whether any row of its group has ``flags`` set (no read-back)."""
    hits = torch.zeros(groups, dtype=torch.float32, device=flags.device).index_add_(0, group, flags.float())
    return (hits > 0)[group]


def _apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, e: torch.Tensor, loss_fn: LossFn,
          loss_labels: torch.Tensor, *, norm: str, steps: int, restarts: int, rho: float, momentum: float, domain: Domain,
          rand_init: bool, generator: torch.Generator | None, subset_ok: bool, masked: bool,
          group: torch.Tensor | None = None, groups: int = 0,
          cuda_graphs: bool | CudaGraphs | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """APGD over the rows of ``x``; returns per row the first misclassified iterate (else the highest-loss one)
    and whether it is misclassified. Rows of one ``group`` stop together once any of them is misclassified.

    Every step updates the state in place and reads its step-dependent values (momentum, checkpoints) from
    device tensors, so that in masked mode on CUDA a step is captured once and replayed as a CUDA graph
    (`_graphs`); compact mode (``subset_ok`` and not masked) drops fooled rows from the passes instead.
    """
    shape = (-1,) + (1,) * (x.ndim - 1)
    checkpoints = set(_apgd_checkpoints(steps))
    out = x.clone()
    out_loss = torch.full((len(x),), -math.inf, device=x.device)
    wrong_rows = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    stopped = torch.zeros_like(wrong_rows)
    subset = subset_ok and not masked
    graphs = graphs_for(model, x, masked, cuda_graphs, default=False)
    # per step: momentum (1 at the first step), whether a checkpoint follows it, and the least number of loss
    # increases since the previous checkpoint that keeps the step size there (rho times the interval)
    last_cp, keep_below = 0, []
    for k in range(steps):
        keep_below.append(rho * (k + 1 - last_cp) if k + 1 in checkpoints else 0.0)
        last_cp = k + 1 if k + 1 in checkpoints else last_cp
    schedule = torch.tensor([[1.0] + [momentum] * (steps - 1), keep_below], dtype=x.dtype, device=x.device)
    is_cp = torch.tensor([k + 1 in checkpoints for k in range(steps)], device=x.device)

    def record(x_new: torch.Tensor, losses: torch.Tensor, logits: torch.Tensor) -> None:
        wrong = (logits.argmax(1) != y) & ~stopped  # stopped rows may hold placeholder logits
        take = ~stopped & (wrong | (losses > out_loss))
        out.copy_(torch.where(take.view(shape), x_new, out))
        out_loss.copy_(torch.where(take, losses, out_loss))
        wrong_rows.logical_or_(wrong)
        stopped.logical_or_(wrong if group is None else _any_per_group(wrong_rows, group, groups))

    for _ in range(restarts):
        if rand_init:  # a random point on the sphere of radius ε (clipped to the domain), as AutoAttack
            if norm == "linf":
                t = 2 * torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) - 1
            else:
                t = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x_adv = project(x, x + e * t / (_per_sample_norm(t, norm) + _TINY), e, norm, domain)
        else:
            x_adv = x.clone()
        eta = 2 * e.clone()
        loss_prev, g, logits = _grad(model, x_adv, loss_labels, loss_fn)
        record(x_adv, loss_prev, logits)
        x_best, g_best, loss_best = x_adv.clone(), g.clone(), loss_prev.clone()
        x_prev = x_adv.clone()
        increases = torch.zeros(len(x), device=x.device)
        best_at_cp = loss_best.clone()
        reduced_at_cp = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        k_t = torch.zeros(1, dtype=torch.long, device=x.device)

        def step() -> None:
            m, below = schedule.index_select(1, k_t)
            z = project(x, x_adv + eta * _ascent_direction(g, norm), e, norm, domain)
            x_new = project(x, x_adv + m * (z - x_adv) + (1 - m) * (x_adv - x_prev), e, norm, domain)
            x_prev.copy_(x_adv)
            x_adv.copy_(x_new)
            losses, g_new, logits = _grad_active(model, x_adv, loss_labels, loss_fn, ~stopped if subset else None)
            g.copy_(g_new)
            record(x_adv, losses, logits)
            increases.add_((losses > loss_prev).float())
            loss_prev.copy_(losses)
            improved = losses > loss_best
            x_best.copy_(torch.where(improved.view(shape), x_adv, x_best))
            g_best.copy_(torch.where(improved.view(shape), g, g_best))
            loss_best.copy_(torch.where(improved, losses, loss_best))
            # at a checkpoint, halve the step size where the loss rose too rarely or nothing changed since
            # the previous one, and restart those rows from their best point
            cp = is_cp.index_select(0, k_t)
            reduce = cp & ((increases < below) | (~reduced_at_cp & (best_at_cp >= loss_best)))
            eta.copy_(torch.where(reduce.view(shape), eta / 2, eta))
            x_adv.copy_(torch.where(reduce.view(shape), x_best, x_adv))
            g.copy_(torch.where(reduce.view(shape), g_best, g))
            reduced_at_cp.copy_(torch.where(cp, reduce, reduced_at_cp))
            best_at_cp.copy_(torch.where(cp, loss_best, best_at_cp))
            increases.masked_fill_(cp, 0.0)
            k_t.add_(1)

        replay = graphs.step(step)
        for k in range(steps):
            replay()
            if (not masked or (k + 1) % CHECK_EVERY == 0) and bool(stopped.all()):
                return out, wrong_rows
    return out, wrong_rows


def apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *, norm: str = "linf",
            steps: int = 100, restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
            domain: Domain = (0.0, 1.0), loss: str | LossFn = "ce", rand_init: bool = True,
            generator: torch.Generator | None = None, masked: bool | None = None,
           cuda_graphs: bool | CudaGraphs | None = None) -> torch.Tensor:
    """Auto-PGD on the cross-entropy loss (Croce & Hein 2020), L∞ or L2.

    Step size starts at 2ε and is halved per sample at checkpoints where fewer than a ``rho`` fraction of
    the steps since the previous checkpoint increased the loss, or where neither the step size nor the best
    loss changed since the previous checkpoint; after a halving the sample restarts from its best point.
    Updates use momentum: ``x+ = P(x + m (z - x) + (1 - m)(x - x_prev))`` with ``z = P(x + η·dir(∇))``.
    ``masked``: keep fooled samples in the batch, masked (default on CUDA; see the module notes).
    ``cuda_graphs``: replay each masked step as a CUDA graph on CUDA (default off here, as for a few steps
    per call capturing costs more than it saves; `FastBoundaryAttack` turns it on; a model that cannot be
    captured runs eagerly with a warning).
    Returns per sample the first misclassified iterate, else the highest-loss iterate.
    """
    norm = check_norm(norm)
    _check(x, y, steps)
    if not 0 < rho <= 1:
        raise InputError(f"rho must be in (0, 1], got {rho}", "use the default 0.75")
    loss_fn = _resolve_loss(loss)
    x = x.detach()
    out, _ = _apgd(model, x, y, eps_tensor(eps, x), loss_fn, y, norm=norm, steps=steps, restarts=restarts, rho=rho,
                   momentum=momentum, domain=domain, rand_init=rand_init, generator=generator,
                   subset_ok=not callable(loss),  # a custom loss may close over full-batch tensors
                   masked=masked_default(masked, x), cuda_graphs=cuda_graphs)
    return out


def _dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
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


def dlr_targeted_loss(target: torch.Tensor) -> LossFn:
    """Targeted DLR loss toward ``target`` (Croce & Hein 2020): ``-(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2)``.

    ``π`` sorts the logits in decreasing order; the scale makes the loss invariant to shifting and scaling the
    logits. With fewer than four classes the denominator is ``z_π1 - z_πC`` (three) or 1 (two).
    """
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _dlr_targeted(logits, y, target)
    return loss


def _ce_or_dlr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row: cross-entropy where ``labels[:, 1] < 0``, else targeted DLR toward ``labels[:, 1]``.

    Label and target travel together in ``labels`` (column 0, column 1) so that row subsets stay aligned.
    """
    y, target = labels[:, 0], labels[:, 1]
    ce = F.cross_entropy(logits, y, reduction="none")
    return torch.where(target >= 0, _dlr_targeted(logits, y, target.clamp_min(0)), ce)


def _check_apgd(targets: int, rho: float, low: int = 1) -> None:
    if isinstance(targets, bool) or not isinstance(targets, int) or targets < low:
        raise InputError(f"targets must be an integer >= {low}, got {targets!r}", "pass e.g. targets=9")
    if not 0 < rho <= 1:
        raise InputError(f"rho must be in (0, 1], got {rho}", "use the default 0.75")


def _runner_up_classes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes other than ``y`` by decreasing clean logit, and whether the clean input is already misclassified."""
    with torch.no_grad():
        logits = model(x)
    others = logits.clone()
    others[torch.arange(len(y), device=y.device), y] = -torch.inf
    return others.sort(1, descending=True).indices, logits.argmax(1) != y


def apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *, norm: str = "linf",
           steps: int = 100, targets: int = 9, restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
           domain: Domain = (0.0, 1.0), loss: str | LossFn = "dlr-targeted", rand_init: bool = True,
           generator: torch.Generator | None = None, masked: bool | None = None,
           cuda_graphs: bool | CudaGraphs | None = None) -> torch.Tensor:
    """Targeted Auto-PGD (APGD-T of AutoAttack): APGD on the targeted DLR loss, once per target class.

    The targets are the ``targets`` classes ranked highest after ``y`` by the clean logits (runner-up
    first); each run attacks only the samples no earlier run fooled, with ``steps`` iterations and the step
    size schedule of `apgd_ce`. ``loss`` is accepted for a uniform signature and must be ``"dlr-targeted"``
    (or ``"ce"``, read as the same: a fixed-budget attack name selects its own loss). Returns per sample the
    first misclassified iterate found, else the last run's highest-loss iterate. `apgd_stacked` runs all
    targets as one batch.
    """
    norm = check_norm(norm)
    _check(x, y, steps)
    _check_apgd(targets, rho)
    if callable(loss) or loss not in ("dlr-targeted", "ce"):
        raise InputError(f"apgd-t uses the targeted DLR loss, got loss={loss!r}", "leave loss at its default")
    x = x.detach()
    e = eps_tensor(eps, x)
    masked = masked_default(masked, x)
    order, fooled = _runner_up_classes(model, x, y)
    out = x.clone()
    for t in range(min(targets, order.shape[1] - 1)):
        idx = (~fooled).nonzero().flatten()
        if len(idx) == 0:
            break
        labels = torch.stack([y[idx], order[idx, t]], 1)
        x_adv, wrong = _apgd(model, x[idx], y[idx], e[idx], _ce_or_dlr, labels, norm=norm, steps=steps,
                             restarts=restarts, rho=rho, momentum=momentum, domain=domain, rand_init=rand_init,
                             generator=generator, subset_ok=True, masked=masked, cuda_graphs=cuda_graphs)
        out[idx] = x_adv
        fooled[idx] = wrong
    return out


def apgd_stacked(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *,
                 norm: str = "linf", steps: int = 100, targets: int = 9, ce: bool = True, rho: float = 0.75,
                 momentum: float = 0.75, domain: Domain = (0.0, 1.0), generator: torch.Generator | None = None,
                 masked: bool | None = None,
                 cuda_graphs: bool | CudaGraphs | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """APGD-CE (``ce``) and APGD-T toward the top ``targets`` runner-up classes, as one batch.

    Every sample is copied once per attack (``(ce + targets) × N`` rows, each with its own random start); a
    sample stops when any of its rows is misclassified. Returns per sample a misclassified row's point (CE
    first, then targets by rank) or, where none is, the CE row's highest-loss point (the first target's
    without ``ce``), and whether the sample was fooled. Samples already misclassified are returned as they are.
    """
    norm = check_norm(norm)
    _check(x, y, steps)
    _check_apgd(targets, rho, low=0 if ce else 1)
    x = x.detach()
    n = len(x)
    e = eps_tensor(eps, x)
    order, clean_wrong = _runner_up_classes(model, x, y)
    k = min(targets, order.shape[1] - 1)
    target_rows = ([torch.full_like(y, -1)] if ce else []) + [order[:, t] for t in range(k)]
    copies = len(target_rows)
    if n == 0 or copies == 0:  # copies == 0: a two-class model without ce
        return x.clone(), clean_wrong
    stack = (copies,) + (1,) * (x.ndim - 1)
    labels = torch.stack([y.repeat(copies), torch.cat(target_rows)], 1)
    group = torch.arange(n, device=x.device).repeat(copies)
    out, wrong = _apgd(model, x.repeat(stack), y.repeat(copies), e.repeat(stack), _ce_or_dlr, labels, norm=norm,
                       steps=steps, restarts=1, rho=rho, momentum=momentum, domain=domain, rand_init=True,
                       generator=generator, subset_ok=True, masked=masked_default(masked, x), group=group, groups=n,
                       cuda_graphs=cuda_graphs)
    wrong = wrong.view(copies, n)
    first = wrong.to(torch.int8).argmax(0)  # the first fooled copy (0 where none is)
    x_adv = out.view(copies, n, *x.shape[1:])[first, torch.arange(n, device=x.device)]
    fooled = wrong.any(0)
    x_adv = torch.where(clean_wrong.view(-1, *([1] * (x.ndim - 1))), x, x_adv)
    return x_adv, fooled | clean_wrong
