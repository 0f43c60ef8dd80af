"""Sanity checks that stop silent nonsense: inputs on the wrong scale, ε larger than the domain allows,
models that return probabilities, grayscale images without a channel dimension."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import brittle
from brittle.core.validation import check_eps_for_domain
from brittle.data.loading import load_mnist, validate
from brittle.errors import InputError, ModelError
from brittle.models import zoo
from brittle.models.loading import check_input_scale, looks_like_probabilities, prepare_model


@pytest.fixture(scope="module")
def mnist16():
    return load_mnist().head(16)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "brittle.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


# ---- inputs far outside the model's scale ----------------------------------------------------------------

def test_0_255_pixels_into_a_0_1_zoo_model_are_refused(mnist16):
    model = zoo.load("standard")
    pixels = validate(mnist16.x * 255, mnist16.y, domain=(0, 255), num_classes=10)
    with pytest.raises(ModelError, match=r"trained on inputs in \[0, 1\] but the data reaches.*Fix: divide the inputs by 255"):
        prepare_model(model, device="cpu", sample=pixels.x[:2])
    with pytest.raises(ModelError, match="trained on inputs in"):
        brittle.logit_margins(model, pixels)
    check_input_scale(model, mnist16.x[:2])  # the right scale passes


def test_0_255_pixels_with_domain_0_255_on_the_cli(tmp_path, mnist16):
    np.savez(tmp_path / "pixels.npz", x=(mnist16.x * 255).numpy(), y=mnist16.y.numpy())
    proc = _cli("audit", "-m", "standard", "-d", str(tmp_path / "pixels.npz"), "--domain", "0,255", "--eps", "0.1",
                "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: the model was trained on inputs in [0, 1]"), proc.stderr
    assert not (tmp_path / "run" / "run.sqlite").exists()


def test_pixel_values_outside_0_1_get_the_divide_by_255_hint(mnist16):
    with pytest.raises(InputError, match=r"look like 0-255 pixel values: divide by 255"):
        validate(mnist16.x * 255, mnist16.y)
    with pytest.raises(InputError, match=r"normalisation belongs inside the model"):
        validate(mnist16.x - 0.5, mnist16.y)  # not pixels: the general hint


# ---- ε against the domain ----------------------------------------------------------------------------------

def test_eps_larger_than_half_the_domain_is_refused():
    with pytest.raises(InputError, match=r"ε = 8 is larger than half the domain's width.*8/255 instead of 8"):
        check_eps_for_domain([0.1, 8], "linf", (0, 1), 784)
    assert check_eps_for_domain([8 / 255, 0.5], "linf", (0, 1), 784) == [8 / 255, 0.5]
    assert check_eps_for_domain([8], "linf", (0, 255), 784) == [8.0]
    assert check_eps_for_domain([3.0], "l2", (0, 1), 784) == [3.0]  # L2: half the diagonal is 14
    with pytest.raises(InputError, match="half the diagonal"):
        check_eps_for_domain([15.0], "l2", (0, 1), 784)


def test_audit_refuses_eps_beyond_the_domain_before_any_side_effect(tmp_path, mnist16):
    model = zoo.load("standard")
    with pytest.raises(InputError, match=r"ε = 8 is larger than half the domain's width.*8/255 instead of 8"):
        brittle.audit(model, mnist16, eps=[0.1, 8], out=tmp_path / "run")
    with pytest.raises(InputError, match="half the diagonal"):
        brittle.audit(model, mnist16, norm="l2", eps=15, out=tmp_path / "run")
    with pytest.raises(InputError, match=r"ε = 0.9 is larger than half the domain's width"):
        brittle.audit(model, mnist16, eps=0.1, monitor_eps=0.9, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_compute_margins_refuses_budgets_beyond_the_domain(tmp_path, mnist16):
    with pytest.raises(InputError, match=r"ε = 8 is larger than half the domain's width"):
        brittle.compute_margins(zoo.load("standard"), mnist16, out=tmp_path / "m", method_options={"budgets": [8]})
    assert not (tmp_path / "m").exists()


def test_robust_accuracy_curve_refuses_a_grid_beyond_the_domain(mnist16):
    with pytest.raises(InputError, match=r"ε = 8 is larger than half the domain's width"):
        brittle.robust_accuracy_curve(zoo.load("standard"), mnist16, "linf", [0, 0.1, 8])


def test_cli_audit_eps_8_on_0_1_data_is_refused_in_one_line(tmp_path):
    proc = _cli("audit", "-m", "standard", "--eps", "8", "--limit", "16", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ε = 8 is larger than half the domain's width"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()


# ---- probabilities instead of logits ----------------------------------------------------------------------

class _Softmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = zoo.load("standard")

    def forward(self, x):
        return torch.softmax(self.net(x), 1)


def test_probabilities_are_refused_with_the_fix(mnist16):
    with pytest.raises(ModelError, match="returns probabilities.*Fix: pass logits: remove the softmax"):
        brittle.logit_margins(_Softmaxed().eval(), mnist16)
    logits = zoo.load("standard")(mnist16.x[:4])
    assert not looks_like_probabilities(logits)
    assert not looks_like_probabilities(torch.log_softmax(logits, 1))  # log-probabilities are fine
    assert looks_like_probabilities(torch.softmax(logits, 1))
    brittle.logit_margins(nn.Sequential(zoo.load("standard"), nn.LogSoftmax(1)).eval(), mnist16)


class _NaNAfter(nn.Module):
    """Finite logits for the first ``k`` inputs it ever sees, NaN for later ones (a later batch goes bad)."""

    def __init__(self, k: int):
        super().__init__()
        self.net, self.k, self.seen = zoo.load("standard"), k, 0

    def forward(self, x):
        out = self.net(x)
        rows = torch.arange(self.seen, self.seen + len(x)) >= self.k
        self.seen += len(x)
        return torch.where(rows.unsqueeze(1), torch.full_like(out, float("nan")), out)


def test_logit_checks_cover_every_batch_not_only_the_first(mnist16):
    # logit_margins reads the value checks back once, at the end: a NaN in the third batch still fails the call
    with pytest.raises(ModelError, match="NaN or infinite logits"):
        brittle.logit_margins(_NaNAfter(k=9).eval(), mnist16, batch_size=4)
    out = brittle.logit_margins(_NaNAfter(k=16).eval(), mnist16, batch_size=4)  # all finite: same as the model
    torch.testing.assert_close(torch.from_numpy(out.margin),
                               torch.from_numpy(brittle.logit_margins(zoo.load("standard"), mnist16).margin))
    with pytest.raises(ModelError, match="returns probabilities"):  # checked on the first batch, read at the end
        brittle.logit_margins(_Softmaxed().eval(), mnist16, batch_size=4)


# ---- (N, H, W) grayscale ------------------------------------------------------------------------------------

def test_grayscale_without_channel_is_refused_by_name_in_python(mnist16):
    flat = validate(mnist16.x[:, 0], mnist16.y, num_classes=10)
    assert flat.x.shape == (16, 28, 28)
    with pytest.raises(ModelError, match=r"shape \(N, 28, 28\) without a channel dimension.*x.unsqueeze\(1\)"):
        brittle.logit_margins(zoo.load("standard"), flat)


def test_grayscale_without_channel_is_handled_on_the_cli(tmp_path, mnist16):
    np.savez(tmp_path / "gray.npz", x=mnist16.x[:, 0].numpy(), y=mnist16.y.numpy())
    proc = _cli("--json", "margins", "-m", "standard", "-d", str(tmp_path / "gray.npz"), "--out", str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr
    assert "added a channel dimension" in proc.stderr and "(16, 1, 28, 28)" in proc.stderr
