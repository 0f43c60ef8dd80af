"""Method names → adapter classes (used by the CLI and the study)."""

from __future__ import annotations

from typing import Any

from ..core.registry import check_params, init_param_names
from ..errors import InputError
from .base import Adapter
from .bn import BNStats, Source
from .pseudo_label import PseudoLabel
from .shot import ShotIM
from .tent import Tent

METHODS: dict[str, type[Adapter]] = {"source": Source, "bn": BNStats, "tent": Tent, "pl": PseudoLabel,
                                     "shot-im": ShotIM}


def make_adapter(method: str, **kwargs: Any) -> Adapter:
    """An unfitted adapter for ``method`` (``source``, ``bn``, ``tent``, ``pl``, ``shot-im``)."""
    key = {"shot": "shot-im", "shot_im": "shot-im", "pseudo-label": "pl", "none": "source"}.get(method, method)
    if key not in METHODS:
        raise InputError(f"unknown adaptation method {method!r}", f"use one of {', '.join(METHODS)}")
    check_params(key, kwargs, init_param_names(METHODS[key]))  # an unknown setting: InputError naming the known ones
    return METHODS[key](**kwargs)
