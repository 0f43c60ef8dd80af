"""`brittle zoo list | show | build`: the bundled MNIST models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ._common import emit

zoo_app = typer.Typer(help="The bundled MNIST model zoo.", no_args_is_help=True)


@zoo_app.command("list")
def zoo_list() -> None:
    """List the bundled models with their clean and robust accuracy."""
    from ..models import zoo

    rows = [zoo.card(name) for name in zoo.names()]
    table = Table(title="brittle zoo (MNIST)")
    for col in ("name", "training", "clean acc", "robust acc (PGD)", "robust acc (margins)", "τ"):
        table.add_column(col)
    for c in rows:
        recipe, ra = c.get("recipe", {}), c.get("robust_accuracy", {})
        mc = c.get("margin_consistency_estimate") or {}
        by_margins = (mc.get("robust_accuracy_from_margins") or {}).get("value")
        table.add_row(c["name"], f"{recipe.get('method', '?')} {recipe.get('norm', '')} eps={recipe.get('eps', 0)}",
                      f"{100 * c.get('clean_accuracy', float('nan')):.2f}%",
                      f"{100 * ra.get('value', float('nan')):.2f}% ({ra.get('norm', '')} eps={ra.get('eps', '')})",
                      "–" if by_margins is None else f"{100 * by_margins:.1f}% (first {mc.get('samples')})",
                      "–" if mc.get("kendall_tau") is None else f"{mc['kendall_tau']:.2f}")
    emit({"models": rows}, table)


@zoo_app.command("show")
def zoo_show(name: str = typer.Argument(..., help="Zoo model name (see `brittle zoo list`).")) -> None:
    """Show a zoo model's card: recipe, accuracies, how it was built."""
    from ..models import zoo

    info = zoo.card(name)
    table = Table(title=f"zoo model {name}", show_header=False)
    for key, value in info.items():
        table.add_row(key, json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
    emit(info, table)


@zoo_app.command("build")
def zoo_build(root: Path = typer.Option(..., "--root", help="Folder with MNIST idx files (train and test)."),
              names: Optional[str] = typer.Option(None, help="Comma-separated subset of models to build."),
              device: str = typer.Option("auto", help="auto, cpu or cuda."),
              epochs_scale: float = typer.Option(1.0, help="Scale every recipe's epochs (quick trial < 1).")) -> None:
    """Train the zoo from brittle's own training code and write weights and model cards."""
    from ..models.zoo.build import build_zoo

    build_zoo(root=str(root), names=names.split(",") if names else None, device=device, epochs_scale=epochs_scale)


def register(app: typer.Typer) -> None:
    app.add_typer(zoo_app, name="zoo")
