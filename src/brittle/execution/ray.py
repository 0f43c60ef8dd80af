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


def check_backend(backend: Any, workers: Any, gpus_per_worker: Any, address: Any, device: Any = None) -> None:
    """Raise `InputError` unless the backend settings are valid (Ray itself is imported only when used).

    With ``device`` (the run's ``--device``), the settings that conflict with it are refused too (``cpu`` with
    GPUs per worker, ``cuda`` without)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}", "use 'local' or 'ray' (CLI: --backend local or --backend ray)")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}", "pass e.g. workers=2 (CLI: --workers 2)")
    try:
        gpus = float(gpus_per_worker)
    except (TypeError, ValueError):
        raise InputError(f"gpus_per_worker must be a number, got {gpus_per_worker!r}",
                         "pass e.g. gpus_per_worker=1 (CLI: --gpus-per-worker 1; 0.5 shares a GPU between two workers)") from None
    if not math.isfinite(gpus) or gpus < 0:
        raise InputError(f"gpus_per_worker must be >= 0, got {gpus_per_worker!r}", "pass e.g. gpus_per_worker=1 (CLI: --gpus-per-worker 1)")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise InputError(f"address must be a Ray address, got {address!r}", "pass e.g. address='auto' (CLI: --address auto)")
    if backend == "local" and (workers != 1 or gpus > 0 or address is not None):
        raise InputError("--workers, --gpus-per-worker and --address apply to the ray backend only",
                         "add --backend ray (or drop those options to run in this process)")
    if backend == "ray":
        if device is not None:
            worker_device(device, gpus)
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

#: seconds to wait for the head node of ``--address`` to accept a connection before giving up
CONNECT_TIMEOUT_S = 10.0
#: attempts Ray makes to reach the cluster's GCS once its port answers (Ray's default, 20, retries for minutes)
GCS_ATTEMPTS = 3


def _head_endpoint(address: str) -> tuple[str, int] | None:
    """``(host, port)`` that ``ray.init(address=address)`` connects to first: the GCS as Ray resolves it (``auto``
    through RAY_ADDRESS or the address `ray start` left behind; a loopback host replaced by this node's address),
    or the Ray Client server of ``ray://HOST:PORT``. None when it cannot be told (Ray then reports it)."""
    target = address.strip()
    if target.startswith("ray://"):
        target = target[len("ray://"):]
    else:
        try:
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address(target) or ""
        except Exception:  # noqa: BLE001 - e.g. "auto" with no cluster: ray.init reports that at once
            return None
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def connect(ray: Any, address: str) -> None:
    """``ray.init(address=address)``, bounded: a head node that does not accept a connection within
    `CONNECT_TIMEOUT_S`, or whose GCS does not answer in `GCS_ATTEMPTS` attempts, is reported in one line
    (`BackendError`, "could not connect"); Ray itself retries an unreachable cluster for many minutes."""
    import socket

    fix = ("start the head node with `ray start --head` and pass --address auto (or ray://HOST:10001), or drop "
           "--address to start a local Ray instance")
    endpoint = _head_endpoint(address)
    if endpoint is not None:
        try:
            socket.create_connection(endpoint, timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            why = (f"no answer from {endpoint[0]}:{endpoint[1]} within {CONNECT_TIMEOUT_S:g} s"
                   if isinstance(exc, TimeoutError) else
                   f"{endpoint[0]}:{endpoint[1]}: {type(exc).__name__}: {exc.strerror or exc}")
            raise BackendError(f"could not connect to the Ray cluster at {address!r} ({why})", fix) from None
    knob = "RAY_gcs_server_port_wait_time_s"  # read by ray.init: how many times it tries the GCS
    saved = os.environ.get(knob)
    if saved is None:
        os.environ[knob] = str(GCS_ATTEMPTS)
    try:
        ray.init(address=address, log_to_driver=True)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types for an unreachable cluster
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise BackendError(f"could not connect to the Ray cluster at {address!r} ({type(exc).__name__}: "
                           f"{lines[0] if lines else 'no details'})", fix) from None
    finally:
        if saved is None:
            os.environ.pop(knob, None)


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int, num_gpus: float) -> Iterator[Any]:
    """Ray, connected: to an already initialised Ray (left running), to ``address`` (`connect`), or to a local
    instance started here (``num_cpus`` CPUs, servers on the loopback interface, no dashboard); a connection
    made here is shut down on exit."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is not None:
        connect(ray, address)
    else:
        try:
            _init_local(ray, num_cpus, num_gpus)
        except Exception as exc:  # noqa: BLE001 - Ray raises many types when it cannot start
            raise BackendError(f"could not start a local Ray instance ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc).strip() else 'no details'})",
                               "check that Ray works: python -c 'import ray; ray.init()'") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def prepare_ray(session: dict[str, Any], *, workers: int, gpus_per_worker: float, address: str | None,
                device: str | torch.device | None) -> None:
    """Everything about a Ray run that can be checked before its run store exists: the device against the
    GPUs per worker, the connection to ``address`` (kept open in ``session`` for `run_ray`, which closes it) and
    the cluster's resources; without ``address``, the GPUs of this machine for the local instance `run_ray`
    will start."""
    gpus_per_worker = float(gpus_per_worker)
    worker_device(device, gpus_per_worker)
    ray = import_ray()
    if not ray.is_initialized() and address is None:
        _check_local_gpus(gpus_per_worker)  # the instance itself is started by run_ray, for the batches left
        return
    if not ray.is_initialized():
        connect(ray, address)
        session["owned"] = True  # run_ray (or RayExecutor.close) shuts the connection down
    _check_resources(ray, workers, gpus_per_worker, strict=address is None)
    session["resources_checked"] = True


def close_session(session: dict[str, Any]) -> None:
    """Shut down a connection `prepare_ray` opened (nothing when there is none) and forget what it checked."""
    owned = session.pop("owned", False)
    session.pop("resources_checked", None)
    if owned:
        ray = import_ray()
        if ray.is_initialized():
            ray.shutdown()


def _check_local_gpus(gpus_per_worker: float) -> None:
    """The local Ray instance can hold one worker: it has the GPUs torch sees on this machine."""
    if gpus_per_worker <= 0:
        return
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < gpus_per_worker:
        raise InputError(f"the local Ray instance would have {found} GPUs: not enough for one worker "
                         f"(1 CPU, {gpus_per_worker:g} GPUs)",
                         "run on a machine with a GPU, pass --address of a cluster with GPUs, or drop "
                         "--gpus-per-worker")


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
            batch_fn: Callable[..., dict[str, np.ndarray]],
            session: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Compute every batch of ``data`` on Ray actors; like `brittle.execution.executor.run_batched`, committing each
    finished batch into ``store`` as it arrives and skipping batches already there.

    ``batch_fn(model, part, batch, settings, device) -> dict of arrays`` is the per-batch work (a module-level
    function, e.g. `brittle.margins.compute.batch_margins`); ``settings.batch_size`` sets the shard size.
    ``session``: what `prepare_ray` found (a connection it opened is used, then shut down here).

    Returns all arrays concatenated in sample order.
    """
    session = session if session is not None else {}
    try:
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
                if not session.get("resources_checked"):
                    _check_resources(ray, min(workers, len(todo)), gpus_per_worker, strict=address is None)
                _drive(ray, blob, data, settings, dev, bounds, todo, min(workers, len(todo)), gpus_per_worker,
                       max_retries, store, job, results, on_batch, batch_fn)
    finally:
        close_session(session)
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
