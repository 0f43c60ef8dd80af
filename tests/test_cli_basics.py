"""CLI basics: version, help listing every command, README/CI agreement, one-line errors and exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from brittle import __version__
from brittle.cli.app import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "brittle.cli", *args], capture_output=True, text=True, timeout=300)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"brittle {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_help_lists_every_command(capsys):
    from brittle.cli.app import app

    main(["--help"])
    out = capsys.readouterr().out
    registered = [c.name or c.callback.__name__ for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert registered
    for name in registered:
        assert name in out


def test_every_help_names_option_values_instead_of_typing_them(capsys):
    """``--model MODEL``, not typer's ``--model <str>``; flags show no ``<bool>``; an argument is shown by its name
    (``RUN_DIR``, ``PROMPT...``), not typer's ``run_dir <path>``; every command's help renders. Holds for typer's
    own click (>= 0.29) and for click itself (typer 0.12, click 8.0): `command_tree` sets the labels."""
    from brittle.cli.app import command_tree, iter_commands

    commands = list(iter_commands(command_tree()))
    assert len(commands) > 15
    n_arguments = 0
    for cmd in commands:
        path = cmd.brittle_path
        assert main([*path, "--help"]) == 0, path
        out = capsys.readouterr().out
        usage = out.splitlines()[0]
        arguments, _, options = out.partition("Arguments:")[2].partition("Options:")
        options = options or out.partition("Options:")[2]
        assert options and not re.search(r"<[\w\[\]|, ]+>", out), (path, out)
        for param in cmd.params:
            if param.param_type_name != "argument":
                continue
            n_arguments += 1
            label = param.name.upper() + ("..." if param.nargs != 1 else "")
            assert re.search(rf"^  {re.escape(label)}  ", arguments, re.M), (path, arguments)
            assert usage.endswith(f" {label}") or f" {label} " in usage, (path, usage)
    assert n_arguments >= 4
    main(["audit", "--help"])
    out = capsys.readouterr().out
    assert re.search(r"--model MODEL\b", out) and re.search(r"--eps EPS\b", out) and "--overwrite / --no-overwrite  " in out
    main(["report", "--help"])
    out = capsys.readouterr().out
    assert "Usage: brittle report [OPTIONS] RUN_DIR\n" in out and "\n  RUN_DIR  A run directory written by" in out
    main(["llm", "watermark", "generate", "--help"])
    out = capsys.readouterr().out
    assert "[OPTIONS] PROMPT...\n" in out and "\n  PROMPT...  One or more prompts." in out


def test_readme_first_lines_and_ci_agree():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "```bash"
    install_and_demo, install_and_test = lines[1], lines[2]
    assert install_and_demo.endswith("brittle demo") and "pip install" in install_and_demo
    assert "pytest" in install_and_test and "[test]" in install_and_test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci, ".ci/run must run the README's test command verbatim"


def test_errors_are_one_line_with_exit_code():
    proc = run_cli("zoo", "show", "no-such-model")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no zoo model named 'no-such-model'")


def test_debug_shows_the_traceback():
    proc = run_cli("--debug", "zoo", "show", "no-such-model")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_demo_audits_the_zoo_on_bundled_mnist(tmp_path):
    import json

    import torch

    import brittle.models.zoo as zoo
    from brittle.data.loading import load_mnist

    proc = run_cli("--json", "demo", "--n", "16", "--out", str(tmp_path / "demo"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    runs = result["runs"]
    assert {name.rpartition("-")[2] for name in runs} == {"linf", "l2"} and len(runs) >= 4
    data = load_mnist().head(16)
    for name, summary in runs.items():
        model_name = name.rpartition("-")[0]
        with torch.no_grad():
            accuracy = (zoo.load(model_name)(data.x).argmax(1) == data.y).float().mean().item()
        assert summary["clean_accuracy"] == accuracy  # a real audit of the real zoo model, not a canned number
        for eps, robust in summary["robust_accuracy"].items():
            lower = robust["lower"] if robust["lower"] is not None else 0.0  # None: no certified bounds asked
            assert 0.0 <= lower <= robust["upper"] <= accuracy
        assert (tmp_path / "demo" / name / "report.html").stat().st_size > 10_000
    for path in result["comparisons"].values():
        assert Path(path).exists()


def test_zoo_list_and_show_report_the_cards():
    import json

    from brittle.models import zoo

    proc = run_cli("--json", "zoo", "list")
    assert proc.returncode == 0, proc.stderr
    listed = {m["name"]: m for m in json.loads(proc.stdout)["models"]}
    assert set(listed) == set(zoo.names()) and {"standard", "linf_madry", "linf_trades", "l2_madry"} <= set(listed)
    for name, card in listed.items():
        assert card == zoo.card(name)
        estimate = card["margin_consistency_estimate"]
        by_margins = estimate["robust_accuracy_from_margins"]
        assert by_margins["eps"] == card["robust_accuracy"]["eps"] and estimate["norm"] == card["robust_accuracy"]["norm"]
        assert 0.0 <= by_margins["value"] <= card["clean_accuracy"] + 0.02 and -1 <= estimate["kendall_tau"] <= 1
    shown = run_cli("--json", "zoo", "show", "linf_madry")
    assert shown.returncode == 0 and json.loads(shown.stdout) == zoo.card("linf_madry")
    missing = run_cli("zoo", "show", "nope")
    assert missing.returncode == 2 and "nope" in missing.stderr and "Traceback" not in missing.stderr


def test_margins_takes_the_input_domain_of_the_data(tmp_path, capsys):
    """Data on [-1, 1] is refused with the fix `--domain -1,1`, which `brittle margins` then accepts: the
    bounds are measured in that box (no bound exceeds the box's L∞ radius, 2, and none is inside [0, 1]'s)."""
    import json
    import sqlite3

    import numpy as np
    import pandas as pd

    from brittle.data.loading import load_mnist

    import torch

    from brittle.models.loading import save_torchscript
    from brittle.models.zoo.architectures import mlp

    d = load_mnist().head(8)
    np.savez(tmp_path / "pm1.npz", x=(2 * d.x - 1).numpy(), y=d.y.numpy())
    torch.manual_seed(0)
    save_torchscript(mlp(784, (16,), 10).eval(), tmp_path / "net.pt", d.x[:2])  # a model that declares no domain
    args = ["--quiet", "margins", "-m", str(tmp_path / "net.pt"), "-d", str(tmp_path / "pm1.npz"), "--strength",
            "fast"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "--domain lo,hi" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*args, "--domain", "-1,1", "--out", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    conn = sqlite3.connect(tmp_path / "b" / "run.sqlite")
    config = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    conn.close()
    assert config["domain"] == [-1.0, 1.0]
    upper = pd.read_parquet(tmp_path / "b" / "margins.parquet")["input_margin_upper"].to_numpy()
    assert np.all((upper > 0) & (upper <= 2.0 + 1e-6))
