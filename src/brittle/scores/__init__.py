"""Scores computed per input from one forward pass (higher = more of what the scorer detects): the `Scorer`
base, the logit margin and the learned pseudo-margin."""

from .._lazy import lazy_exports

_EXPORTS = {"PseudoMargin": ".pseudo_margin"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
