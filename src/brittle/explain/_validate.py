"""Input checks shared by the explainers: one-line errors that name the fix, raised before any work."""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def model_columns(cols: list[str], names: list[str]) -> tuple[list[str], list[str]]:
    """The table's columns that hold the model's features ``names``, in the model's order, and the names no
    column holds. A column matches its name as written, or with its spaces as underscores: LightGBM stores
    ``"mean radius"`` as ``"mean_radius"``, so a model's own training table must still fit it."""
    cleaned: dict[str, list[str]] = {}
    for c in cols:
        cleaned.setdefault(c.replace(" ", "_"), []).append(c)
    found, missing = [], []
    for n in names:
        if n in cols:
            found.append(n)
        elif len(cleaned.get(n, [])) == 1:
            found.append(cleaned[n][0])
        else:
            missing.append(n)
    return found, missing


def as_matrix(X, what: str, n_features: int | None = None,
              names: list[str] | None = None) -> tuple[np.ndarray, list[str] | None]:
    """A float64 ``(n, d)`` array and the column names if ``X`` is a DataFrame (reordered to ``names``)."""
    cols = None
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):
        cols = [str(c) for c in X.columns]
        if names is not None and cols != list(names):
            found, missing = model_columns(cols, list(names))
            if missing:
                raise InputError(f"{what} lacks the model's feature column(s) {missing[:5]}",
                                 "pass a table with the columns the model was trained on")
            label = dict(zip(cols, X.columns))  # the table's own column labels, by their names
            X = X[[label[c] for c in found]]
            cols = list(names)
        try:
            X = X.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{what} has non-numeric columns",
                             "encode categorical columns as numbers (e.g. one-hot) before explaining") from None
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} is not numeric", "pass a numeric 2-D array or DataFrame") from None
    if arr.ndim == 1 and n_features is not None and arr.shape[0] == n_features:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{what} has shape {arr.shape}, not (rows, features)", "pass a 2-D array, one row per input")
    if arr.shape[0] == 0:
        raise InputError(f"{what} has no rows", "pass at least one row")
    if n_features is not None and arr.shape[1] != n_features:
        raise InputError(f"{what} has {arr.shape[1]} columns but the model takes {n_features} features",
                         "pass the same feature columns the model was trained on")
    if np.isinf(arr).any():
        raise InputError(f"{what} contains infinite values", "replace infinities (NaN marks a missing value)")
    return arr, cols


def refuse_missing(X: np.ndarray, what: str, model_name: str, names: list[str], rows=None) -> None:
    """Refuse NaN for a model whose own predict refuses it; names the first missing cell (``rows``: row labels)."""
    nan = np.isnan(X)
    if nan.any():
        r, c = np.argwhere(nan)[0]
        row = r if rows is None else rows[r]
        row = row.item() if isinstance(row, np.generic) else row
        raise InputError(f"{model_name} does not accept missing values, and {what} has {int(nan.any(axis=1).sum())} "
                         f"row(s) with NaN, first at row index {row!r} (column {str(names[c])!r})",
                         "impute them first (e.g. sklearn.impute.SimpleImputer), or use a model that accepts "
                         "missing values")
