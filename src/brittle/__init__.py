"""brittle: detect brittle decisions of PyTorch classifiers for free.

Input margins (bracketed by attacks and verifiers), logit margins, margin consistency, and what follows
from it: detection of non-robust inputs, robust accuracy from a few attacks, a deployment monitor, robust
training and expected robustness.
"""

from ._version import __version__
from .audit import Audit, audit, load_run
from .consistency import detection_metrics, margin_correlations, robust_accuracy
from .data import Data, as_data, load_data, load_digits, load_mnist
from .errors import BrittleError, InputError, ModelError, StoreError
from .input_margin import InputMargins, input_margins
from .logit_margin import LogitMargins, logit_margins
from .models import load_model, prepare_model
from .monitor import Monitor
from .pseudo_margin import PseudoMargin, extract_features
from .robustness import expected_robustness, robust_accuracy_curve, robust_accuracy_from_margins
from .subset import estimate_robust_accuracy
from .training import train

__all__ = [
    "__version__", "Audit", "audit", "load_run",
    "detection_metrics", "margin_correlations", "robust_accuracy",
    "Data", "as_data", "load_data", "load_digits", "load_mnist",
    "BrittleError", "InputError", "ModelError", "StoreError",
    "InputMargins", "input_margins", "LogitMargins", "logit_margins", "load_model", "prepare_model",
    "Monitor", "PseudoMargin", "extract_features",
    "expected_robustness", "robust_accuracy_curve", "robust_accuracy_from_margins",
    "estimate_robust_accuracy", "train",
]
