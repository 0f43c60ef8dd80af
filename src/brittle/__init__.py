"""brittle: detect brittle decisions of PyTorch classifiers for free.

Input margins (bracketed by attacks and verifiers), logit margins, margin consistency, and what follows
from it: detection of non-robust inputs, robust accuracy from a few attacks, a deployment monitor, robust
training and expected robustness.

The package is laid out as the pipeline: ``data`` and ``models`` → ``margins`` and ``scores`` →
``analysis`` → ``monitoring`` / ``audit`` → ``report``, with ``execution`` (local and Ray executors, the run
store) and ``core`` (validation, results, seeding) underneath. Top-level names are imported lazily.
"""

from ._lazy import lazy_exports
from ._version import __version__
from .errors import BrittleError, InputError, ModelError, StoreError

_EXPORTS = {
    "Audit": ".auditing", "audit": ".auditing", "load_run": ".auditing",
    "detection_metrics": ".analysis", "margin_correlations": ".analysis", "robust_accuracy": ".analysis",
    "expected_robustness": ".analysis", "robust_accuracy_curve": ".analysis",
    "robust_accuracy_from_margins": ".analysis", "estimate_robust_accuracy": ".analysis",
    "Data": ".data", "as_data": ".data", "load_data": ".data", "load_digits": ".data", "load_mnist": ".data",
    "InputMargins": ".margins", "input_margins": ".margins", "LogitMargins": ".margins",
    "logit_margins": ".margins", "compute_margins": ".margins",
    "load_model": ".models", "prepare_model": ".models", "extract_features": ".models",
    "Monitor": ".monitoring", "PseudoMargin": ".scores", "Scorer": ".scores", "LogitMarginScorer": ".scores",
    "train": ".training",
    "set_threads": ".core.threads",
}
__getattr__, _dir = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(_dir()) | {"__version__", "BrittleError", "InputError", "ModelError", "StoreError"})


__all__ = ["__version__", "BrittleError", "InputError", "ModelError", "StoreError", *_EXPORTS]
