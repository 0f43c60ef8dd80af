"""Loading tree models from files without running untrusted code.

- ``.skops``: scikit-learn models through skops (types outside skops' trusted set need ``trust=True``);
- ``.json`` / ``.ubj``: XGBoost's native formats; ``.txt`` / ``.lgb``: LightGBM's native text format;
- ``.joblib`` / ``.pkl`` / ``.pickle``: pickles can run arbitrary code when loaded, so only with ``trust=True``.

A corrupt file (random bytes, empty, truncated, another format) is refused with one :class:`ModelError` line.
Some are checked here before the library sees them, since its parser would crash or hang on them (a truncated
LightGBM text: a segmentation fault; a truncated XGBoost ``.ubj``: an endless loop that allocates memory).
The trees of a scikit-learn model (from ``.skops`` or not) are checked when `brittle.explain.trees` reads them.
"""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stdout
from pathlib import Path

from ..errors import InputError, ModelError
from ._model_files import LGB_FIX, SKLEARN_FIX, XGB_FIX, lightgbm_text, quiet_stderr, xgboost_file_problem

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
#: skops leaves scikit-learn's tree structure out of its default trusted set: it is plain data (node arrays), but
#: scikit-learn indexes them without bounds checks. brittle trusts it because `brittle.explain.trees` checks every
#: tree's arrays (`_model_files.sklearn_tree_problem`) before anything indexes them
SKOPS_TREE_TYPES = ("sklearn.tree._tree.Tree",)
SUFFIXES = (".skops", ".json", ".ubj", ".txt", ".lgb") + PICKLE_SUFFIXES


def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(f"reading this model needs {module}, which is not installed",
                         f"pip install {extra}") from None


def load_model(path, trust: bool = False):
    """Load a fitted tree model from ``path`` (see the module docstring for the formats)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist", "pass the path of a saved model file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"model file {path.name!r} has an unknown format",
                         "save it as .skops (scikit-learn), .json/.ubj (XGBoost) or .txt (LightGBM)")
    if suffix in PICKLE_SUFFIXES:
        if not trust:
            raise InputError(f"{path.name} is a pickle/joblib file, and loading one runs any code it contains",
                             "save the model with skops.io.dump (or XGBoost/LightGBM's own save_model), "
                             "or pass --trust (trust=True) if you trust the file")
        import joblib

        try:
            return joblib.load(path)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad model file
            raise ModelError(f"cannot unpickle {path.name}: {type(exc).__name__}",
                             "check the file and the library versions it was saved with") from None
    if suffix == ".skops":
        sio = _need("skops.io", "skops")
        try:
            untrusted = sio.get_untrusted_types(file=path)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{path.name} is not a readable skops file ({type(exc).__name__})",
                             "save the model with skops.io.dump") from None
        untrusted = [t for t in untrusted if t not in SKOPS_TREE_TYPES]
        if untrusted and not trust:
            raise InputError(f"{path.name} holds types skops does not trust ({', '.join(untrusted[:3])})",
                             "pass --trust (trust=True) if you trust the file")
        try:
            return sio.load(path, trusted=list(SKOPS_TREE_TYPES) + untrusted)
        except Exception as exc:  # noqa: BLE001 - e.g. a Tree whose arrays scikit-learn's __setstate__ refuses
            detail = (str(exc).strip().splitlines() or [""])[0][:120]
            raise ModelError(f"{path.name} is a corrupt skops file ({type(exc).__name__}"
                             + (f": {detail}" if detail else "") + ")", SKLEARN_FIX) from None
    if suffix in (".json", ".ubj"):
        xgb = _need("xgboost", "xgboost")
        if path.stat().st_size == 0:
            raise ModelError(f"model file {path.name} is empty", XGB_FIX)
        # XGBoost's UBJSON reader loops forever, allocating, at the end of a truncated file, and XGBoost trusts a
        # model's layout (a child or feature index out of range: a segmentation fault), so both are checked first
        problem = xgboost_file_problem(path)
        if problem:
            raise ModelError(f"{path.name} is not an XGBoost model, or is corrupt or truncated ({problem})", XGB_FIX)
        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad model file
            raise ModelError(f"{path.name} is not an XGBoost model, or is corrupt or truncated "
                             f"({type(exc).__name__})", XGB_FIX) from None
        return booster
    lgb = _need("lightgbm", "lightgbm")
    text = lightgbm_text(path)
    # LightGBM prints "[LightGBM] [Fatal] <the error>" on stderr before raising it, and its warnings on stdout
    log = io.StringIO()
    try:
        with quiet_stderr(), redirect_stdout(log):
            booster = lgb.Booster(model_str=text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad model file
        detail = (str(exc).strip().splitlines() or [""])[0][:120]
        raise ModelError(f"{path.name} is not a LightGBM model, or is corrupt ({type(exc).__name__}"
                         + (f": {detail}" if detail else "") + ")", LGB_FIX) from None
    for line in log.getvalue().splitlines():
        if line.strip():
            warnings.warn(f"{path.name}: {line.strip()}", stacklevel=2)
    return booster
