"""The typed result of `brittle.audit`: `Audit` (table, summary, curves, examples, fitted stage objects),
saved to and read back from a run directory (`load_run`, from `brittle.core.runs`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.runs import EpsDict, Run, eps_keyed, json_ready, load_run, lookup_eps, with_eps_keys  # noqa: F401
from ..core.serialize import jsonable as _jsonable  # shared with the CLI's --json output
from ..errors import InputError, StoreError

#: summary sections keyed by ε (one level deep, or two for the pseudo-margin's per-ε metrics)
@dataclass
class Audit:
    """Result of `audit`: per-sample ``table`` (pandas), ``summary`` (JSON-ready dict), ROC/PR ``curves``,
    the most brittle inputs in ``examples`` (arrays), and the run ``directory`` when saved."""

    table: pd.DataFrame
    summary: dict[str, Any]
    curves: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, np.ndarray] | None = None
    directory: Path | None = None
    fitted: dict[str, Any] = field(default_factory=dict)  # audit stage name → fitted object (saved to its file)

    def __repr__(self) -> str:
        from ..core.runs import summary_repr

        return summary_repr("Audit", self.summary, len(self.table), self.directory)

    def to_frame(self) -> pd.DataFrame:
        """The per-sample table (``table``), as every result's ``to_frame()`` gives it."""
        return self.table

    @property
    def pseudo_margin(self) -> Any:
        """The fitted `PseudoMargin` of the ``pseudo_margin`` stage, or None."""
        return self.fitted.get("pseudo_margin")

    @property
    def monitor(self) -> Any:
        """The calibrated `Monitor` of the ``monitor`` stage, or None."""
        return self.fitted.get("monitor")

    def save(self, directory: str | os.PathLike) -> Path:
        """Write summary.json, samples.parquet, curves.json and examples.npz into ``directory``, and
        pseudo_margin.json / monitor.json when the audit fitted them (stale ones from an earlier run are removed)."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            from .stages import STAGES

            for stage_name, stage in STAGES.items():
                name, obj = stage.file, self.fitted.get(stage_name)
                if name is None:
                    continue
                if obj is None:
                    (directory / name).unlink(missing_ok=True)
                else:
                    obj.save(directory / (name + ".tmp"))
                    os.replace(directory / (name + ".tmp"), directory / name)
            _atomic_write(directory / "summary.json", json.dumps(_jsonable(self.summary), indent=2).encode())
            _atomic_write(directory / "curves.json", json.dumps(_jsonable(self.curves)).encode())
            tmp = directory / "samples.parquet.tmp"
            self.table.to_parquet(tmp, index=False)
            os.replace(tmp, directory / "samples.parquet")
            if self.examples is not None:
                with open(directory / "examples.npz.tmp", "wb") as fh:
                    np.savez_compressed(fh, **self.examples)
                os.replace(directory / "examples.npz.tmp", directory / "examples.npz")
        except OSError as exc:
            raise StoreError(f"cannot write results to {directory} ({exc.strerror or exc})",
                             "choose a writable --out directory with free space") from None
        self.directory = directory
        return directory

    def report(self, out: str | os.PathLike | None = None) -> Path:
        """Render the HTML report of a saved audit (``DIR/report.html``)."""
        from ..report import render_report

        if self.directory is None:
            raise InputError("the audit has not been saved yet", "call audit.save(DIR) (or pass out=DIR) first")
        return render_report(self.directory, out)


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
