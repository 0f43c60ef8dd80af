"""Expected robustness on a zoo model: the attack route and the input-margin route agree (issue #7, 'done when').

Both routes give *upper bounds* on the true robust accuracy at every ε: the attack route counts the inputs APGD-CE
fails to break at that ε (``robust_accuracy_curve``), the margin route counts the correctly classified inputs whose
smallest adversarial perturbation found by brittle's boundary attack is larger than ε
(``robust_accuracy_from_margins``, every ε at once). They can only differ by how loose each attack is.

Tolerances, from the measured looseness of the attacks on ``linf_madry`` (first 100 bundled MNIST test images):
for ε ≤ 0.25 APGD-CE with 10, 20 or 100 steps, PGD-40 and the margin attack disagree by at most 1-3 images per ε,
so the curves must agree within 3 points there. At ε = 0.3 (the training ε of this FGSM-RS-trained model) attacks
disagree by up to ~20 points (its card: PGD-40 82%, APGD-CE-100 61%; here APGD-CE-10 78%, APGD-CE-100 63%,
margins 61%; 76% before the margin attack's descent stage), so that grid point is not compared on its own; in the
trapezoid it carries weight 1/24, i.e. < 1 point of expected robustness. The expected robustness of both routes must
hence agree within 2 points (measured: 1.1 with APGD-CE-10, whose curve is the looser one at ε = 0.25 by 3 images).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import brittle
from brittle.models import zoo
from brittle.data.loading import load_mnist
from brittle.analysis.robustness import expected_robustness, robust_accuracy_curve, robust_accuracy_from_margins

torch.set_num_threads(1)

N = 100
GRID = np.round(np.arange(0.0, 0.3 + 1e-9, 0.025), 4)  # 13 points, 0 .. 0.3
TOL_EXPECTED = 0.02
TOL_POINT = 0.03
POINTWISE_UP_TO = 0.25


@pytest.fixture(scope="module")
def routes():
    model = zoo.load("linf_madry")
    data = load_mnist("test").head(N)
    attack = robust_accuracy_curve(model, data, "linf", GRID, attack="apgd-ce", steps=10, seed=0, device="cpu")
    margins = brittle.input_margins(model, data, "linf", device="cpu", seed=0)
    with torch.no_grad():
        correct = (model(data.x).argmax(1) == data.y).numpy()
    by_margin = robust_accuracy_from_margins(margins.upper, correct, GRID)
    return attack["robust_accuracy"].to_numpy(), by_margin["robust_accuracy"].to_numpy(), correct


def test_attack_curve_is_non_increasing_and_starts_at_clean_accuracy(routes) -> None:
    attack, by_margin, correct = routes
    assert attack[0] == pytest.approx(correct.mean()) == pytest.approx(by_margin[0])
    assert np.all(np.diff(attack) <= 0), attack
    assert np.all(np.diff(by_margin) <= 0), by_margin
    assert attack[-1] > 0.3  # a robust model: the comparison below is not between two all-zero curves


def test_expected_robustness_attack_and_margin_routes_agree(routes) -> None:
    attack, by_margin, _ = routes
    inner = GRID <= POINTWISE_UP_TO + 1e-9
    assert np.max(np.abs(attack[inner] - by_margin[inner])) <= TOL_POINT + 1e-9, (attack, by_margin)  # 3 of 100
    er_attack, er_margin = expected_robustness(GRID, attack), expected_robustness(GRID, by_margin)
    assert 0.5 < er_attack <= attack[0]
    assert abs(er_attack - er_margin) <= TOL_EXPECTED, (er_attack, er_margin)
