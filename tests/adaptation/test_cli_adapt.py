"""`brittle adapt` and `brittle audit --shift`: exit codes, nothing written on bad input, resume, outputs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from brittle.cli.app import main

BASE = ["adapt", "-m", "standard_bn", "--shift", "gaussian_noise:5,fog:4", "--limit", "96", "--holdout", "64",
        "--batch-size", "16", "--chunk", "32", "--quiet"]


@pytest.mark.parametrize("extra", [
    ["--shift", "fog:9"], ["--shift", "snow:2"], ["--method", "cotta"], ["--gate", "most"],
    ["--method", "bn", "--gate", "least"], ["--threshold", "2"], ["--window", "0"], ["--batch-size", "0"],
    ["--passes", "0"], ["--bn-stats", "running"], ["--order", "random"], ["--holdout", "100000"],
    ["-m", "standard"],  # no BatchNorm to adapt
    ["-m", "no_such_model"], ["--lr", "-1"], ["--params", "some"],
])
def test_bad_inputs_exit_2_and_write_nothing(tmp_path, extra):
    out = tmp_path / "run"
    assert main(BASE + ["--out", str(out)] + extra) == 2
    assert not out.exists()


def test_adapt_run_resume_and_outputs(tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = BASE + ["--out", str(out), "--gate", "least-single", "--passes", "2", "--save-model"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    steps = pd.read_parquet(out / "steps.parquet")
    assert summary["n"] == 192 and summary["steps"] == 24 and len(steps) == 24
    assert list(summary["accuracy_per_segment"]) == ["gaussian_noise:5", "fog:4"]
    assert len(summary["clean_accuracy"]["after_pass"]) == 2 and summary["forgetting"] is not None
    assert sum(summary["updates_per_layer"].values()) <= 24  # single-layer mode: one layer per step at most
    assert (out / "report.html").read_text().count("data:image/png") == 2
    state = torch.load(out / "model.pt", weights_only=True)
    from brittle.models.zoo.architectures import mnist_bn_cnn
    mnist_bn_cnn().load_state_dict(state)  # loads into the original architecture

    # interrupted after the second chunk: the re-run resumes and ends where the full run ended
    import brittle.adaptation.stream as stream_mod
    out2 = tmp_path / "run2"
    real = stream_mod.adapt_run

    def interrupted(*a, **k):
        def stop(c):
            if c == 1:
                raise KeyboardInterrupt
        return real(*a, **{**k, "on_chunk": stop})
    monkeypatch.setattr(stream_mod, "adapt_run", interrupted)
    args2 = BASE + ["--out", str(out2), "--gate", "least-single", "--passes", "2", "--save-model", "--no-report"]
    assert main(args2) == 130
    assert not (out2 / "summary.json").exists()
    monkeypatch.setattr(stream_mod, "adapt_run", real)
    assert main(args2) == 0
    s2 = json.loads((out2 / "summary.json").read_text())
    for k in ("online_accuracy", "passes", "updates_per_layer", "clean_accuracy"):
        assert s2[k] == summary[k], k
    pd.testing.assert_frame_equal(pd.read_parquet(out2 / "steps.parquet"), steps)
    state2 = torch.load(out2 / "model.pt", weights_only=True)
    assert all(torch.equal(state[k], state2[k]) for k in state)

    # a different run into the same directory is refused (exit 3) unless --overwrite
    assert main(BASE + ["--out", str(out), "--method", "pl", "--no-report"]) == 3
    assert main(BASE + ["--out", str(out), "--method", "bn", "--overwrite", "--no-report"]) == 0


def test_audit_under_shift(tmp_path):
    out = tmp_path / "audit"
    assert main(["audit", "-m", "standard_bn", "--shift", "fog:9", "--out", str(out), "--quiet"]) == 2
    assert main(["audit", "-m", "standard_bn", "--shift", "fog:1,invert:2", "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    assert main(["audit", "-m", "standard_bn", "--shift", "invert:5", "--limit", "8", "--eps", "0.1",
                 "--batch-size", "8", "--out", str(out), "--quiet", "--no-report"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 8 and "invert:5" in json.dumps(summary)


@pytest.mark.parametrize("summary, steps, message", [
    ("[" * 100_000 + "]" * 100_000, None, r"summary.json is not valid JSON \(RecursionError\)"),
    ("{", None, r"summary.json is not valid JSON"),
    ("{}", b"not parquet", r"steps.parquet cannot be read"),
])
def test_a_damaged_adaptation_run_is_named_corrupt(tmp_path, capsys, summary, steps, message):
    """Its files were read with bare json.loads / pd.read_parquet: a damaged one ended as "unexpected ...
    a bug in brittle" (exit 1)."""
    from brittle.adaptation.stream import load_adapt_run
    from brittle.errors import StoreError
    from brittle.report.adapt import render_adapt_report

    (tmp_path / "summary.json").write_text(summary)
    (tmp_path / "steps.parquet").write_bytes(steps if steps is not None else b"")
    for read in (load_adapt_run, render_adapt_report):
        with pytest.raises(StoreError, match=message + r".*Fix: re-run brittle adapt to rewrite it"):
            read(tmp_path)
