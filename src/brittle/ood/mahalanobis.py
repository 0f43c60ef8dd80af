"""Mahalanobis distance to class-conditional Gaussians with a shared covariance, on one or several layers.

Lee, Lee, Lee, Shin, *A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial
Attacks*, NeurIPS 2018 (arXiv 1807.03888).

Fit on ID features ``h`` of a layer with labels ``y`` (or the predicted classes when none are given):
class means ``μ_k``, the shared covariance ``Σ = 1/N Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ`` and its
pseudo-inverse ``P = Σ⁺`` (``scipy.linalg.pinvh``, as sklearn's ``EmpiricalCovariance``). Score of a layer:

    M(h) = min_k (h − μ_k)ᵀ P (h − μ_k)                           (higher = more OOD)

Fitting needs at least two inputs and a non-zero within-class covariance (`InputError` otherwise: with one
input, or one input per class, every distance would be 0). One class is fine (a single Gaussian).

**Several layers** (``layer=[...]``): each layer's ``M_l`` is standardised by its mean and standard deviation
on the fit data and the standardised scores are averaged — the paper instead weights layers by a logistic
regression fitted on OOD validation data, which an OOD-free benchmark cannot use. Layers are used flattened
(convolutional maps are not spatially pooled).

**Input preprocessing** (``noise``, one magnitude or one per layer; **off by default**): as in the paper,
``x̃ = x − ε_l · sign(∇_x M_l(x))`` (a step towards the closest class), then ``M_l(x̃)``. With any ``ε_l > 0``
the detector ``needs_model`` and scores through `score_model` / `score_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..models.features import Features
from ..scores.base import register
from ._base import (
    OODDetector,
    as_labels,
    check_positive,
    decode_array,
    encode_array,
    layer_matrix,
    penultimate_layer,
    t64,
)
from ._gradients import input_gradient, score_dataset


def class_gaussians(h: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Class means ``(C, D)`` (a class without fit input gets the overall mean) and the pseudo-inverse of the
    shared within-class covariance ``(D, D)``."""
    from scipy.linalg import pinvh

    means = np.empty((num_classes, h.shape[1]))
    centred = np.empty_like(h)
    for k in range(num_classes):
        sel = y == k
        means[k] = h[sel].mean(0) if sel.any() else h.mean(0)
        centred[sel] = h[sel] - means[k]
    cov = centred.T @ centred / len(h)
    if not np.any(cov):
        raise InputError("the within-class covariance of the fit features is zero (every fit input equals the mean "
                         "of its class), so every Mahalanobis distance would be 0",
                         "fit on more in-distribution inputs per class")
    return means, pinvh(cov, check_finite=False)


def min_mahalanobis(h: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """``min_k (h − μ_k)ᵀ P (h − μ_k)`` for a batch (float64)."""
    hp = h @ precision
    quad = (hp * h).sum(1, keepdim=True)
    mu_term = ((means @ precision) * means).sum(1)
    return (quad - 2 * hp @ means.T + mu_term).min(dim=1).values


def _layer_list(layer: Any) -> list[str] | None:
    if layer is None:
        return None
    names = [layer] if isinstance(layer, str) else list(layer) if isinstance(layer, (list, tuple)) else None
    if not names or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"layer must be a layer name or a list of names, got {layer!r}",
                         "pass e.g. layer='6' or layer=['3', '6'] (see brittle.models.layer_names)")
    return list(dict.fromkeys(names))


@register
class Mahalanobis(OODDetector):
    """Minimum class-conditional Mahalanobis distance (one or several layers; optional input noise)."""

    name = "mahalanobis"
    requires_fit = True
    uses_layer = True
    min_fit_inputs = 2
    paper = "Lee et al., NeurIPS 2018"

    def __init__(self, layer: str | Sequence[str] | None = None, noise: float | Sequence[float] = 0.0) -> None:
        super().__init__()
        self._names = _layer_list(layer)
        self.noise: float | list[float] = ([check_positive(v, "noise", allow_zero=True) for v in noise]
                                           if isinstance(noise, (list, tuple))
                                           else check_positive(noise, "noise", allow_zero=True))
        self._check_noise()
        self.means_: list[np.ndarray] = []
        self.precisions_: list[np.ndarray] = []
        self.standardise_: list[tuple[float, float]] = []

    def _check_noise(self) -> None:
        if isinstance(self.noise, list) and self._names is not None and len(self.noise) != len(self._names):
            raise InputError(f"noise has {len(self.noise)} values for {len(self._names)} layers",
                             "pass one noise magnitude, or one per layer")

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self._names or ())

    @property
    def layer(self) -> Any:  # type: ignore[override]
        if self._names is None:
            return None
        return self._names[0] if len(self._names) == 1 else list(self._names)

    @layer.setter
    def layer(self, value: Any) -> None:
        self._names = _layer_list(value)

    def _noise(self) -> list[float]:
        n = len(self.layers)
        return list(self.noise) if isinstance(self.noise, list) else [float(self.noise)] * n

    @property
    def needs_model(self) -> bool:  # type: ignore[override]
        return any(v > 0 for v in self._noise())

    def bind(self, model: nn.Module) -> Mahalanobis:
        if self._names is None:
            self._names = [penultimate_layer(model, self.head)]
        self._check_noise()
        return self

    def _fit(self, features: Features, target: Any) -> None:
        if not self.layers:
            self._require_layer()
        self._check_noise()
        c = features.logits.shape[1]
        y = as_labels(target, len(features), c, features.logits)
        self.means_, self.precisions_, self.standardise_ = [], [], []
        for name in self.layers:
            h = layer_matrix(features, name)
            means, prec = class_gaussians(h, y, c)
            self.means_.append(means)
            self.precisions_.append(prec)
            if len(self.layers) > 1:
                m = min_mahalanobis(torch.as_tensor(h), torch.as_tensor(means), torch.as_tensor(prec)).numpy()
                self.standardise_.append((float(m.mean()), float(m.std()) or 1.0))

    def _combine(self, per_layer: list[torch.Tensor]) -> torch.Tensor:
        if len(per_layer) == 1:
            return per_layer[0]
        return torch.stack([(s - mu) / sd for s, (mu, sd) in zip(per_layer, self.standardise_)]).mean(0)

    def _layer_score(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return min_mahalanobis(h.double(), t64(self.means_[i], h), t64(self.precisions_[i], h))

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_fitted()
        return self._combine([self._layer_score(i, outputs[name]) for i, name in enumerate(self.layers)])

    def score(self, features: Features) -> np.ndarray:
        if self.needs_model:
            raise InputError("Mahalanobis with noise > 0 preprocesses the inputs, so it cannot score from features",
                             "use score_model(model, data), or noise=0")
        return super().score(features)

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        per_layer = []
        for i, (name, eps) in enumerate(zip(self.layers, self._noise())):
            xi = x
            if eps > 0:
                grad = input_gradient(model, x, lambda z, out, i=i, name=name: self._layer_score(i, out[name]).sum(),
                                      [name])
                xi = (x - eps * torch.sign(grad)).detach()
            with torch.no_grad():
                from ._gradients import graph_hooks
                with graph_hooks(model, [name]) as holder:
                    model(xi)
                per_layer.append(self._layer_score(i, holder[name].detach()))
        return self._combine(per_layer)

    def score_model(self, model: nn.Module, data: Any, *, batch_size: int = 256,
                    device: str | torch.device | None = "auto", **_: Any) -> np.ndarray:
        if not self.needs_model:
            return super().score_model(model, data, batch_size=batch_size, device=device)
        return score_dataset(self, model, data, batch_size=batch_size, device=device)

    def _params(self) -> dict[str, Any]:
        return {"noise": self.noise}

    def _state(self) -> dict[str, Any]:
        return {"means": [encode_array(m) for m in self.means_],
                "precisions": [encode_array(p) for p in self.precisions_],
                "standardise": [list(s) for s in self.standardise_]}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.means_ = [decode_array(m) for m in state["means"]]
        self.precisions_ = [decode_array(p) for p in state["precisions"]]
        self.standardise_ = [(float(a), float(b)) for a, b in state["standardise"]]
        if len(self.means_) != len(self.layers):
            raise InputError("the stored Mahalanobis statistics do not match its layers", "re-fit and save it again")
