"""Deep nearest neighbours on normalised features.

Sun, Ming, Zhu, Li, *Out-of-Distribution Detection with Deep Nearest Neighbors*, ICML 2022 (arXiv 2204.06507).

Fit: store the L2-normalised penultimate features ``ĥ = h / ‖h‖`` of the ID fit inputs. Score:

    score(x) = ‖ ĥ(x) − ĥ_(k)(x) ‖₂                               (higher = more OOD)

the Euclidean distance to the k-th nearest stored feature (``k = 50``, the paper's CIFAR-10 choice; capped at
the number of stored inputs). Search: scikit-learn's exact ``NearestNeighbors`` (``backend="sklearn"``) or
faiss ``IndexFlatL2`` when installed (``backend="faiss"``; ``"auto"`` picks faiss if importable). Both are
exact. A zero feature vector stays zero after normalisation (norm clipped at 1e-12).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..models.features import Features
from ..scores.base import register
from ._base import (
    OODDetector,
    check_choice,
    check_positive,
    decode_array,
    encode_array,
    layer_matrix,
)


def normalise(h: np.ndarray) -> np.ndarray:
    return h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)


def _faiss() -> Any:
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        return None
    return faiss


@register
class KNN(OODDetector):
    """Distance to the k-th nearest normalised ID feature."""

    name = "knn"
    requires_fit = True
    uses_layer = True
    paper = "Sun et al., ICML 2022"

    def __init__(self, k: int = 50, layer: str | None = None, backend: str = "auto") -> None:
        super().__init__(layer)
        self.k = check_positive(k, "k", integer=True)
        self.backend = check_choice(backend, "backend", ("auto", "sklearn", "faiss"))
        if backend == "faiss" and _faiss() is None:
            raise InputError("backend='faiss' but faiss is not installed", "pip install faiss-cpu, or backend='sklearn'")
        self.bank_: np.ndarray | None = None
        self._index: Any = None

    def _build(self) -> None:
        bank = self.bank_
        assert bank is not None
        faiss = _faiss() if self.backend in ("auto", "faiss") else None
        if faiss is not None:
            index = faiss.IndexFlatL2(bank.shape[1])
            index.add(np.ascontiguousarray(bank, dtype=np.float32))
            self._index = ("faiss", index)
        else:
            from sklearn.neighbors import NearestNeighbors

            self._index = ("sklearn", NearestNeighbors(n_neighbors=min(self.k, len(bank)), algorithm="brute").fit(bank))

    def _fit(self, features: Features, target: Any) -> None:
        self.bank_ = normalise(layer_matrix(features, self._require_layer())).astype(np.float32)
        self._build()

    def kth_distance(self, h: np.ndarray) -> np.ndarray:
        """Distance of each row of (unnormalised) ``h`` to its k-th nearest stored feature."""
        self.check_fitted()
        if self._index is None:
            self._build()
        q = normalise(np.asarray(h, dtype=np.float64)).astype(np.float32)
        k = min(self.k, len(self.bank_))
        kind, index = self._index
        if kind == "faiss":
            d2, _ = index.search(np.ascontiguousarray(q), k)
            return np.sqrt(np.maximum(d2[:, -1].astype(np.float64), 0.0))
        dist, _ = index.kneighbors(q, n_neighbors=k)
        return dist[:, -1].astype(np.float64)

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        h = outputs[self._require_layer()]
        return torch.as_tensor(self.kth_distance(h.detach().double().cpu().numpy()), device=h.device)

    def _params(self) -> dict[str, Any]:
        return {"k": self.k, "backend": self.backend}

    def _state(self) -> dict[str, Any]:
        return {"bank": encode_array(self.bank_)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.bank_ = decode_array(state["bank"]).astype(np.float32)
        self._index = None
