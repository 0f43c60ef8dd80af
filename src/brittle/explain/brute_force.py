"""Reference values by enumerating all 2^G coalitions through a prediction function (small G only).

Used by the tests and the benchmark to check the tree algorithm, and usable on any model: ``predict`` is
called on the hybrid inputs ``(x_S, z_S̄)`` for every coalition S and background row z.
"""

from __future__ import annotations

from math import comb, factorial

import numpy as np

from ..errors import InputError

MAX_PLAYERS = 16


def coalition_values(predict, x, background, feature_to_group=None) -> np.ndarray:
    """``v[mask] = mean_z predict(x_S, z_S̄)`` for every coalition S (bit g of mask set: player g in S)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    bg = np.atleast_2d(np.asarray(background, dtype=np.float64))
    owner = np.arange(x.shape[0]) if feature_to_group is None else np.asarray(feature_to_group)
    G = int(owner.max()) + 1
    if G > MAX_PLAYERS:
        raise InputError(f"brute force over {G} players needs 2^{G} coalitions", f"use at most {MAX_PLAYERS} players")
    masks = np.arange(2 ** G)
    take_x = ((masks[:, None] >> np.arange(G)[None, :]) & 1).astype(bool)[:, owner]  # (2^G, d)
    hybrid = np.where(take_x[:, None, :], x[None, None, :], bg[None, :, :])  # (2^G, m, d)
    out = np.asarray(predict(hybrid.reshape(-1, x.shape[0])), dtype=np.float64).reshape(2 ** G, bg.shape[0])
    return out.mean(axis=1)


def shapley_from_values(v: np.ndarray) -> np.ndarray:
    G = int(np.log2(len(v)))
    masks = np.arange(len(v))
    size = np.array([bin(s).count("1") for s in masks])
    phi = np.zeros(G)
    for i in range(G):
        without = masks[(masks >> i) & 1 == 0]
        w = np.array([factorial(int(s)) * factorial(G - int(s) - 1) / factorial(G) for s in size[without]])
        phi[i] = np.sum(w * (v[without | (1 << i)] - v[without]))
    return phi


def moebius(v: np.ndarray) -> np.ndarray:
    m = np.array(v, dtype=np.float64)
    G = int(np.log2(len(v)))
    for i in range(G):
        bit = 1 << i
        idx = np.arange(len(v))
        has = idx[(idx & bit) != 0]
        m[has] -= m[has ^ bit]
    return m


def shapley_taylor_from_values(v: np.ndarray) -> np.ndarray:
    """``(G, G)``: main effects ``v({g}) - v(∅)`` on the diagonal, half of each pair index on both sides."""
    G = int(np.log2(len(v)))
    mob = moebius(v)
    masks = np.arange(len(v))
    size = np.array([bin(s).count("1") for s in masks])
    out = np.zeros((G, G))
    for i in range(G):
        out[i, i] = v[1 << i] - v[0]
        for j in range(i + 1, G):
            pair = (1 << i) | (1 << j)
            sup = masks[(masks & pair) == pair]
            val = np.sum(mob[sup] / np.array([comb(int(s), 2) for s in size[sup]]))
            out[i, j] = out[j, i] = val / 2
    return out


def brute_force_values(predict, X, background, feature_to_group=None) -> np.ndarray:
    """``(n, G)`` interventional Shapley values by enumeration."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return np.stack([shapley_from_values(coalition_values(predict, x, background, feature_to_group)) for x in X])


def brute_force_interactions(predict, X, background, feature_to_group=None) -> np.ndarray:
    """``(n, G, G)`` Shapley–Taylor matrices (same convention as :class:`~brittle.explain.Explanation`)."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return np.stack([shapley_taylor_from_values(coalition_values(predict, x, background, feature_to_group))
                     for x in X])
