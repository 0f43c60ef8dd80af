"""Analysis of margins: consistency (Kendall τ), detection metrics, robust accuracy, expected robustness,
subset estimation."""

from .._lazy import lazy_exports

_EXPORTS = {"detection_metrics": ".consistency", "margin_correlations": ".consistency",
            "robust_accuracy": ".consistency", "expected_robustness": ".robustness",
            "robust_accuracy_curve": ".robustness", "robust_accuracy_from_margins": ".robustness",
            "estimate_robust_accuracy": ".subset"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
