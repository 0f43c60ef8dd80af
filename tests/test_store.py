"""Run store: resume, refusal of a different run, crash safety (SIGKILL during writes, disk full)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from brittle.errors import StoreError
from brittle.execution.executor import run_batched
from brittle.execution.store import RunStore


def _compute_factory(calls):
    def compute(start, stop):
        calls.append(start)
        return {"idx": np.arange(start, stop), "sq": np.arange(start, stop) ** 2.0}
    return compute


def test_resume_skips_committed_batches(tmp_path):
    calls = []
    with RunStore(tmp_path, {"a": 1}) as store:
        store.put_batch("job", 1, 10, 20, _compute_factory([])(10, 20))
        out = run_batched(store, "job", 35, 10, _compute_factory(calls))
    assert calls == [0, 20, 30]  # batch 1 was already there
    assert out["idx"].tolist() == list(range(35)) and np.array_equal(out["sq"], np.arange(35) ** 2.0)
    calls.clear()
    with RunStore(tmp_path, {"a": 1}) as store:
        again = run_batched(store, "job", 35, 10, _compute_factory(calls))
    assert calls == [] and np.array_equal(again["sq"], out["sq"])


def test_without_store_computes_everything():
    calls = []
    out = run_batched(None, "job", 5, 2, _compute_factory(calls))
    assert calls == [0, 2, 4] and out["idx"].tolist() == [0, 1, 2, 3, 4]


def test_different_run_is_refused_then_overwritten(tmp_path):
    with RunStore(tmp_path, {"model": "m1", "eps": 0.1}) as store:
        store.put_batch("job", 0, 0, 1, {"v": np.zeros(1)})
    with pytest.raises(StoreError, match=r"holds a different run \(differs in: model\).*--overwrite"):
        RunStore(tmp_path, {"model": "m2", "eps": 0.1})
    with RunStore(tmp_path, {"model": "m2", "eps": 0.1}, overwrite=True) as store:
        assert store.done("job") == set()
        assert store.get_meta("config") == '{"eps": 0.1, "model": "m2"}'


def test_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot write to the output directory.*writable --out"):
        RunStore(blocker / "sub", {})


def test_corrupt_database_is_reported(tmp_path):
    (tmp_path / "run.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable run database.*--overwrite"):
        RunStore(tmp_path, {})
    (tmp_path / "summary.json").write_text("{}")  # the damaged run's results go with it
    with RunStore(tmp_path, {"a": 1}, overwrite=True) as store:  # the fix the message gives
        store.put_batch("job", 0, 0, 1, {"v": np.zeros(1)})
    with RunStore(tmp_path, {"a": 1}) as store:
        assert store.done("job") == {0}
    assert not (tmp_path / "summary.json").exists()


def test_a_replaced_run_takes_its_result_files_along_but_not_model_files(tmp_path):
    from brittle.execution.store import RESULT_FILES

    with RunStore(tmp_path, {"model": "m1"}):
        pass
    for name in RESULT_FILES:
        (tmp_path / name).write_text("old")
    (tmp_path / "samples.parquet.tmp").write_text("unfinished")
    for keep in ("model.pt", "notes.txt"):
        (tmp_path / keep).write_text("mine")
    with RunStore(tmp_path, {"model": "m1"}):  # the same run resumes: nothing is removed
        pass
    assert all((tmp_path / name).exists() for name in RESULT_FILES)
    with RunStore(tmp_path, {"model": "m2"}, overwrite=True):
        pass
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("run.sqlite")) == \
        ["model.pt", "notes.txt"]


def test_disk_full_keeps_the_store_consistent(tmp_path):
    store = RunStore(tmp_path, {"k": 1})
    store.put_batch("job", 0, 0, 10, {"v": np.arange(10.0)})
    page_count = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {page_count + 2}")  # the 'disk' is now almost full
    with pytest.raises(StoreError, match="not saved.*re-run the same command to resume"):
        store.put_batch("job", 1, 10, 20, {"v": np.random.rand(50_000)})
    assert store.done("job") == {0}
    store.close()
    with RunStore(tmp_path, {"k": 1}) as again:
        assert again.done("job") == {0} and again.gather("job")["v"].tolist() == list(np.arange(10.0))
        assert again._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from brittle.execution.store import RunStore
    store = RunStore(sys.argv[1], {"w": 1})
    for b in range(100000):
        rng = np.random.default_rng(b)
        store.put_batch("job", b, b, b + 1, {"v": rng.random(20000), "b": np.array([b])})
        print(b, flush=True)
""")


def test_sigkill_during_writes_leaves_a_consistent_store(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    for _ in range(15):  # let it commit a few batches, then kill it mid-write
        proc.stdout.readline()
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    conn = sqlite3.connect(tmp_path / "run" / "run.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with RunStore(tmp_path / "run", {"w": 1}) as store:
        done = sorted(store.done("job"))
        assert len(done) >= 15 and done == list(range(len(done)))
        for b, _, _, arrays in store.batches("job"):  # every committed batch is complete and intact
            assert arrays["b"].tolist() == [b]
            assert np.array_equal(arrays["v"], np.random.default_rng(b).random(20000))


def _flip_a_byte(db, table, where):
    conn = sqlite3.connect(db)
    (payload,) = conn.execute(f"SELECT payload FROM {table} WHERE {where}").fetchone()  # noqa: S608
    damaged = bytearray(payload)
    damaged[len(damaged) // 2] ^= 0x01
    conn.execute(f"UPDATE {table} SET payload = ? WHERE {where}", (bytes(damaged),))  # noqa: S608
    conn.commit()
    conn.close()


def test_a_damaged_batch_is_named_and_overwrite_computes_it_again(tmp_path):
    """One flipped byte in a batch's payload ended in "unexpected BadZipFile ... a bug" (exit 1), and --overwrite
    kept the same store, so the fix it was offered did not work."""
    with RunStore(tmp_path, {"a": 1}) as store:
        clean = run_batched(store, "job", 30, 10, _compute_factory([]))
    _flip_a_byte(tmp_path / "run.sqlite", "batches", "batch = 1")
    with RunStore(tmp_path, {"a": 1}) as store:
        with pytest.raises(StoreError, match=r"batch 1 of 'job' is damaged \(its checksum does not match\)\. "
                                             r"Fix: pass --overwrite .*the rest of the run is kept"):
            run_batched(store, "job", 30, 10, _compute_factory([]))
    calls = []
    with RunStore(tmp_path, {"a": 1}, overwrite=True) as store:
        again = run_batched(store, "job", 30, 10, _compute_factory(calls))
    assert calls == [10]  # only the damaged batch is computed again
    assert all(np.array_equal(clean[k], again[k]) for k in clean)


def test_a_damaged_artifact_is_named_and_overwrite_drops_it(tmp_path):
    """A flipped byte inside a saved torch checkpoint loaded without any error and changed a weight."""
    with RunStore(tmp_path, {"a": 1}) as store:
        store.put_artifact("checkpoint", b"weights" * 100)
        assert store.get_artifact("checkpoint") == b"weights" * 100
    _flip_a_byte(tmp_path / "run.sqlite", "artifacts", "name = 'checkpoint'")
    with RunStore(tmp_path, {"a": 1}) as store:
        with pytest.raises(StoreError, match=r"the saved 'checkpoint' is damaged.*Fix: pass --overwrite"):
            store.get_artifact("checkpoint")
    with RunStore(tmp_path, {"a": 1}, overwrite=True) as store:
        assert store.get_artifact("checkpoint") is None
        assert store.artifact_names() == []


def test_a_store_of_the_previous_schema_still_resumes(tmp_path):
    """Stores written before payloads carried a checksum (schema 1) are read as they are."""
    from brittle.execution.store import pack_arrays

    with RunStore(tmp_path, {"a": 1}) as store:
        pass
    conn = sqlite3.connect(tmp_path / "run.sqlite")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    conn.execute("INSERT INTO batches VALUES ('job', 0, 0, 10, ?, 0)", (pack_arrays(_compute_factory([])(0, 10)),))
    conn.commit()
    conn.close()
    calls = []
    with RunStore(tmp_path, {"a": 1}) as store:
        out = run_batched(store, "job", 20, 10, _compute_factory(calls))
    assert calls == [10] and out["idx"].tolist() == list(range(20))


def test_differs_in_names_only_what_changed_and_a_file_is_no_output_directory(tmp_path):
    """Settings held as tuples were read back as lists, so they were always listed as changed."""
    with RunStore(tmp_path / "r", {"segments": (("fog:5", 0, 10),), "lr": 0.1}):
        pass
    with pytest.raises(StoreError, match=r"differs in: lr\)"):
        RunStore(tmp_path / "r", {"segments": (("fog:5", 0, 10),), "lr": 0.2})
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match=r"output directory .*f is a file, not a directory"):
        RunStore(tmp_path / "f", {})
