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
scores, unfitted → BrittleError, bad input (wrong type, NaN logits, missing layer) → BrittleError with a fix.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from brittle.errors import BrittleError
from brittle.models.features import Features, extract_features
from brittle.scores.base import SCORERS, _load_builtin, scorer_from_dict

_load_builtin()
NAMES = sorted(SCORERS)


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
