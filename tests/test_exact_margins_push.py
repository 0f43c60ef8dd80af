"""`exact_margins` turns the MILP minimiser into a verified adversarial example (audit findings F2, F3).

The minimiser lies on the decision boundary, often on a ReLU kink, and is pushed a hair past it. The pushes
must find a flipping point next to a kink where autograd's one-sided gradient points the wrong way (F2),
and must scale with the domain's units (F3: absolute pushes vanished below float32 resolution on [0, 255]).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from brittle.margins.bounds import exact as exact_module
from brittle.margins.bounds import exact_margins
from brittle.margins.bounds.exact import push_tolerance


def kink_net(scale: float = 1.0) -> nn.Sequential:
    """A 2-D ReLU net on ``[0, scale]²`` whose L∞ margin at the centre is ``0.2 * scale``, reached at a kink.

    In units ``u = x1/scale - 0.5``, ``v = x2/scale - 0.5``: ``logit_1 - logit_0 = u + v - 0.4 - 4 relu(k)``
    with ``k = 2v - u - 0.2``. Where ``k <= 0`` class 1 needs ``u + v >= 0.4``; where ``k > 0`` it cannot win
    inside the ball of radius 0.2. So the margin is 0.2, reached only at ``u = v = 0.2``, where ``k = 0``.
    There autograd's gradient (the ``k <= 0`` side) and the radial direction are both ``(1, 1)``, which
    enters ``k > 0`` and lowers the lead; moving along ``(1, 0)`` flips the prediction.
    """
    lin1, lin2 = nn.Linear(2, 3), nn.Linear(3, 2)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 2.0]]) / scale)
        lin1.bias.copy_(torch.tensor([0.0, 0.0, -0.7]))
        lin2.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, -4.0]]))
        lin2.bias.copy_(torch.tensor([1.0, -0.4]))
    return nn.Sequential(lin1, nn.ReLU(), lin2).eval()


def random_net() -> tuple[nn.Sequential, torch.Tensor]:
    """A 4-8-8-3 ReLU net on [0, 1]⁴ (the audit's) and 8 inputs."""
    torch.manual_seed(12)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(3)
        model[0].bias.sub_(model[0].weight @ torch.full((4,), 0.5))
    return model, torch.rand(8, 4)


def rescaled(model: nn.Sequential, scale: float) -> nn.Sequential:
    """The same function on inputs multiplied by ``scale``."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out[0].weight.div_(scale)
    return out


def check_sound(model: nn.Module, x: torch.Tensor, result, domain: tuple[float, float]) -> None:
    """Every sample exact; the examples flip the model (batched) within the push tolerance of the margin."""
    assert bool(result.exact.all())
    with torch.no_grad():
        assert bool((model(result.x_adv).argmax(1) != model(x).argmax(1)).all())
    norms = (result.x_adv.double() - x.double()).abs().amax(1)
    torch.testing.assert_close(result.upper, norms)
    assert bool((result.upper >= result.margins - 1e-6 * (domain[1] - domain[0])).all())
    assert bool((result.upper <= result.margins + push_tolerance(domain)).all())
    torch.testing.assert_close(result.lower, result.margins, rtol=1e-6, atol=2e-6 * (domain[1] - domain[0]))


def test_push_tolerance_is_relative_to_the_domain_and_above_float_resolution() -> None:
    assert push_tolerance((0.0, 1.0)) == pytest.approx(1e-4)
    assert push_tolerance((0.0, 255.0)) == pytest.approx(255e-4)
    assert push_tolerance((-1.0, 1.0)) == pytest.approx(2e-4)
    # a narrow domain far from zero: 64 float32 steps at 1001 exceed 1e-4 of its width
    assert push_tolerance((1000.0, 1001.0)) == pytest.approx(64 * torch.finfo(torch.float32).eps * 1001)
    assert push_tolerance((1000.0, 1001.0), torch.float64) == pytest.approx(1e-4)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_minimiser_on_a_kink_is_pushed_to_a_verified_example(scale: float) -> None:
    model = kink_net(scale)
    x = torch.tensor([[0.5, 0.5]]) * scale
    # the fixture really defeats the cheap pushes (the signed-gradient step and the radial stretch)
    x0, minimiser = x[0].double(), torch.tensor([0.7, 0.7], dtype=torch.float64) * scale
    assert exact_module._push(model, x0, minimiser, 0, 1, (0.0, scale)) is None
    result = exact_margins(model, x, domain=(0.0, scale))
    check_sound(model, x, result, (0.0, scale))
    torch.testing.assert_close(result.margins, torch.tensor([0.2 * scale], dtype=torch.float64),
                               rtol=1e-6, atol=1e-6 * scale)
    assert result.adv_class.tolist() == [1]


def test_same_function_on_0_1_and_0_255_gives_margins_in_proportion() -> None:
    model, u = random_net()
    unit = exact_margins(model, u, domain=(0.0, 1.0))
    check_sound(model, u, unit, (0.0, 1.0))
    wide_model, x = rescaled(model, 255.0), u * 255.0
    wide = exact_margins(wide_model, x, domain=(0.0, 255.0))
    check_sound(wide_model, x, wide, (0.0, 255.0))
    torch.testing.assert_close(wide.margins / 255.0, unit.margins, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(wide.lower / 255.0, unit.lower, rtol=1e-5, atol=1e-7)


def test_warm_started_exact_method_closes_the_bracket_on_the_kink() -> None:
    """``input_margins(method="exact")`` reports the MILP's margin, not the attack's looser bound."""
    from brittle import input_margins

    model = kink_net()
    x = torch.tensor([[0.5, 0.5]])
    res = input_margins(model, x, "linf", "exact", device="cpu", time_limit=20.0)
    assert res.lower[0] == pytest.approx(0.2, abs=1e-6)
    assert 0.2 - 1e-6 <= res.upper[0] <= 0.2 + push_tolerance((0.0, 1.0))
