"""Validation before side effects: for every command that writes a run directory, an invalid setting that
only the API can judge exits 2 and leaves no directory (no ``run.sqlite``), and the corrected command then
succeeds in the same directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brittle.cli import main
from brittle.data.loading import load_digits


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    d = load_digits()
    folder = tmp_path_factory.mktemp("digits")
    np.savez(folder / "train.npz", x=d.x[:300].reshape(300, -1).numpy(), y=d.y[:300].numpy())
    return folder / "train.npz"


def _commands(npz):
    quick_train = ["--arch", "brittle.models.zoo.architectures:mlp", "--data", str(npz), "--val-data", str(npz),
                   "--epochs", "1", "--batch-size", "100", "--eval-n", "20"]
    return {
        "audit": (["audit", "-m", "standard", "-d", "mnist", "--limit", "10", "--eps", "0.1", "--batch-size", "10",
                   "--no-report"], ["--method", "carlini"]),
        "margins": (["margins", "-m", "standard", "-d", "mnist", "--limit", "10", "--batch-size", "10"],
                    ["--lower", "magic"]),
        "train": (["train", *quick_train], ["--method", "carlini"]),
        "finetune": (["finetune", "-m", "standard", "-d", "mnist", "--limit", "40", "--val-data", "mnist",
                      "--epochs", "1", "--batch-size", "20", "--eval-n", "20"], ["--attack", "bogus"]),
        "ood": (["ood", "-m", "standard", "--ood", "uniform", "--detectors", "msp", "--limit", "200", "--no-report"],
                ["--detectors", "no-such-detector"]),
        "adapt": (["adapt", "-m", "standard_bn", "--shift", "gaussian_noise:3", "--limit", "64", "--batch-size", "32",
                   "--no-report"], ["--method", "magic"]),
    }


@pytest.mark.parametrize("command", ["audit", "margins", "train", "finetune", "ood", "adapt"])
def test_bad_setting_leaves_no_run_directory_and_the_fix_runs_there(command, digits_npz, tmp_path, capsys):
    good, bad = _commands(digits_npz)[command]
    out = tmp_path / "D"
    code = main(["--quiet", *good, *bad, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "run.sqlite").exists() and not out.exists()
    assert main(["--quiet", *good, "--out", str(out)]) == 0, capsys.readouterr().err
    assert out.is_dir()


# settings that only the model, the bound propagation or the analysis can judge: refused up front as well
@pytest.mark.parametrize(("command", "bad", "message"), [
    ("audit", ["--seed", "-1"], "seed must be an integer >= 0"),
    ("margins", ["--seed", "-1"], "seed must be an integer >= 0"),
    ("margins", ["--method", "exact", "--norm", "l2"], "method 'exact' supports norm 'linf' only"),
    ("margins", ["-m", "standard_bn", "--lower", "crown"], "BatchNorm2d is not supported by the certified bounds"),
    ("audit", ["-m", "standard_bn", "--lower", "ibp"], "BatchNorm2d is not supported by the certified bounds"),
])
def test_settings_judged_by_the_model_leave_no_run_directory(command, bad, message, digits_npz, tmp_path, capsys):
    good = _commands(digits_npz)[command][0]
    out = tmp_path / "D"
    code = main(["--quiet", *good, *bad, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


class _RandomNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.lin(torch.nn.functional.dropout(x.flatten(1), 0.5, training=True))


def test_a_random_model_is_refused_before_anything_is_written(tmp_path):
    from brittle.errors import ModelError
    from brittle.margins.compute import compute_margins

    data = load_digits().head(40)
    with pytest.raises(ModelError, match="changed between two identical forward passes.*deterministic"):
        compute_margins(_RandomNet().eval(), data, out=tmp_path / "D", device="cpu")
    assert not (tmp_path / "D").exists()


def _cli_audit(out, *extra):
    return ["--quiet", "audit", "-m", "standard", "--limit", "10", "--eps", "0.1", "--no-report", "--backend", "ray",
            "--out", str(out), *extra]


@pytest.mark.parametrize(("extra", "message"), [
    (["--gpus-per-worker", "1", "--device", "cpu"], "--gpus-per-worker was given but --device is cpu"),
    (["--device", "cuda"], "device cuda with the ray backend needs GPUs for the workers"),
    (["--address", "127.0.0.1:1"], "could not connect to the Ray cluster at '127.0.0.1:1'"),
    (["--gpus-per-worker", "1"], "not enough for one worker"),
])
def test_cli_ray_settings_refused_before_out(tmp_path, capsys, extra, message):
    """Ray settings are judged before the run directory exists: a conflict with --device at once, the cluster's
    connection (bounded: an address nothing answers on fails in seconds) and resources before the store. (Here,
    not in test_ray_backend.py, whose in-process Ray instance would stand in for the cluster.)"""
    pytest.importorskip("ray", reason="needs Ray: pip install 'brittle[ray]'")
    import time

    if extra == ["--gpus-per-worker", "1"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU for the worker")
    out = tmp_path / "out"
    start = time.time()
    code = main(_cli_audit(out, *extra))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]  # Ray's own log lines
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0] and "Fix:" in lines[0], err
    assert "Traceback" not in err and not out.exists()
    assert time.time() - start < 120
