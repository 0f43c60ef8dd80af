"""`brittle llm …`: validation before any output, one-line errors with exit code 2, a tiny end-to-end run."""

import subprocess
import sys

import pytest


def _run(args, capsys):
    from brittle.cli.app import main

    sys_argv = sys.argv
    sys.argv = ["brittle", *args]
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = sys_argv
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("args", [
    ["llm", "watermark", "detect", "--text", "hi", "--gamma", "1.5"],
    ["llm", "watermark", "detect"],
    ["llm", "compress", "--out", "OUT", "--method", "wanda"],
    ["llm", "compress", "--out", "OUT", "--method", "prune-all"],
    ["llm", "curate", "--out", "OUT", "--selector", "best"],
    ["llm", "curate", "--out", "OUT", "--domains", "poetry"],
    ["llm", "fingerprint", "--queries", "missing.txt"],
])
def test_bad_inputs_exit_2_and_create_nothing(args, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run([a.replace("OUT", str(out)) for a in args], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_tiny_end_to_end(tmp_path, capsys):
    code, out, err = _run(["--json", "llm", "watermark", "generate", "hello", "--model", "tiny",
                           "--max-new-tokens", "8", "--delta", "6"], capsys)
    assert code == 0, err
    code, out, err = _run(["llm", "compress", "--model", "tiny", "--method", "rtn", "--bits", "3",
                           "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    assert (tmp_path / "m" / "config.json").is_file()


def test_missing_extra_names_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails
    code, _, err = _run(["llm", "watermark", "detect", "--text", "hello"], capsys)
    assert code == 2 and 'pip install "brittle[llm]"' in err and len(err.strip().splitlines()) == 1
