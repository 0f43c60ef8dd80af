"""Detectors by name: `make_detector`, `detector_names` (``"all"`` expands to every registered OOD detector)."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..scores.base import SCORERS, Scorer, _load_builtin, make_scorer


def _ood() -> dict[str, type[Scorer]]:
    _load_builtin()
    # composite scorers (brittle.ood.combine.CombinedDetector) are built from detectors, not listed among them
    return {name: cls for name, cls in SCORERS.items() if not cls.flag_below and not getattr(cls, "composite", False)}


class _Detectors(dict):
    """Live view of the registered OOD detectors (name → class)."""

    def refresh(self) -> _Detectors:
        self.clear()
        self.update(_ood())
        return self


DETECTORS = _Detectors().refresh()

#: the default set of `brittle ood --detectors all`
DEFAULT_ORDER = ["msp", "max_logit", "energy", "entropy", "gen", "kl_matching", "odin", "mahalanobis", "rmd",
                 "knn", "vim", "gradnorm", "she", "react", "ash", "scale", "dice"]


def detector_names(spec: str | list[str] = "all") -> list[str]:
    """``"all"`` or a comma-separated list → validated detector names (order kept, duplicates dropped)."""
    known = DETECTORS.refresh()
    # listed in one order whatever the import order that registered them: the defaults', then by name
    ordered = [n for n in DEFAULT_ORDER if n in known] + sorted(n for n in known if n not in DEFAULT_ORDER)
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
    else:
        parts = list(spec)
    if not parts:
        raise InputError("no detector given", f"pass --detectors all or some of {', '.join(ordered)}")
    out: list[str] = []
    for p in parts:
        if p == "all":
            out += ordered
        elif p in known:
            out.append(p)
        else:
            raise InputError(f"unknown detector {p!r}", f"use 'all' or some of {', '.join(ordered)}")
    return list(dict.fromkeys(out))


def make_detector(name: str, **params: Any) -> Scorer:
    """A detector by registry name, e.g. ``make_detector("energy", temperature=2.0)``."""
    if name not in DETECTORS.refresh():
        raise InputError(f"unknown detector {name!r}", f"use one of {', '.join(detector_names('all'))}")
    return make_scorer(name, **params)
