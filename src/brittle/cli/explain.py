"""`brittle explain`: exact interventional TreeSHAP, Shapley–Taylor interactions and a consensus order."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ._common import State, command_line, console, emit, safe_text


def explain(model: Path = typer.Option(..., "--model", "-m",
                                       help="Tree model: .skops, XGBoost .json/.ubj, LightGBM .txt; "
                                            ".joblib/.pkl only with --trust."),
            data: Path = typer.Option(..., "--data", "-d", help="CSV or Parquet table of inputs (numeric columns)."),
            out: Path = typer.Option(..., "--out", "-o", help="Output directory (new or empty)."),
            background: int = typer.Option(100, help="Background rows sampled from the data."),
            interactions: bool = typer.Option(False, "--interactions",
                                              help="Also compute Shapley–Taylor interaction matrices."),
            output: str = typer.Option("auto", help="Model output to explain: auto, an index or a class label."),
            limit: Optional[int] = typer.Option(1000, help="Explain only the first N rows."),
            drop: Optional[str] = typer.Option(None, help="Comma-separated columns to ignore (e.g. the target)."),
            seed: int = typer.Option(0, help="Random seed (background sample, bootstrap)."),
            trust: bool = typer.Option(False, "--trust",
                                       help="Allow pickle/joblib model files (loading them runs their code)."),
            overwrite: bool = typer.Option(False, help="Replace an earlier explanation in --out.")) -> None:
    """Explain a tree model exactly (interventional TreeSHAP); writes values, summary.json and report.html."""
    from ..explain.run import explain_to_dir

    out_arg: object = output
    if output != "auto" and output.lstrip("-").isdigit():
        out_arg = int(output)
    summary = explain_to_dir(model, data, out, background=background, interactions=interactions, output=out_arg,
                             limit=limit, drop=[c for c in (drop or "").split(",") if c], seed=seed, trust=trust,
                             overwrite=overwrite, command=command_line())
    # feature names and class labels come from the data: printed literally (see safe_text)
    table = Table(title=safe_text(f"explain: {summary['model_type']} — {summary['output']}", "table.title"))
    table.add_column("feature")
    table.add_column("mean |φ|", justify="right")
    for name, value in sorted(summary["mean_abs_attribution"].items(), key=lambda kv: -kv[1]):
        table.add_row(safe_text(name), f"{value:.4g}")
    emit(summary, table)
    if not State.quiet:
        c = summary["consensus"]
        console.print(safe_text(f"consensus: {c['cardinality']} of {c['mean_order_pairs']} pairs of the mean "
                                f"order ({100 * c['support']:.0f}%); report: {out / 'report.html'}"))


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
