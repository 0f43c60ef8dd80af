"""Checks of XGBoost's and LightGBM's native model files before their own parsers read them.

Their parsers crash or hang on some corrupt files (a truncated LightGBM text: a segmentation fault; a truncated
XGBoost ``.ubj``: an endless loop that allocates memory), so `brittle.explain.loading` checks a file here first
and refuses it with one :class:`~brittle.errors.ModelError` line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError, ModelError

XGB_FIX = "save the model with XGBoost's save_model('model.json')"
LGB_FIX = "save the model with LightGBM's booster.save_model('model.txt')"


def lightgbm_text(path: Path) -> str:
    """The text of a LightGBM model file, checked for what LightGBM's own parser crashes on, minus ``tree_sizes``.

    With ``tree_sizes`` the parser finds tree ``i`` at the first ``Tree=`` line plus the sizes before ``i``,
    without bounds checks (a truncated file: a segmentation fault), and parses the trees in an OpenMP loop where
    an error in a tree aborts the process. Without it, it reads the trees in order and raises on a bad one.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read model file {path.name}: {exc.strerror}",
                         "check the file's permissions") from None
    if not raw.strip():
        raise ModelError(f"model file {path.name} is empty", LGB_FIX)
    if raw.split(b"\n", 1)[0].strip() != b"tree":
        raise ModelError(f"{path.name} is not a LightGBM text model (its first line is not 'tree')", LGB_FIX)
    if b"\0" in raw:  # LightGBM's parser would stop there, as at the end of a truncated file
        raise ModelError(f"{path.name} is a corrupt LightGBM model (byte {raw.index(bytes(1))} is a NUL byte)",
                         LGB_FIX)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{path.name} is a corrupt LightGBM model (byte {exc.start} is not UTF-8 text)",
                         LGB_FIX) from None
    raw = raw.replace(b"\r\n", b"\n")  # Windows line endings (e.g. git autocrlf): as LightGBM wrote it
    first, end = raw.find(b"\nTree="), raw.find(b"\nend of trees")
    if first < 0 or end < first:
        raise ModelError(f"{path.name} is a truncated or corrupt LightGBM model (its trees do not end with "
                         f"'end of trees')", LGB_FIX)
    params = raw.find(b"\nparameters:\n", end)
    if params >= 0:  # LightGBM's Python package reads these "[name: value]" lines back, trusting their shape
        stop = raw.find(b"\nend of parameters", params)
        if stop < 0:
            raise ModelError(f"{path.name} is a truncated LightGBM model (its parameters do not end with "
                             f"'end of parameters')", LGB_FIX)
        for line in raw[params + len(b"\nparameters:\n"):stop].splitlines():  # a lone "\r" ends a line too
            line = line.strip()
            if line and not (line.startswith(b"[") and line.endswith(b"]") and b": " in line):
                raise ModelError(f"{path.name} is a corrupt LightGBM model (a line of its parameters is not "
                                 f"'[name: value]')", LGB_FIX)
    # Without tree_sizes LightGBM reads the trees one after the other (bounded by the text) instead of at the
    # offsets tree_sizes gives, in parallel, where a malformed tree aborts the process instead of raising
    raw = b"".join(ln for ln in raw[:first + 1].splitlines(keepends=True) if not ln.startswith(b"tree_sizes=")) \
        + raw[first + 1:]
    return raw.decode("utf-8")


_UBJ_SIZES = {b"Z": 0, b"N": 0, b"T": 0, b"F": 0, b"i": 1, b"U": 1, b"C": 1, b"I": 2, b"l": 4, b"d": 4, b"L": 8,
              b"D": 8}
_UBJ_INTS = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q"}


def ubjson_problem(raw: bytes) -> str | None:
    """Why ``raw`` is not one complete UBJSON value (truncated, an unknown marker, trailing bytes), or None.

    Only the structure is walked: typed arrays of numbers are skipped by their size, so this is fast.
    """
    import struct

    n = len(raw)

    class Bad(Exception):
        pass

    def need(pos: int, k: int) -> None:
        if k < 0 or pos + k > n:
            raise Bad(f"ends early, at byte {n}" if k >= 0 else f"negative length at byte {pos}")

    def integer(pos: int) -> tuple[int, int]:
        need(pos, 1)
        marker = raw[pos:pos + 1]
        if marker not in _UBJ_INTS:
            raise Bad(f"expected a length at byte {pos}")
        size = _UBJ_SIZES[marker]
        need(pos + 1, size)
        value = struct.unpack(_UBJ_INTS[marker], raw[pos + 1:pos + 1 + size])[0]
        if value < 0:
            raise Bad(f"negative length at byte {pos}")
        return value, pos + 1 + size

    def payload(marker: bytes, pos: int, depth: int) -> int:
        if marker in _UBJ_SIZES:
            need(pos, _UBJ_SIZES[marker])
            return pos + _UBJ_SIZES[marker]
        if marker in (b"S", b"H"):
            length, pos = integer(pos)
            need(pos, length)
            return pos + length
        if marker in (b"[", b"{"):
            return container(marker == b"{", pos, depth + 1)
        raise Bad(f"unknown marker {marker!r} at byte {pos - 1}")

    def value(pos: int, depth: int) -> int:
        need(pos, 1)
        return payload(raw[pos:pos + 1], pos + 1, depth)

    def container(is_object: bool, pos: int, depth: int) -> int:
        if depth > 256:
            raise Bad("nested too deeply")
        kind = count = None
        if raw[pos:pos + 1] == b"$":
            need(pos + 1, 1)
            kind, pos = raw[pos + 1:pos + 2], pos + 2
            need(pos, 1)
            if raw[pos:pos + 1] != b"#":
                raise Bad(f"a typed container without a count at byte {pos}")
        if raw[pos:pos + 1] == b"#":
            count, pos = integer(pos + 1)
        if count is not None:
            if kind in _UBJ_SIZES and not is_object:  # a typed array of numbers: skipped by its size
                need(pos, count * _UBJ_SIZES[kind])
                return pos + count * _UBJ_SIZES[kind]
            need(pos, min(count, n))  # every element takes a byte at least (ends early otherwise)
            for _ in range(count):
                if is_object:
                    pos = payload(b"S", pos, depth)
                pos = payload(kind, pos, depth) if kind is not None else value(pos, depth)
            return pos
        end = b"}" if is_object else b"]"
        while True:
            need(pos, 1)
            if raw[pos:pos + 1] == end:
                return pos + 1
            if raw[pos:pos + 1] == b"N":  # no-op
                pos += 1
                continue
            if is_object:
                pos = payload(b"S", pos, depth)
            pos = value(pos, depth)

    try:
        end = value(0, 0)
    except Bad as exc:
        return str(exc)
    except RecursionError:
        return "nested too deeply"
    if raw[end:].strip():
        return f"unexpected bytes after the model, at byte {end}"
    return None


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Within the block, whatever is written to file descriptor 2 (by native code too) is discarded."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2: nothing to silence
        yield
        return
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
