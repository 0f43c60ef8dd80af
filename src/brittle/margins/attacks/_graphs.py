"""Replaying an attack's fixed-shape step as a CUDA graph.

In masked mode (`LiveRows` with ``masked=True``) an iterative attack runs the same step on the same batch
shape for many steps between two read-backs. On a GPU such a step is bound by its kernel launches: the
model's forward and backward pass and the attack's bookkeeping come to a few hundred small kernels, each
launched by the host. A CUDA graph records those launches once and replays them with one call, so a step
costs the device's work instead of the host's.

A step is written for this as a closure that reads and writes tensors allocated before it, in place, with no
read-back to the host, no Python value that changes from one step to the next (step counters are device
tensors) and the same shapes at every call; `LiveRows` keeps finished rows in the batch, and its ``refresh``
(the read-back every few steps, and the compaction that changes the shapes) runs between steps, outside the
graph. Such a closure runs the same eagerly, which is how it runs on a CPU and how the tests check it.

`CudaGraphs` decides per attack run whether steps are captured and turns capture off for the rest of the run,
with one warning, when a step cannot be captured: a model that reads values back to the host in its forward
pass (found by running the first step under the sync debug mode) or fails capture for any other reason.
A failed capture runs nothing, so the attack then goes on eagerly from the same state; its results are the
same either way, and every bound is verified at the end as always. The passes a step spends are counted by
Python code (`CountingModel`), which a replay does not run: each replay adds the passes its capture counted.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from torch import nn

if TYPE_CHECKING:
    from ._fixed import LiveRows

from ...errors import InputError
from .base import Cost, CountingModel


class CudaGraphs:
    """Whether an attack run captures its steps as CUDA graphs (``enabled``) and why it stopped (``failure``)."""

    def __init__(self, enabled: bool, device: torch.device, cost: Cost | None = None):
        self.enabled = bool(enabled) and device.type == "cuda"
        self.device = device
        self.cost = cost  # the passes counted by the model's wrapper, if any: replays add theirs
        self.failure: str | None = None
        self.captured = 0  # graphs captured so far in this run (one per loop and batch shape)

    def step(self, fn: Callable[[], None]) -> "StepGraph":
        """A replayable step for ``fn`` (a closure over fixed-shape tensors it updates in place)."""
        return StepGraph(fn, self)

    def disable(self, reason: str) -> None:
        if self.enabled:
            self.enabled = False
            self.failure = reason
            warnings.warn(f"brittle's attack runs without CUDA graphs on this model: {reason}. The bounds are "
                          "the same; steps cost their kernel launches. Pass cuda_graphs=False to skip the "
                          "attempt.", RuntimeWarning, stacklevel=4)


def graphs_for(model: nn.Module, like: torch.Tensor, masked: bool,
               cuda_graphs: "bool | CudaGraphs | None" = None, default: bool = True) -> CudaGraphs:
    """The CUDA-graph state of a run on ``model``: ``cuda_graphs`` itself when it is one (a state shared by the
    stages of one attack run), else new: on where ``cuda_graphs`` is True (``default`` where it is None) in
    masked mode on CUDA; never on other devices or with ``masked=False`` (whose batches change shape at every
    step). The fixed-ε attacks' own default is off (``default=False``): a training loop calls them once per
    batch for a few steps, where capturing costs more than replays save; `FastBoundaryAttack` turns them on
    for its stages."""
    if isinstance(cuda_graphs, CudaGraphs):
        return cuda_graphs
    if cuda_graphs is not None and not isinstance(cuda_graphs, bool):
        raise InputError(f"cuda_graphs must be True, False or None, got {cuda_graphs!r}",
                         "pass cuda_graphs=False to run every step eagerly")
    enabled = masked and (default if cuda_graphs is None else cuda_graphs)
    return CudaGraphs(enabled, like.device, cost=model.cost if isinstance(model, CountingModel) else None)


def run_steps(rows: "LiveRows", graphs: CudaGraphs, step: Callable[[], None], count: int, *,
              special: dict[int, Callable[[], None]] | None = None,
              on_compact: Callable[[torch.Tensor], None] | None = None) -> None:
    """Run ``step`` for steps ``0 .. count - 1`` over ``rows`` (a `LiveRows`), replayed as a CUDA graph where
    ``graphs`` allows: ``rows.refresh`` before each step (stopping once no row is live), ``on_compact(keep)``
    after a compaction (the caller's per-row tensors outside ``rows``' reach), a new graph for each new batch
    shape, and ``special[k]`` instead of ``step`` at step ``k`` (a first or final step of another shape, run
    eagerly).
    """
    replay = None
    for k in range(count):
        go, keep = rows.refresh(k)
        if not go:
            return
        if keep is not None and on_compact is not None:
            on_compact(keep)
        if special and k in special:
            special[k]()
            continue
        if replay is None or keep is not None:  # a new batch shape: a new graph
            replay = graphs.step(step)
        replay()


class StepGraph:
    """Runs a step closure: the first call eagerly on a side stream (warm-up: cuDNN plans, autograd's
    buffers, and the check for read-backs), the second call captures it and replays the graph, every later
    call replays it. Without CUDA graphs (CPU, ``cuda_graphs=False``, capture failed), every call runs ``fn``.
    """

    def __init__(self, fn: Callable[[], None], graphs: CudaGraphs):
        self.fn = fn
        self.graphs = graphs
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warmed = False
        self.passes = Cost()  # the passes one step counts (measured while capturing)

    def __call__(self) -> None:
        cost = self.graphs.cost
        if self.graph is not None:
            self.graph.replay()
            if cost is not None:
                cost += self.passes
            return
        if not self.graphs.enabled:
            self.fn()
            return
        with torch.cuda.device(self.graphs.device):  # the inputs' GPU, whichever is current
            if not self.warmed:
                self._warm_up()
            else:
                self._capture_and_replay(cost)

    def _capture_and_replay(self, cost: Cost | None) -> None:
        graph = torch.cuda.CUDAGraph()
        before = Cost() if cost is None else Cost(cost.forward, cost.backward)
        collecting = gc.isenabled()
        gc.disable()  # a collection while capturing could free another graph's memory or tensors in use
        try:
            try:
                # "thread_local", as torch.compile's CUDA graphs: the capture forbids unsafe calls in this
                # thread only, so the user's other threads (a DataLoader pinning memory) neither fail nor break it
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    self.fn()
            finally:
                if collecting:
                    gc.enable()
        except Exception as exc:  # noqa: BLE001 - any capture failure: the step runs eagerly instead
            torch.cuda.synchronize(self.graphs.device)
            if cost is not None:  # nothing ran
                cost.forward, cost.backward = before.forward, before.backward
            self.graphs.disable(f"capturing a step failed ({type(exc).__name__}: {str(exc).splitlines()[0]})")
            self.fn()  # a failed capture ran nothing: this step runs now
            return
        if cost is not None:  # counted while capturing: they are the passes of the replay below
            self.passes = Cost(cost.forward - before.forward, cost.backward - before.backward)
        self.graph = graph
        self.graphs.captured += 1
        graph.replay()

    def _warm_up(self) -> None:
        device = self.graphs.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with torch.cuda.stream(side):
                    self.fn()
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        torch.cuda.current_stream(device).wait_stream(side)
        self.warmed = True
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        if syncs:
            self.graphs.disable("a step reads values back to the host "
                                f"({str(syncs[0].message).splitlines()[0]})")
        for w in caught:  # the step's own warnings, passed on
            if w not in syncs:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
