"""`--strength` / `--budgets` of `brittle margins` and `brittle audit`: they reach brittle's attack, are refused
for other methods and bad values before anything is written, and a run records them."""

from __future__ import annotations

import json

import pytest

from brittle.cli import main

BASE = ["margins", "-m", "standard", "-d", "mnist", "--limit", "12", "--batch-size", "12", "--device", "cpu"]


def _run_json(args, capsys) -> dict:
    code = main(["--quiet", *args, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_strength_reaches_the_attack(tmp_path, capsys):
    # in L2 the default runs fixed-radius probes after the descent, "fast" does not: fewer backward passes
    fast = _run_json([*BASE, "--norm", "l2", "--strength", "fast", "-o", str(tmp_path / "fast")], capsys)
    default = _run_json([*BASE, "--norm", "l2", "-o", str(tmp_path / "default")], capsys)
    assert fast["backward_passes"] < default["backward_passes"]
    # a run remembers its attack options: another strength in the same directory is another run
    code = main(["--quiet", *BASE, "--norm", "l2", "--strength", "thorough", "-o", str(tmp_path / "fast")])
    assert code == 3 and "differs in: method_options" in capsys.readouterr().err


def test_budgets_attack_samples_at_the_budget(tmp_path, capsys):
    plain = _run_json([*BASE, "-o", str(tmp_path / "plain")], capsys)
    with_budgets = _run_json([*BASE, "--budgets", "0.05,1/10", "-o", str(tmp_path / "budgets")], capsys)
    # the budget stage attacks the samples whose bound lies just above a budget: more passes, never a looser median
    assert with_budgets["forward_passes"] > plain["forward_passes"]
    assert with_budgets["median_input_margin"] <= plain["median_input_margin"] + 1e-7


@pytest.mark.parametrize("extra, message", [
    (["--strength", "extreme"], "unknown attack strength 'extreme'. Fix: use one of fast, default, thorough"),
    (["--strength", "fast", "--method", "fab-autoattack"],
     "--strength applies to brittle's own attack, not to --method fab-autoattack"),
    (["--budgets", "0.1", "--method", "exact"], "--budgets applies to brittle's own attack, not to --method exact"),
    (["--budgets=-0.1"], "budgets must be finite and > 0"),
    (["--budgets", "x"], "--budgets value 'x' is not a number"),
], ids=["unknown-strength", "strength-other-method", "budgets-other-method", "negative-budget", "not-a-number"])
def test_bad_attack_options_exit_2_before_any_directory(extra, message, tmp_path, capsys):
    out = tmp_path / "D"
    code = main(["--quiet", *BASE, *extra, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_audit_takes_strength(tmp_path, capsys):
    out = tmp_path / "A"
    code = main(["--quiet", "audit", "-m", "standard", "--limit", "12", "--batch-size", "12", "--device", "cpu",
                 "--eps", "0.1", "--no-report", "--strength", "nonsense", "-o", str(out)])
    assert code == 2 and "unknown attack strength 'nonsense'" in capsys.readouterr().err and not out.exists()
    summary = _run_json(["audit", "-m", "standard", "--limit", "12", "--batch-size", "12", "--device", "cpu",
                         "--eps", "0.1", "--no-report", "--strength", "fast", "-o", str(out)], capsys)
    assert summary["n"] == 12
