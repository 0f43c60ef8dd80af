"""``brittle ood --combine``: strategies validated before the output directory, rows in summary and report;
synthetic outliers and the OOD-free subset ranking."""

from __future__ import annotations

import json

import numpy as np
import torch
import pytest

from brittle.cli.app import main
from brittle.ood.combine import rank_subsets, synthetic_outliers


def test_cli_combine(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["--json", "ood", "-m", "standard", "--id", "mnist", "--ood", "uniform,rotated", "--detectors",
               "msp,energy,mahalanobis", "--combine", "vote,ecdf,copula,ot", "--limit", "40", "--out", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    comb = summary["combination"]
    assert comb["detectors"] == ["msp", "energy", "mahalanobis"] and set(comb["strategies"]) == {"vote", "ecdf", "copula", "ot"}
    assert "combine:ecdf" in summary["metrics"]
    html = (out / "report.html").read_text()
    assert "Combination of detectors" in html and "beats best single" in html


def test_cli_combine_bad_strategy(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["ood", "-m", "standard", "--ood", "uniform", "--detectors", "msp,energy", "--combine", "mean",
               "--limit", "40", "--out", str(out)])
    assert rc == 2 and not out.exists()
    assert "unknown combination strategy" in capsys.readouterr().err


def test_synthetic_outliers_and_ranking():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 1, 28, 28)).astype(np.float32)
    y = np.arange(40) % 4
    syn = synthetic_outliers(x, y, seed=1)
    assert set(syn) == {"noise", "patch_shuffle", "class_mix", "corruption"}
    for v in syn.values():
        assert v.shape == (40, 1, 28, 28) and float(v.min()) >= 0 and float(v.max()) <= 1
    # patch shuffle keeps the pixel multiset of every image
    np.testing.assert_allclose(np.sort(syn["patch_shuffle"].numpy().reshape(40, -1), 1), np.sort(x.reshape(40, -1), 1))
    again = synthetic_outliers(x, y, seed=1)
    assert all(np.array_equal(again[k].numpy(), syn[k].numpy()) for k in syn)
    flat = synthetic_outliers(x.reshape(40, -1), y, seed=1)
    assert flat["corruption"].shape == (40, 784)
    # ranking: a detector that separates the synthetic sets ranks above one that does not
    good = {s: rng.normal(size=50) + (0 if s.startswith("id") else 3) for s in ["id_val_a", "id_val_b", "a", "b"]}
    bad = {s: rng.normal(size=50) for s in ["id_val_a", "id_val_b", "a", "b"]}
    df = rank_subsets({"good": good, "bad": bad, "good2": good}, ["good", "bad", "good2"], strategies=("ecdf",),
                      sizes=(1, 2), synthetic_sets=("a", "b"))
    assert df.iloc[0]["mean_synthetic_auroc"] > 0.95 and "bad" not in df.iloc[0]["subset"]
    with pytest.raises(Exception):
        synthetic_outliers(x, kinds=("nope",))


def test_combined_detector_in_the_monitor():
    from brittle.data.loading import load_mnist
    from brittle.models import zoo
    from brittle.monitoring.monitor import Monitor
    from brittle.ood.combine import CombinedDetector

    model = zoo.load("standard")
    data = load_mnist("test")
    det = CombinedDetector(["energy", "mahalanobis", "grood"], strategy="copula").fit_model(model, data.head(300))
    mon = Monitor.calibrate_tpr(model, data.subset(slice(300, 500)), det, target_tpr=0.9)
    out = mon(data.subset(slice(500, 600)).x)
    flags = out.flag.cpu().numpy()
    assert flags.shape == (100,) and flags.mean() < 0.35                  # ID: mostly accepted
    noise = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert mon(noise).flag.float().mean().item() > 0.8                      # uniform noise: flagged
