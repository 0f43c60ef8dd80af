"""Pseudo-margin and deployment monitor inside `brittle.audit` (and `brittle audit`): fit half / evaluation half,
summary entries and columns equal to what the public PseudoMargin / Monitor API gives, saved files, report
sections, resume, argument errors, CLI flags."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import brittle
from brittle.auditing.pipeline import audit
from brittle.auditing.stages import MIN_SPLIT_SAMPLES, split_halves
from brittle.cli.app import main
from brittle.errors import InputError
from brittle.monitoring.monitor import Monitor
from brittle.scores.pseudo_margin import PseudoMargin, evaluate_pseudo_margin
from brittle.models.features import extract_features
from brittle.models.zoo.architectures import mlp

WIDE = (-10.0, 10.0)  # a box that never binds: closed-form margins of linear models are exact


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster than two contended ones on shared CPU cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _digits_mlp(n=120):
    torch.manual_seed(0)
    model = mlp(64, (16,), 10).eval()
    with torch.no_grad():
        model[-1].weight.mul_(4)  # larger logits: a spread of margins
    data = brittle.load_digits().subset(slice(0, n))
    return model, data


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_run")
    model, data = _digits_mlp()
    eps = [0.05, 0.1]
    result = audit(model, data, norm="linf", eps=eps, out=out, device="cpu", n_boot=50, seed=3,
                   pseudo_margin="2", monitor_eps=0.05, monitor_recall=0.9)
    return model, data, eps, out, result


def test_columns_and_summary_equal_the_public_api(digits_run):
    model, data, eps, out, result = digits_run
    table, s = result.table, result.summary
    for col in ("split", "pseudo_margin", "monitor_flag"):
        assert col in table
    fit = split_halves(len(data), 3)
    assert ((table["split"].to_numpy() == "fit") == fit).all()
    calib, test = (table["split"] == "calib").to_numpy(), (table["split"] == "eval").to_numpy()
    assert calib.sum() == 30 and test.sum() == 30  # the monitor's calibration / evaluation quarters
    assert fit.sum() == 60 and not np.array_equal(fit, split_halves(len(data), 4))
    fi, ei = np.flatnonzero(fit), np.flatnonzero(~fit)
    upper = table["input_margin_upper"].to_numpy()

    feats = extract_features(model, data, "2", device="cpu")
    pm = PseudoMargin("ranking", inputs="both", seed=3).fit(feats.subset(fi), upper[fi])
    assert np.allclose(pm.predict(feats), table["pseudo_margin"].to_numpy())
    rows = evaluate_pseudo_margin(pm, feats.subset(ei), upper[ei], eps, n_boot=50, seed=3)
    entry = s["pseudo_margin"]
    assert entry["layer"] == "2" and entry["inputs"] == "both" and entry["loss"] == "ranking"
    assert (entry["n_fit"], entry["n_eval"]) == (60, 60)
    for tag, score in (("before", "logit_margin"), ("after", "pseudo_margin")):
        part = rows[rows["score"] == score]
        assert entry[f"kendall_tau_{tag}"] == pytest.approx(part["kendall_tau"].iloc[0])
        for e, auroc in zip(eps, part["auroc"]):
            assert entry[f"auroc_{tag}"][str(e)] == pytest.approx(auroc)
    tau = stats.kendalltau(upper[ei], feats.subset(ei).logit_margin).statistic
    assert entry["kendall_tau_before"] == pytest.approx(tau)

    # the monitor on the pseudo-margin is calibrated on points the pseudo-margin never saw
    ci, ti = np.flatnonzero(calib), np.flatnonzero(test)
    mon = Monitor.calibrate(model, data.subset(ci), upper[ci], 0.05, target_recall=0.9, score=pm)
    m = s["monitor"]
    assert m["score"] == "pseudo_margin" and m["threshold"] == pytest.approx(mon.threshold)
    assert m["calibrated_on"] == "calibration quarter" and m["n_calibration"] == 30
    rep = mon.evaluate(data.subset(ti), upper[ti])
    assert (m["recall"], m["false_alarm_rate"], m["n"]) == pytest.approx((rep.recall, rep.false_alarm_rate, 30))
    # held-out recall = a hand count of the flags on the evaluation quarter
    flags, pos = table["monitor_flag"].to_numpy(), upper <= 0.05
    ev = test
    assert m["n_nonrobust"] == int((pos & ev).sum()) > 0
    assert m["recall"] == pytest.approx((flags & pos & ev).sum() / (pos & ev).sum())
    assert m["false_alarm_rate"] == pytest.approx((flags & ~pos & ev).sum() / (~pos & ev).sum())
    assert m["calibration"]["recall"] >= 0.9


def test_saved_files_reload(digits_run):
    model, data, _, out, result = digits_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert {"pseudo_margin", "monitor"} <= set(on_disk)
    samples = brittle.load_run(out)
    assert {"split", "pseudo_margin", "monitor_flag"} <= set(samples.columns)
    pm = PseudoMargin.load(out / "pseudo_margin.json")
    assert np.allclose(pm.predict(extract_features(model, data, "2", device="cpu")), samples["pseudo_margin"])
    mon = Monitor.load(out / "monitor.json", model)
    assert mon.threshold == result.monitor.threshold and mon.score_kind == "pseudo_margin"
    assert np.array_equal(mon(data.x).flag.numpy(), samples["monitor_flag"].to_numpy())
    assert np.array_equal(mon(data.x).flag.numpy(), result.monitor(data.x).flag.numpy())


def test_resume_recomputes_the_analysis_and_drops_stale_files(digits_run, tmp_path):
    model, data, eps, out, first = digits_run
    # same margins settings, other analysis settings: the store resumes (no refusal, no recomputation)
    again = audit(model, data, norm="linf", eps=eps, out=out, device="cpu", n_boot=50, seed=3,
                  pseudo_margin="logits", monitor_eps=0.1)
    assert again.summary["forward_passes"] == first.summary["forward_passes"]
    assert np.array_equal(again.table["input_margin_upper"], first.table["input_margin_upper"])
    assert again.summary["pseudo_margin"]["layer"] == "logits" and again.summary["monitor"]["eps"] == 0.1
    assert again.summary["monitor"]["score"] == "pseudo_margin"
    plain = audit(model, data, norm="linf", eps=eps, out=out, device="cpu", n_boot=50, seed=3)
    assert "pseudo_margin" not in plain.summary and "split" not in plain.table
    assert not (out / "pseudo_margin.json").exists() and not (out / "monitor.json").exists()
    # monitor without pseudo-margin: the logit margin is the score
    logit_only = audit(model, data, norm="linf", eps=eps, out=out, device="cpu", n_boot=50, seed=3, monitor_eps=0.05)
    m = logit_only.summary["monitor"]
    assert m["score"] == "logit" and "pseudo_margin" not in logit_only.table
    fi = np.flatnonzero(split_halves(len(data), 3))
    upper = logit_only.table["input_margin_upper"].to_numpy()
    assert m["threshold"] == pytest.approx(Monitor.calibrate(model, data.subset(fi), upper[fi], 0.05).threshold)


def test_pseudo_margin_restores_the_order_of_an_inconsistent_linear_model():
    """Three classes w0 = 0, w1 = a·u, w2 = -b·u (‖u‖₁ = 1): the L∞ input margin is |u·x| on both sides, the
    logit margin a·|u·x| on one side and b·|u·x| on the other (inconsistent when a ≪ b); the third sorted logit
    gap is (a + b)·|u·x| everywhere, so a pseudo-margin from the logits can recover the order."""
    rng = np.random.default_rng(0)
    u = rng.normal(size=5)
    u /= np.abs(u).sum()
    a, b = 0.1, 8.0
    lin = nn.Linear(5, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(np.stack([np.zeros(5), a * u, -b * u])))
        lin.bias.zero_()
    x = rng.uniform(-1, 1, size=(400, 5)).astype(np.float32)
    exact = np.abs(x.astype(float) @ u)
    pred = lin(torch.from_numpy(x)).argmax(1).numpy()
    eps = [float(np.quantile(exact, q)) for q in (0.2, 0.4)]
    result = audit(nn.Sequential(lin).eval(), brittle.as_data(x, pred, domain=WIDE), norm="linf", eps=eps,
                   device="cpu", n_boot=50, pseudo_margin="logits", monitor_eps=eps[0])
    upper = result.table["input_margin_upper"].to_numpy()
    assert np.allclose(upper, exact, rtol=1e-3)
    pm = result.summary["pseudo_margin"]
    assert pm["kendall_tau_before"] < 0.6 and pm["kendall_tau_after"] > 0.9
    for e in eps:
        assert pm["auroc_after"][str(e)] > max(0.97, pm["auroc_before"][str(e)] + 0.1)
    ev = (result.table["split"] != "fit").to_numpy()
    assert stats.kendalltau(result.table["pseudo_margin"][ev], exact[ev]).statistic == pytest.approx(
        pm["kendall_tau_after"], abs=0.02)
    mon = result.summary["monitor"]
    assert mon["recall"] >= 0.85 and mon["false_alarm_rate"] < 0.1


def _small():
    torch.manual_seed(0)
    return mlp(64, (8,), 10).eval(), brittle.load_digits().subset(slice(0, 40))


@pytest.mark.parametrize("kwargs, message", [
    ({"pseudo_margin": "nope"}, "the model has no layer 'nope'; available: '0', '1', '2', '3'. Fix: pass "
                                "pseudo_margin='logits' or one of those layer names"),
    ({"pseudo_margin": 3}, "pseudo_margin must be 'logits' or a layer name, got 3"),
    ({"pseudo_margin": "logits", "pseudo_margin_options": {"loss": "hinge"}}, "unknown loss 'hinge'"),
    ({"pseudo_margin": "logits", "pseudo_margin_options": {"depth": 3}}, "unknown pseudo_margin_options 'depth'"),
    ({"pseudo_margin_options": {"loss": "ranking"}}, "pseudo_margin_options were given without pseudo_margin"),
    ({"pseudo_margin": "logits", "pseudo_margin_options": {"inputs": "layer"}}, "gives no layer output"),
    ({"monitor_eps": 0.0}, "monitor_eps must be a finite number > 0 in the audit's norm units (linf), got 0.0. "
                           "Fix: pass e.g. monitor_eps=0.1 (--monitor-eps 0.1), in the same units as eps"),
    ({"monitor_eps": -0.1}, "monitor_eps must be a finite number > 0"),
    ({"monitor_eps": float("inf")}, "monitor_eps must be a finite number > 0"),
    ({"monitor_eps": float("nan")}, "monitor_eps must be a finite number > 0"),
    ({"monitor_eps": "0.1"}, "monitor_eps must be a finite number > 0"),
    ({"monitor_eps": 0.1, "monitor_recall": 0.0}, "monitor_recall must be in (0, 1], got 0.0"),
    ({"monitor_eps": 0.1, "monitor_recall": 1.5}, "monitor_recall must be in (0, 1], got 1.5"),
    ({"monitor_eps": 0.1, "monitor_recall": float("nan")}, "monitor_recall must be in (0, 1]"),
])
def test_bad_arguments_are_refused_before_any_attack(kwargs, message, tmp_path):
    model, data = _small()
    with pytest.raises(InputError) as err:
        audit(model, data, eps=[0.1], out=tmp_path / "run", device="cpu", **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # refused at the boundary: no run store was created


def test_too_few_samples_and_unhookable_models(tmp_path):
    model, data = _small()
    with pytest.raises(InputError, match=f"at least {MIN_SPLIT_SAMPLES} samples to split"):
        audit(model, data.subset(slice(0, MIN_SPLIT_SAMPLES - 1)), eps=[0.1], device="cpu", pseudo_margin="logits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated in recent torch
        scripted = torch.jit.script(model)
    with pytest.raises(InputError, match="layers of a TorchScript model cannot be hooked"):
        audit(scripted, data, eps=[0.1], device="cpu", pseudo_margin="2")
    with pytest.raises(InputError, match=r"no input of the fit half \(10 samples\) is non-robust at monitor_eps=1e-09"):
        audit(model, data.subset(slice(0, 20)), eps=[0.1], device="cpu", monitor_eps=1e-9, out=tmp_path / "r")
    assert (tmp_path / "r" / "run.sqlite").exists()  # the margins are kept; the message says re-running resumes


def test_cli_flags_end_to_end_and_report_sections(tmp_path, capsys):
    torch.manual_seed(0)
    model, data = mlp().eval(), brittle.load_digits().subset(slice(0, 30))  # the factory's default widths
    torch.save(model.state_dict(), tmp_path / "w.pt")
    np.savez(tmp_path / "d.npz", x=data.x.numpy(), y=data.y.numpy())
    out = tmp_path / "cli"
    code = main(["audit", "-m", "brittle.models.zoo.architectures:mlp", "--weights", str(tmp_path / "w.pt"),
                 "-d", str(tmp_path / "d.npz"), "--eps", "0.05,0.1", "--out", str(out), "--device", "cpu",
                 "--pseudo-margin", "logits", "--monitor-eps", "0.1", "--monitor-recall", "0.8", "--quiet"])
    assert code == 0, capsys.readouterr().err
    for name in ("summary.json", "samples.parquet", "report.html", "pseudo_margin.json", "monitor.json"):
        assert (out / name).is_file()
    s = json.loads((out / "summary.json").read_text())
    assert s["pseudo_margin"]["layer"] == "logits" and s["monitor"]["target_recall"] == 0.8
    html = (out / "report.html").read_text()
    assert '<section id="pseudo">' in html and "<h2>Pseudo-margin</h2>" in html
    assert '<section id="monitor">' in html and "<h2>Deployment monitor</h2>" in html
    assert "Flag an input when its pseudo-margin is below" in html and "Pseudo-margin threshold" in html
    assert 'alt="Input margin against pseudo-margin"' in html
    capsys.readouterr()
    bad = main(["audit", "-m", "brittle.models.zoo.architectures:mlp", "--weights", str(tmp_path / "w.pt"),
                "-d", str(tmp_path / "d.npz"), "--out", str(tmp_path / "bad"), "--pseudo-margin", "fc9", "--quiet"])
    err = capsys.readouterr().err
    assert bad == 2 and "the model has no layer 'fc9'" in err and "--pseudo-margin NAME" in err


def test_result_reprs_are_one_line_of_headline_numbers():
    """repr(audit) printed the whole table, summary and ROC arrays: 14 kB over 177 lines for 1,797 inputs."""
    import numpy as np
    import pandas as pd

    from brittle.auditing.result import Audit
    from brittle.core.runs import Run
    from brittle.margins.input import InputMargins
    from brittle.margins.logit import LogitMargins

    summary = {"model": "net", "norm": "linf", "eps": [0.1], "clean_accuracy": 0.9712,
               "kendall_tau": {"value": 0.61234, "ci_low": 0.5, "ci_high": 0.7},
               "robust_accuracy": {"0.1": {"upper": 0.5, "lower": None}},
               "detection": {"0.1": {"roc": list(range(5000))}}}
    table = pd.DataFrame({"logit_margin": np.arange(1797.0)})
    audit = Audit(table=table, summary=summary, curves={"roc": np.arange(5000)}, directory=None)
    assert repr(audit) == ("Audit(n=1797, model='net', norm='linf', eps=[0.1], clean_accuracy=0.9712, "
                           "kendall_tau=0.6123, robust_accuracy={0.1: 0.5})")
    run = Run(path="runs/x", summary=summary, samples=table, curves={}, examples=None)
    assert repr(run).startswith("Run(n=1797, model='net'") and repr(run).endswith("directory='runs/x')")
    upper = np.array([0.1, 0.3, np.inf])
    im = InputMargins(upper=upper, lower=np.zeros(3), x_adv=np.zeros((3, 784)), adv_class=np.zeros(3), pred=np.zeros(3),
                      norm="l2", method="brittle", seconds=1.5)
    assert repr(im) == "InputMargins(n=3, norm='l2', method='brittle', found=2, median_upper=0.2, seconds=1.5)"
    assert repr(LogitMargins(np.array([1.0, 2.0, 4.0]), np.zeros(3), np.ones(3))) == "LogitMargins(n=3, median_margin=2)"


def test_every_result_with_a_table_converts_with_to_frame():
    """Some results converted with to_frame(), others only through .table: every one now has to_frame()."""
    import numpy as np
    import pandas as pd

    from brittle.adaptation.stream import AdaptationResult
    from brittle.auditing.result import Audit
    from brittle.core.runs import Run
    from brittle.margins.compute import MarginTable
    from brittle.ood.benchmark import BenchmarkResult

    table = pd.DataFrame({"v": [1.0, 2.0]})
    results = [Audit(table=table, summary={}), Run(path="r", summary={}, samples=table, curves={}, examples=None),
               MarginTable(table=table, x_adv=np.zeros((2, 1)), forward_passes=0, backward_passes=0, seconds=0.0),
               BenchmarkResult(table=table, scores={}, detectors={}),
               AdaptationResult(summary={}, steps=table, samples=pd.DataFrame())]
    for result in results:
        assert result.to_frame() is table, type(result).__name__


def test_one_input_still_gives_every_summary_key_and_samples_correct_is_checked_first(tmp_path):
    """With one input the summary had no kendall_tau key (the README reads result.summary["kendall_tau"]), and
    samples='correct' with fewer than 2 correct inputs was refused after run.sqlite was written."""
    import numpy as np
    import pytest
    import torch

    from brittle import audit
    from brittle.errors import InputError

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x = torch.rand(3, 1, 2, 2)
    with torch.no_grad():
        pred = model(x).argmax(1)
    one = audit(model, (x[:1], pred[:1]), eps=[0.1], method_options={"strength": "fast"})
    assert one.summary["kendall_tau"] == {"value": None, "ci_low": None, "ci_high": None, "n": 1}
    wrong = (pred + 1) % 3
    labels = torch.cat([pred[:1], wrong[1:]])  # one correct input of three
    with pytest.raises(InputError, match=r"samples='correct' but only 1 input\(s\) are correctly classified"):
        audit(model, (x, labels), eps=[0.1], samples="correct", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert np.isfinite(audit(model, (x, pred), eps=[0.1], samples="correct",
                             method_options={"strength": "fast"}).summary["clean_accuracy"])


def test_eps_given_as_float32_is_found_under_the_decimal_written():
    """eps=np.float32(0.1) keyed the summary by 0.10000000149011612: summary['robust_accuracy'][0.1] raised."""
    import numpy as np
    import torch

    from brittle import audit
    from brittle.core.validation import check_eps

    assert check_eps(np.float32(0.1)) == [0.1] and check_eps(torch.tensor([0.1, 0.3])) == [0.1, 0.3]
    assert check_eps(np.array([0.2, 0.1], dtype=np.float32)) == [0.1, 0.2]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x = torch.rand(6, 1, 2, 2)
    with torch.no_grad():
        y = model(x).argmax(1)
    result = audit(model, (x, y), eps=[np.float32(8 / 255)], method_options={"strength": "fast"})
    assert result.summary["robust_accuracy"].get(8 / 255) is not None
    assert result.summary["detection"]["0.03137255"] is not None
