"""The layer-wise gate of LEAST / GALA (Sahoo et al., arXiv 2404.03784; AAAI 2025).

Definitions used here (the paper leaves some of them to the implementation):

- **layer**: one group of adapted parameters — a module that owns parameters, e.g. one BatchNorm layer's
  affine ``weight`` and ``bias`` together (TENT's parameters), or with ``params="all"`` also each
  convolution / linear layer (its weight and bias). Its vector θ_l is the concatenation of its flattened
  parameters.
- **proposed update u_l**: the change the optimiser's step would make to θ_l on this batch,
  ``u_l = θ_l(after step) − θ_l(before step)``. For plain SGD that is ``−lr·g_l``; for SGD with momentum and
  for Adam it is the actual step, moments and bias correction included (the step is taken, measured, and
  undone where rejected).
- **anchor and total displacement**: θ_anchor is a copy of the parameters at the start of the current
  window; ``TD_l = θ_l − θ_anchor,l`` before the step.
- **alignment**: ``cos_l = <u_l, u_l + TD_l> / (|u_l| |u_l + TD_l|)``: whether the update keeps going the
  way the layer has moved in this window. When ``TD_l = 0`` (first step of a window) ``cos_l = 1`` exactly;
  when ``u_l = 0`` or ``u_l + TD_l = 0`` it is taken as 0.
- **threshold mode** (``mode="threshold"``): every layer with ``cos_l > λ`` keeps its update; the others are
  reset to their value before the step, optimiser state included (bit-identical, as if they had no step).
  ``λ = −1`` keeps every update (plain test-time adaptation).
- **single-layer mode** (``mode="single"``): only the layer with the largest ``cos_l`` (the first one on
  ties) keeps its update, and only if ``cos_l > λ``; if none passes the sample changes nothing.
- **window**: the anchor is reset (to the current parameters) before a step once ``window`` samples have
  been seen since the last reset (``window_unit="samples"``, the paper's per-sample definition; with batches
  of ``B >= window`` samples that is every step, and the gate then only acts in single-layer mode), or
  every ``window`` steps (``window_unit="steps"``). Defaults: ``window = 20``, ``λ = 0.75``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError

GATE_MODES = ("threshold", "single")
WINDOW_UNITS = ("samples", "steps")


class LayerGate:
    """Gate each layer's update by its alignment with the layer's displacement in the current window.

    Args:
        threshold: λ in ``[-1, 1]``; an update passes when ``cos > λ``.
        window: samples (or steps) between anchor resets, ``>= 1``.
        mode: ``"threshold"`` (every layer that passes) or ``"single"`` (only the most aligned layer).
        window_unit: ``"samples"`` or ``"steps"``.

    Fitted attributes (set by `start`): ``anchor_`` (one flat tensor per layer), ``since_reset_`` (samples or
    steps since the anchor was set), ``resets_`` (how many resets, the first included), ``last_cos_`` and
    ``last_accept_`` (of the last step), ``accepted_`` (per layer: steps whose update was kept).
    """

    def __init__(self, threshold: float = 0.75, window: int = 20, mode: str = "threshold",
                 window_unit: str = "samples"):
        self.threshold = threshold
        self.window = window
        self.mode = mode
        self.window_unit = window_unit
        self.validate()

    def validate(self) -> "LayerGate":
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not -1.0 <= float(t) <= 1.0:
            raise InputError(f"gate threshold must be a number in [-1, 1], got {t!r}", "pass e.g. threshold=0.75")
        if isinstance(self.window, bool) or not isinstance(self.window, (int, np.integer)) or self.window < 1:
            raise InputError(f"gate window must be an integer >= 1, got {self.window!r}", "pass e.g. window=20")
        if self.mode not in GATE_MODES:
            raise InputError(f"unknown gate mode {self.mode!r}", f"use one of {', '.join(GATE_MODES)}")
        if self.window_unit not in WINDOW_UNITS:
            raise InputError(f"unknown gate window unit {self.window_unit!r}", f"use one of {', '.join(WINDOW_UNITS)}")
        return self

    def get_params(self) -> dict[str, Any]:
        return {"threshold": float(self.threshold), "window": int(self.window), "mode": self.mode,
                "window_unit": self.window_unit}

    def __repr__(self) -> str:
        return "LayerGate(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    # -- state --------------------------------------------------------------------------------
    def start(self, layers: list[list[torch.nn.Parameter]]) -> "LayerGate":
        """Begin gating ``layers`` (lists of parameters): the anchor is set at the first step."""
        self.validate()
        self.layers_ = layers
        self.anchor_: list[torch.Tensor] | None = None
        self.since_reset_ = 0
        self.resets_ = 0
        self.accepted_ = np.zeros(len(layers), dtype=np.int64)
        self.last_cos_ = np.full(len(layers), np.nan)
        self.last_accept_ = np.zeros(len(layers), dtype=bool)
        return self

    @staticmethod
    def flat(params: list[torch.nn.Parameter]) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in params])

    def maybe_reset(self) -> bool:
        """Reset the anchor to the current parameters when the window is over (or not yet set)."""
        if self.anchor_ is None or self.since_reset_ >= self.window:
            self.anchor_ = [self.flat(ps).clone() for ps in self.layers_]
            self.since_reset_ = 0
            self.resets_ += 1
            return True
        return False

    def advance(self, n_samples: int) -> None:
        self.since_reset_ += n_samples if self.window_unit == "samples" else 1

    # -- the decision -------------------------------------------------------------------------
    def alignment(self, before: list[torch.Tensor], after: list[torch.Tensor]) -> np.ndarray:
        """``cos(u, u + TD)`` per layer from the flat parameters before and after the proposed step."""
        assert self.anchor_ is not None
        cos = np.zeros(len(before))
        for i, (b, a, anc) in enumerate(zip(before, after, self.anchor_)):
            u = (a - b).double()
            td = (b - anc).double()
            nu = float(u.norm())
            if nu == 0.0:
                continue
            if not bool(td.any()):
                cos[i] = 1.0
                continue
            v = u + td
            nv = float(v.norm())
            cos[i] = 0.0 if nv == 0.0 else float(torch.clamp(torch.dot(u, v) / (nu * nv), -1.0, 1.0))
        return cos

    def decide(self, cos: np.ndarray) -> np.ndarray:
        """Which layers keep their update."""
        lam = float(self.threshold)
        if self.mode == "threshold":
            accept = cos > lam
        else:
            accept = np.zeros(len(cos), dtype=bool)
            best = int(np.argmax(cos))
            accept[best] = cos[best] > lam
        self.last_cos_, self.last_accept_ = cos, accept
        self.accepted_ += accept
        return accept

    # -- checkpoints --------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {"gate/since_reset": np.asarray(self.since_reset_), "gate/resets": np.asarray(self.resets_),
               "gate/accepted": self.accepted_.copy(), "gate/has_anchor": np.asarray(self.anchor_ is not None)}
        for i, a in enumerate(self.anchor_ or []):
            out[f"gate/anchor/{i}"] = a.cpu().numpy()
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray], device: torch.device) -> None:
        self.since_reset_ = int(arrays["gate/since_reset"])
        self.resets_ = int(arrays["gate/resets"])
        self.accepted_ = np.asarray(arrays["gate/accepted"], dtype=np.int64).copy()
        if bool(arrays["gate/has_anchor"]):
            self.anchor_ = [torch.from_numpy(np.array(arrays[f"gate/anchor/{i}"])).to(device)
                            for i in range(len(self.layers_))]
        else:
            self.anchor_ = None


def make_gate(gate: Any, *, threshold: float = 0.75, window: int = 20, mode: str | None = None,
              window_unit: str = "samples") -> LayerGate | None:
    """``None`` / ``"none"`` → no gate; ``"least"`` → threshold mode; ``"least-single"`` (or ``"single"``) →
    single-layer mode; a `LayerGate` is used as it is."""
    if gate is None or gate == "none":
        return None
    if isinstance(gate, LayerGate):
        return gate.validate()
    names = {"least": "threshold", "threshold": "threshold", "least-single": "single", "single": "single"}
    if gate not in names:
        raise InputError(f"unknown gate {gate!r}", "use none, least (threshold mode) or least-single")
    return LayerGate(threshold=threshold, window=window, mode=mode or names[gate], window_unit=window_unit)
