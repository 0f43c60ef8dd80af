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
    "SCHEDULE_OPTIONS",
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

    def check_epochs(self, epochs: int) -> None:
        """Raise `InputError` when the schedule cannot reach its ε within ``epochs`` epochs (a run would then
        train with a smaller ε than asked, or with none at all); nothing to check by default."""


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

    def check_epochs(self, epochs: int) -> None:
        if self.eps > 0 and self.t1 >= epochs:
            raise InputError(f"the two-hinge ε schedule starts its ramp at epoch t1={self.t1:g}, but the run has "
                             f"{epochs} epoch(s): ε would stay 0 throughout (standard training)",
                             f"pass t1 < {epochs} and t2 <= {epochs} (--t1, --t2), or train for more epochs")
        if self.eps > 0 and self.t2 > epochs:
            raise InputError(f"the two-hinge ε schedule reaches ε={self.eps:g} at epoch t2={self.t2:g}, but the run "
                             f"has {epochs} epoch(s): ε would end at {self(epochs):.3g}",
                             f"pass t2 <= {epochs} (--t2), or train for at least {math.ceil(self.t2)} epochs")


class LinearWarmup(TwoHinge):
    """Linear ramp from 0 at epoch 0 to ``eps`` at epoch ``warmup``, constant after."""

    def __init__(self, eps: float, warmup: float = 1.0):
        super().__init__(eps, 0.0, warmup)

    def describe(self) -> dict[str, Any]:
        return {"name": "linear", "eps": self.eps, "warmup": self.t2}

    def check_epochs(self, epochs: int) -> None:
        if self.eps > 0 and self.t2 > epochs:
            raise InputError(f"the linear ε schedule reaches ε={self.eps:g} after warmup={self.t2:g} epochs, but "
                             f"the run has {epochs} epoch(s): ε would end at {self(epochs):.3g}",
                             f"pass warmup <= {epochs} (--warmup), or train for at least {math.ceil(self.t2)} epochs")


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

    def check_epochs(self, epochs: int) -> None:
        # the earliest start: the first possible plateau (after patience + 1 epochs) or the forced one (max_wait)
        earliest = min(max(self.max_wait, 1), self.patience + 1)
        if self.start is None and self.eps > 0 and earliest + self.ramp > epochs:
            raise InputError(f"the automatic ε schedule can start its ramp after epoch {earliest} at the earliest "
                             f"and ramps over {self.ramp:g} epoch(s), but the run has {epochs} epoch(s): "
                             f"ε={self.eps:g} would never be reached",
                             f"train for at least {math.ceil(earliest + self.ramp)} epochs, or use the linear or "
                             "two-hinge schedule")


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

#: The options each named schedule takes (`make_schedule`), by canonical name; its aliases take the same.
SCHEDULE_OPTIONS = {"constant": (), "linear": ("warmup",), "two-hinge": ("t1", "t2"),
                    "auto": ("ramp", "patience", "min_delta", "max_wait")}
_ALIASES = {"constant": "constant", "linear": "linear", "linear-warmup": "linear", "warmup": "linear",
            "two-hinge": "two-hinge", "two_hinge": "two-hinge", "hinge": "two-hinge", "auto": "auto",
            "automatic": "auto"}


_CLI_FLAGS = {"t1": "--t1", "t2": "--t2", "warmup": "--warmup"}


def _check_options(name: str | None, options: dict[str, Any]) -> None:
    """Refuse options the schedule ``name`` (None: a `Schedule` instance or a callable) does not take: they
    would be ignored silently."""
    takes = SCHEDULE_OPTIONS.get(name, ()) if name is not None else ()
    extra = [k for k in options if k not in takes]
    if not extra:
        return
    owners = sorted({s for k in extra for s, opts in SCHEDULE_OPTIONS.items() if k in opts})
    listed = ", ".join(f"{k} ({_CLI_FLAGS[k]})" if k in _CLI_FLAGS else k for k in extra)
    what = "option" if len(extra) == 1 else "options"
    verb = "does" if len(extra) == 1 else "do"
    if name is None:
        raise InputError(f"ε schedule {what} {listed} {verb} not apply to a Schedule instance or callable "
                         "(it carries its own settings)", "drop them, or pass the schedule by name")
    takes_text = f"it takes {', '.join(takes)}" if takes else "it takes no options"
    fix = (f"drop {'it' if len(extra) == 1 else 'them'}, or choose the schedule "
           f"{'it belongs' if len(extra) == 1 else 'they belong'} to ({', '.join(owners)}; --schedule)"
           if owners else f"use only {', '.join(takes)}" if takes else "drop them")
    raise InputError(f"ε schedule {what} {listed} {verb} not apply to the {name!r} schedule ({takes_text})", fix)


def make_schedule(spec: str | Schedule | Callable[[float], float] | None, eps: float, epochs: int,
                  **options: float) -> Schedule:
    """A `Schedule` from a name, an instance, or a callable, checked to reach its ε within ``epochs``.

    Names and their defaults (``options`` override them): ``constant``; ``linear`` (``warmup`` = 30% of
    the epochs); ``two-hinge`` (``t1`` = 10%, ``t2`` = 40% of the epochs; ``t1`` given alone: ``t2`` = ``t1`` + 30%
    of the epochs, at least 40% and at most all of them; ``t2`` alone: ``t1`` at most ``t2``); ``auto`` (``ramp`` = 20% of the
    epochs, ``patience``, ``min_delta``, ``max_wait``). An option the schedule does not take, and a schedule
    that cannot reach ε within ``epochs`` (two-hinge ``t1 >= epochs`` or ``t2 > epochs``, linear ``warmup >
    epochs``), raise `InputError`.
    """
    if isinstance(spec, Schedule) or (spec is not None and callable(spec)):
        _check_options(None, options)
        schedule = spec if isinstance(spec, Schedule) else FromCallable(spec)
        schedule.check_epochs(epochs)
        return schedule
    if spec is None:
        spec = "constant"
    name = _ALIASES.get(spec) if isinstance(spec, str) else None
    if name is None:
        raise InputError(f"unknown eps schedule {spec!r}",
                         f"use one of {SCHEDULES}, a Schedule or a callable epoch -> eps")
    _check_options(name, options)
    eps = _check_eps(eps)
    if name == "constant":
        schedule: Schedule = Constant(eps)
    elif name == "linear":
        schedule = LinearWarmup(eps, float(options.get("warmup", 0.3 * epochs)))
    elif name == "two-hinge":
        # defaults: the ramp from 10% to 40% of the epochs; a t1 or t2 given alone moves the other default so
        # that the ramp still fits (--t1 1 of 2 epochs ramps to 1.6, not to the default 0.8 before it)
        t1, t2 = options.get("t1"), options.get("t2")
        t1 = float(t1) if t1 is not None else min(0.1 * epochs, float(t2)) if t2 is not None else 0.1 * epochs
        if t2 is None:
            t2 = max(0.4 * epochs, t1 + 0.3 * epochs)
            t2 = min(t2, float(epochs)) if t1 < epochs else t2
        schedule = TwoHinge(eps, t1, float(t2))
    else:
        schedule = Automatic(eps, ramp=float(options.get("ramp", 0.2 * epochs)),
                             patience=int(options.get("patience", 1)),
                             min_delta=float(options.get("min_delta", 0.002)),
                             max_wait=int(options.get("max_wait", 5)))
    schedule.check_epochs(epochs)
    return schedule
