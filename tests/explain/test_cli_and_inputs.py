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
