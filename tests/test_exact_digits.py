"""Ground truth on real data: tiny ReLU MLPs trained on sklearn digits, exact L∞ margins by MILP.

The estimator (brittle's default attack) must never go below the exact margin (that would be an invalid
adversarial example), its median ratio to the exact margin must be at most 1.02, and the certified lower
bounds (IBP, CROWN) must never exceed it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brittle import input_margins
from brittle.margins.bounds import certified_lower_bounds, exact_margins
from brittle.data.loading import load_digits

N_TEST = 24
#: HiGHS solves the MILP to an absolute gap of 1e-6 (plus 1e-7 feasibility): the "exact" margin is exact to this.
MILP_ATOL = 2e-6


def train_mlp(hidden: tuple[int, ...], seed: int) -> tuple[nn.Sequential, torch.Tensor]:
    """A small ReLU MLP trained on the first 1,400 digits; returns it and the first N_TEST held-out images."""
    data = load_digits()
    x, y = data.x, data.y
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    width = 64
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:1400]), y[:1400]).backward()
        opt.step()
    model.eval()
    held_out = x[1400:1400 + N_TEST]
    with torch.no_grad():
        accuracy = (model(x[1400:]).argmax(1) == y[1400:]).float().mean().item()
    assert accuracy > 0.85, f"the fixture network did not learn digits (held-out accuracy {accuracy:.2f})"
    return model, held_out


@pytest.fixture(scope="module", params=[(16,), (12, 12)], ids=["one-hidden", "two-hidden"])
def network_and_truth(request):
    model, x = train_mlp(request.param, seed=0)
    attack = input_margins(model, x, "linf", device="cpu", seed=0)
    exact = exact_margins(model, x, norm="linf", upper=torch.from_numpy(attack.upper), time_limit=60.0)
    assert bool(exact.exact.all()), "every MILP must be solved to optimality for the comparison to be ground truth"
    return model, x, attack, exact.margins.numpy()


def test_exact_margins_are_achieved_and_certified(network_and_truth) -> None:
    model, x, _, truth = network_and_truth
    exact = exact_margins(model, x, norm="linf", time_limit=60.0)
    np.testing.assert_allclose(exact.margins.numpy(), truth, rtol=1e-4, atol=1e-6)
    # the MILP's own minimiser, pushed past the boundary, really flips the prediction at that norm
    with torch.no_grad():
        flipped = model(exact.x_adv).argmax(1) != model(x).argmax(1)
    assert bool(flipped.all())
    assert (exact.upper.numpy() >= truth - MILP_ATOL).all() and (exact.upper.numpy() <= truth + 1e-3).all()


def test_estimator_never_below_exact_and_median_ratio_at_most_1_02(network_and_truth) -> None:
    _, _, attack, truth = network_and_truth
    assert np.isfinite(attack.upper).all()
    assert (attack.upper >= truth - MILP_ATOL).all(), "an upper bound below the exact margin is invalid"
    ratio = attack.upper / truth
    assert np.median(ratio) <= 1.02, f"median ratio to exact {np.median(ratio):.4f} > 1.02"


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_certified_lower_bounds_never_exceed_exact(network_and_truth, method: str) -> None:
    model, x, _, truth = network_and_truth
    lower = certified_lower_bounds(model, x, norm="linf", method=method).numpy()
    assert (lower >= 0).all()
    assert (lower <= truth + MILP_ATOL).all(), "a certified lower bound above the exact margin is unsound"
    assert (lower > 0).any(), "the certificates certify nothing: the test would pass for a trivial bound"


def test_crown_is_at_least_as_tight_as_ibp(network_and_truth) -> None:
    model, x, _, _ = network_and_truth
    ibp = certified_lower_bounds(model, x, norm="linf", method="ibp").numpy()
    crown = certified_lower_bounds(model, x, norm="linf", method="crown").numpy()
    assert (crown >= ibp * (1 - 1e-3)).all() and np.median(crown) > np.median(ibp)


def test_crown_ibp_sits_between_ibp_and_crown(network_and_truth) -> None:
    model, x, _, _ = network_and_truth
    ibp, mixed, crown = (certified_lower_bounds(model, x, norm="linf", method=m).numpy()
                         for m in ("ibp", "crown-ibp", "crown"))
    assert (mixed >= ibp).all() and np.median(mixed) > np.median(ibp)  # it starts from what IBP certifies
    assert np.median(crown) >= np.median(mixed)
