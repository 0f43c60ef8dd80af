"""Executors: who computes the batches of a run — this process (`LocalExecutor`) or Ray actors (`RayExecutor`).

One contract for both: ``run(model, data, settings, batch_fn, store=, job=, device=, on_batch=)`` calls
``batch_fn(model, part, batch, settings, device) -> dict of arrays`` for every batch of ``data`` (batches of
``settings.batch_size`` samples), commits each finished batch into the run store when one is given, skips
batches the store already holds (resume), and returns all arrays concatenated in sample order.

``batch_fn`` is passed explicitly (a module-level function, so Ray can ship it) and every batch draws its
randomness from `batch_seed`, so results do not depend on which executor, process or order computed a batch:
a run started with one executor resumes with the other.

Build one with `make_executor` (``backend``, ``workers``, ``gpus_per_worker``, ``address`` and, when given,
``device`` are validated there) and pass it as ``executor=``. `Executor.prepare` checks what needs the cluster
(the connection to ``address``, its resources; for a local Ray instance the GPUs of this machine) and is called
by the audit and `compute_margins` before the run's store exists: every refusal comes before any run directory,
store or worker exists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..data.loading import Data
from .store import RunStore, concat_batches, keep_batch

#: ``batch_fn(model, part, batch, settings, device) -> {name: array}``, one row per sample of ``part``
BatchFn = Callable[[nn.Module, Data, int, Any, torch.device], dict[str, np.ndarray]]
#: ``on_batch(samples, recomputed)`` reports progress (``recomputed`` False: taken from the store)
OnBatch = Callable[[int, bool], None]


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch number ``batch`` of a run seeded with ``seed`` (the same on every executor)."""
    return int(seed) * 100_003 + int(batch)


class Executor(ABC):
    """Computes the batches of a run (see the module docstring for the contract)."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, model: nn.Module, data: Data, settings: Any, batch_fn: BatchFn, *, store: RunStore | None,
            job: str, device: str | torch.device | None = "auto",
            on_batch: OnBatch | None = None) -> dict[str, np.ndarray]:
        """Every batch of ``data`` through ``batch_fn``; arrays concatenated in sample order."""

    def prepare(self, device: str | torch.device | None = "auto") -> None:
        """Check, before the run's store is created, what can be checked of where the batches will run (called by
        `brittle.audit` and `brittle.compute_margins` after the model and data checks); nothing to check for
        this process."""

    def close(self) -> None:
        """Release what `prepare` opened if `run` did not follow (`run` releases it itself)."""

    def driver_device(self, device: str | torch.device | None) -> torch.device:
        """Where the driver prepares and checks the model before the run."""
        from ..models.loading import resolve_device

        return resolve_device(device)

    def describe(self, device: str | torch.device | None) -> str:
        """A few words for progress bars and run metadata."""
        return str(self.driver_device(device))


@dataclass(frozen=True)
class LocalExecutor(Executor):
    """Batches computed one after the other in this process."""

    name: ClassVar[str] = "local"

    def run(self, model: nn.Module, data: Data, settings: Any, batch_fn: BatchFn, *, store: RunStore | None,
            job: str, device: str | torch.device | None = "auto",
            on_batch: OnBatch | None = None) -> dict[str, np.ndarray]:
        dev = self.driver_device(device)
        size = settings.batch_size

        def compute(start: int, stop: int) -> dict[str, np.ndarray]:
            return batch_fn(model, data.subset(slice(start, stop)), start // size, settings, dev)

        return run_batched(store, job, len(data), size, compute, on_batch)


@dataclass(frozen=True)
class RayExecutor(Executor):
    """Batches as shards on ``workers`` Ray actors (``gpus_per_worker`` GPUs each) of the cluster at
    ``address`` (default: a local Ray instance started for the run); see `brittle.execution.ray`."""

    workers: int = 1
    gpus_per_worker: float = 0.0
    address: str | None = None
    max_retries: int = 2
    name: ClassVar[str] = "ray"
    #: what `prepare` checked and the connection it opened, for the next `run`
    _session: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def prepare(self, device: str | torch.device | None = "auto") -> None:
        """The device against ``gpus_per_worker``, the connection to ``address`` (within
        `brittle.execution.ray.CONNECT_TIMEOUT_S`; kept open for `run`) and the cluster's resources, or without
        ``address`` the GPUs of this machine for the local Ray instance `run` starts: a refusal comes before the
        run directory exists."""
        from .ray import prepare_ray

        prepare_ray(self._session, workers=self.workers, gpus_per_worker=self.gpus_per_worker,
                    address=self.address, device=device)

    def close(self) -> None:
        from .ray import close_session

        close_session(self._session)

    def run(self, model: nn.Module, data: Data, settings: Any, batch_fn: BatchFn, *, store: RunStore | None,
            job: str, device: str | torch.device | None = "auto",
            on_batch: OnBatch | None = None) -> dict[str, np.ndarray]:
        from .ray import run_ray

        return run_ray(model, data, settings, store=store, job=job, workers=self.workers,
                       gpus_per_worker=self.gpus_per_worker, address=self.address, device=device,
                       max_retries=self.max_retries, on_batch=on_batch, batch_fn=batch_fn, session=self._session)

    def driver_device(self, device: str | torch.device | None) -> torch.device:
        return torch.device("cpu")  # the driver only checks the model; workers compute

    def describe(self, device: str | torch.device | None) -> str:
        from .ray import worker_device

        return f"ray: {self.workers} workers ({worker_device(device, self.gpus_per_worker)})"


def make_executor(backend: str = "local", *, workers: int = 1, gpus_per_worker: float = 0.0,
                  address: str | None = None, device: str | torch.device | None = None) -> Executor:
    """An executor from the CLI-style settings, validated (Ray is imported only to check it is installed).

    With ``device`` (the run's device), a conflict with the Ray settings is refused here as well: ``cpu`` with
    ``gpus_per_worker > 0``, ``cuda`` without GPUs for the workers. What needs the cluster (connecting to
    ``address``, its resources) is checked by `Executor.prepare`, before the run's store exists."""
    from .ray import check_backend

    check_backend(backend, workers, gpus_per_worker, address, device)
    if backend == "local":
        return LocalExecutor()
    return RayExecutor(workers=int(workers), gpus_per_worker=float(gpus_per_worker), address=address)


def as_executor(executor: Executor | str | None) -> Executor:
    """``None`` / ``"local"`` → `LocalExecutor`, ``"ray"`` → a one-worker `RayExecutor`, an executor as is."""
    if executor is None:
        return LocalExecutor()
    if isinstance(executor, Executor):
        return executor
    if isinstance(executor, str):
        return make_executor(executor)
    from ..errors import InputError

    raise InputError(f"executor must be an Executor or 'local'/'ray', got {type(executor).__name__}",
                     "pass brittle.execution.make_executor('ray', workers=4), or leave it out to run locally")


def run_batched(store: RunStore | None, job: str, n: int, batch_size: int,
                compute: Callable[[int, int], dict[str, np.ndarray]],
                on_batch: OnBatch | None = None) -> dict[str, np.ndarray]:
    """Compute ``compute(start, stop)`` for every batch of ``range(n)``, committing each into ``store``.

    Batches already committed are skipped (resume). ``on_batch(samples, recomputed)`` reports progress.
    Returns all arrays concatenated in sample order.
    """
    done = store.done(job) if store is not None else set()
    results: dict[int, dict[str, np.ndarray]] = {}
    for batch, start in enumerate(range(0, n, batch_size)):
        stop = min(start + batch_size, n)
        if batch in done:
            if on_batch:
                on_batch(stop - start, False)
            continue
        keep_batch(store, results, job, batch, start, stop, compute(start, stop))
        if on_batch:
            on_batch(stop - start, True)
    if store is not None:
        return store.gather(job)
    return concat_batches(results)


