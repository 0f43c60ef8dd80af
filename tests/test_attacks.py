"""Minimal-norm attacks against ground truth: exact margins of linear classifiers inside the box."""

from __future__ import annotations

import functools

import importlib.util

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize
from torch import nn

from brittle.margins.attacks import (AttackResult, Ensemble, FastBoundaryAttack, make_attack, perturbation_norm, verify)
from brittle.margins.attacks import adapters
from brittle.errors import InputError, ModelError

DIM, CLASSES = 12, 5


def linear_model(seed: int = 0, scale: float = 1.0) -> nn.Module:
    torch.manual_seed(seed)
    lin = nn.Linear(DIM, CLASSES)
    with torch.no_grad():
        lin.weight.mul_(scale)
    return nn.Sequential(nn.Flatten(), lin).eval()


def weights(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    lin = model[1]
    return lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()


def exact_linf(w: np.ndarray, b: np.ndarray, x: np.ndarray, p: int, lo: float, hi: float) -> float:
    """min ||d||∞ s.t. some class j scores at least class p at x + d, lo <= x + d <= hi (one LP per class)."""
    best = np.inf
    n = len(x)
    for j in range(len(b)):
        if j == p:
            continue
        a = w[j] - w[p]
        c = a @ x + b[j] - b[p]
        # variables (d, t): minimise t; |d_i| <= t; a.d >= -c
        obj = np.r_[np.zeros(n), 1.0]
        a_ub = np.vstack([np.c_[np.eye(n), -np.ones(n)], np.c_[-np.eye(n), -np.ones(n)], np.r_[-a, 0.0][None]])
        b_ub = np.r_[np.zeros(2 * n), c]
        bounds = [(lo - xi, hi - xi) for xi in x] + [(0, None)]
        res = linprog(obj, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if res.status == 0:
            best = min(best, res.fun)
        else:
            assert res.status == 2, res.message  # infeasible: class j cannot win inside the box
    return best


def exact_l2(w: np.ndarray, b: np.ndarray, x: np.ndarray, p: int, lo: float, hi: float) -> float:
    """min ||d||_2 with the same constraints: one convex QP per class, solved by SLSQP."""
    best = np.inf
    for j in range(len(b)):
        if j == p:
            continue
        a = w[j] - w[p]
        c = a @ x + b[j] - b[p]
        room = np.where(a > 0, hi - x, lo - x)
        if a @ room + c < 0:  # even the best corner of the box does not reach class j
            continue
        res = minimize(lambda d: d @ d, np.clip(room * 0.5, lo - x, hi - x), jac=lambda d: 2 * d,
                       constraints=[{"type": "ineq", "fun": lambda d, a=a, c=c: a @ d + c, "jac": lambda d, a=a: a}],
                       bounds=list(zip(lo - x, hi - x)), method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
        assert res.success, res.message
        best = min(best, float(np.sqrt(res.fun)))
    return best


def closed_form(w: np.ndarray, b: np.ndarray, x: np.ndarray, p: int, norm: str) -> float:
    """Margin without the box: min_j |(w_p - w_j).x + b_p - b_j| / ||w_p - w_j||_dual."""
    dual = 1 if norm == "linf" else 2
    return min(abs((w[p] - w[j]) @ x + b[p] - b[j]) / np.linalg.norm(w[p] - w[j], dual)
               for j in range(len(b)) if j != p)


def box_points(n: int, seed: int = 1) -> torch.Tensor:
    """Inputs with many coordinates at or near the box edges, so the box binds."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, DIM, generator=g)
    edge = torch.rand(n, DIM, generator=g) < 0.4
    return torch.where(edge, (x > 0.5).float(), x)


@pytest.fixture(params=["newton", "sort"])
def threshold_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the box projection finds its threshold: Newton (the CPU's) and the closed form by sorting
    (the GPU's), each run here on the CPU."""
    from brittle.margins.attacks import fast_boundary
    monkeypatch.setattr(fast_boundary, "_threshold",
                        functools.partial(fast_boundary._threshold, method=request.param))
    return request.param


@pytest.mark.parametrize("masked", [False, True], ids=["compact", "masked"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_margin_inside_box_matches_exact_solution(norm: str, threshold_method: str, masked: bool) -> None:
    """Exact on a linear model, whichever way the attack skips finished samples (``masked``: the GPU's way,
    run here on the CPU) and finds its projections' thresholds."""
    model = linear_model(scale=0.6)
    x = box_points(24)
    pred = model(x).argmax(1)
    res = FastBoundaryAttack(norm, masked=masked)(model, x, pred)
    w, b = weights(model)
    truth = np.array([(exact_linf if norm == "linf" else exact_l2)(w, b, xi, int(p), 0.0, 1.0)
                      for xi, p in zip(x.double().numpy(), pred.numpy())])
    free = np.array([closed_form(w, b, xi, int(p), norm) for xi, p in zip(x.double().numpy(), pred.numpy())])
    assert (truth > free * 1.05).sum() >= 5, "test data too easy: the box should bind for several samples"
    assert np.isfinite(truth).all()
    np.testing.assert_allclose(res.upper.double().numpy(), truth, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("masked", [False, True], ids=["compact", "masked"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_margin_without_active_box_matches_closed_form(norm: str, threshold_method: str,
                                                              masked: bool) -> None:
    model = linear_model(seed=3, scale=3.0)
    x = 0.5 + 0.05 * (torch.rand(20, DIM, generator=torch.Generator().manual_seed(2)) - 0.5)
    pred = model(x).argmax(1)
    res = FastBoundaryAttack(norm, masked=masked)(model, x, pred)
    w, b = weights(model)
    free = np.array([closed_form(w, b, xi, int(p), norm) for xi, p in zip(x.double().numpy(), pred.numpy())])
    box_ok = (x - res.x_adv).abs().amax() < 0.45  # the minimal perturbations stay far from the box edges
    assert bool(box_ok)
    np.testing.assert_allclose(res.upper.double().numpy(), free, rtol=1e-4, atol=1e-7)


def test_unflippable_model_gives_inf_not_zero() -> None:
    lin = nn.Linear(DIM, 3)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = box_points(6)
    for norm in ("linf", "l2"):
        res = FastBoundaryAttack(norm, steps=20, restarts=1)(model, x)
        assert torch.isinf(res.upper).all()
        assert (res.adv_class == -1).all()
        assert torch.equal(res.x_adv, x)


class Plateau(nn.Module):
    """Class 1 wins once a pixel passes 0.91; below 0.9 the logits are flat in the input (zero gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 100 * torch.relu(x.flatten(1) - 0.9).sum(1)
        return torch.stack([torch.ones_like(s), s], 1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_samples_the_gradient_cannot_move_get_a_finite_bound_toward_another_class_input(norm: str) -> None:
    g = torch.Generator().manual_seed(3)
    flat = 0.05 * torch.rand(6, DIM, generator=g)  # zero gradient all around: gradient steps cannot leave
    other = 0.05 * torch.rand(2, DIM, generator=g)
    other[:, 0] = 1.0  # predicted as class 1
    x = torch.cat([flat, other])
    model = Plateau().eval()
    pred = model(x).argmax(1)
    assert (pred[:6] == 0).all() and (pred[6:] == 1).all()
    without = FastBoundaryAttack(norm, fallback=False)(model, x, pred)
    assert torch.isinf(without.upper[:6]).all(), "test model too easy: the gradient should not find these"
    res = FastBoundaryAttack(norm)(model, x, pred)
    assert res.found.all()
    assert (model(res.x_adv).argmax(1) != pred).all() and (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    torch.testing.assert_close(perturbation_norm(res.x_adv - x, norm), res.upper)
    nearest = torch.cdist(flat, other, p=float("inf") if norm == "linf" else 2.0).amin(1)
    assert (res.upper[:6] <= nearest * (1 + 1e-6)).all()
    assert (res.upper[:6] >= 0.9 - flat.amax(1)).all()  # some pixel must pass 0.9


class DeadSum(nn.Module):
    """Class 1's logit is ``10 relu(Σx - 15) - 40``: class 1 wins once the 20 pixels sum past 19. Below a sum of
    15 the logits are flat (zero gradient, and random restarts at half the box's width almost never reach 15),
    above it the gradient is live; the input gradient of a sum is a broadcast view, not a tensor of its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1)
        return torch.stack([torch.zeros_like(s), 10 * torch.relu(s - 15) - 40], 1)


@pytest.mark.parametrize("strength", ["fast", "default", "thorough"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_flat_sample_gets_its_bound_toward_another_inputs_adversarial_example(norm: str, strength: str) -> None:
    """Every input is predicted as class 0, so there is no other-class input to bisect toward: the sample on the
    plateau gets its bound along the segment to the adversarial example found for the input with a live
    gradient, which here is exactly its margin (all 20 pixels up by 0.45: L∞ 0.45, L2 9/√20); the two-class
    model and the summing forward also run the thorough strength's targeted probes and APGD's in-place steps."""
    x = torch.cat([torch.full((1, 20), 0.5), torch.full((1, 20), 0.9)])
    model = DeadSum().eval()
    assert (model(x).argmax(1) == 0).all()
    res = FastBoundaryAttack(norm, strength=strength, budgets=[0.3])(model, x)
    assert res.found.all(), res.upper
    assert (model(res.x_adv).argmax(1) == 1).all() and (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    exact = torch.tensor([0.45, 0.05]) if norm == "linf" else torch.tensor([9, 1]) / 20 ** 0.5
    torch.testing.assert_close(res.upper, exact, rtol=1e-4, atol=0)


def test_verify_rejects_non_adversarial_and_out_of_domain_candidates() -> None:
    model = linear_model()
    x = box_points(4)
    pred = model(x).argmax(1)
    same = verify(model, x, x.clone(), pred, "linf", (0.0, 1.0))
    assert torch.isinf(same.upper).all()
    nan = verify(model, x, torch.full_like(x, float("nan")), pred, "l2", (0.0, 1.0))
    assert torch.isinf(nan.upper).all() and torch.equal(nan.x_adv, x)


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, CLASSES)).eval()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("domain", [(0.0, 1.0), (-1.0, 2.0)])
def test_adversarial_examples_flip_and_stay_in_domain(norm: str, domain: tuple[float, float]) -> None:
    model = small_net()
    lo, hi = domain
    x = lo + (hi - lo) * box_points(24)
    pred = model(x).argmax(1)
    res = FastBoundaryAttack(norm, restarts=1)(model, x, pred, domain)
    assert res.found.float().mean() > 0.9
    f = res.found
    assert (res.x_adv >= lo).all() and (res.x_adv <= hi).all()
    adv_pred = model(res.x_adv).argmax(1)
    assert (adv_pred[f] != pred[f]).all()
    assert torch.equal(adv_pred[f], res.adv_class[f])
    torch.testing.assert_close(perturbation_norm(res.x_adv - x, norm)[f], res.upper[f])
    assert (res.upper[f] > 0).all()


def test_seeded_runs_are_deterministic_and_cost_is_counted() -> None:
    model = small_net(1)
    x = box_points(30, seed=5)
    a = FastBoundaryAttack("linf", restarts=2, seed=7)(model, x)
    b = FastBoundaryAttack("linf", restarts=2, seed=7)(model, x)
    assert torch.equal(a.upper, b.upper) and torch.equal(a.x_adv, b.x_adv)
    assert a.cost == b.cost and a.cost.backward > 0 and a.cost.forward > a.cost.backward


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_an_attack_leaves_the_callers_random_state_as_it_was(device: str) -> None:
    """The attack is seeded, yet the caller's random streams (the CPU's and the input's GPU's) go on as if it
    had not run (the budget stage and restarts draw from them)."""
    model = small_net(1).to(device)
    x = box_points(20, seed=5).to(device)
    torch.manual_seed(123)
    expected = torch.rand(3, device=device), torch.rand(3)
    torch.manual_seed(123)
    FastBoundaryAttack("l2", restarts=1, budgets=[0.5], seed=7)(model, x)
    assert torch.equal(torch.rand(3, device=device), expected[0]) and torch.equal(torch.rand(3), expected[1])


def test_early_stopping_spends_fewer_passes() -> None:
    model = small_net(2)
    x = box_points(20, seed=6)
    early = FastBoundaryAttack("l2", steps=100, patience=5, restarts=0)(model, x)
    full = FastBoundaryAttack("l2", steps=100, patience=100, restarts=0)(model, x)
    assert early.cost.backward < 0.5 * full.cost.backward
    assert torch.median(early.upper) <= torch.median(full.upper) * 1.02


def test_ensemble_keeps_best_verified_bound_per_sample() -> None:
    model = small_net(3)
    x = box_points(30, seed=7)
    pred = model(x).argmax(1)
    weak = FastBoundaryAttack("l2", steps=1, refine_steps=0, seed=1)
    strong = FastBoundaryAttack("l2", seed=2)
    ens = Ensemble([weak, strong], "l2")(model, x, pred)
    rw, rs = weak(model, x, pred), strong(model, x, pred)
    torch.testing.assert_close(ens.upper, torch.minimum(rw.upper, rs.upper))
    assert ens.cost.backward == rw.cost.backward + rs.cost.backward


def test_bad_settings_raise_input_error() -> None:
    with pytest.raises(InputError, match="unknown norm"):
        FastBoundaryAttack("l1")
    with pytest.raises(InputError, match="unknown attack method"):
        make_attack("pgd-minimal", "linf")
    with pytest.raises(InputError, match="steps"):
        FastBoundaryAttack("linf", steps=0)
    with pytest.raises(InputError, match="does not support norm"):
        make_attack("ddn-foolbox", "linf") if importlib.util.find_spec("foolbox") else FakeL2Only("linf")
    with pytest.raises(InputError, match="has no parameter 'stepz'"):
        make_attack("brittle", "linf", stepz=3)


class FakeL2Only(FastBoundaryAttack):
    name = "l2-only"
    norms = ("l2",)


def test_non_differentiable_model_raises_model_error() -> None:
    class Argmaxed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return small_net()(x)

    with pytest.raises(ModelError, match="not differentiable"):
        FastBoundaryAttack("linf")(Argmaxed(), box_points(3))


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = adapters.importlib.import_module

    def fake(name: str, *args: object) -> object:
        if name in ("pyautoattack", "torchattacks", "foolbox"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(adapters.importlib, "import_module", fake)
    for method, extra in (("fab-autoattack", "autoattack"), ("fab-torchattacks", "attacks"),
                          ("fmn-foolbox", "foolbox")):
        with pytest.raises(InputError, match=rf"pip install 'brittle\[{extra}\]'"):
            make_attack(method, "linf")


REFERENCE = [(m, n) for m, n in (("fab-autoattack", "linf"), ("fab-autoattack", "l2"), ("fab-torchattacks", "linf"),
                                  ("ddn-foolbox", "l2"), ("fmn-foolbox", "linf"), ("deepfool-torchattacks", "l2"))]


@pytest.mark.parametrize("method,norm", REFERENCE)
def test_reference_adapters_are_verified(method: str, norm: str) -> None:
    if not adapters.available(method):
        pytest.skip(f"{method} not installed")
    model = small_net(4)
    x = -1.0 + 3.0 * box_points(8, seed=9)
    domain = (-1.0, 2.0)
    pred = model(x).argmax(1)
    res: AttackResult = make_attack(method, norm, steps=20)(model, x, pred, domain)
    f = res.found
    assert f.any()
    assert (model(res.x_adv).argmax(1)[f] != pred[f]).all()
    assert (res.x_adv >= -1).all() and (res.x_adv <= 2).all()
    assert torch.isinf(res.upper[~f]).all() and (res.upper[f] > 0).all()
    unflippable = nn.Sequential(nn.Flatten(), nn.Linear(DIM, 3))
    with torch.no_grad():
        unflippable[1].weight.zero_()
        unflippable[1].bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    none = make_attack(method, norm, steps=5)(unflippable.eval(), x, None, domain)
    assert torch.isinf(none.upper).all() and (none.adv_class == -1).all()


def test_brittle_is_as_tight_as_fab_on_a_small_network() -> None:
    if not adapters.available("fab-autoattack"):
        pytest.skip("pyautoattack not installed")
    model = small_net(5)
    x = box_points(30, seed=11)
    pred = model(x).argmax(1)
    for norm in ("linf", "l2"):
        ours = FastBoundaryAttack(norm)(model, x, pred)
        fab = make_attack("fab-autoattack", norm)(model, x, pred)
        both = ours.found & fab.found
        ratio = (ours.upper[both] / fab.upper[both]).median()
        assert ours.found.sum() >= fab.found.sum()
        assert ratio <= 1.01, f"{norm}: median ratio to FAB {ratio:.4f}"
        assert ours.cost.backward < fab.cost.backward / 5


@pytest.mark.parametrize("method", ["newton", "sort"])
def test_box_threshold_finds_the_root_of_the_capped_sum(method: str) -> None:
    """``t`` with ``sum_i a_i min(t, b_i) = target`` against bisection in float64, with zero weights, zero caps,
    a zero target and rows the caps make infeasible (``t = max b``, flagged)."""
    from brittle.margins.attacks.fast_boundary import _threshold
    g = torch.Generator().manual_seed(5)
    a = torch.rand(40, 60, generator=g, dtype=torch.float64) * (torch.rand(40, 60, generator=g) > 0.3)
    b = torch.rand(40, 60, generator=g, dtype=torch.float64) * (torch.rand(40, 60, generator=g) > 0.2)
    total = (a * b).sum(1)
    target = total * torch.linspace(0.0, 1.3, 40, dtype=torch.float64)
    t, feasible = _threshold(a, b, target, iters=60, method=method)
    assert feasible.tolist() == (target <= total).tolist() and (~feasible).sum() >= 5
    lo, hi = torch.zeros(40, dtype=torch.float64), b.amax(1).clone()
    for _ in range(200):  # the smallest t reaching the target, by bisection
        mid = (lo + hi) / 2
        reached = (a * torch.minimum(mid.unsqueeze(1), b)).sum(1) >= target
        hi, lo = torch.where(reached, mid, hi), torch.where(reached, lo, mid)
    expected = torch.where(feasible, hi, b.amax(1))
    torch.testing.assert_close(t, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_masked_rows_give_the_bounds_of_compacted_batches(norm: str) -> None:
    """The GPU's way (finished rows masked, read back every few steps) is the same attack as the CPU's (finished
    rows dropped at every step): on a ReLU CNN, every sample gets the same verified bound. (The budget stage,
    stacked when masked, draws its random starts differently: tests/test_attack_strength.py covers both.)"""
    from brittle.data.loading import load_mnist
    from brittle.models import zoo

    model = zoo.load("standard").eval()
    x = load_mnist().head(48).x
    pred = model(x).argmax(1)
    compact = FastBoundaryAttack(norm, masked=False)(model, x, pred)
    masked = FastBoundaryAttack(norm, masked=True)(model, x, pred)
    assert bool(torch.isfinite(compact.upper).all())
    torch.testing.assert_close(masked.upper, compact.upper, rtol=1e-4, atol=1e-6)


def test_an_unknown_attack_option_is_named_with_the_ones_there_are() -> None:
    """A misspelt option read "FastBoundaryAttack.__init__() got an unexpected keyword argument 'stepz'"."""
    from brittle.margins.attacks import make_attack

    with pytest.raises(InputError, match=r"method 'brittle' has no parameter 'stepz'\. Fix: use one of .*\bsteps\b"):
        make_attack("brittle", "linf", stepz=3)
    assert make_attack("brittle", "linf", steps=3).steps == 3
