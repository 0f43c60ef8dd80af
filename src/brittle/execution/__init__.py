"""Execution: the run store (crash-safe, resumable) and the executors that compute batches (local, Ray)."""

from .._lazy import lazy_exports

_EXPORTS = {"Executor": ".executor", "LocalExecutor": ".executor", "RayExecutor": ".executor",
            "make_executor": ".executor", "RunStore": ".store"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
