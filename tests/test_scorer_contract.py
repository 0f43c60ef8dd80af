"""Contract tests over every registered scorer (in the spirit of scikit-learn's ``parametrize_with_checks``).

Parametrised over `brittle.scores.base.SCORERS` after the built-ins are loaded, so every margin scorer, every
OOD detector and anything registered later (combinations, GROOD) is covered without editing this file.

How a scorer is built and fitted here, generically:

* ``cls.contract_example()`` when the class defines it (a hook for scorers whose constructor needs
  arguments), else ``cls()``;
* ``bind(model)`` when the scorer has it (resolves layers / the final linear layer), then
  ``prepare_fit(model, fit_data, target)`` when it has that (model-dependent fitting, e.g. GROOD's mix-up);
* fitted on the features of ID inputs with ``target`` = the labels for detectors (``flag_below = False``) and
  the logit margin (a stand-in for input margins) for margin scorers;
* scored with ``score(features)``, or ``score_model(model, data)`` when ``needs_model``.

Checks: shapes/dtype, orientation (``risk`` ranks uniform noise above ID digits: AUROC > 0.5 — detectors
score noise higher, margins score confident ID inputs higher), determinism, JSON round trip with identical
scores, unfitted → BrittleError, bad input (wrong type, NaN logits, missing layer) → BrittleError with a fix,
an unknown constructor argument → InputError naming it; for OOD detectors also: features unlike the fit ones
(another class count, another layer width, NaN in a layer) → InputError, and ``fit_model`` / ``score_model``
give a train-mode model back in train mode with its weights and statistics unchanged.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from brittle.errors import BrittleError, InputError
from brittle.models.features import Features, extract_features
from brittle.scores.base import SCORERS, _load_builtin, make_scorer, scorer_from_dict

_load_builtin()
NAMES = sorted(SCORERS)
DETECTORS = [n for n in NAMES if not SCORERS[n].flag_below]


@pytest.fixture(scope="module")
def world():
    from sklearn.metrics import roc_auc_score  # noqa: F401

    from brittle.data.loading import load_mnist
    from brittle.data.ood_sets import uniform_noise
    from brittle.models import zoo

    torch.manual_seed(0)
    model = zoo.load("standard")
    mnist = load_mnist()
    fit, test = mnist.subset(slice(0, 1000)), mnist.subset(slice(5000, 5150))
    noise = uniform_noise(150, seed=0)
    layers = [n for n, _ in model.named_modules() if n]
    cache = {name: extract_features(model, d, layers) for name, d in (("fit", fit), ("test", test), ("ood", noise))}
    return {"model": model, "fit": fit, "test": test, "ood": noise, "features": cache}


def make(name: str):
    cls = SCORERS[name]
    return cls.contract_example() if hasattr(cls, "contract_example") else cls()


def fitted(name: str, w):
    s = make(name)
    if hasattr(s, "bind"):
        s.bind(w["model"])
    feats = w["features"]["fit"]
    if s.requires_fit:
        target = w["fit"].y.numpy() if not s.flag_below else feats.logit_margin.astype(np.float64)
        if hasattr(s, "prepare_fit"):  # scorers that need the model on the fit data before fitting (GROOD)
            s.prepare_fit(w["model"], w["fit"], target)
        s.fit(feats.select(s.layers) if s.layers else Features(feats.logits), target)
    return s


def scores(s, w, which: str) -> np.ndarray:
    if s.needs_model:
        return s.score_model(w["model"], w[which])
    return s.score(w["features"][which])


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtype_and_orientation(name, world):
    from sklearn.metrics import roc_auc_score

    s = fitted(name, world)
    a, b = scores(s, world, "test"), scores(s, world, "ood")
    assert a.shape == (len(world["test"]),) and b.shape == (len(world["ood"]),)
    assert a.dtype == np.float64 and np.isfinite(a).all() and np.isfinite(b).all()
    risk = np.concatenate([s.risk(a), s.risk(b)])
    is_ood = np.r_[np.zeros(len(a)), np.ones(len(b))]
    assert roc_auc_score(is_ood, risk) > 0.5, f"{name}: noise is not ranked as riskier than ID digits"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name, world):
    s1, s2 = fitted(name, world), fitted(name, world)
    a = scores(s1, world, "test")
    np.testing.assert_array_equal(a, scores(s1, world, "test"))
    np.testing.assert_array_equal(a, scores(s2, world, "test"))


@pytest.mark.parametrize("name", NAMES)
def test_json_round_trip_gives_identical_scores(name, world):
    s = fitted(name, world)
    d = json.loads(json.dumps(s.to_dict()))
    s2 = scorer_from_dict(d)
    assert type(s2) is type(s)
    np.testing.assert_array_equal(scores(s, world, "ood"), scores(s2, world, "ood"))
    assert s2.layers == s.layers


@pytest.mark.parametrize("name", NAMES)
def test_unfitted_is_refused(name, world):
    s = make(name)
    if not s.requires_fit:
        pytest.skip(f"{name} needs no fitting")
    if hasattr(s, "bind"):
        s.bind(world["model"])
    with pytest.raises(BrittleError, match="Fix:"):
        scores(s, world, "test")


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_refused_with_a_fix(name, world):
    s = fitted(name, world)
    feats = world["features"]["test"]
    with pytest.raises(BrittleError, match="Fix:"):  # wrong type
        s.score(np.array(["not", "features"]))
    bad = feats.logits.copy()
    bad[0, 0] = np.nan
    with pytest.raises(BrittleError, match="Fix:"):  # NaN logits
        s.score(Features(bad, outputs={k: feats.output(k) for k in s.layers}))
    if s.layers:
        with pytest.raises(BrittleError, match="Fix:"):  # a layer the scorer reads is missing
            s.score(Features(feats.logits))
    if s.needs_model:
        with pytest.raises(BrittleError, match="Fix:"):
            s.score_model(world["model"], "no-such-dataset-name")


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_is_refused_by_name(name):
    with pytest.raises(InputError, match=rf"^{name} has no parameter 'no_such_param'\. Fix: "):
        make_scorer(name, no_such_param=1)
    with pytest.raises(InputError, match="Fix: "):  # a stored description with it: refused too
        scorer_from_dict({"scorer": name, "params": {"no_such_param": 1}, "state": {}})


@pytest.mark.parametrize("name", DETECTORS)
def test_features_unlike_the_fit_ones_are_refused(name, world):
    """Another class count or another width of a layer than at fit time, or NaN in a layer the detector reads:
    one InputError from the shared check (also after a JSON round trip), never a raw error or a number."""
    s = fitted(name, world)
    if s.needs_model:
        pytest.skip(f"{name} scores through the model")
    feats = world["features"]["test"]
    outputs = {k: feats.output(k) for k in s.layers}
    loaded = scorer_from_dict(json.loads(json.dumps(s.to_dict())))
    for det in ([s, loaded] if s.requires_fit else []):
        with pytest.raises(InputError, match=r"the logits have 5 classes, \w+ was fitted on 10\. Fix: "):
            det.score(Features(feats.logits[:, :5], outputs=outputs))
        for layer in s.layers:
            width = outputs[layer].shape[1]
            narrow = {k: (v[:, : width // 2] if k == layer else v) for k, v in outputs.items()}
            with pytest.raises(InputError, match=rf"layer '{layer}' has {width // 2} features, \w+ was fitted on "
                                                 rf"{width}\. Fix: "):
                det.score(Features(feats.logits, outputs=narrow))
    for layer in s.layers:
        bad = {k: v.copy() for k, v in outputs.items()}
        bad[layer][3, 0] = np.nan
        with pytest.raises(InputError, match=rf"the output of layer '{layer}' contains NaN or infinite values"):
            s.score(Features(feats.logits, outputs=bad))


#: every detector as registered, plus the variants that score through the model
MODEL_CASES = [(n, {}) for n in DETECTORS] + [("mahalanobis", {"noise": 0.01}),
                                               ("combined", {"detectors": ["odin", "mahalanobis"]})]


@pytest.mark.parametrize(("name", "params"), MODEL_CASES, ids=[f"{n}{p or ''}" for n, p in MODEL_CASES])
def test_fit_and_score_leave_the_model_as_it_was(name, params, world):
    """A model in train mode (with BatchNorm, whose statistics a train-mode forward would move) comes back from
    ``fit_model`` and ``score_model`` in train mode, with every parameter and buffer unchanged."""
    import warnings

    from brittle.models import zoo

    model = zoo.load("standard_bn").train()
    model[4].eval()  # a frozen layer inside a training model must come back frozen
    modes = [m.training for m in model.modules()]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    s = make_scorer(name, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # brittle warns that it evaluates a train-mode model in eval mode
        if s.requires_fit:
            s.fit_model(model, world["fit"].subset(slice(0, 300)))
        elif hasattr(s, "bind"):
            s.bind(model)
        assert [m.training for m in model.modules()] == modes, f"{name}: fit_model changed the model's mode"
        out = s.score_model(model, world["test"].subset(slice(0, 40)))
    assert out.shape == (40,) and np.isfinite(out).all()
    assert [m.training for m in model.modules()] == modes, f"{name}: score_model changed the model's mode"
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"{name} changed {k}"
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(p.grad is None for p in model.parameters())
