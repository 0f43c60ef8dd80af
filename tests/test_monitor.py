"""Deployment monitor: calibrated recall, measured rates on held-out data, one forward pass, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from brittle.errors import InputError, ModelError
from brittle.monitoring.monitor import Monitor
from brittle.scores.pseudo_margin import PseudoMargin
from brittle.models.features import extract_features


def _linear_model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight.mul_(3)
    return model.eval()


def _exact_l2_margins(model, x):
    """Exact L2 distance to the nearest decision boundary of a linear classifier (box ignored)."""
    W, b = model[0].weight.detach(), model[0].bias.detach()
    z = x @ W.T + b
    pred = z.argmax(1)
    dist = torch.full((len(x),), float("inf"))
    for j in range(W.shape[0]):
        gap = (z[torch.arange(len(x)), pred] - z[:, j]) / (W[pred] - W[j]).norm(dim=1).clamp_min(1e-12)
        dist = torch.where(pred == j, dist, torch.minimum(dist, gap))
    return dist.numpy().astype(np.float64)


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 4, generator=g)


def test_calibrated_recall_and_held_out_rates():
    model = _linear_model()
    xc, xt = _data(1500, 1), _data(1500, 2)
    dc, dt = _exact_l2_margins(model, xc), _exact_l2_margins(model, xt)
    eps = float(np.quantile(dc, 0.2))
    mon = Monitor.calibrate(model, xc, dc, eps, target_recall=0.95, norm="l2")
    assert mon.calibration["recall"] >= 0.95
    assert mon.calibration["n_nonrobust"] == int((dc <= eps).sum())
    rep = mon.evaluate(xt, dt)
    assert rep.recall >= 0.85 and 0.0 <= rep.false_alarm_rate < 0.5
    assert rep.n == 1500 and rep.n_nonrobust == int((dt <= eps).sum())
    out = mon(xt)
    flags = out.flag.numpy()
    assert flags.mean() == pytest.approx(rep.flag_rate)
    assert torch.equal(out.pred, model(xt).argmax(1))
    # recall 1 flags every non-robust calibration input
    full = Monitor.calibrate(model, xc, dc, eps, target_recall=1.0)
    assert full.calibration["recall"] == 1.0 and full.threshold >= mon.threshold


def test_one_forward_pass_per_call():
    model = _linear_model()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    x = _data(200, 3)
    mon = Monitor.calibrate(model, x, _exact_l2_margins(model, x), 0.05)
    calls.clear()
    out = mon(x[:10])
    assert len(calls) == 1 and out.score.shape == (10,) and out.flag.dtype == torch.bool


def test_pseudo_margin_monitor_uses_a_hook_in_the_same_pass(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = _data(600, 4)
    d = np.abs(x[:, 0].numpy() - 0.5) + 0.01  # synthetic margins: only the mechanics matter here
    feats = extract_features(model, x, layer="1", device="cpu")
    pm = PseudoMargin("regression", inputs="both", hidden=(16,), epochs=20).fit(feats.subset(slice(0, 300)), d[:300])
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    mon = Monitor.calibrate(model, x[300:], d[300:], 0.1, score=pm)
    assert mon.calibration["recall"] >= 0.95
    calls.clear()
    out = mon(x[300:])
    assert len(calls) == 1
    expected = pm.predict(feats.subset(slice(300, None)))
    assert np.allclose(out.score.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert np.array_equal(out.flag.numpy(), expected <= mon.threshold)
    assert not model[1]._forward_hooks  # the monitor's hook is removed after each pass
    path = tmp_path / "monitor.json"
    mon.save(path)
    again = Monitor.load(path, model)
    assert again.score_kind == "pseudo_margin" and again.threshold == mon.threshold
    assert torch.equal(again(x[300:]).flag, out.flag)


def test_save_load_round_trip_and_fingerprint_refusal(tmp_path):
    model = _linear_model()
    x = _data(300, 5)
    mon = Monitor.calibrate(model, x, _exact_l2_margins(model, x), 0.05, target_recall=0.9, norm="L2")
    path = tmp_path / "m.json"
    mon.save(path)
    blob = json.loads(path.read_text())
    assert blob["score"] == "logit" and blob["norm"] == "l2" and blob["eps"] == 0.05 and blob["target_recall"] == 0.9
    again = Monitor.load(path, model)
    assert (again.threshold, again.eps, again.norm) == (mon.threshold, mon.eps, mon.norm)
    assert torch.equal(again(x).flag, mon(x).flag)
    other = _linear_model(seed=1)
    with pytest.raises(ModelError, match="fingerprint"):
        Monitor.load(path, other)
    # a monitor saved by brittle 0.3.0 carries the fingerprint of the weights alone: it still loads
    from brittle.models.loading import weights_fingerprint

    old = tmp_path / "old.json"
    old.write_text(json.dumps({**blob, "model_fingerprint": weights_fingerprint(model)}))
    assert Monitor.load(old, model).threshold == mon.threshold
    with pytest.raises(ModelError, match="fingerprint"):
        Monitor.load(old, other)
    (tmp_path / "junk.json").write_text("[]")
    with pytest.raises(InputError, match="not a brittle monitor"):
        Monitor.load(tmp_path / "junk.json", model)


def test_pseudo_margin_fitted_on_raw_arrays_is_refused():
    model = _linear_model()
    pm = PseudoMargin(hidden=(), epochs=1).fit(np.random.default_rng(0).normal(size=(20, 3)), np.arange(1.0, 21.0))
    with pytest.raises(InputError, match="raw array"):
        Monitor(model, pm, threshold=0.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(target_recall=0.0), "target_recall"), (dict(target_recall=1.2), "target_recall"),
    (dict(eps=0.0), "eps"), (dict(eps=-0.1), "eps"),
    (dict(margins=np.ones(7)), "samples"), (dict(margins=np.full(10, np.nan)), "NaN"),
    (dict(margins=-np.ones(10)), "negative"), (dict(eps=1e-9), "no calibration input"),
    (dict(norm="l7"), "norm"), (dict(score="entropy"), "score"),
])
def test_bad_input(kwargs, match):
    model = _linear_model()
    x = _data(10, 6)
    args = dict(margins=np.linspace(0.01, 0.5, 10), eps=0.2, target_recall=0.95, norm="linf", score="logit")
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        Monitor.calibrate(model, x, args["margins"], args["eps"], target_recall=args["target_recall"],
                          norm=args["norm"], score=args["score"])


def test_calibrate_tpr_accepts_the_target_share_of_id_inputs_for_any_orientation():
    from brittle.scores.base import Scorer

    class TopLogit(Scorer):  # a detector (flags high): minus the top logit, closed form below
        name = "test_top_logit"
        flag_below = False

        def score_tensor(self, logits, outputs):
            return -logits.max(1).values.double()

    model = _linear_model()
    x = _data(400, 3)
    z = model(x).detach()
    for scorer, expected_score in (("logit", (z.topk(2, 1).values[:, 0] - z.topk(2, 1).values[:, 1]).numpy()),
                                   (TopLogit(), (-z.max(1).values).numpy())):
        mon = Monitor.calibrate_tpr(model, x, scorer, target_tpr=0.9)
        out = mon(x)
        assert np.allclose(out.score.numpy(), expected_score, atol=1e-5)
        accepted = ~out.flag.numpy()
        # exactly ceil(0.9 * 400) = 360 accepted (scores are distinct), and they are the 360 least risky
        assert accepted.sum() == 360
        risk = -expected_score if scorer == "logit" else expected_score
        assert risk[accepted].max() < risk[~accepted].min()
        assert mon.calibration["accept_rate"] == pytest.approx(0.9)


def test_monitor_refuses_unfitted_or_foreign_scorers():
    model = _linear_model()
    with pytest.raises(InputError, match="score must be"):
        Monitor(model, object(), threshold=0.0)
    with pytest.raises(InputError, match="not fitted"):
        Monitor(model, PseudoMargin(), threshold=0.0)
