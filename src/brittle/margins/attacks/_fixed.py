"""Shared pieces of the fixed-budget attacks (`pgd`, `apgd`, `square`): budgets, projections, random starts,
losses and their input gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...core.validation import check_positive_int
from ...data.loading import Domain
from ...errors import InputError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_TINY = 1e-12


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
    # an input gradient may be a broadcast view (a model that sums its input gets an expanded tensor of ones):
    # the attacks update it in place, so give it memory of its own
    return losses.detach(), g.detach().contiguous(), logits.detach()


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


#: steps between the read-backs that check whether every row is done, in masked mode
CHECK_EVERY = 10


def masked_default(masked: bool | None, x: torch.Tensor) -> bool:
    """Whether finished rows are masked rather than dropped: ``masked``, or by default on CUDA.

    Dropping rows (the CPU's default) saves their passes but needs a read-back to the host at every step and
    gives each step a new batch shape; masking keeps the batch whole, which on a GPU costs little compute and
    spares the waits and the re-planned kernels.
    """
    return x.device.type == "cuda" if masked is None else bool(masked)


class LiveRows:
    """The rows of a batch an iterative attack still works on: ``index`` (rows computed this step) and ``mask``
    (which of them are live).

    Compact mode (``masked=False``, the CPU's): `refresh` drops finished rows at every step, so they cost no
    passes. Masked mode (the GPU's): finished rows stay in the batch, masked; `refresh` reads the live count
    back only every `CHECK_EVERY` steps and compacts only when at most half the rows are live, so a run needs
    a handful of read-backs and batch shapes instead of one per step.
    """

    def __init__(self, n: int, device: torch.device, masked: bool):
        self.index = torch.arange(n, device=device)
        self.mask = torch.ones(n, dtype=torch.bool, device=device)
        self.masked = masked
        self.full = True  # index is still every row, in order: callers may skip gathers and scatters

    def refresh(self, step: int) -> tuple[bool, torch.Tensor | None]:
        """Before a step: ``(any row live, positions kept in the old index or None when unchanged)``."""
        if self.masked:
            if step % CHECK_EVERY:
                return True, None
            live = int(self.mask.sum())
            if live == 0:
                return False, None
            if 2 * live > len(self.index):
                return True, None
        keep = self.mask.nonzero().flatten()
        if len(keep) == len(self.index):
            return True, None
        self.index, self.mask = self.index[keep], self.mask[keep]
        self.full = False
        return len(keep) > 0, keep

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """``t``'s rows of the current index (``t`` itself while the index is every row)."""
        return t if self.full else t[self.index]

    def scatter(self, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``t`` with the current index's rows set to ``rows``, written in place (a step replayed as a CUDA
        graph must update the tensors it was captured with); returns ``t``."""
        if self.full:
            return t.copy_(rows)
        t[self.index] = rows
        return t

    def stop(self, done: torch.Tensor) -> None:
        """Mark rows of the current index as finished (in place, as `scatter`)."""
        self.mask &= ~done
