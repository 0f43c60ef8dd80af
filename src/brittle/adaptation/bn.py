"""Baselines without parameter updates: the source model, and BatchNorm statistics re-estimated on the test
stream (Schneider et al., NeurIPS 2020; Nado et al., 2020)."""

from __future__ import annotations

from typing import Any

import torch

from .base import Adapter


class BNStats(Adapter):
    """Normalise with test statistics (``bn_stats`` policy, `brittle.adaptation.norm`); no parameter changes."""

    name = "bn"
    has_params = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)

    def loss(self, logits: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never called
        raise NotImplementedError


class Source(Adapter):
    """No adaptation at all: the source model with its training statistics (the reference line)."""

    name = "source"
    has_params = False

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("bn_stats", "source")
        super().__init__(**kwargs)

    def fit(self, model: torch.nn.Module) -> "Source":
        self.bn_stats = "source"
        from ..errors import ModelError
        from .norm import batchnorm_layers

        if not isinstance(model, torch.nn.Module):
            raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}",
                             "pass a model (e.g. brittle.load_model('standard_bn'))")
        if not batchnorm_layers(model):  # a model without BatchNorm is fine for the reference line
            return self._fit_plain(model)
        super().fit(model)
        return self

    def _fit_plain(self, model: torch.nn.Module) -> "Source":
        import copy

        import numpy as np

        from ..models.loading import resolve_device

        self._validate()
        self.device_ = resolve_device(self.device)
        self.model_ = copy.deepcopy(model).to(self.device_).eval()
        self.layer_names_, self.layers_ = [], []
        self.source_state_ = {k: v.detach().clone() for k, v in self.model_.state_dict().items()}
        self.optimizer_, self.gate_ = None, None
        self.n_samples_ = self.n_steps_ = 0
        self.updates_ = np.zeros(0, dtype=np.int64)
        return self

    def loss(self, logits: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never called
        raise NotImplementedError
