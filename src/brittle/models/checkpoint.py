"""Checkpoints: reading state dicts safely (``weights_only=True``, never unpickling code) and loading them into
a model with one-line errors. Below both `brittle.models.loading` and the zoo, so neither imports the other
for this."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError

#: Set on models whose training input range is known (the zoo: from the card); `check_input_scale` uses it.
INPUT_DOMAIN_ATTR = "brittle_input_domain"


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state-dict checkpoint safely (``weights_only=True``).

    Accepts a plain state dict or a dict holding one under ``state_dict`` / ``model`` / ``model_state_dict``.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"checkpoint {path} does not exist", "check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"checkpoint {path} contains pickled code or objects, refused unexecuted "
                         f"({str(exc).splitlines()[0][:120]})",
                         "save only tensors: torch.save(model.state_dict(), path)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelError(f"checkpoint {path} is corrupt or not a torch file ({str(exc).splitlines()[0][:120]})",
                         "re-save it with torch.save(model.state_dict(), path)") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"checkpoint {path} does not hold a state dict of tensors",
                         "save torch.save(model.state_dict(), path)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise ModelError(f"weights in {source} do not fit the model: {' '.join(first[:2])[:200]}",
                         "use the factory that built the checkpoint") from None
    return model


