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
    # a name is a file stem in the zoo's folder: never a path (zoo:../../x read a card and weights from anywhere)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\\0") or name.startswith(".") \
            or not path.exists():
        raise ModelError(f"no zoo model named {name!r}", f"use one of: {', '.join(names()) or '(zoo not built)'}")
    return json.loads(path.read_text())


def load(name: str) -> nn.Module:
    """Zoo model ``name`` with its shipped weights, in eval mode on the CPU."""
    from ..checkpoint import INPUT_DOMAIN_ATTR, _load_state, load_checkpoint

    info = card(name)
    arch = info["architecture"]
    model = ARCHITECTURES[arch["name"]](**arch.get("kwargs", {}))
    weights = _folder("weights") / f"{name}.pt"
    model = _load_state(model, load_checkpoint(weights), f"zoo weights {weights.name}").eval()
    setattr(model, INPUT_DOMAIN_ATTR, tuple(float(v) for v in info.get("domain", (0.0, 1.0))))
    return model


MARGINS_EVALUATION = "brittle input margins"


def evaluations(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Every robust-accuracy measurement on a card: ``{"norm", "eps", "value", "by", "samples", "data"}``
    (PGD-40 on the whole test split, APGD-CE-100 and brittle's input margins on a subset)."""
    out = []
    ra = info.get("robust_accuracy") or {}
    for entry in [ra, *(info.get("robust_accuracy_extra") or [])]:
        if entry and entry.get("value") is not None:
            out.append({"norm": entry["norm"], "eps": float(entry["eps"]), "value": float(entry["value"]),
                        "by": entry.get("attack", "?"), "samples": entry.get("samples"), "data": entry.get("data")})
    mc = info.get("margin_consistency_estimate") or {}
    by_margins = mc.get("robust_accuracy_from_margins") or {}
    if by_margins.get("value") is not None:
        out.append({"norm": mc.get("norm"), "eps": float(by_margins["eps"]), "value": float(by_margins["value"]),
                    "by": MARGINS_EVALUATION, "samples": mc.get("samples"), "data": mc.get("data")})
    return out


def strongest_robust_accuracy(info: dict[str, Any]) -> dict[str, Any] | None:
    """The lowest robust accuracy any evaluation on the card found at the card's headline norm and ε.

    Every evaluation is an upper bound on the true robust accuracy (each counts a sample as non-robust only
    with a verified adversarial example), so the lowest is the most honest headline. PGD-40 is much weaker on
    these models (e.g. 82% vs 49% for linf_madry at ε = 0.3); the others stay on the card as ``weaker``.
    """
    stored = info.get("robust_accuracy_strongest")
    if stored:
        return stored
    ra = info.get("robust_accuracy") or {}
    same = [e for e in evaluations(info) if e["norm"] == ra.get("norm") and abs(e["eps"] - float(ra.get("eps", -1))) < 1e-9]
    if not same:
        return None
    best = min(same, key=lambda e: e["value"])
    return {**best, "weaker": [{"by": e["by"], "value": e["value"], "samples": e["samples"]}
                               for e in sorted(same, key=lambda e: e["value"]) if e is not best]}
