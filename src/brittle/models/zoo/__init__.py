"""The bundled model zoo: small MNIST classifiers spanning standard to robust training.

Weights live in ``zoo/weights/NAME.pt`` (state dicts, read with ``weights_only=True``) and each model has a
card ``zoo/cards/NAME.json`` written by the build command (``brittle zoo build``) with its recipe and
measured accuracies.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import ModelError
from .architectures import ARCHITECTURES


def _folder(sub: str) -> Path:
    return Path(str(resources.files("brittle.models.zoo") / sub))


def names() -> list[str]:
    """Names of the zoo models that have both a card and weights."""
    cards = _folder("cards")
    if not cards.is_dir():
        return []
    return sorted(p.stem for p in cards.glob("*.json") if (_folder("weights") / f"{p.stem}.pt").exists())


def card(name: str) -> dict[str, Any]:
    """The model card of zoo model ``name`` (recipe, accuracies, robust accuracies)."""
    path = _folder("cards") / f"{name}.json"
    if not path.exists():
        raise ModelError(f"no zoo model named {name!r}", f"use one of: {', '.join(names()) or '(zoo not built)'}")
    return json.loads(path.read_text())


def load(name: str) -> nn.Module:
    """Zoo model ``name`` with its shipped weights, in eval mode on the CPU."""
    from ..loading import INPUT_DOMAIN_ATTR, _load_state, load_checkpoint

    info = card(name)
    arch = info["architecture"]
    model = ARCHITECTURES[arch["name"]](**arch.get("kwargs", {}))
    weights = _folder("weights") / f"{name}.pt"
    model = _load_state(model, load_checkpoint(weights), f"zoo weights {weights.name}").eval()
    setattr(model, INPUT_DOMAIN_ATTR, tuple(float(v) for v in info.get("domain", (0.0, 1.0))))
    return model
