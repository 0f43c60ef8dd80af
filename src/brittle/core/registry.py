"""Registries by name (scorers, detectors, combination strategies, stages, ...): one lookup with one error."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InputError


def import_builtins(modules: Iterable[str], package: str | None) -> None:
    """Import the modules whose import registers the built-in entries (lazily, to keep imports light)."""
    for module in modules:
        importlib.import_module(module, package)


def lookup(registry: Mapping[str, Any], name: Any, kind: str) -> Any:
    """``registry[name]``, or `InputError` naming the ``kind`` and the known names."""
    if not isinstance(name, str) or name not in registry:
        raise InputError(f"unknown {kind} {name!r}", f"use one of {sorted(registry)}")
    return registry[name]


def lookup_description(registry: Mapping[str, Any], d: Any, key: str, kind: str, fix: str) -> Any:
    """The class named by ``d[key]`` of a saved description, or `InputError` (the description is validated,
    never unpickled)."""
    if not isinstance(d, dict) or d.get(key) not in registry:
        raise InputError(f"not a known {kind} description: {str(d)[:80]!r}", fix)
    return registry[d[key]]
