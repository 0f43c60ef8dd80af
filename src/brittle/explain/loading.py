"""Loading tree models from files without running untrusted code.

- ``.skops``: scikit-learn models through skops (types outside skops' trusted set need ``trust=True``);
- ``.json`` / ``.ubj``: XGBoost's native formats; ``.txt`` / ``.lgb``: LightGBM's native text format;
- ``.joblib`` / ``.pkl`` / ``.pickle``: pickles can run arbitrary code when loaded, so only with ``trust=True``.

A corrupt file (random bytes, empty, truncated, another format) is refused with one :class:`ModelError` line.
Some are checked here before the library sees them, since its parser would crash or hang on them (a truncated
LightGBM text: a segmentation fault; a truncated XGBoost ``.ubj``: an endless loop that allocates memory).
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from ..errors import InputError, ModelError

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
#: skops leaves scikit-learn's tree structure out of its default trusted set; it is plain data (node arrays)
SKOPS_TREE_TYPES = ("sklearn.tree._tree.Tree",)
SUFFIXES = (".skops", ".json", ".ubj", ".txt", ".lgb") + PICKLE_SUFFIXES
XGB_FIX = "save the model with XGBoost's save_model('model.json')"
LGB_FIX = "save the model with LightGBM's booster.save_model('model.txt')"


def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(f"reading this model needs {module}, which is not installed",
                         f"pip install {extra}") from None


def load_model(path, trust: bool = False):
    """Load a fitted tree model from ``path`` (see the module docstring for the formats)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist", "pass the path of a saved model file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"model file {path.name!r} has an unknown format",
                         "save it as .skops (scikit-learn), .json/.ubj (XGBoost) or .txt (LightGBM)")
    if suffix in PICKLE_SUFFIXES:
        if not trust:
            raise InputError(f"{path.name} is a pickle/joblib file, and loading one runs any code it contains",
                             "save the model with skops.io.dump (or XGBoost/LightGBM's own save_model), "
                             "or pass --trust (trust=True) if you trust the file")
        import joblib

        try:
            return joblib.load(path)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad model file
            raise ModelError(f"cannot unpickle {path.name}: {type(exc).__name__}",
                             "check the file and the library versions it was saved with") from None
    if suffix == ".skops":
        sio = _need("skops.io", "skops")
        try:
            untrusted = sio.get_untrusted_types(file=path)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{path.name} is not a readable skops file ({type(exc).__name__})",
                             "save the model with skops.io.dump") from None
        untrusted = [t for t in untrusted if t not in SKOPS_TREE_TYPES]
        if untrusted and not trust:
            raise InputError(f"{path.name} holds types skops does not trust ({', '.join(untrusted[:3])})",
                             "pass --trust (trust=True) if you trust the file")
        return sio.load(path, trusted=list(SKOPS_TREE_TYPES) + untrusted)
    if suffix in (".json", ".ubj"):
        xgb = _need("xgboost", "xgboost")
        if path.stat().st_size == 0:
            raise ModelError(f"model file {path.name} is empty", XGB_FIX)
        if suffix == ".ubj":  # XGBoost's UBJSON reader loops forever, allocating, at the end of a truncated file
            problem = _ubjson_problem(path.read_bytes())
            if problem:
                raise ModelError(f"{path.name} is not an XGBoost model, or is corrupt or truncated ({problem})",
                                 XGB_FIX)
        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad model file
            raise ModelError(f"{path.name} is not an XGBoost model, or is corrupt or truncated "
                             f"({type(exc).__name__})", XGB_FIX) from None
        return booster
    lgb = _need("lightgbm", "lightgbm")
    text = _lightgbm_text(path)
    # LightGBM prints "[LightGBM] [Fatal] <the error>" on stderr before raising it, and its warnings on stdout
    log = io.StringIO()
    try:
        with _quiet_stderr(), redirect_stdout(log):
            booster = lgb.Booster(model_str=text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad model file
        detail = (str(exc).strip().splitlines() or [""])[0][:120]
        raise ModelError(f"{path.name} is not a LightGBM model, or is corrupt ({type(exc).__name__}"
                         + (f": {detail}" if detail else "") + ")", LGB_FIX) from None
    for line in log.getvalue().splitlines():
        if line.strip():
            warnings.warn(f"{path.name}: {line.strip()}", stacklevel=2)
    return booster


def _lightgbm_text(path: Path) -> str:
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


def _ubjson_problem(raw: bytes) -> str | None:
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
def _quiet_stderr() -> Iterator[None]:
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
