"""Exact L∞ input margins of small ReLU networks by mixed-integer linear programming.

For a sample ``x0`` with predicted class ``p`` and each other class ``j``, HiGHS (through
`scipy.optimize.milp`) solves

    min t  s.t.  |x - x0|∞ <= t,  x in the domain box,  logit_j(x) >= logit_p(x),

with every unstable ReLU encoded exactly by a binary variable and big-M constraints whose constants are
the pre-activation bounds from CROWN over the ball of radius ``R`` (an attack's upper bound when given,
else the whole box; Tjeng et al., 2019). The margin is the minimum over ``j``. Classes that CROWN proves
unreachable within ``R`` are skipped, and each solve is cut off at the best margin found so far.

Exactness holds up to HiGHS's tolerances (relative gap 1e-7, absolute gap 1e-6, feasibility 1e-7); the
minimiser is then checked on the real model: it lies on the decision boundary, so it is pushed a hair
past it (a signed-gradient step or a radial stretch of at most ``PUSH_TOL`` in the norm) until the
model's prediction really changes. A sample is reported exact only when every class was solved to
optimality (or proved out of reach) and that check passed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from ..attacks.base import is_flipped, perturbation_norm
from ...data.loading import Domain
from ...errors import InputError, ModelError
from .certify import certified_lower_bounds, check_inputs, domain_radius
from .network import DTYPE, Network, _Affine, _ReLU

#: Largest extra norm allowed when pushing the MILP minimiser past the decision boundary.
PUSH_TOL = 1e-4
_PUSHES = (0.0, 1e-7, 1e-6, 1e-5, PUSH_TOL)


@dataclass
class ExactMargins:
    """Outcome of `exact_margins`; unpacks as ``margins, x_adv = exact_margins(...)``.

    Attributes:
        margins: the exact margin where ``exact``, NaN where a solve did not finish (never a guess).
        x_adv: a verified adversarial example per sample (the clean input where none was found).
        lower: proven lower bounds (the solver's dual bounds; equal to ``margins`` up to 1e-6 where exact).
        upper: norms of ``x_adv`` (``inf`` where none was found; at most ``margins + PUSH_TOL`` where exact).
        exact: whether each sample was solved to optimality and its minimiser verified.
        adv_class: the class the model predicts at ``x_adv`` (-1 where none).
    """

    margins: torch.Tensor
    x_adv: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    exact: torch.Tensor
    adv_class: torch.Tensor

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.margins, self.x_adv))


def _dense_chain(net: Network) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """The network as dense layers on flattened vectors: hidden ``(W, b)`` pairs (each followed by a ReLU)
    and the output layer."""
    hidden: list[tuple[np.ndarray, np.ndarray]] = []
    width = math.prod(net.input_shape)
    w_acc = np.eye(width)
    b_acc = np.zeros(width)
    for op in net.ops:
        if isinstance(op, _Affine):
            dense = op.dense()
            if dense is None:
                raise ModelError(f"a {op.kind} layer is too large for exact margins by MILP",
                                 "use certified_lower_bounds and attacks to bracket the margin")
            w = dense.numpy()
            bias = op.bias_map.reshape(-1).numpy()
            w_acc, b_acc = w @ w_acc, w @ b_acc + bias
        elif isinstance(op, _ReLU):
            hidden.append((w_acc, b_acc))
            width = len(b_acc)
            w_acc, b_acc = np.eye(width), np.zeros(width)
    return hidden, (w_acc, b_acc)


class _Milp:
    """The MILP of one sample (all constraints but the target class and the cut-off)."""

    def __init__(self, x0: np.ndarray, radius: float, domain: Domain, hidden: list[tuple[np.ndarray, np.ndarray]],
                 pre_bounds: list[tuple[np.ndarray, np.ndarray]]):
        d = len(x0)
        self.d = d
        rows: list[sp.spmatrix] = []
        lbs: list[np.ndarray] = []
        ubs: list[np.ndarray] = []
        lo_var = [np.maximum(domain[0], x0 - radius), np.array([0.0])]
        hi_var = [np.minimum(domain[1], x0 + radius), np.array([radius])]
        integrality = [np.zeros(d), np.zeros(1)]
        n_var = d + 1
        blocks: list[tuple[int, int]] = []  # (offset, width) of each layer's y variables
        prev = (0, d)
        eye_d = sp.identity(d, format="csr")
        t_col = sp.csr_matrix(np.ones((d, 1)))
        # |x - x0| <= t as x - t <= x0 and x + t >= x0
        self._input_rows = sp.vstack([sp.hstack([eye_d, -t_col]), sp.hstack([eye_d, t_col])]).tocsr()
        input_lb = np.concatenate([np.full(d, -np.inf), x0])
        input_ub = np.concatenate([x0, np.full(d, np.inf)])
        layer_rows = []
        for (w, b), (low, up) in zip(hidden, pre_bounds):
            m = len(b)
            y_off = n_var
            unstable = np.flatnonzero((low < 0) & (up > 0))
            active = np.flatnonzero(low >= 0)
            a_off = y_off + m
            k = len(unstable)
            n_var += m + k
            lo_var += [np.zeros(m), np.zeros(k)]
            hi_var += [np.maximum(up, 0.0), np.ones(k)]
            integrality += [np.zeros(m), np.ones(k)]
            layer_rows.append((w, b, low, up, prev, y_off, m, unstable, active, a_off))
            blocks.append((y_off, m))
            prev = (y_off, m)
        self.n_var = n_var
        self.last = prev

        def rowblock(coefs: list[tuple[int, sp.spmatrix]], n_rows: int) -> sp.csr_matrix:
            mat = sp.lil_matrix((n_rows, n_var))
            for off, block in coefs:
                mat[:, off:off + block.shape[1]] = block
            return mat.tocsr()

        rows.append(sp.hstack([self._input_rows, sp.csr_matrix((2 * d, n_var - d - 1))]).tocsr())
        lbs.append(input_lb)
        ubs.append(input_ub)
        for w, b, low, up, (p_off, p_w), y_off, m, unstable, active, a_off in layer_rows:
            eye_m = sp.identity(m, format="csr")
            if len(active):
                sel = active
                rows.append(rowblock([(y_off, eye_m[sel]), (p_off, sp.csr_matrix(-w[sel]))], len(sel)))
                lbs.append(b[sel])
                ubs.append(b[sel])
            if len(unstable):
                sel = unstable
                k = len(sel)
                # y - W v >= b
                rows.append(rowblock([(y_off, eye_m[sel]), (p_off, sp.csr_matrix(-w[sel]))], k))
                lbs.append(b[sel])
                ubs.append(np.full(k, np.inf))
                # y - W v - l a <= b - l
                rows.append(rowblock([(y_off, eye_m[sel]), (p_off, sp.csr_matrix(-w[sel])),
                                      (a_off, sp.diags(-low[sel]).tocsr())], k))
                lbs.append(np.full(k, -np.inf))
                ubs.append(b[sel] - low[sel])
                # y - u a <= 0
                rows.append(rowblock([(y_off, eye_m[sel]), (a_off, sp.diags(-up[sel]).tocsr())], k))
                lbs.append(np.full(k, -np.inf))
                ubs.append(np.zeros(k))
        self.a = sp.vstack(rows).tocsr()
        self.lb = np.concatenate(lbs)
        self.ub = np.concatenate(ubs)
        self.lo_var = np.concatenate(lo_var)
        self.hi_var = np.concatenate(hi_var)
        self.integrality = np.concatenate(integrality)
        self.c = np.zeros(n_var)
        self.c[d] = 1.0

    def solve(self, w_out: np.ndarray, b_out: np.ndarray, pred: int, target: int, cutoff: float,
              time_limit: float):
        """Smallest ``t <= cutoff`` at which class ``target`` reaches the predicted class's logit."""
        off, width = self.last
        row = np.zeros((1, self.n_var))
        row[0, off:off + width] = w_out[target] - w_out[pred]
        constraints = LinearConstraint(sp.vstack([self.a, sp.csr_matrix(row)]).tocsr(),
                                       np.concatenate([self.lb, [b_out[pred] - b_out[target]]]),
                                       np.concatenate([self.ub, [np.inf]]))
        hi = self.hi_var.copy()
        hi[self.d] = min(hi[self.d], cutoff)
        return milp(self.c, integrality=self.integrality, bounds=Bounds(self.lo_var, hi), constraints=constraints,
                    options={"time_limit": max(time_limit, 0.01), "mip_rel_gap": 1e-7, "disp": False})


def _push(model: nn.Module, x0: torch.Tensor, xs: torch.Tensor, pred: int, target: int,
          domain: Domain) -> tuple[torch.Tensor, int] | None:
    """The MILP minimiser moved a hair past the boundary so the model's prediction changes, or None."""
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32
    xg = xs.to(dtype).unsqueeze(0).requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        (logits[0, target] - logits[0, pred]).backward()
    step = xg.grad[0].sign()
    radial = xs - x0
    for delta in _PUSHES:
        for cand in (xs + delta * step, x0 + radial * (1 + delta / max(float(radial.abs().max()), 1e-12))):
            cand = cand.clamp(domain[0], domain[1]).to(dtype)
            with torch.no_grad():
                logits = model(cand.unsqueeze(0))
            if bool(is_flipped(logits, torch.tensor([pred], device=logits.device))[0]):
                return cand, int(logits.argmax(1)[0])
    return None


def exact_margins(model: nn.Module, x: torch.Tensor, pred: torch.Tensor | None = None, norm: str = "linf",
                  domain: Domain = (0.0, 1.0), time_limit: float = 60.0,
                  upper: torch.Tensor | float | None = None) -> ExactMargins:
    """Exact L∞ input margins of a small ReLU network by mixed-integer programming.

    Args:
        model: an ``nn.Sequential`` of Linear / ReLU / Flatten (small Conv2d layers are densified).
        x: inputs ``(N, ...)`` inside ``domain``.
        pred: the classes whose margin is measured (default: the model's predictions).
        norm: only ``"linf"``; ``"l2"`` raises `InputError` (its objective is quadratic, not an MILP).
        domain: the input box ``(low, high)``.
        time_limit: seconds of solver time per sample (shared by its classes).
        upper: verified upper bounds of the margins (e.g. an attack's), scalar or per sample; they
            shrink the big-M constants and the search. A wrong (too small) value is detected and dropped.

    Returns:
        `ExactMargins`; ``margins, x_adv = exact_margins(...)`` unpacks the margins (NaN where the
        solve did not finish: read ``lower`` / ``upper`` there) and the verified adversarial examples.
    """
    net, x64, pred, norm, domain = check_inputs(model, x, pred, norm, domain)
    if norm != "linf":
        raise InputError(f"exact margins support norm 'linf' only, not {norm!r} (the L2 margin needs a "
                         "mixed-integer quadratic program)",
                         "bracket L2 margins with certified_lower_bounds(norm='l2') and an attack's upper bound")
    if not time_limit > 0:
        raise InputError(f"time_limit must be positive, got {time_limit!r}", "pass seconds, e.g. time_limit=60")
    hidden, (w_out, b_out) = _dense_chain(net)
    full = domain_radius(x64, norm, domain)
    radius = full.clone()
    if upper is not None:
        up = torch.as_tensor(upper, dtype=DTYPE).detach().cpu().reshape(-1).expand(len(x64)).clone()
        if bool(torch.isnan(up).any()) or bool((up < 0).any()):
            raise InputError("upper must hold non-negative bounds (inf where unknown)", "pass verified norms or None")
        radius = torch.minimum(full, up * (1 + 1e-6) + 1e-9)
    # first ball: twice the certified radius (the margin usually lies inside), never beyond ``upper``
    certified = certified_lower_bounds(model, x, pred, norm, domain, "crown", upper=radius, steps=10).to(DTYPE)
    start = torch.minimum(radius, torch.maximum(2 * certified, 1e-3 * full))
    start = torch.where(torch.isfinite(certified), start, full)
    n = len(x64)
    margins = torch.full((n,), math.nan, dtype=DTYPE)
    lower = torch.zeros(n, dtype=DTYPE)
    upper_out = torch.full((n,), math.inf, dtype=DTYPE)
    exact = torch.zeros(n, dtype=torch.bool)
    adv_class = torch.full((n,), -1, dtype=torch.long)
    x_adv = x.detach().cpu().clone()
    for i in range(n):
        deadline = time.monotonic() + time_limit
        result = _solve_sample(net, model, x64[i], int(pred[i]), float(start[i]), float(full[i]), domain, hidden,
                               w_out, b_out, deadline)
        lower[i] = result["lower"]
        if result["x_adv"] is not None:
            x_adv[i] = result["x_adv"].to(x_adv.dtype).reshape(x_adv.shape[1:])
            upper_out[i] = float(perturbation_norm((x_adv[i:i + 1].to(DTYPE) - x64[i:i + 1]), norm)[0])
            adv_class[i] = result["adv_class"]
        if result["solved"] and (result["x_adv"] is not None or result["out_of_reach"]):
            exact[i] = True
            margins[i] = result["best"]
    return ExactMargins(margins, x_adv, lower, upper_out, exact, adv_class)


def _solve_sample(net: Network, model: nn.Module, x0: torch.Tensor, pred: int, radius: float, full: float,
                  domain: Domain, hidden: list, w_out: np.ndarray, b_out: np.ndarray, deadline: float) -> dict:
    """Solve one sample: MILPs inside balls of growing radius (doubling from ``radius`` up to ``full``).

    An infeasible ball proves the margin exceeds its radius; the first ball holding an adversarial
    input holds the minimiser.
    """
    proven = 0.0
    while True:
        out = _solve_within(net, x0, pred, radius, domain, hidden, w_out, b_out, deadline)
        out["lower"] = max(out["lower"], proven)
        if out["x"] is not None or not out["solved"] or radius >= full:
            break
        proven, radius = radius, min(2 * radius, full)
    out["x_adv"], out["adv_class"] = None, -1
    out["out_of_reach"] = out["x"] is None and out["solved"]
    if out["out_of_reach"]:
        out["lower"] = math.inf
    if out["x"] is not None:
        xs = torch.from_numpy(out["x"]).to(DTYPE).reshape(x0.shape)
        pushed = _push(model, x0, xs, pred, out["target"], domain)
        if pushed is not None:
            out["x_adv"], out["adv_class"] = pushed
        else:
            out["solved"] = False
    return out


def _solve_within(net: Network, x0: torch.Tensor, pred: int, radius: float, domain: Domain, hidden: list,
                  w_out: np.ndarray, b_out: np.ndarray, deadline: float) -> dict:
    """The per-class MILPs of one sample inside the ball of ``radius``.

    Classes are tried from the least certified one and each solve is cut off at the best margin so far;
    after an improvement the big-M bounds are recomputed on the smaller ball it defines, and classes
    that CROWN proves out of reach there are skipped. (One MILP per class has a far stronger LP
    relaxation than one MILP with a disjunction over the classes.)
    """

    def build(r: float) -> tuple[_Milp | None, torch.Tensor]:
        eps = torch.tensor([r], dtype=DTYPE)
        with torch.no_grad():
            spec, bounds = net.spec_bounds(x0.unsqueeze(0), eps, torch.tensor([pred]), "linf", domain, "crown")
        if bool((spec[0] > 0).all()):
            return None, spec[0]
        pre = [(bounds[k][0].reshape(-1).numpy(), bounds[k][1].reshape(-1).numpy()) for k in net.relu_levels]
        return _Milp(x0.reshape(-1).numpy(), r, domain, hidden, pre), spec[0]

    problem, spec = build(radius)
    r_cur = radius
    best, best_x, best_j = math.inf, None, -1
    lowers: list[float] = [radius]
    solved = True
    for j in torch.argsort(spec).tolist():
        if j == pred or float(spec[j]) > 0:
            continue  # out of reach within r_cur: its margin exceeds r_cur >= best
        if best < 0.8 * r_cur:
            r_cur = best * (1 + 1e-6) + 1e-9
            problem, spec = build(r_cur)
            if float(spec[j]) > 0:
                continue
        cutoff = min(r_cur, best)
        res = problem.solve(w_out, b_out, pred, j, cutoff, deadline - time.monotonic())
        dual = getattr(res, "mip_dual_bound", None)
        dual = float(dual) if dual is not None and np.isfinite(dual) else None
        if res.status == 0:
            lowers.append(min(float(res.fun), dual) if dual is not None else float(res.fun))
        elif res.status == 2:
            lowers.append(cutoff)
        else:
            solved = False
            lowers.append(max(dual, 0.0) if dual is not None else 0.0)
        if res.x is not None and float(res.fun) < best:
            best, best_x, best_j = float(res.fun), res.x[:problem.d], j
    return {"lower": max(min(lowers), 0.0), "best": best, "x": best_x, "target": best_j, "solved": solved}
