"""Fixed-budget attacks: closed-form checks on linear models, constraints, side effects, bad settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brittle.margins.attacks.apgd import _apgd_checkpoints
from brittle.margins.attacks.pgd import apgd_ce, fgsm_rs, pgd, project, run_attack
from brittle.errors import InputError
from brittle.models.zoo.architectures import mnist_cnn

torch.set_num_threads(1)
WIDE = (-50.0, 50.0)  # a domain the linear tests never touch, so the closed-form margins are exact


def _linear_problem(n: int = 64, d: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, 2)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, d, generator=g))
        model.bias.copy_(torch.randn(2, generator=g))
    x = torch.randn(n, d, generator=g)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)  # every sample correct: robust iff the margin exceeds eps
    w = model.weight[1] - model.weight[0]
    gap = (logits[:, 1] - logits[:, 0]).abs()
    margins = {"linf": gap / w.abs().sum(), "l2": gap / w.norm()}
    return model, x, y, margins


def _factors(n: int, seed: int) -> torch.Tensor:
    """Per-sample multipliers of the margin, none within 2% of 1."""
    g = torch.Generator().manual_seed(seed)
    f = 0.5 + torch.rand(n, generator=g)
    return torch.where((f - 1).abs() < 0.02, f + 0.05, f)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["pgd", "apgd-ce"])
def test_linear_model_fooled_exactly_beyond_closed_form_margin(norm: str, attack: str) -> None:
    model, x, y, margins = _linear_problem()
    eps = margins[norm] * _factors(len(x), 1)
    if attack == "pgd":
        x_adv = pgd(model, x, y, eps, norm=norm, steps=20, domain=WIDE, rand_init=(norm == "linf"))
    else:
        x_adv = apgd_ce(model, x, y, eps, norm=norm, steps=20, domain=WIDE)
    fooled = model(x_adv).argmax(1) != y
    expected = margins[norm] < eps
    assert expected.any() and (~expected).any()
    assert torch.equal(fooled, expected)


def test_fgsm_rs_with_full_step_reaches_linf_corner() -> None:
    model, x, y, margins = _linear_problem(seed=3)
    eps = margins["linf"] * _factors(len(x), 4)
    x_adv = fgsm_rs(model, x, y, eps, alpha=2 * eps, domain=WIDE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x_adv).argmax(1) != y, margins["linf"] < eps)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["pgd", "fgsm-rs", "apgd-ce"])
def test_results_stay_in_ball_and_domain_with_per_sample_eps(norm: str, attack: str) -> None:
    torch.manual_seed(0)
    model = mnist_cnn().train()
    x = torch.rand(6, 1, 28, 28)
    y = torch.arange(6)
    eps = torch.tensor([0.0, 0.05, 0.1, 0.3, 0.5, 1.0]) * (1 if norm == "linf" else 5)
    x_adv = run_attack(attack, model, x, y, eps, norm=norm, steps=5)
    delta = (x_adv - x).reshape(6, -1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert torch.all(size <= eps * (1 + 1e-5) + 1e-6)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x_adv[0], x[0])  # eps = 0 leaves the input alone
    assert model.training  # the caller's mode is kept
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients accumulated


def test_pgd_is_reproducible_with_a_generator() -> None:
    model, x, y, margins = _linear_problem(seed=5)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = pgd(model, x, y, 0.5, steps=3, domain=WIDE, generator=g1, keep_best=False)
    b = pgd(model, x, y, 0.5, steps=3, domain=WIDE, generator=g2, keep_best=False)
    assert torch.equal(a, b)


def test_project_linf_and_l2() -> None:
    x = torch.zeros(2, 3)
    xa = torch.tensor([[2.0, -0.1, 0.5], [3.0, 4.0, 0.0]])
    e = torch.tensor([[0.3], [1.0]])
    p = project(x, xa, e, "linf", (-10, 10))
    assert torch.allclose(p, torch.tensor([[0.3, -0.1, 0.3], [1.0, 1.0, 0.0]]))
    p2 = project(x, xa, e, "l2", (-10, 10))
    assert torch.allclose(p2[1], torch.tensor([0.6, 0.8, 0.0]))
    assert torch.allclose(p2[0].norm(), torch.tensor(0.3))


def test_apgd_checkpoints_match_the_paper_schedule() -> None:
    assert _apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_apgd_not_weaker_than_pgd_on_small_cnn() -> None:
    torch.manual_seed(1)
    model = mnist_cnn().eval()
    x = torch.rand(32, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 0.002  # tiny budget: some but not all flips
    n_pgd = int((model(pgd(model, x, y, eps, steps=20)).argmax(1) != y).sum())
    n_apgd = int((model(apgd_ce(model, x, y, eps, steps=20)).argmax(1) != y).sum())
    assert n_apgd >= n_pgd - 1


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": -0.1}, "eps"),
    ({"eps": torch.tensor([0.1, 0.2])}, "eps has 2 values"),
    ({"eps": 0.1, "norm": "l1"}, "unknown norm"),
    ({"eps": 0.1, "steps": 0}, "steps"),
])
def test_bad_settings_raise_input_error(kwargs: dict, match: str) -> None:
    model, x, y, _ = _linear_problem(n=4)
    with pytest.raises(InputError, match=match):
        pgd(model, x, y, **kwargs)


def test_unknown_attack_name() -> None:
    model, x, y, _ = _linear_problem(n=4)
    with pytest.raises(InputError, match="unknown attack"):
        run_attack("cw", model, x, y, 0.1)


def test_apgd_agrees_with_reference_autoattack() -> None:
    """Optional cross-check against the authors' APGD (``pip install --no-deps pyautoattack``)."""
    ref = pytest.importorskip("pyautoattack.autopgd_base")
    from brittle.models import zoo
    from brittle.data.loading import load_mnist

    if "standard" not in zoo.names():
        pytest.skip("zoo model 'standard' not built")
    model = zoo.load("standard")
    d = load_mnist("test").head(100)
    with torch.no_grad():
        ok = model(d.x).argmax(1) == d.y
    mine = apgd_ce(model, d.x, d.y, 0.05, steps=50, generator=torch.Generator().manual_seed(0))
    theirs = ref.APGDAttack(model, norm="Linf", eps=0.05, n_iter=50, n_restarts=1, loss="ce", seed=0,
                            device="cpu").perturb(d.x, d.y)
    with torch.no_grad():
        r_mine = float((ok & (model(mine).argmax(1) == d.y)).float().mean())
        r_theirs = float((ok & (model(theirs).argmax(1) == d.y)).float().mean())
    assert 0 < r_theirs < float(ok.float().mean())  # the budget is informative
    assert abs(r_mine - r_theirs) <= 0.03
