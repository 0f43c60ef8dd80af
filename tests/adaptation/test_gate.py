"""The layer-wise gate (LEAST / GALA): its definition, checked step by step on a tiny BatchNorm network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brittle.adaptation import LayerGate, PseudoLabel, ShotIM, Tent
from brittle.adaptation.gate import make_gate
from brittle.errors import BrittleError


def tiny_net() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(),
                        nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for m in net:
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def stream(n: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(seed)) * 1.5 + 0.3


def flat_layers(adapter) -> list[torch.Tensor]:
    return [torch.cat([p.detach().reshape(-1) for p in ps]).clone() for ps in adapter.layers_]


def opt_state(adapter) -> list[dict]:
    return [{k: v.clone() for k, v in adapter.optimizer_.state.get(p, {}).items()}
            for ps in adapter.layers_ for p in ps]


@pytest.mark.parametrize("cls", [Tent, PseudoLabel, ShotIM])
def test_cos_is_one_on_the_first_step_of_every_window(cls):
    a = cls(gate="least", window=3, lr=1e-2).fit(tiny_net())
    x = stream(10)
    for i in range(10):
        a.step(x[i:i + 1])
        cos = a.gate_.last_cos_
        if i % 3 == 0:  # batch of one, window of 3 samples: steps 0, 3, 6, 9 open a window
            assert np.all(cos == 1.0), (i, cos)
        else:
            assert np.all(cos < 1.0), (i, cos)


def test_anchor_resets_every_window_samples():
    a = Tent(gate="least", window=4, lr=1e-2).fit(tiny_net())
    x = stream(13)
    for i in range(13):
        before = flat_layers(a)
        a.step(x[i:i + 1])
        assert a.gate_.resets_ == i // 4 + 1
        if i % 4 == 0:  # the anchor is a copy of the parameters at the start of the window ...
            anchor = [t.clone() for t in a.gate_.anchor_]
            assert all(torch.equal(p, q) for p, q in zip(anchor, before))
        else:  # ... and stays put (not an alias of the moving parameters) until the window is over
            assert all(torch.equal(p, q) for p, q in zip(a.gate_.anchor_, anchor))
            assert not all(torch.equal(p, q) for p, q in zip(a.gate_.anchor_, flat_layers(a)))


def test_window_in_samples_with_batches_and_in_steps():
    a = Tent(gate="least", window=5, lr=1e-2).fit(tiny_net())
    x = stream(24)
    resets = []
    for i in range(0, 24, 2):  # batches of 2: resets before the steps at samples 0, 6, 12, 18
        a.step(x[i:i + 2])
        resets.append(a.gate_.resets_)
    assert resets == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    g = Tent(gate=LayerGate(window=2, window_unit="steps"), lr=1e-2).fit(tiny_net())
    for i in range(0, 24, 4):
        g.step(x[i:i + 4])
    assert g.gate_.resets_ == 3


def test_single_layer_mode_changes_only_the_argmax_layer():
    a = Tent(gate="least-single", threshold=0.0, window=6, lr=5e-2).fit(tiny_net())
    x = stream(24)
    applied = 0
    for i in range(0, 24, 2):
        before, opt_before = flat_layers(a), opt_state(a)
        out = a.step(x[i:i + 2])
        after = flat_layers(a)
        cos = a.gate_.last_cos_
        best = int(np.argmax(cos))
        changed = [not torch.equal(b, c) for b, c in zip(before, after)]
        for layer, ch in enumerate(changed):
            if layer != best:  # every other layer is bit-identical, optimiser state included
                assert not ch
                for p_idx, p in enumerate(a.layers_[layer]):
                    k = sum(len(ps) for ps in a.layers_[:layer]) + p_idx
                    now = a.optimizer_.state.get(p, {})
                    assert set(now) == set(opt_before[k])
                    assert all(torch.equal(now[key], opt_before[k][key]) for key in now)
        assert changed[best] == (cos[best] > 0.0)
        assert list(out.updated) == changed
        applied += changed[best]
    assert applied >= 3
    assert a.updates_.sum() == applied


def test_no_update_when_every_layer_is_below_threshold():
    net = tiny_net()
    for mode in ("least", "least-single"):
        a = Tent(gate=mode, threshold=1.0, lr=1e-2).fit(net)  # cos <= 1 never exceeds λ = 1
        start = flat_layers(a)
        x = stream(12)
        for i in range(0, 12, 3):
            out = a.step(x[i:i + 3])
            assert not out.updated.any()
        assert all(torch.equal(p, q) for p, q in zip(start, flat_layers(a)))
        assert all(not a.optimizer_.state.get(p) for ps in a.layers_ for p in ps)
        assert a.updates_.sum() == 0
    g = LayerGate(threshold=0.3, mode="single")
    g.start([[nn.Parameter(torch.zeros(1))]] * 3)
    assert not g.decide(np.array([0.1, 0.3, -0.5])).any()
    g = LayerGate(threshold=0.3, mode="threshold").start([[nn.Parameter(torch.zeros(1))]] * 3)
    assert list(g.decide(np.array([0.1, 0.31, -0.5]))) == [False, True, False]


def test_update_against_the_window_direction_is_rejected():
    """A hand-made displacement: TD = −2u makes cos(u, u + TD) = −1, so the step is refused."""
    a = Tent(gate="least", threshold=0.0, window=100, lr=1e-2, optimizer="sgd", momentum=0.0).fit(tiny_net())
    x = stream(8)
    a.step(x[:4])  # opens the window (anchor = source)
    probe = Tent(gate=None, lr=1e-2, optimizer="sgd", momentum=0.0).fit(tiny_net())
    probe.load_state_arrays({k: v for k, v in a.state_arrays().items() if not k.startswith("gate/")})
    before = flat_layers(probe)
    probe.step(x[4:8])
    u = [q - p for p, q in zip(before, flat_layers(probe))]
    a.gate_.anchor_ = [p + 2 * d for p, d in zip(before, u)]  # TD = θ − anchor = −2u
    out = a.step(x[4:8])
    assert np.allclose(a.gate_.last_cos_, -1.0, atol=1e-6)
    assert not out.updated.any()
    assert all(torch.equal(p, q) for p, q in zip(before, flat_layers(a)))


@pytest.mark.parametrize("cls,opt", [(Tent, "adam"), (PseudoLabel, "sgd"), (ShotIM, "adam")])
def test_threshold_minus_one_equals_plain_tta(cls, opt):
    net = tiny_net()
    plain = cls(gate=None, lr=1e-2, optimizer=opt).fit(net)
    gated = cls(gate="least", threshold=-1.0, window=5, lr=1e-2, optimizer=opt).fit(net)
    x = stream(24)
    for i in range(0, 24, 3):
        o1, o2 = plain.step(x[i:i + 3]), gated.step(x[i:i + 3])
        assert torch.equal(o1.logits, o2.logits)
    for (k1, v1), (k2, v2) in zip(plain.model_.state_dict().items(), gated.model_.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1


def test_source_model_untouched_and_reset_and_episodic():
    net = tiny_net()
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    a = Tent(gate="least", lr=1e-1).fit(net)
    x = stream(12)
    for i in range(0, 12, 4):
        a.step(x[i:i + 4])
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in ref.items())
    assert not all(torch.equal(v, a.model_.state_dict()[k]) for k, v in ref.items())
    a.reset()
    assert all(torch.equal(v, a.model_.state_dict()[k]) for k, v in ref.items())
    assert a.n_samples_ == 0 and a.gate_.anchor_ is None
    e = Tent(episodic=True, lr=1e-1).fit(net)
    first = e.step(x[:4]).logits
    e.step(x[4:8])
    assert torch.equal(e.step(x[:4]).logits, first)  # every batch starts from the source


def test_gate_settings_are_checked():
    for bad in (dict(threshold=1.5), dict(window=0), dict(mode="all"), dict(window_unit="epochs"),
                dict(threshold="high")):
        with pytest.raises(BrittleError):
            LayerGate(**bad)
    with pytest.raises(BrittleError):
        make_gate("gala-ish")
    with pytest.raises(BrittleError):
        Tent(gate="least", window=-3).fit(tiny_net())
