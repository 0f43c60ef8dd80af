"""Where brittle's minimal-norm attack spends its time on a device: per stage, per operator, launches and syncs.

Usage::

    python benchmarks/profile_attack.py --model linf_madry --norms l2,linf --n 1000 --device cuda \\
        --out /tmp/profile.json

For each norm: one warm-up run, one run with a timer around each stage of `FastBoundaryAttack` (the device is
synchronised at each stage's ends, so the stage times add up to the run's wall time), and one run under
``torch.profiler`` whose operator table (top ``--top`` by self CPU time and, on CUDA, by self device time)
and counts of kernel launches and host-device synchronisations go to the JSON and to stdout. A development
tool for the GPU-speed work of issue #13; it changes nothing in the attack.

``--count`` works on any device, the CPU included: it runs the attack once per ``masked`` setting (False, True) under a
dispatch counter instead and reports the host-side work a GPU would see: operators that launch kernels (every
aten call but views), operators that read a device value back to the host (``nonzero``, ``item``/``bool``,
boolean-mask indexing: each one a stream synchronisation on CUDA), and the distinct batch shapes the model's
convolutions meet (each one a fresh cuDNN plan). A proxy measured without a GPU, not a timing::

    python benchmarks/profile_attack.py --count --device cpu --model linf_madry --norms l2,linf --n 1000 \
        --out benchmarks/results/attack_host_work.json
    python benchmarks/profile_attack.py --count --device cpu --model linf_madry --norms l2,linf --n 1000 \
        --budgets standard --out benchmarks/results/attack_host_work_budgets.json
    # the same for brittle before masking (commit be4ecb6, what the H200 measured), from a worktree:
    git worktree add /tmp/brittle-be4ecb6 be4ecb6
    PYTHONPATH=/tmp/brittle-be4ecb6/src python benchmarks/profile_attack.py --count --masked default ...
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections import defaultdict

import torch

import brittle
from brittle.data.loading import load_mnist
from brittle.margins.attacks import fast_boundary
from brittle.margins.attacks.fast_boundary import FastBoundaryAttack
from brittle.models.loading import resolve_device

STAGES = ("_init_step", "_run", "_segment_fallback", "_descent", "_refine", "_probe", "_budget_stage", "_polish")
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy ")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_stages(device: torch.device) -> tuple[dict[str, float], list]:
    """Patch the attack's stage methods with synchronised timers; returns the totals and the undo list."""
    totals: dict[str, float] = defaultdict(float)
    depth = [0]
    undo = []
    for name in STAGES:
        original = getattr(FastBoundaryAttack, name)

        def timed(self, *args, __original=original, __name=name, **kwargs):
            if depth[0]:  # a stage inside another (e.g. _init_step in _run) counts for the outer one only
                return __original(self, *args, **kwargs)
            depth[0] += 1
            _sync(device)
            t0 = time.perf_counter()
            try:
                return __original(self, *args, **kwargs)
            finally:
                _sync(device)
                totals[__name] += time.perf_counter() - t0
                depth[0] -= 1

        setattr(FastBoundaryAttack, name, functools.wraps(original)(timed))
        undo.append((name, original))
    return totals, undo


#: operators that copy a device value to the host (on CUDA: the host waits for the stream)
READ_BACKS = ("aten.nonzero", "aten._local_scalar_dense", "aten.is_nonzero", "aten.masked_select",
              "aten.unique", "aten._unique2", "aten.item", "aten.equal")


def count_host_work(run) -> dict:
    """Run ``run()`` under a dispatch counter: kernel-launching operators, read-backs, convolution batch shapes.

    Operators inside the attack's replayable steps (`StepGraph` calls) are counted apart, per step object, to
    predict the host-side work with CUDA graphs: a step's first call (warm-up) and second (capture) launch its
    operators one by one, every later call is one graph replay (``operators_with_graphs``).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    from brittle.margins.attacks._graphs import StepGraph

    counts = {"operators": 0, "read_backs": 0, "conv_calls": 0}
    by_read_back: dict[str, int] = defaultdict(int)
    conv_batches: set[int] = set()
    step_ops: dict[int, list[int]] = defaultdict(list)  # per step object: operators of each call
    inside: list[int] = []  # the current step's id while one runs

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket).replace("aten::", "aten.")
            if not getattr(func, "is_view", False) and name not in ("aten.detach", "aten.alias"):
                counts["operators"] += 1
                if inside:
                    step_ops[inside[-1]][-1] += 1
            if name.startswith(READ_BACKS) or (name == "aten.index" and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()))):
                counts["read_backs"] += 1
                by_read_back[name] += 1
            if name in ("aten.convolution", "aten.convolution_backward"):
                counts["conv_calls"] += 1
                conv_batches.add(int(args[0].shape[0]))
            return func(*args, **(kwargs or {}))

    original_call, alive = StepGraph.__call__, []

    def counted_call(self):
        alive.append(self)  # ids stay unique during the run
        step_ops[id(self)].append(0)
        inside.append(id(self))
        try:
            original_call(self)
        finally:
            inside.pop()

    StepGraph.__call__ = counted_call
    t0 = time.perf_counter()
    try:
        with Counter():
            run()
    finally:
        StepGraph.__call__ = original_call
    in_steps = sum(sum(calls) for calls in step_ops.values())
    replays = sum(max(len(calls) - 2, 0) for calls in step_ops.values())
    counts["step_calls"] = sum(len(calls) for calls in step_ops.values())
    counts["step_operators"] = in_steps
    counts["operators_with_graphs"] = (counts["operators"] - in_steps + replays
                                       + sum(sum(calls[:2]) for calls in step_ops.values()))
    counts["distinct_conv_batch_sizes"] = len(conv_batches)
    counts["read_backs_by_op"] = dict(sorted(by_read_back.items(), key=lambda kv: -kv[1]))
    counts["seconds_under_counter"] = round(time.perf_counter() - t0, 2)
    return counts


def main_count(args: argparse.Namespace, device: torch.device, model: torch.nn.Module, data) -> dict:
    standard = {"linf": [0.1, 0.2, 0.3], "l2": [1.0, 1.5, 2.0]}  # MNIST's usual budgets
    budgets = None if not args.budgets else "standard" if args.budgets == "standard" else \
        [float(b) for b in args.budgets.split(",")]
    result: dict = {"benchmark": "attack_host_work", "model": args.model, "images": args.n, "device": str(device),
                    "torch": torch.__version__, "budgets": budgets, "brittle": brittle.__version__,
                    "brittle_path": brittle.__file__, "runs": {}}
    for norm in args.norms.split(","):
        for masked in ((False, True) if args.masked == "both" else (None,)):
            options = {} if masked is None else {"masked": masked}
            if budgets:
                options["budgets"] = standard[norm] if budgets == "standard" else budgets
            def run():
                return brittle.input_margins(model, data, norm=norm, method="brittle", batch_size=args.n,
                                             device=device, **options)
            # both as a GPU runs them: with the closed-form thresholds (the CPU's Newton iterations read back
            # whether they converged); masked=False is the CPU's way of skipping rows, counted as on a GPU
            threshold = functools.partial(fast_boundary._threshold, method="sort")
            original, fast_boundary._threshold = fast_boundary._threshold, threshold
            try:
                row = count_host_work(run)
            finally:
                fast_boundary._threshold = original
            if masked is False:  # compact batches change shape at every step: no graphs
                row["operators_with_graphs"] = row["operators"]
            result["runs"][f"{norm}|masked={masked}"] = row
            print(f"== {args.model} {norm} masked={masked}: {row['operators']} operators "
                  f"({row['operators_with_graphs']} with CUDA graphs: {row['step_operators']} in "
                  f"{row['step_calls']} replayable step calls), {row['read_backs']} "
                  f"read-backs, {row['conv_calls']} convolution calls over {row['distinct_conv_batch_sizes']} "
                  f"batch sizes; read-backs by operator {row['read_backs_by_op']}", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="linf_madry")
    p.add_argument("--norms", default="l2,linf")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--device", default="auto")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default=None)
    p.add_argument("--count", action="store_true", help="count host-side work per --masked setting (any device)")
    p.add_argument("--masked", choices=("both", "default"), default="both",
                   help="with --count: run masked=False and masked=True, or leave the option out (for brittle "
                        "versions before it, e.g. with PYTHONPATH on a worktree of an older commit)")
    p.add_argument("--budgets", default="", help="with --count: budgets, e.g. 0.1,0.2,0.3, or 'standard' (MNIST's: "
                                                 "0.1,0.2,0.3 in L∞, 1,1.5,2 in L2)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    model = brittle.load_model(args.model, device=device)
    data = load_mnist().head(args.n)
    if args.count:
        return main_count(args, device, model, data)
    result: dict = {"benchmark": "attack_profile", "model": args.model, "images": args.n, "device": str(device),
                    "torch": torch.__version__,
                    "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "norms": {}}
    for norm in args.norms.split(","):
        def run():
            return brittle.input_margins(model, data, norm=norm, method="brittle", batch_size=args.n, device=device)
        run()  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        run()
        _sync(device)
        plain = time.perf_counter() - t0
        totals, undo = timed_stages(device)
        t0 = time.perf_counter()
        run()
        staged = time.perf_counter() - t0
        for name, original in undo:
            setattr(FastBoundaryAttack, name, original)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            run()
            _sync(device)
        events = prof.key_averages()
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel",
                                                              "cuLaunchKernelEx"))
        syncs = {e.key: e.count for e in events if any(e.key.startswith(s.strip()) for s in SYNC_CALLS)}
        ops = sum(e.count for e in events if e.key.startswith("aten::"))
        by_cpu = events.table(sort_by="self_cpu_time_total", row_limit=args.top)
        by_dev = events.table(sort_by="self_device_time_total", row_limit=args.top) if device.type == "cuda" else ""
        row = {"wall_s": round(plain, 4), "wall_with_stage_timers_s": round(staged, 4),
               "stages_s": {k: round(v, 4) for k, v in totals.items()},
               "other_s": round(staged - sum(totals.values()), 4), "kernel_launches": launches,
               "sync_calls": syncs, "aten_ops": ops, "top_by_self_cpu": by_cpu, "top_by_self_device": by_dev}
        result["norms"][norm] = row
        print(f"== {args.model} {norm}: {plain:.3f} s ({staged:.3f} s with stage timers); launches {launches}, "
              f"aten ops {ops}, syncs {syncs}")
        print("   stages:", json.dumps(row["stages_s"]), "other", row["other_s"])
        print(by_cpu)
        if by_dev:
            print(by_dev)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
