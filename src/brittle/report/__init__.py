"""HTML reports of audits: one self-contained page per run, and a page comparing several runs.

`render_report` reads a run directory (``summary.json``, ``samples.parquet``, ``curves.json`` and optionally
``examples.npz``) and writes ``report.html`` beside them; `render_comparison` puts several runs side by side.
Both pages embed their figures as PNG ``data:`` URIs and fetch nothing, so they open offline.
"""

from ._load import Run, load_run
from ._render import render_comparison, render_report

__all__ = ["Run", "load_run", "render_comparison", "render_report"]
