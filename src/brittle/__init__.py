"""brittle: detect brittle decisions of PyTorch classifiers for free.

Input margins (bracketed by attacks and verifiers), logit margins, margin consistency, and what follows
from it: detection of non-robust inputs, robust accuracy from a few attacks, a deployment monitor, robust
training and expected robustness — and the rest of a pre-deployment audit: OOD detectors and their
combination (``ood``), test-time adaptation (``adaptation``), exact tree explanations (``explain``) and
language-model audits (``llm``).

The package is laid out as the pipeline: ``data`` and ``models`` → ``margins`` and ``scores`` (and ``ood``)
→ ``analysis`` → ``monitoring`` / ``auditing`` → ``report``, with ``execution`` (local and Ray executors, the
run store) and ``core`` (validation, threads, progress) underneath; ``cli`` is thin over all of it. Names are
imported lazily: ``import brittle`` loads neither torch nor any family until used. See docs/architecture.md.
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
    # the audit's other families (each also reachable as a subpackage: brittle.ood, brittle.explain, ...)
    "Benchmark": ".ood", "make_detector": ".ood",
    "TreeExplainer": ".explain", "consensus_order": ".explain",
    "make_adapter": ".adaptation", "adapt_stream": ".adaptation",
}
#: families imported on first use (``brittle.ood.Energy`` after ``import brittle``)
SUBPACKAGES = ("adaptation", "analysis", "auditing", "core", "data", "execution", "explain", "llm", "margins",
               "models", "monitoring", "ood", "report", "scores", "training")
__getattr__, _dir = lazy_exports(__name__, _EXPORTS, SUBPACKAGES)


def __dir__() -> list[str]:
    return sorted(set(_dir()) | {"__version__", "BrittleError", "InputError", "ModelError", "StoreError"})


__all__ = ["__version__", "BrittleError", "InputError", "ModelError", "StoreError", *_EXPORTS]
