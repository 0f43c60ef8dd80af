"""Optional dependencies of ``brittle.llm``: imported lazily, refused with one line naming the extra."""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator

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


@contextmanager
def transformers_progress_bars(enabled: bool) -> Iterator[None]:
    """Within the block, transformers' (and huggingface_hub's) tqdm bars are off unless ``enabled``.

    ``enabled=True`` changes nothing. Afterwards the previous on/off state of both libraries is restored, also
    on errors. Without transformers installed this does nothing.
    """
    if enabled or not available("transformers"):
        yield
        return
    import huggingface_hub.utils as hub
    from transformers.utils import logging as tlog

    was_on, hub_was_off = tlog.is_progress_bar_enabled(), hub.are_progress_bars_disabled()
    with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS=0 makes the hub warn (and keep its bars)
        warnings.simplefilter("ignore")
        tlog.disable_progress_bar()
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if was_on:
                tlog.enable_progress_bar()  # turns the hub's bars on as well
            if hub.are_progress_bars_disabled() != hub_was_off:
                (hub.disable_progress_bars if hub_was_off else hub.enable_progress_bars)()
