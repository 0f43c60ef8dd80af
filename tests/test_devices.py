"""Device handling without a GPU: "auto" follows CUDA inputs, and a mismatch is refused by naming the devices."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from brittle.errors import ModelError
from brittle.margins.input import margins_for_batch
from brittle.models.loading import device_mismatch_error, prepare_model, resolve_device


def test_auto_follows_inputs_held_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_gpu = types.SimpleNamespace(device=torch.device("cuda", 1))  # stands for a CUDA tensor
    assert resolve_device("auto", like=on_gpu) == torch.device("cuda", 1)
    assert resolve_device("auto", like=torch.zeros(1)).type == "cuda"  # CPU data: CUDA when available
    assert resolve_device("cpu", like=on_gpu) == torch.device("cpu")  # an explicit device wins


def test_auto_on_a_cpu_machine_stays_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", like=torch.zeros(1)) == torch.device("cpu")


def test_model_on_another_device_than_the_batch_is_refused_by_name() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).to("meta")  # "meta" stands for another device
    with pytest.raises(ModelError) as info:
        margins_for_batch(model, torch.rand(5, 4))
    text = str(info.value)
    assert "device mismatch" in text and "cpu" in text and "meta" in text and "shape" not in text
    assert device_mismatch_error(nn.Linear(2, 2), torch.device("cpu")) is None


class _Unregistered(nn.Module):
    """Holds a tensor outside parameters and buffers, which model.to(device) does not move."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.offset = torch.zeros(3, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.offset


def test_unregistered_tensor_on_another_device_is_named_not_blamed_on_the_shape() -> None:
    with pytest.raises(ModelError) as info:
        prepare_model(_Unregistered(), device="cpu", sample=torch.rand(2, 4))
    text = str(info.value)
    assert "device" in text and "shape" not in text.split("(")[0]
