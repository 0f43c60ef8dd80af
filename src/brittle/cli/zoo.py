"""`brittle zoo list | show | build`: the bundled MNIST models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ._common import command_line, emit, safe_text

zoo_app = typer.Typer(help="The bundled MNIST model zoo.", no_args_is_help=True)


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.1f}%"


def _by(label: str) -> str:
    return {"brittle input margins": "margins", "apgd-ce-100": "APGD-CE-100"}.get(label, label)


@zoo_app.command("list")
def zoo_list() -> None:
    """List the bundled models: clean accuracy and the strongest robust-accuracy evaluation."""
    from ..models import zoo

    from rich import box

    rows = [zoo.card(name) for name in zoo.names()]
    table = Table(title="brittle zoo (MNIST test split)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, caption=(
        "robust: the lowest robust accuracy found by brittle's input margins or APGD-CE (100 steps) on the "
        "first 1000 test images; PGD-40 on all 10000 is a weaker attack and overstates robustness. "
        "Details: brittle zoo show NAME"), caption_justify="left")
    for col, right in (("name", False), ("training", False), ("clean", True), ("robust", True), ("at", False),
                       ("by", False), ("PGD-40", True), ("τ", True)):
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    for c in rows:
        recipe, ra = c.get("recipe", {}), c.get("robust_accuracy", {})
        best = zoo.strongest_robust_accuracy(c) or {}
        tau = (c.get("margin_consistency_estimate") or {}).get("kendall_tau")
        trained = recipe.get("method", "?") if recipe.get("method") == "standard" else \
            f"{recipe.get('method', '?')} {recipe.get('norm', '')} {recipe.get('eps', 0):g}"
        table.add_row(c["name"], trained, _pct(c.get("clean_accuracy")), _pct(best.get("value")),
                      f"{best.get('norm', '')} {best.get('eps', 0):g}" if best else "–",
                      _by(best.get("by", "")).replace("-100", "") if best else "–",
                      _pct(ra.get("value")), "–" if tau is None else f"{tau:.2f}")
    emit({"models": rows}, table)


@zoo_app.command("show")
def zoo_show(name: str = typer.Argument(..., help="Zoo model name (see `brittle zoo list`)."),
             full: bool = typer.Option(False, "--full", help="Every field of the card, training history included "
                                                                "(--json prints the card as JSON).")) -> None:
    """Show a zoo model's card: recipe, accuracies (strongest evaluation first), how it was built."""
    from ..models import zoo

    info = zoo.card(name)
    table = Table(title=safe_text(f"zoo model {name}", "table.title"), show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")

    def add(field: str, value: str) -> None:  # a card's text (names, data paths) is printed literally
        table.add_row(field, safe_text(value))

    if full:
        for key, value in info.items():
            add(key, json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
        emit(info, table)
        return
    recipe = info.get("recipe", {})
    best = zoo.strongest_robust_accuracy(info) or {}
    mc = info.get("margin_consistency_estimate") or {}
    add("description", str(info.get("description", "")))
    add("architecture", f"{info['architecture']['name']} · input {tuple(info.get('input_shape', ()))} "
                        f"in {info.get('domain')} · {info.get('num_classes')} classes")
    add("training", f"{recipe.get('method')} ({recipe.get('attack', '')}, {recipe.get('norm', '')} "
                    f"ε = {recipe.get('eps', 0):g}), {recipe.get('epochs')} epochs, "
                    f"epoch {info.get('selected_epoch', '?')} kept, {info.get('training_seconds', '?')} s")
    add("clean accuracy", f"{_pct(info.get('clean_accuracy'))} on {info.get('clean_accuracy_data', '')}")
    if best:
        add("robust accuracy", f"{_pct(best['value'])} at {best['norm']} ε = {best['eps']:g} by "
                               f"{_by(best['by'])} on {best.get('data')} (the strongest evaluation)")
        for weaker in best.get("weaker", []):
            add("", f"{_pct(weaker['value'])} by {_by(weaker['by'])} ({weaker.get('samples')} images; weaker)")
    for e in zoo.evaluations(info):
        if best and e["norm"] == best["norm"] and abs(e["eps"] - best["eps"]) < 1e-9:
            continue
        add("also", f"{_pct(e['value'])} at {e['norm']} ε = {e['eps']:g} by {_by(e['by'])}")
    if mc:
        add("margin consistency", f"Kendall τ {mc.get('kendall_tau')} ({mc.get('norm')}, {mc.get('data')})")
    add("built with", f"{info.get('built_with', '')} (torch {info.get('torch_version', '?')}; "
                      "the command as it was run: today `brittle zoo build --root DIR --names NAME`)")
    table.caption = "every field of the card: --full (or --json)"
    emit(info, table)


@zoo_app.command("build")
def zoo_build(root: Path = typer.Option(..., "--root", help="Folder with MNIST idx files (train and test)."),
              names: Optional[str] = typer.Option(None, help="Comma-separated subset of models to build."),
              device: str = typer.Option("auto", help="auto, cpu or cuda."),
              epochs_scale: float = typer.Option(1.0, help="Scale every recipe's epochs (quick trial < 1)."),
              evaluate_only: bool = typer.Option(False, help="Re-measure built models' cards; no training."),
              margins_only: bool = typer.Option(False, help="Re-measure only the cards' margin consistency "
                                                            "(no training, no PGD/APGD).")) -> None:
    """Train the zoo from brittle's own training code and write weights and model cards."""
    from ..models.zoo.build import build_zoo

    build_zoo(root=str(root), names=names.split(",") if names else None, device=device, epochs_scale=epochs_scale,
              command=command_line(), evaluate_only=evaluate_only, margins_only=margins_only)


def register(app: typer.Typer) -> None:
    app.add_typer(zoo_app, name="zoo")
