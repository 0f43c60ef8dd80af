"""Learned pseudo-margins: feature extraction by hooks, both objectives, censoring, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

from brittle.errors import InputError
from brittle.scores.pseudo_margin import PseudoMargin, evaluate_pseudo_margin, logit_gaps
from brittle.models.features import Features, extract_features, layer_names
from brittle.models.zoo.architectures import mlp


def _scrambled(n=1500, seed=0):
    """Input margin = a smooth function of the features; the 'logit margin' depends on other directions."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    d = 0.1 * np.exp(X @ np.array([1.0, 0.5, -0.5, 0.0, 0.0, 0.3]) / 2)
    lm = np.abs(X[:, 3] + X[:, 4]) + 0.05 * rng.random(n)
    return X, d, lm


@pytest.mark.parametrize("loss", ["regression", "ranking"])
def test_pseudo_margin_restores_consistency(loss):
    X, d, lm = _scrambled()
    d[::37] = np.inf  # a few censored margins
    tr, te = slice(0, 1000), slice(1000, None)
    pm = PseudoMargin(loss, hidden=(32,), epochs=25, seed=0).fit(X[tr], d[tr])
    df = evaluate_pseudo_margin(pm, X[te], d[te], [0.05, 0.1], baseline=lm[te], n_boot=20)
    tau = df.groupby("score")["kendall_tau"].first()
    assert abs(tau["logit_margin"]) < 0.15
    assert tau["pseudo_margin"] > 0.75
    auroc = df.pivot(index="eps", columns="score", values="auroc")
    assert (auroc["pseudo_margin"] > auroc["logit_margin"] + 0.3).all()


def test_regression_predicts_margins_on_their_scale():
    X, d, _ = _scrambled(1200, seed=1)
    pm = PseudoMargin("regression", hidden=(32,), epochs=30).fit(X[:900], d[:900])
    pred = pm.predict(X[900:])
    assert stats.kendalltau(pred, d[900:]).statistic > 0.8
    assert np.median(np.abs(pred - d[900:]) / d[900:]) < 0.3  # estimates of the margin itself


def test_censored_drop_and_cap():
    X, d, _ = _scrambled(300)
    d[:100] = np.inf
    for censored in ("cap", "drop"):
        pm = PseudoMargin("regression", hidden=(), epochs=5, censored=censored).fit(X, d)
        assert np.isfinite(pm.predict(X)).all()
    with pytest.raises(InputError, match="finite input margin"):
        PseudoMargin(epochs=1).fit(X[:5], np.full(5, np.inf))


def test_save_load_round_trip_is_exact(tmp_path):
    X, d, _ = _scrambled(300)
    for loss in ("regression", "ranking"):
        pm = PseudoMargin(loss, hidden=(8, 4), epochs=3).fit(X, d)
        path = tmp_path / f"{loss}.json"
        pm.save(path)
        text = path.read_text()
        assert json.loads(text)["format"] == "brittle.pseudo_margin"
        again = PseudoMargin.load(path)
        assert np.array_equal(again.predict(X), pm.predict(X))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="JSON"):
        PseudoMargin.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="pseudo-margin"):
        PseudoMargin.load(tmp_path / "other.json")


def test_corrupt_descriptions_are_refused_by_shape(tmp_path):
    X, d, _ = _scrambled(200)
    pm = PseudoMargin(hidden=(8,), epochs=2).fit(X, d)
    base = pm.to_dict()
    assert np.array_equal(PseudoMargin.from_dict(json.loads(json.dumps(base))).predict(X), pm.predict(X))
    for key, value, match in (("x_mean", [0.0], "x_mean has shape"), ("x_std", [1.0] * 5 + [float("nan")], "x_std"),
                              ("t_std", 0.0, "t_std"), ("n_features", 6.0, "n_features"),
                              ("hidden", 8, "hidden must be"), ("source", "pickle", "source")):
        doc = json.loads(json.dumps(base))
        doc[key] = value
        with pytest.raises(InputError, match=f"pseudo-margin description is corrupt .*{match}"):
            PseudoMargin.from_dict(doc)
    for layer, key, value in ((0, "weight", [[0.0]]), (0, "bias", [0.0] * 9), (1, "weight", [[0.0] * 8, [0.0] * 8])):
        doc = json.loads(json.dumps(base))
        doc["linear_layers"][layer][key] = value
        with pytest.raises(InputError, match=f"corrupt .*linear layer {layer} {key} has shape"):
            PseudoMargin.from_dict(doc)


def test_the_saved_layers_are_checked_before_the_network_is_built(tmp_path, monkeypatch):
    """A 300-byte file with ``hidden: [16000, 16000]`` built a 1.3 GB network (memory grows with the square of
    the widths the file names) before the layer check refused the file."""
    import brittle.scores.pseudo_margin as module

    X, d, _ = _scrambled(200)
    doc = PseudoMargin(hidden=(8,), epochs=2).fit(X, d).to_dict()
    built = []
    real = module._mlp
    monkeypatch.setattr(module, "_mlp", lambda *a: built.append(a) or real(*a))
    for hidden, layers in (([100_000, 100_000], []), ([100_000], doc["linear_layers"])):
        bad = {**json.loads(json.dumps(doc)), "hidden": hidden, "linear_layers": layers}
        with pytest.raises(InputError, match="pseudo-margin description is corrupt"):
            PseudoMargin.from_dict(bad)
    assert built == []
    PseudoMargin.from_dict(json.loads(json.dumps(doc)))
    assert len(built) == 1  # a valid file still builds its network


def _net_and_data(n=64):
    torch.manual_seed(0)
    net = mlp(5, (7,), 3).eval()  # Flatten, Linear, ReLU, Linear
    x = torch.rand(n, 5)
    return net, x


def test_extract_features_hooks_the_named_layer():
    net, x = _net_and_data()
    feats = extract_features(net, x, layer="2", batch_size=20, device="cpu")
    with torch.no_grad():
        logits = net(x)
        hidden = torch.relu(net[1](x))
    assert np.allclose(feats.logits, logits.numpy(), atol=1e-6)
    assert feats.layer == "2" and feats.layer_output.shape == (64, 7)
    assert np.allclose(feats.layer_output, hidden.numpy(), atol=1e-6)
    assert extract_features(net, x, device="cpu").layer_output is None
    top2 = torch.topk(logits, 2).values
    assert np.allclose(feats.logit_margin, (top2[:, 0] - top2[:, 1]).numpy(), atol=1e-6)
    assert np.allclose(logit_gaps(feats.logits)[:, 0], feats.logit_margin)
    assert not net._forward_hooks and not net[2]._forward_hooks  # hooks removed


def test_unknown_layer_lists_available_names():
    net, x = _net_and_data()
    assert layer_names(net) == ["0", "1", "2", "3"]
    with pytest.raises(InputError, match=r"no layer 'fc'.*'0', '1', '2', '3'"):
        extract_features(net, x, layer="fc", device="cpu")


def test_fit_on_features_records_the_layer():
    net, x = _net_and_data(200)
    feats = extract_features(net, x, layer="2", device="cpu")
    d = np.abs(np.random.default_rng(0).normal(size=200)) + 0.01
    pm = PseudoMargin(inputs="both", hidden=(), epochs=2).fit(feats, d)
    assert pm.layer == "2" and pm.n_features == 2 + 7
    assert pm.predict(feats).shape == (200,)
    assert np.allclose(pm.predict(feats), pm.predict(Features(feats.logits, "2", feats.layer_output)))
    with pytest.raises(InputError, match="fitted on features"):
        pm.predict(np.zeros((3, 9)))
    with pytest.raises(InputError, match="layer"):
        PseudoMargin(inputs="layer", epochs=1).fit(extract_features(net, x, device="cpu"), d)
    logits_only = PseudoMargin(inputs="logits", hidden=(), epochs=1).fit(feats, d)
    assert logits_only.layer is None and logits_only.n_features == 2


@pytest.mark.parametrize("call, match", [
    (lambda: PseudoMargin("magic"), "loss"),
    (lambda: PseudoMargin(censored="keep"), "censored"),
    (lambda: PseudoMargin(epochs=0), "epochs"),
    (lambda: PseudoMargin(epochs=True), "epochs must be an integer"),
    (lambda: PseudoMargin(hidden=64), r"hidden must be a tuple of ints.*got 64"),
    (lambda: PseudoMargin(hidden="64"), "hidden must be a tuple of ints"),
    (lambda: PseudoMargin(hidden=(8.5,)), "hidden must be a tuple of ints"),
    (lambda: PseudoMargin(hidden=(0,)), "hidden widths must be >= 1"),
    (lambda: PseudoMargin(lr="0.01"), "lr must be a finite number > 0, got '0.01'"),
    (lambda: PseudoMargin(lr=float("nan")), "lr must be"),
    (lambda: PseudoMargin(weight_decay=None), "weight_decay must be a number, got None"),
    (lambda: PseudoMargin(weight_decay=-1.0), "weight_decay must be finite and >= 0"),
    (lambda: PseudoMargin(batch_size=2.5), "batch_size must be an integer"),
    (lambda: PseudoMargin(seed="0"), "seed must be an integer"),
    (lambda: PseudoMargin(epochs=1).fit(np.zeros((4, 2)), [1, 2, 3]), "samples"),
    (lambda: PseudoMargin(epochs=1).fit(np.zeros((3, 2)), [1, -2, 3]), "negative"),
    (lambda: PseudoMargin(epochs=1).fit(np.zeros((3, 2)), [1, np.nan, 3]), "NaN"),
    (lambda: PseudoMargin().predict(np.zeros((3, 2))), "not fitted"),
])
def test_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()
