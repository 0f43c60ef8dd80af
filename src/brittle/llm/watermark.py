"""KGW watermark (Kirchenbauer et al. 2023): generation, detection and a fingerprint check.

The green list of a position is seeded by the previous token ("lefthash", context width 1): a ``torch.Generator``
seeded with ``hashing_key * previous_token`` draws a permutation of the vocabulary, whose first
``int(vocab_size * gamma)`` entries are green. Generation adds ``delta`` to green logits. Detection counts green
tokens among the ``T`` scored tokens and computes the one-sided z-score ``(green - gamma T) / sqrt(T gamma (1-gamma))``
and its normal p-value. This is the same scheme and arithmetic as transformers' ``WatermarkLogitsProcessor`` /
``WatermarkDetector`` (tested equal), implemented here without them so detection needs no model.

A fingerprint check (Gloaguen et al. 2025) asks a model the queries of a domain, concatenates its answers (the
generated tokens only) and tests the concatenation for the watermark.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..core.randomness import seeded
from ..errors import InputError

DEFAULT_KEY = 15485863


@dataclass(frozen=True)
class KGWConfig:
    """KGW settings: green-list fraction ``gamma``, logit bias ``delta``, ``hashing_key``; detection threshold."""

    gamma: float = 0.25
    delta: float = 2.0
    hashing_key: int = DEFAULT_KEY
    z_threshold: float = 4.0
    min_tokens: int = 16
    ignore_repeated_ngrams: bool = False

    def __post_init__(self) -> None:
        # numpy scalars are accepted and stored as Python numbers; bools are refused everywhere
        if not (_real(self.gamma) and 0.0 < self.gamma < 1.0):
            raise InputError(f"gamma={self.gamma!r} must lie strictly between 0 and 1", "pass e.g. gamma=0.25")
        if not (_real(self.delta) and math.isfinite(self.delta) and self.delta >= 0):
            raise InputError(f"delta={self.delta!r} must be a finite number >= 0", "pass e.g. delta=2.0")
        if not (_integer(self.hashing_key) and self.hashing_key > 0):
            raise InputError(f"hashing_key={self.hashing_key!r} must be a positive integer", "pass e.g. 15485863")
        if not (_integer(self.min_tokens) and self.min_tokens >= 1):
            raise InputError(f"min_tokens={self.min_tokens!r} must be an integer >= 1", "pass e.g. min_tokens=16")
        z = self.z_threshold
        if not (_real(z) and math.isfinite(z) and z > 0):
            raise InputError(f"z_threshold={z!r} must be a finite number > 0",
                             "pass e.g. z_threshold=4.0 (at z_threshold <= 0 at least half of all unwatermarked "
                             "texts would be flagged)")
        for name, cast in (("gamma", float), ("delta", float), ("hashing_key", int), ("z_threshold", float),
                           ("min_tokens", int)):
            object.__setattr__(self, name, cast(getattr(self, name)))

    @property
    def false_positive_rate(self) -> float:
        """One-sided normal tail above ``z_threshold``: the stated false-positive rate on unwatermarked text."""
        return 0.5 * math.erfc(self.z_threshold / math.sqrt(2.0))


def _real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _integer(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


class GreenLists:
    """Green lists of a vocabulary under one key: ``mask(prev)`` (bool, cached) and ``is_green(prev, token)``."""

    def __init__(self, vocab_size: int, gamma: float, hashing_key: int, cache_size: int = 4096):
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise InputError(f"vocab_size={vocab_size!r} must be an integer >= 2", "pass the model's vocab size")
        self.vocab_size = vocab_size
        self.greenlist_size = int(vocab_size * gamma)
        self.hashing_key = hashing_key
        self._rng = torch.Generator(device="cpu")
        self._cache: dict[int, torch.Tensor] = {}
        self._cache_size = cache_size

    def ids(self, prev: int) -> torch.Tensor:
        """The green token ids after token ``prev``."""
        self._rng.manual_seed((self.hashing_key * int(prev)) % (2**64 - 1))
        return torch.randperm(self.vocab_size, generator=self._rng)[: self.greenlist_size]

    def mask(self, prev: int) -> torch.Tensor:
        prev = int(prev)
        m = self._cache.get(prev)
        if m is None:
            m = torch.zeros(self.vocab_size, dtype=torch.bool)
            m[self.ids(prev)] = True
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[prev] = m
        return m

    def is_green(self, prev: int, token: int) -> bool:
        return 0 <= int(token) < self.vocab_size and bool(self.mask(prev)[int(token)])


class KGWLogitsProcessor:
    """Adds ``delta`` to the green logits of the next token (a transformers ``LogitsProcessor``-compatible callable)."""

    def __init__(self, config: KGWConfig, vocab_size: int):
        self.config = config
        self.green = GreenLists(vocab_size, config.gamma, config.hashing_key)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] < 1:
            return scores
        out = scores.clone()
        v = self.green.vocab_size
        for b, prev in enumerate(input_ids[:, -1].tolist()):
            out[b, :v] += self.config.delta * self.green.mask(prev).to(device=out.device, dtype=out.dtype)
        return out


@dataclass
class Detection:
    """Result of a KGW test on one token sequence."""

    z: float
    p_value: float
    green: int
    scored: int
    watermarked: bool
    enough_tokens: bool
    z_threshold: float

    @property
    def green_fraction(self) -> float:
        return self.green / self.scored if self.scored else float("nan")


class KGWDetector:
    """One-sided z-test on the green-token count of a token sequence (no model needed)."""

    def __init__(self, config: KGWConfig, vocab_size: int, *, bos_token_id: int | None = None):
        self.config = config
        self.green = GreenLists(vocab_size, config.gamma, config.hashing_key)
        self.bos_token_id = bos_token_id

    def count(self, tokens: Sequence[int]) -> tuple[int, int]:
        """(green, scored): every token after the first is scored against its predecessor's green list."""
        pairs = list(zip(tokens[:-1], tokens[1:]))
        freq = Counter(pairs)
        if self.config.ignore_repeated_ngrams:
            return sum(self.green.is_green(a, b) for a, b in freq), len(freq)
        return sum(n * self.green.is_green(a, b) for (a, b), n in freq.items()), len(pairs)

    def detect(self, tokens: Sequence[int] | torch.Tensor) -> Detection:
        """Test one sequence of token ids (a leading BOS token is dropped, like transformers' detector)."""
        toks = _as_token_list(tokens, self.green.vocab_size)
        if toks and self.bos_token_id is not None and toks[0] == self.bos_token_id:
            toks = toks[1:]
        green, scored = self.count(toks)
        g = self.config.gamma
        if scored == 0:
            z, p = 0.0, 1.0
        else:
            z = (green - g * scored) / math.sqrt(scored * g * (1 - g))
            p = 0.5 * math.erfc(z / math.sqrt(2.0))
        enough = scored >= self.config.min_tokens
        return Detection(z=float(z), p_value=float(p), green=int(green), scored=int(scored),
                         watermarked=bool(enough and z > self.config.z_threshold), enough_tokens=enough,
                         z_threshold=self.config.z_threshold)

    def detect_text(self, text: str, tokenizer: Any) -> Detection:
        return self.detect(tokenizer(text, add_special_tokens=False)["input_ids"])


def _as_token_list(tokens: Sequence[int] | torch.Tensor, vocab_size: int) -> list[int]:
    """Token ids as Python ints, each in ``[0, vocab_size)``."""
    if isinstance(tokens, torch.Tensor):
        if tokens.dim() != 1 or tokens.dtype.is_floating_point:
            raise InputError(f"token ids must be a 1-D integer tensor, got shape {tuple(tokens.shape)} "
                             f"dtype {tokens.dtype}", "pass one sequence of token ids at a time")
        toks = [int(t) for t in tokens.tolist()]
    else:
        try:
            toks = [int(t) for t in tokens]
        except (TypeError, ValueError):
            raise InputError("token ids must be a sequence of integers", "tokenize the text first") from None
    if any(t < 0 for t in toks):
        raise InputError("token ids must be >= 0", "pass token ids produced by the model's tokenizer")
    bad = next((t for t in toks if t >= vocab_size), None)
    if bad is not None:
        raise InputError(f"token id {bad} is outside the vocabulary of {vocab_size} tokens",
                         "pass token ids produced by the model's own tokenizer")
    return toks


def check_prompts(prompts: Sequence[str] | str) -> list[str]:
    """The prompts as a list; refuses no prompts, a prompt that is not a string, and an empty prompt."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise InputError("no prompts given", "pass at least one prompt")
    for i, p in enumerate(prompts, 1):
        if not isinstance(p, str):
            raise InputError(f"prompt {i} is a {type(p).__name__}, not a string", "pass prompts as text")
        if not p:
            raise InputError(f"prompt {i} is empty", "pass a non-empty prompt")
    return prompts


def _prompt_ids(tokenizer: Any, prompt: str, chat: bool) -> list[int]:
    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def generate(lm: Any, prompts: Sequence[str], *, config: KGWConfig | None = None, max_new_tokens: int = 64,
             do_sample: bool = True, temperature: float = 1.0, seed: int = 0, chat: bool = True) -> list[list[int]]:
    """Generate an answer to each prompt (watermarked when ``config`` is given); returns the new token ids only."""
    prompts = check_prompts(prompts)
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise InputError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 1", "pass e.g. 64")
    procs = None
    if config is not None:
        from transformers import LogitsProcessorList

        procs = LogitsProcessorList([KGWLogitsProcessor(config, int(lm.model.config.vocab_size))])
    tok = lm.tokenizer
    outs: list[list[int]] = []
    gen = torch.Generator().manual_seed(seed)
    device = next(lm.model.parameters()).device
    for prompt in prompts:  # sampling seeded per prompt; the caller's random state is left as it was
        with seeded(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)), device):
            outs.append(_generate_one(lm, tok, prompt, chat, device, procs, max_new_tokens, do_sample,
                                      temperature))
    return outs


def _generate_one(lm: Any, tok: Any, prompt: str, chat: bool, device: torch.device, procs: Any,
                  max_new_tokens: int, do_sample: bool, temperature: float) -> list[int]:
    ids = torch.tensor([_prompt_ids(tok, prompt, chat)], dtype=torch.long, device=device)
    with torch.no_grad():
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=do_sample, temperature=temperature if do_sample else None,
                                top_p=None, top_k=0 if do_sample else None, logits_processor=procs,
                                pad_token_id=tok.pad_token_id or tok.eos_token_id)
    new = out[0, ids.shape[1]:].tolist()
    eos = tok.eos_token_id
    if eos is not None and eos in new:
        new = new[: new.index(eos)]
    return new


@dataclass
class FingerprintResult:
    """A fingerprint check: the detection on the concatenated answers, and each answer's own detection."""

    detection: Detection
    per_answer: list[Detection] = field(default_factory=list)
    answers: list[list[int]] = field(default_factory=list)

    @property
    def watermarked(self) -> bool:
        return self.detection.watermarked


def fingerprint_check(lm: Any, queries: Sequence[str], config: KGWConfig, *, max_new_tokens: int = 64,
                      seed: int = 0, chat: bool = True, do_sample: bool = True) -> FingerprintResult:
    """Ask ``lm`` the domain ``queries`` (no watermark applied here) and test its concatenated answers for KGW."""
    answers = generate(lm, queries, config=None, max_new_tokens=max_new_tokens, seed=seed, chat=chat,
                       do_sample=do_sample)
    return fingerprint_from_answers(answers, config, int(lm.model.config.vocab_size))


def fingerprint_from_answers(answers: Sequence[Sequence[int]], config: KGWConfig,
                             vocab_size: int) -> FingerprintResult:
    det = KGWDetector(config, vocab_size)
    joined: list[int] = [t for a in answers for t in a]
    return FingerprintResult(detection=det.detect(joined), per_answer=[det.detect(list(a)) for a in answers],
                             answers=[list(a) for a in answers])
