"""Checkpoints: reading state dicts safely (``weights_only=True``, never unpickling code) and loading them into
a model with one-line errors. Below both `brittle.models.loading` and the zoo, so neither imports the other
for this."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError

#: Set on models whose training input range is known (the zoo: from the card); `check_input_scale` uses it.
INPUT_DOMAIN_ATTR = "brittle_input_domain"


def short_message(exc: BaseException | str, limit: int = 120) -> str:
    """The first non-empty line of an exception's (or a text's) message, at most ``limit`` characters: cut after
    its last full sentence that fits, else at a word boundary (with "…"); for quoting a library's message in a
    one-line error. Empty when there is none."""
    text = str(exc)
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if len(line) <= limit:
        return line
    sentence = line[:limit].rfind(". ")
    if sentence > limit // 3:
        return line[:sentence + 1]
    cut = line[:limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:(") + "…"


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_REFUSED_OBJECT = ("unrecognized function", "Can only create new object", "Can only build")


def refused_global(exc: BaseException) -> str | None:
    """What torch's weights-only unpickler refused to load, when it failed on a global (a class or function
    that unpickling would import and run): its dotted name, ``"an object"`` when unnamed, else ``None`` (the file
    failed for another reason: empty, truncated, not a pickle)."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    text = f"{exc}\n{exc.__context__ or ''}"  # torch puts the unpickler's reason in the context or the message
    found = _GLOBAL.search(text)
    if found:
        return found.group(1)
    return "an object" if any(marker in text for marker in _REFUSED_OBJECT) else None


def _corrupt_reason(path: Path, exc: BaseException) -> str:
    """Why ``path`` is not a readable torch file, in a few words (torch's own words where they say it)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError:
        head = b""
    if not head:
        return "the file is empty"
    is_zip, is_pickle = head.startswith(b"PK"), head[0] == 0x80  # torch's zip format / a pickle (legacy format)
    if not (is_zip or is_pickle):
        return "neither a torch zip archive nor a pickle"
    inner = exc.__context__ if isinstance(exc, pickle.UnpicklingError) and exc.__context__ is not None else exc
    if isinstance(inner, (RuntimeError, pickle.UnpicklingError)) and short_message(inner):
        return short_message(inner)
    return "a damaged zip archive" if is_zip else "a damaged or truncated pickle"


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state-dict checkpoint safely (``weights_only=True``).

    Accepts a plain state dict or a dict holding one under ``state_dict`` / ``model`` / ``model_state_dict``.
    A file whose unpickling needs a class or function (pickled code or objects) is refused unexecuted; any other
    unreadable file (empty, text, random bytes, truncated) is reported as corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"checkpoint {path} does not exist", "check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ModelError(f"checkpoint {path} cannot be read ({exc.strerror or type(exc).__name__})",
                         "check the path and the file's permissions") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types on a file that is not a checkpoint
        needed = refused_global(exc)
        if needed is not None:
            raise ModelError(f"checkpoint {path} contains pickled code or objects, refused unexecuted (it needs "
                             f"{needed})", "save only tensors: torch.save(model.state_dict(), path)") from None
        raise ModelError(f"checkpoint {path} is corrupt or not a torch file ({_corrupt_reason(path, exc)})",
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
        first = " ".join(line.strip() for line in str(exc).splitlines()[:2])
        raise ModelError(f"weights in {source} do not fit the model: {short_message(first, 200)}",
                         "use the factory that built the checkpoint") from None
    return model


