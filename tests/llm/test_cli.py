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


@pytest.fixture
def fake_smollm2(tmp_path, monkeypatch):
    """SmolLM2's first-use conversion path, run on a tiny model: an empty cache (in tmp_path), a dummy GGUF file,
    and transformers' GGUF readers answering with a tiny Llama — the real path, seconds instead of a 135M model."""
    import transformers

    from brittle.llm import models

    monkeypatch.setenv("BRITTLE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / models.SMOLLM2_GGUF
    gguf.write_bytes(b"not read")
    monkeypatch.setattr(models, "smollm2_gguf", lambda: gguf)
    real_require = models.require
    monkeypatch.setattr(models, "require", lambda name: object() if name == "gguf" else real_require(name))
    real_tok = transformers.AutoTokenizer.from_pretrained
    real_lm = transformers.AutoModelForCausalLM.from_pretrained

    def tok(src, *args, gguf_file=None, **kwargs):
        return models.byte_tokenizer() if gguf_file else real_tok(src, *args, **kwargs)

    def lm(src, *args, gguf_file=None, **kwargs):
        return models.tiny_llama(seed=0).model if gguf_file else real_lm(src, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lm)
    return tmp_path / "cache" / "llm" / "smollm2-135m-instruct"


@pytest.mark.parametrize("flags", [[], ["--quiet"], ["--json"]])
def test_quiet_silences_the_smollm2_conversion_note(flags, fake_smollm2, capsys):
    """Without flags the one-time conversion is announced (on stderr); --quiet and --json silence it."""
    import json

    code, out, err = _run([*flags, "llm", "watermark", "detect", "--text", "hello there", "--model", "smollm2"],
                          capsys)
    assert code == 0, err
    assert (fake_smollm2 / "config.json").is_file()  # the conversion did run
    if flags:
        assert "converting" not in out + err, out + err
    else:
        assert "converting SmolLM2-135M-Instruct.Q4_1.gguf" in err and "converting" not in out
    if flags == ["--json"]:
        assert "z" in json.loads(out)


def test_an_empty_prompt_is_refused_before_the_model_loads(monkeypatch, capsys):
    from brittle.llm import models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load_lm", no_load)
    code, _, err = _run(["llm", "watermark", "generate", "hello", "", "--model", "tiny"], capsys)
    assert code == 2 and err.strip() == "error: prompt 2 is empty. Fix: pass a non-empty prompt", err


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_curate_refuses_a_folder_as_out_before_any_work(overwrite, tmp_path, monkeypatch, capsys):
    from brittle.llm import models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load_lm", no_load)
    (tmp_path / "calib").mkdir()
    code, _, err = _run(["llm", "curate", "--model", "tiny", "--n", "4", "--per-domain", "4", "--out",
                         str(tmp_path / "calib"), *overwrite], capsys)
    assert code == 3 and err.strip() == (f"error: --out '{tmp_path / 'calib'}' is a folder. Fix: pass a file path, "
                                         "e.g. --out calib.pt"), err
    assert list((tmp_path / "calib").iterdir()) == []


def test_generate_prints_each_answer_after_its_z_score_literally(capsys):
    """'[z=3.71] <answer>' went through rich markup: the z-score vanished as a style tag, and the answer's raw
    control bytes (a random model's tokens) reached the terminal."""
    code, out, err = _run(["llm", "watermark", "generate", "hello there", "second", "--model", "tiny",
                           "--max-new-tokens", "8"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.startswith("[z=") and "] " in line for line in lines), out
    assert not any(ch < " " and ch not in "\n\t" or "\x7f" <= ch <= "\x9f" for ch in out), repr(out)


def test_model_output_with_brackets_and_escapes_is_printed_as_is(capsys):
    """An answer holding a Llama chat tag ('[/INST]') crashed the command with a MarkupError."""
    from brittle.cli.llm import _print

    _print({}, ["[z=1.23] Sure! [/INST] [bold]Paris[/bold] \x1b[2J\x1b]0;title\x07done"])
    out = capsys.readouterr().out
    assert out == "[z=1.23] Sure! [/INST] [bold]Paris[/bold] [2J]0;titledone\n"
