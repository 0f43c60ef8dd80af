"""brittle evaluates models in eval mode and gives them back in the mode they were given: every API entry point,
on a model with dropout in train mode (and a batch-norm layer its owner froze in eval mode), returns the numbers
of eval mode and leaves every module's mode as it was — also when the call fails."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import brittle
from brittle.data.loading import load_mnist, validate
from brittle.errors import InputError
from brittle.models.loading import evaluation_mode
from brittle.monitoring.monitor import Monitor


@pytest.fixture(scope="module")
def data():
    return load_mnist().head(24)


def _model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5),
                        nn.Linear(32, 10))
    with torch.no_grad():  # batch-norm statistics that differ from a batch's own (train mode would show)
        net[2].running_mean.uniform_(-0.2, 0.2)
        net[2].running_var.uniform_(0.5, 2.0)
    return net


def _training(net: nn.Module) -> nn.Module:
    net.train()
    net[2].eval()  # a frozen batch-norm inside a training model: must come back frozen, not flattened to train
    return net


def _modes(net: nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


def _equal(a, b) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _equal(a[key], b[key])
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _monitor_scores(net, data):
    return Monitor(net, threshold=0.5).scores(data)


def _calibrated(net, data):
    upper = np.linspace(0.01, 0.3, len(data))
    m = Monitor.calibrate(net, data, upper, 0.1)
    return {"threshold": m.threshold, "scores": m.scores(data)}


def _calibrated_tpr(net, data):
    m = Monitor.calibrate_tpr(net, data)
    return {"threshold": m.threshold, "flags": m(data.x).flag.numpy()}


ENTRY_POINTS = {
    "logit_margins": lambda net, d: brittle.logit_margins(net, d, device="cpu").to_frame(),
    "input_margins": lambda net, d: brittle.input_margins(net, d, device="cpu").to_frame(),
    "compute_margins": lambda net, d: brittle.compute_margins(net, d, device="cpu").table,
    "audit": lambda net, d: brittle.audit(net, d, device="cpu", n_boot=20).table,
    "extract_features": lambda net, d: {"logits": brittle.extract_features(net, d, "3", device="cpu").logits,
                                        "layer": brittle.extract_features(net, d, "3", device="cpu").output("3")},
    "robust_accuracy_curve": lambda net, d: brittle.robust_accuracy_curve(net, d, "linf", [0, 0.05], steps=5,
                                                                          device="cpu"),
    "Monitor": _monitor_scores,
    "Monitor.calibrate": _calibrated,
    "Monitor.calibrate_tpr": _calibrated_tpr,
}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_entry_point_restores_the_mode_and_computes_in_eval_mode(name, data):
    call = ENTRY_POINTS[name]
    reference = call(_model().eval(), data)
    net = _training(_model())
    before = _modes(net)
    with pytest.warns(UserWarning, match="puts it back in train mode afterwards"):
        result = call(net, data)
    assert _modes(net) == before
    _equal(result, reference)


def test_eval_model_stays_in_eval_mode_without_a_warning(data):
    net = _model().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        brittle.logit_margins(net, data, device="cpu")
        brittle.audit(net, data, device="cpu", n_boot=20)
    assert not any(_modes(net))


def test_mode_is_restored_when_the_call_fails(data):
    net = _training(_model())
    before = _modes(net)
    bad = validate(data.x, torch.full_like(data.y, 12))  # labels beyond the model's 10 classes
    with pytest.warns(UserWarning, match="train mode"), pytest.raises(InputError, match="labels go up to 12"):
        brittle.audit(net, bad, device="cpu")
    assert _modes(net) == before
    with pytest.warns(UserWarning, match="train mode"), pytest.raises(InputError, match="labels go up to 12"):
        brittle.compute_margins(net, bad, device="cpu")
    assert _modes(net) == before


def test_evaluation_mode_context_manager():
    net = _training(_model())
    before = _modes(net)
    with pytest.warns(UserWarning, match="train mode") as caught, evaluation_mode(net) as same:
        assert same is net and not any(_modes(net))
    assert caught[0].filename == __file__  # the warning names the caller's line, not brittle's
    assert _modes(net) == before
    with pytest.warns(UserWarning, match="train mode"), pytest.raises(RuntimeError), evaluation_mode(net):
        raise RuntimeError
    assert _modes(net) == before
    with evaluation_mode("not a module") as other:
        assert other == "not a module"
