"""Seeded work that leaves the caller's random state as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Within the block, torch's generator on the CPU (and on ``device`` when it is a GPU) starts from ``seed``;
    after it, those generators are back where the caller left them. Other GPUs' generators are not touched."""
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield
