"""Runs survive: an audit killed with SIGKILL mid-run resumes without recomputing finished batches, and its
final per-sample results equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from brittle.data.loading import load_digits
from brittle.models.loading import save_torchscript
from brittle.models.zoo.architectures import mlp


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    torch.manual_seed(0)
    data = load_digits()
    net = mlp(64, (32,), 10)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(data.x), data.y).backward()
        opt.step()
    folder = tmp_path_factory.mktemp("model")
    save_torchscript(net.eval(), folder / "digits_mlp.pt", data.x[:2])
    np.savez(folder / "digits.npz", x=data.x[:240].numpy(), y=data.y[:240].numpy())
    return folder


def _cmd(folder, out, *extra):
    return [sys.executable, "-m", "brittle.cli", "--quiet", "audit", "--model", str(folder / "digits_mlp.pt"),
            "--data", str(folder / "digits.npz"), "--norm", "linf", "--eps", "0.05,0.1", "--batch-size", "20",
            "--out", str(out), "--no-report", *extra]


def _batches(out):
    conn = sqlite3.connect(out / "run.sqlite")
    try:
        return dict(conn.execute("SELECT batch, created FROM batches WHERE job = 'margins'").fetchall())
    finally:
        conn.close()


def test_sigkill_then_resume_equals_uninterrupted(digits_model, tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(digits_model, killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.2)
        if (killed / "run.sqlite").exists():
            try:
                if len(_batches(killed)) >= 3:
                    break
            except sqlite3.OperationalError:
                continue
        assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _batches(killed)
    assert 3 <= len(before) < 12, "the run should have been killed mid-way"
    assert not (killed / "samples.parquet").exists()

    done = subprocess.run(_cmd(digits_model, killed), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    after = _batches(killed)
    assert len(after) == 12
    assert all(after[b] == created for b, created in before.items()), "a finished batch was recomputed"

    fresh = tmp_path / "fresh"
    ref = subprocess.run(_cmd(digits_model, fresh), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    a, b = pd.read_parquet(killed / "samples.parquet"), pd.read_parquet(fresh / "samples.parquet")
    pd.testing.assert_frame_equal(a, b)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (killed, fresh))
    assert sa["kendall_tau"] == sb["kendall_tau"] and sa["robust_accuracy"] == sb["robust_accuracy"]


def test_rerun_with_other_settings_is_refused(digits_model, tmp_path):
    out = tmp_path / "run"
    first = subprocess.run(_cmd(digits_model, out), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    other = subprocess.run(_cmd(digits_model, out, "--seed", "7"), capture_output=True, text=True, timeout=600)
    assert other.returncode == 3
    assert "holds a different run (differs in: seed)" in other.stderr and "Traceback" not in other.stderr
    forced = subprocess.run(_cmd(digits_model, out, "--seed", "7", "--overwrite"), capture_output=True, text=True,
                            timeout=600)
    assert forced.returncode == 0, forced.stderr


def test_a_model_with_the_same_weights_but_another_forward_does_not_resume(tmp_path):
    """The run identity covers what the model computes, not only its weights: swapping ReLU for Tanh with the
    same state dict is a different run, refused rather than resumed with the first model's margins."""
    from brittle.errors import StoreError
    from brittle.margins.compute import compute_margins

    torch.manual_seed(0)
    data = load_digits().head(20)
    relu = mlp(64, (16,), 10).eval()
    tanh = torch.nn.Sequential(*[torch.nn.Tanh() if isinstance(m, torch.nn.ReLU) else m for m in relu]).eval()
    out = tmp_path / "run"
    compute_margins(relu, data, out=out, method_options={"strength": "fast"})
    with pytest.raises(StoreError, match=r"differs in: model_fingerprint"):
        compute_margins(tanh, data, out=out, method_options={"strength": "fast"})
