"""`brittle demo`: the offline demo on the bundled zoo and MNIST test split."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ._common import State, command_line, console, emit, safe_text


def demo(out: Path = typer.Option(Path("brittle-demo"), "--out", "-o", help="Output directory."),
         n: int = typer.Option(200, help="Number of bundled MNIST test images to audit."),
         seed: int = typer.Option(0, help="Random seed.")) -> None:
    """Offline demo: audit the bundled model zoo on the bundled MNIST test split (L∞ and L2), write reports."""
    from ..demo import run_demo

    result = run_demo(out, n, progress=not State.quiet, seed=seed, command=command_line())
    summaries = {name: a.summary for name, a in result["runs"].items()}
    table = Table(title=f"brittle demo: {n} MNIST test images, bundled zoo",
                  caption="robust accuracy and AUROC at the budget shown; E(robust): expected robustness, "
                          "accuracy averaged over ε in [0, largest ε]")
    for col in ("model", "budget", "clean", "robust", "τ", "AUROC", "E(robust)", "time"):
        table.add_column(col, justify="left" if col in ("model", "budget") else "right", no_wrap=True)
    for name, s in summaries.items():
        mid = str(s["eps"][len(s["eps"]) // 2])
        tau = (s.get("kendall_tau") or {}).get("value")
        auroc = s["detection"][mid]["auroc"]
        model_name, _, norm = name.rpartition("-")
        table.add_row(model_name or name, f"{'L∞' if norm == 'linf' else 'L2'} {float(mid):g}",
                      f"{100 * s['clean_accuracy']:.1f}%", f"{100 * s['robust_accuracy'][mid]['upper']:.1f}%",
                      "–" if tau is None else f"{tau:.2f}", "–" if auroc is None else f"{auroc:.3f}",
                      f"{100 * s['expected_robustness']['from_margins']:.1f}%", f"{s['seconds']:.0f}s")
    reports = {name: str(out / name / "report.html") for name in summaries}
    comparisons = {k: str(v) for k, v in result["comparisons"].items()}
    first = comparisons.get("linf") or next(iter(comparisons.values()), None) or next(iter(reports.values()))
    emit({"runs": summaries, "comparisons": comparisons, "reports": reports, "next": first}, table)
    if not State.quiet:
        for name, path in reports.items():
            console.print(safe_text(f"report: {path}"), highlight=False, soft_wrap=True)
        for norm, path in comparisons.items():
            console.print(safe_text(f"comparison ({norm}): {path}"), highlight=False, soft_wrap=True)
        console.print(safe_text(f"next: open {Path(first).resolve()} in a browser (every model side by side); then "
                                "audit your own model: brittle audit --help"), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command('demo')(demo)
