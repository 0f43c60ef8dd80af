"""Logit margins: top-1 logit minus runner-up, from one forward pass."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data.loading import as_data
from ..errors import ModelError
from ..models.loading import check_logits, keeps_model_mode, prepare_model, resolve_device


@dataclass
class LogitMargins:
    """Per-sample logit margin (>= 0), predicted class and runner-up class."""

    margin: np.ndarray
    pred: np.ndarray
    runner_up: np.ndarray

    def __len__(self) -> int:
        return len(self.margin)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"logit_margin": self.margin, "pred": self.pred, "runner_up": self.runner_up})


def margins_from_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(margin, pred, runner_up)`` from a batch of logits (ties give margin 0)."""
    top2 = logits.topk(2, dim=1)
    return top2.values[:, 0] - top2.values[:, 1], top2.indices[:, 0], top2.indices[:, 1]


def device_batches(x: torch.Tensor, batch_size: int, device: torch.device
                   ) -> Iterator[tuple[int, torch.Tensor]]:
    """``(offset, batch on device)`` over ``x``, copying CPU data to a GPU without stalling the host.

    For a CUDA device and CPU data, each batch is copied into one of two pinned (page-locked) staging buffers
    and sent with a non-blocking copy, so the copy of batch ``k + 1`` overlaps the model's work on batch ``k``;
    a buffer is refilled only once its previous copy has left it (an event per buffer). Pinned buffers come
    from torch's caching host allocator, so repeated calls reuse them. Otherwise batches are plain slices
    moved with ``.to(device)``.
    """
    n = len(x)
    if device.type != "cuda" or x.device.type != "cpu" or n <= batch_size:
        for lo in range(0, n, batch_size):
            yield lo, x[lo:lo + batch_size].to(device, non_blocking=True)
        return
    buffers = [torch.empty((batch_size, *x.shape[1:]), dtype=x.dtype, pin_memory=True) for _ in range(2)]
    events: list[torch.cuda.Event | None] = [None, None]
    stream = torch.cuda.current_stream(device)
    for i, lo in enumerate(range(0, n, batch_size)):
        k = i % 2
        if events[k] is not None:
            events[k].synchronize()  # the copy out of this buffer has finished (not the model's work)
        hi = min(lo + batch_size, n)
        staged = buffers[k][:hi - lo]
        staged.copy_(x[lo:hi])
        batch = staged.to(device, non_blocking=True)
        event = torch.cuda.Event()
        event.record(stream)
        events[k] = event
        yield lo, batch


@keeps_model_mode  # eval mode inside, the caller's mode afterwards
@torch.inference_mode()
def logit_margins(model: nn.Module, data: Any, *, batch_size: int = 1024,
                  device: str | torch.device | None = "auto") -> LogitMargins:
    """Logit margin, predicted and runner-up class of every input of ``data`` (labels are not needed).

    One forward pass per batch and no host synchronisation inside the loop: results stay on the device until
    the end, the first batch gets every logit check (shape, class count, finite values, not probabilities),
    later batches their shape (host metadata) and a finite-values flag kept on the device and read once.
    """
    data = as_data(data)
    dev = resolve_device(device, like=data.x)
    model = prepare_model(model, device=dev, sample=data.x[:2], num_classes=data.num_classes)
    n = len(data)
    margin = torch.empty(n, device=dev)
    pred = torch.empty(n, dtype=torch.long, device=dev)
    runner = torch.empty(n, dtype=torch.long, device=dev)
    finite = torch.ones((), dtype=torch.bool, device=dev)
    for lo, xb in device_batches(data.x, batch_size, dev):
        logits = model(xb)
        if lo == 0:
            check_logits(logits, len(xb), data.num_classes)
        else:
            _check_shape(logits, len(xb), data.num_classes)
            finite &= torch.isfinite(logits).all()
        m, p, r = margins_from_logits(logits.float())
        hi = lo + len(xb)
        margin[lo:hi], pred[lo:hi], runner[lo:hi] = m, p, r
    if not bool(finite):  # the one synchronisation
        raise ModelError("the model returned NaN or infinite logits", "check the model weights and input scaling")
    return LogitMargins(margin.cpu().numpy(), pred.cpu().numpy(), runner.cpu().numpy())


def _check_shape(logits: torch.Tensor, n: int, num_classes: int | None) -> None:
    """`check_logits` without the value checks (no device synchronisation)."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != n or (
            num_classes is not None and logits.shape[1] != num_classes):
        check_logits(logits, n, num_classes)  # raises with the precise message
