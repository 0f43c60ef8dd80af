"""Contract checks over every registered minimal-norm attack (in the spirit of scikit-learn's
``parametrize_with_checks``): a new attack in `brittle.margins.attacks.ATTACKS` is covered automatically.

Ground truth: on a linear classifier with a box that never binds, the exact input margin to class j is
``(z_p - z_j) / ||w_p - w_j||_q`` with q the dual norm (1 for L∞, 2 for L2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brittle.errors import BrittleError, InputError
from brittle.margins.attacks import ATTACK_METHODS, ATTACKS, available, make_attack, perturbation_norm
from brittle.margins.attacks.adapters import LIBRARIES

DOMAIN = (-10.0, 10.0)
CASES = [(m, n) for m in ATTACK_METHODS for n in ("linf", "l2")
         if m == "ensemble" or n in ATTACKS[m].norms]


def _linear(seed=0, d=5, k=3):
    torch.manual_seed(seed)
    model = nn.Linear(d, k)
    with torch.no_grad():
        model.weight.mul_(2.0)
    return model.eval()


def _exact(model, x, norm):
    w, b = model.weight.detach().double(), model.bias.detach().double()
    z = x.double() @ w.T + b
    pred = z.argmax(1)
    dual = 1 if norm == "linf" else 2
    best = torch.full((len(x),), float("inf"), dtype=torch.float64)
    for j in range(w.shape[0]):
        gap = (z[torch.arange(len(x)), pred] - z[:, j]) / (w[pred] - w[j]).norm(p=dual, dim=1).clamp_min(1e-12)
        best = torch.where(pred == j, best, torch.minimum(best, gap))
    return best.numpy(), pred


def _skip_unavailable(method):
    if method in LIBRARIES and not available(method):  # adapters of optional libraries
        pytest.skip(f"{method}: its library is not installed")


def _just_below(exact):
    """Budgets 3% below three samples' exact margins: the budget stage attacks those samples at ε < margin."""
    return [float(m) * 0.97 for m in np.sort(exact[np.isfinite(exact)])[[0, 4, 8]]]


#: brittle's attack the way it runs on a GPU (masked rows, stacked budget stage), run here on the CPU
GPU_WAY = {"masked": True, "budgets": _just_below}


@pytest.mark.parametrize("method, norm", CASES)
def test_attack_contract(method, norm):
    _check_contract(method, norm, {})


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("options", [GPU_WAY, {"masked": False, "budgets": _just_below}],
                         ids=["masked-stacked", "compact-budgets"])
def test_attack_contract_of_brittle_settings(norm, options):
    _check_contract("brittle", norm, options)


def _check_contract(method, norm, options):
    _skip_unavailable(method)
    model = _linear()
    x = torch.rand(12, 5, generator=torch.Generator().manual_seed(1)) * 2 - 1
    exact, pred = _exact(model, x, norm)
    if callable(options.get("budgets")):
        options = {**options, "budgets": options["budgets"](exact)}
    attack = make_attack(method, norm, seed=3, **options)
    res = attack(model, x, domain=DOMAIN)
    # shapes and dtypes
    assert res.upper.shape == (12,) and res.x_adv.shape == x.shape and res.adv_class.shape == (12,)
    assert res.upper.dtype.is_floating_point and res.adv_class.dtype == torch.long
    upper = res.upper.numpy().astype(float)
    # every finite bound is a verified adversarial example at exactly that distance, inside the domain
    found = np.isfinite(upper)
    assert found.any(), f"{method} found nothing on a linear model"
    with torch.no_grad():
        adv_pred = model(res.x_adv).argmax(1)
    assert torch.all(adv_pred[found] != pred[found])
    assert torch.all(res.adv_class[found] == adv_pred[found]) and torch.all(res.adv_class[~found] == -1)
    dist = perturbation_norm(res.x_adv - x, norm).numpy()
    assert np.allclose(dist[found], upper[found], rtol=1e-5, atol=1e-6)
    assert res.x_adv.min() >= DOMAIN[0] and res.x_adv.max() <= DOMAIN[1]
    # an upper bound never undercuts the exact margin
    assert np.all(upper >= exact * (1 - 1e-4) - 1e-6)
    # deterministic for a seed, whatever the global RNG does
    torch.manual_seed(123)
    again = make_attack(method, norm, seed=3, **options)(model, x, domain=DOMAIN)
    assert np.array_equal(again.upper.numpy(), res.upper.numpy())
    # the cost is counted
    assert res.cost.forward > 0


@pytest.mark.parametrize("method", ATTACK_METHODS)
def test_attack_bad_settings_are_brittle_errors(method):
    with pytest.raises(InputError, match="norm"):
        make_attack(method, "l7")
    if method != "ensemble":
        with pytest.raises(BrittleError, match="option"):
            make_attack(method, "linf", no_such_option=1)


def test_unknown_attack_names_the_choices():
    with pytest.raises(InputError, match="brittle"):
        make_attack("carlini", "linf")
