"""Forward passes with gradients to the input, for the detectors that preprocess inputs (ODIN, Mahalanobis
with noise): hooks that keep the graph (`brittle.models.features.capture_many` detaches), and scoring a
whole dataset batch by batch through ``score_batch``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelError


@contextlib.contextmanager
def graph_hooks(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks keeping the autograd graph: ``holder[name]`` is the (batch, -1) output of ``name``."""
    from ..models.features import _first_tensor, resolve_layer

    holder: dict[str, torch.Tensor] = {}
    handles = []

    def make(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            t = _first_tensor(out)
            holder[name] = t.reshape(t.shape[0], -1)
        return hook

    try:
        for name in layers:
            handles.append(resolve_layer(model, name).register_forward_hook(make(name)))
        yield holder
    finally:
        for h in handles:
            h.remove()


def input_gradient(model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor],
                   layers: Sequence[str] = ()) -> torch.Tensor:
    """``∂ loss_fn(logits, layer_outputs) / ∂x`` for a batch (parameters get no gradient)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), graph_hooks(model, layers) as holder:
        logits = model(x)
        if not isinstance(logits, torch.Tensor):
            raise ModelError("the model does not return a logits tensor", "pass a model returning logits")
        missing = [n for n in layers if n not in holder]
        if missing:
            raise ModelError(f"layer {missing[0]!r} did not run during the forward pass", "pick a layer the model calls")
        loss = loss_fn(logits, holder)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def score_dataset(scorer: Any, model: nn.Module, data: Any, *, batch_size: int = 256,
                  device: str | torch.device | None = "auto") -> np.ndarray:
    """``scorer.score_batch(model, x)`` over every batch of ``data`` (float64, shape (N,)), in eval mode; the
    model is given back in the train/eval mode it came in (`brittle.models.loading.evaluation_mode`)."""
    from ..data.loading import as_data
    from ..models.loading import evaluation_mode, prepare_model, resolve_device

    d = as_data(data)
    dev = resolve_device(device)
    with evaluation_mode(model):
        net = prepare_model(model, device=dev, sample=d.x[:2], num_classes=d.num_classes)
        out = [scorer.score_batch(net, xb.to(dev)).detach().double().cpu() for _, xb, _ in d.batches(batch_size)]
    return torch.cat(out).numpy()
