"""The Ray side of `brittle.execution.executor.RayExecutor`: shards on Ray actors.

With ``backend="ray"`` the batches of a run are shards handed to ``workers`` Ray actors. Each actor receives
the model once (through the object store) and computes its shards with the run's batch function (e.g.
`brittle.margins.compute.batch_margins`), the same function and per-batch seeds as the local executor, so
per-sample results are identical. The driver commits every shard to the run store as soon as it finishes (in completion order): a dead worker or
a killed driver loses at most the shards in flight, and re-running resumes (committed shards are skipped,
whichever backend computed them). A shard whose worker died or raised an unexpected exception is retried
on a fresh actor up to ``max_retries`` times; a `BrittleError` raised by a worker (bad input or model) is
re-raised as is.

Ray is an optional extra: ``pip install 'brittle[ray]'``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.loading import Data
from ..errors import BrittleError, InputError
from .store import RunStore, concat_batches, keep_batch

BACKENDS = ("local", "ray")
#: how often one shard may fail (worker died, unexpected exception) before the run gives up
MAX_RETRIES = 2
INSTALL_HINT = "pip install 'brittle[ray]'"


class BackendError(BrittleError, RuntimeError):
    """The distributed backend could not finish a run (workers kept failing, cluster unreachable)."""


def check_backend(backend: Any, workers: Any, gpus_per_worker: Any, address: Any) -> None:
    """Raise `InputError` unless the backend settings are valid (Ray itself is imported only when used)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}", "use --backend local or --backend ray")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}", "pass e.g. --workers 2")
    try:
        gpus = float(gpus_per_worker)
    except (TypeError, ValueError):
        raise InputError(f"gpus_per_worker must be a number, got {gpus_per_worker!r}",
                         "pass e.g. --gpus-per-worker 1 (or 0.5 to share a GPU between two workers)") from None
    if not math.isfinite(gpus) or gpus < 0:
        raise InputError(f"gpus_per_worker must be >= 0, got {gpus_per_worker!r}", "pass e.g. --gpus-per-worker 1")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise InputError(f"address must be a Ray address, got {address!r}", "pass e.g. --address auto")
    if backend == "local" and (workers != 1 or gpus > 0 or address is not None):
        raise InputError("--workers, --gpus-per-worker and --address apply to the ray backend only",
                         "add --backend ray (or drop those options to run in this process)")
    if backend == "ray":
        import_ray()


def import_ray() -> Any:
    """The ``ray`` module, or `InputError` naming the install command."""
    try:
        import ray
    except ImportError:
        raise InputError("the ray backend needs Ray, which is not installed",
                         f"{INSTALL_HINT} (or use --backend local)") from None
    return ray


def worker_device(device: str | torch.device | None, gpus_per_worker: float) -> str:
    """The device Ray workers compute on: CUDA when they get GPUs, else the CPU."""
    wanted = "auto" if device is None else str(device)
    if wanted != "auto":
        from ..models.loading import resolve_device

        try:
            kind = torch.device(wanted).type
        except (RuntimeError, TypeError):
            resolve_device(wanted)  # raises its clear error for an unknown device
            raise
        if kind == "cuda" and gpus_per_worker <= 0:
            raise InputError("device cuda with the ray backend needs GPUs for the workers",
                             "pass --gpus-per-worker 1 (or a fraction), or --device cpu")
        if kind == "cpu" and gpus_per_worker > 0:
            raise InputError("--gpus-per-worker was given but --device is cpu", "use --device auto (or cuda)")
    return "cuda" if gpus_per_worker > 0 else "cpu"


# --------------------------------------------------------------------------------------------
# Shipping the model: pickled once into the object store; TorchScript modules travel as torch.jit archives
# --------------------------------------------------------------------------------------------

def _load_script(payload: bytes) -> torch.jit.ScriptModule:
    return torch.jit.load(io.BytesIO(payload), map_location="cpu")


def pack_model(model: nn.Module) -> bytes:
    """Serialise a (CPU) model for the workers; TorchScript parts are saved with `torch.jit.save`."""
    import ray.cloudpickle as cloudpickle

    class Pickler(cloudpickle.CloudPickler):
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, torch.jit.ScriptModule):
                buf = io.BytesIO()
                torch.jit.save(obj, buf)
                return _load_script, (buf.getvalue(),)
            return super().reducer_override(obj)

    buf = io.BytesIO()
    try:
        Pickler(buf, protocol=5).dump(model)
    except Exception as exc:  # noqa: BLE001 - any pickling failure of user code is reported in one line
        raise InputError(f"the model cannot be sent to Ray workers ({type(exc).__name__}: {exc})",
                         "use a picklable nn.Module, a TorchScript model, or --backend local") from None
    return buf.getvalue()


class ShardWorker:
    """A Ray actor's state: the model, loaded once, and the run's settings; computes one shard per call."""

    def __init__(self, model_blob: bytes, settings: Any, device: str, batch_fn: Callable[..., Any]):
        import pickle

        from ..models.loading import prepare_model, resolve_device

        self.settings = settings
        self.batch_fn = batch_fn
        self.error: BrittleError | None = None
        try:
            self.device = resolve_device(device)
            self.model = prepare_model(pickle.loads(model_blob), device=self.device)
        except BrittleError as exc:  # reported by the first shard, not retried
            self.error = exc

    def run(self, part: Data, batch: int) -> tuple[str, Any]:
        """``("ok", arrays)``, or ``("brittle", (error class, problem, fix))`` for a `BrittleError`."""
        try:
            if self.error is not None:
                raise self.error
            return "ok", self.batch_fn(self.model, part, batch, self.settings, self.device)
        except BrittleError as exc:
            return "brittle", (type(exc), exc.problem, exc.fix)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int, num_gpus: float) -> Iterator[Any]:
    """Ray, connected: to ``address``, to an already initialised Ray, or to a local instance started here
    (``num_cpus`` CPUs, servers on the loopback interface, no dashboard) and shut down on exit."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if address is not None:
            ray.init(address=address, log_to_driver=True)
        else:
            _init_local(ray, num_cpus, num_gpus)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types for an unreachable cluster
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise BackendError(f"could not connect to {where} ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                           "start the head node with `ray start --head` and pass --address auto "
                           "(or ray://HOST:10001)" if address else "check that Ray works: "
                           "python -c 'import ray; ray.init()'") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _init_local(ray: Any, num_cpus: int, num_gpus: float) -> None:
    """Start a single-node Ray instance bound to the loopback interface."""
    from ray._private import ray_constants

    # Ray advertises (and binds its servers on) the machine's external address unless clustering is off.
    old_env = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    old_flag = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=None if num_gpus > 0 else 0,
                 include_dashboard=False, log_to_driver=True, logging_level="WARNING")
    finally:
        if old_env is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = old_env
        if old_flag is not None:
            ray_constants.ENABLE_RAY_CLUSTER = old_flag


def _check_resources(ray: Any, workers: int, gpus_per_worker: float, strict: bool) -> None:
    """A warning when the cluster cannot hold all workers at once; when it cannot hold one, `InputError` if
    ``strict`` (a fixed-size cluster), else a warning (an autoscaling cluster may still grow)."""
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if (cpus < 1 or gpus < gpus_per_worker) and not strict:
        warnings.warn(f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs now, not enough for one worker "
                      f"(1 CPU, {gpus_per_worker:g} GPUs): waiting for it to grow", RuntimeWarning, stacklevel=3)
        return
    if cpus < 1 or gpus < gpus_per_worker:
        raise InputError(f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs: not enough for one worker "
                         f"(1 CPU, {gpus_per_worker:g} GPUs)",
                         "add nodes with GPUs, or lower --gpus-per-worker" if gpus < gpus_per_worker
                         else "add nodes to the cluster")
    fit = min(cpus, gpus / gpus_per_worker if gpus_per_worker > 0 else math.inf)
    if fit < workers:
        warnings.warn(f"the Ray cluster fits {int(fit)} of the {workers} workers at once; the others wait "
                      "for resources", RuntimeWarning, stacklevel=3)


def _failure_text(exc: BaseException) -> str:
    """One line on why a Ray task failed."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else 'no details'}"


def run_ray(model: nn.Module, data: Data, settings: Any, *, store: RunStore | None, job: str, workers: int,
            gpus_per_worker: float = 0.0, address: str | None = None, device: str | torch.device | None = "auto",
            max_retries: int = MAX_RETRIES,
            on_batch: Callable[[int, bool], None] | None = None,
            batch_fn: Callable[..., dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Compute every batch of ``data`` on Ray actors; like `brittle.execution.executor.run_batched`, committing each
    finished batch into ``store`` as it arrives and skipping batches already there.

    ``batch_fn(model, part, batch, settings, device) -> dict of arrays`` is the per-batch work (a module-level
    function, e.g. `brittle.margins.compute.batch_margins`); ``settings.batch_size`` sets the shard size.

    Returns all arrays concatenated in sample order.
    """
    gpus_per_worker = float(gpus_per_worker)
    dev = worker_device(device, gpus_per_worker)
    n, size = len(data), settings.batch_size
    bounds = [(start, min(start + size, n)) for start in range(0, n, size)]
    done = store.done(job) if store is not None else set()
    for batch in sorted(done):
        if batch < len(bounds) and on_batch:
            on_batch(bounds[batch][1] - bounds[batch][0], False)
    todo = deque(b for b in range(len(bounds)) if b not in done)
    results: dict[int, dict[str, np.ndarray]] = {}
    if todo:
        blob = pack_model(model)
        with ray_session(address, num_cpus=min(workers, len(todo)), num_gpus=gpus_per_worker) as ray:
            _check_resources(ray, min(workers, len(todo)), gpus_per_worker, strict=address is None)
            _drive(ray, blob, data, settings, dev, bounds, todo, min(workers, len(todo)), gpus_per_worker,
                   max_retries, store, job, results, on_batch, batch_fn)
    if store is not None:
        return store.gather(job)
    return concat_batches(results)


def _drive(ray: Any, blob: bytes, data: Data, settings: Any, device: str, bounds: list[tuple[int, int]],
           todo: deque[int], workers: int, gpus_per_worker: float, max_retries: int, store: RunStore | None,
           job: str, results: dict[int, dict[str, np.ndarray]],
           on_batch: Callable[[int, bool], None] | None, batch_fn: Callable[..., Any]) -> None:
    """The ``ray.wait`` loop: one shard in flight per actor, commits in completion order, bounded retries."""
    actor_class = ray.remote(ShardWorker).options(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=0)
    model_ref = ray.put(blob)
    settings_ref = ray.put(settings)
    actors = [actor_class.remote(model_ref, settings_ref, device, batch_fn) for _ in range(workers)]
    inflight: dict[Any, tuple[int, int]] = {}
    failures: dict[int, int] = {}

    def submit(slot: int) -> None:
        if todo:
            batch = todo.popleft()
            start, stop = bounds[batch]
            part = data.subset(slice(start, stop))
            part = replace(part, x=part.x.clone(), y=None if part.y is None else part.y.clone())  # not the whole storage
            inflight[actors[slot].run.remote(part, batch)] = (slot, batch)

    try:
        for slot in range(workers):
            submit(slot)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            slot, batch = inflight.pop(ready[0])
            try:
                status, value = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # the worker died, or raised something unexpected
                failures[batch] = failures.get(batch, 0) + 1
                start, stop = bounds[batch]
                if failures[batch] > max_retries:
                    raise BackendError(
                        f"shard {batch} (samples {start}..{stop - 1}) failed {failures[batch]} times on Ray "
                        f"workers; last failure: {_failure_text(exc)}",
                        "see the worker logs (ray logs, or /tmp/ray/session_latest/logs); finished shards are "
                        "saved, re-run the same command to resume") from None
                ray.kill(actors[slot], no_restart=True)
                actors[slot] = actor_class.remote(model_ref, settings_ref, device, batch_fn)
                todo.appendleft(batch)
                submit(slot)
                continue
            if status == "brittle":
                cls, problem, fix = value
                raise cls(problem, fix)
            start, stop = bounds[batch]
            keep_batch(store, results, job, batch, start, stop, value)
            if on_batch:
                on_batch(stop - start, True)
            submit(slot)
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
