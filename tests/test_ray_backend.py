"""The Ray backend: per-sample results identical to the local backend, a worker killed mid-run is replaced
and its shard recomputed, a killed driver's run resumes without recomputing finished shards, a worker's
`BrittleError` is re-raised as is, and a shard that keeps failing ends in a clear `BackendError`."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from brittle.auditing.pipeline import audit
from brittle.execution.executor import make_executor
from brittle.execution.ray import BackendError, check_backend
from brittle.data.loading import load_digits
from brittle.errors import InputError
from brittle.models.loading import save_torchscript
from brittle.models.zoo.architectures import mlp

ray = pytest.importorskip("ray", reason="the ray backend tests need Ray: pip install 'brittle[ray]'")

N, BATCH = 120, 20  # 6 shards
EPS = [0.05, 0.1]


class CrashOn(nn.Module):
    """``net``, except that a Ray worker process dies (``os._exit``) on the clean pass of the shard starting
    with ``trigger``: once if ``marker`` names a file (created on the crash), else every time."""

    def __init__(self, net: nn.Module, trigger: torch.Tensor, marker: str | None, how: str = "exit"):
        super().__init__()
        self.net, self.marker, self.how, self.driver = net, marker, how, os.getpid()
        self.trigger = trigger.clone()  # a plain attribute: not in the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (os.getpid() != self.driver and len(x) and torch.equal(x[0].detach().cpu(), self.trigger)
                and (self.marker is None or not Path(self.marker).exists())):
            if self.marker is not None:
                Path(self.marker).touch()
            if self.how == "raise":
                raise RuntimeError("injected failure")
            os._exit(1)
        return self.net(x)


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    data = load_digits()
    net = mlp(64, (32,), 10)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(data.x), data.y).backward()
        opt.step()
    return net.eval(), data.subset(slice(0, N))


@pytest.fixture(scope="module")
def local(digits):
    net, data = digits
    return audit(net, data, eps=EPS, batch_size=BATCH, n_boot=20).table


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance (2 CPUs, loopback only) shared by the in-process tests."""
    from brittle.execution.ray import _init_local

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    _init_local(ray, num_cpus=2, num_gpus=0)
    yield ray
    ray.shutdown()


def test_ray_equals_local_and_resumes(digits, local, cluster, tmp_path):
    net, data = digits
    out = tmp_path / "run"
    result = audit(net, data, eps=EPS, batch_size=BATCH, n_boot=20, out=out, executor=make_executor("ray", workers=2))
    pd.testing.assert_frame_equal(result.table, local)
    assert result.summary["device"] == "ray: 2 workers (cpu)"
    assert ray.is_initialized(), "a Ray instance the caller started must stay up"
    before = _batches(out)
    assert len(before) == N // BATCH
    conn = sqlite3.connect(out / "run.sqlite")
    with conn:
        conn.execute("DELETE FROM batches WHERE batch IN (1, 4)")
    conn.close()
    again = audit(net, data, eps=EPS, batch_size=BATCH, n_boot=20, out=out, executor=make_executor("ray", workers=2))
    after = _batches(out)
    assert {b for b in after if after[b] != before[b]} == {1, 4}, "only the missing shards are recomputed"
    pd.testing.assert_frame_equal(again.table, local)


def test_killed_worker_is_replaced(digits, local, cluster, tmp_path):
    net, data = digits
    marker = tmp_path / "crashed"
    model = CrashOn(net, data.x[3 * BATCH], str(marker))
    result = audit(model, data, eps=EPS, batch_size=BATCH, n_boot=20, executor=make_executor("ray", workers=2))
    assert marker.exists(), "the worker should have crashed once"
    pd.testing.assert_frame_equal(result.table, local)


def test_brittle_error_in_worker_is_reraised(digits, cluster):
    net, data = digits
    with pytest.raises(InputError, match="method 'brittle' has no parameter 'bogus'. Fix: use one of"):
        audit(net, data, eps=EPS, batch_size=BATCH, n_boot=20, executor=make_executor("ray", workers=2),
              method_options={"bogus": 1})


def test_failing_shard_gives_up_with_clear_error(digits, cluster, tmp_path):
    net, data = digits
    model = CrashOn(net, data.x[BATCH], None, how="raise")
    with pytest.raises(BackendError, match=r"shard 1 \(samples 20\.\.39\) failed 3 times.*injected failure"):
        audit(model, data, eps=EPS, batch_size=BATCH, n_boot=20, out=tmp_path / "run", executor=make_executor("ray", workers=2))
    done = _batches(tmp_path / "run")
    assert 1 not in done and len(done) >= 1, "finished shards are kept for a re-run"


def test_no_gpu_for_the_workers(digits, cluster, tmp_path):
    """The cluster's resources are checked before the run's store exists: a refused run leaves no directory that
    the corrected command would then find to be "a different run"."""
    net, data = digits
    out = tmp_path / "run"
    with pytest.raises(InputError, match="not enough for one worker"):
        audit(net, data, eps=EPS, batch_size=BATCH, out=out,
              executor=make_executor("ray", workers=2, gpus_per_worker=1))
    assert not out.exists()
    from brittle.margins.compute import compute_margins

    with pytest.raises(InputError, match="not enough for one worker"):
        compute_margins(net, data, batch_size=BATCH, out=out, executor=make_executor("ray", gpus_per_worker=1))
    assert not out.exists()


def test_robust_accuracy_curve_on_ray_equals_local(digits, cluster):
    from brittle.analysis.robustness import robust_accuracy_curve

    net, data = digits
    grid = [0.0, 0.05, 0.1, 0.2]
    local_curve = robust_accuracy_curve(net, data, "linf", grid, steps=5, batch_size=BATCH, device="cpu")
    ray_curve = robust_accuracy_curve(net, data, "linf", grid, steps=5, batch_size=BATCH, device="cpu",
                                      executor=make_executor("ray", workers=2))
    pd.testing.assert_frame_equal(ray_curve, local_curve)
    with torch.no_grad():
        clean = (net(data.x).argmax(1) == data.y).float().mean().item()
    assert local_curve["robust_accuracy"].iloc[0] == pytest.approx(clean)
    assert local_curve["robust_accuracy"].iloc[-1] < clean  # the attack really runs at eps > 0
    with pytest.raises(InputError, match="apply to the ray backend only"):
        robust_accuracy_curve(net, data, "linf", grid, executor=make_executor("local", workers=2))


def test_backend_settings_are_checked():
    with pytest.raises(InputError, match="unknown backend"):
        check_backend("dask", 1, 0, None)
    with pytest.raises(InputError, match="ray backend only"):
        check_backend("local", 2, 0, None)
    with pytest.raises(InputError, match="positive integer"):
        check_backend("ray", 0, 0, None)
    with pytest.raises(InputError, match=">= 0"):
        check_backend("ray", 2, -1, None)


def test_device_conflicts_are_refused_without_a_cluster():
    with pytest.raises(InputError, match="--gpus-per-worker was given but --device is cpu"):
        make_executor("ray", workers=2, gpus_per_worker=1, device="cpu")
    with pytest.raises(InputError, match="device cuda with the ray backend needs GPUs"):
        make_executor("ray", device="cuda")
    with pytest.raises(InputError, match="--device is cpu"):
        make_executor("ray", gpus_per_worker=0.5).prepare("cpu")  # the executor's own check, for API callers
    assert make_executor("ray", gpus_per_worker=1, device="auto").gpus_per_worker == 1.0
    make_executor("local", device="cpu")  # the device is the local backend's own business


class _StubRay:
    """What `connect` / `prepare_ray` use of the ray module, recorded."""

    def __init__(self, cpus=4.0, gpus=0.0):
        self.calls, self.up, self.resources = [], False, {"CPU": cpus, "GPU": gpus}

    def is_initialized(self):
        return self.up

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        self.up = True

    def shutdown(self):
        self.calls.append(("shutdown", {}))
        self.up = False

    def cluster_resources(self):
        return dict(self.resources)


def test_connect_is_bounded_and_refused_in_one_line(monkeypatch):
    """An address nothing answers on is refused within CONNECT_TIMEOUT_S, before ray.init (which would retry
    for many minutes); an address that answers is handed to ray.init, with Ray's GCS attempts bounded."""
    import socket

    from brittle.execution import ray as ray_backend

    stub = _StubRay()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound but not listening: refused
        monkeypatch.setattr(ray_backend, "_head_endpoint", lambda address: ("127.0.0.1", port))
        with pytest.raises(BackendError, match=r"could not connect to the Ray cluster at '10\.0\.0\.1:6379' "
                                               r"\(127\.0\.0\.1:\d+: ConnectionRefusedError") as info:
            ray_backend.connect(stub, "10.0.0.1:6379")
    assert "Fix: start the head node" in str(info.value) and "\n" not in str(info.value) and not stub.calls

    def silent(endpoint, timeout):
        assert timeout == ray_backend.CONNECT_TIMEOUT_S
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    with pytest.raises(BackendError, match=r"\(no answer from 127\.0\.0\.1:\d+ within 10 s\)"):
        ray_backend.connect(stub, "10.0.0.1:6379")
    monkeypatch.undo()

    seen_env = {}
    stub.init = lambda **kw: (seen_env.update(attempts=os.environ.get("RAY_gcs_server_port_wait_time_s")),
                              stub.calls.append(("init", kw)))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(ray_backend, "_head_endpoint", lambda address: server.getsockname())
        monkeypatch.delenv("RAY_gcs_server_port_wait_time_s", raising=False)
        ray_backend.connect(stub, "10.0.0.1:6379")
    assert stub.calls == [("init", {"address": "10.0.0.1:6379", "log_to_driver": True})]
    assert seen_env["attempts"] == str(ray_backend.GCS_ATTEMPTS)
    assert "RAY_gcs_server_port_wait_time_s" not in os.environ  # the user's environment as it was


def test_prepare_connects_before_the_store_and_run_closes_the_connection(monkeypatch):
    from brittle.execution import ray as ray_backend

    stub = _StubRay(cpus=4, gpus=0)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: stub)
    monkeypatch.setattr(ray_backend, "connect", lambda ray, address: ray.init(address=address))
    executor = make_executor("ray", workers=2, address="10.0.0.1:6379")
    executor.prepare("auto")
    assert stub.up and stub.calls == [("init", {"address": "10.0.0.1:6379"})]
    executor.prepare("auto")  # audit, then compute_margins inside it: one connection
    assert len(stub.calls) == 1
    executor.close()
    assert not stub.up and stub.calls[-1][0] == "shutdown"
    executor.close()  # nothing left to close
    stub.resources["GPU"] = 0.0
    with pytest.warns(RuntimeWarning, match="not enough for one worker"):  # an autoscaling cluster may grow
        make_executor("ray", gpus_per_worker=1, address="10.0.0.1:6379").prepare("auto")
    stub.up = False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=r"the local Ray instance would have 0 GPUs: not enough for one worker"):
        make_executor("ray", gpus_per_worker=1).prepare("auto")  # checked without starting Ray
    assert not stub.up


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(InputError, match=r"pip install 'brittle\[ray\]'"):
        check_backend("ray", 2, 0, None)


# --------------------------------------------------------------------------------------------
# CLI: a killed driver resumes
# --------------------------------------------------------------------------------------------

def _batches(out: Path) -> dict[int, float]:
    conn = sqlite3.connect(out / "run.sqlite")
    try:
        return dict(conn.execute("SELECT batch, created FROM batches WHERE job = 'margins'").fetchall())
    finally:
        conn.close()


def _cmd(folder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "brittle.cli", "--quiet", "audit", "--model", str(folder / "mlp.pt"),
            "--data", str(folder / "digits.npz"), "--norm", "linf", "--eps", "0.05,0.1", "--batch-size", str(BATCH),
            "--out", str(out), "--no-report", *extra]


def test_killed_driver_resumes(digits, local, tmp_path):
    """SIGKILL the driver of a ``--backend ray`` run mid-way, then finish the run (here with the local
    backend: a run's identity does not include the backend): finished shards are not recomputed."""
    net, data = digits
    save_torchscript(net, tmp_path / "mlp.pt", data.x[:2])
    np.savez(tmp_path / "digits.npz", x=data.x.numpy(), y=data.y.numpy())
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(tmp_path, out, "--backend", "ray", "--workers", "2"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            time.sleep(0.1)
            try:
                if (out / "run.sqlite").exists() and len(_batches(out)) >= 2:
                    break
            except sqlite3.OperationalError:
                continue
            assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:  # Ray's node agents outlive a SIGKILLed driver for a while: end the run's process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    before = _batches(out)
    assert 2 <= len(before) < N // BATCH, "the driver should have been killed mid-run"
    assert not (out / "samples.parquet").exists()

    done = subprocess.run(_cmd(tmp_path, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = _batches(out)
    assert len(after) == N // BATCH
    assert all(after[b] == created for b, created in before.items()), "a finished shard was recomputed"
    pd.testing.assert_frame_equal(pd.read_parquet(out / "samples.parquet"), local)


@pytest.mark.parametrize("entry", ["compute_margins", "audit"])
def test_a_refused_store_closes_the_connection_prepare_opened(monkeypatch, tmp_path, entry):
    """The run directory holds another run: the refusal comes after `prepare` connected to the cluster, and the
    connection must not outlive it (a later run in the process would take it for the user's own)."""
    from brittle.errors import StoreError
    from brittle.execution import ray as ray_backend
    from brittle.margins.compute import compute_margins

    stub = _StubRay(cpus=4, gpus=0)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: stub)
    monkeypatch.setattr(ray_backend, "connect", lambda ray, address: ray.init(address=address))
    data = load_digits().head(8)
    torch.manual_seed(0)
    first, second = mlp(64, (8,), 10).eval(), mlp(64, (8,), 10).eval()
    run = compute_margins if entry == "compute_margins" else \
        (lambda *a, **k: audit(*a, eps=[0.1], n_boot=0, report=False, **k))
    run(first, data, out=tmp_path, device="cpu", batch_size=8)
    executor = make_executor("ray", workers=1, address="10.0.0.1:6379")
    with pytest.raises(StoreError, match="holds a different run"):
        run(second, data, out=tmp_path, device="cpu", batch_size=8, executor=executor)
    assert stub.calls[0][0] == "init" and not stub.up  # connected by prepare, closed after the refusal
