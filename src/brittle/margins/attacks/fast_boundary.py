"""brittle's own minimal-norm attack: box-aware boundary projections, then an adaptive-radius descent.

Stage 1 walks to the decision boundary of the *predicted* class like FAB (Croce & Hein, 2020): at each
step it linearises the margin ``f(x) = z_pred(x) - max_{j != pred} z_j(x)`` and projects, inside the input
box, both the current iterate and the clean point onto the zero set of that linearisation; the step mixes
the two projections (biased toward the clean point) with a small overshoot, and after every adversarial
iterate it steps back toward the clean point. Unlike FAB it needs one backward pass per step instead of one
per class: only the first step (a DeepFool-style start) looks at several runner-up classes. Samples stop
spending passes once their bound has stopped improving (``patience``); L2 adds one short restart from a
random point.

Boundary projections alone stall a few percent above the smallest adversarial perturbation on adversarially
trained models, whose margin is far from linear (FAB, with ten times the passes, stalls the same way), while
a fixed-ε PGD started from the same point breaks most of those inputs at 0.99 times the bound. Stage 2 is
therefore a projected gradient descent with an adaptive radius in the style of FMN (Pintor et al., 2021),
started from the stage-1 point: signed (L∞) or normalised (L2) gradient steps on the margin inside a ball
whose radius shrinks below every adversarial iterate and grows (up to the best bound) after a
non-adversarial one, with cosine-annealed step and radius rates. Samples stage 1 could not flip (zero or
masked gradients) first get a bound by bisection along the segment toward the nearest input of the batch
that the model predicts as another class, which is adversarial itself, so a batch with two predicted
classes leaves no sample unbounded.

At the end, verified bisections toward the clean point (along the perturbation for L2, shrinking the L∞ box
for L∞) remove the overshoot, and a last projection of the clean point onto the boundary linearised at the
best point (bisected on its overshoot; exact for linear models) polishes it. Every stage keeps a point only
if the model's prediction really changed there, and the result is re-checked on the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ...core.validation import check_nonnegative_int, check_positive_int
from ...data.loading import Domain
from ...errors import InputError, ModelError
from .base import MinimalNormAttack, is_flipped, perturbation_norm
from ._fixed import LiveRows, masked_default
from ._graphs import CudaGraphs, graphs_for, run_steps
from .apgd import apgd_ce, apgd_stacked, apgd_t, dlr_targeted_loss
from .square import square_linf


def _int_option(name: str, value: Any, low: int) -> int:
    """An integer option (numpy integers too, never a bool) of at least ``low`` (0 or 1), or `InputError`."""
    check = check_positive_int if low else check_nonnegative_int
    return check(value, name, f"pass e.g. {name}=1")


def _threshold(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor, iters: int = 12,
               method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, ``t >= 0`` with ``g(t) = sum_i a_i * min(t, b_i)`` reaching ``target`` (``a, b >= 0``).

    Returns ``(t, feasible)``; where even ``t = max b`` falls short, ``t = max b`` and ``feasible`` is False.
    ``method="auto"`` picks ``"newton"`` on the CPU and ``"sort"`` elsewhere (see `_threshold_newton` and
    `_threshold_sort`: the same root, computed the way each device does it fastest).
    """
    if method == "auto":
        method = "newton" if a.device.type == "cpu" else "sort"
    if method == "sort":
        return _threshold_sort(a, b, target)
    return _threshold_newton(a, b, target, iters)


def _threshold_newton(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor, iters: int = 12
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """`_threshold` by Newton's method: ``g`` is concave and piecewise linear, so Newton from ``t = 0``
    approaches the root from below and never overshoots; after ``iters`` steps ``g(t) <= target``, usually with
    equality (no sort needed). It usually gets there in 4-6 steps: the loop stops once no feasible row moves by
    more than 1e-7 of its ``t`` (a read-back from the device per step, cheap on a CPU).
    """
    total = (a * b).sum(1)
    feasible = total >= target
    t = torch.zeros_like(target)
    for _ in range(iters):
        tc = t.unsqueeze(1)
        g = (a * torch.minimum(tc, b)).sum(1)
        slope = (a * (b > tc)).sum(1)
        step = ((target - g) / slope.clamp_min(1e-30)).clamp_min(0.0)
        t = t + step
        if not bool((feasible & (step > 1e-7 * t)).any()):
            break
    t = torch.where(feasible, t, b.amax(1))
    return t, feasible


def _threshold_sort(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_threshold` in closed form, with a fixed number of kernels and no read-back (for GPUs).

    With ``b`` sorted ascending, ``g`` at the k-th knot is ``C_k + b_k (A - A_k)`` (``A_k``, ``C_k``: running
    sums of ``a`` and ``a b``; ``A``: the total of ``a``), nondecreasing in ``k``. The root lies after the last
    knot where ``g < target``, on a segment where ``g(t) = C + t (A - A_k)`` is linear.
    """
    bs, order = b.sort(1)
    as_ = a.gather(1, order)
    cum_a = as_.cumsum(1)
    cum_ab = (as_ * bs).cumsum(1)
    total_a, total = cum_a[:, -1:], cum_ab[:, -1]
    feasible = total >= target
    g_knots = cum_ab + bs * (total_a - cum_a)
    k = (g_knots < target.unsqueeze(1)).sum(1, keepdim=True)  # knots strictly below the target
    zero = torch.zeros_like(k, dtype=a.dtype)
    c_before = torch.cat([zero, cum_ab], 1).gather(1, k)
    a_before = torch.cat([zero, cum_a], 1).gather(1, k)
    slope = (total_a - a_before).clamp_min(1e-30)
    t = ((target.unsqueeze(1) - c_before) / slope).clamp_min(0.0).squeeze(1)
    t = torch.where(feasible, t, bs[:, -1])
    return t, feasible


def box_projection(z: torch.Tensor, w: torch.Tensor, r: torch.Tensor, lo: float, hi: float,
                   norm: str) -> torch.Tensor:
    """Smallest-norm ``d`` (rows of flat vectors) with ``w . d = r`` and ``lo <= z + d <= hi``.

    Where the box makes ``w . d = r`` unreachable, ``d`` is the box-constrained step that gets closest.
    """
    s = torch.sign(r).unsqueeze(1)
    u = w * s
    direction = torch.sign(u)
    room = torch.where(u > 0, hi - z, z - lo).clamp_min(0.0)
    mag = u.abs()
    target = r.abs()
    if norm == "linf":
        t, _ = _threshold(mag, room, target)
        d = direction * torch.minimum(t.unsqueeze(1), room)
    else:
        b = torch.where(mag > 0, room / mag.clamp_min(1e-30), 0.0)
        t, _ = _threshold(mag * mag, b, target)
        d = direction * mag * torch.minimum(t.unsqueeze(1), b)
    return torch.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)


def ball_projection(x0: torch.Tensor, x: torch.Tensor, radius: torch.Tensor, lo: float, hi: float,
                    norm: str) -> torch.Tensor:
    """``x`` (rows of flat vectors) projected onto the ``radius``-ball around ``x0``, then clipped to the box.

    Exact for L∞; for L2 the box clip after the ball projection can only shrink the perturbation, so the
    result stays inside both.
    """
    d = x - x0
    r = radius.unsqueeze(1)
    if norm == "linf":
        d = torch.maximum(torch.minimum(d, r), -r)
    else:
        d = d * (r / d.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
    return (x0 + d).clamp(lo, hi)


def _require_grad(logits: torch.Tensor) -> None:
    if not logits.requires_grad:
        raise ModelError("the model's logits are not differentiable with respect to its input",
                         "use a differentiable model (no torch.no_grad/detach/argmax in forward) "
                         "or a gradient-free method")


def _margin(logits: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``z_pred - max_{j != pred} z_j`` and the maximising class ``j``."""
    col = pred.unsqueeze(1)
    best, cls = logits.scatter(1, col, -torch.inf).max(1)
    return logits.gather(1, col).squeeze(1) - best, cls


def _finite_rows(logits: torch.Tensor) -> torch.Tensor:
    """Per row, whether every logit is finite (``0 * z`` is 0 for a finite ``z``, NaN for inf and NaN)."""
    return (logits * 0 == 0).all(1)


#: presets of `FastBoundaryAttack`'s ``strength``; explicit options override them
STRENGTHS: dict[str, dict[str, float | int]] = {
    # brittle 0.2.0's attack: boundary steps, adaptive-radius descent, segment fallback, polish
    "fast": {"probe_steps": 0, "probe_ratio": 0.95, "probe_rounds": 4, "probe_targets": 0,
             "budget_window": 0.15, "budget_steps": 100, "budget_targets": 3, "budget_queries": 1000,
             "square_window": 0.15, "square_candidates": 5},
    # + fixed-radius APGD-CE probes just below each bound in L2 (-1: 12 steps for L2, none for L∞, where the
    # passes are worth more in the descent), + the budget stage where budgets are given (2500 Square queries:
    # with 1000, linf_madry's robust accuracy at 0.3 reads a point above AutoAttack's on 1000 images; Square
    # only within 5% above ε: on linf_madry at 0.3 every sample it flips has its bound within 4.5%; 5 windows
    # per sample and round, one model call: half Square's time on a CPU, as strong on linf_madry at 0.3)
    "default": {"probe_steps": -1, "probe_ratio": 0.95, "probe_rounds": 1, "probe_targets": 0,
                "budget_window": 0.15, "budget_steps": 100, "budget_targets": 3, "budget_queries": 2500,
                "square_window": 0.05, "square_candidates": 5},
    # longer probes with targeted ones, and AutoAttack-sized budget stages (9 targets, 5000 Square queries,
    # searched one window at a time as AutoAttack does)
    "thorough": {"probe_steps": 100, "probe_ratio": 0.97, "probe_rounds": 6, "probe_targets": 2,
                 "budget_window": 0.25, "budget_steps": 100, "budget_targets": 9, "budget_queries": 5000,
                 "square_window": 0.25, "square_candidates": 1},
}


class FastBoundaryAttack(MinimalNormAttack):
    """Batched minimal-norm attack (L∞ or L2) with box constraints, early stopping and verified refinement.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        steps: maximum boundary steps per sample (one forward and one backward pass each); default 10 for
            L∞ and 30 for L2 (the descent does the rest).
        init_classes: runner-up classes considered by the first, DeepFool-style step (one backward pass
            each); default 9 for L∞ and 3 for L2 (on the zoo's models in L2, 3 classes and 30 steps give
            bounds as tight as 9 and 50, at 15% less time: benchmarks/RESULTS.md).
        alpha_max: largest weight of the projection of the clean point in a step.
        eta: overshoot of each projection.
        beta: factor pulling an adversarial iterate back toward the clean point (default 0.9 for L∞, 0.75
            for L2, where faster pull-back escapes poor first boundary points).
        patience: boundary steps without a relative improvement of ``rtol`` after which a sample stops
            (default 5 for L∞, 10 for L2).
        rtol: relative improvement that counts as progress.
        refine_steps: bisection steps of the final refinement (forward passes only).
        restarts: extra runs from random starting points (seeded) at half the best norm so far; default 1
            for L2 (where L∞-trained models trap the first run in a poor local optimum) and 0 for L∞.
        restart_steps: maximum steps of each restart (default ``min(steps, 30)``).
        descent_steps: steps of the adaptive-radius descent (one forward and one backward pass each);
            default 80 for L∞ and 30 for L2; 0 turns the stage off (with ``steps=100, patience=10,
            fallback=False`` that is the earlier attack, whose bounds on the zoo's L∞-trained models are ~4%
            looser at the median, so that robust accuracy at ε = 0.3 by its margins reads ~15 points high).
        descent_step: the descent's first step, as a fraction of the current radius (annealed to 2% of it).
        descent_gamma: the descent's first relative radius change per step (annealed to 1% of it).
        descent_patience: descent steps without a better bound after which a sample stops, checked in the
            second half of the schedule only (default: never; stopping early loosens the bounds at little
            saving, as the annealed steps keep improving late).
        fallback: bound samples that nothing flipped by bisection toward another batch input that the model
            predicts as another class (default True).
        strength: ``"fast"`` (brittle 0.2.0's attack: no probes), ``"default"`` or ``"thorough"``: presets of
            the probe and budget options below (see `STRENGTHS`); options passed explicitly override them.
        probe_steps: steps of the fixed-radius APGD-CE probes run after the descent at ``probe_ratio`` times
            each sample's bound (0: no probes); a sample whose probe succeeds gets a smaller bound and is
            probed again, up to ``probe_rounds`` rounds. ``probe_targets`` adds probes on the targeted DLR
            loss toward the top runner-up classes.
        budgets: perturbation budgets of interest (e.g. the ε at which robust accuracy will be read off the
            margins). For each, the samples whose bound lies in ``(ε, (1 + budget_window) ε]`` are attacked
            at exactly ε by APGD-CE, APGD-T (``budget_targets`` targets, ``budget_steps`` steps) and, for
            L∞, Square (``budget_queries`` queries, gradient-free: for masked gradients; on the samples
            within ``(1 + square_window) ε``, as it costs the most per flip; ``square_candidates`` windows
            per sample and round, evaluated in one model call), stopping at the first
            success. The margins then imply a robust accuracy at each budget as low as these fixed-ε
            attacks find (AutoAttack's components), at a fraction of running them on every sample.
        masked: how finished samples are skipped. ``True`` (default on CUDA): batches keep their shape and
            finished rows are masked, read back every few steps only, and the budget stage runs as one
            stacked batch, a row per (sample, budget, attack): a GPU step of a few dozen rows costs its
            kernel launches whatever the rows, so this saves waits, re-planned kernels and launches.
            ``False`` (default elsewhere): finished rows leave the batch at every step and the budget
            attacks run budget by budget, one after another (the least compute). The attacks are the same.
        cuda_graphs: capture each masked loop's step (model forward and backward pass and the attack's
            bookkeeping) as a CUDA graph and replay it, one host call per step instead of hundreds of kernel
            launches. Default: on in masked mode on CUDA; ignored elsewhere. A model whose forward pass reads
            values back to the host or cannot be captured runs eagerly, with a warning; the bounds are the
            same either way.
    """

    name = "brittle"

    def __init__(self, norm: str = "linf", *, steps: int | None = None, init_classes: int | None = None,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float | None = None, patience: int | None = None,
                 rtol: float = 1e-3,
                 refine_steps: int = 20, restarts: int | None = None, restart_steps: int | None = None,
                 descent_steps: int | None = None, descent_step: float = 1.0, descent_gamma: float = 0.1,
                 descent_patience: int | None = None, fallback: bool = True,
                 strength: str = "default", probe_steps: int | None = None, probe_ratio: float | None = None,
                 probe_rounds: int | None = None, probe_targets: int | None = None,
                 budgets: Sequence[float] | None = None, budget_window: float | None = None,
                 budget_steps: int | None = None, budget_targets: int | None = None,
                 budget_queries: int | None = None, square_window: float | None = None,
                 square_candidates: int | None = None, masked: bool | None = None,
                 cuda_graphs: bool | None = None, seed: int = 0):
        super().__init__(norm, seed=seed)
        if strength not in STRENGTHS:
            raise InputError(f"unknown attack strength {strength!r}", f"use one of {', '.join(STRENGTHS)}")
        preset = STRENGTHS[strength]
        self.strength = strength
        probe_steps = preset["probe_steps"] if probe_steps is None else probe_steps
        if probe_steps == -1:
            probe_steps = 0 if self.norm == "linf" else 12
        probe_ratio = preset["probe_ratio"] if probe_ratio is None else float(probe_ratio)
        probe_rounds = preset["probe_rounds"] if probe_rounds is None else probe_rounds
        probe_targets = preset["probe_targets"] if probe_targets is None else probe_targets
        budget_window = preset["budget_window"] if budget_window is None else float(budget_window)
        square_window = preset["square_window"] if square_window is None else float(square_window)
        budget_steps = preset["budget_steps"] if budget_steps is None else budget_steps
        budget_targets = preset["budget_targets"] if budget_targets is None else budget_targets
        budget_queries = preset["budget_queries"] if budget_queries is None else budget_queries
        square_candidates = preset["square_candidates"] if square_candidates is None else square_candidates
        probe_steps, probe_rounds, probe_targets, budget_steps, budget_targets, budget_queries, square_candidates = (
            _int_option(name, value, low) for name, value, low in (
                ("probe_steps", probe_steps, 0), ("probe_rounds", probe_rounds, 1),
                ("probe_targets", probe_targets, 0), ("budget_steps", budget_steps, 1),
                ("budget_targets", budget_targets, 0), ("budget_queries", budget_queries, 0),
                ("square_candidates", square_candidates, 1)))
        if not (0.0 < probe_ratio <= 1.0 and budget_window >= 0.0 and square_window >= 0.0):
            raise InputError(f"invalid probe_ratio={probe_ratio}, budget_window={budget_window} or "
                             f"square_window={square_window}",
                             "use 0 < probe_ratio <= 1, budget_window >= 0 and square_window >= 0")
        try:
            budgets = () if budgets is None else tuple(float(b) for b in budgets)
        except (TypeError, ValueError):
            raise InputError(f"budgets must be a sequence of numbers, got {budgets!r}",
                             "pass e.g. budgets=[0.1, 0.2, 0.3]") from None
        if not all(math.isfinite(b) and b > 0 for b in budgets):
            raise InputError(f"budgets must be finite and > 0, got {budgets!r}", "pass e.g. budgets=[0.1, 0.2, 0.3]")
        self.budgets = tuple(sorted(set(budgets), reverse=True))
        for name, value in (("masked", masked), ("fallback", fallback)):
            if not (isinstance(value, bool) or (value is None and name == "masked")):
                raise InputError(f"{name} must be True or False, got {value!r}",
                                 f"pass {name}=True or {name}=False" + (" (None: the device's default)"
                                                                        if name == "masked" else ""))
        self.masked = masked
        if cuda_graphs is not None and not isinstance(cuda_graphs, bool):
            raise InputError(f"cuda_graphs must be True, False or None, got {cuda_graphs!r}",
                             "pass cuda_graphs=False to run every step eagerly")
        if cuda_graphs and masked is False:
            raise InputError("cuda_graphs=True needs masked rows: masked=False changes the batch shape at "
                             "every step, so no step can be replayed",
                             "drop masked=False (masked is the default on CUDA) or cuda_graphs=True")
        self.cuda_graphs = cuda_graphs
        self.budget_window, self.budget_steps = budget_window, budget_steps
        self.square_window, self.square_candidates = square_window, square_candidates
        self.budget_targets, self.budget_queries = budget_targets, budget_queries
        self.probe_steps, self.probe_ratio, self.probe_rounds = probe_steps, probe_ratio, probe_rounds
        self.probe_targets = probe_targets
        linf = self.norm == "linf"
        if steps is None:
            steps = 10 if linf else 30
        if init_classes is None:
            init_classes = 9 if linf else 3
        if patience is None:
            patience = 5 if linf else 10
        if beta is None:
            beta = 0.9 if linf else 0.75
        if restarts is None:
            restarts = 0 if linf else 1
        if restart_steps is None:
            restart_steps = min(steps, 30)
        if descent_steps is None:
            descent_steps = 80 if linf else 30
        if descent_patience is None:
            descent_patience = max(descent_steps, 1)
        steps, init_classes, patience, refine_steps, restarts, restart_steps, descent_steps, descent_patience = (
            _int_option(name, value, low) for name, value, low in (
                ("steps", steps, 1), ("init_classes", init_classes, 1), ("patience", patience, 1),
                ("refine_steps", refine_steps, 0), ("restarts", restarts, 0), ("restart_steps", restart_steps, 1),
                ("descent_steps", descent_steps, 0), ("descent_patience", descent_patience, 1)))
        if not (0.0 <= alpha_max <= 1.0 and eta >= 1.0 and 0.0 < beta < 1.0 and rtol >= 0.0):
            raise InputError(f"invalid step parameters alpha_max={alpha_max}, eta={eta}, beta={beta}, rtol={rtol}",
                             "use 0 <= alpha_max <= 1, eta >= 1, 0 < beta < 1, rtol >= 0")
        if not (0.0 < descent_step <= 4.0 and 0.0 < descent_gamma < 1.0):
            raise InputError(f"invalid descent parameters descent_step={descent_step}, descent_gamma={descent_gamma}",
                             "use 0 < descent_step <= 4 and 0 < descent_gamma < 1")
        self.steps = steps
        self.init_classes = init_classes
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta
        self.patience = patience
        self.rtol = rtol
        self.refine_steps = refine_steps
        self.restarts = restarts
        self.restart_steps = restart_steps
        self.descent_steps = descent_steps
        self.descent_step = float(descent_step)
        self.descent_gamma = float(descent_gamma)
        self.descent_patience = descent_patience
        self.fallback = fallback

    # ------------------------------------------------------------------------------------------
    def _graphs(self, like: torch.Tensor, model: nn.Module | None = None) -> CudaGraphs:
        """This run's CUDA-graph state: made once per `_perturb` (with the model, whose pass counter replays
        must feed), so that a capture failure warns once and turns graphs off for the whole run."""
        graphs = getattr(self, "_run_graphs", None)
        if model is not None or graphs is None or graphs.device != like.device:
            graphs = graphs_for(model, like, masked_default(self.masked, like), self.cuda_graphs)
            self._run_graphs = graphs
        return graphs

    def _logits_and_grad(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits at flat ``x``, margin ``f`` and its gradient (zero where non-finite)."""
        xr = x.detach().reshape(len(x), *self._shape).requires_grad_(True)
        with torch.enable_grad():
            logits = model(xr)
            _require_grad(logits)
            f, _ = _margin(logits, pred)
            (grad,) = torch.autograd.grad(f.sum(), xr, allow_unused=True)
        grad = torch.zeros_like(xr) if grad is None else grad  # logits that ignore the input
        grad = grad.reshape(len(x), -1)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        return logits.detach(), f.detach(), grad

    def _init_step(self, model: nn.Module, x0: torch.Tensor, pred: torch.Tensor, lo: float, hi: float
                   ) -> torch.Tensor:
        """DeepFool-style start: the closest linearised boundary among the top runner-up classes."""
        xr = x0.detach().reshape(len(x0), *self._shape).requires_grad_(True)
        with torch.enable_grad():
            logits = model(xr)
            _require_grad(logits)
            rows = torch.arange(len(pred), device=pred.device)
            others = logits.detach().clone()
            others[rows, pred] = -torch.inf
            k = min(self.init_classes, logits.shape[1] - 1)
            top = others.topk(k, dim=1).indices
            best_d = torch.zeros_like(x0)
            best_n = torch.full((len(x0),), torch.inf, device=x0.device)
            # at a tie (the runner-up's logit equals the prediction's) the linearised boundary passes through
            # x0 itself, and every step would stay there: aim a hair past it instead, by a logit gap just above
            # float32 rounding, so that the start is already adversarial
            tie_gap = 1e-5 * logits.detach().abs().amax(1).clamp_min(1.0)
            for c in range(k):
                f = logits[rows, pred] - logits[rows, top[:, c]]
                (g,) = torch.autograd.grad(f.sum(), xr, retain_graph=c < k - 1, allow_unused=True)
                g = (torch.zeros_like(xr) if g is None else g).reshape(len(x0), -1)
                g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
                target = torch.where(f.detach() > 0, f.detach(), tie_gap)
                d = box_projection(x0, -g, target, lo, hi, self.norm)
                reached = (f.detach() + (g * d).sum(1)) <= 1e-6 * f.detach().abs().clamp_min(1e-12)
                n = perturbation_norm(d, self.norm)
                n = torch.where(reached, n, n + 1e6)  # prefer classes the box lets us reach
                better = n < best_n
                best_n = torch.where(better, n, best_n)
                best_d = torch.where(better.unsqueeze(1), d, best_d)
        return (x0 + self.eta * best_d).clamp(lo, hi)

    def _run(self, model: nn.Module, x0: torch.Tensor, pred: torch.Tensor, lo: float, hi: float,
             start: torch.Tensor | None, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One attack run from ``start`` (DeepFool-style start when None).

        Returns candidates ``(x_adv, norm)``: the smallest adversarial iterate and the first one found (its
        L∞ shape often refines better: later iterates can trade box-capped coordinates for a smaller norm).
        """
        n = len(x0)
        dev = x0.device
        best_n = torch.full((n,), torch.inf, device=dev)
        best_x = x0.clone()
        first_n = best_n.clone()
        first_x = x0.clone()
        x1 = self._init_step(model, x0, pred, lo, hi) if start is None else start.clone()
        last_gain = torch.zeros(n, dtype=torch.long, device=dev)
        step_t = torch.zeros(1, dtype=torch.long, device=dev)  # the step number, on the device (for graphs)
        rows = LiveRows(n, dev, masked_default(self.masked, x0))
        get, put = rows.gather, rows.scatter  # every state update in place: a step may be a replayed graph

        def step(final: bool = False) -> None:
            live = rows.mask
            xa, x0a, pa = get(x1), get(x0), get(pred)
            if final:  # final check of the last iterate, no gradient needed
                with torch.no_grad():
                    logits = model(xa.reshape(len(xa), *self._shape))
            else:
                logits, f, g = self._logits_and_grad(model, xa, pa)
            finite = _finite_rows(logits)
            adv = is_flipped(logits, pa) & finite & live
            dist = perturbation_norm(xa - x0a, self.norm)
            bn, fn = get(best_n), get(first_n)
            improved = adv & (dist < bn)
            significant = improved & (dist < bn * (1 - self.rtol))
            new = adv & torch.isinf(fn)
            put(first_x, torch.where(new.unsqueeze(1), xa, get(first_x)))
            put(first_n, torch.where(new, dist, fn))
            put(best_x, torch.where(improved.unsqueeze(1), xa, get(best_x)))
            put(best_n, torch.where(improved, dist, bn))
            put(last_gain, torch.where(significant, step_t, get(last_gain)))
            if final:
                return
            # step back toward the clean point after a success, then project with the linearisation at xa
            xc = torch.where(adv.unsqueeze(1), x0a + self.beta * (xa - x0a), xa)
            f = torch.where(finite, f, 0.0)
            r1 = -(f + (g * (xc - xa)).sum(1))
            r2 = -(f + (g * (x0a - xa)).sum(1))
            # both projections in one call (half the kernels: a GPU step is bound by their launches)
            m = len(xa)
            d12 = box_projection(torch.cat([xc, x0a]), torch.cat([g, g]), torch.cat([r1, r2]), lo, hi, self.norm)
            a12 = perturbation_norm(d12, self.norm).clamp_min(1e-12)
            d1, d2, a1, a2 = d12[:m], d12[m:], a12[:m], a12[m:]
            alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max).unsqueeze(1)
            x_new = ((1 - alpha) * (xc + self.eta * d1) + alpha * (x0a + self.eta * d2)).clamp(lo, hi)
            put(x1, torch.where(live.unsqueeze(1), x_new, xa))  # finished rows stay where they are
            rows.stop((get(best_n) < math.inf) & (step_t - get(last_gain) >= self.patience))
            step_t.add_(1)

        run_steps(rows, self._graphs(x0), step, steps + 1, special={steps: lambda: step(final=True)})
        first_n = torch.where(first_n == best_n, torch.full_like(first_n, torch.inf), first_n)  # same point
        return [(best_x, best_n), (first_x, first_n)]

    @torch.no_grad()
    def _bisect(self, model: nn.Module, pred: torch.Tensor,
                point: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
                high: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """Smallest ``t`` in ``[0, high]`` with ``point(t)`` adversarial, by verified bisection (``high`` is).

        ``point(t, rows)`` builds candidates for the rows ``rows`` (None: every row, in order); returns the
        last adversarial candidate per row (``fallback`` where none was tried).
        """
        high, low = high.clone(), torch.zeros_like(high)  # updated in place
        best = fallback.clone()
        live = LiveRows(len(high), high.device, masked_default(self.masked, high))
        get, put = live.gather, live.scatter

        def step(first: bool = False) -> None:
            on, hi_, lo_ = live.mask, get(high), get(low)
            # the answer is usually just below ``high`` (overshoot): probe 0.9 high first, then halve
            mid = 0.9 * hi_ if first else (lo_ + hi_) / 2
            cand = point(mid, None if live.full else live.index)
            adv = is_flipped(model(cand.reshape(len(cand), *self._shape)), get(pred)) & on
            hi_, lo_ = torch.where(adv, mid, hi_), torch.where(adv | ~on, lo_, mid)
            put(best, torch.where(adv.unsqueeze(1), cand, get(best)))
            put(high, hi_)
            put(low, lo_)
            live.stop(hi_ - lo_ <= 1e-5 * hi_)

        run_steps(live, self._graphs(high), step, self.refine_steps, special={0: lambda: step(first=True)})
        return best

    def _refine(self, model: nn.Module, x0: torch.Tensor, x_adv: torch.Tensor, found: torch.Tensor,
                pred: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        """Bisection toward the clean point: scale the perturbation (L2) or shrink its L∞ box."""
        idx = found.nonzero().flatten()
        if len(idx) == 0 or self.refine_steps == 0:
            return x_adv
        delta, base = x_adv[idx] - x0[idx], x0[idx]
        if self.norm == "linf":
            def point(t: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
                t = t.unsqueeze(1)
                b, d = (base, delta) if rows is None else (base[rows], delta[rows])
                return (b + torch.maximum(torch.minimum(d, t), -t)).clamp(lo, hi)
            high = delta.abs().amax(1)
        else:
            def point(t: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
                b, d = (base, delta) if rows is None else (base[rows], delta[rows])
                return (b + t.unsqueeze(1) * d).clamp(lo, hi)
            high = torch.ones(len(idx), device=x0.device)
        out = x_adv.clone()
        out[idx] = self._bisect(model, pred[idx], point, high, x_adv[idx])
        return out

    def _polish(self, model: nn.Module, x0: torch.Tensor, x_adv: torch.Tensor, found: torch.Tensor,
                pred: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Project the clean point onto the boundary linearised at ``x_adv``, then bisect on the overshoot.

        The box-aware projections ``d(s)`` of the clean point onto ``{f_lin = (1 - s) f_lin(x0)}`` grow with
        ``s``; exact for linear models. Returns the candidates and where one was verified adversarial.
        """
        idx = found.nonzero().flatten()
        ok = torch.zeros_like(found)
        if len(idx) == 0 or self.refine_steps == 0:
            return x_adv, ok
        base = x0[idx]
        _, f, g = self._logits_and_grad(model, x_adv[idx], pred[idx])
        r = -(f + (g * (base - x_adv[idx])).sum(1))  # g.d needed from the clean point
        usable = r < 0  # the linearisation must put the clean point on the predicted side

        def point(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return (base[rows] + box_projection(base[rows], g[rows], t * r[rows], lo, hi, self.norm)).clamp(lo, hi)

        rows = torch.arange(len(idx), device=x0.device)
        high = torch.full((len(idx),), torch.inf, device=x0.device)
        for s in (1.001, 1.05, 1.3):
            todo = rows[usable & torch.isinf(high)]
            if len(todo) == 0:
                break
            with torch.no_grad():
                adv = is_flipped(model(point(torch.full((len(todo),), s, device=x0.device), todo)
                                       .reshape(len(todo), *self._shape)), pred[idx][todo])
            high[todo[adv]] = s
        good = torch.isfinite(high)
        if not bool(good.any()):
            return x_adv, ok
        sub = rows[good]
        out = x_adv.clone()
        out[idx[sub]] = self._bisect(model, pred[idx][sub], lambda t, rr: point(t, sub if rr is None else sub[rr]),
                                     high[sub],
                                     point(high[sub], sub))
        ok[idx[sub]] = True
        return out, ok

    def _descent(self, model: nn.Module, x0: torch.Tensor, pred: torch.Tensor, x_best: torch.Tensor,
                 n_best: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Adaptive-radius projected gradient descent on the margin from the best adversarial points.

        Like FMN (Pintor et al., 2021): each step moves along the signed (L∞) or normalised (L2) gradient of
        the margin ``z_pred - max_{j != pred} z_j``, with a step of ``descent_step`` times the current radius,
        and projects onto the ball of that radius (and the box); the radius shrinks by a factor ``1 - gamma``
        below the iterate's norm after an adversarial iterate and grows by ``1 + gamma`` (never past the best
        norm) otherwise. Step and ``gamma`` are cosine-annealed to 2% and 1% of their start. In the second
        half of the schedule a sample stops after ``descent_patience`` steps without a better adversarial
        iterate. Returns the best adversarial iterates and their norms (the input where none improved).
        """
        n_best, x_best = n_best.clone(), x_best.clone()
        idx = torch.isfinite(n_best).nonzero().flatten()
        steps = self.descent_steps
        if len(idx) == 0 or steps == 0:
            return x_best, n_best
        x0a, pa = x0[idx], pred[idx]
        nb, xb = n_best[idx], x_best[idx]  # the bounds of the rows in idx, written back at the end
        radius = 0.97 * nb
        xa = ball_projection(x0a, xb, radius, lo, hi, self.norm)
        last = torch.zeros(len(idx), dtype=torch.long, device=x0.device)
        live = LiveRows(len(idx), x0.device, masked_default(self.masked, x0))
        get, put = live.gather, live.scatter  # no gathers or scatters while every row is live
        # the cosine-annealed schedule as device tensors indexed by a device step counter (for graphs);
        # the factors are rounded once to the working precision, as Python floats in the kernels are
        cos = [0.5 * (1.0 + math.cos(math.pi * k / steps)) for k in range(steps)]
        gammas = [self.descent_gamma * (0.01 + 0.99 * c) for c in cos]
        schedule = torch.tensor([[1 - gm for gm in gammas], [1 + gm for gm in gammas],
                                 [self.descent_step * (0.02 + 0.98 * c) for c in cos]], dtype=x0.dtype,
                                device=x0.device)
        k_t = torch.zeros(1, dtype=torch.long, device=x0.device)
        state = {"xa": xa}  # the iterates of the live rows (replaced when the rows are compacted)

        def step(final: bool = False) -> None:
            xa, on = state["xa"], live.mask
            x0l, pl, nbl = get(x0a), get(pa), get(nb)
            logits, _, g = self._logits_and_grad(model, xa, pl)
            adv = is_flipped(logits, pl) & _finite_rows(logits) & on
            dist = perturbation_norm(xa - x0l, self.norm)
            better = adv & (dist < nbl)
            nbl = torch.where(better, dist, nbl)
            put(nb, nbl)
            put(xb, torch.where(better.unsqueeze(1), xa, get(xb)))
            put(last, torch.where(better, k_t, get(last)))
            if final:
                return
            shrink, grow, size = schedule.index_select(1, k_t)
            r = get(radius)
            r_new = torch.where(adv, torch.minimum(r, dist) * shrink, torch.minimum(r * grow, nbl))
            put(radius, torch.where(on, r_new, r))
            if self.norm == "linf":
                direction = -g.sign()
            else:
                direction = -g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
            moved = ball_projection(x0l, xa + (size * r_new).unsqueeze(1) * direction, r_new, lo, hi, self.norm)
            xa.copy_(torch.where(on.unsqueeze(1), moved, xa))
            # past the exploring first half of the schedule, a sample stops after descent_patience idle steps
            late = 2 * (k_t + 1) >= steps
            live.stop(late & (k_t + 1 - get(last) >= self.descent_patience))
            k_t.add_(1)

        run_steps(live, self._graphs(x0), step, steps, special={steps - 1: lambda: step(final=True)},
                  on_compact=lambda keep: state.update(xa=state["xa"][keep]))
        n_best[idx], x_best[idx] = nb, xb
        return x_best, n_best

    def _probe(self, model: nn.Module, x0: torch.Tensor, pred: torch.Tensor, x_best: torch.Tensor,
               n_best: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-radius APGD probes at ``probe_ratio`` times each bound; each success lowers it and probes again.

        APGD's random start, large first steps and momentum reach adversarial regions that the descent,
        which starts from one boundary point, misses (the cross-entropy loss also weighs every class).
        """
        n_best, x_best = n_best.clone(), x_best.clone()
        idx = torch.isfinite(n_best).nonzero().flatten()
        shape = self._shape
        for _ in range(self.probe_rounds):
            if len(idx) == 0:
                break
            r = self.probe_ratio * n_best[idx]
            xs = x0[idx].reshape(len(idx), *shape)
            ps = pred[idx]
            cands = []
            masked = masked_default(self.masked, x0)
            cands.append(apgd_ce(model, xs, ps, r, norm=self.norm, steps=self.probe_steps, domain=(lo, hi),
                                 masked=masked, cuda_graphs=self._graphs(x0)))
            if self.probe_targets:
                with torch.no_grad():
                    order = model(xs).sort(1, descending=True).indices
                for t in range(1, min(self.probe_targets, order.shape[1] - 1) + 1):  # few classes: fewer targets
                    cands.append(apgd_ce(model, xs, ps, r, norm=self.norm, steps=self.probe_steps, domain=(lo, hi),
                                         loss=dlr_targeted_loss(order[:, t]), masked=masked,
                                         cuda_graphs=self._graphs(x0)))
            improved = torch.zeros(len(idx), dtype=torch.bool, device=x0.device)
            for xa in cands:
                xa = xa.reshape(len(idx), -1)
                adv = self._flipped(model, xa, ps)
                dist = perturbation_norm(xa - x0[idx], self.norm)
                better = adv & (dist < n_best[idx])
                n_best[idx[better]] = dist[better]
                x_best[idx[better]] = xa[better]
                improved |= better
            idx = idx[improved]
        return x_best, n_best

    def _budget_stage(self, model: nn.Module, x0: torch.Tensor, pred: torch.Tensor, x_best: torch.Tensor,
                      n_best: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-ε attacks at each budget ε on the samples whose bound lies just above it."""
        n_best, x_best = n_best.clone(), x_best.clone()
        masked = masked_default(self.masked, x0)
        windows = []
        for eps in self.budgets:  # largest first: a sample pushed below one budget may then sit above the next
            # the samples whose bound lies just above ε, and those without a bound (nothing flipped them yet:
            # an audit would count them robust at every ε unless a fixed-ε attack breaks them)
            rows = (~torch.isfinite(n_best) | ((n_best > eps) & (n_best <= eps * (1 + self.budget_window)))
                    ).nonzero().flatten()
            if masked:  # all budgets' windows in one stacked batch, below
                windows.append((eps, rows))
            else:
                x_best, n_best = self._budget_attacks(model, x0, pred, x_best, n_best, lo, hi, [(eps, rows)], False)
        if windows:
            x_best, n_best = self._budget_attacks(model, x0, pred, x_best, n_best, lo, hi, windows, True)
        return x_best, n_best

    def _budget_attacks(self, model: nn.Module, x0: torch.Tensor, pred: torch.Tensor, x_best: torch.Tensor,
                        n_best: torch.Tensor, lo: float, hi: float, windows: list[tuple[float, torch.Tensor]],
                        masked: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """APGD-CE, APGD-T and (L∞) Square at ε on the rows of each window ``(ε, rows)``.

        ``masked``: one stacked batch (`apgd_stacked`, then Square on the rows it left), finished rows masked;
        else the attacks one after another, each on the rows no earlier one flipped.
        """
        shape = self._shape
        idx = torch.cat([rows for _, rows in windows])
        e = torch.cat([torch.full((len(rows),), eps, device=x0.device) for eps, rows in windows])
        if len(idx) == 0:
            return x_best, n_best
        xs, ps = x0[idx].reshape(len(idx), *shape), pred[idx]
        options = {"norm": self.norm, "steps": self.budget_steps, "domain": (lo, hi), "masked": masked,
                   "cuda_graphs": self._graphs(x0)}
        if masked:
            xa, fooled = apgd_stacked(model, xs, ps, e, targets=self.budget_targets, **options)
        else:
            xa = apgd_ce(model, xs, ps, e, **options)
            if self.budget_targets:
                fooled = self._flipped(model, xa, ps)
                left = (~fooled).nonzero().flatten()
                if len(left):
                    xa[left] = apgd_t(model, xs[left], ps[left], e[left], targets=self.budget_targets, **options)
        if self.budget_queries and self.norm == "linf":
            if not masked:  # APGD-T's flips are not in `fooled` yet
                fooled = self._flipped(model, xa, ps)
            near = n_best[idx] <= e * (1 + self.square_window)
            left = (~fooled & near).nonzero().flatten()
            if len(left):
                xa[left] = square_linf(model, xs[left], ps[left], e[left], queries=self.budget_queries,
                                       candidates=self.square_candidates, domain=(lo, hi), masked=masked,
                                       cuda_graphs=self._graphs(x0))
        xa = xa.reshape(len(idx), -1)
        adv = self._flipped(model, xa, ps)
        dist = perturbation_norm(xa - x0[idx], self.norm)
        start = 0
        for _, rows in windows:  # window by window: a sample may sit in two
            seg = slice(start, start + len(rows))
            start += len(rows)
            better = adv[seg] & (dist[seg] < n_best[rows])
            n_best[rows[better]] = dist[seg][better]
            x_best[rows[better]] = xa[seg][better]
        return x_best, n_best

    @torch.no_grad()
    def _flipped(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return is_flipped(model(x.reshape(len(x), *self._shape)), pred)

    @torch.no_grad()
    def _segment_fallback(self, model: nn.Module, x0: torch.Tensor, pred: torch.Tensor, x_best: torch.Tensor,
                          n_best: torch.Tensor, tries: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """For samples still without an adversarial example: bisection along the segment toward the nearest
        point of the batch that the model predicts as another class (inside the box, as the box is convex):
        first the inputs the model predicts as another class, then, for samples still without a bound, the
        adversarial examples found for the other inputs.

        The end point itself is adversarial (its prediction differs), so this always gives a finite,
        verified bound when the batch holds another predicted class or any other input was flipped, whatever
        the gradients at this sample do (zero, masked, non-finite). Up to ``tries`` nearest points are checked.
        """
        n_best, x_best = n_best.clone(), x_best.clone()
        flipped = torch.isfinite(n_best)
        self._bisect_toward(model, x0, pred, x_best, n_best, x0, pred, tries)
        # a batch whose inputs all share this sample's class (or whose nearest ones did not flip it): the
        # other inputs' adversarial examples, whose class the forward pass on the ends tried checks
        self._bisect_toward(model, x0, pred, x_best, n_best, x_best[flipped],
                            torch.full((int(flipped.sum()),), -1, dtype=pred.dtype, device=pred.device), tries)
        return x_best, n_best

    def _bisect_toward(self, model: nn.Module, x0: torch.Tensor, pred: torch.Tensor, x_best: torch.Tensor,
                       n_best: torch.Tensor, ends: torch.Tensor, end_pred: torch.Tensor, tries: int) -> None:
        """`_segment_fallback`'s bisections toward the nearest of ``ends`` (those predicted as the sample's own
        class excluded), for the samples without a bound; updates ``x_best`` and ``n_best`` in place."""
        todo = (~torch.isfinite(n_best)).nonzero().flatten()
        if len(todo) == 0 or len(ends) == 0:
            return
        dist = torch.cdist(x0[todo], ends, p=math.inf if self.norm == "linf" else 2.0)
        dist = torch.where(end_pred.unsqueeze(0) == pred[todo].unsqueeze(1), torch.full_like(dist, math.inf), dist)
        order = dist.argsort(1)[:, :tries]
        left = torch.ones(len(todo), dtype=torch.bool, device=x0.device)
        positions = torch.arange(len(todo), device=x0.device)
        for c in range(order.shape[1]):
            other = order[:, c]
            pos = positions[left & torch.isfinite(dist[positions, other])]
            if len(pos) == 0:
                break
            rows, end = todo[pos], ends[other[pos]]
            adv = is_flipped(model(end.reshape(len(end), *self._shape)), pred[rows])
            rows, end = rows[adv], end[adv]
            left[pos[adv]] = False
            if len(rows) == 0:
                continue
            base, span = x0[rows], end - x0[rows]

            def point(t: torch.Tensor, live: torch.Tensor | None) -> torch.Tensor:
                b, d = (base, span) if live is None else (base[live], span[live])
                return b + t.unsqueeze(1) * d

            found = self._bisect(model, pred[rows], point, torch.ones(len(rows), device=x0.device), end)
            x_best[rows] = found
            n_best[rows] = perturbation_norm(found - x0[rows], self.norm)

    def _restart(self, model: nn.Module, x0: torch.Tensor, pred: torch.Tensor, lo: float, hi: float,
                 candidates: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One run from a random point at half the best norm so far (half the domain's width where none)."""
        best_n = torch.stack([c[1] for c in candidates]).amin(0)
        radius = torch.where(torch.isfinite(best_n), best_n, torch.full_like(best_n, hi - lo)).unsqueeze(1) * 0.5
        noise = torch.rand_like(x0) * 2 - 1 if self.norm == "linf" else torch.randn_like(x0)
        noise = noise / perturbation_norm(noise, self.norm).clamp_min(1e-12).unsqueeze(1)
        return self._run(model, x0, pred, lo, hi, (x0 + radius * noise).clamp(lo, hi), self.restart_steps)[0]

    def _perturb(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor, domain: Domain) -> torch.Tensor:
        lo, hi = float(domain[0]), float(domain[1])
        self._shape = tuple(x.shape[1:])
        self._graphs(x, model)  # this run's CUDA-graph state
        x0 = x.detach().reshape(len(x), -1).float()
        candidates = self._run(model, x0, pred, lo, hi, None, self.steps)
        for _ in range(self.restarts):
            candidates.append(self._restart(model, x0, pred, lo, hi, candidates))
        if self.restarts == 0:
            # samples the gradient start cannot leave (a zero gradient at the clean point, e.g. a tie of
            # ReLU units all at 0) get the one random restart that L2 always runs
            todo = (~torch.isfinite(torch.stack([c[1] for c in candidates]).amin(0))).nonzero().flatten()
            if len(todo):
                rx, rn = self._restart(model, x0[todo], pred[todo], lo, hi, [(c[0][todo], c[1][todo])
                                                                              for c in candidates])
                cx, cn = x0.clone(), torch.full((len(x0),), torch.inf, device=x0.device)
                cx[todo], cn[todo] = rx, rn
                candidates.append((cx, cn))
        # each stage below keeps only verified improvements; `stages` collects (points, norms) per stage
        best_n = torch.full((len(x0),), torch.inf, device=x0.device)
        best_x = x0.clone()
        raw_x, raw_n = x0.clone(), best_n.clone()
        for cand_x, cand_n in candidates:
            found = torch.isfinite(cand_n)
            # with a descent stage the bisection toward the clean point runs once, after it
            cand_r = cand_x if self.descent_steps else self._refine(model, x0, cand_x, found, pred, lo, hi)
            cand_rn = torch.where(found, perturbation_norm(cand_r - x0, self.norm), cand_n)
            better = cand_rn < best_n
            best_n = torch.where(better, cand_rn, best_n)
            best_x = torch.where(better.unsqueeze(1), cand_r, best_x)
            raw_x = torch.where(better.unsqueeze(1), cand_x, raw_x)
            raw_n = torch.where(better, cand_n, raw_n)
        stages = [(raw_x, raw_n), (best_x, best_n)]
        if self.fallback:
            best_x, best_n = self._segment_fallback(model, x0, pred, best_x, best_n)
            stages.append((best_x, best_n))
        if self.descent_steps:
            best_x, best_n = self._descent(model, x0, pred, best_x, best_n, lo, hi)
            stages.append((best_x, best_n))
            found = torch.isfinite(best_n)
            best_x = self._refine(model, x0, best_x, found, pred, lo, hi)
            best_n = torch.where(found, perturbation_norm(best_x - x0, self.norm), best_n)
            stages.append((best_x, best_n))
        if self.probe_steps or self.budgets:
            if self.probe_steps:
                best_x, best_n = self._probe(model, x0, pred, best_x, best_n, lo, hi)
            if self.budgets:
                best_x, best_n = self._budget_stage(model, x0, pred, best_x, best_n, lo, hi)
            found = torch.isfinite(best_n)
            best_x = self._refine(model, x0, best_x, found, pred, lo, hi)
            best_n = torch.where(found, perturbation_norm(best_x - x0, self.norm), best_n)
            stages.append((best_x, best_n))
        found = torch.isfinite(best_n)
        polished, ok = self._polish(model, x0, best_x, found, pred, lo, hi)
        stages.append((polished, torch.where(ok, perturbation_norm(polished - x0, self.norm), torch.inf)))
        # later stages sit closer to the boundary and were checked on sub-batches, where float rounding can differ
        # from the whole batch `verify` runs: re-check every stage's points within a whole batch, and keep per
        # sample the smallest that still flips; then check the kept points together, as `verify` will, and give
        # any that no longer flip (a near-tie) the next stage's point
        out, out_n = x0.clone(), torch.full_like(best_n, torch.inf)
        shape = (len(x0), *self._shape)
        with torch.no_grad():
            for _ in range(2):
                for stage_x, stage_n in reversed(stages):  # latest (usually smallest) first
                    fin = torch.isfinite(stage_n) & (stage_n < out_n)
                    if not bool(fin.any()):
                        continue
                    trial = torch.where(fin.unsqueeze(1), stage_x, out)
                    ok = fin & is_flipped(model(trial.reshape(shape)), pred)
                    out = torch.where(ok.unsqueeze(1), stage_x, out)
                    out_n = torch.where(ok, stage_n, out_n)
                lost = torch.isfinite(out_n) & ~is_flipped(model(out.reshape(shape)), pred)
                if not bool(lost.any()):
                    break
                out = torch.where(lost.unsqueeze(1), x0, out)  # those rows choose again among the stages
                out_n = torch.where(lost, torch.inf, out_n)
                stages = [(sx, torch.where(lost, sn, torch.full_like(sn, torch.inf))) for sx, sn in stages]
        return out.reshape(x.shape).to(x.dtype)
