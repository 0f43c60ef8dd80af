"""Margins: the logit margin (one forward pass), input margins (attacks, bounds, exact), and the batched,
resumable computation of both."""

from .._lazy import lazy_exports

_EXPORTS = {"LogitMargins": ".logit", "logit_margins": ".logit", "margins_from_logits": ".logit",
            "InputMargins": ".input", "input_margins": ".input", "compute_margins": ".compute",
            "MarginTable": ".compute"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
