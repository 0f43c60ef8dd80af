"""Contract over every registered adaptation method (`brittle.adaptation.METHODS`), with and without the
layer-wise gate: a new method in the registry is covered automatically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brittle.adaptation import METHODS, make_adapter
from brittle.errors import BrittleError


def _bn_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).eval()


def _stream(n=48, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5  # shifted inputs


CASES = [(m, g) for m in METHODS for g in (None, "least", "least-single")
         if g is None or METHODS[m].has_params]


def _run(method, gate, model, x):
    adapter = make_adapter(method, gate=gate, lr=1e-2).fit(model)
    outs = [adapter.step(x[i:i + 16]) for i in range(0, len(x), 16)]
    return adapter, outs


@pytest.mark.parametrize("method, gate", CASES)
def test_adapter_contract(method, gate):
    model, x = _bn_net(), _stream()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter, outs = _run(method, gate, model, x)
    # the user's model is never touched: the adapter works on a copy
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for out in outs:
        assert out.logits.shape == (16, 3) and torch.isfinite(out.logits).all()
        assert out.updated.dtype == bool and out.updated.shape == out.cos.shape
    if not METHODS[method].has_params:
        assert not any(o.updated.any() for o in outs)
    # deterministic: the same stream gives the same adapted state
    again, _ = _run(method, gate, model, x)
    a, b = adapter.adapted_state_dict(), again.adapted_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # reset goes back to the source model exactly
    adapter.reset()
    assert all(torch.equal(adapter.adapted_state_dict()[k], before[k].cpu()) for k in before)
    # a checkpoint round trip continues exactly where the adapter was
    adapter2, _ = _run(method, gate, model, x)
    saved = adapter2.state_arrays()
    restored = make_adapter(method, gate=gate, lr=1e-2).fit(model).load_state_arrays(saved)
    nxt = _stream(16, seed=9)
    assert torch.allclose(adapter2.step(nxt).logits, restored.step(nxt).logits, atol=0, rtol=0)


@pytest.mark.parametrize("method", list(METHODS))
def test_adapter_bad_settings_are_brittle_errors(method):
    if METHODS[method].has_params:  # methods without parameters have no learning rate or gate to check
        with pytest.raises(BrittleError):
            make_adapter(method, lr=-1.0).fit(_bn_net())
        with pytest.raises(BrittleError):
            make_adapter(method, gate="sometimes").fit(_bn_net())
    with pytest.raises(BrittleError):
        make_adapter(method).fit("not a model")
    with pytest.raises(BrittleError, match="not fitted"):
        make_adapter(method).step(_stream(4))


def test_unknown_method_names_the_choices():
    with pytest.raises(BrittleError, match="tent"):
        make_adapter("magic")
