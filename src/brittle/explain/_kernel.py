"""The interventional game on trees: exact Shapley values and order-2 Shapley–Taylor indices per (x, z) pair.

For a foreground row x, a background row z and a tree, the hybrid input (x_S, z_S̄) reaches a leaf exactly when
every player on the leaf's path takes the branch the leaf needs. Walking the tree from the root, a node whose
player is not yet fixed either sends x and z the same way (no choice), or sends them apart: then the player is
*x-side* (in S) on the branch x takes and *z-side* (not in S) on the branch z takes. A player already fixed
follows its side. The leaves reached this way, each with its x-side set A (|A| = a) and z-side set B (|B| = b),
are the only leaves any hybrid reaches, and leaf l is reached by (x_S, z_S̄) iff A ⊆ S and B ∩ S = ∅. The game
is therefore a sum over reached leaves of ``value · u_{A,B}`` with ``u_{A,B}(S) = 1[A ⊆ S, B ∩ S = ∅]``, whose
indices are closed forms (Laberge & Pequignot, arXiv 2209.15123, derived again here):

- Shapley: ``+B(a, b+1)`` for each player of A, ``-B(a+1, b)`` for each player of B (B = Euler's beta,
  ``B(p, q) = (p-1)!(q-1)!/(p+q-1)!``);
- Möbius transform: ``m(A ∪ C) = (-1)^|C|`` for C ⊆ B, so the Shapley–Taylor main effect (``m({i})``) is
  ``+1`` for the single player of A when a = 1, ``-1`` for each player of B when a = 0; and the pair index
  ``Σ_{S ⊇ {i,j}} m(S) / C(|S|, 2)`` is ``2B(a-1, b+2)`` for two players of A, ``-2B(a, b+1)`` for one of each,
  ``2B(a+1, b)`` for two players of B.

The walk costs the number of reached nodes, never 2^d. Players are feature groups (a feature is its own group
by default): a node's player is the group of its feature.
"""

from __future__ import annotations

from fractions import Fraction
from math import factorial

import numpy as np

try:  # numba is optional: the same code runs as plain Python without it (much slower)
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - depends on the environment
    numba = None
    HAVE_NUMBA = False


def beta_int(p: int, q: int) -> Fraction:
    """Euler's beta function at positive integers, exactly: (p-1)!(q-1)!/(p+q-1)!."""
    return Fraction(factorial(p - 1) * factorial(q - 1), factorial(p + q - 1))


def coefficient_tables(max_players: int) -> dict[str, np.ndarray]:
    """Weights indexed by (a, b) for a, b in 0..max_players (exact fractions rounded once to float64)."""
    n = max_players + 1
    wa, wb, taa, tab, tbb = (np.zeros((n, n)) for _ in range(5))
    for a in range(n):
        for b in range(n - a):
            if a >= 1:
                wa[a, b] = float(beta_int(a, b + 1))
            if b >= 1:
                wb[a, b] = float(beta_int(a + 1, b))
            if a >= 2:
                taa[a, b] = float(2 * beta_int(a - 1, b + 2))
            if a >= 1 and b >= 1:
                tab[a, b] = float(-2 * beta_int(a, b + 1))
            if b >= 2:
                tbb[a, b] = float(2 * beta_int(a + 1, b))
    return {"wa": wa, "wb": wb, "taa": taa, "tab": tab, "tbb": tbb}


def _game(dx, dz, node_group, left, right, value, roots, slot, wa, wb, taa, tab, tbb, n_groups, depth,
          with_inter, phi, inter):
    """Accumulate Σ_z of the Shapley values (``phi[i, slot, g]``) and, if ``with_inter``, of the Shapley–Taylor
    matrix (``inter[i, g, h]``: main effects on the diagonal, half of each pair index on both sides)."""
    n = dx.shape[0]
    m = dz.shape[0]
    n_trees = roots.shape[0]
    cap = depth + 2
    st_node = np.empty(cap, np.int64)
    st_la = np.empty(cap, np.int64)
    st_lb = np.empty(cap, np.int64)
    st_g = np.empty(cap, np.int64)
    st_side = np.empty(cap, np.int64)
    list_a = np.empty(max(depth, 1) + 1, np.int64)
    list_b = np.empty(max(depth, 1) + 1, np.int64)
    pos_a = np.zeros(n_groups, np.int64)
    pos_b = np.zeros(n_groups, np.int64)
    for i in range(n):
        for k in range(m):
            for t in range(n_trees):
                s = slot[t]
                top = 0
                st_node[0] = roots[t]
                st_la[0] = 0
                st_lb[0] = 0
                st_g[0] = -1
                st_side[0] = 0
                top = 1
                while top > 0:
                    top -= 1
                    node = st_node[top]
                    la = st_la[top]
                    lb = st_lb[top]
                    g0 = st_g[top]
                    if st_side[top] == 1:
                        list_a[la] = g0
                        pos_a[g0] = la
                        la += 1
                    elif st_side[top] == 2:
                        list_b[lb] = g0
                        pos_b[g0] = lb
                        lb += 1
                    while True:
                        g = node_group[node]
                        if g < 0:  # leaf
                            v = value[node]
                            if v != 0.0 and la + lb > 0:
                                w = wa[la, lb] * v
                                for q in range(la):
                                    phi[i, s, list_a[q]] += w
                                w = wb[la, lb] * v
                                for q in range(lb):
                                    phi[i, s, list_b[q]] -= w
                                if with_inter:
                                    if la == 1:
                                        inter[i, list_a[0], list_a[0]] += v
                                    elif la == 0:
                                        for q in range(lb):
                                            inter[i, list_b[q], list_b[q]] -= v
                                    if la >= 2:
                                        w = 0.5 * taa[la, lb] * v
                                        for q in range(la):
                                            for r in range(q + 1, la):
                                                inter[i, list_a[q], list_a[r]] += w
                                                inter[i, list_a[r], list_a[q]] += w
                                    if la >= 1 and lb >= 1:
                                        w = 0.5 * tab[la, lb] * v
                                        for q in range(la):
                                            for r in range(lb):
                                                inter[i, list_a[q], list_b[r]] += w
                                                inter[i, list_b[r], list_a[q]] += w
                                    if lb >= 2:
                                        w = 0.5 * tbb[la, lb] * v
                                        for q in range(lb):
                                            for r in range(q + 1, lb):
                                                inter[i, list_b[q], list_b[r]] += w
                                                inter[i, list_b[r], list_b[q]] += w
                            break
                        xl = dx[i, node]
                        zl = dz[k, node]
                        p = pos_a[g]
                        if p < la and list_a[p] == g:  # x-side already: follow x
                            node = left[node] if xl else right[node]
                            continue
                        p = pos_b[g]
                        if p < lb and list_b[p] == g:  # z-side already: follow z
                            node = left[node] if zl else right[node]
                            continue
                        if xl == zl:
                            node = left[node] if xl else right[node]
                            continue
                        # x and z part: z's branch waits on the stack with g z-side, x's branch goes on now
                        st_node[top] = left[node] if zl else right[node]
                        st_la[top] = la
                        st_lb[top] = lb
                        st_g[top] = g
                        st_side[top] = 2
                        top += 1
                        list_a[la] = g
                        pos_a[g] = la
                        la += 1
                        node = left[node] if xl else right[node]


if HAVE_NUMBA:
    _game_jit = numba.njit(cache=True, nogil=True)(_game)
else:  # pragma: no cover
    _game_jit = _game


def run_game(dx, dz, node_group, left, right, value, roots, slot, n_slots, n_groups, depth, with_inter,
             use_numba=True):
    """Background-averaged Shapley values ``(n, n_slots, n_groups)`` and, if asked, the Shapley–Taylor matrices
    ``(n, n_groups, n_groups)`` (else None)."""
    tab = coefficient_tables(max(depth, 1))
    n = dx.shape[0]
    phi = np.zeros((n, n_slots, n_groups))
    inter = np.zeros((n, n_groups, n_groups) if with_inter else (1, 1, 1))
    fn = _game_jit if (use_numba and HAVE_NUMBA) else _game
    fn(np.ascontiguousarray(dx, dtype=np.uint8), np.ascontiguousarray(dz, dtype=np.uint8),
       node_group.astype(np.int64), left.astype(np.int64), right.astype(np.int64), value.astype(np.float64),
       roots.astype(np.int64), slot.astype(np.int64), tab["wa"], tab["wb"], tab["taa"], tab["tab"], tab["tbb"],
       int(n_groups), int(depth), bool(with_inter), phi, inter)
    m = dz.shape[0]
    phi /= m
    if with_inter:
        inter /= m
        return phi, inter
    return phi, None
