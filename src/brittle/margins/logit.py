"""Logit margins: top-1 logit minus runner-up, from one forward pass."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.validation import check_positive_int
from ..data.loading import as_data
from ..models.loading import (check_input_scale, check_logits_shape, checked_forward, keeps_model_mode,
                              logit_value_flags, logits_in_range, prepare_model, raise_logit_values,
                              resolve_device)


@dataclass
class LogitMargins:
    """Per-sample logit margin (>= 0), predicted class and runner-up class."""

    margin: np.ndarray
    pred: np.ndarray
    runner_up: np.ndarray

    def __len__(self) -> int:
        return len(self.margin)

    def __repr__(self) -> str:
        median = f"{float(np.median(self.margin)):.4g}" if len(self) else "none"
        return f"LogitMargins(n={len(self)}, median_margin={median})"

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
    the end. The first batch's forward doubles as the model check (`checked_forward`: shape, class count,
    structured outputs); the value checks of every batch (finite, not probabilities) are flags kept on the
    device and read once, with the results.
    """
    batch_size = check_positive_int(batch_size, "batch_size", "pass e.g. batch_size=1024")
    data = as_data(data)
    dev = resolve_device(device, like=data.x)
    model = prepare_model(model, device=dev)
    check_input_scale(model, data.x[:2])
    n = len(data)
    margin = torch.empty(n, device=dev)
    labels = torch.empty((2, n), dtype=torch.long, device=dev)  # predicted, runner-up
    flags = None
    for lo, xb in device_batches(data.x, batch_size, dev):
        if flags is None:
            model, logits = checked_forward(model, xb, data.num_classes, check_values=False)
            flags = logit_value_flags(logits)
        else:
            logits = model(xb)
            check_logits_shape(logits, len(xb), data.num_classes)
            flags[0] &= logits_in_range(logits)
        m, p, r = margins_from_logits(logits.float())
        hi = lo + len(xb)
        margin[lo:hi], labels[0, lo:hi], labels[1, lo:hi] = m, p, r
    if flags is not None:
        raise_logit_values(flags)  # the one synchronisation before the results come back
    labels_np = labels.cpu().numpy()
    return LogitMargins(margin.cpu().numpy(), labels_np[0], labels_np[1])
