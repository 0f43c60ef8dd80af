"""The attack's masked loops as CUDA graphs: what a replayed step needs, checked on the CPU; the graphs
themselves on CUDA (skipped elsewhere; benchmarks/gpu_checks.sh runs them).

A CUDA graph records a step's kernels once and replays them: it is a valid stand-in for running the step
again only if the step would launch the same operators, on the same shapes, with the same constants and on the
same memory for everything made outside the step, and never reads a value back to the host (which capture
forbids). On the CPU every step runs eagerly, so the check records each call of each step under a dispatch
mode and compares the calls with one another.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from brittle.data.loading import load_mnist
from brittle.errors import InputError
from brittle.margins.attacks import FastBoundaryAttack, fast_boundary
from brittle.margins.attacks._graphs import StepGraph
from brittle.models import zoo

READ_BACKS = ("aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero", "aten.item", "aten.equal",
              "aten.masked_select", "aten.unique", "aten._unique2")


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class StepRecorder(TorchDispatchMode):
    """Records one call of a step: per operator its name, its argument shapes and constants, for every tensor
    argument the step made itself the operator that made it (the step's data flow), and the storage of every
    other tensor argument (state, model, inputs)."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple] = []
        self.made: dict[int, int] = {}  # storage -> index of the operator that last wrote a new tensor there
        self.read_backs: list[str] = []

    def _describe(self, a):
        if isinstance(a, torch.Tensor):
            ptr = _storage(a)
            origin = ("made by op", self.made[ptr]) if ptr in self.made else ("outside", ptr)
            return ("T", tuple(a.shape), a.dtype, origin)
        if isinstance(a, (list, tuple)):
            return tuple(self._describe(b) for b in a)
        return a

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        if name.startswith(READ_BACKS) or (name == "aten.index" and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()))):
            self.read_backs.append(name)
        self.ops.append((name, self._describe(args), self._describe(sorted(kwargs.items()))))
        before = {id(a) for a in args if isinstance(a, torch.Tensor)}
        out = func(*args, **kwargs)
        for o in (out if isinstance(out, (list, tuple)) else (out,)):
            # a new tensor (not an in-place result, nor a view, which keeps where its storage came from)
            if isinstance(o, torch.Tensor) and id(o) not in before and not getattr(func, "is_view", False):
                self.made[_storage(o)] = len(self.ops) - 1
        return out


@pytest.fixture
def recorded_steps(monkeypatch):
    """Every call of every `StepGraph`, recorded; `_threshold` as a GPU runs it (closed form, no read-back)."""
    calls: dict[tuple[int, str], list[StepRecorder]] = defaultdict(list)  # (step object, its function)
    keep_alive = []

    def call(self):
        keep_alive.append(self)  # ids stay unique while the test runs
        rec = StepRecorder()
        with rec:
            self.fn()
        calls[id(self), self.fn.__qualname__].append(rec)

    monkeypatch.setattr(StepGraph, "__call__", call)
    monkeypatch.setattr(fast_boundary, "_threshold", functools.partial(fast_boundary._threshold, method="sort"))
    return calls


@pytest.mark.parametrize("norm,options,loops", [
    ("linf", {"strength": "fast", "restarts": 1}, 4),
    ("l2", {"strength": "fast"}, 4),
    # + APGD: the L2 probes (apgd_ce) and the budget stage (apgd_stacked, CE and targets in one batch)
    ("linf", {"budgets": [0.05, 0.08]}, 5),
    ("l2", {"budgets": [0.8, 1.0]}, 6),
], ids=["linf", "l2", "linf-budgets", "l2-probes-budgets"])
def test_every_masked_step_can_be_replayed_as_a_graph(norm: str, options: dict, loops: int, recorded_steps) -> None:
    model = zoo.load("standard").eval()
    x = load_mnist().head(40).x
    pred = model(x).argmax(1)
    res = FastBoundaryAttack(norm, masked=True, **options)(model, x, pred)
    assert bool(torch.isfinite(res.upper).all())
    replayed = {k: v for k, v in recorded_steps.items() if len(v) >= 2}
    # the boundary runs, the descent and the bisections (and the APGD runs): loops that replay a step
    assert len(replayed) >= loops, {k: len(v) for k, v in recorded_steps.items()}
    if "budgets" in options:  # APGD's steps are among them
        assert any(name.startswith("_apgd") for _, name in replayed)
    for calls in recorded_steps.values():
        assert len(calls[0].ops) > 20  # a step is a model pass plus its bookkeeping
        _check_replayable(calls)


def _check_replayable(calls: list[StepRecorder]) -> None:
    for rec in calls:
        assert rec.read_backs == [], f"a step reads values back to the host: {rec.read_backs}"
    first = calls[0].ops
    for rec in calls[1:]:
        assert len(rec.ops) == len(first)
        for a, b in zip(first, rec.ops):
            assert a == b, f"a replay would differ from this call:\n{a}\n{b}"


@pytest.mark.parametrize("candidates", [1, 5])
def test_every_masked_square_round_can_be_replayed_as_a_graph(candidates: int, recorded_steps) -> None:
    """Square's rounds (windows drawn outside the step, 50 rounds' at a time, into the same buffers)."""
    from brittle.margins.attacks.square import square_linf

    model = zoo.load("standard").eval()
    x = load_mnist().head(24).x
    y = model(x).argmax(1)
    square_linf(model, x, y, 0.02, queries=60 * candidates, candidates=candidates, masked=True,
                generator=torch.Generator().manual_seed(0))
    (calls,) = [v for (_, name), v in recorded_steps.items() if name.startswith("square_linf")]
    assert len(calls) == 60  # every round, across two chunks of windows (50 + 10)
    _check_replayable(calls)


def test_the_recorder_catches_what_a_graph_cannot_replay() -> None:
    """The check above can fail: a step with a Python step number, one that rebinds its state, one that reads
    back, and one whose data flow depends on a Python value are caught."""
    state = {"x": torch.zeros(3), "k": 0}

    def python_counter():  # the step number as a Python value: a graph would replay the first one
        state["x"].add_(state["k"])
        state["k"] += 1

    def rebinding():  # the new state in a new tensor: a graph would keep writing the first call's memory
        state["x"] = state["x"] + 1

    def reading_back():
        if bool((state["x"] > 0).any()):
            state["x"].mul_(2)

    def switching_inputs():  # which intermediate feeds the update depends on a Python value
        a, b = state["x"] + 1, state["x"] - 1
        state["x"].copy_(a if state["k"] % 2 else b)
        state["k"] += 1

    for step, problem in ((python_counter, "constant"), (rebinding, "storage"), (reading_back, "read_back"),
                          (switching_inputs, "data flow")):
        recs = []
        for _ in range(2):
            with StepRecorder() as rec:
                step()
            recs.append(rec)
        if problem == "read_back":
            assert recs[0].read_backs
        else:
            assert recs[0].ops != recs[1].ops, problem


@pytest.mark.parametrize("value", ["yes", 1])
def test_cuda_graphs_must_be_a_boolean(value) -> None:
    with pytest.raises(InputError, match="cuda_graphs must be True, False or None"):
        FastBoundaryAttack("linf", cuda_graphs=value)


def test_cuda_graphs_need_masked_rows() -> None:
    with pytest.raises(InputError, match="needs masked rows"):
        FastBoundaryAttack("l2", masked=False, cuda_graphs=True)


def test_graphs_are_off_on_the_cpu() -> None:
    """On a CPU, ``cuda_graphs=True`` runs every step eagerly (the same attack, without graphs)."""
    model = zoo.load("standard").eval()
    x = load_mnist().head(16).x
    pred = model(x).argmax(1)
    attack = FastBoundaryAttack("l2", masked=True, cuda_graphs=True, strength="fast")
    with_graphs = attack(model, x, pred)
    assert attack._run_graphs is not None and not attack._run_graphs.enabled
    assert attack._run_graphs.captured == 0
    plain = FastBoundaryAttack("l2", masked=True, cuda_graphs=False, strength="fast")(model, x, pred)
    assert torch.equal(with_graphs.upper, plain.upper)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("norm,budgets", [("linf", None), ("l2", None), ("linf", [0.1, 0.2, 0.3]),
                                          ("l2", [1.0, 1.5, 2.0])])
def test_graphs_give_the_bounds_of_eager_steps_on_cuda(norm: str, budgets) -> None:
    """Boundary runs, descent, bisections; with budgets also APGD (probes, budget stage) and Square."""
    model = zoo.load("linf_madry").eval().cuda()
    x = load_mnist().head(256).x.cuda()
    pred = model(x).argmax(1)
    graphed = FastBoundaryAttack(norm, cuda_graphs=True, budgets=budgets)
    with_graphs = graphed(model, x, pred)
    assert graphed._run_graphs.enabled and graphed._run_graphs.captured >= 3
    eager = FastBoundaryAttack(norm, cuda_graphs=False, budgets=budgets)(model, x, pred)
    assert bool(torch.isfinite(with_graphs.upper).all())
    torch.testing.assert_close(with_graphs.upper, eager.upper, rtol=1e-4, atol=1e-6)
    # a replay runs no Python: the passes of each replayed step are added by the step's graph
    assert (with_graphs.cost.forward, with_graphs.cost.backward) == (eager.cost.forward, eager.cost.backward)


class _ReadsBack(torch.nn.Module):
    """A model whose forward pass reads a value back to the host (it cannot be captured)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if float(out.abs().max()) > 1e9:  # a host read-back
            out = out / 2
        return out


@cuda
def test_a_model_that_reads_back_runs_eagerly_with_one_warning() -> None:
    model = _ReadsBack(zoo.load("standard").eval()).eval().cuda()
    x = load_mnist().head(64).x.cuda()
    pred = model(x).argmax(1)
    attack = FastBoundaryAttack("l2", strength="fast")
    with pytest.warns(RuntimeWarning, match="without CUDA graphs") as caught:
        res = attack(model, x, pred)
    assert sum("without CUDA graphs" in str(w.message) for w in caught) == 1
    assert not attack._run_graphs.enabled and attack._run_graphs.captured == 0
    eager = FastBoundaryAttack("l2", strength="fast", cuda_graphs=False)(model, x, pred)
    torch.testing.assert_close(res.upper, eager.upper, rtol=1e-4, atol=1e-6)


class _FakeCuda:
    """Stand-ins for the torch.cuda calls `StepGraph` makes, to check its logic on the CPU: a capture runs the
    step's Python but not its effect (as a CUDA capture records kernels without running them), a replay runs
    the effect only (the kernels, not the Python)."""

    def __init__(self, monkeypatch, fail_capture: bool = False):
        import contextlib

        self.capturing = False
        self.captures = []  # (capture_error_mode, whether the garbage collector was on) of each capture
        self.debug_mode = 0
        self.effects = 0  # what the step's kernels did, however they were launched
        fake = self

        class Graph:
            def replay(self):
                fake.effects += 1

        @contextlib.contextmanager
        def graph(g, *args, capture_error_mode="global", **kwargs):
            import gc

            fake.captures.append((capture_error_mode, gc.isenabled()))
            fake.capturing = True
            try:
                yield
                if fail_capture:
                    raise RuntimeError("operation not permitted when stream is capturing")
            finally:
                fake.capturing = False

        class Stream:
            def __init__(self, *args, **kwargs):
                pass

            def wait_stream(self, other):
                pass

        def set_mode(mode):
            fake.debug_mode = {"default": 0, "warn": 1, "error": 2}.get(mode, mode)

        null = contextlib.nullcontext
        for name, value in (("CUDAGraph", Graph), ("graph", graph), ("Stream", Stream),
                            ("current_stream", lambda *a: Stream()), ("stream", lambda s: null()),
                            ("device", lambda d: null()), ("synchronize", lambda *a: None),
                            ("get_sync_debug_mode", lambda: fake.debug_mode), ("set_sync_debug_mode", set_mode)):
            monkeypatch.setattr(torch.cuda, name, value)


def _graph_run(fake: _FakeCuda, calls: int, reads_back: bool = False):
    import warnings

    from brittle.margins.attacks._graphs import CudaGraphs
    from brittle.margins.attacks.base import Cost

    cost = Cost()
    graphs = CudaGraphs(True, torch.device("cpu"), cost=cost)
    graphs.enabled = True  # as on CUDA
    python_runs = [0]

    def fn():
        python_runs[0] += 1
        cost.forward += 10  # what CountingModel counts, in Python
        if reads_back and fake.debug_mode:
            warnings.warn("called a synchronizing CUDA operation")
        if not fake.capturing:
            fake.effects += 1

    step = graphs.step(fn)
    for _ in range(calls):
        step()
    return graphs, cost, python_runs[0]


def test_a_step_is_warmed_up_captured_then_replayed(monkeypatch) -> None:
    fake = _FakeCuda(monkeypatch)
    graphs, cost, python_runs = _graph_run(fake, 7)
    assert fake.effects == 7  # every call did the step's work once
    assert python_runs == 2 and graphs.captured == 1  # warm-up, capture; five replays ran no Python
    assert cost.forward == 70  # yet every call's passes are counted
    assert graphs.enabled and graphs.failure is None
    # captured without the garbage collector, in a mode that leaves the user's other threads alone
    assert fake.captures == [("thread_local", False)]


@pytest.mark.parametrize("fail_capture", [False, True])
def test_the_garbage_collector_is_restored_after_a_capture(monkeypatch, fail_capture: bool) -> None:
    import gc
    import warnings

    fake = _FakeCuda(monkeypatch, fail_capture=fail_capture)
    assert gc.isenabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _graph_run(fake, 3)
    assert gc.isenabled() and len(fake.captures) == 1
    gc.disable()  # a caller who turned it off keeps it off
    try:
        _graph_run(fake, 3)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_failed_capture_runs_the_step_eagerly_and_counts_it_once(monkeypatch) -> None:
    fake = _FakeCuda(monkeypatch, fail_capture=True)
    with pytest.warns(RuntimeWarning, match="capturing a step failed") as caught:
        graphs, cost, python_runs = _graph_run(fake, 5)
    assert len([w for w in caught if "without CUDA graphs" in str(w.message)]) == 1
    assert fake.effects == 5 and cost.forward == 50
    assert not graphs.enabled and graphs.captured == 0 and python_runs == 6  # the failed capture ran Python


def test_a_step_that_reads_back_is_never_captured(monkeypatch) -> None:
    fake = _FakeCuda(monkeypatch)
    with pytest.warns(RuntimeWarning, match="reads values back to the host"):
        graphs, cost, python_runs = _graph_run(fake, 4, reads_back=True)
    assert fake.effects == 4 and cost.forward == 40 and python_runs == 4
    assert not graphs.enabled and graphs.captured == 0
    assert fake.debug_mode == 0  # the sync debug mode is restored
