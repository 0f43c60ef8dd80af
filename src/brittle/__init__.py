"""brittle: detect brittle decisions of PyTorch classifiers for free.

Input margins (bracketed by attacks and verifiers), logit margins, margin consistency, and what follows
from it: detection of non-robust inputs, robust accuracy from a few attacks, a deployment monitor.
"""

from ._version import __version__
from .data import Data, as_data, load_data, load_digits, load_mnist
from .errors import BrittleError, InputError, ModelError, StoreError
from .logit_margin import LogitMargins, logit_margins
from .models import load_model, prepare_model

__all__ = [
    "__version__", "Data", "as_data", "load_data", "load_digits", "load_mnist",
    "BrittleError", "InputError", "ModelError", "StoreError",
    "LogitMargins", "logit_margins", "load_model", "prepare_model",
]
