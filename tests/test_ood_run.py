"""The OOD benchmark, the `brittle ood` command (validation, outputs, resume, report) and monitors on OOD
detectors (calibrated at a target TPR on ID data; a brittleness and an OOD flag in one pass)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from brittle.cli.app import main
from brittle.errors import InputError


@pytest.fixture(scope="module")
def model():
    from brittle.models import zoo

    return zoo.load("standard")


def test_benchmark_splits_sets_and_evaluate(model):
    from brittle.ood import Benchmark

    b = Benchmark.mnist(["fashion-mnist", "rotated", "uniform"], limit=200)
    assert len(b.train_set()) == 200 and len(b.val_set()) == 50 and set(b.test_sets()) == {"id", "fashion-mnist",
                                                                                         "rotated", "uniform"}
    # the default MNIST splits do not overlap (bundled test split cut in file order)
    full = Benchmark.mnist(["uniform"])
    assert (len(full.train_set()), len(full.val_set()), len(full.test_data)) == (4000, 1000, 5000)
    r = b.evaluate(model, ["msp", "vim"])
    assert set(r.table["detector"]) == {"msp", "vim"} and len(r.table) == 6
    assert set(r.scores["vim"]) == {"id_val", "id_test", "fashion-mnist", "rotated", "uniform"}
    assert r.pivot().loc["vim", "fashion-mnist"] > 0.8
    assert set(r.winners()) == {"fashion-mnist", "rotated", "uniform", "mean"}
    with pytest.raises(InputError, match="unknown data .nope."):
        Benchmark.mnist(["nope"])  # neither a generated set nor loadable data


def test_detectors_sharing_a_name_are_labelled_by_their_parameters(model, tmp_path):
    """ViM(dim=10) and ViM(dim=60) in one evaluation: two rows each, equal to evaluating the detector alone
    (before, the second overwrote the first under the label 'vim'); run_ood stores and reports both."""
    from brittle.ood import Benchmark, Energy, ViM
    from brittle.ood.run import run_ood

    b = Benchmark.mnist(["fashion-mnist", "uniform"], limit=100)
    r = b.evaluate(model, [ViM(dim=10), ViM(dim=60), Energy()])
    assert list(dict.fromkeys(r.table["detector"])) == ["vim(dim=10)", "vim(dim=60)", "energy"]
    assert len(r.table) == 6
    for dim in (10, 60):
        alone = b.evaluate(model, [ViM(dim=dim)])
        label = f"vim(dim={dim})"
        assert r.detectors[label].dim == dim
        np.testing.assert_array_equal(r.pivot().loc[label].to_numpy(), alone.pivot().loc["vim"].to_numpy())
        for name, scores in alone.scores["vim"].items():
            np.testing.assert_array_equal(r.scores[label][name], scores)
    assert r.pivot().loc["vim(dim=10)", "mean"] != r.pivot().loc["vim(dim=60)", "mean"]
    out = tmp_path / "run"
    summary = run_ood(model, b, [ViM(dim=10), ViM(dim=60)], out, config={"test": 1}, report=False)
    assert {k: v["params"]["dim"] for k, v in summary["detectors"].items()} == {"vim(dim=10)": 10, "vim(dim=60)": 60}
    for label in ("vim(dim=10)", "vim(dim=60)"):
        assert summary["mean_auroc"][label] == pytest.approx(r.pivot().loc[label, "mean"], abs=1e-12)
    scores = pd.read_parquet(out / "scores.parquet")
    np.testing.assert_array_equal(scores.loc[scores["set"] == "uniform", "vim(dim=60)"], r.scores["vim(dim=60)"]["uniform"])
    # two detectors equal in name and parameters would overwrite each other: refused before anything is written
    with pytest.raises(InputError, match="detectors 1 and 2 are both 'vim' with the same parameters"):
        b.evaluate(model, [ViM(dim=10), ViM(dim=10)])
    with pytest.raises(InputError, match="both 'vim' with the same parameters"):
        run_ood(model, b, [ViM(dim=10), ViM(dim=10)], tmp_path / "same", config={"test": 1}, report=False)
    assert not (tmp_path / "same").exists()


def test_fit_data_that_makes_a_detector_degenerate_is_refused_before_the_run(model, tmp_path):
    """One-class ID data: RMD (whose score would be rounding noise) and GROOD (nothing to mix) are refused by
    run_ood before its directory is created, and by evaluate before any detector is fitted; Mahalanobis runs."""
    from brittle.data.loading import load_mnist
    from brittle.data.ood_sets import uniform_noise
    from brittle.ood import Benchmark
    from brittle.ood.grood import GROOD
    from brittle.ood.rmd import RMD
    from brittle.ood.run import run_ood

    mnist = load_mnist()
    threes = mnist.subset(np.flatnonzero(mnist.y.numpy() == 3)[:200])
    b = Benchmark.from_data(threes, {"uniform": uniform_noise(40, seed=0)})
    for det in (RMD(), GROOD()):
        name = type(det).__name__
        with pytest.raises(InputError, match=f"{name} needs fit inputs of at least 2 classes, the fit labels hold "
                                             "only class 3"):
            run_ood(model, b, [det], tmp_path / name, config={"test": 1}, report=False)
        assert not (tmp_path / name).exists()
        with pytest.raises(InputError, match=f"{name} needs fit inputs of at least 2 classes"):
            b.evaluate(model, ["msp", det])
    assert b.evaluate(model, ["mahalanobis"]).pivot().loc["mahalanobis", "uniform"] > 0.9


def test_ood_sets_are_deterministic():
    from brittle.data.loading import load_mnist
    from brittle.data.ood_sets import OOD_SETS, load_ood_set

    src = load_mnist().subset(slice(5000, 5040))
    for name in OOD_SETS:
        a, b = load_ood_set(name, src, seed=3, n=40), load_ood_set(name, src, seed=3, n=40)
        assert torch.equal(a.x, b.x) and a.x.shape[1:] == (1, 28, 28)
        assert float(a.x.min()) >= 0 and float(a.x.max()) <= 1
    assert not torch.equal(load_ood_set("permuted", src, seed=1).x, load_ood_set("permuted", src, seed=2).x)
    assert torch.equal(load_ood_set("rotated", src).x, torch.rot90(src.x, 1, dims=(-2, -1)))


def test_cli_writes_outputs_resumes_and_validates_first(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["ood", "-m", "standard", "--ood", "fashion-mnist,inverted", "--detectors", "msp,mahalanobis,odin",
            "--limit", "120", "--out", str(out), "--quiet"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["metrics"]) == {"msp", "mahalanobis", "odin"}
    assert set(summary["metrics"]["msp"]) == {"fashion-mnist", "inverted"}
    assert "ID positives" in summary["convention"] and summary["winners"]["mean"]["auroc"] in summary["metrics"]
    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores["set"]) == {"id_val", "id_test", "fashion-mnist", "inverted"}
    assert {"msp", "mahalanobis", "odin"} <= set(scores.columns)
    html = (out / "report.html").read_text()
    assert "Who wins where" in html and "data:image/png;base64" in html
    # resume: the stored detectors and scores are reused (identical), nothing is fitted again
    before = scores.copy()
    import brittle.ood.benchmark as B

    fit = B.Session.fit
    B.Session.fit = lambda *a, **k: (_ for _ in ()).throw(AssertionError("refitted on resume"))
    try:
        assert main(args) == 0
    finally:
        B.Session.fit = fit
    pd.testing.assert_frame_equal(pd.read_parquet(out / "scores.parquet"), before)
    # the timings are those of the sessions that did the work (a resume counted only its own, near-zero time)
    assert json.loads((out / "summary.json").read_text())["detectors"] == summary["detectors"]
    # a different run into the same directory is refused (exit 3), every bad input before the directory exists
    assert main([*args[:-3], "--limit", "100", "--out", str(out), "--quiet"]) == 3
    for bad in (["--detectors", "nope"], ["--ood", "nope"], ["--target-tpr", "1.5"], ["-m", "no-such-model"]):
        fresh = tmp_path / f"bad{len(bad[1])}"
        base = ["ood", "-m", "standard", "--out", str(fresh), "--quiet"]
        assert main(base + bad) == 2
        assert not fresh.exists()


def test_monitor_takes_an_ood_detector_calibrated_at_a_target_tpr(model):
    from brittle.data.loading import load_mnist
    from brittle.data.ood_sets import load_fashion_mnist_test
    from brittle.monitoring.monitor import Monitor
    from brittle.ood import ViM

    mnist = load_mnist()
    vim = ViM().fit_model(model, mnist.subset(slice(0, 1000)))
    val = mnist.subset(slice(4000, 4400))
    mon = Monitor.calibrate_tpr(model, val, vim, target_tpr=0.9)
    out_val = mon(val.x)
    assert int(out_val.flag.sum()) <= 40                              # ≥ 90% of the 400 ID calibration inputs accepted
    np.testing.assert_allclose(out_val.score.cpu().numpy(), vim.score_model(model, val), rtol=1e-6)
    ood = load_fashion_mnist_test().subset(slice(0, 400))
    assert mon(ood.x).flag.float().mean().item() > 0.5                # most Fashion-MNIST images flagged
    test = mnist.subset(slice(6000, 6400))
    assert abs(1 - mon(test.x).flag.float().mean().item() - 0.9) < 0.06   # TPR on fresh ID data near the target


def test_combined_monitor_gives_a_brittleness_and_an_ood_flag_in_one_pass(model):
    from brittle.data.loading import load_mnist
    from brittle.monitoring.combined import CombinedMonitor
    from brittle.monitoring.monitor import Monitor
    from brittle.ood import KNN, ODIN, Energy

    mnist = load_mnist()
    val = mnist.subset(slice(4000, 4300))
    knn = KNN(k=10).fit_model(model, mnist.subset(slice(0, 1000)))
    ood = Monitor.calibrate_tpr(model, val, knn, target_tpr=0.95)
    odin = Monitor.calibrate_tpr(model, val, ODIN(eps=0.001), target_tpr=0.95)
    energy = Monitor.calibrate_tpr(model, val, Energy(), target_tpr=0.95)
    brittle = Monitor(model, "logit", threshold=2.0)
    both = CombinedMonitor({"brittle": brittle, "ood": ood, "odin": odin, "energy": energy})
    x = mnist.x[7000:7100]
    out = both(x)
    for name, mon in (("brittle", brittle), ("ood", ood), ("odin", odin), ("energy", energy)):
        single = mon(x)
        torch.testing.assert_close(out.scores[name], single.score)
        assert torch.equal(out.flags[name], single.flag)
    assert torch.equal(out.any_flag, out.flags["brittle"] | out.flags["ood"] | out.flags["odin"] | out.flags["energy"])
    assert torch.equal(out.pred, brittle(x).pred)


def test_cli_prints_ood_set_names_from_file_paths_literally(tmp_path, capsys, monkeypatch):
    """An OOD file at '[/x].npz' (folder '[') made the summary table crash with a MarkupError (exit 1, after
    report.html and summary.json were written); a path's ESC bytes reached the terminal."""
    import io

    from rich.console import Console

    import brittle.cli._common as common
    import brittle.cli.ood as cli_ood
    from brittle.data.loading import load_data

    monkeypatch.chdir(tmp_path)
    mnist = load_data("mnist", limit=60)
    (tmp_path / "[").mkdir()
    names = ["[/x].npz", "[bold]b.npz", "\x1b[2Jc.npz"]
    for name in names:
        np.savez(tmp_path / name, x=1.0 - mnist.x.numpy(), y=mnist.y.numpy())
    screen = io.StringIO()
    wide = Console(file=screen, width=200)
    monkeypatch.setattr(common, "console", wide)
    monkeypatch.setattr(cli_ood, "console", wide)
    code = main(["ood", "-m", "standard", "--ood", ",".join(names), "--detectors", "msp", "--limit", "40",
                 "--out", "run"])
    out = screen.getvalue()
    assert code == 0, capsys.readouterr().err
    assert "[/x].npz" in out and "[bold]b.npz" in out and "[2Jc.npz" in out, out
    assert "\x1b" not in out, repr(out)


def test_the_split_note_names_the_images_a_limited_run_uses():
    """With --limit 300 the note still said "images 0–3,999 fit, 4,000–4,999 val, 5,000–9,999 test"."""
    from brittle.data.loading import load_mnist
    from brittle.ood.benchmark import Benchmark

    bench = Benchmark.mnist(ood="uniform", limit=300)
    assert bench.notes == ["ID: bundled MNIST test split — images 0–299 fit, 4,000–4,074 val, 5,000–5,299 test"]
    full = load_mnist()
    assert torch.equal(bench.val_data.x, full.x[4000:4075]) and torch.equal(bench.test_data.x, full.x[5000:5300])
    assert Benchmark.mnist(ood="uniform").notes == [
        "ID: bundled MNIST test split — images 0–3,999 fit, 4,000–4,999 val, 5,000–9,999 test"]


def test_who_wins_where_names_every_detector_tied_for_best():
    """energy and combine:vote both had 7.0% FPR on uniform (both bold in the table) but only one was named."""
    import pandas as pd

    from brittle.report.ood import report_context

    def m(auroc, fpr):
        return {"auroc": auroc, "fpr_at_tpr": fpr, "aupr_in": 0.5, "aupr_out": 0.5}

    summary = {"ood_sets": ["uniform"], "metrics": {"energy": {"uniform": m(0.9, 0.07)},
                                                     "combine:vote": {"uniform": m(0.95, 0.07)},
                                                     "msp": {"uniform": m(0.95, 0.2)}},
               "winners": {"uniform": {"auroc": "combine:vote", "fpr_at_tpr": "combine:vote"},
                           "mean": {"auroc": "combine:vote", "fpr_at_tpr": "combine:vote"}},
               "detectors": {"energy": {}, "combine:vote": {}, "msp": {}}}
    ctx = report_context(summary, pd.DataFrame())
    assert set(ctx["winners"]["uniform"]["fpr_at_tpr"].split(", ")) == {"energy", "combine:vote"}
    assert set(ctx["winners"]["uniform"]["auroc"].split(", ")) == {"combine:vote", "msp"}
    assert summary["winners"]["uniform"]["fpr_at_tpr"] == "combine:vote"  # the summary itself is left as written
