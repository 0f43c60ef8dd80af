"""End-to-end audit on models whose input margins are known in closed form."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score
from torch import nn

import brittle
from brittle.auditing.pipeline import audit, load_run
from brittle.core.validation import check_eps
from brittle.errors import InputError

DOMAIN = (-10.0, 10.0)  # wide box: it never binds, so the closed forms below are the exact margins


def _linear(weight, bias):
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        lin.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return lin.eval()


def _closed_form_l2(weight, bias, x):
    """Exact L2 input margin of a linear classifier (box inactive): min_j (z_p - z_j) / ||w_p - w_j||."""
    z = x @ weight.T + bias
    pred = z.argmax(1)
    out = np.full(len(x), np.inf)
    for j in range(weight.shape[0]):
        gap = z[np.arange(len(x)), pred] - z[:, j]
        dist = np.linalg.norm(weight[pred] - weight[j], axis=1)
        out = np.where(pred == j, out, np.minimum(out, gap / np.where(dist > 0, dist, np.inf)))
    return out, z, pred


def test_binary_linear_model_is_perfectly_consistent(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 6))
    x = rng.uniform(-1, 1, size=(80, 6)).astype(np.float32)
    b = np.zeros(2)
    true_margin, z, pred = _closed_form_l2(w, b, x.astype(float))
    y = pred.copy()
    y[:8] = 1 - y[:8]  # some wrong labels: robust accuracy must not count them
    eps = [float(np.quantile(true_margin, q)) for q in (0.25, 0.5, 0.75)]
    data = brittle.as_data(x, y, domain=DOMAIN)
    result = audit(_linear(w, b), data, norm="l2", eps=eps, out=tmp_path, device="cpu", n_boot=200)
    s = result.summary
    upper = result.table["input_margin_upper"].to_numpy()
    assert np.allclose(upper, true_margin, rtol=1e-4)
    assert s["kendall_tau"]["value"] == pytest.approx(1.0)
    for e in eps:
        det = s["detection"][str(e)]
        assert det["auroc"] == pytest.approx(1.0) and det["fpr_at_95_tpr"] == pytest.approx(0.0)
        expected = np.mean((y == pred) & (true_margin > e))
        assert s["robust_accuracy"][str(e)]["upper"] == pytest.approx(expected)
    assert s["clean_accuracy"] == pytest.approx(72 / 80)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("clean_accuracy", "kendall_tau", "robust_accuracy", "detection"):
        assert key in on_disk
    assert set(on_disk["detection"][str(eps[0])]) >= {"auroc", "aupr", "fpr_at_95_tpr"}
    df = load_run(tmp_path)
    assert list(df["input_margin_upper"]) == pytest.approx(list(upper))
    assert df.attrs["summary"]["n"] == 80


def test_inconsistent_linear_model_matches_scipy_and_sklearn(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 5)) * np.array([[0.2], [1.0], [3.0], [6.0]])  # very different row norms
    b = rng.normal(size=4)
    x = rng.uniform(-1, 1, size=(120, 5)).astype(np.float32)
    true_margin, z, pred = _closed_form_l2(w, b, x.astype(float))
    zs = np.sort(z, 1)
    logit_margin = zs[:, -1] - zs[:, -2]
    data = brittle.as_data(x, pred, domain=DOMAIN)
    eps = [float(np.quantile(true_margin, 0.3))]
    result = audit(_linear(w, b), data, norm="l2", eps=eps, device="cpu", n_boot=100)
    tau_expected = stats.kendalltau(true_margin, logit_margin).statistic
    assert tau_expected < 0.9  # the construction really is inconsistent
    assert result.summary["kendall_tau"]["value"] == pytest.approx(tau_expected, abs=0.01)
    auroc_expected = roc_auc_score(true_margin <= eps[0], -logit_margin)
    assert result.summary["detection"][str(eps[0])]["auroc"] == pytest.approx(auroc_expected, abs=0.01)


def test_eps_validation():
    assert check_eps([0.3, 0.1, 0.1]) == [0.1, 0.3]
    for bad in ([], [0.0], [-1], [float("nan")], [float("inf")], ["x"]):
        with pytest.raises(InputError):
            check_eps(bad)


def test_load_run_without_results_is_clear(tmp_path):
    with pytest.raises(InputError, match="holds no finished run"):
        load_run(tmp_path)


def test_a_run_replaced_with_overwrite_is_read_back_as_the_new_one(tmp_path):
    """An audit, then a margins run of another model with overwrite in the same directory: load_run reads the
    margins of the second model (closed form), not the first audit's samples, summary or examples."""
    from brittle.margins.compute import compute_margins

    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(30, 6)).astype(np.float32)
    w1, w2 = rng.normal(size=(3, 6)), 3 * rng.normal(size=(3, 6))
    data = brittle.as_data(x, domain=DOMAIN)
    audit(_linear(w1, np.zeros(3)), data, norm="l2", eps=[0.5], out=tmp_path, device="cpu", n_boot=10)
    assert (tmp_path / "samples.parquet").exists()
    compute_margins(_linear(w2, np.zeros(3)), data, norm="l2", out=tmp_path, device="cpu", overwrite=True)
    assert not any((tmp_path / f).exists() for f in ("samples.parquet", "summary.json", "examples.npz"))
    second, _, _ = _closed_form_l2(w2, np.zeros(3), x.astype(float))
    df = load_run(tmp_path)
    np.testing.assert_allclose(df["input_margin_upper"].to_numpy(), second, rtol=1e-4)
