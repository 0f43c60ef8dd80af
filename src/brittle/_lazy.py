"""Lazy attribute exports for packages, so ``import brittle`` loads no heavy module until a name is used."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str],
                 subpackages: tuple[str, ...] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``exports`` maps a public name to the submodule (relative to ``package``) that defines it;
    ``subpackages`` are imported on first attribute access (``brittle.ood`` after ``import brittle``).

    Returns ``(__getattr__, __dir__)`` for the package's module namespace (PEP 562).
    """

    def __getattr__(name: str) -> Any:
        if name in subpackages:
            return importlib.import_module(f".{name}", package)
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        return value

    def __dir__() -> list[str]:
        return sorted({*exports, *subpackages})

    return __getattr__, __dir__
