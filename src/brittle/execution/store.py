"""Crash-safe run store: one SQLite database (WAL mode) per run directory.

Per-batch results are committed as they complete, next to the run's configuration and a fingerprint of
model weights, data and settings. Re-opening the same run resumes (finished batches are not recomputed);
opening a directory that holds a different run is refused unless ``overwrite=True``. Arrays are stored as
``.npz`` bytes read with ``allow_pickle=False`` — nothing in a run directory is ever unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError

DB_NAME = "run.sqlite"
#: 2: every payload (batch, artifact) is stored after its SHA-256, checked on every read; a store of schema 1
#: (brittle 0.3.0 and earlier) still resumes, its payloads unchecked
SCHEMA_VERSION = 2
_DIGEST = 32
#: the result files brittle's jobs (audit, margins, ood, adapt, train) write next to the database. A run that
#: replaces another (``overwrite``) removes those of the old run, so that no reader (`brittle.load_run`,
#: ``brittle report``) takes them for the new run's. Model files (``model.pt``) are left alone: one may be
#: the very model the new run reads.
RESULT_FILES = ("summary.json", "samples.parquet", "margins.parquet", "curves.json", "examples.npz",
                "report.html", "pseudo_margin.json", "monitor.json", "scores.parquet", "steps.parquet",
                "history.csv", "training_curve.png")
#: SQLite's result codes for a file that is not a database or a damaged one (SQLITE_CORRUPT, SQLITE_NOTADB)
_DAMAGED = (11, 26)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    job TEXT NOT NULL, batch INTEGER NOT NULL, start INTEGER NOT NULL, stop INTEGER NOT NULL,
    payload BLOB NOT NULL, created REAL NOT NULL, PRIMARY KEY (job, batch));
CREATE TABLE IF NOT EXISTS artifacts (name TEXT PRIMARY KEY, payload BLOB NOT NULL, created REAL NOT NULL);
"""


def fingerprint(config: dict[str, Any]) -> str:
    """SHA-256 of a JSON-serialisable configuration (keys sorted)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def unpack_arrays(payload: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


class RunStore:
    """A run directory backed by SQLite in WAL mode.

    Args:
        directory: the run directory (created if missing).
        config: the run's settings; identity is ``fingerprint(config)`` (put model/data fingerprints in it).
        overwrite: erase an existing run with another configuration instead of refusing it.
    """

    def __init__(self, directory: str | os.PathLike, config: dict[str, Any], *, overwrite: bool = False):
        self.directory = Path(directory)
        self.config = config
        self.fingerprint = fingerprint(config)
        if self.directory.exists() and not self.directory.is_dir():
            raise StoreError(f"the output directory {self.directory} is a file, not a directory",
                             "pass a directory path as --out (new, or a run's folder)")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".brittle-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"cannot write to the output directory {self.directory} ({exc.strerror or exc})",
                             "choose a writable --out directory") from None
        self.path = self.directory / DB_NAME
        self.overwrite = overwrite
        self._conn = self._connect(replace_damaged=overwrite)
        existing = self.get_meta("fingerprint")
        if existing is not None and existing != self.fingerprint:
            if not overwrite:
                old = json.loads(self.get_meta("config") or "{}")
                new = json.loads(json.dumps(config, sort_keys=True, default=str))  # as stored: tuples read as lists
                changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                self.close()
                raise StoreError(f"{self.directory} holds a different run (differs in: {', '.join(changed) or 'settings'})",
                                 "use another output directory, or pass --overwrite (Python: overwrite=True) to replace it")
            self._reset()
        if self.get_meta("fingerprint") is None:
            with self._tx() as c:
                for key, value in (("fingerprint", self.fingerprint), ("schema", str(SCHEMA_VERSION)),
                                   ("config", json.dumps(config, sort_keys=True, default=str)),
                                   ("created", str(time.time()))):
                    c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        try:
            self.schema = int(self.get_meta("schema") or SCHEMA_VERSION)
        except ValueError:
            self.schema = SCHEMA_VERSION

    # -- connection ---------------------------------------------------------------------------
    def _connect(self, replace_damaged: bool = False) -> sqlite3.Connection:
        """Open the database; with ``replace_damaged`` (``overwrite``) a damaged one is deleted and started
        anew, which is what the error message offers. A locked or unreadable one is never deleted."""
        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            if replace_damaged and getattr(exc, "sqlite_errorcode", None) in _DAMAGED:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                self._remove_results()
                return self._connect()
            raise StoreError(f"{self.path} is not a usable run database ({exc})",
                             "move it away or pass --overwrite (Python: overwrite=True) to start a new run there") from None
        return conn

    def _tx(self) -> "_Transaction":
        return _Transaction(self._conn, self.path)

    def _reset(self) -> None:
        with self._tx() as c:
            for table in ("meta", "batches", "artifacts"):
                c.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        self._remove_results()

    def _remove_results(self) -> None:
        """Remove the replaced run's result files (`RESULT_FILES`, and their unfinished ``.tmp`` copies)."""
        for name in RESULT_FILES:
            for path in (self.directory / name, self.directory / (name + ".tmp")):
                try:
                    path.unlink(missing_ok=True)
                except IsADirectoryError:
                    pass
                except OSError as exc:
                    raise StoreError(f"cannot remove the replaced run's {path.name} from {self.directory} "
                                     f"({exc.strerror or exc})", "remove it by hand, or use another --out") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata -----------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    # -- batches ------------------------------------------------------------------------------
    # -- payload integrity ----------------------------------------------------------------------
    def _framed(self, payload: bytes) -> bytes:
        return hashlib.sha256(payload).digest() + payload if self.schema >= 2 else payload

    def _unframed(self, stored: bytes) -> bytes | None:
        """The payload, or None when its checksum does not match (a damaged database page, a torn write)."""
        stored = bytes(stored)
        if self.schema < 2:
            return stored
        digest, payload = stored[:_DIGEST], stored[_DIGEST:]
        return payload if len(stored) >= _DIGEST and hashlib.sha256(payload).digest() == digest else None

    def _damaged(self, what: str) -> StoreError:
        return StoreError(f"{self.path}: {what} is damaged (its checksum does not match)",
                          "pass --overwrite (Python: overwrite=True) to compute it again; the rest of the run is kept")

    # -- batches ------------------------------------------------------------------------------
    def done(self, job: str) -> set[int]:
        """Indices of the committed batches of ``job``. Each one's payload is checked: a damaged one is refused
        (`StoreError`), or, in a store opened with ``overwrite``, dropped so that it is computed again."""
        done = set()
        for batch, payload in self._conn.execute("SELECT batch, payload FROM batches WHERE job = ?", (job,)):
            if self._unframed(payload) is not None:
                done.add(batch)
            elif self.overwrite:
                with self._tx() as c:
                    c.execute("DELETE FROM batches WHERE job = ? AND batch = ?", (job, batch))
            else:
                raise self._damaged(f"batch {batch} of {job!r}")
        return done

    def put_batch(self, job: str, batch: int, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
        """Commit one batch's arrays atomically (all or nothing)."""
        payload = self._framed(pack_arrays(arrays))
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?)",
                      (job, batch, start, stop, payload, time.time()))

    def batches(self, job: str) -> Iterator[tuple[int, int, int, dict[str, np.ndarray]]]:
        """``(batch, start, stop, arrays)`` of ``job`` in batch order."""
        rows = self._conn.execute("SELECT batch, start, stop, payload FROM batches WHERE job = ? ORDER BY batch", (job,))
        for batch, start, stop, stored in rows:
            payload = self._unframed(stored)
            try:
                arrays = None if payload is None else unpack_arrays(payload)
            except Exception:  # noqa: BLE001 - numpy/zipfile raise several types for a damaged archive
                arrays = None
            if arrays is None:
                raise self._damaged(f"batch {batch} of {job!r}")
            yield batch, start, stop, arrays

    def gather(self, job: str) -> dict[str, np.ndarray]:
        """All batches of ``job`` concatenated in order."""
        parts = [arrays for *_, arrays in self.batches(job)]
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    # -- artifacts ----------------------------------------------------------------------------
    def put_artifact(self, name: str, payload: bytes) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?)", (name, self._framed(payload), time.time()))

    def get_artifact(self, name: str) -> bytes | None:
        """The artifact's payload (None if absent). A damaged one is refused (`StoreError`), or, in a store
        opened with ``overwrite``, dropped and reported absent so that it is computed again."""
        row = self._conn.execute("SELECT payload FROM artifacts WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        payload = self._unframed(row[0])
        if payload is None:
            if not self.overwrite:
                raise self._damaged(f"the saved {name!r}")
            self.drop_artifact(name)
        return payload

    def drop_artifact(self, name: str) -> None:
        """Forget an artifact (a damaged one that its job will compute again)."""
        with self._tx() as c:
            c.execute("DELETE FROM artifacts WHERE name = ?", (name,))

    def artifact_names(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM artifacts ORDER BY name")]


class _Transaction:
    """``with`` block running one IMMEDIATE transaction; disk errors become `StoreError` (store stays consistent)."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn, self.path = conn, path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot write to {self.path} ({exc})", "check free disk space and permissions") from None
        return self.conn

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return False
            except sqlite3.OperationalError as err:
                self._rollback()
                raise StoreError(f"could not commit to {self.path} ({err}); the last batch was not saved",
                                 "free disk space and re-run the same command to resume") from None
        self._rollback()
        if isinstance(exc, sqlite3.OperationalError):
            raise StoreError(f"could not write to {self.path} ({exc}); the last batch was not saved",
                             "free disk space and re-run the same command to resume") from None
        return False

    def _rollback(self) -> None:
        if self.conn.in_transaction:  # SQLite may already have rolled back (e.g. on SQLITE_FULL)
            self.conn.execute("ROLLBACK")


def concat_batches(results: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays of several batches concatenated in batch order."""
    parts = [results[b] for b in sorted(results)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def keep_batch(store: RunStore | None, results: dict[int, dict[str, np.ndarray]], job: str, batch: int, start: int,
               stop: int, arrays: dict[str, np.ndarray]) -> None:
    """A finished batch: committed to ``store`` when there is one, else kept in ``results`` (see `concat_batches`)."""
    if store is not None:
        store.put_batch(job, batch, start, stop, arrays)
    else:
        results[batch] = arrays
