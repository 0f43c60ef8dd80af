"""OOD detectors against closed forms, hand cases and brute-force numpy re-implementations of the papers'
official code (KNN, ViM, RMD, Mahalanobis, ReAct, ASH, SCALE, DICE, SHE, KL matching), GradNorm and ODIN
against autograd, and — where installed — pytorch-ood / oodeel on the same features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.metrics import roc_auc_score
from torch import nn

from brittle.analysis.detection import ood_metrics, threshold_at_tpr
from brittle.errors import BrittleError, InputError, ModelError
from brittle.models.features import Features
from brittle.ood import (
    ASH,
    DICE,
    GEN,
    KNN,
    MSP,
    ODIN,
    RMD,
    SCALE,
    SHE,
    Energy,
    Entropy,
    GradNorm,
    KLMatching,
    Mahalanobis,
    MaxLogit,
    ReAct,
    ViM,
    find_head,
    penultimate_layer,
)
from brittle.ood.cache import FeatureCache, layers_of
from brittle.ood.registry import detector_names, make_detector

Z = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [5.0, -1.0, 1.0], [1.0, 3.0, 2.9]], dtype=np.float32)


def feats(z=Z, **outputs):
    return Features(np.asarray(z, dtype=np.float32), outputs={k: np.asarray(v, np.float32) for k, v in outputs.items()})


# --------------------------------------------------------------------------------------------
# logit detectors: hand cases and closed forms
# --------------------------------------------------------------------------------------------

def test_msp_entropy_maxlogit_energy_gen_on_hand_logits():
    p = softmax(Z.astype(np.float64), axis=1)
    np.testing.assert_allclose(MSP().score(feats()), -p.max(1), rtol=1e-12)
    np.testing.assert_allclose(Entropy().score(feats()), -(p * np.log(p)).sum(1), rtol=1e-12)
    np.testing.assert_allclose(MaxLogit().score(feats()), -Z.max(1))
    np.testing.assert_allclose(Energy(2.0).score(feats()), -2.0 * logsumexp(Z.astype(np.float64) / 2.0, axis=1), rtol=1e-12)
    g = np.sort(p, 1)[:, ::-1]
    np.testing.assert_allclose(GEN(gamma=0.1, m=2).score(feats()), (g[:, :2] ** 0.1 * (1 - g[:, :2]) ** 0.1).sum(1),
                               rtol=1e-12)
    # uniform logits: MSP = -1/C, entropy = log C (the most OOD value)
    assert MSP().score(feats())[1] == pytest.approx(-1 / 3)
    assert Entropy().score(feats())[1] == pytest.approx(np.log(3))


def test_energy_tends_to_max_logit_as_temperature_goes_to_zero():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 10)).astype(np.float32) * 3
    e = Energy(temperature=1e-3).score(feats(z))
    np.testing.assert_allclose(e, -z.max(1), atol=1e-2)
    np.testing.assert_array_equal(np.argsort(e, kind="stable"), np.argsort(MaxLogit().score(feats(z)), kind="stable"))


def test_kl_matching_brute_force():
    rng = np.random.default_rng(1)
    z_fit, z = rng.normal(size=(300, 4)) * 2, rng.normal(size=(50, 4)) * 2
    det = KLMatching().fit(feats(z_fit))
    p_fit = softmax(z_fit, 1)
    d = np.stack([p_fit[p_fit.argmax(1) == k].mean(0) for k in range(4)])
    p = softmax(z.astype(np.float32).astype(np.float64), 1)
    ref = np.array([min((pi * np.log(pi / dk)).sum() for dk in d) for pi in p])
    np.testing.assert_allclose(det.score(feats(z)), ref, rtol=1e-5, atol=1e-9)


def test_odin_equals_hand_written_reference_and_reduces_to_temperature_msp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.rand(20, 1, 3, 4)
    det = ODIN(temperature=10.0, eps=0.01)
    xr = x.clone().requires_grad_(True)
    out = model(xr) / 10.0
    nn.functional.cross_entropy(out, out.argmax(1)).backward()
    x_t = x - 0.01 * torch.sign(xr.grad)
    ref = -torch.softmax(model(x_t) / 10.0, 1).max(1).values.detach().double().numpy()
    np.testing.assert_allclose(det.score_model(model, x), ref, rtol=1e-6)
    assert det.needs_model and not ODIN(eps=0.0).needs_model
    with pytest.raises(InputError, match="score_model"):
        det.score(feats())
    np.testing.assert_allclose(ODIN(5.0, 0.0).score(feats()), -softmax(Z / 5.0, 1).max(1), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Mahalanobis: closed form on Gaussian class-conditional data
# --------------------------------------------------------------------------------------------

def test_mahalanobis_ranks_as_the_true_log_likelihood_ratio_on_gaussian_classes():
    """ID: 3 Gaussian classes with a shared covariance; OOD: uniform on a box, so the true log-likelihood
    ratio log p_ood/p_id is −log p_id + const. Fitted Mahalanobis must detect as well as that Bayes-optimal
    score and rank inputs alike."""
    from scipy.stats import multivariate_normal, spearmanr

    rng = np.random.default_rng(0)
    d = 4
    means = np.array([[0, 0, 0, 0], [4, 0, 0, 0], [0, 4, 0, 0]], float)
    a = rng.normal(size=(d, d))
    cov = a @ a.T / d + np.eye(d)
    y = rng.integers(0, 3, 20000)
    h_fit = means[y] + rng.multivariate_normal(np.zeros(d), cov, 20000)
    det = Mahalanobis(layer="h").fit(feats(np.eye(3)[y], h=h_fit), y)
    y_t = rng.integers(0, 3, 2000)
    h_id = means[y_t] + rng.multivariate_normal(np.zeros(d), cov, 2000)
    h_ood = rng.uniform(-8, 10, size=(2000, d))
    h = np.vstack([h_id, h_ood])
    log_p_id = logsumexp(np.stack([multivariate_normal(m, cov).logpdf(h) for m in means]), axis=0) - np.log(3)
    true_llr = -log_p_id
    score = det.score(feats(np.zeros((len(h), 3)), h=h))
    is_ood = np.r_[np.zeros(2000), np.ones(2000)]
    assert abs(roc_auc_score(is_ood, score) - roc_auc_score(is_ood, true_llr)) < 0.005
    assert spearmanr(score, true_llr).statistic > 0.98
    # the nearest-class likelihood (shared covariance) is an exact monotone function of the score
    near = -np.max(np.stack([multivariate_normal(m, cov).logpdf(h) for m in means]), axis=0)
    assert spearmanr(det.score(feats(np.zeros((len(h), 3)), h=h)), near).statistic > 0.999


def test_mahalanobis_single_class_equals_the_quadratic_form():
    rng = np.random.default_rng(2)
    h = rng.normal(size=(500, 3)) @ np.array([[2, 0, 0], [0.5, 1, 0], [0, 0, 0.3]])
    det = Mahalanobis(layer="h").fit(feats(np.c_[np.ones(500), np.zeros(500)], h=h), np.zeros(500, int))
    mu, cov = h.mean(0), np.cov(h.T, bias=True)
    q = rng.normal(size=(40, 3))
    ref = np.einsum("ij,jk,ik->i", q - mu, np.linalg.inv(cov), q - mu)
    np.testing.assert_allclose(det.score(feats(np.zeros((40, 2)), h=q)), ref, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# the zoo model: brute-force references on its real features
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zoo_world():
    from brittle.data.loading import load_mnist
    from brittle.data.ood_sets import load_fashion_mnist_test
    from brittle.models import zoo

    model = zoo.load("standard")
    mnist = load_mnist()
    fit, test = mnist.subset(slice(0, 2000)), mnist.subset(slice(5000, 5600))
    ood = load_fashion_mnist_test().subset(slice(0, 600))
    cache = FeatureCache(model)
    layers = ["3", "5", "6"]
    return {"model": model, "fit": fit, "y": fit.y.numpy(), "ff": cache.get("fit", fit, layers),
            "ft": cache.get("test", test, layers), "fo": cache.get("ood", ood, layers), "test": test, "ood": ood,
            "cache": cache}


def _auroc(si, so):
    return ood_metrics(si, so).auroc


def _check(det_scores, ref_scores, w, rtol=1e-6):
    (si, so), (ri, ro) = det_scores, ref_scores
    np.testing.assert_allclose(np.r_[si, so], np.r_[ri, ro], rtol=rtol, atol=1e-5)
    assert abs(_auroc(si, so) - _auroc(ri, ro)) < 0.005


def _pair(det, w):
    return det.score(w["ft"]), det.score(w["fo"])


def test_penultimate_layer_and_head_of_the_zoo_cnn(zoo_world):
    m = zoo_world["model"]
    assert find_head(m)[0] == "7" and penultimate_layer(m) == "6"
    wrong = ViM(layer="3").bind(m)
    with pytest.raises(InputError, match="does not feed the final linear layer|features and"):
        wrong.fit(zoo_world["ff"])

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.fc = nn.Linear(4, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.body(x)))

    with pytest.raises(ModelError, match="pass layer="):
        penultimate_layer(Branchy())
    assert KNN(layer="body").bind(Branchy()).layer == "body"


def test_knn_equals_brute_force(zoo_world):
    w = zoo_world
    det = KNN(k=10).bind(w["model"]).fit(w["ff"])
    bank = w["ff"].output("6").astype(np.float64)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)

    def ref(f):
        q = f.output("6").astype(np.float64)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        d = np.sqrt(np.maximum((q * q).sum(1)[:, None] + (bank * bank).sum(1)[None] - 2 * q @ bank.T, 0))
        return np.sort(d, axis=1)[:, 9]

    _check(_pair(det, w), (ref(w["ft"]), ref(w["fo"])), w, rtol=1e-4)


def test_vim_equals_the_official_numpy_code(zoo_world):
    from numpy.linalg import norm, pinv
    from sklearn.covariance import EmpiricalCovariance

    w = zoo_world
    det = ViM(dim=50).bind(w["model"]).fit(w["ff"])
    lin = w["model"][7]
    W, b = lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()
    u = -np.matmul(pinv(W), b)
    f_train = w["ff"].output("6").astype(np.float64)
    ec = EmpiricalCovariance(assume_centered=True).fit(f_train - u)
    eig_vals, eigen_vectors = np.linalg.eig(ec.covariance_)
    NS = np.ascontiguousarray((eigen_vectors.T[np.argsort(eig_vals * -1)[50:]]).T).real
    logit_train = f_train @ W.T + b
    alpha = logit_train.max(axis=-1).mean() / norm(np.matmul(f_train - u, NS), axis=-1).mean()

    def official(f):
        feat = f.output("6").astype(np.float64)
        logit = feat @ W.T + b
        return -(-norm(np.matmul(feat - u, NS), axis=-1) * alpha + logsumexp(logit, axis=-1))

    _check(_pair(det, w), (official(w["ft"]), official(w["fo"])), w, rtol=1e-4)


def _gauss(h, y, c):
    mus = np.stack([h[y == k].mean(0) for k in range(c)])
    cen = h - mus[y]
    return mus, np.linalg.pinv(cen.T @ cen / len(h), hermitian=True)


def _md(q, mus, prec):
    return np.stack([np.einsum("ij,jk,ik->i", q - m, prec, q - m) for m in mus], 1)


def test_rmd_and_mahalanobis_equal_brute_force(zoo_world):
    w = zoo_world
    h, y = w["ff"].output("6").astype(np.float64), w["y"]
    mus, prec = _gauss(h, y, 10)
    mu0 = h.mean(0)
    prec0 = np.linalg.pinv(np.cov(h.T, bias=True), hermitian=True)

    def rmd(f):
        q = f.output("6").astype(np.float64)
        return (_md(q, mus, prec) - _md(q, mu0[None], prec0)).min(1)

    def maha(f):
        return _md(f.output("6").astype(np.float64), mus, prec).min(1)

    _check(_pair(RMD().bind(w["model"]).fit(w["ff"], y), w), (rmd(w["ft"]), rmd(w["fo"])), w, rtol=1e-3)
    _check(_pair(Mahalanobis().bind(w["model"]).fit(w["ff"], y), w), (maha(w["ft"]), maha(w["fo"])), w, rtol=1e-3)


def test_degenerate_fit_sets_are_refused(zoo_world):
    """Fit sets that make a detector's score meaningless: one input (zero covariance: Mahalanobis / RMD scores
    all 0; ViM's α ≈ 1e16), one class for RMD (MD_k − MD_0 ≡ 0, the AUROC is rounding noise), every input its
    own class (zero within-class covariance), fewer ViM fit inputs than its principal dimension (no residual)."""
    w = zoo_world
    m, f, y = w["model"], w["ff"], w["y"]
    for det in (Mahalanobis(), RMD(), ViM(dim=50)):
        with pytest.raises(InputError, match=rf"^{type(det).__name__} needs at least 2 fit inputs, got 1 .*Fix: "):
            det.bind(m).fit(f.subset(slice(0, 1)), y[:1])
        assert not det.is_fitted
    threes = y == 3
    rmd = RMD().bind(m)
    with pytest.raises(InputError, match="RMD needs fit inputs of at least 2 classes, the fit labels hold only class "
                                         "3. Fix: .*mahalanobis or knn"):
        rmd.fit(f.subset(threes), y[threes])
    # one class is a proper Gaussian for Mahalanobis: fitted and scored
    assert np.isfinite(Mahalanobis().bind(m).fit(f.subset(threes), y[threes]).score(w["ft"])).all()
    first = [int(np.flatnonzero(y == k)[0]) for k in (0, 1)]   # two inputs, each its own class
    with pytest.raises(InputError, match="the within-class covariance of the fit features is zero"):
        Mahalanobis().bind(m).fit(f.subset(first), y[first])
    with pytest.raises(InputError, match=r"no component outside ViM's 50-dimensional principal space.*Fix: fit on "
                                         r"more in-distribution inputs"):
        ViM(dim=50).bind(m).fit(f.subset(slice(0, 20)))
    assert ViM(dim=50).bind(m).fit(f.subset(slice(0, 200))).is_fitted


def test_multi_layer_mahalanobis_averages_standardised_layer_scores(zoo_world):
    w = zoo_world
    multi = Mahalanobis(layer=["5", "6"]).fit(w["ff"], w["y"])
    parts = []
    for name in ("5", "6"):
        single = Mahalanobis(layer=name).fit(w["ff"], w["y"])
        fit_scores = single.score(w["ff"])
        parts.append((single.score(w["ft"]) - fit_scores.mean()) / fit_scores.std())
    np.testing.assert_allclose(multi.score(w["ft"]), np.mean(parts, 0), rtol=1e-5, atol=1e-6)
    assert multi.layers == ("5", "6") and not multi.needs_model
    noisy = Mahalanobis(layer=["5", "6"], noise=[0.0, 0.001]).fit(w["ff"], w["y"])
    assert noisy.needs_model
    s = noisy.score_model(w["model"], w["test"].subset(slice(0, 50)))
    assert s.shape == (50,) and np.isfinite(s).all()
    # noise 0 on every layer through the model path equals the feature path
    np.testing.assert_allclose(Mahalanobis(layer="6").fit(w["ff"], w["y"]).score_model(w["model"], w["test"]),
                               Mahalanobis(layer="6").fit(w["ff"], w["y"]).score(w["ft"]), rtol=1e-6)


def test_gradnorm_closed_form_equals_autograd(zoo_world):
    w = zoo_world
    model = w["model"]
    x = w["test"].x[:30]
    ref = []
    for i in range(len(x)):
        model.zero_grad()
        out = model(x[i:i + 1])
        targets = torch.ones((1, 10)) / 10
        loss = torch.mean(torch.sum(-targets * torch.log_softmax(out, dim=-1), dim=-1))
        loss.backward()
        ref.append(-model[7].weight.grad.abs().sum().item())
    model.zero_grad()
    det = GradNorm().bind(model)
    np.testing.assert_allclose(det.score(w["ft"].subset(slice(0, 30))), ref, rtol=1e-4)


def test_she_brute_force(zoo_world):
    w = zoo_world
    h, y = w["ff"].output("6").astype(np.float64), w["y"]
    pred = w["ff"].logits.argmax(1)
    pats = np.stack([h[(y == k) & (pred == k)].mean(0) for k in range(10)])

    def ref(f):
        q = f.output("6").astype(np.float64)
        return -(q * pats[f.logits.argmax(1)]).sum(1)

    _check(_pair(SHE().bind(w["model"]).fit(w["ff"], y), w), (ref(w["ft"]), ref(w["fo"])), w, rtol=1e-5)


def _head(w):
    lin = w["model"][7]
    return lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()


def test_react_dice_ash_scale_equal_numpy_references(zoo_world):
    w = zoo_world
    W, b = _head(w)
    h_fit = w["ff"].output("6").astype(np.float64)
    energy = lambda z: -logsumexp(z, axis=1)

    c = np.percentile(h_fit.ravel(), 90)
    react = lambda f: energy(np.minimum(f.output("6"), c) @ W.T + b)
    _check(_pair(ReAct().bind(w["model"]).fit(w["ff"]), w), (react(w["ft"]), react(w["fo"])), w, rtol=1e-5)

    contrib = W * h_fit.mean(0)[None]
    mask = contrib > np.percentile(contrib, 90)
    dice = lambda f: energy(f.output("6") @ (W * mask).T + b)
    _check(_pair(DICE().bind(w["model"]).fit(w["ff"]), w), (dice(w["ft"]), dice(w["fo"])), w, rtol=1e-5)

    def ash_s(x, p):  # the official ash_s on a (B, n) tensor
        x = torch.as_tensor(x, dtype=torch.float64).clone()
        s1 = x.sum(1)
        n = x.shape[1]
        k = n - int(np.round(n * p / 100.0))
        v, i = torch.topk(x, k, dim=1)
        x.zero_().scatter_(dim=1, index=i, src=v)
        return (x * torch.exp(s1 / x.sum(1))[:, None]).numpy()

    def scale(x, p):  # the official scale
        x = torch.as_tensor(x, dtype=torch.float64)
        t = x.clone()
        s1 = x.sum(1)
        n = x.shape[1]
        k = n - int(np.round(n * p / 100.0))
        v, i = torch.topk(t, k, dim=1)
        t.zero_().scatter_(dim=1, index=i, src=v)
        return (x * torch.exp(s1 / t.sum(1))[:, None]).numpy()

    ash = lambda f: energy(ash_s(f.output("6"), 90) @ W.T + b)
    _check(_pair(ASH().bind(w["model"]).fit(w["ff"]), w), (ash(w["ft"]), ash(w["fo"])), w, rtol=1e-5)
    sc = lambda f: energy(scale(f.output("6"), 85) @ W.T + b)
    _check(_pair(SCALE().bind(w["model"]).fit(w["ff"]), w), (sc(w["ft"]), sc(w["fo"])), w, rtol=1e-5)


def test_modifier_wraps_any_logit_detector_and_refuses_others(zoo_world):
    w = zoo_world
    W, b = _head(w)
    c = np.percentile(w["ff"].output("6").astype(np.float64).ravel(), 80)
    det = ReAct(percentile=80, detector="msp").bind(w["model"]).fit(w["ff"])
    ref = -softmax(np.minimum(w["ft"].output("6"), c) @ W.T + b, 1).max(1)
    np.testing.assert_allclose(det.score(w["ft"]), ref, rtol=1e-5)
    with pytest.raises(InputError, match="reads only logits"):
        ReAct(detector="knn")
    with pytest.raises(InputError, match="needs the final linear layer"):
        ReAct(layer="6").fit(w["ff"])


def test_feature_cache_one_forward_pass_for_all_detectors(zoo_world):
    w = zoo_world
    dets = [make_detector(n) for n in detector_names("all")]
    for d in dets:
        d.bind(w["model"])
    cache = FeatureCache(w["model"])
    f1 = cache.get("x", w["test"], layers_of(dets))
    f2 = cache.get("x", w["test"], ["6"])
    assert cache.passes == 1 and f1 is f2 and layers_of(dets) == ["6"]
    cache.get("x", w["test"], ["3"])
    assert cache.passes == 2 and set(cache.get("x", w["test"], ["3", "6"]).outputs) == {"3", "6"}


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------

def test_ood_metrics_hand_case():
    id_s = np.array([0.0, 1.0, 2.0, 3.0])
    ood_s = np.array([2.5, 4.0, 5.0])
    m = ood_metrics(id_s, ood_s, target_tpr=0.75)
    # AUROC: pairs (ood > id): 2.5 beats 3 of 4, 4 and 5 beat all → (3 + 4 + 4) / 12
    assert m.auroc == pytest.approx(11 / 12)
    # 75% of ID accepted by score <= 2.0; OOD accepted at that threshold: none
    assert m.threshold == 2.0 and m.fpr_at_tpr == 0.0
    m95 = ood_metrics(id_s, ood_s)
    assert m95.threshold == 3.0 and m95.fpr_at_tpr == pytest.approx(1 / 3)   # 2.5 is accepted
    assert m95.detection_error == pytest.approx(min(0.5 * (1 - t) + 0.5 * f for t, f in
                                                    [(0.75, 0.0), (1.0, 1 / 3), (0.5, 0.0), (0.0, 0.0)]))
    assert threshold_at_tpr(id_s, 0.5) == 1.0
    assert 0 < m.aupr_in <= 1 and 0 < m.aupr_out <= 1
    with pytest.raises(BrittleError, match="Fix:"):
        ood_metrics([np.nan], [1.0])


def test_detection_metrics_still_importable_from_consistency():
    from brittle.analysis import consistency, detection

    assert consistency.detection_metrics is detection.detection_metrics
    assert consistency.fpr_at_tpr is detection.fpr_at_tpr


# --------------------------------------------------------------------------------------------
# reference libraries, when they install
# --------------------------------------------------------------------------------------------

def _reference_library():
    try:
        import pytorch_ood  # noqa: F401
        return "pytorch_ood"
    except Exception:  # noqa: BLE001 - ImportError, or torchvision failing with CPU torch
        return None


@pytest.mark.skipif(_reference_library() is None,
                    reason="pytorch-ood is not importable here (it needs torchvision, i.e. the large CUDA torch "
                           "pair; with CPU torch its import fails) and oodeel pins numpy<=1.26; the brute-force "
                           "references above stand in")
def test_auroc_equals_pytorch_ood_on_the_same_features(zoo_world):  # pragma: no cover - needs pytorch-ood
    from pytorch_ood import detector as P

    w = zoo_world
    zt, zo = torch.as_tensor(w["ft"].logits), torch.as_tensor(w["fo"].logits)
    pairs = {"msp": P.MaxSoftmax(None), "max_logit": P.MaxLogit(None), "energy": P.EnergyBased(None),
             "entropy": P.Entropy(None)}
    for name, ref in pairs.items():
        ours = make_detector(name)
        ri, ro = ref.predict_features(zt).numpy(), ref.predict_features(zo).numpy()
        assert abs(_auroc(*_pair(ours, w)) - _auroc(ri, ro)) < 0.005, name
