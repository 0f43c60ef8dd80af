"""Audit stages and typed results: the registry, the subset-estimate stage against closed-form margins of a
linear model, ε keys that are floats in Python and strings in JSON, one `load_run`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import brittle
from brittle.auditing import STAGES, load_run
from brittle.auditing.stages import MonitorStage, PseudoMarginStage, SubsetEstimateStage
from brittle.errors import InputError, RunNotFoundError, StoreError

DOMAIN = (-10.0, 10.0)  # the box never binds: closed-form margins are exact


def _binary_linear(seed=0, n=200, d=6):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(2, d))
    x = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
        lin.bias.zero_()
    z = x.astype(float) @ w.T
    pred = z.argmax(1)
    margin = np.abs(z[:, 0] - z[:, 1]) / np.linalg.norm(w[0] - w[1])
    y = pred.copy()
    y[:15] = 1 - y[:15]
    return lin.eval(), brittle.as_data(x, y, domain=DOMAIN), margin, y == pred


def test_registry_holds_the_builtin_stages():
    assert {"pseudo_margin", "monitor", "subset_estimate"} <= set(STAGES)
    assert STAGES["subset_estimate"] is SubsetEstimateStage


def test_subset_estimate_stage_checks_against_the_closed_form_truth(tmp_path):
    model, data, margin, correct = _binary_linear()
    eps = [float(np.quantile(margin, 0.3)), float(np.quantile(margin, 0.6))]
    result = brittle.audit(model, data, norm="l2", eps=eps, device="cpu", n_boot=50, subset_estimate=60,
                           out=tmp_path)
    rows = result.summary["subset_estimates"]
    assert {(r["eps"], r["method"]) for r in rows} == {(e, m) for e in eps for m in ("isotonic", "threshold")}
    for r in rows:
        truth = float(np.mean(correct & (margin > r["eps"])))  # closed form, not the code's own number
        assert r["true"] == pytest.approx(truth, abs=1e-6)
        assert r["n"] == 60 and r["ci_low"] <= r["estimate"] <= r["ci_high"]
        assert abs(r["estimate"] - truth) < 0.15  # 60 of 200 attacked on a perfectly consistent model
    html = (tmp_path / "report.html").read_text()
    assert 'id="subset"' in html and "Robust accuracy estimated from a subset" in html


def test_eps_keys_are_floats_in_python_and_strings_on_disk(tmp_path):
    model, data, margin, _ = _binary_linear(n=60)
    result = brittle.audit(model, data, norm="l2", eps="1/10,0.2", device="cpu", n_boot=20, out=tmp_path,
                           report=False)
    ra = result.summary["robust_accuracy"]
    assert set(ra) == {0.1, 0.2}
    assert ra[0.1] is ra["0.1"] is ra[1 / 10]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert set(on_disk["robust_accuracy"]) == {"0.1", "0.2"} and set(on_disk["detection"]) == {"0.1", "0.2"}
    run = load_run(tmp_path)  # the one loader: typed run, ε keys as floats, table by indexing
    assert isinstance(run, brittle.auditing.Run)
    assert run.summary["robust_accuracy"][0.2] == on_disk["robust_accuracy"]["0.2"]
    assert np.array_equal(run["input_margin_upper"].to_numpy(), result.table["input_margin_upper"].to_numpy())
    assert run.eps == [0.1, 0.2] and len(run) == 60


def test_load_run_of_an_empty_directory_is_both_an_input_and_a_store_error(tmp_path):
    with pytest.raises(RunNotFoundError) as err:
        load_run(tmp_path)
    assert isinstance(err.value, InputError) and isinstance(err.value, StoreError)


@pytest.mark.parametrize("stage, message", [
    (lambda: SubsetEstimateStage(1), "subset size"),
    (lambda: SubsetEstimateStage(10, methods=("magic",)), "unknown subset-estimation"),
    (lambda: PseudoMarginStage(""), "pseudo_margin must be"),
])
def test_bad_stage_settings_are_refused_at_construction(stage, message):
    with pytest.raises(InputError, match=message):
        stage()


@pytest.mark.parametrize("options, message", [
    ({"hidden": 64}, r"^hidden must be a tuple of ints .*got 64"),
    ({"lr": "0.01"}, r"^lr must be a finite number > 0, got '0.01'"),
    ({"weight_decay": None}, r"^weight_decay must be a number"),
    ({"hiden": (8,)}, r"^unknown pseudo_margin_options 'hiden'\. Fix: use only loss, inputs, hidden"),
    ({"hiden": (8,), "hidden": 64}, r"^unknown pseudo_margin_options 'hiden'"),
])
def test_pseudo_margin_options_name_the_bad_value_or_the_unknown_key(options, message):
    model, _, _, _ = _binary_linear(n=30)
    with pytest.raises(InputError, match=message):
        PseudoMarginStage("logits", options).check(model, 30, "l2")


def test_stage_checks_run_before_the_run_directory_exists(tmp_path):
    model, data, _, _ = _binary_linear(n=30)
    out = tmp_path / "run"
    for stages in ([SubsetEstimateStage(50)], [MonitorStage(eps=-1.0)], [PseudoMarginStage("no_such_layer")]):
        with pytest.raises(InputError):
            brittle.audit(model, data, norm="l2", eps=[0.1], device="cpu", out=out, stages=stages)
        assert not out.exists()
    with pytest.raises(InputError, match="twice"):
        brittle.audit(model, data, norm="l2", eps=[0.1], device="cpu", out=out,
                      stages=[MonitorStage(0.1), MonitorStage(0.2)])
    assert not out.exists()
