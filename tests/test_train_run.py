"""Training runs resume after a kill without losing finished epochs, and end equal to an uninterrupted run."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from brittle.data.loading import load_digits


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    d = load_digits()
    folder = tmp_path_factory.mktemp("digits")
    np.savez(folder / "train.npz", x=d.x[:1200].reshape(1200, -1).numpy(), y=d.y[:1200].numpy())
    np.savez(folder / "val.npz", x=d.x[1200:].reshape(-1, 64).numpy(), y=d.y[1200:].numpy())
    return folder


EPOCHS = 12  # epochs take a fraction of a second: leave the kill a wide window


def _cmd(folder, out):
    return [sys.executable, "-m", "brittle.cli", "--quiet", "train", "--arch", "brittle.models.zoo.architectures:mlp",
            "--data", str(folder / "train.npz"), "--val-data", str(folder / "val.npz"), "--method", "madry",
            "--attack", "pgd", "--steps", "2", "--eps", "0.05", "--schedule", "two-hinge", "--t1", "1", "--t2", "3",
            "--epochs", str(EPOCHS), "--batch-size", "100", "--eval-n", "100", "--out", str(out)]


def _checkpoint_epoch(out):
    try:
        conn = sqlite3.connect(out / "run.sqlite")
        row = conn.execute("SELECT payload FROM artifacts WHERE name = 'checkpoint'").fetchone()
        conn.close()
    except sqlite3.OperationalError:
        return -1
    if row is None:
        return -1
    return int(torch.load(io.BytesIO(row[0][32:]), weights_only=True)["epoch"])  # after the payload's SHA-256


def test_kill_and_resume_training(digits_npz, tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(digits_npz, killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and _checkpoint_epoch(killed) < 1:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = _checkpoint_epoch(killed)
    assert 1 <= finished < EPOCHS - 1, "the kill came too late to test resuming"
    state = torch.load(io.BytesIO(sqlite3.connect(killed / "run.sqlite").execute(
        "SELECT payload FROM artifacts WHERE name = 'checkpoint'").fetchone()[0][32:]), weights_only=True)
    kept = state["history"]

    resumed = subprocess.run(_cmd(digits_npz, killed), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((killed / "summary.json").read_text())
    assert len(summary["history"]) == EPOCHS
    for before, after in zip(kept, summary["history"]):  # finished epochs were kept, not re-run
        assert before["seconds"] == after["seconds"] and before["loss"] == after["loss"]

    fresh = tmp_path / "fresh"
    ref = subprocess.run(_cmd(digits_npz, fresh), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    a = torch.load(killed / "model.pt", weights_only=True)
    b = torch.load(fresh / "model.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ref_summary = json.loads((fresh / "summary.json").read_text())
    # two-hinge, per iteration: ε(t) = 0.05 · clip((t - 1) / 2, 0, 1) with t = epoch + batch / 12 (12 batches);
    # the history records ε of each epoch's last batch
    expected = [0.05 * min(max((e + 11 / 12 - 1) / 2, 0.0), 1.0) for e in range(EPOCHS)]
    assert [h["eps"] for h in ref_summary["history"]] == pytest.approx(expected)
    assert summary["clean_accuracy"] == ref_summary["clean_accuracy"]
    assert (killed / "training_curve.png").stat().st_size > 10_000


def test_resume_with_a_callback_of_another_process(tmp_path):
    """A run with a callback resumes: the run configuration names functions, not their memory addresses."""
    from brittle.training.run import train_run
    from brittle.models.zoo.architectures import mlp

    torch.set_num_threads(1)
    data = load_digits().head(200)

    def make_callback(seen):
        def on_epoch(rec):
            seen.append(rec.epoch)
        return on_epoch

    first, second = [], []
    torch.manual_seed(0)
    train_run(mlp(), data, tmp_path / "run", epochs=2, batch_size=100, callback=make_callback(first))
    torch.manual_seed(0)  # same initial model; a new function object, as in a new process
    summary = train_run(mlp(), data, tmp_path / "run", epochs=2, batch_size=100, callback=make_callback(second))
    assert first == [0, 1] and second == []  # finished epochs are reused, not re-run
    assert summary["epochs"] == 2
