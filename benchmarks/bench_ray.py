"""Wall time of the same margins computation on the local backend and on Ray with 1 and 2 workers.

Usage::

    python benchmarks/bench_ray.py --model standard --n 1000 --norm linf --batch-size 100 --workers 1,2

Each Ray run starts (and shuts down) its own local Ray instance, as ``brittle audit --backend ray`` does, so
the wall time includes Ray's start-up; that start-up is also measured on its own. Every run's per-sample
results are checked to be identical to the local backend's. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import pandas as pd
import torch


def machine() -> dict[str, object]:
    """CPU model, core count and load, for the results file."""
    model = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                  .stdout.splitlines() if ln.startswith("Model name")), platform.processor())
    return {"cpu": model, "nproc": os.cpu_count(), "torch_threads_local": torch.get_num_threads(),
            "loadavg_before": os.getloadavg()}


def ray_startup_seconds(num_cpus: int) -> float:
    """Seconds to start and shut down a local Ray instance the way brittle does."""
    import ray

    from brittle.execution.ray import _init_local

    t0 = time.perf_counter()
    _init_local(ray, num_cpus=num_cpus, num_gpus=0)
    ray.shutdown()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="standard", help="zoo model name")
    parser.add_argument("--n", type=int, default=1000, help="bundled MNIST test images")
    parser.add_argument("--norm", default="linf")
    parser.add_argument("--batch-size", type=int, default=100, help="samples per shard")
    parser.add_argument("--workers", default="1,2", help="comma-separated Ray worker counts")
    parser.add_argument("--skip-local", action="store_true", help="do not time the local backend")
    args = parser.parse_args()

    from brittle.models import zoo
    from brittle.data.loading import load_data
    from brittle.execution.executor import make_executor
    from brittle.margins.compute import compute_margins

    model = zoo.load(args.model)
    data = load_data("mnist").head(args.n)
    info = {"model": args.model, "n": args.n, "norm": args.norm, "batch_size": args.batch_size,
            "shards": -(-args.n // args.batch_size), "machine": machine(), "runs": {}}
    info["ray_startup_shutdown_seconds"] = ray_startup_seconds(2)
    reference = None
    plans = ([] if args.skip_local else [("local", 1)]) + [("ray", int(w)) for w in args.workers.split(",")]
    for backend, workers in plans:
        t0 = time.perf_counter()
        result = compute_margins(model, data, norm=args.norm, batch_size=args.batch_size, device="cpu",
                                 executor=make_executor(backend, workers=workers))
        seconds = time.perf_counter() - t0
        name = "local" if backend == "local" else f"ray-{workers}"
        same = None
        if reference is None:
            reference = result.table
        else:
            try:
                pd.testing.assert_frame_equal(result.table, reference)
                same = True
            except AssertionError:
                same = False
        info["runs"][name] = {"wall_seconds": round(seconds, 2), "attack_seconds_summed": round(result.seconds, 2),
                              "identical_to_first_run": same, "loadavg_after": os.getloadavg()}
        print(f"{name}: {seconds:.1f}s", flush=True)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
