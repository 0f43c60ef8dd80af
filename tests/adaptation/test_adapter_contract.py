"""Contract over every registered adaptation method (`brittle.adaptation.METHODS`), with and without the
layer-wise gate: a new method in the registry is covered automatically. Besides the step itself: episodic
adaptation equals independent adapters per batch while the counters count the stream, inputs or labels the model
cannot take are one brittle error (`Adapter.step`, `adapt_stream`), unknown settings are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brittle.adaptation import METHODS, adapt_stream, make_adapter
from brittle.errors import BrittleError, InputError, ModelError


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


@pytest.mark.parametrize("method, gate", CASES)
def test_episodic_equals_a_fresh_adapter_per_batch_and_keeps_counting(method, gate):
    """``episodic=True``: each batch is adapted from the source (predictions and updates equal those of a fresh
    adapter on that batch alone), while ``n_samples_`` / ``n_steps_`` / ``updates_`` and the gate's counts add
    up over the whole stream."""
    model, x = _bn_net(), _stream()
    ep = make_adapter(method, gate=gate, lr=1e-2, episodic=True).fit(model)
    fresh = []
    for i in range(0, len(x), 16):
        out = ep.step(x[i:i + 16])
        alone = make_adapter(method, gate=gate, lr=1e-2).fit(model)
        ref = alone.step(x[i:i + 16])
        assert torch.equal(out.logits, ref.logits) and np.array_equal(out.updated, ref.updated)
        fresh.append(alone)
    assert (ep.n_samples_, ep.n_steps_) == (len(x), len(fresh))
    np.testing.assert_array_equal(ep.updates_, np.sum([a.updates_ for a in fresh], axis=0))
    if ep.gate_ is not None:
        np.testing.assert_array_equal(ep.gate_.accepted_, np.sum([a.gate_.accepted_ for a in fresh], axis=0))
        assert ep.gate_.resets_ == sum(a.gate_.resets_ for a in fresh)
    if METHODS[method].has_params:
        assert ep.updates_.sum() > 0  # the counts are not trivially zero
    # the counters survive a checkpoint round trip, and reset() clears them
    restored = make_adapter(method, gate=gate, lr=1e-2, episodic=True).fit(model).load_state_arrays(ep.state_arrays())
    assert (restored.n_samples_, restored.n_steps_) == (ep.n_samples_, ep.n_steps_)
    ep.reset()
    assert (ep.n_samples_, ep.n_steps_, int(ep.updates_.sum())) == (0, 0, 0)


@pytest.mark.parametrize("method", list(METHODS))
def test_inputs_and_labels_the_model_cannot_take_are_one_error(method):
    model = _bn_net()
    adapter = make_adapter(method).fit(model)
    with pytest.raises(ModelError, match=r"the model fails on inputs of shape \(3, 8, 8\) \(RuntimeError: .*\)\. "
                                         r"Fix: pass data the model was built for"):
        adapter.step(torch.rand(4, 3, 8, 8))
    assert adapter.n_steps_ == 0
    with pytest.raises(ModelError, match="the model fails on inputs of shape"):
        adapter.predict(torch.rand(4, 3, 8, 8))
    # adapt_stream runs the checks adapt_run runs (one place): labels beyond the model's classes, wrong channels
    x, y = _stream(32) / 2.5, torch.zeros(32, dtype=torch.long)  # in the default domain [0, 1]
    with pytest.raises(ModelError, match="labels go up to 7 but the model has 3 classes"):
        adapt_stream(make_adapter(method), (x, torch.full((32,), 7)), model=model, batch_size=16)
    with pytest.raises(ModelError, match=r"the model fails on the stream's inputs of shape \(3, 8, 8\)"):
        adapt_stream(make_adapter(method), (torch.rand(32, 3, 8, 8), y), model=model, batch_size=16)
    assert adapt_stream(make_adapter(method), (x, y), model=model, batch_size=16).summary["n"] == 32


@pytest.mark.parametrize("method", list(METHODS))
def test_unknown_setting_is_refused_by_name(method):
    with pytest.raises(InputError, match=rf"^{method} has no parameter 'no_such_setting'\. Fix: use one of .*lr"):
        make_adapter(method, no_such_setting=1)
