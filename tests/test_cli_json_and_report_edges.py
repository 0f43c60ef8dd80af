"""Strict ``--json`` output, and the smaller edges of audit / report / compare / logit_margins: an empty
``--eps``, a legend with nothing to name, fewer than two runs or a margins-only run to compare, an empty
summary.json, a bad ``batch_size``."""

from __future__ import annotations

import json
import math
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from brittle.cli import main
from brittle.errors import InputError, StoreError

MODELS = textwrap.dedent('''
    import torch
    from torch import nn

    def constant():  # class 0 everywhere in [0, 1]^4: no adversarial example exists, every margin is inf
        torch.manual_seed(0)
        layer = nn.Linear(4, 3)
        with torch.no_grad():
            layer.weight.mul_(0.001)
            layer.bias.copy_(torch.tensor([100.0, 0.0, 0.0]))
        return layer

    def small():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
''')


def _refuse_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _strict(text: str):
    return json.loads(text, parse_constant=_refuse_constant)


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Fix:" in lines[0], err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edges")
    (folder / "edge_models.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    np.savez(folder / "d.npz", x=rng.random((12, 4)).astype(np.float32), y=rng.integers(0, 3, 12))
    return folder


@pytest.fixture
def models_on_path(work, monkeypatch):
    monkeypatch.syspath_prepend(str(work))
    return work


@pytest.fixture(scope="module")
def runs(work):
    """An audit of a model where nothing flips, an audit of a small MLP, and a margins-only run."""
    import sys

    sys.path.insert(0, str(work))
    try:
        common = ["-d", str(work / "d.npz"), "--strength", "fast"]
        assert main(["--quiet", "audit", "-m", "edge_models:constant", *common, "--eps", "0.1",
                     "--out", str(work / "constant"), "--no-report"]) == 0
        assert main(["--quiet", "audit", "-m", "edge_models:small", *common, "--eps", "0.1",
                     "--out", str(work / "small"), "--no-report"]) == 0
        assert main(["--quiet", "margins", "-m", "edge_models:small", *common, "--out", str(work / "margins")]) == 0
    finally:
        sys.path.remove(str(work))
    return work


# ----------------------------------------------------------------------------------------------- --json

def test_emit_writes_strict_json(capsys, monkeypatch):
    from brittle.cli._common import State, emit

    monkeypatch.setattr(State, "as_json", True)
    emit({"inf": math.inf, "nan": np.float32("nan"), "list": [1.5, -np.inf], "array": np.array([1.0, np.inf]),
          "tensor": torch.tensor(float("inf")), "tensors": torch.tensor([0.5, float("nan")]), "n": np.int64(3),
          "flag": np.bool_(True), "nested": {0.1: {"x": np.float64(np.nan)}}, "text": "ok"})
    out = _strict(capsys.readouterr().out)
    assert out == {"inf": None, "nan": None, "list": [1.5, None], "array": [1.0, None], "tensor": None,
                   "tensors": [0.5, None], "n": 3, "flag": True, "nested": {"0.1": {"x": None}}, "text": "ok"}


@pytest.mark.parametrize("command", ["margins", "audit"])
def test_cli_json_without_any_adversarial_example_is_strict(models_on_path, tmp_path, capsys, command):
    extra = ["--eps", "0.1", "--no-report"] if command == "audit" else []
    code = main(["--json", command, "-m", "edge_models:constant", "-d", str(models_on_path / "d.npz"),
                 "--strength", "fast", "--out", str(tmp_path / "o"), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = _strict(captured.out)
    assert out["median_input_margin"] is None  # inf: no adversarial example for any input
    if command == "audit":  # the same value summary.json holds
        assert _strict((tmp_path / "o" / "summary.json").read_text())["median_input_margin"] is None


# ------------------------------------------------------------------------------------------------- --eps

@pytest.mark.parametrize("value", ["", " "])
@pytest.mark.parametrize("flag", ["--eps", "--domain"])
def test_empty_eps_or_domain_is_refused(models_on_path, tmp_path, capsys, flag, value):
    out = tmp_path / "o"
    argv = ["--quiet", "audit", "-m", "edge_models:small", "-d", str(models_on_path / "d.npz"), "--out", str(out),
            "--no-report", "--strength", "fast", flag, value]
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{flag} is empty" in line
    assert not out.exists()


@pytest.mark.parametrize(("command", "flag"), [("margins", "--budgets"), ("margins", "--domain"),
                                               ("adapt", "--domain")])
def test_empty_number_lists_of_other_commands_are_refused(models_on_path, tmp_path, capsys, command, flag):
    out = tmp_path / "o"
    model = ["-m", "standard_bn", "--shift", "fog:3", "--limit", "64"] if command == "adapt" else \
        ["-m", "edge_models:small", "-d", str(models_on_path / "d.npz"), "--strength", "fast"]
    assert main(["--quiet", command, *model, "--out", str(out), flag, ""]) == 2
    assert f"{flag} is empty" in _one_line(capsys.readouterr().err)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- legends

def test_report_of_a_run_where_nothing_flips_draws_no_empty_legend(runs, tmp_path):
    from brittle.report import render_report

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found to put in legend"
        path = render_report(runs / "constant", tmp_path / "report.html")
    assert path.stat().st_size > 10_000
    page = path.read_text()
    # detection is undefined at every ε (nothing flips): no section, link or empty ROC/PR figure
    assert 'id="detection"' not in page and 'href="#detection"' not in page


def test_legend_helper_draws_only_with_labelled_artists():
    from brittle.report._plots import legend, new_figure

    fig = new_figure(3, 2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])  # unlabelled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        legend(ax, loc="best")
        legend(fig, loc="outside lower center")
        legend(ax, handles=[])
    assert ax.get_legend() is None and not fig.legends
    ax.plot([0, 1], [1, 0], label="named")
    legend(ax, loc="best")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["named"]


# ------------------------------------------------------------------------------------- compare / report

def test_compare_needs_two_runs(runs, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    assert main(["compare", str(runs / "small"), "--out", str(out)]) == 2
    assert "brittle compare needs two or more run directories, got 1" in _one_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("order", ["first", "last"])
def test_compare_refuses_a_margins_only_run_before_writing(runs, tmp_path, capsys, order):
    out = tmp_path / "cmp.html"
    dirs = [str(runs / "small"), str(runs / "margins")]
    if order == "first":
        dirs.reverse()
    assert main(["compare", *dirs, "--out", str(out)]) == 3
    line = _one_line(capsys.readouterr().err)
    assert f"{runs / 'margins'} holds a margins-only run (margins.parquet, no summary.json), not an audit" in line
    assert not out.exists()


def test_compare_of_two_audits_still_works(runs, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    assert main(["--quiet", "compare", str(runs / "small"), str(runs / "constant"), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000


@pytest.mark.parametrize(("content", "what"), [
    ("{}", "an empty JSON object"),
    ('{"foo": 1}', "none of the keys an audit writes"),
])
def test_summary_that_is_not_an_audit_summary(runs, tmp_path, capsys, content, what):
    import shutil

    from brittle.report import render_report

    run = tmp_path / "run"
    shutil.copytree(runs / "small", run)
    (run / "summary.json").write_text(content)
    with pytest.raises(StoreError, match="is not a valid audit summary") as info:
        render_report(run)
    assert f"{run / 'summary.json'} is not a valid audit summary (it holds {what}" in str(info.value)
    assert "has no summary.json" not in str(info.value)
    assert main(["report", str(run)]) == 3
    assert "is not a valid audit summary" in _one_line(capsys.readouterr().err)
    out = tmp_path / "cmp.html"
    assert main(["compare", str(runs / "small"), str(run), "--out", str(out)]) == 3
    assert "is not a valid audit summary" in _one_line(capsys.readouterr().err)
    assert not out.exists()


def _tampered(runs, tmp_path, edit):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs / "small", run)
    summary = json.loads((run / "summary.json").read_text())
    edit(summary)
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_a_damaged_summarys_numbers_give_a_report_not_a_crash(runs, tmp_path, capsys):
    """An infinite `seconds` (OverflowError in the duration text) and an infinite Kendall τ (negative error bars
    in compare's τ panel) ended as "unexpected ... a bug in brittle", exit 1."""
    run = _tampered(runs, tmp_path, lambda s: s.update(seconds=float("inf")))
    assert main(["--quiet", "report", str(run)]) == 0
    assert (run / "report.html").stat().st_size > 10_000

    def tau(s):
        s["kendall_tau"] = {**s["kendall_tau"], "value": float("inf")} if isinstance(s.get("kendall_tau"), dict) \
            else {"value": float("inf"), "ci_low": 0.1, "ci_high": 0.2}
    other = _tampered(runs, tmp_path / "b", tau)
    out = tmp_path / "cmp.html"
    assert main(["--quiet", "compare", str(runs / "small"), str(other), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000


def test_a_summary_nested_beyond_pythons_limit_is_named_corrupt(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs / "small", run)
    (run / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["report", str(run)]) == 3
    assert "summary.json is not valid JSON (RecursionError)" in _one_line(capsys.readouterr().err)


def test_report_of_a_margins_only_run_says_so(runs, capsys):
    assert main(["report", str(runs / "margins")]) == 3
    assert "holds a margins-only run" in _one_line(capsys.readouterr().err)
    assert not (runs / "margins" / "report.html").exists()


# --------------------------------------------------------------------------------------- logit_margins

@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True, "8", None])
def test_logit_margins_checks_batch_size(batch_size):
    import brittle

    model = nn.Linear(4, 3).eval()
    with pytest.raises(InputError, match="batch_size must be an integer >= 1"):
        brittle.logit_margins(model, torch.rand(5, 4), batch_size=batch_size, device="cpu")
    assert len(brittle.logit_margins(model, torch.rand(5, 4), batch_size=np.int64(2), device="cpu")) == 5


def test_compare_bolds_only_runs_attacked_alike_on_the_same_inputs(runs, tmp_path, models_on_path):
    """A fast-attack run's higher robust accuracy was bolded as "best" over a thorough one's (an upper bound
    from a weaker attack is not a more robust model), and runs on 200 and 60 inputs were compared as alike."""
    import html as html_lib
    import re

    common = ["-m", "edge_models:small", "-d", str(runs / "d.npz"), "--eps", "0.1", "--no-report"]
    assert main(["--quiet", "audit", *common, "--strength", "thorough", "--out", str(tmp_path / "thorough")]) == 0
    assert main(["--quiet", "audit", *common, "--strength", "fast", "--limit", "8", "--out", str(tmp_path / "few")]) == 0
    summary = json.loads((tmp_path / "thorough" / "summary.json").read_text())
    assert summary["attack"] == "brittle (strength thorough)" and summary["attack_options"]["strength"] == "thorough"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", summary["finished"])
    out = tmp_path / "cmp.html"
    assert main(["--quiet", "compare", str(runs / "small"), str(tmp_path / "thorough"), str(tmp_path / "few"),
                 "--out", str(out)]) == 0
    page = html_lib.unescape(out.read_text())
    assert "brittle (strength fast)" in page and "brittle (strength thorough)" in page
    assert "attacked differently" in page and "different numbers of inputs" in page
    robust_rows = [row for row in page.split("<tr") if "ε = 0.1" in row and "<td" in row]
    assert robust_rows and all('class="num best"' not in row for row in robust_rows)
