"""Errors raised by brittle: each names the problem and the fix in one line."""

from __future__ import annotations


class BrittleError(Exception):
    """Base class of every error brittle raises on purpose.

    The message is one line: ``<problem>. Fix: <fix>``.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem.rstrip(".")
        self.fix = fix
        super().__init__(self.problem + "." + (f" Fix: {fix}" if fix else ""))


class InputError(BrittleError, ValueError):
    """The data, labels or a setting is invalid."""


class ModelError(BrittleError, ValueError):
    """The model cannot be loaded or does not behave like a classifier."""


class StoreError(BrittleError, RuntimeError):
    """A run directory cannot be used (different run, corrupt, unwritable)."""


class RunNotFoundError(StoreError, InputError):
    """The directory holds no finished run (an unusable run directory and an invalid input at once)."""
