"""Optional dependencies of ``brittle.llm``: imported lazily, refused with one line naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import BrittleError

INSTALL = 'pip install "brittle[llm]"'


class MissingExtraError(BrittleError, ImportError):
    """An optional dependency of ``brittle.llm`` is not installed."""


def require(module: str) -> ModuleType:
    """Import ``module`` (``transformers``, ``peft``, ``gguf``) or raise a one-line error with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"brittle.llm needs the optional package '{module.split('.')[0]}' ({exc.__class__.__name__}: {exc})",
            f"{INSTALL}",
        ) from None


def available(module: str) -> bool:
    """True when ``module`` can be imported."""
    return importlib.util.find_spec(module) is not None
