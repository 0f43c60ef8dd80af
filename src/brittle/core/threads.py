"""How many CPU threads torch uses for brittle's work.

torch starts one intra-op thread per core. On a machine where other processes already keep cores busy,
those threads compete for the same cores and spin-wait on each other: brittle's attacks ran 5-24x slower
on a busy 2-core machine than with one thread. The default chosen here is the number of cores this process
may run on (CPU affinity) minus the cores other processes are keeping busy right now (the run queue and the
1-minute load average), at least 1.

The command line applies it before every command (override: ``--threads N`` or ``BRITTLE_NUM_THREADS``;
an ``OMP_NUM_THREADS`` the user set is respected). The Python API changes nothing unless asked:
``brittle.set_threads()`` (automatic) or ``brittle.set_threads(n)``.
"""

from __future__ import annotations

import math
import os
import sys

from ..errors import InputError

ENV_VAR = "BRITTLE_NUM_THREADS"


def available_cores() -> int:
    """Cores this process may run on: CPU affinity, capped by a cgroup CPU quota where one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:  # cgroup v2 quota, e.g. "200000 100000" = 2 CPUs (containers)
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def busy_cores() -> float:
    """Cores other processes keep busy now: the larger of the 1-minute load average and the number of
    runnable tasks at this instant other than this process (Linux ``/proc/loadavg``)."""
    load = 0.0
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        pass
    try:
        with open("/proc/loadavg") as fh:
            running = int(fh.read().split()[3].split("/")[0]) - 1  # minus this process, which is running
        load = max(load, float(running))
    except (OSError, ValueError, IndexError):
        pass
    return max(0.0, load)


def default_threads() -> int:
    """Free cores now: available cores minus busy ones (rounded), between 1 and the available cores."""
    cores = available_cores()
    return max(1, min(cores, cores - int(round(busy_cores()))))


def check_threads(n: object, what: str = "threads") -> int:
    """``n`` as an integer >= 1, or `InputError`."""
    try:
        value = int(str(n).strip()) if not isinstance(n, int) or isinstance(n, bool) else n
    except ValueError:
        raise InputError(f"{what} must be a whole number >= 1, got {n!r}", f"pass e.g. {what}=2") from None
    if isinstance(value, bool) or value < 1:
        raise InputError(f"{what} must be a whole number >= 1, got {n!r}", f"pass e.g. {what}=2")
    return value


def set_threads(n: int | None = None) -> int:
    """Set the number of CPU threads torch uses (``torch.set_num_threads``) and return it.

    ``n=None`` picks `default_threads()`: the cores that are free now. brittle's functions never change the
    thread count by themselves; the command line calls this (see ``--threads``).
    """
    import torch

    value = default_threads() if n is None else check_threads(n)
    torch.set_num_threads(value)
    return value


def configure_cli_threads(option: int | None) -> tuple[int | None, str]:
    """The command line's thread count: ``--threads`` > ``BRITTLE_NUM_THREADS`` > a user's
    ``OMP_NUM_THREADS`` (left to torch) > `default_threads()`. Returns ``(threads or None, source)``.

    Applied without importing torch when it is not loaded yet (through ``OMP_NUM_THREADS``, which torch
    reads when it starts; child processes such as Ray workers inherit it).
    """
    if option is not None:
        n, source = check_threads(option, "--threads"), "--threads"
    elif os.environ.get(ENV_VAR, "").strip():
        n, source = check_threads(os.environ[ENV_VAR], ENV_VAR), ENV_VAR
    elif os.environ.get("OMP_NUM_THREADS", "").strip():
        return None, "OMP_NUM_THREADS"
    else:
        n, source = default_threads(), "auto"
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n, source
