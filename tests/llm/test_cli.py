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


@pytest.mark.parametrize("quiet", [True, False])
def test_compress_quiet_prints_no_progress_bar(quiet, tmp_path, capsys):
    """--quiet silences transformers' bars ("Writing model shards"); without it they stay; the state is restored."""
    from transformers.utils import logging as tlog

    before = tlog.is_progress_bar_enabled()
    code, _, err = _run([*(["--quiet"] if quiet else []), "llm", "compress", "--model", "tiny", "--method", "rtn",
                         "--bits", "3", "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    assert (tmp_path / "m" / "config.json").is_file()
    if quiet:
        assert "Writing model shards" not in err and "%|" not in err and "it/s" not in err, err
    elif before:
        assert "Writing model shards" in err
    assert tlog.is_progress_bar_enabled() == before


@pytest.mark.parametrize("enabled_before", [True, False])
def test_progress_bars_off_restores_the_previous_state(enabled_before):
    import huggingface_hub.utils as hub
    from transformers.utils import logging as tlog

    from brittle.llm._deps import transformers_progress_bars

    was_t, was_hub_off = tlog.is_progress_bar_enabled(), hub.are_progress_bars_disabled()
    try:
        (tlog.enable_progress_bar if enabled_before else tlog.disable_progress_bar)()
        hub_off = hub.are_progress_bars_disabled()
        with transformers_progress_bars(False):
            assert not tlog.is_progress_bar_enabled() and hub.are_progress_bars_disabled()
        assert tlog.is_progress_bar_enabled() == enabled_before
        assert hub.are_progress_bars_disabled() == hub_off
        with transformers_progress_bars(True):  # enabled=True changes nothing
            assert tlog.is_progress_bar_enabled() == enabled_before
        with pytest.raises(RuntimeError), transformers_progress_bars(False):
            raise RuntimeError("restored on errors too")
        assert tlog.is_progress_bar_enabled() == enabled_before
    finally:
        (tlog.enable_progress_bar if was_t else tlog.disable_progress_bar)()
        (hub.disable_progress_bars if was_hub_off else hub.enable_progress_bars)()
