"""Evaluation of a (compressed) causal LM: perplexity per domain and multiple-choice accuracy by log-likelihood."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError
from .data import ChoiceItem


@dataclass
class Perplexity:
    """exp(mean next-token negative log-likelihood) over ``tokens`` predicted tokens."""

    value: float
    nll: float
    tokens: int


@torch.no_grad()
def perplexity(model: Any, ids: torch.Tensor, *, batch_size: int = 8) -> Perplexity:
    """Perplexity of ``model`` on token chunks ``ids`` (n × seq_len), every position after the first predicted."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[1] < 2 or ids.shape[0] < 1:
        raise InputError("perplexity needs an (n, seq_len >= 2) tensor of token ids",
                         "build it with brittle.llm.data.build_pool(..., split='heldout').ids")
    total, count = 0.0, 0
    for b in range(0, ids.shape[0], batch_size):
        x = ids[b:b + batch_size].to(next(model.parameters()).device)
        logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        total += float(nll)
        count += x[:, 1:].numel()
    mean = total / count
    return Perplexity(value=math.exp(mean), nll=mean, tokens=count)


@dataclass
class ChoiceAccuracy:
    """Accuracy over ``n`` items and its binomial standard error."""

    accuracy: float
    n: int

    @property
    def stderr(self) -> float:
        return math.sqrt(self.accuracy * (1 - self.accuracy) / self.n) if self.n else math.nan


@torch.no_grad()
def choice_accuracy(model: Any, tokenizer: Any, items: Sequence[ChoiceItem], *, normalize: bool = True,
                    max_context_tokens: int = 192) -> ChoiceAccuracy:
    """Pick the option with the highest (per-token mean if ``normalize``) log-likelihood given the context."""
    if not items:
        raise InputError("no multiple-choice items given", "load them with brittle.llm.data.load_choice_task")
    correct = 0
    dev = next(model.parameters()).device
    for it in items:
        ctx = tokenizer(it.context, add_special_tokens=False)["input_ids"][-max_context_tokens:]
        scores = []
        opts = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in it.options]
        if all(len(o) == 1 for o in opts):  # one forward pass scores every single-token option
            last = torch.log_softmax(model(input_ids=torch.tensor([ctx], device=dev), use_cache=False).logits[0, -1].float(), -1)
            scores = [float(last[o[0]]) for o in opts]
            correct += int(max(range(len(scores)), key=scores.__getitem__) == it.label)
            continue
        width = len(ctx) + max(len(o) for o in opts)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        batch = torch.full((len(opts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(batch)
        for k, o in enumerate(opts):
            seq = ctx + o
            batch[k, : len(seq)] = torch.tensor(seq)
            mask[k, : len(seq)] = 1
        logp = torch.log_softmax(model(input_ids=batch.to(dev), attention_mask=mask.to(dev), use_cache=False).logits.float(), -1).cpu()
        for k, o in enumerate(opts):
            pos = torch.arange(len(ctx) - 1, len(ctx) + len(o) - 1)
            ll = logp[k, pos, torch.tensor(o)].sum().item()
            scores.append(ll / len(o) if normalize else ll)
        correct += int(max(range(len(scores)), key=scores.__getitem__) == it.label)
    return ChoiceAccuracy(accuracy=correct / len(items), n=len(items))
