"""Bound propagation through piecewise-linear networks: interval bounds (IBP) and CROWN.

A supported model (an `nn.Sequential`, possibly nested, of Linear / Conv2d / ReLU / Flatten, plus
Identity and eval-mode Dropout) is converted once into a float64 `Network` of three kinds of ops:
affine maps, reshapes and ReLUs. For a batch of centres ``x0`` and per-sample radii ``eps`` the input
set is the L∞ or L2 ball around ``x0`` intersected with the box ``domain``.

* IBP pushes per-neuron intervals forward; the first affine layer is exact for L∞ and, for L2, takes
  the tighter of the box interval and the ball interval ``w·x0 ± eps·‖w‖₂``.
* CROWN (Zhang et al., 2018) goes backward from a linear specification, relaxing every unstable ReLU
  by the triangle's upper chord and the adaptive lower line (slope 1 when ``u > -l``, else 0), and
  concretises the resulting linear function of the input over the input set. Intermediate bounds
  come from IBP and are tightened by CROWN for the neurons IBP leaves unstable, layer by layer.
  Every bound is sound; the CROWN result is intersected with the IBP one, so it is never looser.

The final specification for a predicted class ``p`` is ``logit_p - logit_j`` for all ``j != p``; the
backward pass folds it into the last linear layer (no bounds on the logits themselves are needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError

DTYPE = torch.float64
#: Largest dense matrix (entries) built for an affine layer when seeding CROWN rows.
_DENSE_LIMIT = 60_000_000
#: Approximate number of float64 entries one backward chunk may hold (rows x sample x layer size).
_CHUNK_ENTRIES = 12_000_000
_UNSUPPORTED_FIX = ("use the attack-only route (upper bounds only) for this model, or express it as an "
                    "nn.Sequential of Linear / Conv2d / ReLU / Flatten")


# --------------------------------------------------------------------------------------------
# Ops
# --------------------------------------------------------------------------------------------

class _Affine:
    """An affine map ``x -> W x + b`` given by a Linear or Conv2d (float64 copies of the weights)."""

    def __init__(self, module: nn.Module, in_shape: tuple[int, ...]):
        self.in_shape = in_shape
        self.weight = module.weight.detach().to("cpu", DTYPE).clone()
        bias = module.bias
        if isinstance(module, nn.Linear):
            self.kind = "linear"
            if len(in_shape) != 1 or in_shape[0] != module.in_features:
                raise ModelError(f"nn.Linear({module.in_features}, {module.out_features}) receives inputs of shape "
                                 f"{in_shape}", "put nn.Flatten() before the first nn.Linear")
            self.out_shape = (module.out_features,)
            self.conv_args: dict = {}
        else:
            self.kind = "conv"
            if module.padding_mode != "zeros":
                raise ModelError(f"Conv2d with padding_mode={module.padding_mode!r} is not supported by the bounds",
                                 _UNSUPPORTED_FIX)
            padding = module.padding
            if isinstance(padding, str):
                padding = _numeric_padding(module)
            if len(in_shape) != 3:
                raise ModelError(f"Conv2d receives inputs of shape {in_shape}", "feed (N, C, H, W) images to Conv2d")
            self.conv_args = dict(stride=module.stride, padding=padding, dilation=module.dilation,
                                  groups=module.groups)
            with torch.no_grad():
                out = F.conv2d(torch.zeros(1, *in_shape, dtype=DTYPE), self.weight, None, **self.conv_args)
            self.out_shape = tuple(out.shape[1:])
        b = torch.zeros(self.out_shape[0], dtype=DTYPE) if bias is None else bias.detach().to("cpu", DTYPE).clone()
        self.bias_map = (b if self.kind == "linear" else b[:, None, None].expand(self.out_shape)).contiguous()
        self.abs_weight = self.weight.abs()
        self._dense: torch.Tensor | None = None
        self._row_norms: torch.Tensor | None = None

    def apply(self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: bool = True) -> torch.Tensor:
        w = self.weight if weight is None else weight
        if self.kind == "linear":
            return F.linear(x, w, self.bias_map if bias else None)
        out = F.conv2d(x, w, None, **self.conv_args)
        return out + self.bias_map if bias else out

    def vjp(self, a: torch.Tensor) -> torch.Tensor:
        """``a @ W`` for a batch of rows ``a`` of shape ``(B, *out_shape)``: shape ``(B, *in_shape)``."""
        if self.kind == "linear":
            return a @ self.weight
        return torch.nn.grad.conv2d_input((a.shape[0], *self.in_shape), self.weight, a, **self.conv_args)

    @property
    def out_numel(self) -> int:
        return math.prod(self.out_shape)

    @property
    def in_numel(self) -> int:
        return math.prod(self.in_shape)

    def dense(self) -> torch.Tensor | None:
        """The weight as a dense ``(out_numel, in_numel)`` matrix, or None when it would be too large."""
        if self.kind == "linear":
            return self.weight
        if self._dense is None and self.out_numel * self.in_numel <= _DENSE_LIMIT:
            eye = torch.eye(self.in_numel, dtype=DTYPE).reshape(self.in_numel, *self.in_shape)
            with torch.no_grad():
                cols = [self.apply(chunk, bias=False).reshape(len(chunk), -1) for chunk in eye.split(512)]
            self._dense = torch.cat(cols).T.contiguous()
        return self._dense

    def row_norms(self) -> torch.Tensor:
        """L2 norm of each output's weight row, shape ``out_shape``."""
        if self._row_norms is None:
            ones = torch.ones(1, *self.in_shape, dtype=DTYPE)
            self._row_norms = self.apply(ones, self.weight ** 2, bias=False)[0].clamp_min(0).sqrt()
        return self._row_norms


def _numeric_padding(module: nn.Conv2d) -> tuple[int, int]:
    if module.padding == "valid":
        return (0, 0)
    pads = []
    for k, d in zip(module.kernel_size, module.dilation):
        total = d * (k - 1)
        if total % 2:
            raise ModelError("Conv2d with padding='same' and an even effective kernel pads asymmetrically, "
                             "which the bounds do not support", _UNSUPPORTED_FIX)
        pads.append(total // 2)
    if any(s != 1 for s in module.stride):
        raise ModelError("Conv2d with padding='same' and stride > 1", _UNSUPPORTED_FIX)
    return tuple(pads)


@dataclass
class _Reshape:
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass
class _ReLU:
    shape: tuple[int, ...]


Op = _Affine | _Reshape | _ReLU


def _leaves(model: nn.Module) -> list[nn.Module]:
    """The layers of a (nested) Sequential in order; wrappers that only forward are looked through."""
    inner = getattr(model, "model", None)
    if type(model).__name__ in ("CountingModel", "LogitsAdapter") and isinstance(inner, nn.Module):
        return _leaves(inner)
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in _leaves(child)]
    if isinstance(model, (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Identity, nn.Dropout)):
        return [model]
    raise ModelError(f"layer {type(model).__name__} is not supported by the certified bounds (only nn.Sequential "
                     "of Linear / Conv2d / ReLU / Flatten)", _UNSUPPORTED_FIX)


class Network:
    """A supported model converted for bound propagation (float64, CPU)."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        if not isinstance(model, nn.Module):
            raise ModelError(f"the model is a {type(model).__name__}, not a torch nn.Module",
                             "pass an nn.Sequential of Linear / Conv2d / ReLU / Flatten")
        self.input_shape = tuple(input_shape)
        self.ops: list[Op] = []
        shape = self.input_shape
        for layer in _leaves(model):
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                op = _Affine(layer, shape)
                shape = op.out_shape
                self.ops.append(op)
            elif isinstance(layer, nn.ReLU):
                self.ops.append(_ReLU(shape))
            elif isinstance(layer, nn.Flatten):
                if layer.start_dim != 1 or layer.end_dim != -1:
                    raise ModelError(f"nn.Flatten(start_dim={layer.start_dim}, end_dim={layer.end_dim})",
                                     "use nn.Flatten() with its default dimensions")
                out = (math.prod(shape),)
                if out != shape:
                    self.ops.append(_Reshape(shape, out))
                shape = out
            elif isinstance(layer, nn.Dropout) and layer.training and layer.p > 0:
                raise ModelError("the model has an active nn.Dropout (training mode)", "call model.eval() first")
        if len(shape) != 1:
            raise ModelError(f"the model's output has shape {shape} per sample", "end the model with nn.Linear logits")
        self.num_classes = shape[0]
        self.relu_levels = [i for i, op in enumerate(self.ops) if isinstance(op, _ReLU)]

    # ---------------------------------------------------------------- forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(DTYPE)
        for op in self.ops:
            if isinstance(op, _Affine):
                h = op.apply(h)
            elif isinstance(op, _ReLU):
                h = h.clamp_min(0)
            else:
                h = h.reshape(len(h), *op.out_shape)
        return h

    def _first_affine_from_input(self, level: int) -> bool:
        """Whether op ``level`` is affine and only reshapes come before it."""
        return isinstance(self.ops[level], _Affine) and all(isinstance(o, _Reshape) for o in self.ops[:level])

    # ---------------------------------------------------------------- bounds

    def relu_bounds(self, x0: torch.Tensor, eps: torch.Tensor, norm: str, domain: tuple[float, float],
                    method: str) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]:
        """Pre-activation bounds of every ReLU (keyed by op index) and the interval after the last ReLU.

        Returns ``(relu_bounds, (l, u))`` where ``(l, u)`` bounds the activation at the level just after
        the last ReLU (the input box when there is no ReLU).
        """
        inset = InputSet(x0, eps, norm, domain)
        l, u = inset.box_lo, inset.box_hi
        bounds: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        after_last = (l, u)
        for i, op in enumerate(self.ops):
            if isinstance(op, _Affine):
                c, r = (l + u) / 2, (u - l) / 2
                mid = op.apply(c)
                rad = op.apply(r, op.abs_weight, bias=False)
                l, u = mid - rad, mid + rad
                if inset.norm == "l2" and self._first_affine_from_input(i):
                    centre = op.apply(inset.x0.reshape(len(x0), *op.in_shape))
                    spread = inset.eps.view(-1, *[1] * len(op.out_shape)) * op.row_norms()
                    l, u = torch.maximum(l, centre - spread), torch.minimum(u, centre + spread)
            elif isinstance(op, _Reshape):
                l, u = l.reshape(len(l), *op.out_shape), u.reshape(len(u), *op.out_shape)
            else:
                if method == "crown" and not self._exact_pre_activation(i, inset.norm):
                    l, u = self._refine(i, l, u, bounds, inset)
                bounds[i] = (l, u)
                l, u = l.clamp_min(0), u.clamp_min(0)
                after_last = (l, u)
        if not self.relu_levels:
            after_last = (inset.box_lo, inset.box_hi)
        return bounds, after_last

    def _exact_pre_activation(self, level: int, norm: str) -> bool:
        """IBP is already as tight as CROWN: a single affine map of the input set precedes ``level``."""
        affines = [o for o in self.ops[:level] if isinstance(o, _Affine)]
        relus = [o for o in self.ops[:level] if isinstance(o, _ReLU)]
        return len(affines) == 1 and not relus

    def _refine(self, level: int, l: torch.Tensor, u: torch.Tensor,
                bounds: dict[int, tuple[torch.Tensor, torch.Tensor]], inset: "InputSet") -> tuple[torch.Tensor, torch.Tensor]:
        """Tighten the IBP bounds ``(l, u)`` at ReLU ``level`` by CROWN, for the neurons IBP leaves unstable."""
        n = len(l)
        shape = l.shape[1:]
        lf, uf = l.reshape(n, -1).clone(), u.reshape(n, -1).clone()
        unstable = (lf < 0) & (uf > 0)
        counts = unstable.sum(1)
        s_max = int(counts.max()) if n else 0
        if s_max == 0:
            return l, u
        # per-sample indices of unstable neurons, padded with the sample's first one (results ignored)
        order = torch.argsort(unstable.to(torch.int8), dim=1, descending=True, stable=True)[:, :s_max]
        valid = torch.arange(s_max)[None, :] < counts[:, None]
        prev = self.ops[level - 1]
        dense = prev.dense() if isinstance(prev, _Affine) else None
        biggest = max(math.prod(o.in_shape) if isinstance(o, (_Affine, _Reshape)) else math.prod(o.shape)
                      for o in self.ops[:level])
        rows_per_chunk = max(1, _CHUNK_ENTRIES // (2 * n * max(biggest, 1)))
        new_l = torch.full((n, s_max), -math.inf, dtype=DTYPE)
        new_u = torch.full((n, s_max), math.inf, dtype=DTYPE)
        for lo in range(0, s_max, rows_per_chunk):
            idx = order[:, lo:lo + rows_per_chunk]
            s = idx.shape[1]
            if dense is not None:
                a = dense[idx]  # (n, s, in_numel)
                c = prev.bias_map.reshape(-1)[idx]
                a = torch.cat([a, -a], 1).reshape(n, 2 * s, *prev.in_shape)
                c = torch.cat([c, -c], 1)
                start = level - 1
            else:
                a = torch.zeros(n, s, lf.shape[1], dtype=DTYPE)
                a.scatter_(2, idx.unsqueeze(2), 1.0)
                a = torch.cat([a, -a], 1).reshape(n, 2 * s, *shape)
                c = torch.zeros(n, 2 * s, dtype=DTYPE)
                start = level
            a, c = self.backward(a, c, start, 0, bounds)
            low = inset.concretize(a, c)
            new_l[:, lo:lo + s] = low[:, :s]
            new_u[:, lo:lo + s] = -low[:, s:]
        rows = torch.arange(n)[:, None].expand_as(order)
        cur_l, cur_u = lf[rows, order], uf[rows, order]
        lf[rows[valid], order[valid]] = torch.maximum(cur_l, new_l)[valid]
        uf[rows[valid], order[valid]] = torch.minimum(cur_u, new_u)[valid]
        return lf.reshape(n, *shape), uf.reshape(n, *shape)

    def backward(self, a: torch.Tensor, c: torch.Tensor, start: int, stop: int,
                 bounds: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower-bounding back-substitution of ``a · h_start + c`` down to level ``stop``.

        ``a`` has shape ``(N, S, *shape of level start)``; returns ``(a', c')`` with ``a'`` on level ``stop``
        such that ``a · h_start + c >= a' · h_stop + c'`` for every input of the set the ReLU bounds hold on.
        """
        n, s = a.shape[:2]
        for i in range(start - 1, stop - 1, -1):
            op = self.ops[i]
            if isinstance(op, _Affine):
                c = c + (a * op.bias_map).reshape(n, s, -1).sum(-1)
                a = op.vjp(a.reshape(n * s, *op.out_shape)).reshape(n, s, *op.in_shape)
            elif isinstance(op, _Reshape):
                a = a.reshape(n, s, *op.in_shape)
            else:
                low, up = bounds[i]
                lower_slope, upper_slope, upper_icpt = _relaxation(low, up)
                pos, neg = a.clamp_min(0), a.clamp_max(0)
                c = c + (neg * upper_icpt.unsqueeze(1)).reshape(n, s, -1).sum(-1)
                a = pos * lower_slope.unsqueeze(1) + neg * upper_slope.unsqueeze(1)
        return a, c

    def spec_lower_bounds(self, x0: torch.Tensor, eps: torch.Tensor, pred: torch.Tensor, norm: str,
                          domain: tuple[float, float], method: str) -> torch.Tensor:
        """Lower bounds of ``logit_pred - logit_j`` over the input set, shape ``(N, K)`` (``+inf`` at ``j = pred``)."""
        return self.spec_bounds(x0, eps, pred, norm, domain, method)[0]

    def spec_bounds(self, x0: torch.Tensor, eps: torch.Tensor, pred: torch.Tensor, norm: str,
                    domain: tuple[float, float], method: str
                    ) -> tuple[torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
        """Lower bounds of ``logit_pred - logit_j`` over the input set, ``(N, K)`` with ``+inf`` at
        ``j = pred``, and the pre-activation bounds of every ReLU they were computed with."""
        n, k = len(x0), self.num_classes
        # "crown-ibp": IBP for the hidden layers, CROWN for the output specification only (far cheaper on
        # convolutional layers, where CROWN bounds every hidden neuron by its own backward pass)
        bounds, (hl, hu) = self.relu_bounds(x0, eps, norm, domain, "ibp" if method == "crown-ibp" else method)
        inset = InputSet(x0, eps, norm, domain)
        spec = torch.eye(k, dtype=DTYPE)[pred].unsqueeze(1) - torch.eye(k, dtype=DTYPE).unsqueeze(0)  # (n, k, k)
        zero = torch.zeros(n, k, dtype=DTYPE)
        stop = self.relu_levels[-1] + 1 if self.relu_levels else 0
        a, c = self.backward(spec, zero, len(self.ops), stop, bounds)
        if stop == 0:
            result = inset.concretize(a, c, final=True)
        else:
            af = a.reshape(n, k, -1)
            mid = ((hl + hu) / 2).reshape(n, 1, -1)
            rad = ((hu - hl) / 2).reshape(n, 1, -1)
            result = c + (af * mid).sum(-1) - (af.abs() * rad).sum(-1)
            if method in ("crown", "crown-ibp"):
                a, c = self.backward(a, c, stop, 0, bounds)
                result = torch.maximum(result, inset.concretize(a, c, final=True))
        result[torch.arange(n), pred] = math.inf
        return result, bounds


def _relaxation(low: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear relaxation of ReLU on ``[low, up]``: lower slope, upper slope and upper intercept."""
    active = low >= 0
    unstable = (low < 0) & (up > 0)
    width = (up - low).clamp_min(1e-300)
    upper_slope = torch.where(active, 1.0, torch.where(unstable, up / width, 0.0)).to(DTYPE)
    upper_icpt = torch.where(unstable, -upper_slope * low, 0.0).to(DTYPE)
    lower_slope = torch.where(active, 1.0, torch.where(unstable & (up > -low), 1.0, 0.0)).to(DTYPE)
    return lower_slope, upper_slope, upper_icpt


class InputSet:
    """The L∞ or L2 ball of per-sample radius ``eps`` around ``x0``, intersected with the box ``domain``."""

    def __init__(self, x0: torch.Tensor, eps: torch.Tensor, norm: str, domain: tuple[float, float]):
        self.norm = norm
        self.x0 = x0.to(DTYPE)
        self.eps = eps.to(DTYPE)
        e = self.eps.view(-1, *[1] * (x0.ndim - 1))
        lo, hi = domain
        self.box_lo = (self.x0 - e).clamp(lo, hi)
        self.box_hi = (self.x0 + e).clamp(lo, hi)

    def concretize(self, a: torch.Tensor, c: torch.Tensor, final: bool = False) -> torch.Tensor:
        """Lower bound of ``a · x + c`` over the set, shape ``(N, S)``.

        L∞: exact. L2: the best of the box bound and the ball bound ``a·x0 - eps ‖a‖₂``; with ``final``
        also the Lagrangian dual bounds ``min_{x in box} a·x + λ(‖x - x0‖² - eps²)`` on a grid of λ
        (each one sound by weak duality).
        """
        n, s = a.shape[:2]
        af = a.reshape(n, s, -1)
        blo = self.box_lo.reshape(n, 1, -1)
        bhi = self.box_hi.reshape(n, 1, -1)
        box = c + (af.clamp_min(0) * blo).sum(-1) + (af.clamp_max(0) * bhi).sum(-1)
        if self.norm == "linf":
            return box
        x0 = self.x0.reshape(n, 1, -1)
        eps = self.eps.view(n, 1)
        anorm = af.norm(dim=-1)
        best = torch.maximum(box, c + (af * x0).sum(-1) - eps * anorm)
        if final:
            lam_star = (anorm / (2 * eps.clamp_min(1e-30))).clamp_min(1e-30)
            for k in range(-8, 5):
                lam = (lam_star * 2.0 ** k).unsqueeze(-1)
                x = torch.minimum(torch.maximum(x0 - af / (2 * lam), blo), bhi)
                value = c + (af * x).sum(-1) + lam.squeeze(-1) * (((x - x0) ** 2).sum(-1) - eps ** 2)
                best = torch.maximum(best, value)
        return best
