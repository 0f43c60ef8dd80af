"""Every CLI failure ends with one line and the documented exit code, never a traceback.

The commands are read from the click command tree that ``brittle.cli.app`` builds from ``COMMAND_MODULES``,
so a command module added later is covered without editing this file: ``--help`` (exit 0), an unknown
option (exit 2, one line), a missing required option or argument (exit 2, one line), a malformed number
(exit 2, one line). Then the real entry point in subprocesses: no arguments, a closed pipe, and Ctrl-C in the
middle of an audit (exit 130, one line, and the same command resumes and finishes).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brittle.cli.app import COMMAND_MODULES, command_tree, iter_commands, main

ROOT = Path(__file__).resolve().parents[1]


def _tree() -> list:
    return list(iter_commands(command_tree()))


COMMANDS = {" ".join(c.brittle_path) or "(root)": c for c in _tree()}
LEAVES = {k: c for k, c in COMMANDS.items() if not hasattr(c, "commands")}
GROUPS = {k: c for k, c in COMMANDS.items() if hasattr(c, "commands")}


def _required(cmd) -> list:
    return [p for p in cmd.params if getattr(p, "required", False)]


def _type_name(param) -> str:
    kind = getattr(param, "type", None)  # click; typer >= 0.2x keeps the annotation instead
    return str(getattr(kind, "name", "") or (param.bare_type() if hasattr(param, "bare_type") else "")).lower()


def _numeric_option(cmd):
    for p in cmd.params:
        if getattr(p, "param_type_name", "") == "option" and not getattr(p, "is_flag", False) \
                and _type_name(p) in ("integer", "int", "float"):
            return p
    return None


def _args(key: str) -> list[str]:
    return [] if key == "(root)" else key.split()


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    assert "Traceback" not in err
    assert lines[-1].startswith("error: "), err
    return lines[-1]


def test_the_tree_holds_every_registered_module():
    assert len(LEAVES) >= len(COMMAND_MODULES)
    for expected in ("audit", "margins", "demo", "train", "zoo list", "zoo show", "zoo build"):
        assert expected in LEAVES, sorted(LEAVES)


@pytest.mark.parametrize("key", sorted(COMMANDS))
def test_help_exits_0(key, capsys):
    assert main([*_args(key), "--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Usage: brittle") and err == ""
    assert "<bool>" not in out and "Traceback" not in out


@pytest.mark.parametrize("key", sorted(COMMANDS))
def test_unknown_option_is_one_line_exit_2(key, capsys):
    assert main([*_args(key), "--no-such-option"]) == 2
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    assert "--no-such-option" in line and f"brittle{' ' + key if key != '(root)' else ''} --help" in line
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1 and out == ""


@pytest.mark.parametrize("key", sorted(k for k, c in LEAVES.items() if _required(c)))
def test_missing_required_is_one_line_exit_2(key, capsys):
    assert main(_args(key)) == 2
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    assert "Missing" in line and len([ln for ln in err.splitlines() if ln.strip()]) == 1 and out == ""


@pytest.mark.parametrize("key", sorted(k for k, c in LEAVES.items() if _numeric_option(c)))
def test_malformed_number_is_one_line_exit_2(key, capsys):
    option = _numeric_option(LEAVES[key])
    assert main([*_args(key), option.opts[0], "not-a-number"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert option.opts[0] in line or option.name in line


@pytest.mark.parametrize("key", sorted(GROUPS))
def test_group_without_command_shows_help_and_exits_2(key, capsys):
    assert main(_args(key)) == 2
    err = capsys.readouterr().err
    assert err.startswith("Usage: brittle")
    assert _one_error_line(err).startswith("error: missing command")


@pytest.mark.parametrize("key", sorted(GROUPS))
def test_unknown_command_is_one_line_exit_2(key, capsys):
    assert main([*_args(key), "no-such-command"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no-such-command" in line


def test_global_options_anywhere_and_threads_checked(capsys):
    assert main(["zoo", "list", "--json", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["models"]
    assert main(["--threads", "0", "zoo", "list"]) == 2
    assert _one_error_line(capsys.readouterr().err).startswith("error: --threads must be a whole number >= 1")


# ---- the real entry point, in subprocesses ------------------------------------------------------

def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "brittle.cli", *args], capture_output=True, text=True,
                          timeout=300, env=_env(), **kw)


@pytest.mark.parametrize("args", [[], ["zoo"], ["audit"], ["nosuch"], ["audit", "--modle", "x"],
                                  ["zoo", "show"], ["--threads", "x", "zoo", "list"]])
def test_usage_errors_in_a_process(args):
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    _one_error_line(proc.stderr)


def test_closed_pipe_is_quiet():
    for args in (["--help"], ["--json", "zoo", "list"]):
        proc = subprocess.Popen([sys.executable, "-m", "brittle.cli", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=_env())
        proc.stdout.readline()
        proc.stdout.close()  # the reader goes away, as `| head -1` does
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) in (0, 141) and err == "", err


def _batches(db: Path) -> dict[int, float]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return dict(conn.execute("SELECT batch, created FROM batches WHERE job = 'margins'").fetchall())
    except sqlite3.Error:
        return {}


@pytest.mark.slow
def test_ctrl_c_during_an_audit_exits_130_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "brittle.cli", "audit", "-m", "standard", "--limit", "400", "--batch-size", "20",
            "--eps", "0.1", "--no-report", "--out", str(out)]
    # as in a terminal: a shell running this suite in the background (``cmd &``) ignores SIGINT, and an ignored
    # signal stays ignored in children, so Python would never raise KeyboardInterrupt
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    db, deadline = out / "run.sqlite", time.monotonic() + 240
    while len(_batches(db)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the audit finished before it could be interrupted: " + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = [ln for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    assert "Traceback" not in stderr and lines[-1].startswith("interrupted:"), stderr
    done = _batches(db)
    assert 2 <= len(done) < 20
    resumed = subprocess.run(args, capture_output=True, text=True, timeout=600, env=_env())
    assert resumed.returncode == 0, resumed.stderr
    after = _batches(db)
    assert len(after) == 20
    assert all(after[b] == created for b, created in done.items())  # finished batches were kept, not redone
    assert json.loads((out / "summary.json").read_text())["n"] == 400


def test_ctrl_c_promises_a_resume_only_for_commands_that_keep_their_batches(tmp_path, capsys, monkeypatch):
    """`brittle explain` keeps nothing when interrupted, yet said "finished batches are saved; re-run the same
    command to resume"."""
    import brittle.explain.run as explain_run
    from brittle.cli.app import RESUMABLE, _command_name, main

    assert _command_name(["--threads", "2", "--quiet", "audit", "-m", "x"]) == "audit"
    assert _command_name(["--json", "explain", "--model", "m"]) == "explain"
    assert {"margins", "audit", "ood", "adapt", "train", "finetune"} <= RESUMABLE and "explain" not in RESUMABLE

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(explain_run, "explain_to_dir", interrupted)
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    (tmp_path / "m.json").write_text("{}")
    code = main(["explain", "--model", str(tmp_path / "m.json"), "--data", str(tmp_path / "d.csv"),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 130 and "keeps no partial results; re-running it starts again" in err and "resume" not in err


def test_an_unfinished_explanation_is_named_with_overwrite_as_the_way_out(tmp_path):
    from brittle.errors import StoreError
    from brittle.explain.run import _check_out

    (tmp_path / "values.parquet").write_bytes(b"")  # killed while writing its files
    with pytest.raises(StoreError, match=r"is not empty \(it holds an unfinished explanation\)\. "
                                         r"Fix: pass a new or empty directory, or --overwrite to replace it"):
        _check_out(tmp_path, overwrite=False)
    _check_out(tmp_path, overwrite=True)
