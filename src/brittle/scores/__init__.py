"""Per-input scores from one forward pass, on one `Scorer` base: the logit margin, the learned pseudo-margin
(and the OOD detectors). Orientation is declared per class by ``flag_below`` (margins flag low values,
detectors high ones); `Scorer.risk` orients any score as "higher = flagged"."""

from .._lazy import lazy_exports

_EXPORTS = {"PseudoMargin": ".pseudo_margin", "Scorer": ".base", "SCORERS": ".base", "register": ".base",
            "make_scorer": ".base", "scorer_from_dict": ".base", "LogitMarginScorer": ".logit_margin"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
