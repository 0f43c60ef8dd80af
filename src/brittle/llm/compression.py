"""Post-training compression fed by a calibration set: Wanda, SparseGPT and magnitude pruning; GPTQ and RTN.

Own implementations of the published algorithms, for ``nn.Linear`` weights ``W`` (out × in) with the
calibration inputs' second-moment matrix ``H = XᵀX / n`` (in × in):

- **magnitude**: zero the smallest ``|W_ij|`` of each output row (needs no calibration data);
- **Wanda** (Sun et al. 2024): zero the smallest ``|W_ij| · ‖X_j‖₂`` of each output row;
- **SparseGPT** (Frantar & Alistarh 2023): column by column through the upper Cholesky factor of ``H⁻¹``,
  choose the mask per block of columns by ``W² / [H⁻¹]_jj²`` and push each pruned weight's error onto the
  remaining columns (optimal brain surgeon update);
- **RTN**: asymmetric min-max quantization to ``bits`` per output row and group of ``group_size`` columns;
- **GPTQ** (Frantar et al. 2023): the same quantizer, column by column with the same error feedback.

A model is compressed decoder layer by decoder layer (the usual sequential scheme): the calibration sequences
are run up to the first layer, each layer's linear inputs give ``H``, its linears are compressed, and the
compressed layer's outputs feed the next one. Embeddings and the LM head are left alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError, ModelError

# --------------------------------------------------------------------------------------------------- layer level



def _obs_update(W1: "torch.Tensor", U1: "torch.Tensor", Err1: "torch.Tensor", i: int, q: "torch.Tensor") -> None:
    """Optimal-brain-surgeon step shared by SparseGPT and GPTQ: set column ``i`` of the block to ``q`` and spread
    its error over the block's later columns through the upper Cholesky factor ``U1`` of the inverse Hessian."""
    err = (W1[:, i] - q) / U1[i, i]
    W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
    W1[:, i] = q
    Err1[:, i] = err

def _check_w_h(W: torch.Tensor, H: torch.Tensor | None) -> None:
    if W.dim() != 2 or not W.is_floating_point():
        raise InputError(f"weight must be a 2-D float tensor, got shape {tuple(W.shape)}", "pass a Linear's weight")
    if H is not None and (H.dim() != 2 or H.shape[0] != H.shape[1] or H.shape[0] != W.shape[1]):
        raise InputError(f"H has shape {tuple(H.shape)} but the weight has {W.shape[1]} input columns",
                         "pass H = XᵀX/n of the layer's inputs (in × in)")


def _check_sparsity(sparsity: float) -> None:
    if not (isinstance(sparsity, (int, float)) and 0.0 <= sparsity < 1.0):
        raise InputError(f"sparsity={sparsity!r} must lie in [0, 1)", "pass e.g. sparsity=0.5")


def _check_bits(bits: int, group_size: int | None) -> None:
    if not (isinstance(bits, int) and 1 <= bits <= 16):
        raise InputError(f"bits={bits!r} must be an integer in 1..16", "pass e.g. bits=4")
    if group_size is not None and not (isinstance(group_size, int) and group_size >= 1):
        raise InputError(f"group_size={group_size!r} must be a positive integer or None", "pass e.g. 128")


def _prune_rows(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask (True = pruned) of the ``round(sparsity · in)`` lowest scores of each row."""
    k = int(round(score.shape[1] * sparsity))
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k > 0:
        idx = torch.topk(score, k, dim=1, largest=False).indices
        mask.scatter_(1, idx, True)
    return mask


def magnitude_prune(W: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights in each output row."""
    _check_w_h(W, None)
    _check_sparsity(sparsity)
    return W.masked_fill(_prune_rows(W.abs(), sparsity), 0.0)


def wanda_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Wanda: score ``|W_ij| · sqrt(H_jj)`` (``‖X_j‖₂`` up to a constant), prune the lowest per output row."""
    _check_w_h(W, H)
    _check_sparsity(sparsity)
    norms = torch.sqrt(torch.clamp(torch.diagonal(H).to(W.dtype), min=0.0))
    return W.masked_fill(_prune_rows(W.abs() * norms[None, :], sparsity), 0.0)


def _hinv_upper(H: torch.Tensor, W: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹ with dead inputs (H_jj = 0) given H_jj = 1 and W[:, j] = 0 (in place)."""
    H = H.clone().double()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    damp = percdamp * torch.mean(torch.diagonal(H))
    H += damp * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for _ in range(5):
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) == 0:
            break
        H += damp * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)  # extra damping for numerically singular H
    else:
        raise ModelError("H is not positive definite even after damping", "use more calibration samples")
    Hinv = torch.cholesky_inverse(L)
    return torch.linalg.cholesky(Hinv, upper=True)


def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float, *, blocksize: int = 128,
                    percdamp: float = 0.01) -> torch.Tensor:
    """SparseGPT unstructured pruning with OBS error feedback; returns the new weight (same dtype)."""
    _check_w_h(W, H)
    _check_sparsity(sparsity)
    dtype = W.dtype
    W = W.clone().double()
    U = _hinv_upper(H, W, percdamp)
    rows, cols = W.shape
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        score = W1**2 / torch.diagonal(U1)[None, :] ** 2
        k = int(round(score.numel() * sparsity))
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if k > 0:
            mask1.view(-1)[torch.topk(score.view(-1), k, largest=False).indices] = True
        for i in range(i2 - i1):
            w = W1[:, i]
            _obs_update(W1, U1, Err1, i, w.masked_fill(mask1[:, i], 0.0))
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W.to(dtype)


def _quant_params(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row asymmetric min-max scale and zero point of ``x`` (rows × cols); the range always contains 0."""
    maxq = 2**bits - 1
    xmin = torch.clamp(x.min(dim=1).values, max=0.0)
    xmax = torch.clamp(x.max(dim=1).values, min=0.0)
    same = xmin == xmax
    xmin = torch.where(same, xmin - 1, xmin)
    xmax = torch.where(same, xmax + 1, xmax)
    scale = (xmax - xmin) / maxq
    zero = torch.round(-xmin / scale)
    return scale, zero


def _quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    q = torch.clamp(torch.round(x / scale) + zero, 0, 2**bits - 1)
    return scale * (q - zero)


def rtn_quantize(W: torch.Tensor, bits: int = 4, group_size: int | None = 128) -> torch.Tensor:
    """Round-to-nearest: min-max quantization of each row and group of ``group_size`` input columns."""
    _check_w_h(W, None)
    _check_bits(bits, group_size)
    gs = group_size or W.shape[1]
    out = torch.empty_like(W)
    for g in range(0, W.shape[1], gs):
        blk = W[:, g:g + gs]
        scale, zero = _quant_params(blk, bits)
        out[:, g:g + gs] = _quantize(blk, scale[:, None], zero[:, None], bits)
    return out


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, bits: int = 4, group_size: int | None = 128, *,
                  blocksize: int = 128, percdamp: float = 0.01) -> torch.Tensor:
    """GPTQ: quantize column by column, spreading each column's error over the later columns via ``H⁻¹``.

    Group scales are taken from the (already updated) weights when the group's first column is reached.
    """
    _check_w_h(W, H)
    _check_bits(bits, group_size)
    dtype = W.dtype
    W = W.clone().double()
    U = _hinv_upper(H, W, percdamp)
    rows, cols = W.shape
    gs = group_size or cols
    scale = zero = None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if col % gs == 0:
                grp = torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :gs]
                scale, zero = _quant_params(grp, bits)
            w = W1[:, i]
            _obs_update(W1, U1, Err1, i, _quantize(w, scale, zero, bits))
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W.to(dtype)


def layer_error(W: torch.Tensor, W_new: torch.Tensor, H: torch.Tensor) -> float:
    """Mean squared output error ``tr((W-Ŵ) H (W-Ŵ)ᵀ) = ‖(W-Ŵ)X‖²_F / n`` of a layer on its calibration inputs."""
    D = (W - W_new).double()
    return float(torch.einsum("ij,jk,ik->", D, H.double(), D))


# --------------------------------------------------------------------------------------------------- methods


class Compressor:
    """A compression method: ``__init__`` holds the settings, ``compress_weight`` does one linear."""

    name = "compressor"
    needs_calibration = True
    full_hessian = True  # False: only diag(XᵀX/n) is gathered (cheaper)

    def compress_weight(self, W: torch.Tensor, H: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class Magnitude(Compressor):
    name = "magnitude"
    needs_calibration = False

    def __init__(self, sparsity: float = 0.5):
        _check_sparsity(sparsity)
        self.sparsity = float(sparsity)

    def compress_weight(self, W, H):
        return magnitude_prune(W, self.sparsity)

    def describe(self):
        return f"magnitude {self.sparsity:.0%}"


class Wanda(Magnitude):
    name = "wanda"
    needs_calibration = True
    full_hessian = False

    def compress_weight(self, W, H):
        return wanda_prune(W, H, self.sparsity)

    def describe(self):
        return f"wanda {self.sparsity:.0%}"


class SparseGPT(Compressor):
    name = "sparsegpt"

    def __init__(self, sparsity: float = 0.5, blocksize: int = 128, percdamp: float = 0.01):
        _check_sparsity(sparsity)
        self.sparsity, self.blocksize, self.percdamp = float(sparsity), int(blocksize), float(percdamp)

    def compress_weight(self, W, H):
        return sparsegpt_prune(W, H, self.sparsity, blocksize=self.blocksize, percdamp=self.percdamp)

    def describe(self):
        return f"sparsegpt {self.sparsity:.0%}"


class RTN(Compressor):
    name = "rtn"
    needs_calibration = False

    def __init__(self, bits: int = 4, group_size: int | None = 128):
        _check_bits(bits, group_size)
        self.bits, self.group_size = bits, group_size

    def compress_weight(self, W, H):
        return rtn_quantize(W, self.bits, self.group_size)

    def describe(self):
        return f"{self.name} w{self.bits}g{self.group_size or 'row'}"


class GPTQ(RTN):
    name = "gptq"
    needs_calibration = True

    def __init__(self, bits: int = 4, group_size: int | None = 128, blocksize: int = 128, percdamp: float = 0.01):
        super().__init__(bits, group_size)
        self.blocksize, self.percdamp = int(blocksize), float(percdamp)

    def compress_weight(self, W, H):
        return gptq_quantize(W, H, self.bits, self.group_size, blocksize=self.blocksize, percdamp=self.percdamp)


METHODS = {"magnitude": Magnitude, "wanda": Wanda, "sparsegpt": SparseGPT, "rtn": RTN, "gptq": GPTQ}


def make_compressor(method: str, *, sparsity: float = 0.5, bits: int = 4, group_size: int | None = 128) -> Compressor:
    """A compressor by name: ``magnitude``, ``wanda``, ``sparsegpt`` (use ``sparsity``) or ``rtn``, ``gptq`` (``bits``)."""
    key = str(method).lower()
    if key not in METHODS:
        raise InputError(f"unknown compression method '{method}'", f"use one of {', '.join(METHODS)}")
    if key in ("rtn", "gptq"):
        return METHODS[key](bits=bits, group_size=group_size)
    return METHODS[key](sparsity=sparsity)


# --------------------------------------------------------------------------------------------------- model level


@dataclass
class CompressionReport:
    """What a model-level compression did: per-linear layer error and sparsity, totals and time."""

    method: str
    n_calibration: int
    layers: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def sparsity(self) -> float:
        tot = sum(r["numel"] for r in self.layers)
        return sum(r["zeros"] for r in self.layers) / tot if tot else 0.0

    @property
    def total_error(self) -> float:
        return float(sum(r["error"] for r in self.layers))


class _Stop(Exception):
    pass


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Hugging Face causal LM (``model.model.layers`` for Llama-like models)."""
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ModelError(f"cannot find the decoder layers of {type(model).__name__}",
                     "use a Llama-like causal LM (model.model.layers)")


def _check_calibration(ids: torch.Tensor, vocab: int) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype not in (torch.long, torch.int):
        raise InputError("calibration data must be an (n, seq_len) integer tensor of token ids",
                         "build it with brittle.llm.data.build_pool(...) and a selector")
    if ids.shape[0] < 1 or ids.shape[1] < 2:
        raise InputError(f"calibration tensor of shape {tuple(ids.shape)} is empty or too short",
                         "pass at least one sequence of >= 2 tokens")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise InputError(f"calibration token ids fall outside the vocabulary [0, {vocab})",
                         "tokenize with the model's own tokenizer")


@torch.no_grad()
def compress_model(model: nn.Module, calibration: torch.Tensor | None, method: Compressor, *,
                   batch_size: int = 8) -> CompressionReport:
    """Compress every linear of every decoder layer of ``model`` in place, layer by layer on the calibration set."""
    if not isinstance(method, Compressor):
        raise InputError(f"method must be a Compressor, got {type(method).__name__}", "use make_compressor(name)")
    layers = decoder_layers(model)
    if calibration is None:
        if method.needs_calibration:
            raise InputError(f"{method.name} needs calibration data", "pass calibration token ids")
        return _compress_without_data(layers, method)
    _check_calibration(calibration, int(model.config.vocab_size))
    t0 = time.perf_counter()
    report = CompressionReport(method=method.describe(), n_calibration=int(calibration.shape[0]))
    # 1. the inputs (and keyword arguments) of the first decoder layer, per batch
    cached: list[tuple[torch.Tensor, dict]] = []
    dev = next(model.parameters()).device

    def grab(_module, args, kwargs):
        hs = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        cached.append((hs.detach(), kwargs))
        raise _Stop

    handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for b in range(0, calibration.shape[0], batch_size):
            try:
                model(input_ids=calibration[b:b + batch_size].to(dev), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    # 2. layer by layer
    for li, layer in enumerate(layers):
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        full = method.full_hessian
        H = {n: torch.zeros((m.in_features, m.in_features) if full else (m.in_features,), dtype=torch.float32, device=dev)
             for n, m in linears.items()}
        count = {n: 0 for n in linears}

        def make_hook(name):
            def hook(_m, inp, _out):
                x = inp[0].detach().reshape(-1, inp[0].shape[-1]).float()
                tot = count[name] + x.shape[0]
                H[name].mul_(count[name] / tot).add_((x.T @ x if full else (x * x).sum(0)) / tot)
                count[name] = tot
            return hook

        hooks = [m.register_forward_hook(make_hook(n)) for n, m in linears.items()]
        try:
            for hs, kw in cached:
                layer(hs, **kw)
        finally:
            for h in hooks:
                h.remove()
        for name, mod in linears.items():
            W = mod.weight.data
            if not full:  # diagonal-only methods (Wanda): H as a diagonal matrix
                H[name] = torch.diag(H[name])
            W_new = method.compress_weight(W.float(), H[name]).to(W.dtype)
            report.layers.append({"layer": li, "name": name, "numel": W.numel(),
                                  "zeros": int((W_new == 0).sum()), "error": layer_error(W, W_new, H[name]) if full else math.nan})
            mod.weight.data.copy_(W_new)
        new_cached = []
        for hs, kw in cached:
            out = layer(hs, **kw)
            new_cached.append((out[0] if isinstance(out, tuple) else out, kw))
        cached = new_cached
    report.seconds = time.perf_counter() - t0
    return report


def _compress_without_data(layers: nn.ModuleList, method: Compressor) -> CompressionReport:
    t0 = time.perf_counter()
    report = CompressionReport(method=method.describe(), n_calibration=0)
    for li, layer in enumerate(layers):
        for name, mod in layer.named_modules():
            if isinstance(mod, nn.Linear):
                W = mod.weight.data
                W_new = method.compress_weight(W.float(), None).to(W.dtype)
                report.layers.append({"layer": li, "name": name, "numel": W.numel(),
                                      "zeros": int((W_new == 0).sum()), "error": math.nan})
                mod.weight.data.copy_(W_new)
    report.seconds = time.perf_counter() - t0
    return report
