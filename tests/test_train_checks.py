"""`brittle train` / `train_run` check ε, the model on the data and the labels before anything is trained or
written: a refusal comes at once, in one line, with no run directory and the model untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brittle.cli import main
from brittle.data.loading import as_data, load_digits
from brittle.errors import InputError, ModelError
from brittle.models.zoo.architectures import mlp
from brittle.training.run import train_run


@pytest.fixture(scope="module")
def digits():
    return load_digits().head(120)


def _never(record):  # a callback that fails the test if any epoch is trained
    raise AssertionError(f"epoch {record.epoch} was trained although the run should have been refused")


def _bad_labels(data, top=14):
    y = data.y.clone()
    y[3] = top
    return as_data((data.x.numpy(), y.numpy()))


class _Dict(nn.Module):
    """forward returns {"logits": ...}: fine to audit (adapted), but training needs the logits themselves."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return {"logits": self.net(x)}


def _bn_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))


@pytest.mark.parametrize(("case", "error", "message"), [
    ("eps-domain", InputError, "ε = 8 is larger than half the domain's width"),
    ("train-labels", InputError, "training data: labels go up to 14 but the model has 10 outputs"),
    ("val-labels", InputError, "validation data: labels go up to 14 but the model has 10 outputs"),
    ("val-shape", ModelError, "validation data: the model failed on inputs of shape (2, 8, 8, 1)"),
    ("dict-output", ModelError, "the model returns dict, not a tensor of logits"),
    ("eval-grid-domain", InputError, "ε = 2 is larger than half the domain's width"),
    ("eval-grid-start", InputError, "eps grid starts at 0.1, not 0"),
    ("eval-n", InputError, "eval_n must be an integer >= 1, got 0"),
])
def test_train_run_refuses_before_training_or_writing(digits, tmp_path, case, error, message):
    model = _bn_mlp()  # in train mode, with batch-norm statistics that a forward pass in train mode would move
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = {"val_data": digits, "epochs": 2, "batch_size": 60, "callback": _never}
    data = digits
    if case == "eps-domain":
        kwargs.update(method="madry", eps=8.0, steps=1)
    elif case == "train-labels":
        data = _bad_labels(digits)
    elif case == "val-labels":
        kwargs["val_data"] = _bad_labels(digits)
    elif case == "val-shape":
        kwargs["val_data"] = as_data((digits.x.numpy().reshape(-1, 8, 8, 1), digits.y.numpy()))
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
        data = as_data((digits.x.numpy().reshape(-1, 1, 8, 8), digits.y.numpy()))
        before = {k: v.clone() for k, v in model.state_dict().items()}
    elif case == "dict-output":
        model = _Dict()
        before = {k: v.clone() for k, v in model.state_dict().items()}
    elif case == "eval-grid-domain":
        kwargs["eval_eps_grid"] = [0.0, 0.1, 2.0]
    elif case == "eval-grid-start":
        kwargs["eval_eps_grid"] = [0.1, 0.2]
    elif case == "eval-n":
        kwargs["eval_n"] = 0
    out = tmp_path / "run"
    with pytest.raises(error) as info:
        train_run(model, data, out, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()
    assert model.training  # the caller's mode, and the weights and statistics as they were
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_channel_last_training_data_is_refused_by_the_forward_probe(tmp_path):
    from brittle.models.zoo.architectures import mnist_cnn

    rng = np.random.default_rng(0)
    data = as_data((rng.random((6, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, 6)))
    with pytest.raises(ModelError, match=r"training data: the model failed on inputs of shape \(2, 28, 28, 1\)"):
        train_run(mnist_cnn(), data, tmp_path / "run", epochs=1, callback=_never)
    assert not (tmp_path / "run").exists()


def test_a_valid_run_still_trains(digits, tmp_path):
    torch.manual_seed(0)
    summary = train_run(mlp(), digits, tmp_path / "run", val_data=digits, epochs=1, batch_size=60,
                        method="madry", eps=0.05, steps=1, eval_n=20)
    assert summary["epochs"] == 1 and 0 <= summary["robust_accuracy"] <= summary["clean_accuracy"] <= 1
    assert (tmp_path / "run" / "model.pt").is_file()


# ------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    d = load_digits().head(100)
    folder = tmp_path_factory.mktemp("train_npz")
    x, y = d.x.reshape(100, -1).numpy(), d.y.numpy()
    np.savez(folder / "ok.npz", x=x, y=y)
    np.savez(folder / "labels.npz", x=x, y=np.where(np.arange(100) == 7, 14, y))
    np.savez(folder / "wide.npz", x=np.concatenate([x, x[:, :8]], 1), y=y)  # 72 features for a 64-input MLP
    return folder


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "madry", "--eps", "8", "--steps", "1"], "ε = 8 is larger than half the domain's width"),
    (["--data", "labels.npz"], "training data: labels go up to 14 but the model has 10 outputs"),
    (["--val-data", "labels.npz"], "validation data: labels go up to 14 but the model has 10 outputs"),
    (["--data", "wide.npz"], "training data: the model failed on inputs of shape (2, 72)"),
    (["--eps", "8"], "ε = 8 is larger than half the domain's width"),  # standard training: the evaluation ε
])
def test_cli_train_refuses_in_one_line_without_a_run_directory(npz, tmp_path, capsys, args, message):
    base = {"--data": "ok.npz", "--val-data": "ok.npz"}
    for flag in base:
        if flag in args:
            base[flag] = args[args.index(flag) + 1]
    rest = [a for i, a in enumerate(args) if a not in base and (i == 0 or args[i - 1] not in base)]
    out = tmp_path / "out"
    code = main(["--quiet", "train", "--arch", "brittle.models.zoo.architectures:mlp",
                 "--data", str(npz / base["--data"]), "--val-data", str(npz / base["--val-data"]),
                 "--epochs", "3", "--batch-size", "50", "--eval-n", "20", "--out", str(out), *rest])
    _refused_in_one_line(code, capsys.readouterr().err, message, out)


def _stop_after_the_first_epoch(record):  # module-level: the same callback (by name) when the run resumes
    return record.epoch == 0


def test_train_seconds_of_a_resumed_run_cover_every_epoch(digits, tmp_path):
    """``train_seconds`` sums the epochs' own times (kept in the checkpoint), so a resumed run counts the epochs
    of its earlier session too, not only the time of the last one."""
    out = tmp_path / "run"
    kwargs = {"epochs": 3, "batch_size": 60, "callback": _stop_after_the_first_epoch}
    torch.manual_seed(0)
    first = train_run(mlp(), digits, out, **kwargs)  # stopped after epoch 1 of 3
    assert first["epochs"] == 1
    torch.manual_seed(0)
    resumed = train_run(mlp(), digits, out, **kwargs)  # resumes: epochs 2 and 3
    seconds = [r["seconds"] for r in resumed["history"]]
    assert len(seconds) == 3 and seconds[0] == first["history"][0]["seconds"]
    assert resumed["train_seconds"] == pytest.approx(sum(seconds), rel=1e-12)


def _finetune(out, *extra):
    return ["--quiet", "finetune", "-m", "standard", "-d", "mnist", "--limit", "40", "--val-data", "mnist",
            "--epochs", "2", "--batch-size", "20", "--eval-n", "20", "--out", str(out), *extra]


def _train(npz, out, *extra):
    return ["--quiet", "train", "--arch", "brittle.models.zoo.architectures:mlp", "--data", str(npz / "ok.npz"),
            "--val-data", str(npz / "ok.npz"), "--epochs", "2", "--batch-size", "50", "--eval-n", "20",
            "--out", str(out), *extra]


@pytest.mark.parametrize(("command", "extra", "message"), [
    ("finetune", ["--eval-n", "0"], "--eval-n must be an integer >= 1, got 0. Fix: pass the number of validation"),
    ("train", ["--eval-n", "-5"], "--eval-n must be an integer >= 1, got -5"),
    ("finetune", ["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    ("train", ["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    ("finetune", ["--method", "madry", "--eps", "0.1", "--schedule", "two-hinge", "--t1", "5", "--t2", "30"],
     "starts its ramp at epoch t1=5, but the run has 2 epoch(s): ε would stay 0 throughout"),
    ("train", ["--method", "madry", "--eps", "0.1", "--steps", "1", "--schedule", "two-hinge", "--t1", "1",
               "--t2", "30"], "reaches ε=0.1 at epoch t2=30, but the run has 2 epoch(s)"),
    ("train", ["--method", "madry", "--eps", "0.1", "--steps", "1", "--schedule", "linear", "--warmup", "3"],
     "after warmup=3 epochs, but the run has 2 epoch(s)"),
    ("finetune", ["--method", "madry", "--eps", "0.1", "--schedule", "linear", "--t1", "1"],
     "ε schedule option t1 (--t1) does not apply to the 'linear' schedule"),
    ("finetune", ["--method", "madry", "--eps", "0.1", "--t1", "1"],
     "ε schedule option t1 (--t1) does not apply to the 'constant' schedule"),
    ("train", ["--t1", "1", "--t2", "2"], "an ε schedule (t1=1.0, t2=2.0) applies to adversarial training only"),
    ("finetune", ["--schedule", "linear"], "an ε schedule (schedule='linear') applies to adversarial training only"),
])
def test_cli_training_settings_refused_in_one_line(npz, tmp_path, capsys, command, extra, message):
    out = tmp_path / "out"
    argv = _finetune(out, *extra) if command == "finetune" else _train(npz, out, *extra)
    code = main(argv)
    _refused_in_one_line(code, capsys.readouterr().err, message, out)


def _refused_in_one_line(code: int, err: str, message: str, out) -> None:
    """Exit 2, one `error: … Fix: …` line naming ``message``, no traceback, and no ``out`` written."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0] and "Fix:" in lines[0], err
    assert "Traceback" not in err and "bug in brittle" not in err
    assert not out.exists()
