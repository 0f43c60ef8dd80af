"""TENT (Wang, Shelhamer, Liu, Olshausen, Darrell, ICLR 2021): minimise the mean prediction entropy of each
test batch with respect to the BatchNorm affine parameters, normalising with test-batch statistics."""

from __future__ import annotations

import torch

from .base import Adapter, entropy


class Tent(Adapter):
    """Entropy minimisation: ``loss = mean_i H(softmax(f(x_i)))``. See `Adapter` for the settings."""

    name = "tent"

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        return entropy(logits).mean()
