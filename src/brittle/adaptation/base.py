"""The base of every test-time adaptation method: what is adapted, the loss on the logits, one step, reset.

Settings are the constructor's arguments (stored as given, checked in `Adapter.fit`); everything learned
lives in fitted attributes ending in ``_``: ``model_`` (an adapted *copy* of the model — the model passed in
is never modified), ``layers_`` (the adapted parameter groups, see `brittle.adaptation.gate` for what a
layer is), ``optimizer_``, ``gate_`` (a fitted copy of the gate), ``n_samples_`` / ``n_steps_`` and
``updates_`` (per layer: the steps whose update was applied).

Use::

    adapter = Tent(lr=1e-3, gate="least").fit(model)
    for x in stream_batches:
        out = adapter.step(x)          # predictions on x (made before the update), then one update
    adapter.predict(x_clean)           # logits of the adapted model, changing nothing

Online adaptation is one `step` per incoming batch (any size down to 1: see `brittle.adaptation.norm` for
how BatchNorm normalises small batches); ``episodic=True`` resets the model to the source before every
batch (each batch adapted on its own: parameters, statistics, optimiser, gate and method state are not carried
over, while the counters ``n_samples_`` / ``n_steps_`` / ``updates_`` and the gate's ``accepted_`` keep counting
the whole stream).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BrittleError, InputError, ModelError
from .gate import LayerGate, make_gate
from .norm import batchnorm_layers, check_policy, convert_batchnorm, set_frozen

PARAM_GROUPS = ("bn", "all")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class StepOutput:
    """What one step saw and did."""

    logits: torch.Tensor          # (B, K), detached: the predictions made on the batch before the update
    loss: float                   # the adaptation loss (nan when the method has no loss)
    entropy: float                # mean prediction entropy on the batch (nats)
    updated: np.ndarray           # (layers,) bool: which layers' parameters changed
    cos: np.ndarray               # (layers,) float: gate alignment cos(u, u + TD) (nan without a gate)


def _check_number(name: str, value: Any, low: float, high: float = float("inf"), *, open_low: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        side, top = "(" if open_low else "[", "inf)" if high == float("inf") else f"{high:g}]"
        raise InputError(f"{name} must be a finite number in {side}{low:g}, {top}, got {value!r}",
                         f"pass {name} in that range" + (", e.g. lr=1e-3" if name == "lr" else ""))


class Adapter:
    """Base class: subclasses set `name`, `has_params` and implement `loss` (on the logits of a batch).

    Args:
        lr: learning rate of the optimiser.
        optimizer: ``"adam"`` (default, as TENT) or ``"sgd"``.
        momentum: SGD momentum.
        params: which parameters are adapted — ``"bn"`` (each BatchNorm layer's affine weight and bias: one
            layer per BatchNorm module) or ``"all"`` (every module with parameters is one layer).
        gate: ``None`` / ``"none"`` (update every layer), ``"least"`` (threshold mode), ``"least-single"``
            (single-layer mode) or a `LayerGate`.
        threshold, window, window_unit: the gate's λ, window s and its unit (when ``gate`` is a name).
        episodic: reset to the source model before every batch.
        bn_stats, bn_momentum: BatchNorm statistics policy and its per-sample EMA rate
            (`brittle.adaptation.norm`).
        steps: optimiser steps per batch (1 = one update per incoming batch, the online setting).
        device: where the adapted copy runs.
    """

    name = "base"
    has_params = True

    def __init__(self, *, lr: float = 1e-3, optimizer: str = "adam", momentum: float = 0.9, params: str = "bn",
                 gate: Any = None, threshold: float = 0.75, window: int = 20, window_unit: str = "samples",
                 episodic: bool = False, bn_stats: str = "auto", bn_momentum: float = 0.01, steps: int = 1,
                 device: str | torch.device = "cpu"):
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.params = params
        self.gate = gate
        self.threshold = threshold
        self.window = window
        self.window_unit = window_unit
        self.episodic = episodic
        self.bn_stats = bn_stats
        self.bn_momentum = bn_momentum
        self.steps = steps
        self.device = device

    # -- settings -------------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor's settings (JSON-friendly)."""
        keys = ("lr", "optimizer", "momentum", "params", "threshold", "window", "window_unit", "episodic",
                "bn_stats", "bn_momentum", "steps")
        out = {"method": self.name, **{k: getattr(self, k) for k in keys}}
        gate = make_gate(self.gate, threshold=self.threshold, window=self.window, window_unit=self.window_unit) \
            if self.has_params else None
        out["gate"] = None if gate is None else gate.get_params()
        out.update(self._extra_params())
        return out

    def _extra_params(self) -> dict[str, Any]:
        return {}

    def _validate(self) -> None:
        check_policy(self.bn_stats, self.bn_momentum)
        LayerGate(self.threshold, self.window, "threshold", self.window_unit)  # checked even when unused
        if not self.has_params:
            if self.gate not in (None, "none"):
                raise InputError(f"method {self.name!r} updates no parameters, so it cannot be gated",
                                 "use gate='none' (or tent, pl, shot-im with the gate)")
            return
        _check_number("lr", self.lr, 0.0)
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {self.optimizer!r}", f"use one of {', '.join(OPTIMIZERS)}")
        _check_number("momentum", self.momentum, 0.0, 1.0, open_low=False)
        if self.params not in PARAM_GROUPS:
            raise InputError(f"unknown parameter group {self.params!r}", f"use one of {', '.join(PARAM_GROUPS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 1:
            raise InputError(f"steps must be an integer >= 1, got {self.steps!r}", "pass e.g. steps=1")
        make_gate(self.gate, threshold=self.threshold, window=self.window, window_unit=self.window_unit)

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, model: nn.Module) -> "Adapter":
        """Prepare to adapt a copy of ``model`` (the model itself is left untouched)."""
        self._validate()
        if not isinstance(model, nn.Module):
            raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}",
                             "pass a model (e.g. brittle.load_model('standard_bn'))")
        from ..models.loading import resolve_device

        self.device_ = resolve_device(self.device)
        net = copy.deepcopy(model).to(self.device_).eval()
        bns = batchnorm_layers(net)
        if self.params == "bn" and self.has_params and not any(m.affine for _, m in bns):
            raise ModelError("the model has no BatchNorm layers with affine parameters to adapt",
                             "use params='all', or a model with BatchNorm such as the zoo's standard_bn")
        if not self.has_params and not bns:
            raise ModelError(f"method {self.name!r} re-estimates BatchNorm statistics but the model has no BatchNorm",
                             "use a model with BatchNorm such as the zoo's standard_bn")
        bn_ids = {id(m) for _, m in bns}
        groups: list[tuple[str, list[nn.Parameter]]] = []
        if self.has_params:
            for mname, mod in net.named_modules():
                own = list(mod.parameters(recurse=False))
                if own and (self.params == "all" or id(mod) in bn_ids):
                    groups.append((f"{mname or 'model'}:{type(mod).__name__}", own))
            if not groups:
                raise ModelError("the model has no parameters to adapt", "pass a model with parameters")
        convert_batchnorm(net, self.bn_stats, self.bn_momentum)
        net.requires_grad_(False)
        for _, ps in groups:
            for p in ps:
                p.requires_grad_(True)
        self.model_ = net
        self.layer_names_ = [g[0] for g in groups]
        self.layers_ = [g[1] for g in groups]
        self.source_state_ = {k: v.detach().clone() for k, v in net.state_dict().items()}
        self._init_state()
        return self

    def _init_state(self) -> None:
        params = [p for ps in self.layers_ for p in ps]
        if self.has_params:
            if self.optimizer == "adam":
                self.optimizer_: torch.optim.Optimizer | None = torch.optim.Adam(params, lr=self.lr)
            else:
                self.optimizer_ = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
        else:
            self.optimizer_ = None
        gate = make_gate(self.gate, threshold=self.threshold, window=self.window, window_unit=self.window_unit) \
            if self.has_params else None
        self.gate_: LayerGate | None = None if gate is None else copy.deepcopy(gate).start(self.layers_)
        self.n_samples_ = 0
        self.n_steps_ = 0
        self.updates_ = np.zeros(len(self.layers_), dtype=np.int64)
        self._reset_method_state()

    def _reset_method_state(self) -> None:
        """Subclasses with state of their own (e.g. a running class marginal) reset it here."""

    def reset(self) -> "Adapter":
        """Back to the source model: parameters, BatchNorm statistics, optimiser and gate state, and the
        counters (``n_samples_``, ``n_steps_``, ``updates_``)."""
        self._check_fitted()
        self.model_.load_state_dict(self.source_state_)
        self._init_state()
        return self

    def _reset_episode(self) -> None:
        """``episodic=True``, before each batch: `reset` the model, optimiser, gate and method state, but keep
        the counters of the stream (``n_samples_``, ``n_steps_``, ``updates_``, the gate's ``accepted_`` and
        ``resets_``)."""
        kept = (self.n_samples_, self.n_steps_, self.updates_.copy())
        gate = None if self.gate_ is None else (self.gate_.accepted_.copy(), self.gate_.resets_)
        self.reset()
        self.n_samples_, self.n_steps_, self.updates_ = kept
        if gate is not None and self.gate_ is not None:
            self.gate_.accepted_, self.gate_.resets_ = gate

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise InputError(f"{type(self).__name__} is not fitted", "call .fit(model) first")

    # -- the method -----------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """The adaptation loss on the logits of one batch (a scalar)."""
        raise NotImplementedError

    def _batch(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise InputError(f"a batch must be a torch tensor, got {type(x).__name__}", "pass x as a float tensor")
        if x.ndim < 2 or x.shape[0] < 1:
            raise InputError(f"a batch must have shape (B, ...) with B >= 1, got {tuple(x.shape)}",
                             "add a batch dimension, e.g. x[None]")
        if not torch.is_floating_point(x) or not bool(torch.isfinite(x).all()):
            raise InputError("a batch must hold finite floating-point values", "convert with x.float() and repair NaN/inf")
        return x.to(self.device_, torch.float32)

    def step(self, x: torch.Tensor) -> StepOutput:
        """Predict on ``x`` with the current model, then adapt on it (``steps`` optimiser steps)."""
        self._check_fitted()
        x = self._batch(x)
        if self.episodic:
            self._reset_episode()
        set_frozen(self.model_, False)
        updated = np.zeros(len(self.layers_), dtype=bool)
        cos = np.full(len(self.layers_), np.nan)
        if not self.has_params:
            with torch.no_grad():
                logits = self._forward(x)
            first_logits, loss_value = logits, float("nan")
        else:
            first_logits, loss_value = None, float("nan")
            for k in range(self.steps):
                if k > 0:
                    set_frozen(self.model_, True)  # statistics are updated once per batch
                logits, lv, upd, c = self._update(x)
                if first_logits is None:
                    first_logits, loss_value, cos = logits, lv, c
                updated |= upd
            set_frozen(self.model_, False)
        self.n_samples_ += int(x.shape[0])
        self.n_steps_ += 1
        self.updates_ += updated
        probs = torch.softmax(first_logits.float(), 1)
        entropy = float(-(probs * torch.log(probs.clamp_min(1e-12))).sum(1).mean())
        return StepOutput(first_logits.detach(), loss_value, entropy, updated, cos)

    def _update(self, x: torch.Tensor) -> tuple[torch.Tensor, float, np.ndarray, np.ndarray]:
        assert self.optimizer_ is not None
        gate = self.gate_
        if gate is not None:
            gate.maybe_reset()
        with torch.enable_grad():
            logits = self._forward(x)
            loss = self.loss(logits)
            self.optimizer_.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
        n = len(self.layers_)
        if gate is None:
            before = [LayerGate.flat(ps).clone() for ps in self.layers_]
            self.optimizer_.step()
            updated = np.array([not torch.equal(b, LayerGate.flat(ps)) for b, ps in zip(before, self.layers_)])
            cos = np.full(n, np.nan)
        else:
            before = [LayerGate.flat(ps).clone() for ps in self.layers_]
            saved = [[self._opt_state(p) for p in ps] for ps in self.layers_]
            self.optimizer_.step()
            after = [LayerGate.flat(ps) for ps in self.layers_]
            cos = gate.alignment(before, after)
            accept = gate.decide(cos)
            for i, ps in enumerate(self.layers_):
                if not accept[i]:
                    self._restore_layer(ps, before[i], saved[i])
            updated = np.array([bool(accept[i]) and not torch.equal(before[i], after[i]) for i in range(n)])
            gate.advance(int(x.shape[0]))
        return logits.detach(), float(loss.detach()), updated, cos

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The adapted model on a batch; a model that cannot take it is one `ModelError` line (`model_failure`)."""
        try:
            return self.model_(x)
        except BrittleError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a user model on the inputs
            raise model_failure(exc, x.shape[1:], "inputs") from None

    def _opt_state(self, p: nn.Parameter) -> dict[str, Any] | None:
        assert self.optimizer_ is not None
        st = self.optimizer_.state.get(p)
        if not st:
            return None
        return {k: (v.clone() if isinstance(v, torch.Tensor) else copy.copy(v)) for k, v in st.items()}

    @torch.no_grad()
    def _restore_layer(self, ps: list[nn.Parameter], flat: torch.Tensor, saved: list[dict[str, Any] | None]) -> None:
        assert self.optimizer_ is not None
        offset = 0
        for p, st in zip(ps, saved):
            k = p.numel()
            p.copy_(flat[offset:offset + k].view_as(p))
            offset += k
            if st is None:
                self.optimizer_.state.pop(p, None)
            else:
                self.optimizer_.state[p] = st

    # -- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Logits of the adapted model on ``x`` (on the CPU), changing nothing (statistics frozen)."""
        self._check_fitted()
        x = self._batch(x)
        set_frozen(self.model_, True)
        try:
            out = [self._forward(x[i:i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)]
        finally:
            set_frozen(self.model_, False)
        return torch.cat(out)

    def adapted_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapted model's state dict (the original architecture's keys), on the CPU."""
        self._check_fitted()
        return {k: v.detach().cpu().clone() for k, v in self.model_.state_dict().items()}

    # -- checkpoints ----------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to continue exactly where the adapter is (for crash-safe resumption)."""
        self._check_fitted()
        keep = {n for n, p in self.model_.named_parameters() if p.requires_grad}
        keep |= {n for n, _ in self.model_.named_buffers()}
        out: dict[str, np.ndarray] = {f"model/{k}": v.detach().cpu().numpy().copy()
                                      for k, v in self.model_.state_dict().items() if k in keep}
        out["counters"] = np.array([self.n_samples_, self.n_steps_], dtype=np.int64)
        out["updates"] = self.updates_.copy()
        if self.optimizer_ is not None:
            for i, p in enumerate(pp for ps in self.layers_ for pp in ps):
                for k, v in (self.optimizer_.state.get(p) or {}).items():
                    out[f"opt/{i}/{k}"] = (v.detach().cpu().numpy() if isinstance(v, torch.Tensor)
                                           else np.asarray(v))
        if self.gate_ is not None:
            out.update(self.gate_.state_arrays())
        out.update({f"method/{k}": v for k, v in self._method_state().items()})
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> "Adapter":
        self._check_fitted()
        state = dict(self.source_state_)
        state.update({k[len("model/"):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                      if k.startswith("model/")})
        self.model_.load_state_dict(state)
        self.n_samples_, self.n_steps_ = (int(v) for v in arrays["counters"])
        self.updates_ = np.asarray(arrays["updates"], dtype=np.int64).copy()
        if self.optimizer_ is not None:
            self.optimizer_.state.clear()
            for i, p in enumerate(pp for ps in self.layers_ for pp in ps):
                keys = [k for k in arrays if k.startswith(f"opt/{i}/")]
                if keys:
                    self.optimizer_.state[p] = {
                        k.split("/", 2)[2]: torch.from_numpy(np.array(arrays[k])).to(
                            "cpu" if k.endswith("/step") else self.device_) for k in keys}
        if self.gate_ is not None:
            self.gate_.load_state_arrays(arrays, self.device_)
        self._load_method_state({k[len("method/"):]: v for k, v in arrays.items() if k.startswith("method/")})
        return self

    def _method_state(self) -> dict[str, np.ndarray]:
        return {}

    def _load_method_state(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    def __repr__(self) -> str:
        p = self.get_params()
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in p.items() if k != "method") + ")"


def model_failure(exc: BaseException, shape: Any, what: str) -> ModelError:
    """The one-line `ModelError` for a model that fails on inputs of ``shape`` (per sample) — shared by
    `Adapter.step` / `Adapter.predict` and the stream's first check (`brittle.adaptation.stream`)."""
    from ..models.checkpoint import short_message

    text = short_message(exc, 160)
    return ModelError(f"the model fails on {what} of shape {tuple(shape)} ({type(exc).__name__}: {text})",
                      "pass data the model was built for")


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample Shannon entropy (nats) of the softmax of ``logits``."""
    logp = torch.log_softmax(logits, 1)
    return -(logp.exp() * logp).sum(1)
