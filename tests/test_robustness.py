"""Robust accuracy curves and expected robustness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brittle.data.loading import validate
from brittle.errors import InputError
from brittle.analysis.robustness import expected_robustness, robust_accuracy_curve, robust_accuracy_from_margins
from brittle.models.zoo.architectures import mnist_cnn

torch.set_num_threads(1)


def test_expected_robustness_matches_hand_trapezoid() -> None:
    grid = [0.0, 0.1, 0.2, 0.4]
    acc = [1.0, 0.8, 0.5, 0.0]
    hand = (0.1 * (1.0 + 0.8) / 2 + 0.1 * (0.8 + 0.5) / 2 + 0.2 * (0.5 + 0.0) / 2) / 0.4
    assert hand == pytest.approx(0.5125)
    assert expected_robustness(grid, acc) == pytest.approx(hand, abs=1e-12)
    assert expected_robustness([0.0, 1.0], [0.6, 0.6]) == pytest.approx(0.6)  # flat curve: its height
    assert expected_robustness([0.0], [0.9]) == pytest.approx(0.9)


@pytest.mark.parametrize("grid, acc, match", [
    ([0.1, 0.2], [0.5, 0.4], "starts at 0.1, not 0"),
    ([0.0, 0.2, 0.1], [1, 0.5, 0.4], "strictly increasing"),
    ([0.0, 0.1], [1.0], "1 accuracies for 2 eps"),
    ([0.0, 0.1], [100, 50], "fractions"),
    ([], [], "non-empty"),
])
def test_expected_robustness_validates(grid, acc, match) -> None:
    with pytest.raises(InputError, match=match):
        expected_robustness(grid, acc)


def test_robust_accuracy_from_margins_every_eps_at_once() -> None:
    margins = np.array([0.05, 0.15, np.inf, 0.3])
    correct = np.array([True, True, True, False])
    df = robust_accuracy_from_margins(margins, correct, [0.0, 0.1, 0.2, 0.3])
    assert list(df.columns) == ["eps", "robust_accuracy"]
    assert df["robust_accuracy"].tolist() == pytest.approx([0.75, 0.5, 0.25, 0.25])
    with pytest.raises(InputError, match="NaN"):
        robust_accuracy_from_margins([np.nan], [True], [0.0])
    with pytest.raises(InputError, match="2 correctness flags for 1"):
        robust_accuracy_from_margins([0.1], [True, False], [0.0])


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_curve_on_linear_model_equals_closed_form(attack: str, norm: str) -> None:
    g = torch.Generator().manual_seed(11)
    d = 10
    model = nn.Linear(d, 2)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, d, generator=g))
        model.bias.zero_()
    x = torch.randn(400, d, generator=g)
    y = (torch.rand(400, generator=g) < 0.5).long()  # random labels: about half misclassified
    with torch.no_grad():
        logits = model(x)
    w = (model.weight[1] - model.weight[0]).detach()
    gap = (logits[:, 1] - logits[:, 0]).abs()
    margin = (gap / (w.abs().sum() if norm == "linf" else w.norm())).detach()
    grid = np.quantile(margin.numpy(), [0.0, 0.2, 0.5, 0.8]) * np.array([0, 1, 1, 1])
    # stay clear of near-ties between margin and eps; L2 PGD from a random start approaches the ball's
    # boundary point only geometrically (radial projections), so it gets a wider band than APGD
    band = 0.1 if (norm, attack) == ("l2", "pgd") else 0.02
    keep = torch.ones(400, dtype=torch.bool)
    for e in grid[1:]:
        keep &= (margin - e).abs() > band * e
    data = validate(x[keep], y[keep], domain=(-60.0, 60.0))
    correct = (logits.argmax(1) == y)[keep]
    expected = robust_accuracy_from_margins(margin[keep], correct, grid)["robust_accuracy"].to_numpy()
    curve = robust_accuracy_curve(model, data, norm, grid, attack=attack, steps=20, device="cpu")
    assert curve["robust_accuracy"].to_numpy() == pytest.approx(expected, abs=1e-12)
    assert curve["robust_accuracy"].iloc[0] == pytest.approx(float(correct.float().mean()))
    assert 0 < expected[-1] < expected[0]


def test_curve_is_non_increasing_and_restores_mode() -> None:
    torch.manual_seed(0)
    model = mnist_cnn().train()
    x = torch.rand(40, 1, 28, 28)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    curve = robust_accuracy_curve(model, validate(x, y), "linf", [0.0, 0.001, 0.003, 0.01], attack="pgd",
                                  steps=5, device="cpu")
    acc = curve["robust_accuracy"].to_numpy()
    assert acc[0] == 1.0 and np.all(np.diff(acc) <= 0)
    assert model.training
    with pytest.raises(InputError, match="unknown robust-accuracy attack"):
        robust_accuracy_curve(model, validate(x, y), "linf", [0.0], attack="fab")
    with pytest.raises(InputError, match="labelled"):
        robust_accuracy_curve(model, validate(x), "linf", [0.0])


def test_expected_robustness_of_a_model_in_one_call() -> None:
    import inspect

    import brittle
    from brittle.data.loading import load_mnist
    from brittle.margins.input import input_margins
    from brittle.models import zoo

    model, data = zoo.load("standard"), load_mnist().head(24)
    value = brittle.expected_robustness(model, data, norm="linf", eps_max=0.1, points=11, device="cpu")
    margins = input_margins(model, data, "linf", device="cpu")
    grid = np.linspace(0, 0.1, 11)
    curve = robust_accuracy_from_margins(margins.upper, margins.pred == data.y.numpy(), grid)
    assert value == pytest.approx(expected_robustness(grid, curve["robust_accuracy"].to_numpy()), abs=1e-12)
    assert 0 < value < float((margins.pred == data.y.numpy()).mean())
    with pytest.raises(InputError, match="needs the threat model: norm= and eps_max="):
        brittle.expected_robustness(model, data)
    with pytest.raises(InputError, match="larger than half the domain"):
        brittle.expected_robustness(model, data, norm="linf", eps_max=8)
    with pytest.raises(InputError, match="needs accuracies"):
        brittle.expected_robustness([0.0, 0.1])
    assert inspect.signature(robust_accuracy_curve).parameters["steps"].default == 100  # trusted by default


def test_robust_accuracy_curve_refuses_eps_beyond_the_domain() -> None:
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(InputError, match="larger than half the domain"):
        robust_accuracy_curve(mnist_cnn().eval(), validate(x, torch.tensor([0, 1, 2, 3])), "linf", [0, 8])


class _DictOut(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.inner(x)}


@pytest.mark.parametrize("case, match", [
    ("labels", r"labels go up to 14 but the model has 10 outputs"),
    ("softmax", r"returns probabilities"),
    ("features", r"the model failed on inputs of shape \(2, 1, 20, 20\)"),
    ("float64", r"float64.*model\.float\(\)"),
    ("function", r"expected a torch.nn.Module, got function"),
    ("batch_size", r"batch_size must be an integer >= 1, got 0"),
    ("seed", r"seed must be an integer >= 0, got -1"),
])
def test_robust_accuracy_curve_checks_model_and_labels_as_every_entry_point(case: str, match: str) -> None:
    """It used to reach the attack unchecked: labels beyond the model's classes read 0.0 robust accuracy and a
    softmax model was attacked; the other cases ended in tracebacks from inside torch."""
    from brittle.errors import BrittleError

    torch.manual_seed(0)
    model, x, y = mnist_cnn().eval(), torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5])
    kwargs: dict = {}
    if case == "labels":
        y = torch.tensor([0, 1, 2, 3, 4, 14])
    elif case == "softmax":
        model = nn.Sequential(model, nn.Softmax(1)).eval()
    elif case == "features":
        x = torch.rand(6, 1, 20, 20)
    elif case == "float64":
        model = model.double()
    elif case == "function":
        model = lambda t: t  # noqa: E731
    else:
        kwargs = {case: 0 if case == "batch_size" else -1}
    with pytest.raises(BrittleError, match=match):
        robust_accuracy_curve(model, validate(x, y), "linf", [0.0, 0.1], steps=2, device="cpu", **kwargs)


def test_robust_accuracy_curve_reads_a_structured_output_like_the_plain_model() -> None:
    torch.manual_seed(0)
    model, x = mnist_cnn().eval(), torch.rand(12, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    data = validate(x, y)
    plain = robust_accuracy_curve(model, data, "linf", [0.0, 0.01, 0.05], steps=5, device="cpu")
    with pytest.warns(UserWarning, match="logits"):
        wrapped = robust_accuracy_curve(_DictOut(model).eval(), data, "linf", [0.0, 0.01, 0.05], steps=5,
                                        device="cpu")
    assert plain["robust_accuracy"].tolist() == wrapped["robust_accuracy"].tolist()
    assert plain["robust_accuracy"].iloc[0] == 1.0
