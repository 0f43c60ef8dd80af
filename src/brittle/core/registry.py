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


def init_param_names(cls: type) -> list[str]:
    """The keyword arguments ``cls(...)`` accepts: the named parameters of its ``__init__``, and of its bases'
    while an ``__init__`` passes ``**kwargs`` on (as `brittle.adaptation` methods do)."""
    import inspect

    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]  # drop self
        names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def check_params(label: str, params: Mapping[str, Any], accepted: Iterable[str]) -> None:
    """`InputError` naming the first of ``params`` that ``label`` does not take, and the ones it does."""
    known = list(accepted)
    bad = [k for k in params if k not in known]
    if bad:
        fix = f"use one of {', '.join(sorted(known))}" if known else f"{label} takes no parameters: drop {bad[0]!r}"
        raise InputError(f"{label} has no parameter {bad[0]!r}", fix)
