"""ViM: virtual-logit matching.

Wang, Li, Feng, Zhang, *ViM: Out-Of-Distribution with Virtual-logit Matching*, CVPR 2022 (arXiv 2203.10807).

With the final linear layer ``z = W h + b`` and the origin ``o = −W⁺ b`` (so ``z = W (h − o)``), fit on ID
penultimate features: the eigenvectors of ``1/N Σ (h − o)(h − o)ᵀ`` (sklearn ``EmpiricalCovariance`` with
``assume_centered=True``, as the official code); ``R`` = those beyond the ``D`` largest eigenvalues (the
principal space's complement); ``α = mean max_k z_k / mean ‖(h − o)ᵀ R‖`` over the fit data. Score:

    score(x) = α ‖(h − o)ᵀ R‖ − log Σ_k exp z_k                 (higher = more OOD)

(the official score ``−vlogit + energy`` with the sign flipped). ``dim`` = ``D``; by default the official
rule: 1000 for features of ≥ 2048 dims, 512 for ≥ 768, else half the feature dimension. Needs the head
(validated: ``h Wᵀ + b`` must rebuild the logits). Fitting needs at least two inputs and a non-zero residual
(fit features that do not all lie in the principal space, i.e. usually more fit inputs than ``D``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..models.features import Features
from ..scores.base import register
from ._base import OODDetector, check_positive, decode_array, encode_array, t64


def default_dim(d: int) -> int:
    return 1000 if d >= 2048 else 512 if d >= 768 else d // 2


@register
class ViM(OODDetector):
    """Virtual logit ``α‖residual‖`` minus the energy term ``logsumexp(z)``."""

    name = "vim"
    requires_fit = True
    uses_layer = True
    uses_head = True
    min_fit_inputs = 2
    paper = "Wang et al., CVPR 2022"

    def __init__(self, dim: int | None = None, layer: str | None = None, head: str | None = None) -> None:
        super().__init__(layer, head)
        self.dim = None if dim is None else check_positive(dim, "dim", integer=True)
        self.origin_ = self.residual_space_ = None
        self.alpha_: float | None = None

    def _fit(self, features: Features, target: Any) -> None:
        h = self._check_head(features)
        d = h.shape[1]
        dim = default_dim(d) if self.dim is None else self.dim
        if not 0 < dim < d:
            raise InputError(f"dim={dim} must lie in [1, {d - 1}] for {d}-dimensional features",
                             f"pass dim < {d} (the principal space's dimension)")
        self.origin_ = -np.linalg.pinv(self.head_weight_) @ self.head_bias_
        x = h - self.origin_
        cov = x.T @ x / len(x)
        eig_vals, eig_vecs = np.linalg.eigh(cov)
        order = np.argsort(eig_vals * -1)
        self.residual_space_ = np.ascontiguousarray(eig_vecs.T[order[dim:]].T)
        vlogit = np.linalg.norm(x @ self.residual_space_, axis=-1)
        scale = float(np.linalg.norm(x, axis=-1).mean())
        if not vlogit.mean() > 1e-8 * max(scale, 1e-300):
            raise InputError(f"the {len(x)} fit inputs have no component outside ViM's {dim}-dimensional principal "
                             f"space (mean residual norm {vlogit.mean():.3g} against a mean feature norm {scale:.3g}), "
                             "so its virtual logit cannot be scaled",
                             f"fit on more in-distribution inputs (many more than dim={dim}), or pass a smaller dim")
        self.alpha_ = float(np.asarray(features.logits, dtype=np.float64).max(axis=-1).mean() / vlogit.mean())

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_fitted()
        h = outputs[self._require_layer()].double()
        x = h - t64(self.origin_, h)
        vlogit = torch.linalg.vector_norm(x @ t64(self.residual_space_, h), dim=-1) * self.alpha_
        return vlogit - torch.logsumexp(logits.double(), dim=1)

    def _params(self) -> dict[str, Any]:
        return {"dim": self.dim}

    def _state(self) -> dict[str, Any]:
        return {"origin": encode_array(self.origin_), "residual_space": encode_array(self.residual_space_),
                "alpha": self.alpha_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.origin_ = decode_array(state["origin"])
        self.residual_space_ = decode_array(state["residual_space"])
        self.alpha_ = float(state["alpha"])
