"""Empirical CDF of the ID score vectors: the share of ID validation vectors a score vector dominates.

``score(s) = (1/n) · #{i : s_i ≤ s component-wise}`` with every column oriented "higher = more OOD" (so a
vector that is at least as atypical as an ID vector on *every* detector dominates it). An ID-like vector
dominates few ID vectors (score near 0); one beyond the ID cloud on all detectors dominates nearly all
(score near 1). Acceptance regions ``{F̂ ≤ t}`` are nested lower sets of ``R^d``. One-sided by design: an input
atypical on one detector only dominates few ID vectors, so it is accepted — the strategy trusts agreement.

Computation: for each column the prefix sets "ID rows whose value is ≤ the r-th smallest" are precomputed as
bit sets (``(n+1) × n`` bits per column); a query ANDs ``d`` of them and counts bits — ``O(d·n/64)`` word
operations per query instead of the ``O(d·n)`` comparisons of `ecdf_brute_force` (the reference, also used when
the bit sets would exceed ``max_bitset_bytes``). Both give the same count exactly (tested). Bits are counted with
``np.bitwise_count`` on NumPy >= 2.0 and with a byte lookup table on NumPy 1.x (`popcount_rows`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import InputError
from .base import Combiner, check_score_matrix, register_combiner

#: bits set in each byte value (the popcount of NumPy < 2.0, which lacks ``np.bitwise_count``)
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount_rows(words: np.ndarray, *, table: bool | None = None) -> np.ndarray:
    """Set bits per row of an unsigned-integer matrix ``(m, w)``, as int64 ``(m,)``: ``np.bitwise_count`` where
    NumPy has it (>= 2.0), else (or with ``table=True``) a 256-entry lookup table over the bytes."""
    if table is None:
        table = not hasattr(np, "bitwise_count")
    words = np.ascontiguousarray(words)
    if not table:
        return np.bitwise_count(words).sum(axis=1, dtype=np.int64)
    return _POPCOUNT8[words.view(np.uint8).reshape(len(words), -1)].sum(axis=1, dtype=np.int64)


def ecdf_brute_force(reference: Any, query: Any, chunk: int = 512) -> np.ndarray:
    """Share of ``reference`` rows dominated component-wise (``<=``) by each ``query`` row, by direct comparison."""
    ref = check_score_matrix(reference, "reference")
    q = check_score_matrix(query, "query", d=ref.shape[1])
    out = np.empty(len(q))
    for a in range(0, len(q), chunk):
        out[a:a + chunk] = (ref[None, :, :] <= q[a:a + chunk, None, :]).all(axis=2).sum(axis=1)
    return out / len(ref)


@register_combiner
class EmpiricalCDF(Combiner):
    name = "ecdf"
    min_fit_rows = 1

    def __init__(self, max_bitset_bytes: int = 256 * 2**20):
        if not isinstance(max_bitset_bytes, (int, np.integer)) or max_bitset_bytes < 0:
            raise InputError(f"max_bitset_bytes must be a non-negative integer, got {max_bitset_bytes!r}",
                             "pass e.g. max_bitset_bytes=268435456")
        self.max_bitset_bytes = int(max_bitset_bytes)

    def _fit(self, s: np.ndarray) -> None:
        self.reference_ = s.copy()
        self._build()

    def _build(self) -> None:
        s = self.reference_
        n, d = s.shape
        words = (n + 63) // 64
        self._bits = None
        self._sorted = [np.sort(s[:, k]) for k in range(d)]
        if (n + 1) * words * 8 * d > self.max_bitset_bytes:
            return                                            # too large: brute force
        bits = []
        for k in range(d):
            rank = np.empty(n, dtype=np.int64)
            rank[np.argsort(s[:, k], kind="stable")] = np.arange(n)
            prefix = rank[None, :] < np.arange(n + 1)[:, None]          # (n+1, n): row r = the r smallest
            packed = np.packbits(prefix, axis=1, bitorder="little")
            pad = words * 8 - packed.shape[1]
            if pad:
                packed = np.pad(packed, ((0, 0), (0, pad)))
            bits.append(np.ascontiguousarray(packed).view(np.uint64))
        self._bits = bits

    def _score(self, s: np.ndarray) -> np.ndarray:
        n = len(self.reference_)
        if self._bits is None:
            return ecdf_brute_force(self.reference_, s)
        ranks = [np.searchsorted(self._sorted[k], s[:, k], side="right") for k in range(s.shape[1])]
        out = np.empty(len(s))
        chunk = max(1, 2**22 // max(1, self._bits[0].shape[1]))
        for a in range(0, len(s), chunk):
            acc = self._bits[0][ranks[0][a:a + chunk]].copy()
            for k in range(1, s.shape[1]):
                acc &= self._bits[k][ranks[k][a:a + chunk]]
            out[a:a + chunk] = popcount_rows(acc)
        return out / n

    def get_params(self) -> dict[str, Any]:
        return {"max_bitset_bytes": self.max_bitset_bytes}

    def _get_state(self) -> dict[str, Any]:
        return {"reference": self.reference_.tolist()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.reference_ = np.asarray(state["reference"], dtype=np.float64).reshape(-1, self.d_)
        self._build()
