"""Certified lower bounds of the input margin: bisection on the radius with IBP or CROWN."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...core.validation import check_norm
from ...data.loading import Domain
from ...errors import InputError, ModelError
from .network import DTYPE, Network

BOUND_METHODS = ("crown", "crown-ibp", "ibp")


def check_inputs(model: nn.Module, x: torch.Tensor, pred: torch.Tensor | None, norm: str,
                 domain: Domain) -> tuple[Network, torch.Tensor, torch.Tensor, str, Domain]:
    """Validate the arguments shared by the certified and exact margins; returns the converted network,
    the inputs (float64), the predicted classes of the model, the canonical norm and the domain."""
    norm = check_norm(norm)
    try:
        lo, hi = (float(v) for v in domain)
    except (TypeError, ValueError):
        raise InputError(f"domain must be a pair (low, high), got {domain!r}", "pass e.g. domain=(0.0, 1.0)") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"domain must be finite with low < high, got ({lo}, {hi})", "pass e.g. domain=(0.0, 1.0)")
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not torch.is_floating_point(x) or len(x) == 0:
        raise InputError("x must be a non-empty floating-point tensor of shape (N, ...)",
                         "pass a batch of inputs, e.g. data.x")
    x = x.detach().cpu()
    if not bool(torch.isfinite(x).all()):
        raise InputError("x has non-finite values", "remove or repair those samples")
    if float(x.min()) < lo - 1e-6 or float(x.max()) > hi + 1e-6:
        raise InputError(f"x has values outside the input domain [{lo}, {hi}]",
                         "scale the inputs into the domain or pass the right domain=(low, high)")
    net = Network(model, tuple(x.shape[1:]))
    with torch.no_grad():
        try:
            param = next(iter(model.parameters()), None)
            logits = model(x.to(param.dtype if param is not None else x.dtype))
        except RuntimeError as exc:
            raise InputError(f"the model cannot process inputs of shape {tuple(x.shape[1:])} ({exc})".split("\n")[0],
                             "pass inputs of the shape the model expects") from None
        mine = net.forward(x)
    logits = logits.detach().cpu().to(DTYPE)
    if logits.shape != mine.shape or not torch.allclose(logits, mine, rtol=1e-3, atol=1e-3):
        raise ModelError("the converted network does not reproduce the model's logits",
                         "call model.eval() and make sure forward only chains its nn.Sequential layers")
    model_pred = logits.argmax(1)
    if pred is None:
        pred = model_pred
    else:
        pred = torch.as_tensor(pred).reshape(-1).long().cpu()
        if len(pred) != len(x) or int(pred.min()) < 0 or int(pred.max()) >= net.num_classes:
            raise InputError(f"pred must hold one class index in 0..{net.num_classes - 1} per input",
                             "pass the model's predicted classes, or pred=None")
    return net, x.to(DTYPE), pred, norm, (lo, hi)


def domain_radius(x: torch.Tensor, norm: str, domain: Domain) -> torch.Tensor:
    """Per sample, the radius beyond which the ball around ``x`` covers the whole domain."""
    far = torch.maximum(x - domain[0], domain[1] - x).reshape(len(x), -1)
    return far.amax(1) if norm == "linf" else far.norm(dim=1)


def _bisect(net: Network, x: torch.Tensor, pred: torch.Tensor, norm: str, domain: Domain, method: str,
            lo: torch.Tensor, hi: torch.Tensor, steps: int) -> torch.Tensor:
    """Largest radius in ``[lo, hi]`` certified by ``method`` (``lo`` must be certified or 0)."""

    def certified(eps: torch.Tensor) -> torch.Tensor:
        return net.spec_lower_bounds(x, eps, pred, norm, domain, method).amin(1) > 0

    ok_hi = certified(hi)
    lo = torch.where(ok_hi, hi, lo)
    open_ = ~ok_hi
    for _ in range(steps):
        if not bool(open_.any()):
            break
        geometric = (lo > 0) & (hi > 4 * lo)
        mid = torch.where(geometric, (lo * hi).sqrt(), (lo + hi) / 2)
        idx = open_.nonzero().flatten()
        ok = certified(mid[idx])
        lo[idx] = torch.where(ok, mid[idx], lo[idx])
        hi[idx] = torch.where(ok, hi[idx], mid[idx])
    return lo


def certified_lower_bounds(model: nn.Module, x: torch.Tensor, pred: torch.Tensor | None = None, norm: str = "linf",
                           domain: Domain = (0.0, 1.0), method: str = "crown", upper: torch.Tensor | float | None = None,
                           steps: int = 16, batch_size: int = 64) -> torch.Tensor:
    """Certified lower bounds of the input margin, one per sample.

    For each sample, the largest radius ``eps`` (found by bisection, batched across samples) for which
    IBP or CROWN proves ``logit_pred - logit_j > 0`` for every ``j != pred`` and every input in the
    ``norm`` ball of radius ``eps`` intersected with the box ``domain``: no perturbation of norm at most
    the returned value changes the prediction. ``method="crown"`` also keeps what IBP certifies, so it
    is never below ``"ibp"`` at a tested radius.

    Args:
        model: an ``nn.Sequential`` (nesting allowed) of Linear / Conv2d / ReLU / Flatten.
        x: inputs ``(N, ...)`` inside ``domain``.
        pred: the classes to certify (default: the model's predictions).
        norm: ``"linf"`` or ``"l2"``.
        domain: the input box ``(low, high)``.
        method: ``"crown"`` (default; tightest, but it bounds every hidden neuron by a backward pass, slow on
            convolutional layers), ``"crown-ibp"`` (IBP for hidden layers, CROWN for the output: between the
            two in tightness, close to IBP in cost) or ``"ibp"``.
        upper: known upper bounds of the margin (e.g. verified attacks; scalar or per sample): the
            bisection starts from ``[0, upper]``. ``inf`` entries mean unknown.
        steps: bisection steps per sample (after a bracket-finding IBP pass for CROWN).
        batch_size: samples bounded together.

    Returns:
        float tensor ``(N,)``: ``0`` where nothing can be certified, ``inf`` where the prediction is
        certified over the whole domain.
    """
    if method not in BOUND_METHODS:
        raise InputError(f"unknown bound method {method!r}", f"use one of {BOUND_METHODS}")
    if not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}", "pass e.g. steps=16")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}", "pass a positive batch size")
    net, x, pred, norm, domain = check_inputs(model, x, pred, norm, domain)
    full = domain_radius(x, norm, domain)
    hi = full.clone()
    if upper is not None:
        up = torch.as_tensor(upper, dtype=DTYPE).detach().cpu().reshape(-1).expand(len(x)).clone()
        if bool(torch.isnan(up).any()) or bool((up < 0).any()):
            raise InputError("upper must hold non-negative bounds (inf where unknown)",
                             "pass verified attack norms, or upper=None")
        hi = torch.minimum(hi, up)
    out = torch.zeros(len(x), dtype=DTYPE)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            sl = slice(start, start + batch_size)
            xb, pb, hb = x[sl], pred[sl], hi[sl].clone()
            positive = hb > 0
            lo = torch.zeros_like(hb)
            if bool(positive.any()):
                idx = positive.nonzero().flatten()
                xi, pi, hi_i = xb[idx], pb[idx], hb[idx]
                lo_i = _bisect(net, xi, pi, norm, domain, "ibp", torch.zeros_like(hi_i), hi_i.clone(), steps)
                todo = (lo_i < hi_i).nonzero().flatten()
                if method != "ibp" and len(todo):
                    lo_i[todo] = _bisect(net, xi[todo], pi[todo], norm, domain, method, lo_i[todo],
                                         hi_i[todo].clone(), steps)
                lo[idx] = lo_i
            out[sl] = lo
    out[out >= full] = math.inf
    return round_down(out)


def round_down(values: torch.Tensor) -> torch.Tensor:
    """float64 lower bounds as float32, rounded towards -inf so they stay sound."""
    out = values.float()
    above = out.double() > values
    out[above] = torch.nextafter(out[above], torch.tensor(-math.inf))
    return out.clamp_min(0)
