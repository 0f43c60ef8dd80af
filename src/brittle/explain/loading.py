"""Loading tree models from files without running untrusted code.

- ``.skops``: scikit-learn models through skops (types outside skops' trusted set need ``trust=True``);
- ``.json`` / ``.ubj``: XGBoost's native formats; ``.txt`` / ``.lgb``: LightGBM's native text format;
- ``.joblib`` / ``.pkl`` / ``.pickle``: pickles can run arbitrary code when loaded, so only with ``trust=True``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, ModelError

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
#: skops leaves scikit-learn's tree structure out of its default trusted set; it is plain data (node arrays)
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
        return sio.load(path, trusted=list(SKOPS_TREE_TYPES) + untrusted)
    if suffix in (".json", ".ubj"):
        xgb = _need("xgboost", "xgboost")
        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{path.name} is not an XGBoost model ({type(exc).__name__})",
                             "save the model with XGBoost's save_model('model.json')") from None
        return booster
    lgb = _need("lightgbm", "lightgbm")
    try:
        return lgb.Booster(model_file=str(path))
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{path.name} is not a LightGBM model ({type(exc).__name__})",
                         "save the model with LightGBM's booster.save_model('model.txt')") from None
