"""Progress bars that behave in a terminal and in a pipe or log file.

In a terminal: an ordinary tqdm bar on stderr. Anywhere else (``brittle audit … 2> log``, CI, ``| tee``):
no carriage-return redraws, which a file keeps as one long line repeating every update; instead a plain line
at most every 30 seconds, and the final state once.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

#: Seconds between two progress lines when stderr is not a terminal.
PIPE_INTERVAL_S = 30.0


class _Lines:
    """A file for tqdm that turns each redraw into one plain line and drops repeats and blanks."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        key = line.split(" [", 1)[0]  # the same count again with another rate is a repeat
        if line and key != self.last:
            self.stream.write(line + "\n")
            self.last = key
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream: Any = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(total: int | None = None, *, desc: str = "", unit: str = "it", enabled: bool = True,
                 leave: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr (disabled when ``enabled`` is false); sparse plain lines when stderr is no terminal."""
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(total=total, disable=True)
    if is_terminal():
        return tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True, file=sys.stderr, **kwargs)
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=_Lines(sys.stderr), ascii=True, ncols=100,
                mininterval=PIPE_INTERVAL_S, maxinterval=PIPE_INTERVAL_S, **kwargs)
