"""The offline demo: a real audit of the bundled zoo on the bundled MNIST test split."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .models import zoo
from .auditing.pipeline import Audit, audit
from .data.loading import load_mnist
from .errors import InputError

#: (model, norm) pairs the demo audits when every model is present: every model under L∞ at MNIST's
#: standard budgets, and the standard and L2-trained models under L2.
DEMO_RUNS = (("standard", "linf"), ("linf_madry", "linf"), ("linf_trades", "linf"), ("l2_madry", "linf"),
             ("standard", "l2"), ("l2_madry", "l2"))


def run_demo(out: str | os.PathLike = "brittle-demo", n: int = 200, *, runs: Any = DEMO_RUNS,
             progress: bool = False, seed: int = 0, command: str | None = None) -> dict[str, Any]:
    """Audit zoo models on the first ``n`` bundled MNIST test images; write per-run and comparison reports.

    Re-running with the same settings resumes finished work; other settings replace it. Returns
    ``{"runs": {run name: Audit}, "comparisons": {norm: path}, "out": path}``.
    """
    from .report import render_comparison

    if n < 1:
        raise InputError(f"the demo needs at least one image, got n={n}", "pass e.g. --n 200")
    available = set(zoo.names())
    todo = [(m, nm) for m, nm in runs if m in available]
    if not todo:
        raise InputError("the bundled zoo has no models", "build it with `brittle zoo build --root DIR`")
    out = Path(out)
    data = load_mnist().head(n)
    audits: dict[str, Audit] = {}
    for name, norm in todo:
        run_dir = out / f"{name}-{norm}"
        result = audit(zoo.load(name), data, norm=norm, seed=seed, out=run_dir, overwrite=True, progress=progress,
                       model_name=name, command=command, n_boot=500)  # writes run_dir/report.html (once)
        audits[f"{name}-{norm}"] = result
    comparisons = {}
    for norm in sorted({nm for _, nm in todo}):
        dirs = [out / f"{m}-{nm}" for m, nm in todo if nm == norm]
        if len(dirs) > 1:
            comparisons[norm] = render_comparison(dirs, out / f"compare-{norm}.html")
    return {"runs": audits, "comparisons": comparisons, "out": out}
