"""`brittle explain` end to end, safe model loading, and one-line errors for bad inputs (before any output)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression

from brittle.errors import BrittleError, InputError, ModelError
from brittle.explain import TreeExplainer


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(120, 5)), columns=["a", "b", "c<d>", "e", "f"])
    y = df["a"] * df["b"] + df["e"]
    model = RandomForestRegressor(n_estimators=6, max_depth=4, random_state=0).fit(df, y)
    root = tmp_path_factory.mktemp("explain")
    df.assign(target=y).to_csv(root / "data.csv", index=False)
    import joblib

    joblib.dump(model, root / "model.joblib")
    try:
        import skops.io as sio

        sio.dump(model, root / "model.skops")
    except ImportError:
        pass
    return root, model, df


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "brittle.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_writes_values_summary_and_report(fitted, tmp_path):
    root, model, df = fitted
    out = tmp_path / "run"
    proc = run_cli("explain", "--model", str(root / "model.joblib"), "--trust", "--data", str(root / "data.csv"),
                   "--drop", "target", "--background", "20", "--limit", "30", "--interactions", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    values = pd.read_parquet(out / "values.parquet")
    assert list(values.columns[1:6]) == list(df.columns) and len(values) == 30
    np.testing.assert_allclose(values[list(df.columns)].sum(axis=1) + values["base_value"], values["prediction"],
                               atol=1e-9)
    np.testing.assert_allclose(values["prediction"], model.predict(df.iloc[:30]), atol=1e-9)
    inter = pd.read_parquet(out / "interactions.parquet")
    assert set(inter.columns) == {"row", "feature_i", "feature_j", "index"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["efficiency_error"] < 1e-9 and summary["n_background"] == 20
    html = (out / "report.html").read_text()
    assert "c&lt;d&gt;" in html and "<d>" not in html.replace("<d>", "", 0).split("<body>")[1].split("c&lt;d")[0]
    assert "<svg" in html


def test_cli_refuses_pickles_without_trust_and_creates_nothing(fitted, tmp_path):
    root, _, _ = fitted
    out = tmp_path / "never"
    proc = run_cli("explain", "--model", str(root / "model.joblib"), "--data", str(root / "data.csv"),
                   "--out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--trust" in lines[0] and "skops" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [
    (["--background", "0"], "--background"),
    (["--background", "100000"], "exceeds"),
    (["--limit", "0"], "--limit"),
    (["--output", "7"], "output"),
    (["--drop", "nope"], "--drop"),
])
def test_cli_bad_inputs_exit_2_before_output(fitted, tmp_path, capsys, args, needle):
    pytest.importorskip("skops", reason="skops not installed")
    from brittle.cli.app import main

    root, _, _ = fitted
    out = tmp_path / "never"
    code = main(["explain", "--model", str(root / "model.skops"), "--data", str(root / "data.csv"),
                 "--out", str(out), *(["--drop", "target"] if "--drop" not in args else []), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_missing_columns_and_unknown_formats(fitted, tmp_path, capsys):
    from brittle.cli.app import main

    root, _, df = fitted
    df.drop(columns=["b"]).to_csv(tmp_path / "short.csv", index=False)
    code = main(["explain", "--model", str(root / "model.joblib"), "--trust", "--data", str(tmp_path / "short.csv"),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "'b'" in capsys.readouterr().err and not (tmp_path / "o").exists()
    (tmp_path / "m.onnx").write_text("x")
    code = main(["explain", "--model", str(tmp_path / "m.onnx"), "--data", str(root / "data.csv"),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "unknown format" in capsys.readouterr().err


def test_cli_refuses_a_used_output_directory(fitted, tmp_path, capsys):
    from brittle.cli.app import main

    root, _, _ = fitted
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("mine")
    code = main(["explain", "--model", str(root / "model.joblib"), "--trust", "--data", str(root / "data.csv"),
                 "--drop", "target", "--out", str(tmp_path / "used")])
    assert code == 3 and "not empty" in capsys.readouterr().err


def test_native_formats_load_without_trust(tmp_path):
    xgb = pytest.importorskip("xgboost", reason="xgboost not installed")
    from brittle.explain import load_model

    X = np.random.default_rng(0).normal(size=(80, 3))
    m = xgb.XGBRegressor(n_estimators=3, max_depth=2).fit(X, X[:, 0])
    m.save_model(tmp_path / "m.json")
    booster = load_model(tmp_path / "m.json")
    a = TreeExplainer().fit(booster, X[:10]).explain(X[10:12])
    b = TreeExplainer().fit(m, X[:10]).explain(X[10:12])
    np.testing.assert_allclose(a.values, b.values, atol=1e-12)


def test_api_bad_inputs_raise_brittle_errors():
    X = np.random.default_rng(0).normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int)
    rf = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(X, X[:, 1])
    with pytest.raises(ModelError):
        TreeExplainer().fit(LinearRegression().fit(X, y), X)
    with pytest.raises(ModelError):
        TreeExplainer().fit(RandomForestRegressor(), X)  # not fitted
    with pytest.raises(InputError):
        TreeExplainer().fit(rf, X[:, :3])  # wrong width
    with pytest.raises(InputError):
        TreeExplainer().fit(rf, np.full((3, 4), np.inf))
    with pytest.raises(InputError):
        TreeExplainer().fit(rf, np.zeros((0, 4)))
    with pytest.raises(InputError):
        TreeExplainer().explain(X)  # not fitted
    with pytest.raises(InputError):
        TreeExplainer(groups=[[0, 1], [1, 2]]).fit(rf, X)
    with pytest.raises(InputError):
        TreeExplainer(groups=[[9]]).fit(rf, X)
    multi = GradientBoostingClassifier(n_estimators=2).fit(X, np.digitize(X[:, 0], [-0.5, 0.5]))
    with pytest.raises(InputError, match="output"):
        TreeExplainer().fit(multi, X)
    with pytest.raises(InputError):
        TreeExplainer(output=5).fit(multi, X)
    ex = TreeExplainer().fit(rf, X)
    with pytest.raises(InputError):
        ex.explain(X[:, :2])
    with pytest.raises(InputError):
        ex.explain([["a", "b", "c", "d"]])
    with pytest.raises(InputError):
        ex.explain(X[:2]).pair_index()
    for exc in (InputError, ModelError):
        assert issubclass(exc, BrittleError)


def test_explain_package_does_not_import_torch():
    code = ("import sys; import brittle.explain as e; from brittle.explain import TreeExplainer, consensus_order;"
            " import brittle.explain.run, brittle.explain.report, brittle.explain.loading;"
            " assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ---- corrupt XGBoost / LightGBM model files: one ModelError line, never a library traceback or a crash ----------

def _native_models(root):
    """A small XGBoost (.json, .ubj) and LightGBM (.txt) model under ``root``, for whichever library is installed."""
    X = np.random.default_rng(0).normal(size=(80, 3))
    y = (X[:, 0] > 0).astype(int)
    made = {}
    try:
        import xgboost as xgb

        m = xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(X, y)
        for suffix in (".json", ".ubj"):
            m.save_model(root / f"good{suffix}")
            made[suffix] = root / f"good{suffix}"
    except ImportError:
        pass
    try:
        import lightgbm as lgb

        booster = lgb.train({"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1},
                            lgb.Dataset(X, y), 3)
        booster.save_model(root / "good.txt")
        made[".txt"] = root / "good.txt"
    except ImportError:
        pass
    return made, X


def _corrupt(kind, good, path):
    raw = good.read_bytes()
    data = {"random": np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
            "empty": b"",
            "text": b"these are my notes, not a model\n",
            "truncated": raw[: len(raw) // 2]}[kind]
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("suffix,library,kind", [
    *[(".json", "xgboost", kind) for kind in ("random", "empty", "text", "truncated")],
    *[(".txt", "lightgbm", kind) for kind in ("random", "empty", "text")],  # truncated: in a child process, below
])
def test_corrupt_native_model_files_raise_model_error(tmp_path, capfd, suffix, library, kind):
    pytest.importorskip(library, reason=f"{library} not installed")
    from brittle.explain import load_model

    made, _ = _native_models(tmp_path)
    bad = _corrupt(kind, made[suffix], tmp_path / f"bad{suffix}")
    with pytest.raises(ModelError) as info:
        load_model(bad)
    msg = str(info.value)
    assert msg.startswith(f"model file bad{suffix} is empty" if kind == "empty" else f"bad{suffix} is ")
    assert ("XGBoost" if library == "xgboost" else "LightGBM") in msg and "Fix: save the model with" in msg
    assert "\n" not in msg and info.value.__cause__ is None
    out, err = capfd.readouterr()  # file descriptors 1 and 2: the library printed nothing either
    assert out == "" and err == "", (out, err)


def test_lightgbm_errors_are_not_printed_by_the_library(tmp_path, capfd):
    """A file that passes brittle's checks but not LightGBM's: LightGBM's own "[LightGBM] [Fatal] …" line on
    stderr is swallowed, its message is kept in the one-line error."""
    pytest.importorskip("lightgbm", reason="lightgbm not installed")
    from brittle.explain import load_model

    (tmp_path / "m.txt").write_text("tree\nversion=v4\n\nTree=0\nnum_leaves=1\n\nend of trees\n")
    with pytest.raises(ModelError, match=r"m\.txt is not a LightGBM model, or is corrupt \(LightGBMError: .*number "
                                         r"of classes"):
        load_model(tmp_path / "m.txt")
    out, err = capfd.readouterr()
    assert "LightGBM" not in out + err, (out, err)


def test_lightgbm_warnings_become_python_warnings_not_stdout(tmp_path, capfd):
    lgb = pytest.importorskip("lightgbm", reason="lightgbm not installed")
    from brittle.explain import load_model

    made, X = _native_models(tmp_path)
    text = made[".txt"].read_text().replace("[two_round: 0]", "[tw0_round: 0]")
    assert "[tw0_round: 0]" in text
    (tmp_path / "odd.txt").write_text(text)
    lgb.Dataset(X, params={"verbose": 0}).construct()  # LightGBM's log level is global: warnings on, whatever before
    capfd.readouterr()
    with pytest.warns(UserWarning, match=r"odd\.txt: \[LightGBM\] \[Warning\] Ignoring unrecognized parameter"):
        booster = load_model(tmp_path / "odd.txt")
    assert capfd.readouterr().out == ""  # --json output stays JSON
    np.testing.assert_allclose(booster.predict(X), load_model(made[".txt"]).predict(X))


# Inputs on which the libraries themselves crash or hang (a truncated LightGBM text: segmentation fault; a NUL
# byte in one: the same; a truncated XGBoost .ubj: an endless loop that allocates memory), so they run in a child
# process with limits: a regression fails these tests instead of taking the test session down.
_CRASHERS = r"""
import sys
from pathlib import Path
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
except (ImportError, ValueError, OSError):
    pass
import numpy as np
from brittle.explain import load_model
for p in sys.argv[1:]:
    try:
        m = load_model(p)
    except Exception as e:
        print(Path(p).name, type(e).__name__, str(e), flush=True)
        continue
    x = np.random.default_rng(0).normal(size=(8, 3))
    if type(m).__name__ == "Booster" and hasattr(m, "get_dump"):  # XGBoost: predictions and TreeSHAP read every node
        import xgboost as xgb
        m.predict(xgb.DMatrix(x), pred_contribs=True)
    else:
        m.predict(x)
    print(Path(p).name, "LOADED", type(m).__name__, flush=True)
"""


def _lgb_edit(raw, key, value):
    """``raw`` (a LightGBM text model) with the first value of the first ``key`` line set to ``value``."""
    start = raw.index(key) + len(key)
    stop = min(i for i in (raw.index(b" ", start), raw.index(b"\n", start)) if i >= 0)
    return raw[:start] + value + raw[stop:]


def _set(key, index, value, tree=0):
    def edit(booster):
        booster["trees"][tree][key][index] = value
    return edit


def _drop_last(key, tree=0):
    def edit(booster):
        booster["trees"][tree][key].pop()
    return edit


def _same_children(booster):
    tree = booster["trees"][0]
    tree["left_children"][0] = tree["right_children"][0]


def _more_trees(booster):
    booster["gbtree_model_param"]["num_trees"] = str(len(booster["trees"]) + 6)


_XGB_LAYOUTS = [
    ("child.json", _set("left_children", 0, 99), "tree 0 has a child index out of range"),
    ("feature.json", _set("split_indices", 0, 999), "tree 0 splits on a feature out of range (the model has 3)"),
    ("twice.json", _same_children, "tree 0 reaches a node twice"),
    ("parent.json", _set("parents", 1, 5000), "tree 0's parents do not match its children"),
    ("root.json", _set("parents", 0, 0), "tree 0's root has a parent"),
    ("group.json", lambda b: b["tree_info"].__setitem__(0, 7), "tree_info does not give each tree an output group"),
    ("count.json", _more_trees, "the model says 9 trees but holds 3"),
    ("length.json", _drop_last("sum_hessian"), "tree 0's sum_hessian has"),
]


def test_inputs_that_crash_the_libraries_are_refused_in_one_line(tmp_path):
    made, _ = _native_models(tmp_path)
    if not made:
        pytest.skip("neither xgboost nor lightgbm is installed")
    files, expect = [], {}
    if ".txt" in made:
        raw = made[".txt"].read_bytes()
        trees, params = raw.index(b"\nTree=1"), raw.index(b"\nparameters:\n")
        for name, data, fragment in (
                ("cut_in_trees.txt", raw[:trees + 20], "its trees do not end with 'end of trees'"),
                ("cut_in_params.txt", raw[:params + 40], "its parameters do not end with 'end of parameters'"),
                ("nul.txt", raw[:params] + b"\0" + raw[params + 1:], f"byte {params} is a NUL byte"),
                ("crlf.txt", raw.replace(b"\n", b"\r\n"), None),  # Windows line endings load
                # tree layouts LightGBM trusts (out of range: a segmentation fault predicting)
                ("child.txt", _lgb_edit(raw, b"left_child=", b"41"), "tree 0: a child index out of range"),
                ("feature.txt", _lgb_edit(raw, b"split_feature=", b"9"),
                 "tree 0: a split on a feature out of range (the model has 3)")):
            (tmp_path / name).write_bytes(data)
            files.append(tmp_path / name)
            expect[name] = fragment
    if ".ubj" in made:
        raw = made[".ubj"].read_bytes()
        cut = raw.index(b"categories_nodes") + len(b"categories_nodes[$l")  # XGBoost 3.x: an endless loop here
        for name, data in (("cut.ubj", raw[:cut]), ("half.ubj", raw[: len(raw) // 2])):
            (tmp_path / name).write_bytes(data)
            files.append(tmp_path / name)
            expect[name] = "ends early, at byte"
    if ".json" in made:  # tree layouts XGBoost trusts (out of range: a segmentation fault loading or predicting)
        for name, edit, fragment in _XGB_LAYOUTS:
            model = json.loads(made[".json"].read_text())
            edit(model["learner"]["gradient_booster"]["model"])
            (tmp_path / name).write_text(json.dumps(model))
            files.append(tmp_path / name)
            expect[name] = fragment
    if ".ubj" in made:
        raw = bytearray(made[".ubj"].read_bytes())
        at = raw.index(b"left_children[$l#L") + len(b"left_children[$l#L") + 8  # the first child, an int32
        raw[at:at + 4] = (2**30).to_bytes(4, "big")
        (tmp_path / "child.ubj").write_bytes(bytes(raw))
        files.append(tmp_path / "child.ubj")
        expect["child.ubj"] = "tree 0 has a child index out of range"
    proc = subprocess.run([sys.executable, "-c", _CRASHERS, *map(str, files)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    lines = dict(ln.split(" ", 1) for ln in proc.stdout.splitlines())
    assert set(lines) == set(expect), proc.stdout
    for name, fragment in expect.items():
        if fragment is None:
            assert lines[name].startswith("LOADED"), lines[name]
        else:
            assert lines[name].startswith("ModelError ") and fragment in lines[name] and "Fix: " in lines[name], \
                lines[name]
    assert "LightGBM]" not in proc.stderr, proc.stderr


def test_cli_truncated_lightgbm_model_exits_2_with_one_line(tmp_path):
    pytest.importorskip("lightgbm", reason="lightgbm not installed")
    made, X = _native_models(tmp_path)
    raw = made[".txt"].read_bytes()
    (tmp_path / "cut.txt").write_bytes(raw[: raw.index(b"\nTree=1") + 20])
    pd.DataFrame(X, columns=["Column_0", "Column_1", "Column_2"]).to_csv(tmp_path / "data.csv", index=False)
    proc = run_cli("explain", "--model", str(tmp_path / "cut.txt"), "--data", str(tmp_path / "data.csv"),
                   "--out", str(tmp_path / "never"))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cut.txt is a truncated or corrupt LightGBM model"), \
        proc.stderr
    assert proc.stdout == "" and not (tmp_path / "never").exists()


def test_ubjson_decoder_reads_what_xgboost_writes_as_json(tmp_path):
    """XGBoost's .ubj and .json of one model decode to the same document (UBJSON's float32s to float32)."""
    pytest.importorskip("xgboost", reason="xgboost not installed")
    from brittle.explain._model_files import CorruptModel, ubjson_decode, xgboost_problem

    made, _ = _native_models(tmp_path)
    decoded = ubjson_decode(made[".ubj"].read_bytes())
    expected = json.loads(made[".json"].read_text())

    def same(a, b, where="") -> None:
        if isinstance(b, dict):
            assert isinstance(a, dict) and set(a) == set(b), where
            for k in b:
                same(a[k], b[k], f"{where}/{k}")
        elif isinstance(b, list) and (not b or not isinstance(b[0], (int, float)) or isinstance(b[0], bool)):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{where}[{i}]")
        elif isinstance(b, list):  # numbers: a typed array
            np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-6,
                                       err_msg=where)
        else:
            assert a == b or (isinstance(b, float) and np.isclose(a, b, rtol=1e-6)), (where, a, b)

    same(decoded, expected)
    assert xgboost_problem(decoded) is None and xgboost_problem(expected) is None
    for bad, problem in ((b"[$l#L" + (5).to_bytes(8, "big") + bytes(8), "ends early"), (b"{", "ends early"),
                         (b"[]x", "unexpected bytes after the model"), (b"?", "unknown marker")):
        with pytest.raises(CorruptModel, match=problem):
            ubjson_decode(bad)


def _xgboost_kinds():
    xgb = pytest.importorskip("xgboost", reason="xgboost not installed")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y2, y3 = (X[:, 0] > 0).astype(int), np.digitize(X[:, 1], [-0.5, 0.5])
    two = np.stack([X[:, 0] + X[:, 1], X[:, 2] - X[:, 3]], 1)
    cat = pd.DataFrame({"a": pd.Categorical(rng.choice(list("pqrstu"), 200)), "b": rng.normal(size=200)})
    return {
        "binary": (xgb.XGBClassifier(n_estimators=4, max_depth=3), X, y2),
        "multiclass": (xgb.XGBClassifier(n_estimators=3, max_depth=3), X, y3),
        "forest": (xgb.XGBRFClassifier(n_estimators=4, max_depth=3), X, y2),
        "dart": (xgb.XGBClassifier(n_estimators=4, booster="dart", rate_drop=0.3), X, y2),
        "gblinear": (xgb.XGBRegressor(n_estimators=4, booster="gblinear"), X, X[:, 0]),
        "multi_output_tree": (xgb.XGBRegressor(n_estimators=3, tree_method="hist",
                                               multi_strategy="multi_output_tree"), X, two),
        "one_tree_per_target": (xgb.XGBRegressor(n_estimators=3, tree_method="hist"), X, two),
        "categorical": (xgb.XGBClassifier(n_estimators=3, enable_categorical=True, tree_method="hist",
                                          max_cat_to_onehot=1), cat, y2),
    }


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_every_kind_of_valid_xgboost_model_passes_the_layout_checks(tmp_path, suffix):
    """No false alarm: boosters of each kind XGBoost writes (trees, forests, dart, linear, multi-target trees,
    categorical splits) load through brittle's checks and predict as the model that was saved."""
    from brittle.explain import load_model

    xgb = pytest.importorskip("xgboost", reason="xgboost not installed")
    for name, (model, X, y) in _xgboost_kinds().items():
        model.fit(X, y)
        model.save_model(tmp_path / f"{name}{suffix}")
        booster = load_model(tmp_path / f"{name}{suffix}")
        data = xgb.DMatrix(X, enable_categorical=True)
        np.testing.assert_allclose(booster.predict(data), model.get_booster().predict(data), rtol=1e-6,
                                   err_msg=name)


def test_a_multi_target_tree_whose_leaf_points_out_of_its_leaf_weights_is_refused(tmp_path):
    from brittle.explain._model_files import xgboost_file_problem

    model, X, y = _xgboost_kinds()["multi_output_tree"]
    model.fit(X, y)
    model.save_model(tmp_path / "good.json")
    doc = json.loads((tmp_path / "good.json").read_text())
    tree = doc["learner"]["gradient_booster"]["model"]["trees"][0]
    leaf = tree["left_children"].index(-1)
    tree["right_children"][leaf] = 10 ** 6
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    assert xgboost_file_problem(tmp_path / "good.json") is None
    assert xgboost_file_problem(tmp_path / "bad.json") == "tree 0 has a leaf index out of range"


def test_every_kind_of_valid_lightgbm_model_passes_the_layout_checks(tmp_path):
    """No false alarm: LightGBM models of each kind (binary, multiclass, regression, categorical splits, linear
    trees, single-leaf trees, random forest) load through brittle's checks and predict as the saved model."""
    lgb = pytest.importorskip("lightgbm", reason="lightgbm not installed")
    from brittle.explain import load_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y2, y3 = (X[:, 0] > 0).astype(int), np.digitize(X[:, 1], [-0.5, 0.5])
    cat = pd.DataFrame({"a": pd.Categorical(rng.choice(list("pqrstuvw"), 300)), "b": rng.normal(size=300)})
    yc = (cat["a"].isin(list("pqr")) ^ (cat["b"] > 0)).astype(int)
    kinds = {"binary": ({"objective": "binary"}, X, y2),
             "multiclass": ({"objective": "multiclass", "num_class": 3}, X, y3),
             "regression": ({"objective": "regression"}, X, X[:, 0]),
             "categorical": ({"objective": "binary", "min_data_per_group": 2, "cat_smooth": 1,
                              "max_cat_to_onehot": 2}, cat, yc),
             "linear": ({"objective": "regression", "linear_tree": True}, X, 2 * X[:, 0] + X[:, 1]),
             "single_leaf": ({"objective": "binary", "min_data_in_leaf": 1000}, X, y2),
             "forest": ({"objective": "binary", "boosting": "rf", "bagging_fraction": 0.7, "bagging_freq": 1}, X, y2)}
    for name, (params, x, y) in kinds.items():
        booster = lgb.train({"verbose": -1, "num_leaves": 8, "min_data_in_leaf": 5, **params}, lgb.Dataset(x, y), 5)
        booster.save_model(str(tmp_path / f"{name}.txt"))
        text = (tmp_path / f"{name}.txt").read_text()
        assert name != "categorical" or "cat_boundaries=" in text  # the kinds are what they say
        assert name != "linear" or "is_linear=1" in text
        np.testing.assert_allclose(load_model(tmp_path / f"{name}.txt").predict(x), booster.predict(x), rtol=1e-9,
                                   err_msg=name)


# ---- output files: reserved column names, feature names with "$", --overwrite, nothing half-written ------------

def _forest(columns, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(60, len(columns))), columns=columns)
    y = df.iloc[:, 0] + df.iloc[:, 1] * df.iloc[:, 2 % len(columns)]
    return RandomForestRegressor(n_estimators=4, max_depth=4, random_state=0).fit(df, y), df


def test_features_named_like_the_added_columns_keep_their_attributions(tmp_path):
    from brittle.explain import explain_to_dir

    names = ["row", "prediction", "base_value", "x", "base_value_"]
    model, df = _forest(names)
    summary = explain_to_dir(model, df, tmp_path / "o", background=10, limit=15)
    cols = summary["columns"]
    assert cols == {"row": "row_", "base_value": "base_value__", "prediction": "prediction_"}
    values = pd.read_parquet(tmp_path / "o" / "values.parquet")
    assert list(values.columns) == ["row_", *names, "base_value__", "prediction_"]
    np.testing.assert_array_equal(values["row_"], np.arange(15))
    np.testing.assert_allclose(values["prediction_"], model.predict(df.iloc[:15]), atol=1e-9)
    np.testing.assert_allclose(values[names].sum(axis=1) + values["base_value__"], values["prediction_"], atol=1e-9)
    bg = df.iloc[np.sort(np.random.default_rng(0).choice(len(df), 10, replace=False))]  # the run's (seed 0)
    e = TreeExplainer().fit(model, bg).explain(df.iloc[:15])
    np.testing.assert_allclose(values[names].to_numpy(), e.values, atol=1e-12)
    frame = e.to_frame()
    assert list(frame.columns) == [*names, "base_value__", "prediction_"]
    np.testing.assert_array_equal(frame[names].to_numpy(), e.values)
    np.testing.assert_array_equal(frame["prediction_"], e.prediction)


@pytest.mark.parametrize("name", ["$a$", r"$\frac$", "a^b$c^d^e$", "price $ in $ 2020"])
def test_feature_names_with_dollar_signs_are_drawn_as_text(tmp_path, name):
    import matplotlib
    from markupsafe import escape

    from brittle.explain import explain_to_dir

    model, df = _forest(["a", name, "c"])
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays <text> in the SVG, so it can be read back
        explain_to_dir(model, df, tmp_path / "o", background=10, limit=12, interactions=True)
    html = (tmp_path / "o" / "report.html").read_text()
    figures = [part.split("</svg>")[0] for part in html.split("<svg")[1:3]]  # beeswarm and heat map
    assert all(f">{escape(name)}</text>" in fig for fig in figures)  # one text, verbatim: not mathtext
    assert f"<td>{escape(name)}</td>" in html


def test_a_failing_report_writes_nothing(tmp_path, monkeypatch):
    import brittle.explain.report as report
    from brittle.explain import explain_to_dir

    model, df = _forest(["a", "b", "c"])
    explain_to_dir(model, df, tmp_path / "earlier", background=10)
    earlier = {p.name: p.read_bytes() for p in (tmp_path / "earlier").iterdir()}

    def fail(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(report, "render_report", fail)
    with pytest.raises(RuntimeError, match="drawing failed"):
        explain_to_dir(model, df, tmp_path / "o", background=10)
    assert not (tmp_path / "o").exists()
    with pytest.raises(RuntimeError, match="drawing failed"):  # the earlier explanation is left as it was
        explain_to_dir(model, df, tmp_path / "earlier", background=5, interactions=True, overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "earlier").iterdir()} == earlier


def test_overwrite_leaves_no_file_of_the_earlier_explanation(fitted, tmp_path, capsys):
    from brittle.cli.app import main

    root, _, _ = fitted
    base = ["explain", "--model", str(root / "model.joblib"), "--trust", "--data", str(root / "data.csv"),
            "--drop", "target", "--background", "10", "--out", str(tmp_path / "o")]
    assert main([*base, "--interactions"]) == 0
    assert (tmp_path / "o" / "interactions.parquet").is_file()
    assert main([*base, "--limit", "5", "--overwrite"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "consensus.json", "report.html", "summary.json", "values.parquet"]
    assert len(pd.read_parquet(tmp_path / "o" / "values.parquet")) == 5


# ---- output selection, unfitted and NaN-refusing models ----------------------------------------------------------

def _binary_boosted():
    X = np.random.default_rng(0).normal(size=(120, 3))
    y = np.where(X[:, 0] + 0.3 * X[:, 1] > 0, "yes", "no")
    out = [("GradientBoostingClassifier", GradientBoostingClassifier(n_estimators=5).fit(X, y), "'yes'", "'no'")]
    try:
        import xgboost as xgb

        m = xgb.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1).fit(X, (y == "yes").astype(int))
        out += [("XGBClassifier", m, "1", "0"), ("Booster", m.get_booster(), "1", "0")]
    except ImportError:
        pass
    try:
        import lightgbm as lgb

        m = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1, n_jobs=1).fit(X, y)
        out += [("LGBMClassifier", m, "'yes'", "'no'"), ("Booster", m.booster_, "1", "0")]
    except ImportError:
        pass
    return X, out


def test_binary_boosted_models_explain_the_positive_class_only():
    X, models = _binary_boosted()
    for name, model, pos, neg in models:
        auto = TreeExplainer().fit(model, X[:10])
        assert f"log-odds of class {pos}" in auto.output_ and "np." not in auto.output_, auto.output_
        label = (lambda text: int(text) if text.isdigit() else text.strip("'"))  # as the user passes it
        for ok in (1, label(pos)):
            same = TreeExplainer(output=ok).fit(model, X[:10])
            np.testing.assert_array_equal(same.explain(X[:3]).values, auto.explain(X[:3]).values)
        for bad in (0, label(neg)):
            with pytest.raises(InputError, match=f"has one raw score, the log-odds of class {pos}") as info:
                TreeExplainer(output=bad).fit(model, X[:10])
            assert f"asks for class {neg}" in str(info.value) and "Fix: pass output=1 or auto" in str(info.value)
        for bad in (7, -1):
            with pytest.raises(InputError, match=f"output={bad} is out of range for a model with 2 outputs"):
                TreeExplainer(output=bad).fit(model, X[:10])
        with pytest.raises(InputError, match=r"output 'cat' is not one of the model's outputs \[" + neg):
            TreeExplainer(output="cat").fit(model, X[:10])


def test_single_output_regressors_refuse_other_outputs():
    X = np.random.default_rng(0).normal(size=(80, 3))
    models = [RandomForestRegressor(n_estimators=2, max_depth=2).fit(X, X[:, 0])]
    try:
        import lightgbm as lgb

        models.append(lgb.LGBMRegressor(n_estimators=3, num_leaves=4, verbose=-1, n_jobs=1).fit(X, X[:, 0]))
    except ImportError:
        pass
    try:
        import xgboost as xgb

        models.append(xgb.XGBRegressor(n_estimators=3, max_depth=2, n_jobs=1).fit(X, X[:, 0]))
    except ImportError:
        pass
    for model in models:
        assert TreeExplainer(output=0).fit(model, X[:5]).output_ == TreeExplainer().fit(model, X[:5]).output_
        with pytest.raises(InputError, match="output=1 is out of range for a model with 1 outputs"):
            TreeExplainer(output=1).fit(model, X[:5])


def test_cli_refuses_an_output_a_binary_lightgbm_model_lacks(tmp_path, capsys):
    lgb = pytest.importorskip("lightgbm", reason="lightgbm not installed")
    from brittle.cli.app import main

    X = np.random.default_rng(0).normal(size=(80, 3))
    lgb.LGBMClassifier(n_estimators=3, num_leaves=4, verbose=-1).fit(X, X[:, 0] > 0).booster_.save_model(
        str(tmp_path / "m.txt"))
    pd.DataFrame(X, columns=["Column_0", "Column_1", "Column_2"]).to_csv(tmp_path / "d.csv", index=False)
    for output, needle in (("7", "output=7 is out of range"), ("0", "has one raw score, the log-odds of class 1")):
        code = main(["explain", "-m", str(tmp_path / "m.txt"), "-d", str(tmp_path / "d.csv"), "--background", "10",
                     "--output", output, "-o", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


def test_class_labels_are_printed_as_plain_values():
    from sklearn.ensemble import RandomForestClassifier

    X = np.random.default_rng(0).normal(size=(60, 3))
    rf = RandomForestClassifier(n_estimators=2, max_depth=2, random_state=0).fit(X, (X[:, 0] > 0).astype(np.int64))
    assert TreeExplainer().fit(rf, X[:5]).output_ == "predict_proba[:, 1]: probability of class 1"
    with pytest.raises(InputError, match=r"is not one of the model's outputs \[0, 1\]"):
        TreeExplainer(output="cat").fit(rf, X[:5])


@pytest.mark.parametrize("library,cls", [("xgboost", "XGBRegressor"), ("xgboost", "XGBClassifier"),
                                         ("lightgbm", "LGBMRegressor"), ("lightgbm", "LGBMClassifier")])
def test_unfitted_boosted_estimators_raise_model_error(library, cls):
    lib = pytest.importorskip(library, reason=f"{library} not installed")
    with pytest.raises(ModelError, match=f"^{cls} is not fitted. Fix: fit the model before explaining it$"):
        TreeExplainer().fit(getattr(lib, cls)(), np.zeros((5, 3)))


def test_nan_refusal_follows_the_models_own_predict():
    """A model is refused NaN exactly when its own predict refuses it (scikit-learn's allow_nan tag)."""
    from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor

    from brittle.explain.trees import from_model

    X = np.random.default_rng(0).normal(size=(60, 3))
    nan = X[:4].copy()
    nan[2, 1] = np.nan
    for model in (GradientBoostingRegressor(n_estimators=3), GradientBoostingClassifier(n_estimators=3),
                  RandomForestRegressor(n_estimators=2), ExtraTreesRegressor(n_estimators=2)):
        model.fit(X, X[:, 0] > 0 if "Classifier" in type(model).__name__ else X[:, 0])
        try:
            model.predict(nan)
            accepts = True
        except ValueError:
            accepts = False
        assert from_model(model).extra["allow_nan"] == accepts, type(model).__name__


def test_models_that_refuse_nan_refuse_it_in_background_and_rows():
    from sklearn.ensemble import GradientBoostingRegressor

    X = np.random.default_rng(0).normal(size=(60, 3))
    gb = GradientBoostingRegressor(n_estimators=3).fit(X, X[:, 0])
    nan = X[:8].copy()
    nan[5, 2] = np.nan
    msg = (r"^GradientBoostingRegressor does not accept missing values, and {} has 1 row\(s\) with NaN, first at "
           r"row index 5 \(column 'x2'\). Fix: impute them first")
    with pytest.raises(InputError, match=msg.format("the background")):
        TreeExplainer().fit(gb, nan)
    ex = TreeExplainer().fit(gb, X[:8])
    with pytest.raises(InputError, match=msg.format("X")):
        ex.explain(nan)
    np.testing.assert_allclose(ex.explain(X[:3]).prediction, gb.predict(X[:3]), atol=1e-9)


def test_cli_refuses_nan_for_a_model_that_refuses_it_before_output(tmp_path, capsys):
    import joblib
    from sklearn.ensemble import GradientBoostingRegressor

    from brittle.cli.app import main

    df = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 3)), columns=["a", "b", "c"])
    joblib.dump(GradientBoostingRegressor(n_estimators=3).fit(df, df["a"]), tmp_path / "gb.joblib")
    df.loc[30, "b"] = np.nan
    df.to_csv(tmp_path / "d.csv", index=False)
    for background in ("40", "5"):  # NaN in the background; NaN only in an explained row
        code = main(["explain", "-m", str(tmp_path / "gb.joblib"), "--trust", "-d", str(tmp_path / "d.csv"),
                     "--background", background, "-o", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "does not accept missing values, and the data has 1 row(s) with NaN, first at row index 30 " \
               "(column 'b')" in err
        assert not (tmp_path / "o").exists()


def test_a_lightgbm_model_explains_its_own_training_table_whose_names_hold_spaces(tmp_path):
    """LightGBM stores "mean radius" as "mean_radius": the very table the model was trained on (which its own
    predict accepts) was refused as lacking the model's columns."""
    lgb = pytest.importorskip("lightgbm")
    from brittle.explain import explain_to_dir
    from brittle.explain.brute_force import brute_force_values

    rng = np.random.default_rng(5)
    names = ["mean radius", "worst  texture", "area"]
    df = pd.DataFrame(rng.normal(size=(120, 3)), columns=names)
    y = (df["mean radius"] + 0.5 * df["area"] > 0).astype(int)
    model = lgb.LGBMClassifier(n_estimators=8, max_depth=3, n_jobs=1, verbose=-1).fit(df, y)
    assert list(model.feature_name_) == ["mean_radius", "worst__texture", "area"]
    bg, rows = df.iloc[:6], df.iloc[[50, 60, 70]]
    e = TreeExplainer().fit(model, bg).explain(rows[["area", "mean radius", "worst  texture"]])  # any column order
    f = lambda X: model.predict(pd.DataFrame(X, columns=names), raw_score=True)  # noqa: E731
    np.testing.assert_allclose(e.values, brute_force_values(f, rows.to_numpy(), bg.to_numpy()), rtol=0, atol=1e-9)
    explain_to_dir(model, df, tmp_path / "o", background=10, limit=5)
    values = pd.read_parquet(tmp_path / "o" / "values.parquet")
    np.testing.assert_allclose(values[["mean_radius", "worst__texture", "area"]].sum(axis=1)
                               + values["base_value"], model.predict(df.iloc[:5], raw_score=True), atol=1e-9)


def test_to_frame_keeps_the_explained_tables_row_labels():
    """Rows came back as 0..n-1, so the attributions could not be joined back to the user's table."""
    model, df = _forest(["a", "b", "c"])
    rows = df.iloc[[5, 2, 9]].set_axis(["u", "v", "w"])
    e = TreeExplainer().fit(model, df.iloc[:10]).explain(rows)
    frame = e.to_frame()
    assert list(frame.index) == ["u", "v", "w"]
    joined = rows.join(frame, rsuffix="_shap")
    np.testing.assert_allclose(joined["prediction"], model.predict(rows), atol=1e-9)
    assert list(TreeExplainer().fit(model, df.iloc[:10]).explain(rows.to_numpy()).to_frame().index) == [0, 1, 2]


# ---- scikit-learn trees in .skops files: node arrays scikit-learn trusts (crafted: a crash, a hang) ---------------

# The node arrays of a scikit-learn Tree are raw indices scikit-learn follows without bounds checks (a child out of
# range: a segmentation fault in apply; a cycle: brittle's own traversal looped forever), so crafted files are tried
# in a child process with limits: a regression fails these tests instead of taking the test session down.
_SKOPS_CRASHERS = r"""
import sys
from pathlib import Path
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
except (ImportError, ValueError, OSError):
    pass
import faulthandler
faulthandler.enable()
import numpy as np
from brittle.explain import TreeExplainer, load_model
x = np.random.default_rng(0).normal(size=(12, 3))
for p in sys.argv[1:]:
    try:
        m = load_model(p)
        TreeExplainer().fit(m, x[:8]).explain(x[8:])
    except Exception as e:
        print(Path(p).name, type(e).__name__, str(e), flush=True)
        continue
    print(Path(p).name, "EXPLAINED", type(m).__name__, flush=True)
"""


def _skops_tree(root):
    """A DecisionTreeRegressor saved with skops in ``root``, its data table, and a maker of crafted copies whose
    node array (``edit(nodes)``, returning a new array or None) or Tree state (``state(dict)``) is changed."""
    import io
    import zipfile

    sio = pytest.importorskip("skops.io", reason="skops not installed")
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    y = df["a"] * 2 + df["b"]
    model = DecisionTreeRegressor(max_depth=3, random_state=0).fit(df, y)
    df.assign(t=y).to_csv(root / "data.csv", index=False)
    sio.dump(model, root / "good.skops")
    with zipfile.ZipFile(root / "good.skops") as z:
        files = {n: z.read(n) for n in z.namelist()}
    nodes_file = json.loads(files["schema.json"])["content"]["content"]["tree_"]["content"]["content"]["nodes"]["file"]

    def craft(name, edit=None, state=None):
        out = dict(files)
        if edit is not None:
            nodes = np.load(io.BytesIO(files[nodes_file]), allow_pickle=False).copy()
            new = edit(nodes)
            buf = io.BytesIO()
            np.save(buf, nodes if new is None else new, allow_pickle=False)
            out[nodes_file] = buf.getvalue()
        if state is not None:
            schema = json.loads(files["schema.json"])
            state(schema["content"]["content"]["tree_"]["content"]["content"])
            out["schema.json"] = json.dumps(schema).encode()
        with zipfile.ZipFile(root / name, "w") as z:
            for n, data in out.items():
                z.writestr(n, data)
        return root / name

    return model, df, craft


def _node_count(count):
    def state(tree):
        tree["node_count"]["content"] = str(count)
    return state


_SKOPS_TREES = [  # (file, edit of the node array, edit of the Tree's state, what the one line says)
    ("neg_child.skops", lambda a: a["left_child"].__setitem__(0, -1000000), None,
     "the tree: node 0's left child is -1000000, not a node after it"),
    ("cycle.skops", lambda a: a["left_child"].__setitem__(1, 0), None,
     "the tree: node 1's left child is 0, not a node after it"),
    ("neg_feature.skops", lambda a: a["feature"].__setitem__(0, -100000), None,
     "node 0 splits on feature -100000, but the model takes 3 features"),
    ("big_feature.skops", lambda a: a["feature"].__setitem__(0, 10**6), None,
     "node 0 splits on feature 1000000, but the model takes 3 features"),
    ("two_parents.skops", lambda a: a["right_child"].__setitem__(0, a["left_child"][0]), None,
     "is the child of 2 nodes"),
    ("nan_threshold.skops", lambda a: a["threshold"].__setitem__(0, np.nan), None, "node 0's threshold is NaN"),
    # mismatched lengths: node_count below the node array's, a node array shorter than the value array
    ("short_count.skops", None, _node_count(5), "not a node after it and below 5"),
    ("short_nodes.skops", lambda a: a[:10].copy(), None, "short_nodes.skops is a corrupt skops file (ValueError"),
]


def test_crafted_sklearn_trees_in_skops_files_are_refused_in_one_line(tmp_path):
    _, _, craft = _skops_tree(tmp_path)
    files = [craft(name, edit, state) for name, edit, state, _ in _SKOPS_TREES] + [tmp_path / "good.skops"]
    try:
        proc = subprocess.run([sys.executable, "-c", _SKOPS_CRASHERS, *map(str, files)], capture_output=True,
                              text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"a crafted tree hung brittle: {exc.stdout!r}")
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    lines = dict(ln.split(" ", 1) for ln in proc.stdout.splitlines())
    assert set(lines) == {f.name for f in files}, proc.stdout
    assert lines["good.skops"] == "EXPLAINED DecisionTreeRegressor"
    for name, _, _, fragment in _SKOPS_TREES:
        line = lines[name]
        assert line.startswith("ModelError ") and fragment in line, line
        assert "corrupt" in line and "Fix: re-save the model with skops" in line, line


@pytest.mark.parametrize("variant", ["neg_child.skops", "cycle.skops", "big_feature.skops"])
def test_cli_refuses_a_crafted_sklearn_tree_with_exit_2_and_one_line(tmp_path, variant):
    _, _, craft = _skops_tree(tmp_path)
    name, edit, state, fragment = next(v for v in _SKOPS_TREES if v[0] == variant)
    path = craft(name, edit, state)
    try:
        proc = subprocess.run([sys.executable, "-m", "brittle.cli", "explain", "--model", str(path),
                               "--data", str(tmp_path / "data.csv"), "--drop", "t", "--background", "10",
                               "--out", str(tmp_path / "never")], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"brittle explain hung on {variant}")
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the DecisionTreeRegressor is corrupt or was tampered "
                                                   "with: ") and fragment in lines[0], proc.stderr
    assert not (tmp_path / "never").exists()


def test_a_valid_skops_tree_explains_as_the_fitted_model_does(tmp_path, capsys):
    from brittle.cli.app import main

    model, df, _ = _skops_tree(tmp_path)
    code = main(["explain", "--model", str(tmp_path / "good.skops"), "--data", str(tmp_path / "data.csv"),
                 "--drop", "t", "--background", "10", "--limit", "20", "--out", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    values = pd.read_parquet(tmp_path / "o" / "values.parquet")
    rng = np.random.default_rng(0)
    bg = df.iloc[np.sort(rng.choice(len(df), 10, replace=False))]
    expect = TreeExplainer().fit(model, bg).explain(df.iloc[:20])
    np.testing.assert_array_equal(values[["a", "b", "c"]].to_numpy(), expect.values)
    np.testing.assert_allclose(values["prediction"], model.predict(df.iloc[:20]), atol=1e-12)


def test_damaged_trees_of_fitted_models_are_refused_through_the_python_api():
    """The checks run wherever brittle reads a scikit-learn model, not only for .skops files."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = X[:, 0] + X[:, 1]
    rf = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(X, y)
    rf.estimators_[2].tree_.feature[0] = 7
    with pytest.raises(ModelError, match=r"RandomForestRegressor is corrupt .*: tree 2: node 0 splits on feature 7"):
        TreeExplainer().fit(rf, X[:10])
    gb = GradientBoostingClassifier(n_estimators=4, max_depth=2, random_state=0).fit(X, X[:, 0] > 0)
    gb.estimators_[3, 0].tree_.children_right[0] = 0
    with pytest.raises(ModelError, match=r"stage 3: node 0's right child is 0, not a node after it") as info:
        TreeExplainer().fit(gb, X[:10])
    assert "\n" not in str(info.value)
    tree = DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, y)
    thresholds = tree.tree_.threshold
    thresholds[tree.tree_.children_left >= 0] = np.inf  # scikit-learn's own split of "missing vs the rest"
    TreeExplainer().fit(tree, X[:10])  # infinite thresholds are valid


# ---- names from the data are printed literally (never rich markup, no control characters) -----------------------

def test_cli_prints_feature_names_literally_without_markup_or_escape_bytes(tmp_path, capsys, monkeypatch):
    """A column named '[/bold]' crashed the command (exit 1, after the outputs were written); '[link=…]' became a
    terminal hyperlink, and an ESC sequence in a name reached the terminal (clearing it, setting its title)."""
    import io

    from rich.console import Console

    import brittle.cli._common as common
    import brittle.cli.explain as cli_explain
    from brittle.cli.app import main

    sio = pytest.importorskip("skops.io", reason="skops not installed")
    names = ["[/bold]", "[link=https://x]y[/link]", "\x1b[2J\x1b]0;pwned\x07esc", "plain"]
    model, df = _forest(names)
    df.to_csv(tmp_path / "data.csv", index=False)
    sio.dump(model, tmp_path / "m.skops")
    screen = io.StringIO()  # a colour terminal: markup would become styles and hyperlinks there
    terminal = Console(file=screen, force_terminal=True, color_system="truecolor", width=150)
    monkeypatch.setattr(common, "console", terminal)
    monkeypatch.setattr(cli_explain, "console", terminal)
    code = main(["explain", "--model", str(tmp_path / "m.skops"), "--data", str(tmp_path / "data.csv"),
                 "--background", "10", "--limit", "5", "--out", str(tmp_path / "o")])
    out = screen.getvalue()
    assert code == 0, capsys.readouterr().err
    assert "[/bold]" in out and "[link=https://x]y[/link]" in out and "[2J]0;pwnedesc" in out, out
    assert "\x1b]8;" not in out and "\x1b[2J" not in out and "\x1b]0;" not in out and "\x07" not in out, repr(out)


def test_the_explain_report_forbids_scripts_like_every_other_report(tmp_path):
    """The other reports carry a Content-Security-Policy that forbids scripts and remote loads; the explain
    report, with its own template, had none (its escaping was right: this is defence in depth)."""
    from brittle.explain import explain_to_dir

    model, df = _forest(["a", "b", "c"])
    explain_to_dir(model, df, tmp_path / "o", background=10, limit=5)
    head = (tmp_path / "o" / "report.html").read_text().split("</head>")[0]
    assert ('<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
            'style-src \'unsafe-inline\'">') in head
