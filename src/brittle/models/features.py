"""Feature hooks: layer names, capturing a layer's output, and logits + layer outputs in one forward pass.

Every scorer that needs hidden features (the pseudo-margin, the monitor, OOD detectors) goes through
`extract_features`, so features of several layers come from one pass over the data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.loading import as_data
from ..errors import InputError, ModelError
from .loading import check_logits, prepare_model, resolve_device

@dataclass
class Features:
    """Logits of every input and, when a layer was named, that layer's flattened output."""

    logits: np.ndarray
    layer: str | None = None
    layer_output: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def logit_margin(self) -> np.ndarray:
        """Top-1 minus runner-up logit."""
        top2 = -np.sort(-self.logits, axis=1)[:, :2]
        return top2[:, 0] - top2[:, 1]

    def subset(self, idx: Any) -> "Features":
        return Features(self.logits[idx], self.layer, None if self.layer_output is None else self.layer_output[idx])


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
    holder: dict[str, torch.Tensor] = {}
    if module is None:
        yield holder
        return

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        t = _first_tensor(out)
        holder["out"] = t.detach().reshape(t.shape[0], -1)

    handle = module.register_forward_hook(hook)
    try:
        yield holder
    finally:
        handle.remove()


@torch.inference_mode()
def extract_features(model: nn.Module, data: Any, layer: str | None = None, *, batch_size: int = 512,
                     device: str | torch.device | None = "auto") -> Features:
    """Logits and (with ``layer``) that layer's flattened output for every input, in one forward pass each.

    ``layer`` is a name from ``dict(model.named_modules())`` (e.g. the penultimate ``"4"`` of an
    ``nn.Sequential``); an unknown name raises `InputError` listing the available ones.
    """
    data = as_data(data)
    module = resolve_layer(model, layer) if layer is not None else None
    dev = resolve_device(device)
    prepared = prepare_model(model, device=dev, sample=data.x[:2], num_classes=data.num_classes)
    logits_out, layer_out = [], []
    with capture(module) as holder:
        for _, xb, _ in data.batches(batch_size):
            holder.clear()
            z = prepared(xb.to(dev))
            check_logits(z, len(xb), data.num_classes)
            logits_out.append(z.float().cpu())
            if module is not None:
                if "out" not in holder:
                    raise ModelError(f"layer {layer!r} did not run during the forward pass",
                                     "pick a layer that the model's forward actually calls")
                if holder["out"].shape[0] != len(xb):
                    raise ModelError(f"layer {layer!r} output has batch size {holder['out'].shape[0]}, not {len(xb)}",
                                     "pick a layer with one output row per input")
                layer_out.append(holder["out"].float().cpu())
    return Features(torch.cat(logits_out).numpy(), layer,
                    torch.cat(layer_out).numpy() if module is not None else None)


