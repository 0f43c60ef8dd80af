"""``explain_to_dir``: the whole explanation run behind ``brittle explain`` — load, validate, explain, write.

Every input is checked, and the whole explanation computed and its report rendered, before the output directory is
created. The directory receives ``values.parquet`` (one row per explained row: ``row``, a column per feature,
``base_value``, ``prediction``; an added column that a feature's name takes is renamed ``row_``, ``base_value_``, …,
as ``summary.json``'s ``columns`` records), ``interactions.parquet`` (long form: row, feature_i, feature_j, index;
with interactions), ``consensus.json``, ``summary.json`` (written last) and ``report.html``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..errors import InputError, StoreError
from ._validate import model_columns, refuse_missing
from .explanation import free_name

BAGGED = ("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor")
#: every file an explanation writes into --out (--overwrite removes them all before writing the new ones)
OUTPUTS = ("values.parquet", "interactions.parquet", "consensus.json", "report.html", "summary.json")


def read_table(path) -> "pd.DataFrame":  # noqa: F821
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file {str(path)!r} does not exist", "pass a CSV or Parquet file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if path.suffix.lower() in (".csv", ".txt"):
            return pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad data file
        raise InputError(f"cannot read {path.name}: {type(exc).__name__}", "pass a valid CSV or Parquet file") from None
    raise InputError(f"data file {path.name!r} is neither .csv nor .parquet", "pass a CSV or Parquet file")


def _select_columns(df, names: list[str] | None, n_features: int, drop: list[str]):
    missing_drop = [c for c in drop if c not in df.columns]
    if missing_drop:
        raise InputError(f"--drop column(s) {missing_drop} are not in the data", "name columns of the data file")
    df = df.drop(columns=drop)
    if names is not None:
        found, missing = model_columns([str(c) for c in df.columns], list(names))
        if missing:
            raise InputError(f"the data lacks the model's feature column(s) {missing[:5]}",
                             "pass a table with the columns the model was trained on")
        label = {str(c): c for c in df.columns}  # the table's own column labels, by their names
        df = df[[label[c] for c in found]]
        df.columns = list(names)
    elif df.shape[1] != n_features:
        raise InputError(f"the data has {df.shape[1]} columns but the model takes {n_features} features",
                         "drop the other columns (e.g. the target) with --drop NAME")
    if len(df) == 0:
        raise InputError("the data has no rows", "pass a table with at least one row")
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    bad = [c for c in df.columns if not (is_numeric_dtype(df[c].dtype) or is_bool_dtype(df[c].dtype))]
    if bad:
        raise InputError(f"column(s) {bad[:5]} are not numeric", "encode them as numbers (e.g. one-hot) first")
    inf = np.isinf(df.to_numpy(dtype=np.float64, na_value=np.nan))
    if inf.any():
        rows, cols = np.nonzero(inf)
        raise InputError(f"the data has infinite values in {len(set(rows.tolist()))} row(s), first at row "
                         f"index {int(rows[0])} (column {str(df.columns[cols[0]])!r})",
                         "replace them; an empty cell (NaN) marks a missing value")
    return df


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise StoreError(f"--out {str(out)!r} is a file", "pass a directory path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite and not (out / "summary.json").is_file():
            unfinished = any((out / name).exists() for name in ("values.parquet", "consensus.json", "report.html"))
            raise StoreError(f"--out {str(out)!r} is not empty" + (" (it holds an unfinished explanation)"
                                                                   if unfinished else ""),
                             "pass a new or empty directory" + (", or --overwrite to replace it" if unfinished else ""))
        if not overwrite:
            raise StoreError(f"--out {str(out)!r} holds an earlier explanation", "pass --overwrite to replace it")


def consensus_of(explainer, explanation, k: int = 10, seed: int = 0):
    """K global-importance vectors: the sub-forest averages of a bagged forest (its Rashomon set of tree
    averages), else bootstrap resamples of the explained rows."""
    from .consensus import consensus_order

    vals = explanation.values
    name = type(explainer.model_).__name__
    if vals.ndim == 3:  # per-tree contributions of a bagged forest
        T = vals.shape[1]
        k = min(k, T)
        chunks = np.array_split(np.arange(T), k)
        A = np.stack([np.abs(vals[:, c].sum(axis=1) * (T / len(c))).mean(axis=0) for c in chunks])
        how = (f"{k} sub-forests of {name} (tree averages of {T // k}–{-(-T // k)} trees each: the forest's "
               "Rashomon set).")
    else:
        rng = np.random.default_rng(seed)
        n = vals.shape[0]
        A = np.stack([np.abs(vals[rng.integers(0, n, n)]).mean(axis=0) for _ in range(k)])
        how = f"{k} bootstrap resamples of the explained rows (one model: the order's sampling uncertainty)."
    return consensus_order(A, explanation.feature_names), how


def explain_to_dir(model, data, out, *, background: int = 100, interactions: bool = False, output="auto",
                   limit: int | None = 1000, drop: list[str] | None = None, seed: int = 0, trust: bool = False,
                   overwrite: bool = False, command: str = "") -> dict:
    """Explain ``model`` (a fitted model or a model file) on ``data`` (a DataFrame or a CSV/Parquet file);
    write the results into ``out``; return the summary."""
    from .._version import __version__
    from .loading import load_model
    from .report import render_report
    from .tree_shap import TreeExplainer
    from .trees import library_of

    t0 = time.perf_counter()
    out = Path(out)
    for name, value, lo in (("background", background, 1), ("limit", limit, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo):
            raise InputError(f"--{name} {value!r} is not a positive whole number", f"pass --{name} N with N >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"--seed {seed!r} is not a whole number >= 0", "pass e.g. --seed 0")
    _check_out(out, overwrite)
    model_label = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    if isinstance(model, (str, Path)):
        model = load_model(model, trust=trust)
    library_of(model)
    df = read_table(data) if isinstance(data, (str, Path)) else data
    from .trees import from_model

    ens = from_model(model, None if output == "auto" else output)
    df = _select_columns(df, ens.feature_names, ens.n_features, list(drop or []))
    if background > len(df):
        raise InputError(f"--background {background} exceeds the {len(df)} data rows",
                         f"pass --background {len(df)} or fewer")
    rng = np.random.default_rng(seed)
    bg_rows = np.sort(rng.choice(len(df), background, replace=False))
    bg = df.iloc[bg_rows]
    fg = df.iloc[: (limit or len(df))]
    if not ens.extra.get("allow_nan", True):  # checked here to name the data's own row index
        used = df.iloc[np.union1d(bg_rows, np.arange(len(fg)))]
        refuse_missing(used.to_numpy(dtype=np.float64, na_value=np.nan), "the data", type(model).__name__,
                       list(used.columns), rows=list(used.index))
    bagged = type(model).__name__ in BAGGED
    explainer = TreeExplainer(output=output, per_tree=bagged).fit(model, bg)
    # everything is computed and rendered before --out is touched: a failure leaves no half-written folder
    e = explainer.explain(fg)
    if interactions:
        ei = TreeExplainer(output=output).fit(model, bg).explain_interactions(fg)
    else:
        ei = None
    order, how = consensus_of(explainer, e, seed=seed)
    flat = e.values.sum(axis=1) if e.values.ndim == 3 else e.values
    frame = e.to_frame()
    columns = {"row": free_name("row", frame.columns), "base_value": str(frame.columns[-2]),
               "prediction": str(frame.columns[-1])}
    frame.insert(0, columns["row"], np.asarray(fg.index))
    long = None
    if ei is not None:
        import pandas as pd

        G = len(e.feature_names)
        P = ei.pair_index()
        ii, jj = np.meshgrid(np.arange(G), np.arange(G), indexing="ij")
        keep = (ii <= jj).ravel()
        long = pd.DataFrame({
            "row": np.repeat(np.asarray(fg.index), keep.sum()),
            "feature_i": np.tile(np.array(e.feature_names, dtype=object)[ii.ravel()[keep]], len(fg)),
            "feature_j": np.tile(np.array(e.feature_names, dtype=object)[jj.ravel()[keep]], len(fg)),
            "index": P.reshape(len(fg), -1)[:, keep].ravel()})
    consensus = json.dumps({**order.summary(), "how": how, "features": order.feature_names,
                            "relation": order.relation.astype(int).tolist()}, indent=2)
    imp = np.abs(flat).mean(axis=0)
    summary = {
        "model": model_label, "model_type": type(model).__name__, "output": explainer.output_,
        "n_explained": int(len(fg)), "n_background": int(background), "n_trees": explainer.n_trees_,
        "features": list(e.feature_names), "columns": columns, "base_value": explainer.base_value_,
        "efficiency_error": e.efficiency_error(), "interactions": bool(interactions),
        "mean_abs_attribution": {n: float(v) for n, v in zip(e.feature_names, imp)},
        "consensus": {k: v for k, v in order.summary().items() if k != "hasse_edges"}, "consensus_how": how,
        "compiled_kernel": explainer.compiled, "seed": seed, "brittle_version": __version__,
        "command": command, "seconds": round(time.perf_counter() - t0, 3),
    }
    html = render_report(summary, ei if ei is not None else e, order, how)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create --out {str(out)!r}: {exc.strerror}", "pass a writable directory") from None
    for name in OUTPUTS:  # an earlier explanation (--overwrite): none of its files may outlive it
        (out / name).unlink(missing_ok=True)
    frame.to_parquet(out / "values.parquet", index=False)
    if long is not None:
        long.to_parquet(out / "interactions.parquet", index=False)
    (out / "consensus.json").write_text(consensus)
    (out / "report.html").write_text(html, encoding="utf-8")
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))  # last: it marks a finished explanation
    return summary
