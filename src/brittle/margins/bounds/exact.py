"""Exact L∞ input margins of small ReLU networks by mixed-integer linear programming.

For a sample ``x0`` with predicted class ``p`` and each other class ``j``, HiGHS (through
`scipy.optimize.milp`) solves

    min t  s.t.  |x - x0|∞ <= t,  x in the domain box,  logit_j(x) >= logit_p(x),

with every unstable ReLU encoded exactly by a binary variable and big-M constraints whose constants are
the pre-activation bounds from CROWN over the ball of radius ``R`` (an attack's upper bound when given,
else the whole box; Tjeng et al., 2019). The margin is the minimum over ``j``. Classes that CROWN proves
unreachable within ``R`` are skipped, and each solve is cut off at the best margin found so far.

Exactness holds up to HiGHS's tolerances (relative gap 1e-7, absolute gap 1e-6, feasibility 1e-7); the
minimiser is then checked on the real model. It lies on the decision boundary, so it is pushed a hair
past it until the model's prediction really changes, adding at most the push tolerance to the norm
(`push_tolerance`: ``PUSH_TOL`` times the domain's width ``high - low``, never under 64 float steps at
the domain's largest magnitude, so that the pushes scale with the units of the domain):

1. a signed-gradient step or a radial stretch of growing size (cheap; enough away from ReLU kinks);
2. otherwise a small MILP next to the minimiser ``x*``: over the inputs within the push of both ``x*``
   and the ball, the point where the target class leads the predicted one the most. The minimiser
   usually sits on a ReLU kink, where autograd's one-sided gradient may point into the side that does
   not flip; this MILP weighs every linear region that meets ``x*`` (its big-M constants come from
   CROWN over the tiny box, so only the neurons at the kinks need binaries).

Every candidate is checked by the model's own forward pass (in its dtype). A sample is reported exact
only when every class was solved to optimality (or proved out of reach) and that check passed.
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

from ..attacks.base import FLIP_ULPS, perturbation_norm
from ...data.loading import Domain
from ...errors import InputError, ModelError
from .certify import certified_lower_bounds, check_inputs, domain_radius
from .network import DTYPE, Network, _Affine, _ReLU

#: Largest extra norm allowed when pushing the MILP minimiser past the decision boundary, as a fraction
#: of the domain's width (see `push_tolerance`).
PUSH_TOL = 1e-4
#: The sizes of the pushes tried, as fractions of the push tolerance (the largest keeps half of it for
#: the solver's feasibility tolerance and the rounding to the model's dtype).
_PUSHES = (0.0, 1e-3, 1e-2, 1e-1, 0.5)
#: A pushed example must beat the predicted class by this many float steps of its logits.
_SAFE_ULPS = 4 * FLIP_ULPS
#: The push tolerance is at least this many float steps (of the model's dtype) at the domain's largest magnitude.
_PUSH_ULPS = 64


def push_tolerance(domain: Domain, dtype: torch.dtype = torch.float32) -> float:
    """Largest extra norm of a verified example over the exact margin: ``PUSH_TOL * (high - low)``, or
    ``_PUSH_ULPS`` float steps of ``dtype`` at the domain's largest magnitude where that is larger."""
    lo, hi = float(domain[0]), float(domain[1])
    return max(PUSH_TOL * (hi - lo), _PUSH_ULPS * torch.finfo(dtype).eps * max(abs(lo), abs(hi)))


@dataclass
class ExactMargins:
    """Outcome of `exact_margins`; unpacks as ``margins, x_adv = exact_margins(...)``.

    Attributes:
        margins: the exact margin where ``exact``, NaN where a solve did not finish (never a guess).
        x_adv: a verified adversarial example per sample (the clean input where none was found).
        lower: proven lower bounds (the solver's dual bounds; equal to ``margins`` up to 1e-6 where exact).
        upper: norms of ``x_adv`` (``inf`` where none was found; where exact, at most ``margins`` plus
            `push_tolerance` of the domain, i.e. ``PUSH_TOL * (high - low)`` on usual domains).
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
              time_limit: float, widest: bool = False):
        """Smallest ``t <= cutoff`` at which class ``target`` reaches the predicted class's logit; with
        ``widest``, the input with ``t <= cutoff`` where ``target`` leads the predicted class the most."""
        off, width = self.last
        gap = w_out[target] - w_out[pred]
        row = np.zeros((1, self.n_var))
        row[0, off:off + width] = gap
        c = self.c
        if widest:
            c = np.zeros(self.n_var)
            c[off:off + width] = -gap
        constraints = LinearConstraint(sp.vstack([self.a, sp.csr_matrix(row)]).tocsr(),
                                       np.concatenate([self.lb, [-np.inf if widest else b_out[pred] - b_out[target]]]),
                                       np.concatenate([self.ub, [np.inf]]))
        hi = self.hi_var.copy()
        hi[self.d] = min(hi[self.d], cutoff)
        return milp(c, integrality=self.integrality, bounds=Bounds(self.lo_var, hi), constraints=constraints,
                    options={"time_limit": max(time_limit, 0.01), "mip_rel_gap": 1e-7, "disp": False})


def _build(net: Network, x0: torch.Tensor, radius: float, pred: int, domain: Domain, hidden: list,
           near: tuple[torch.Tensor, float] | None = None) -> tuple[_Milp | None, torch.Tensor]:
    """The MILP of the ball of ``radius`` around ``x0`` (None where CROWN proves every class out of reach)
    and CROWN's bounds of ``logit_pred - logit_j``. With ``near=(x, r)`` the inputs are also kept within
    ``r`` of ``x`` in L∞, and the big-M constants come from CROWN over that small box."""
    center, eps, box = x0, radius, domain
    if near is not None:
        center, eps = near
        flat = center.reshape(-1).numpy()
        box = (np.maximum(domain[0], flat - eps), np.minimum(domain[1], flat + eps))
    with torch.no_grad():
        spec, bounds = net.spec_bounds(center.unsqueeze(0), torch.tensor([eps], dtype=DTYPE), torch.tensor([pred]),
                                       "linf", domain, "crown")
    if near is None and bool((spec[0] > 0).all()):
        return None, spec[0]
    pre = [(bounds[k][0].reshape(-1).numpy(), bounds[k][1].reshape(-1).numpy()) for k in net.relu_levels]
    return _Milp(x0.reshape(-1).numpy(), radius, box, hidden, pre), spec[0]


def _model_dtype(model: nn.Module) -> torch.dtype:
    param = next(iter(model.parameters()), None)
    return param.dtype if param is not None else torch.float32


def _flips(model: nn.Module, cand: torch.Tensor, pred: int, domain: Domain) -> tuple[torch.Tensor, int] | None:
    """``cand`` in the model's dtype and the class the model predicts there, if that is not ``pred``
    by ``_SAFE_ULPS`` float steps of the logits, else None. That is more than the attacks' ``FLIP_ULPS``,
    so the example still flips under the rounding of another batch size or device."""
    cand = cand.to(_model_dtype(model)).clamp(domain[0], domain[1])
    with torch.no_grad():
        logits = model(cand.unsqueeze(0))[0]
    top = int(logits.argmax())
    lead = float(logits[top] - logits[pred])
    if top != pred and lead > _SAFE_ULPS * torch.finfo(logits.dtype).eps * float(logits.abs().max()):
        return cand, top
    return None


def _push(model: nn.Module, x0: torch.Tensor, xs: torch.Tensor, pred: int, target: int,
          domain: Domain) -> tuple[torch.Tensor, int] | None:
    """The MILP minimiser moved a hair past the boundary so the model's prediction changes, or None.

    Tries a step along the sign of the gradient of ``logit_target - logit_pred`` and a radial stretch away
    from ``x0``, each of the sizes ``_PUSHES`` (fractions of `push_tolerance`)."""
    dtype = _model_dtype(model)
    tol = push_tolerance(domain, dtype)
    xg = xs.to(dtype).unsqueeze(0).requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        (logits[0, target] - logits[0, pred]).backward()
    step = xg.grad[0].sign().to(xs.dtype)
    radial = xs - x0
    for frac in _PUSHES:
        delta = frac * tol
        for cand in (xs + delta * step, x0 + radial * (1 + delta / max(float(radial.abs().max()), 1e-12))):
            flipped = _flips(model, cand, pred, domain)
            if flipped is not None:
                return flipped
    return None


def _push_local(net: Network, model: nn.Module, x0: torch.Tensor, xs: torch.Tensor, pred: int, target: int,
                domain: Domain, hidden: list, w_out: np.ndarray, b_out: np.ndarray,
                deadline: float) -> tuple[torch.Tensor, int] | None:
    """Where `_push` fails (the minimiser ``xs`` sits on a ReLU kink): for pushes of growing size ``delta``,
    the input within ``delta`` of ``xs`` and within ``|xs - x0| + delta`` of ``x0`` where class ``target``
    leads the predicted class the most (a small MILP over the linear regions that meet ``xs``), if the
    model's prediction changes there; else None. Each solve gets the sample's remaining time, at least 1 s."""
    tol = push_tolerance(domain, _model_dtype(model))
    xs = xs.clamp(domain[0], domain[1])  # the solver's feasibility tolerance may leave it a hair outside
    base = float((xs - x0).abs().max())
    for frac in _PUSHES[1:]:
        delta = frac * tol
        problem, _ = _build(net, x0, base + delta, pred, domain, hidden, near=(xs, delta))
        assert problem is not None
        res = problem.solve(w_out, b_out, pred, target, base + delta, max(deadline - time.monotonic(), 1.0),
                            widest=True)
        if res.x is not None:
            flipped = _flips(model, torch.from_numpy(res.x[:problem.d]).to(DTYPE).reshape(xs.shape), pred, domain)
            if flipped is not None:
                return flipped
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
        if pushed is None:
            pushed = _push_local(net, model, x0, xs, pred, out["target"], domain, hidden, w_out, b_out, deadline)
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
        return _build(net, x0, r, pred, domain, hidden)

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
