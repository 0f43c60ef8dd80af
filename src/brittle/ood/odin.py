"""ODIN: temperature scaling plus input preprocessing.

Liang, Li, Srikant, *Enhancing the Reliability of Out-of-Distribution Image Detection in Neural Networks*,
ICLR 2018 (arXiv 1706.02690).

With the predicted class ``ŷ = argmax z(x)`` and ``S(x; T) = softmax(z(x) / T)``:

    x̃ = x − ε · sign( ∇_x [ − log S_ŷ(x; T) ] )          (a step that raises the predicted class's score)
    score(x) = − max_k S_k(x̃; T)                           (higher = more OOD)

Defaults ``T = 1000``, ``ε = 0.0014`` (the paper's CIFAR setting). The step is taken in input units and not
clipped to the data domain (as in the paper and pytorch-ood); for inputs normalised by a per-channel std the
reference divides the sign by that std — do the same by passing a model that normalises internally.

``needs_model = True`` when ``ε > 0``: scores come from `score_model` (or `score_batch` in the monitor), one
gradient pass per batch. With ``ε = 0`` ODIN is temperature-scaled MSP and scores from forward outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..models.features import Features
from ..scores.base import register
from ._base import OODDetector, check_positive
from ._gradients import input_gradient, score_dataset


@register
class ODIN(OODDetector):
    """``−max softmax(z(x̃)/T)`` with ``x̃`` one signed-gradient step of size ε."""

    name = "odin"
    paper = "Liang et al., ICLR 2018"

    def __init__(self, temperature: float = 1000.0, eps: float = 0.0014) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        self.eps = check_positive(eps, "eps", allow_zero=True)

    @property
    def needs_model(self) -> bool:  # type: ignore[override]
        return self.eps > 0

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Temperature-scaled MSP of given logits (ODIN's score when ``ε = 0``, or of preprocessed inputs)."""
        return -torch.softmax(logits.double() / self.temperature, dim=1).max(dim=1).values

    def score(self, features: Features) -> np.ndarray:
        if self.eps > 0:
            raise InputError("ODIN with eps > 0 preprocesses the inputs, so it cannot score from features alone",
                             "use odin.score_model(model, data), or ODIN(eps=0) for temperature scaling only")
        return super().score(features)

    def preprocess(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The perturbed inputs ``x̃``."""
        t = self.temperature

        def loss(z: torch.Tensor, _: dict[str, torch.Tensor]) -> torch.Tensor:
            pred = z.detach().argmax(1)
            return torch.nn.functional.cross_entropy(z / t, pred, reduction="sum")

        grad = input_gradient(model, x, loss)
        return (x - self.eps * torch.sign(grad)).detach()

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x_tilde = self.preprocess(model, x) if self.eps > 0 else x
        with torch.no_grad():
            return self.score_tensor(model(x_tilde), {})

    def score_model(self, model: nn.Module, data: Any, *, batch_size: int = 256,
                    device: str | torch.device | None = "auto", **_: Any) -> np.ndarray:
        """Scores of every input of ``data`` (one gradient pass per batch when ``ε > 0``)."""
        if self.eps == 0:
            return super().score_model(model, data, batch_size=batch_size, device=device)
        return score_dataset(self, model, data, batch_size=batch_size, device=device)

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "eps": self.eps}
