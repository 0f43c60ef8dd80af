"""GROOD: the closed-form NCP gradient against autograd, the scorer contract, the early-layer mix-up."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from brittle.errors import BrittleError, InputError
from brittle.models.features import Features
from brittle.ood.grood import GROOD, ncp_gradient, ncp_logits
from brittle.scores.base import scorer_from_dict


@pytest.mark.parametrize("temperature", [1.0, 0.3, 5.0])
def test_closed_form_gradient_equals_autograd(temperature):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(32, 7, generator=g, dtype=torch.float64) * 2
    protos = torch.randn(4, 7, generator=g, dtype=torch.float64)
    p_ood = torch.randn(7, generator=g, dtype=torch.float64)
    closed = ncp_gradient(h, protos, p_ood, temperature)
    for i in range(len(h)):
        p = p_ood.clone().requires_grad_(True)
        z = ncp_logits(h[i:i + 1], torch.cat([protos, p[None]]), temperature)
        y = int(torch.argmin(torch.cdist(h[i:i + 1], protos)))              # nearest ID prototype
        loss = torch.nn.functional.cross_entropy(z, torch.tensor([y]))
        (grad,) = torch.autograd.grad(loss, p, retain_graph=True)
        torch.testing.assert_close(closed[i], grad, rtol=1e-10, atol=1e-12)
        # any ID label gives the same gradient w.r.t. the OOD prototype
        loss2 = torch.nn.functional.cross_entropy(z, torch.tensor([(y + 1) % 4]))
        torch.testing.assert_close(torch.autograd.grad(loss2, p)[0], grad, rtol=1e-10, atol=1e-12)


def _gaussian_features(n=300, d=6, c=3, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    centres = np.eye(c, d) * 6
    y = rng.integers(0, c, n)
    h = centres[y] + rng.normal(size=(n, d)) + shift
    logits = h[:, :c] * 2
    return Features(logits.astype(np.float32), outputs={"pen": h.astype(np.float32)}), y


def test_scorer_contract_and_orientation():
    f_fit, y = _gaussian_features()
    f_id, _ = _gaussian_features(seed=1)
    rng = np.random.default_rng(2)
    h_ood = rng.normal(size=(300, 6)) * 3 + 3
    f_ood = Features((h_ood[:, :3] * 2).astype(np.float32), outputs={"pen": h_ood.astype(np.float32)})
    det = GROOD(layer="pen").fit(f_fit, y)
    assert det.flag_below is False and det.needs_model is False and det.layers == ("pen",)
    s_id, s_ood = det.score(f_id), det.score(f_ood)
    assert s_id.shape == (300,) and s_id.dtype == np.float64
    assert np.mean(s_ood) > np.mean(s_id)
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(np.r_[np.zeros(300), np.ones(300)], np.r_[s_id, s_ood]) > 0.9
    np.testing.assert_array_equal(GROOD(layer="pen").fit(f_fit, y).score(f_id), s_id)       # deterministic
    det2 = scorer_from_dict(json.loads(json.dumps(det.to_dict())))
    np.testing.assert_allclose(det2.score(f_id), s_id, atol=1e-5)
    assert det.ood_source_ == "penultimate-mixup"
    np.testing.assert_allclose(det.ood_prototype_, det.prototypes_.mean(0), atol=1e-12)     # λ = ½ fallback


def test_score_is_distance_to_nearest_training_gradient():
    f_fit, y = _gaussian_features(n=80)
    det = GROOD(layer="pen", k=1).fit(f_fit, y)
    f_q, _ = _gaussian_features(n=10, seed=5)
    g = det.gradients(torch.as_tensor(f_q.outputs["pen"], dtype=torch.float64)).numpy()
    brute = np.sqrt(((g[:, None, :] - det.bank_[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(det.score(f_q), brute, rtol=1e-9)
    np.testing.assert_allclose(det.score(f_fit), 0, atol=1e-6)      # training points are their own neighbour


def test_early_layer_mixup_on_zoo_model():
    from brittle.data.loading import load_mnist
    from brittle.models import zoo

    model = zoo.load("standard")
    data = load_mnist("test").head(200)
    det = GROOD(max_train=150).fit_model(model, data)
    assert det.layer == "6" and det.early_layer == "0" and det.ood_source_ == "early-mixup:0"
    assert det.ood_prototype_.shape == (100,)
    # the mixed prototype is not the fallback (mean of class prototypes)
    assert np.linalg.norm(det.ood_prototype_ - det.prototypes_.mean(0)) > 1e-3
    # by hand: mix class means of layer "0", push through layers 1.., mean of layer "6"
    from brittle.models.features import extract_features
    from itertools import combinations
    sub = data.subset(np.sort(np.random.default_rng(0).choice(200, 150, replace=False)))
    e = extract_features(model, sub, ["0"], device="cpu")
    y = sub.y.numpy()
    means = [e.outputs["0"][y == c].mean(0) for c in range(10)]
    mix = torch.as_tensor(np.stack([0.5 * means[i] + 0.5 * means[j] for i, j in combinations(range(10), 2)]))
    with torch.no_grad():
        pen = model[1:7](mix.reshape(45, 16, 14, 14).float())
    np.testing.assert_allclose(det.ood_prototype_, pen.double().mean(0).numpy(), rtol=1e-4, atol=1e-5)
    s = det.score_model(model, load_mnist("test").subset(slice(300, 340)))
    assert s.shape == (40,) and np.isfinite(s).all()


def test_early_layer_mixup_runs_where_the_model_is(monkeypatch):
    """The mix-up extracts the early layer on the model's own device (it extracted on the CPU, which would move a
    CUDA model there): a model on "meta" (standing for a GPU) is asked for features on "meta" and stays there."""
    import brittle.models.features as F
    from brittle.data.loading import load_mnist
    from brittle.models import zoo

    model = zoo.load("standard").to("meta")
    seen = {}

    class Stop(Exception):
        pass

    def spy(net, data, layer=None, *, batch_size=512, device="auto"):
        seen["device"] = torch.device(device)
        raise Stop

    monkeypatch.setattr(F, "extract_features", spy)
    with pytest.raises(Stop):
        GROOD().fit_ood_prototype(model, load_mnist("test").head(50))
    assert seen["device"] == torch.device("meta")
    assert all(p.device.type == "meta" for p in model.parameters())


@pytest.mark.parametrize("kwargs", [{"lam": 2.0}, {"temperature": 0}, {"k": 0}, {"early_layer": ""}, {"layer": 3}])
def test_bad_parameters(kwargs):
    with pytest.raises(BrittleError):
        GROOD(**kwargs)


def test_bad_inputs():
    f_fit, y = _gaussian_features()
    with pytest.raises(InputError, match="not fitted"):
        GROOD(layer="pen").score(f_fit)
    det = GROOD(layer="pen").fit(f_fit, y)
    bad = Features(f_fit.logits, outputs={"pen": np.zeros((300, 4), np.float32)})
    with pytest.raises(InputError, match="features"):
        det.score(bad)
    with pytest.raises(InputError):
        GROOD(layer="other").fit(f_fit, y)
