"""ε schedules for adversarial training: the budget as a function of the (fractional) epoch.

A schedule is called with ``t = epoch + batch / batches_per_epoch`` (0-based), so ramps interpolate per
iteration. `Automatic` also watches validation accuracy (`observe`) and starts its ramp on a plateau.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.validation import check_nonnegative
from ..errors import InputError

__all__ = [
    "SCHEDULES",
    "Automatic",
    "Constant",
    "FromCallable",
    "LinearWarmup",
    "Schedule",
    "TwoHinge",
    "make_schedule",
]


def _check_eps(eps: float) -> float:
    return check_nonnegative(eps)


class Schedule:
    """Base class: ``schedule(t) -> eps`` at fractional epoch ``t``; ``observe`` receives end-of-epoch metrics."""

    eps: float

    def __call__(self, t: float) -> float:
        raise NotImplementedError

    def observe(self, epoch: int, val_accuracy: float | None) -> None:
        """Called after each epoch (0-based) with the validation (or training) accuracy; stateless by default."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by `state_dict` (for resumed training)."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (for model cards and run records)."""
        return {"name": type(self).__name__.lower(), "eps": self.eps}


@dataclass
class Constant(Schedule):
    """ε from the first iteration on."""

    eps: float

    def __post_init__(self) -> None:
        self.eps = _check_eps(self.eps)

    def __call__(self, t: float) -> float:
        return self.eps


@dataclass
class TwoHinge(Schedule):
    """ε = 0 before epoch ``t1``, linear ramp to ``eps`` at ``t2``, constant after (``t1 <= t2``)."""

    eps: float
    t1: float = 0.0
    t2: float = 1.0

    def __post_init__(self) -> None:
        self.eps = _check_eps(self.eps)
        if not (math.isfinite(self.t1) and math.isfinite(self.t2)) or self.t1 < 0:
            raise InputError(f"schedule epochs must be finite and >= 0, got t1={self.t1}, t2={self.t2}",
                             "pass 0 <= t1 <= t2")
        if self.t1 > self.t2:
            raise InputError(f"two-hinge schedule has t1={self.t1} > t2={self.t2}",
                             "start the ramp (t1) before it ends (t2)")

    def __call__(self, t: float) -> float:
        if t < self.t1:
            return 0.0
        if t >= self.t2:
            return self.eps
        return self.eps * (t - self.t1) / (self.t2 - self.t1)

    def describe(self) -> dict[str, Any]:
        return {"name": "two-hinge", "eps": self.eps, "t1": self.t1, "t2": self.t2}


class LinearWarmup(TwoHinge):
    """Linear ramp from 0 at epoch 0 to ``eps`` at epoch ``warmup``, constant after."""

    def __init__(self, eps: float, warmup: float = 1.0):
        super().__init__(eps, 0.0, warmup)

    def describe(self) -> dict[str, Any]:
        return {"name": "linear", "eps": self.eps, "warmup": self.t2}


@dataclass
class Automatic(Schedule):
    """ε = 0 until validation accuracy plateaus, then a linear ramp over ``ramp`` epochs to ``eps``.

    A plateau: the best accuracy of the last ``patience`` epochs beats the best before them by less than
    ``min_delta``. The ramp starts at the next epoch boundary; ``max_wait`` epochs force the start.
    """

    eps: float
    ramp: float = 1.0
    patience: int = 1
    min_delta: float = 0.002
    max_wait: int = 5
    start: float | None = None
    _history: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.eps = _check_eps(self.eps)
        if self.ramp < 0 or self.patience < 1 or self.max_wait < 0:
            raise InputError("automatic schedule needs ramp >= 0, patience >= 1 and max_wait >= 0",
                             "pass e.g. Automatic(eps, ramp=2, patience=1)")

    def __call__(self, t: float) -> float:
        if self.start is None or t < self.start:
            return 0.0
        if self.ramp == 0 or t >= self.start + self.ramp:
            return self.eps
        return self.eps * (t - self.start) / self.ramp

    def observe(self, epoch: int, val_accuracy: float | None) -> None:
        if self.start is not None:
            return
        if val_accuracy is not None:
            self._history.append(float(val_accuracy))
        h = self._history
        plateau = len(h) > self.patience and max(h[-self.patience:]) - max(h[:-self.patience]) < self.min_delta
        if plateau or epoch + 1 >= self.max_wait:
            self.start = float(epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start, "history": list(self._history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = state.get("start")
        self._history = list(state.get("history", []))

    def describe(self) -> dict[str, Any]:
        return {"name": "auto", "eps": self.eps, "ramp": self.ramp, "patience": self.patience,
                "min_delta": self.min_delta, "max_wait": self.max_wait, "start": self.start}


@dataclass
class FromCallable(Schedule):
    """A user function ``epoch_float -> eps`` (values checked to be finite and >= 0 when called)."""

    fn: Callable[[float], float]
    eps: float = float("nan")

    def __call__(self, t: float) -> float:
        return _check_eps(self.fn(t))

    def describe(self) -> dict[str, Any]:
        return {"name": "callable", "fn": getattr(self.fn, "__name__", repr(self.fn))}


SCHEDULES = ("constant", "linear", "two-hinge", "auto")


def make_schedule(spec: str | Schedule | Callable[[float], float] | None, eps: float, epochs: int,
                  **options: float) -> Schedule:
    """A `Schedule` from a name, an instance, or a callable.

    Names and their defaults (``options`` override them): ``constant``; ``linear`` (``warmup`` = 30% of
    the epochs); ``two-hinge`` (``t1`` = 10%, ``t2`` = 40% of the epochs); ``auto`` (``ramp`` = 20% of the
    epochs, ``patience``, ``min_delta``, ``max_wait``).
    """
    if isinstance(spec, Schedule):
        return spec
    if spec is None:
        spec = "constant"
    if callable(spec):
        return FromCallable(spec)
    eps = _check_eps(eps)
    if spec == "constant":
        return Constant(eps)
    if spec in ("linear", "linear-warmup", "warmup"):
        return LinearWarmup(eps, float(options.get("warmup", 0.3 * epochs)))
    if spec in ("two-hinge", "two_hinge", "hinge"):
        return TwoHinge(eps, float(options.get("t1", 0.1 * epochs)), float(options.get("t2", 0.4 * epochs)))
    if spec in ("auto", "automatic"):
        return Automatic(eps, ramp=float(options.get("ramp", 0.2 * epochs)), patience=int(options.get("patience", 1)),
                         min_delta=float(options.get("min_delta", 0.002)), max_wait=int(options.get("max_wait", 5)))
    raise InputError(f"unknown eps schedule {spec!r}", f"use one of {SCHEDULES}, a Schedule or a callable epoch -> eps")
