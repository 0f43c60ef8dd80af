"""Feature hooks: layer names, capturing a layer's output, and logits + layer outputs in one forward pass.

Every scorer that needs hidden features (the pseudo-margin, the monitor, OOD detectors) goes through
`extract_features`, so features of several layers come from one pass over the data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.loading import as_data
from ..errors import InputError, ModelError
from .loading import check_logits, keeps_model_mode, prepare_model, resolve_device

@dataclass(init=False)
class Features:
    """Logits of every input and the flattened outputs of the hooked layers, from one forward pass.

    ``outputs`` maps a layer name (as in ``model.named_modules()``) to an ``(N, D)`` array. With one layer,
    ``layer`` / ``layer_output`` name and hold it (the form the pseudo-margin was written for).
    """

    logits: np.ndarray
    outputs: dict[str, np.ndarray]

    def __init__(self, logits: np.ndarray, layer: str | None = None, layer_output: np.ndarray | None = None, *,
                 outputs: dict[str, np.ndarray] | None = None):
        self.logits = logits
        self.outputs = dict(outputs or {})
        if layer is not None and layer_output is not None:
            self.outputs[layer] = layer_output

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def layer(self) -> str | None:
        """The hooked layer's name when exactly one layer was hooked, else None."""
        return next(iter(self.outputs)) if len(self.outputs) == 1 else None

    @property
    def layer_output(self) -> np.ndarray | None:
        return self.outputs[self.layer] if self.layer is not None else None

    @property
    def logit_margin(self) -> np.ndarray:
        """Top-1 minus runner-up logit."""
        top2 = -np.sort(-self.logits, axis=1)[:, :2]
        return top2[:, 0] - top2[:, 1]

    def output(self, layer: str) -> np.ndarray:
        """The output of ``layer``; `InputError` naming the hooked layers otherwise."""
        if layer not in self.outputs:
            raise InputError(f"these features hold no output of layer {layer!r} (hooked: {sorted(self.outputs) or 'none'})",
                             f"extract features with layers including {layer!r}")
        return self.outputs[layer]

    def select(self, layers: Sequence[str]) -> "Features":
        """The same features restricted to ``layers`` (no copy of the arrays)."""
        return Features(self.logits, outputs={name: self.output(name) for name in layers})

    def subset(self, idx: Any) -> "Features":
        return Features(self.logits[idx], outputs={k: v[idx] for k, v in self.outputs.items()})


def layer_names(model: nn.Module) -> list[str]:
    """Names accepted by ``layer=`` (those of ``model.named_modules()``, the model itself excluded)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule named ``layer`` (as in ``dict(model.named_modules())``); `InputError` listing names otherwise."""
    modules = dict(model.named_modules())
    if not isinstance(layer, str) or not layer or layer not in modules:
        names = layer_names(model)
        shown = ", ".join(repr(n) for n in names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
        raise InputError(f"the model has no layer {layer!r}; available: {shown or 'none (no submodules)'}",
                         "pass one of those names (see brittle.models.layer_names(model))")
    return modules[layer]


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    if isinstance(out, dict):
        for o in out.values():
            if isinstance(o, torch.Tensor):
                return o
    raise ModelError(f"the hooked layer returned {type(out).__name__}, not a tensor", "hook a layer that outputs a tensor")


@contextlib.contextmanager
def capture(module: nn.Module | None) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hook on ``module`` for the duration of the block: ``holder["out"]`` is its last output, flattened."""
    with capture_many({"out": module} if module is not None else {}) as holder:
        yield holder


@contextlib.contextmanager
def capture_many(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks on several modules: ``holder[name]`` is the last output of ``modules[name]``, flattened
    to ``(batch, -1)`` and detached (gradients do not flow through the hook's copy)."""
    holder: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            t = _first_tensor(out)
            holder[name] = t.detach().reshape(t.shape[0], -1)
        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield holder
    finally:
        for h in handles:
            h.remove()


def as_layer_list(layer: str | Sequence[str] | None) -> list[str]:
    """``None`` → ``[]``, a name → ``[name]``, a sequence → its distinct names in order."""
    if layer is None:
        return []
    if isinstance(layer, str):
        return [layer]
    return list(dict.fromkeys(layer))


@keeps_model_mode  # eval mode inside, the caller's mode afterwards
@torch.inference_mode()
def extract_features(model: nn.Module, data: Any, layer: str | Sequence[str] | None = None, *, batch_size: int = 512,
                     device: str | torch.device | None = "auto") -> Features:
    """Logits and (with ``layer``) the flattened output of one or several layers for every input, in one
    forward pass over the data.

    ``layer`` is a name from ``dict(model.named_modules())`` (e.g. the penultimate ``"4"`` of an
    ``nn.Sequential``) or a list of names; an unknown name raises `InputError` listing the available ones.
    Scorers that read several layers share this one pass (extract the union, then `Features.select`).
    """
    data = as_data(data)
    layers = as_layer_list(layer)
    modules = {name: resolve_layer(model, name) for name in layers}
    dev = resolve_device(device)
    prepared = prepare_model(model, device=dev, sample=data.x[:2], num_classes=data.num_classes)
    logits_out: list[torch.Tensor] = []
    layer_out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with capture_many(modules) as holder:
        for _, xb, _ in data.batches(batch_size):
            holder.clear()
            z = prepared(xb.to(dev))
            check_logits(z, len(xb), data.num_classes)
            logits_out.append(z.float().cpu())
            for name in layers:
                if name not in holder:
                    raise ModelError(f"layer {name!r} did not run during the forward pass",
                                     "pick a layer that the model's forward actually calls")
                if holder[name].shape[0] != len(xb):
                    raise ModelError(f"layer {name!r} output has batch size {holder[name].shape[0]}, not {len(xb)}",
                                     "pick a layer with one output row per input")
                layer_out[name].append(holder[name].float().cpu())
    return Features(torch.cat(logits_out).numpy(),
                    outputs={name: torch.cat(parts).numpy() for name, parts in layer_out.items()})
