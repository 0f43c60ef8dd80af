"""Every row of docs/errors.md through the CLI: one line naming the problem, and the documented exit code."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest
import torch

from brittle.cli.app import main
from brittle.models.loading import save_torchscript
from brittle.models.zoo.architectures import mlp

FACTORIES = textwrap.dedent('''
    import torch
    from torch import nn
    from brittle.models.zoo.architectures import mlp

    def good():
        torch.manual_seed(0)
        return mlp(4, (8,), 3)

    class _Flat(nn.Module):
        def forward(self, x):
            return x.sum(1)

    class _NaN(nn.Module):
        def forward(self, x):
            return x @ torch.zeros(4, 3) * float("nan")

    class _NoGrad(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = good()
        def forward(self, x):
            with torch.no_grad():
                return self.net(x)

    class _OneHot(_NoGrad):
        def forward(self, x):
            return nn.functional.one_hot(self.net(x).argmax(1), 3).float()

    def flat(): return _Flat()
    def nan(): return _NaN()
    def nograd(): return _NoGrad()
    def onehot(): return _OneHot()
''')


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/brittle-bad-input-pwned",))


@pytest.fixture
def files(tmp_path, monkeypatch):
    (tmp_path / "bad_models.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    x = rng.random((12, 4)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    np.savez(tmp_path / "uint8.npz", x=(x * 255).astype(np.uint8), y=y)
    xn = x.copy()
    xn[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=xn, y=y)
    np.savez(tmp_path / "range.npz", x=x * 3.2 - 0.4, y=y)
    np.savez(tmp_path / "labels.npz", x=x, y=np.where(np.arange(12) == 5, 12, y))
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4), np.float32))
    np.savez(tmp_path / "flatshape.npz", x=x[0])
    np.savez(tmp_path / "channels.npz", x=rng.random((12, 3, 2, 2)).astype(np.float32))
    torch.manual_seed(0)
    good = mlp(4, (8,), 3)
    save_torchscript(good.eval(), tmp_path / "model.pt", torch.rand(2, 4))
    torch.save(good.state_dict(), tmp_path / "w.pt")
    raw = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    torch.save({"w": torch.zeros(1), "evil": _Evil()}, tmp_path / "evil.pt")
    np.savez(tmp_path / "text_labels.npz", x=x, y=y.astype(str))
    np.savez(tmp_path / "date_labels.npz", x=x, y=y.astype("datetime64[D]"))
    np.savez(tmp_path / "huge.npz", x=np.full((12, 4), 1e300), y=y)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    return tmp_path


def _audit(files, *args, model=None, data="ok.npz", out="out"):
    model = model or str(files / "model.pt")
    return ["--quiet", "audit", "--model", model, "--data", str(files / data), "--out", str(files / out),
            "--no-report", "--eps", "0.1", *args]


CASES = [
    ("channels", lambda f: _audit(f, data="channels.npz"), 2, "the model failed on inputs of shape (2, 3, 2, 2)"),
    ("batch-dim", lambda f: _audit(f, data="flatshape.npz"), 2, "x has shape (4,)"),
    ("dtype", lambda f: _audit(f, data="uint8.npz"), 2, "x has dtype torch.uint8"),
    ("nan", lambda f: _audit(f, data="nan.npz"), 2, "non-finite values (NaN or inf) in 1 sample(s), first at index 3"),
    ("domain", lambda f: _audit(f, data="range.npz"), 2, "outside the declared input domain [0.0, 1.0]"),
    ("labels", lambda f: _audit(f, data="labels.npz"), 2, "labels go up to 12 but the model has 3 outputs"),
    ("empty", lambda f: _audit(f, data="empty.npz"), 2, "the data is empty (0 samples)"),
    ("eps-negative", lambda f: _audit(f)[:-2] + ["--eps", "-0.1"], 2, "ε must be finite and > 0, got -0.1"),
    ("eps-nan", lambda f: _audit(f)[:-2] + ["--eps", "nan"], 2, "ε must be finite and > 0"),
    ("eps-text", lambda f: _audit(f)[:-2] + ["--eps", "abc"], 2, "--eps value 'abc' is not a number"),
    ("norm", lambda f: _audit(f, "--norm", "l3"), 2, "unknown norm 'l3'"),
    ("wrong-shape", lambda f: _audit(f, model="bad_models:flat"), 2, "the model returned shape (2,) for 2 inputs"),
    ("nan-logits", lambda f: _audit(f, model="bad_models:nan"), 2, "the model returned NaN or infinite logits"),
    ("corrupt-ckpt", lambda f: _audit(f, "--weights", str(f / "cut.pt"), model="bad_models:good"), 2,
     "is corrupt or not a torch file"),
    ("pickled-code", lambda f: _audit(f, "--weights", str(f / "evil.pt"), model="bad_models:good"), 2,
     "contains pickled code or objects, refused unexecuted"),
    ("missing-data", lambda f: _audit(f, data="missing.npz"), 2, "data file"),
    ("missing-model", lambda f: _audit(f, model=str(f / "missing.pt")), 2, "is neither a file, a zoo name"),
    ("unwritable-out", lambda f: _audit(f, out="a_file/sub"), 3, "cannot write to the output directory"),
    ("pseudo-margin-layer", lambda f: _audit(f, "--pseudo-margin", "fc9", model="bad_models:good"), 2,
     "the model has no layer 'fc9'; available: '0', '1', '2', '3'"),
    ("pseudo-margin-torchscript", lambda f: _audit(f, "--pseudo-margin", "1"), 2,
     "the layers of a TorchScript model cannot be hooked"),
    ("monitor-eps", lambda f: _audit(f, "--monitor-eps", "-0.1"), 2,
     "monitor_eps must be a finite number > 0 in the audit's norm units (linf), got -0.1"),
    ("monitor-recall", lambda f: _audit(f, "--monitor-eps", "0.1", "--monitor-recall", "1.5"), 2,
     "monitor_recall must be in (0, 1], got 1.5"),
    ("split-too-small", lambda f: _audit(f, "--monitor-eps", "0.1", "--limit", "6"), 2,
     "need at least 10 samples to split into a fit half and an evaluation half, got 6"),
]


@pytest.mark.parametrize(("name", "argv", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_row(files, capsys, name, argv, code, message):
    assert main(argv(files)) == code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0] and "Fix:" in lines[0], lines[0]
    assert not os.path.exists("/tmp/brittle-bad-input-pwned")


@pytest.mark.parametrize("factory", ["bad_models:nograd", "bad_models:onehot"])
def test_model_without_gradient(files, capsys, factory):
    assert main(_audit(files, model=factory)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "gradient" in err and "Fix:" in err and "\n" not in err


NEW_ROWS = [
    ("npz-text-labels", lambda f: _audit(f, data="text_labels.npz"), 2,
     "y has dtype <U21 (text). Fix: pass integer class indices"),
    ("npz-date-labels", lambda f: _audit(f, data="date_labels.npz"), 2, "y has dtype datetime64[D] (dates and times)"),
    ("npz-huge", lambda f: _audit(f, data="huge.npz"), 2, "x has values too large for float32 (|x| up to 1e+300"),
    ("shift-empty", lambda f: _audit(f, "--shift", ""), 2, "--shift is empty. Fix: pass one NAME:SEVERITY"),
    ("shift-blank", lambda f: _audit(f, "--shift", " "), 2, "--shift is empty"),
    ("zoo-weights-missing", lambda f: _audit(f, "--weights", str(f / "no-such.pt"), model="standard"), 2,
     "no-such.pt does not exist"),
]


@pytest.mark.parametrize(("name", "argv", "code", "message"), NEW_ROWS, ids=[c[0] for c in NEW_ROWS])
def test_refused_in_one_line_before_out_is_created(files, capsys, name, argv, code, message):
    assert main(argv(files)) == code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0] and "Fix:" in lines[0], lines[0]
    assert "Traceback" not in err and not (files / "out").exists()
