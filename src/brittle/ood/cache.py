"""One forward pass per data set for many detectors: extract the union of the layers they read once.

`FeatureCache` keeps `Features` per data set name; a later request for layers not yet extracted re-runs the
pass for the union of old and new layers (so the cache never holds partial results).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..models.features import Features, extract_features


def layers_of(detectors: Iterable[Any]) -> list[str]:
    """The union of the layers the detectors read, in first-seen order."""
    out: dict[str, None] = {}
    for d in detectors:
        for name in d.layers:
            out.setdefault(name, None)
    return list(out)


class FeatureCache:
    """Features of named data sets under one model, from one forward pass per set.

    >>> cache = FeatureCache(model)
    >>> for det in detectors: det.bind(model)
    >>> feats = cache.get("id_test", data, layers_of(detectors))
    >>> scores = {det.name: det.score(feats) for det in detectors}
    """

    def __init__(self, model: nn.Module, *, batch_size: int = 512, device: str | torch.device | None = "auto"):
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self._features: dict[str, Features] = {}
        self.passes = 0   # forward passes run (for tests and progress)

    def get(self, name: str, data: Any, layers: Iterable[str] = ()) -> Features:
        """Features of ``data`` (cached as ``name``) holding at least ``layers``."""
        wanted = list(dict.fromkeys(layers))
        have = self._features.get(name)
        if have is not None and all(layer in have.outputs for layer in wanted):
            return have
        union = list(dict.fromkeys([*(have.outputs if have is not None else {}), *wanted]))
        feats = extract_features(self.model, data, union or None, batch_size=self.batch_size, device=self.device)
        self.passes += 1
        self._features[name] = feats
        return feats

    def __contains__(self, name: str) -> bool:
        return name in self._features

    def clear(self) -> None:
        self._features.clear()
