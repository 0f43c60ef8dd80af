"""TENT / PL / SHOT-IM / BN statistics: the step against a hand computation, BatchNorm policies, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brittle.adaptation import BNStats, PseudoLabel, ShotIM, Source, Tent, make_adapter
from brittle.errors import BrittleError, ModelError

X = np.array([[0.3, -1.2], [1.5, 0.4], [-0.7, 0.9], [0.2, 2.0]])
GAMMA, BETA = np.array([1.3, 0.6]), np.array([0.1, -0.4])


def bn_net() -> nn.Module:
    """logits = BatchNorm1d(x): two classes, the affine parameters are all there is to adapt."""
    net = nn.Sequential(nn.BatchNorm1d(2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(GAMMA))
        net[0].bias.copy_(torch.tensor(BETA))
    return net.eval()


def tent_grad() -> tuple[np.ndarray, np.ndarray]:
    """dL/dγ, dL/dβ of L = mean_i H(softmax(γ x̂_i + β)), x̂ normalised by the batch's mean and biased variance."""
    xhat = (X - X.mean(0)) / np.sqrt(X.var(0) + 1e-5)
    z = GAMMA * xhat + BETA
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    h = -(p * np.log(p)).sum(1, keepdims=True)
    dz = -p * (np.log(p) + h) / len(X)  # dH/dz_k = −p_k (log p_k + H)
    return (dz * xhat).sum(0), dz.sum(0)


def test_tent_sgd_step_matches_hand_computation():
    a = Tent(optimizer="sgd", momentum=0.0, lr=0.5, bn_stats="batch").fit(bn_net())
    a.step(torch.tensor(X, dtype=torch.float32))
    g_gamma, g_beta = tent_grad()
    bn = a.model_[0]
    np.testing.assert_allclose(bn.weight.detach().numpy(), GAMMA - 0.5 * g_gamma, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.bias.detach().numpy(), BETA - 0.5 * g_beta, rtol=1e-5, atol=1e-6)


def test_tent_adam_first_step_matches_hand_computation():
    a = Tent(lr=1e-2, bn_stats="batch").fit(bn_net())
    out = a.step(torch.tensor(X, dtype=torch.float32))
    g_gamma, g_beta = tent_grad()
    bn = a.model_[0]
    # Adam's first step (bias-corrected moments m̂ = g, v̂ = g²): −lr g / (|g| + 1e-8)
    np.testing.assert_allclose(bn.weight.detach().numpy(), GAMMA - 1e-2 * g_gamma / (np.abs(g_gamma) + 1e-8), rtol=1e-5)
    np.testing.assert_allclose(bn.bias.detach().numpy(), BETA - 1e-2 * g_beta / (np.abs(g_beta) + 1e-8), rtol=1e-5)
    # the predictions returned are those made before the update
    xhat = (X - X.mean(0)) / np.sqrt(X.var(0) + 1e-5)
    np.testing.assert_allclose(out.logits.numpy(), GAMMA * xhat + BETA, rtol=1e-5, atol=1e-6)


def test_pl_and_shot_losses():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.4, 0.0]])
    pl = PseudoLabel(confidence=0.0)
    assert torch.isclose(pl.loss(logits), nn.functional.cross_entropy(logits, torch.tensor([0, 0])))
    assert float(PseudoLabel(confidence=0.99).loss(logits)) == 0.0
    shot = ShotIM(marginal="batch")
    shot._reset_method_state()
    p = torch.softmax(logits, 1)
    ent = -(p * p.log()).sum(1).mean()
    pbar = p.mean(0)
    assert torch.isclose(shot.loss(logits), ent + (pbar * pbar.log()).sum())
    # batch of one: with the batch marginal the loss is 0; the EMA marginal keeps a diversity term
    one = logits[:1]
    assert abs(float(shot.loss(one))) < 1e-6
    ema = ShotIM(marginal="ema")
    ema._reset_method_state()
    ema.loss(logits[1:])
    assert abs(float(ema.loss(one))) > 1e-3


def test_bn_policies_and_batch_of_one():
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 5),
                        nn.BatchNorm1d(5), nn.Linear(5, 3)).eval()
    x = torch.rand(4, 1, 6, 6)
    with torch.no_grad():
        ref = net(x)
    assert torch.equal(Source().fit(net).step(x).logits, ref)
    with pytest.raises(BrittleError):  # batch statistics of one sample are refused ...
        Tent(bn_stats="batch").fit(net).step(x[:1])
    for adapter in (Tent(), ShotIM(), PseudoLabel(), BNStats()):  # ... the default policy takes the EMA instead
        a = adapter.fit(net)
        for i in range(4):
            out = a.step(x[i:i + 1])
            assert torch.isfinite(out.logits).all()
    b = BNStats(bn_stats="batch").fit(net)
    with torch.no_grad():
        net.train()
        want = net(x)
        net.eval()
    assert torch.allclose(b.step(x).logits, want, atol=1e-5)  # batch statistics = train-mode BatchNorm
    # predictions for forgetting change nothing
    before = {k: v.clone() for k, v in b.model_.state_dict().items()}
    b.predict(torch.rand(8, 1, 6, 6))
    assert all(torch.equal(v, b.model_.state_dict()[k]) for k, v in before.items())


def _img_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 5),
                         nn.BatchNorm1d(5), nn.Linear(5, 3)).eval()


def test_batch_statistics_with_a_batch_of_one_are_refused_before_any_step(tmp_path):
    """bn_stats='batch' cannot normalise one sample: a stream whose batch size is 1 or whose last batch has one
    sample is refused up front by adapt_stream and adapt_run (nothing written), not at the step that meets it."""
    import re

    from brittle.adaptation import adapt_run, adapt_stream
    from brittle.errors import InputError

    net = _img_bn_net()
    x, y = torch.rand(33, 1, 6, 6), torch.zeros(33, dtype=torch.long)
    for bs, why in ((16, "the stream's last batch has 1 sample (33 samples in batches of 16)"),
                    (1, "every batch has 1 sample (batch size 1)")):
        want = re.escape(f"bn_stats='batch' needs batches of at least 2 samples, but {why}. Fix: use bn_stats='ema'")
        with pytest.raises(InputError, match=want):
            adapt_stream(Tent(bn_stats="batch"), (x, y), model=net, batch_size=bs)
        with pytest.raises(InputError, match=want):
            adapt_run(Tent(bn_stats="batch"), net, (x, y), tmp_path / "run", batch_size=bs)
        assert not (tmp_path / "run").exists()
    for policy in ("auto", "ema"):  # these take the EMA for a batch of one: the stream runs to its end
        assert adapt_stream(Tent(bn_stats=policy), (x, y), model=net, batch_size=16).summary["steps"] == 3
    assert adapt_stream(Tent(bn_stats="batch"), (x[:32], y[:32]), model=net, batch_size=16).summary["steps"] == 2


def test_clean_hold_out_with_a_last_batch_of_one_is_evaluated():
    """The forgetting measurement with batch statistics ('batch', or 'auto' after batches of >= 16): a clean set of
    129 images ends in a batch of one, which is merged into the batch before (it crashed at the end of the pass)."""
    from brittle.adaptation import adapt_stream
    from brittle.adaptation.stream import clean_accuracy
    from brittle.data.loading import as_data
    from brittle.errors import InputError

    net = _img_bn_net()
    x, y = torch.rand(32, 1, 6, 6), torch.zeros(32, dtype=torch.long)
    clean = as_data((torch.rand(129, 1, 6, 6), torch.randint(0, 3, (129,))))
    for policy in ("auto", "batch"):
        r = adapt_stream(Tent(bn_stats=policy), (x, y), model=net, batch_size=16, clean=clean)
        whole = float((r.adapter.predict(clean.x, 129).argmax(1) == clean.y).float().mean())  # one batch of 129
        assert clean_accuracy(r.adapter, clean) == pytest.approx(whole)
        assert r.summary["clean_accuracy"]["after_pass"] == [round(whole, 5)]
    with pytest.raises(InputError, match="the clean hold-out has 1 sample"):
        adapt_stream(Tent(bn_stats="batch"), (x, y), model=net, batch_size=16, clean=clean.subset(slice(0, 1)))


def test_checkpoint_round_trip_continues_identically():
    net = bn_net()
    x = torch.randn(40, 2)
    a = ShotIM(gate="least", lr=1e-2, window=7).fit(net)
    for i in range(0, 20, 4):
        a.step(x[i:i + 4])
    saved = a.state_arrays()
    b = ShotIM(gate="least", lr=1e-2, window=7).fit(net).load_state_arrays(saved)
    for i in range(20, 40, 4):
        assert torch.equal(a.step(x[i:i + 4]).logits, b.step(x[i:i + 4]).logits)
    assert all(torch.equal(v, b.model_.state_dict()[k]) for k, v in a.model_.state_dict().items())


def test_bad_settings_and_models():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ModelError):
        Tent().fit(plain)  # no BatchNorm to adapt
    Tent(params="all").fit(plain)
    with pytest.raises(ModelError):
        BNStats().fit(plain)
    with pytest.raises(BrittleError):
        BNStats(gate="least").fit(bn_net())
    for bad in (dict(lr=0), dict(lr=float("nan")), dict(optimizer="rmsprop"), dict(params="some"), dict(steps=0),
                dict(bn_stats="running"), dict(bn_momentum=0.0), dict(gate="most")):
        with pytest.raises(BrittleError):
            Tent(**bad).fit(bn_net())
    with pytest.raises(BrittleError):
        make_adapter("cotta")
    with pytest.raises(BrittleError):
        Tent().step(torch.zeros(2, 2))  # not fitted
    a = Tent().fit(bn_net())
    for bad in (np.zeros((2, 2)), torch.zeros(2), torch.tensor([[float("nan"), 0.0]]), torch.zeros(2, 2, dtype=torch.long)):
        with pytest.raises(BrittleError):
            a.step(bad)
    with pytest.raises(BrittleError):
        Tent().fit("standard_bn")
