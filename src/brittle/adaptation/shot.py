"""SHOT-IM (Liang, Hu, Feng, ICML 2020), the information-maximisation part of SHOT: confident *and*
diverse predictions — ``loss = mean_i H(p_i) − H(p̄)`` with ``p̄`` the mean prediction (class marginal).

With a batch of one sample ``H(p̄) = H(p_1)`` and the loss is identically 0; so the marginal is, by default
(``marginal="auto"``), the batch mean for batches of at least `AUTO_MIN_BATCH` samples and otherwise an
exponential moving average of past batch means (detached) mixed with the current batch's mean (with
gradient), spanning about ``1 / marginal_rate`` samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .base import Adapter, _check_number, entropy
from .norm import AUTO_MIN_BATCH

MARGINALS = ("auto", "batch", "ema")


class ShotIM(Adapter):
    """Information maximisation. Args: ``diversity`` (weight of ``H(p̄)``, 1 in SHOT), ``marginal``
    (``"auto"``, ``"batch"``, ``"ema"``), ``marginal_rate`` (per-sample EMA rate); see `Adapter` for the rest."""

    name = "shot-im"

    def __init__(self, *, diversity: float = 1.0, marginal: str = "auto", marginal_rate: float = 0.01,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.diversity = diversity
        self.marginal = marginal
        self.marginal_rate = marginal_rate

    def _extra_params(self) -> dict[str, Any]:
        return {"diversity": self.diversity, "marginal": self.marginal, "marginal_rate": self.marginal_rate}

    def _validate(self) -> None:
        super()._validate()
        _check_number("diversity", self.diversity, 0.0, open_low=False)
        if self.marginal not in MARGINALS:
            raise InputError(f"unknown marginal {self.marginal!r}", f"use one of {', '.join(MARGINALS)}")
        _check_number("marginal_rate", self.marginal_rate, 0.0, 1.0)

    def _reset_method_state(self) -> None:
        self.marginal_: torch.Tensor | None = None

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, 1)
        batch_mean = probs.mean(0)
        mode = self.marginal
        if mode == "auto":
            mode = "batch" if logits.shape[0] >= AUTO_MIN_BATCH else "ema"
        if mode == "ema" and self.marginal_ is not None:
            m = 1.0 - (1.0 - self.marginal_rate) ** logits.shape[0]
            marginal = (1 - m) * self.marginal_ + m * batch_mean
        else:
            marginal = batch_mean
        self.marginal_ = marginal.detach()
        div = -(marginal * torch.log(marginal.clamp_min(1e-12))).sum()
        return entropy(logits).mean() - self.diversity * div

    def _method_state(self) -> dict[str, np.ndarray]:
        return {} if self.marginal_ is None else {"marginal": self.marginal_.cpu().numpy()}

    def _load_method_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.marginal_ = torch.from_numpy(np.array(arrays["marginal"])).to(self.device_) if "marginal" in arrays \
            else None
