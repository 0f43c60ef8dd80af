"""Logit margins: top-1 logit minus runner-up, from one forward pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data.loading import as_data
from ..models.loading import check_logits, prepare_model, resolve_device


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


@torch.inference_mode()
def logit_margins(model: nn.Module, data: Any, *, batch_size: int = 1024,
                  device: str | torch.device | None = "auto") -> LogitMargins:
    """Logit margin, predicted and runner-up class of every input of ``data`` (labels are not needed)."""
    data = as_data(data)
    dev = resolve_device(device)
    model = prepare_model(model, device=dev, sample=data.x[:2], num_classes=data.num_classes)
    n = len(data)
    margin = torch.empty(n)
    pred = torch.empty(n, dtype=torch.long)
    runner = torch.empty(n, dtype=torch.long)
    for lo, xb, _ in data.batches(batch_size):
        logits = model(xb.to(dev, non_blocking=True))
        check_logits(logits, len(xb), data.num_classes)
        m, p, r = margins_from_logits(logits.float())
        hi = lo + len(xb)
        margin[lo:hi], pred[lo:hi], runner[lo:hi] = m.cpu(), p.cpu(), r.cpu()
    return LogitMargins(margin.numpy(), pred.numpy(), runner.numpy())
