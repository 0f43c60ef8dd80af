"""Deployment monitor: calibrated recall, measured rates on held-out data, one forward pass, JSON round trip."""

from __future__ import annotations

import json
import math

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


# --- serving: threads, modes, bad batches, corrupt files, the calibrated threshold ---------------

class _SlowNet(nn.Module):
    """A small MLP whose forward pauses between its layers, so concurrent calls overlap for certain."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2 = nn.Linear(4, 16), nn.Linear(16, 3)

    def forward(self, x):
        import time

        h = self.l1(x)
        time.sleep(0.002)
        return self.l2(torch.relu(h))


def test_threads_sharing_a_monitor_get_the_single_threaded_results():
    import threading

    model = _SlowNet().eval()
    x = _data(400, 11)
    d = np.abs(x[:, 0].numpy() - 0.5) + 0.01
    pm = PseudoMargin(inputs="both", hidden=(8,), epochs=3).fit(extract_features(model, x, "l1", device="cpu"), d)
    mon = Monitor(model, pm, threshold=0.1)
    batches = {3: [x[i:i + 3] for i in range(0, 90, 3)], 5: [x[200 + i:205 + i] for i in range(0, 150, 5)]}
    expected = {k: [mon(b) for b in v] for k, v in batches.items()}  # one thread
    wrong, errors = {3: 0, 5: 0}, []

    def serve(k):
        try:
            for b, ref in zip(batches[k], expected[k]):
                out = mon(b)
                same = all(torch.equal(getattr(out, f), getattr(ref, f)) for f in ("pred", "score", "flag", "logits"))
                wrong[k] += not same
        except Exception as exc:  # noqa: BLE001 - any failure counts
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=serve, args=(k,)) for k in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and wrong == {3: 0, 5: 0}
    assert not model.training and not model.l1._forward_hooks  # no hook left behind
    import copy
    import pickle

    again = pickle.loads(pickle.dumps(copy.deepcopy(mon)))  # the lock is not copied: every copy has its own
    assert again._lock is not mon._lock and torch.equal(again(batches[3][0]).score, expected[3][0].score)


def _bn_dropout_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    model.train()
    with torch.no_grad():
        for _ in range(3):  # some running statistics
            model(_data(64, 12))
    return model


def test_combined_monitor_runs_in_eval_mode_and_gives_the_model_back():
    from brittle.monitoring.combined import CombinedMonitor

    model = _bn_dropout_model()
    x = _data(200, 13)
    mon = Monitor(model, "logit", threshold=1.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    both = CombinedMonitor({"brittle": mon})
    with pytest.warns(UserWarning, match="train mode"):
        first, second, single = both(x[:50]), both(x[:50]), mon(x[:50])
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BatchNorm statistics untouched
    assert torch.equal(first.scores["brittle"], second.scores["brittle"])
    assert torch.equal(first.scores["brittle"], single.score) and torch.equal(first.flags["brittle"], single.flag)
    assert torch.equal(first.pred, single.pred)
    model.eval()
    assert torch.equal(first.logits, model(x[:50]).detach())  # eval-mode logits


def test_combined_monitor_adapts_a_dict_output_as_monitor_does():
    from brittle.monitoring.combined import CombinedMonitor

    class DictNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _linear_model()

        def forward(self, x):
            return {"logits": self.body(x)}

    model = DictNet().eval()
    x = _data(30, 14)
    mon = Monitor(model, "logit", threshold=0.5)
    with pytest.warns(UserWarning, match="element 'logits'"):
        single = mon(x)
    with pytest.warns(UserWarning, match="element 'logits'"):
        out = CombinedMonitor({"m": mon})(x)
    assert torch.equal(out.scores["m"], single.score) and torch.equal(out.logits, model.body(x).detach())


def test_bad_serving_batches_get_one_line_errors_and_an_empty_batch_an_empty_output():
    from brittle.monitoring.combined import CombinedMonitor

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = _data(200, 15)
    d = np.abs(x[:, 0].numpy() - 0.5) + 0.01
    pm = PseudoMargin(inputs="both", hidden=(8,), epochs=2).fit(extract_features(model, x, "1", device="cpu"), d)
    for mon in (Monitor(model, "logit", threshold=0.1), Monitor(model, pm, threshold=0.1)):
        for call in (mon, CombinedMonitor({"m": mon})):
            with pytest.raises(InputError, match=r"x has shape \(4,\): expected \(N, \.\.\.\).*Fix: add a batch dimension"):
                call(x[0])
            with pytest.raises(ModelError, match=r"the model failed on inputs of shape \(5, 7\).*Fix: check the input"):
                call(torch.rand(5, 7))
            out = call(x[:0])
            assert len(out.pred) == 0 and tuple(out.logits.shape) == (0, 3)
        empty = mon(x[:0])
        assert len(empty) == 0 and empty.score.dtype == torch.float64 and empty.flag.dtype == torch.bool
        assert not model[0]._forward_hooks


def test_corrupt_monitor_files_are_refused(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = _data(300, 16)
    d = np.abs(x[:, 0].numpy() - 0.5) + 0.01
    pm = PseudoMargin(hidden=(8,), epochs=3).fit(extract_features(model, x, device="cpu"), d)
    path = tmp_path / "monitor.json"
    Monitor.calibrate(model, x, d, 0.1, score=pm).save(path)
    base = json.loads(path.read_text())
    assert Monitor.load(path, model).threshold == base["threshold"]

    def corrupt(mutate):
        doc = json.loads(json.dumps(base))
        mutate(doc)
        path.write_text(json.dumps(doc))

    for mutate, match in (
            (lambda doc: doc["pseudo_margin"]["linear_layers"][0].update(weight=[[0.0]]), "corrupt.*weight"),
            (lambda doc: doc["pseudo_margin"]["linear_layers"][1].update(bias=[0.0, 1.0]), "corrupt.*bias"),
            (lambda doc: doc["pseudo_margin"].update(x_mean=doc["pseudo_margin"]["x_mean"][:1]), "corrupt.*x_mean"),
            (lambda doc: doc["pseudo_margin"].update(x_std=[0.0] * len(doc["pseudo_margin"]["x_std"])), "corrupt.*x_std"),
            (lambda doc: doc["pseudo_margin"].update(hidden=64), "corrupt.*hidden"),
            (lambda doc: doc.update(calibration=[1, 2]), "corrupt: 'calibration' is a list")):
        corrupt(mutate)
        with pytest.raises(InputError, match=match):
            Monitor.load(path, model)
    with pytest.raises(InputError, match="calibration must be a dict"):
        Monitor(model, "logit", threshold=0.1, calibration=[1, 2])


def _spread_linear(seed=0, d=20, c=4):
    """A linear model whose weight rows have very different norms (logit margin inconsistent with L2 margin)."""
    g = torch.Generator().manual_seed(seed)
    m = nn.Linear(d, c)
    with torch.no_grad():
        m.weight.copy_(torch.randn(c, d, generator=g) * torch.tensor([0.3, 1.0, 3.0, 10.0])[:c, None])
        m.bias.copy_(-(m.weight @ torch.full((d,), 0.5)))
    return nn.Sequential(m).eval()


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
def test_calibration_recall_holds_whatever_batches_the_inputs_are_served_in(target):
    model = _spread_linear()
    x = torch.rand(600, 20, generator=torch.Generator().manual_seed(100))
    d = _exact_l2_margins(model, x)
    xc, dc = x[:300], d[:300]
    eps = float(np.quantile(d, 0.3))
    mon = Monitor.calibrate(model, xc, dc, eps, target_recall=target, norm="l2")
    pos = dc <= eps
    batch = mon(xc).score.numpy()
    single = np.array([float(mon(xc[i:i + 1]).score[0]) for i in range(len(xc))])
    k = math.ceil(target * pos.sum())
    # strictly between the k-th non-robust score and the next calibration score, clear of both
    kth = np.sort(batch[pos])[k - 1]
    assert kth < mon.threshold and not ((batch > kth) & (batch <= mon.threshold)).any()
    assert np.abs(batch - mon.threshold).min() > 1e-5 * np.median(np.abs(batch))
    for scores in (batch, single, mon.scores(xc, batch_size=7)):
        assert (scores[pos] <= mon.threshold).mean() >= target
    assert mon.calibration["recall"] == (batch[pos] <= mon.threshold).mean() >= target


def test_raw_pixels_are_refused_not_scored():
    """uint8 or 0-255 float pixels were scored as they were: the logit-margin monitor then flagged 0% of them,
    while logit_margins refuses the same data."""
    from brittle.data.loading import load_mnist
    from brittle.errors import BrittleError
    from brittle.models import zoo

    model = zoo.load("standard")
    x = load_mnist().x[:8]
    for raw, match in (((x * 255).to(torch.uint8), r"uint8 pixels.*Fix: pass x.float\(\) / 255"),
                       (x * 255, r"trained on inputs in \[0, 1\] but the data reaches \[0, 255\]")):
        with pytest.raises(BrittleError, match=match):
            Monitor(model, "logit", threshold=1.0)(raw)
    monitor = Monitor(model, "logit", threshold=1.0)
    assert len(monitor(x).score) == 8 and len(monitor(x * 0.5).score) == 8  # in range: scored, checked once
