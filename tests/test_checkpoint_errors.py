"""Unreadable checkpoints: an empty, text, random or truncated file is "corrupt or not a torch file" (exit 2);
only a file whose unpickling needs a class or function gets "pickled code or objects, refused unexecuted"."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from brittle.cli import main
from brittle.errors import ModelError, StoreError
from brittle.models.loading import load_checkpoint

PWNED = "/tmp/brittle-checkpoint-test-pwned"


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


def _state_dict_bytes() -> bytes:
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(nn.Linear(4, 3).state_dict(), buf)
    return buf.getvalue()


def _write(folder, kind: str):
    path = folder / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "random":
        path.write_bytes(bytes([0x17]) + np.random.default_rng(0).bytes(499))
    elif kind == "truncated-zip":
        raw = _state_dict_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "pickled-module":  # a whole nn.Module, pickled: needs torch.nn.modules.linear.Linear
        torch.save(nn.Linear(4, 3), path)
    elif kind == "pickled-code":
        torch.save({"w": torch.zeros(1), "evil": _Evil()}, path)
    elif kind == "pickled-code-legacy":  # the pre-zip torch format: a bare pickle stream
        torch.save({"evil": _Evil()}, path, _use_new_zipfile_serialization=False)
    return path


CORRUPT = {"empty": "(the file is empty)", "text": "(neither a torch zip archive nor a pickle)",
           "random": "(neither a torch zip archive nor a pickle)",
           "truncated-zip": "(PytorchStreamReader failed reading zip archive: failed finding central directory."}
PICKLED = {"pickled-module": "(it needs torch.nn.modules.linear.Linear)", "pickled-code": "(it needs posix.system)",
           "pickled-code-legacy": "(it needs posix.system)"}


@pytest.fixture(autouse=True)
def _no_pwned():
    if os.path.exists(PWNED):
        os.remove(PWNED)
    yield
    assert not os.path.exists(PWNED), "a checkpoint's pickled code was executed"


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_unreadable_file_is_corrupt(tmp_path, kind):
    path = _write(tmp_path, kind)
    with pytest.raises(ModelError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f"checkpoint {path} is corrupt or not a torch file {CORRUPT[kind]}"), text
    assert "pickled code" not in text and "\n" not in text and "Fix: re-save it" in text


@pytest.mark.parametrize("kind", sorted(PICKLED))
def test_pickled_objects_are_refused_unexecuted(tmp_path, kind):
    path = _write(tmp_path, kind)
    with pytest.raises(ModelError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f"checkpoint {path} contains pickled code or objects, refused unexecuted "
                           f"{PICKLED[kind]}"), text
    assert "\n" not in text


def test_a_raw_pickle_is_not_a_torch_file(tmp_path):
    with open(tmp_path / "raw.pkl", "wb") as fh:  # protocol 4+: torch's weights-only reader stops at its header
        pickle.dump({"a": 1}, fh, protocol=4)
    with pytest.raises(ModelError, match="is corrupt or not a torch file"):
        load_checkpoint(tmp_path / "raw.pkl")


def test_short_message_cuts_at_a_sentence_or_a_word():
    from brittle.models.checkpoint import short_message

    assert short_message("") == "" and short_message(ValueError()) == ""
    assert short_message("\n\n  first line  \nsecond") == "first line"
    text = "PytorchStreamReader failed reading zip archive: failed finding central directory. This is an " \
           "internal miniz error. If you are seeing this error, there is a high likelihood that your file is bad."
    assert short_message(text) == ("PytorchStreamReader failed reading zip archive: failed finding central "
                                   "directory. This is an internal miniz error.")
    words = " ".join(["alpha"] * 40)
    cut = short_message(words, 50)
    assert cut.endswith("alpha…") and len(cut) <= 50


def test_unreadable_training_checkpoint_in_the_store_is_a_store_error():
    from brittle.training.run import _load_state

    for payload in (b"", b"not a checkpoint", _state_dict_bytes()[:100]):
        with pytest.raises(StoreError, match="the saved training checkpoint cannot be read"):
            _load_state(payload)


@pytest.mark.parametrize("kind", [*sorted(CORRUPT), "pickled-code"])
def test_cli_weights_one_line_exit_2_no_out(tmp_path, capsys, kind):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((6, 4)).astype(np.float32), y=rng.integers(0, 3, 6))
    path = _write(tmp_path, kind)
    out = tmp_path / "out"
    code = main(["--quiet", "margins", "-m", "brittle.models.zoo.architectures:mlp", "--weights", str(path),
                 "-d", str(tmp_path / "d.npz"), "--out", str(out)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    expected = "contains pickled code or objects, refused unexecuted" if kind == "pickled-code" \
        else "is corrupt or not a torch file"
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint ") and expected in lines[0], err
    assert "unexpected" not in err and "Traceback" not in err
    assert not out.exists()
