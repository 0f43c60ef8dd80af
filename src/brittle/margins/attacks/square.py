"""Square Attack, L∞ (Andriushchenko et al. 2020): gradient-free random search, for models whose gradients mislead."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...data.loading import Domain
from ...core.validation import check_positive_int
from ._fixed import CHECK_EVERY, _check, eps_tensor, masked_default
from ._graphs import CudaGraphs, graphs_for

__all__ = ["square_linf"]

#: most input values in one model call of Square's candidates (2**26 floats: 256 MB); ``candidates`` is
#: lowered where ``candidates × rows`` inputs would exceed it (large images, many rows)
CANDIDATE_VALUES = 2 ** 26


def _square_p(p_init: float, it: int, queries: int) -> float:
    """Share of pixels a Square window covers at query ``it`` (AutoAttack's schedule, rescaled to ``queries``)."""
    it = int(it / max(queries, 1) * 10000)
    for bound, div in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16), (200, 8),
                       (50, 4), (10, 2)):
        if it > bound:
            return p_init / div
    return p_init


def square_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, *,
                queries: int = 1000, candidates: int = 1, p_init: float = 0.8, domain: Domain = (0.0, 1.0),
                generator: torch.Generator | None = None, masked: bool | None = None,
                cuda_graphs: bool | CudaGraphs | None = None) -> torch.Tensor:
    """Square Attack, L∞: random search on the margin loss ``z_y - max_{j != y} z_j``.

    Starts from vertical stripes of ±ε, then per query redraws, for every sample at its own random position, a
    square window of ±ε per channel and keeps it where the margin drops. The window's share of the image
    follows AutoAttack's schedule over ``queries``. Images only (``(N, C, H, W)``; other shapes are treated as
    ``(N, 1, 1, D)``). One forward per query; only samples not yet misclassified take new points.
    ``candidates``: windows drawn per sample and round, all evaluated in one forward pass, the best one kept
    (``queries // candidates`` rounds, so the same number of queries in fewer, larger model calls: on a CPU or
    a GPU a small batch costs the call's overhead more than its rows; 1 is AutoAttack's sequential search;
    lowered where a call would hold more than `CANDIDATE_VALUES` input values). ``masked``
    keeps fooled samples in the batch (default on CUDA: no read-back per query; see `masked_default`), else they
    are dropped from it. ``cuda_graphs``: replay each masked round as a CUDA graph on CUDA (default off;
    `FastBoundaryAttack` turns it on; the windows are drawn outside the graph, 50 rounds' at a time).
    Returns per sample the first misclassified point, else the lowest-margin point.
    """
    _check(x, y)
    check_positive_int(candidates, "candidates", "pass the number of windows to draw per sample and round, e.g. 1")
    shape = x.shape
    xi = x.detach().reshape(len(x), 1, 1, -1) if x.ndim != 4 else x.detach()
    n, c, h, w = xi.shape
    e = eps_tensor(eps, xi)
    lo, hi = domain
    dev = x.device
    masked = masked_default(masked, x)

    def margin(xq: torch.Tensor, yq: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = model(xq.reshape(len(xq), *shape[1:]))
        col = yq.unsqueeze(1)
        return logits.gather(1, col).squeeze(1) - logits.scatter(1, col, -torch.inf).amax(1)

    ih, iw = torch.arange(h, device=dev), torch.arange(w, device=dev)
    # candidates per round: fewer where one call would hold more than CANDIDATE_VALUES input values (memory)
    kc = max(1, min(int(candidates), CANDIDATE_VALUES // max(n * c * h * w, 1)))
    rounds = max(queries // kc, 1) if queries > 0 else 0

    def window_size(i: int) -> tuple[int, int]:
        p = _square_p(p_init, i, queries)
        if h > 1:
            size_h = min(max(int(round(math.sqrt(p * h * w))), 1), max(h - 1, 1))
            return size_h, min(size_h, w)
        return 1, min(max(int(round(p * w)), 1), w)

    def draw(first: int, count: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For rounds ``first .. first + count - 1``: ``kc`` random windows per sample, as masks
        (count, kc, k, 1, h, w), and the sign of each window's ±ε per channel, (count, kc, k, c, 1, 1). Drawn
        together, so a round costs no kernel of its own to draw."""
        sizes = torch.tensor([window_size(i * kc) for i in range(first, first + count)], device=dev)
        size_h, size_w = sizes[:, 0:1, None], sizes[:, 1:2, None]
        top = (torch.rand((count, kc, k), generator=generator, device=dev) * (h - size_h + 1)).long()
        left = (torch.rand((count, kc, k), generator=generator, device=dev) * (w - size_w + 1)).long()
        in_h = (ih >= top.unsqueeze(3)) & (ih < (top + size_h).unsqueeze(3))
        in_w = (iw >= left.unsqueeze(3)) & (iw < (left + size_w).unsqueeze(3))
        inside = (in_h.unsqueeze(4) & in_w.unsqueeze(3)).unsqueeze(3)
        positive = torch.rand((count, kc, k, c, 1, 1), generator=generator, device=dev) < 0.5
        return inside, positive

    sign = torch.randint(0, 2, (n, c, 1, w), generator=generator, device=dev).to(xi.dtype) * 2 - 1
    best = (xi + e * sign).clamp(lo, hi)
    m_best = margin(best, y)
    up, down = (xi + e).clamp(lo, hi), (xi - e).clamp(lo, hi)  # a window's two values per pixel
    # rounds drawn at once: up to 50, and at most 2**26 window cells
    chunk = max(1, min(50, 2 ** 26 // max(n * kc * h * w, 1)))
    # the rows searched (all of them when masked; else those not yet misclassified, re-gathered on a flip)
    active = torch.arange(n, device=dev)
    cur, yb, m_cur, up_a, down_a = best.clone(), y, m_best.clone(), up, down  # updated in place
    windows: dict[str, torch.Tensor] = {}  # this chunk's windows ("inside", "positive"), rewritten in place
    j_t = torch.zeros(1, dtype=torch.long, device=dev)  # the round within the chunk, on the device (for graphs)

    def step() -> None:
        searching = m_cur > 0
        inside, positive = windows["inside"].index_select(0, j_t)[0], windows["positive"].index_select(0, j_t)[0]
        new = torch.where(inside, torch.where(positive, up_a, down_a), cur)  # (kc, rows, c, h, w)
        if kc == 1:
            new, m_new = new[0], margin(new[0], yb)
        else:
            m_all = margin(new.reshape(-1, c, h, w), yb.repeat(kc)).view(kc, -1)
            m_new, pick = m_all.min(0)
            new = new.gather(0, pick.view(1, -1, 1, 1, 1).expand(1, *new.shape[1:]))[0]
        take = (m_new < m_cur) & searching  # (every row searches in compact mode)
        cur.copy_(torch.where(take.view(-1, 1, 1, 1), new, cur))
        m_cur.copy_(torch.where(take, m_new, m_cur))
        j_t.add_(1)

    graphs, replay = graphs_for(model, xi, masked, cuda_graphs, default=False), None
    for i in range(rounds):
        if i % chunk == 0:
            inside, positive = draw(i, min(chunk, rounds - i), len(active))
            if masked and "inside" in windows:  # same buffers for the graph: the last chunk may be shorter
                windows["inside"][:len(inside)], windows["positive"][:len(positive)] = inside, positive
            else:
                windows["inside"], windows["positive"] = inside, positive
            j_t.zero_()
        if masked:
            if i % CHECK_EVERY == 0 and not bool((m_cur > 0).any()):
                break
        elif not bool((m_cur > 0).all()):
            best[active], m_best[active] = cur, m_cur
            keep = (m_cur > 0).nonzero().flatten()
            if len(keep) == 0:
                break
            active = active[keep]
            cur, yb, m_cur, up_a, down_a = best[active], y[active], m_best[active], up[active], down[active]
            windows["inside"], windows["positive"] = windows["inside"][:, :, keep], windows["positive"][:, :, keep]
            replay = None
        if replay is None:
            replay = graphs.step(step)
        replay()
    best[active], m_best[active] = cur, m_cur
    return best.reshape(shape)
