"""Contract of the training objectives: every registered `Objective` is run through the same checks (finite
scalar loss with gradients, determinism for a seed, bad settings refused with a fix before anything is
written), plus hand checks of the losses and the registry as the extension point."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from brittle.data.loading import load_digits
from brittle.errors import BrittleError
from brittle.models.zoo.architectures import mlp
from brittle.training.objectives import (
    OBJECTIVES,
    BatchContext,
    Objective,
    StandardObjective,
    TradesObjective,
    make_objective,
)
from brittle.training.run import train_run
from brittle.training.trainer import Trainer, train

torch.set_num_threads(1)

ATTACK_SETTINGS = [("pgd", "linf"), ("fgsm-rs", "linf"), ("apgd-ce", "linf"), ("pgd", "l2")]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return mlp(12, (16,), 4)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(24, 12, generator=g), torch.randint(0, 4, (24,), generator=g)


def _eps(norm: str) -> float:
    return 0.1 if norm == "linf" else 0.5


def _loss(obj: Objective, model: nn.Module, eps: float, seed: int = 0) -> tuple[torch.Tensor, BatchContext]:
    x, y = _batch()
    ctx = BatchContext(eps=eps, generator=torch.Generator().manual_seed(seed))
    model.train()
    return obj.loss(model, x, y, ctx), ctx


# ------------------------------------------------------------------------------------------ contract

@pytest.mark.parametrize("attack, norm", ATTACK_SETTINGS)
@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_objective_returns_finite_scalar_loss_with_gradients(method: str, attack: str, norm: str) -> None:
    obj = make_objective(method, attack=attack, norm=norm, steps=3)
    assert isinstance(obj, Objective) and obj.name == method
    model = _model()
    loss, ctx = _loss(obj, model, _eps(norm))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.training  # the attack ran in eval mode and left the model as the trainer set it
    assert ctx.clean_logits is not None or ctx.adv_logits is not None
    for logits in (ctx.clean_logits, ctx.adv_logits):
        assert logits is None or (logits.shape == (24, 4) and not logits.requires_grad)
    assert (ctx.adv_logits is not None) == obj.adversarial


@pytest.mark.parametrize("attack, norm", ATTACK_SETTINGS)
@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_objective_is_deterministic_for_a_seed(method: str, attack: str, norm: str) -> None:
    obj = make_objective(method, attack=attack, norm=norm, steps=3)
    a, b, c = _model(), _model(), _model()
    la, _ = _loss(obj, a, _eps(norm), seed=1)
    lb, _ = _loss(obj, b, _eps(norm), seed=1)
    la.backward()
    lb.backward()
    assert torch.equal(la, lb)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))
    if obj.adversarial:
        lc, _ = _loss(obj, c, _eps(norm), seed=2)  # another seed: other random starts
        assert not torch.equal(la, lc)


@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_objective_trains_deterministically_through_train(method: str) -> None:
    d = load_digits().head(120)
    kw = {"method": method, "eps": 0.1, "steps": 2, "epochs": 2, "batch_size": 40, "progress": False, "seed": 7}
    a = mlp(64, (16,), 10)
    b = copy.deepcopy(a)
    ha, hb = train(a, d, **kw), train(b, d, **kw)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert ha.to_dicts()[-1]["loss"] == hb.to_dicts()[-1]["loss"]
    assert (ha[-1].adv_accuracy is not None) == OBJECTIVES[method].adversarial


# ------------------------------------------------------------------------------------------ bad settings

BAD = [
    ({"method": "carlini", "eps": 0.1}, "unknown training method"),
    ({"method": "madry", "eps": -0.1}, "eps must be finite and >= 0"),
    ({"method": "madry", "eps": float("nan")}, "eps must be finite"),
    ({"method": "trades", "eps": 0.1, "trades_beta": -1.0}, "trades_beta must be"),
    ({"method": "trades", "eps": 0.1, "attack": "apgd-t"}, "TRADES needs an inner attack that maximises its KL"),
    ({"method": "madry", "eps": 0.1, "norm": "l3"}, "unknown norm"),
    ({"method": "madry", "eps": 0.1, "attack": "cw"}, "unknown training attack"),
    ({"method": "madry", "eps": 0.1, "steps": 0}, "steps must be"),
    ({"method": "madry", "eps": 0.1, "step_ratio": -1.0}, "step_ratio"),
    ({"method": "standard", "label_smoothing": 1.0}, "label_smoothing"),
    ({"method": "standard", "optimizer": "lbfgs"}, "unknown optimizer"),
    ({"method": "standard", "weight_decay": -1.0}, "weight_decay"),
    ({"method": "standard", "val_eps": -0.1}, "val_eps"),
]


@pytest.mark.parametrize("kwargs, match", BAD)
def test_bad_settings_are_refused_with_a_fix_before_anything_is_written(kwargs: dict, match: str, tmp_path) -> None:
    d = load_digits().head(40)
    model = mlp(64, (8,), 10)
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    model.train()
    with pytest.raises(BrittleError, match=match) as info:
        Trainer(**kwargs)
    assert info.value.fix
    with pytest.raises(BrittleError, match=match):
        train(model, d, progress=False, **kwargs)
    out = tmp_path / "run"
    with pytest.raises(BrittleError, match=match):
        train_run(model, d, out, **kwargs)
    assert not out.exists()  # no run directory, no run.sqlite
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags and model.training


def test_bad_model_data_or_resume_state_is_refused_before_the_model_changes(tmp_path) -> None:
    d = load_digits().head(40)
    model = mlp(64, (8,), 10)
    model.train()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(BrittleError, match="last_k=5"):
        train_run(model, d, tmp_path / "a", protocol="partial", last_k=5)
    assert not (tmp_path / "a").exists()
    with pytest.raises(BrittleError, match="resume_state") as info:
        train(model, d, progress=False, resume_state={"epoch": 0, "model": mlp(64, (9,), 10).state_dict(),
                                                      "optimizer": {}, "lr_scheduler": {}})
    assert info.value.fix
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training


@pytest.mark.parametrize("cls, kwargs, match", [
    (StandardObjective, {"norm": "l0"}, "unknown norm"),
    (TradesObjective, {"trades_beta": -0.5}, "trades_beta"),
    (TradesObjective, {"trades_beta": float("inf")}, "trades_beta"),
    (TradesObjective, {"attack": "apgd-t"}, "apgd-t has its own targeted loss"),
])
def test_objective_constructors_check_their_settings(cls: type[Objective], kwargs: dict, match: str) -> None:
    with pytest.raises(BrittleError, match=match) as info:
        cls(**kwargs)
    assert info.value.fix


# ------------------------------------------------------------------------------------------ hand checks

def test_standard_objective_is_cross_entropy() -> None:
    model = _model()
    x, y = _batch()
    for smoothing in (0.0, 0.1):
        model.train()
        got = StandardObjective(label_smoothing=smoothing).loss(model, x, y, BatchContext(eps=0.0))
        assert torch.equal(got, F.cross_entropy(model(x), y, label_smoothing=smoothing))


@pytest.mark.parametrize("attack", ["pgd", "fgsm-rs"])
def test_trades_with_beta_zero_is_the_standard_objective(attack: str) -> None:
    model = _model()
    trades, _ = _loss(TradesObjective(trades_beta=0.0, attack=attack, steps=3), model, eps=0.1)
    standard, _ = _loss(StandardObjective(), model, eps=0.1)
    assert torch.allclose(trades, standard, rtol=0, atol=1e-7)
    with_beta, _ = _loss(TradesObjective(trades_beta=6.0, attack=attack, steps=3), model, eps=0.1)
    assert with_beta > standard  # the KL term is > 0 at eps > 0


def test_madry_at_eps_zero_is_the_standard_objective() -> None:
    model = _model()
    madry, ctx = _loss(make_objective("madry"), model, eps=0.0)
    standard, _ = _loss(StandardObjective(), model, eps=0.0)
    assert torch.equal(madry, standard) and ctx.adv_logits is None and ctx.clean_logits is not None


def test_a_new_method_is_a_class_and_a_registry_entry(monkeypatch) -> None:
    class Doubled(StandardObjective):
        name = "doubled"

        def loss(self, model, x, y, context):
            return 2 * super().loss(model, x, y, context)

    monkeypatch.setitem(OBJECTIVES, "doubled", Doubled)
    d = load_digits().head(80)
    a, b = mlp(64, (8,), 10), mlp(64, (8,), 10)
    b.load_state_dict(a.state_dict())
    h_new = train(a, d, method="doubled", optimizer="sgd", momentum=0.0, lr=0.05, batch_size=40, progress=False)
    h_std = train(b, d, method="standard", optimizer="sgd", momentum=0.0, lr=0.1, batch_size=40, progress=False)
    assert h_new[0].loss == pytest.approx(2 * h_std[0].loss, rel=1e-5)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))


def test_apgd_t_refuses_a_loss_it_would_ignore() -> None:
    from brittle.margins.attacks.pgd import run_attack
    x, y = _batch()
    with pytest.raises(BrittleError, match="apgd-t uses its own targeted DLR loss") as info:
        run_attack("apgd-t", _model().eval(), x, y, 0.1, loss=lambda logits, y: logits.sum(1))
    assert info.value.fix
