"""`brittle margins`: input and logit margins of every sample."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ._common import (ADDRESS, BACKEND, DATA_ROOT, GPUS, OVERWRITE, STRENGTH, State, TRUST_MODEL, WEIGHTS, WORKERS,
                      attack_options, console, emit, load_inputs, parse_floats, safe_text)


def margins(model: str = typer.Option(..., "--model", "-m", help="Zoo name, TorchScript file, or module:factory."),
            data: str = typer.Option("mnist", "--data", "-d", help="mnist, fashion-mnist, digits, a .npz or idx folder."),
            out: Path = typer.Option(..., "--out", "-o", help="Output directory (resumable run)."),
            norm: str = typer.Option("linf", help="linf or l2."),
            method: str = typer.Option("brittle", help="brittle, ensemble, exact, fab-autoattack, fab-torchattacks, ..."),
            lower: Optional[str] = typer.Option(None, help="Certified lower bounds (ReLU nets): crown (tightest, slow on conv nets), crown-ibp or ibp."),
            strength: Optional[str] = STRENGTH,
            budgets: Optional[str] = typer.Option(
                None, help="Comma-separated ε at which robust accuracy will be read off the margins: samples just "
                           "above each are attacked at it (brittle's attack; `brittle audit` does this for --eps)."),
            weights: Optional[Path] = WEIGHTS,
            trust_model: bool = TRUST_MODEL,
            data_root: Optional[Path] = DATA_ROOT,
            limit: Optional[int] = typer.Option(None, help="Use only the first N samples."),
            domain: Optional[str] = typer.Option(None, help="Input domain low,high (default 0,1)."),
            batch_size: int = typer.Option(250, help="Samples per batch (and per checkpoint)."),
            device: str = typer.Option("auto", help="auto, cpu or cuda."),
            seed: int = typer.Option(0, help="Random seed."),
            overwrite: bool = OVERWRITE,
            backend: str = BACKEND, workers: int = WORKERS, gpus_per_worker: float = GPUS,
            address: Optional[str] = ADDRESS) -> None:
    """Input margins (a lower-upper bracket per sample) and logit margins; writes DIR/margins.parquet."""
    from ..execution.executor import make_executor
    from ..margins.compute import compute_margins

    options = attack_options(method, strength, parse_floats(budgets, "budgets") if budgets is not None else None)
    executor = make_executor(backend, workers=workers, gpus_per_worker=gpus_per_worker, address=address,
                             device=device)
    net, dataset = load_inputs(model, data, weights, data_root, limit, domain, device, trust_model)
    t0 = time.perf_counter()
    result = compute_margins(net, dataset, norm=norm, method=method, lower=lower, batch_size=batch_size,
                             device=device, seed=seed, out=out, overwrite=overwrite, progress=not State.quiet,
                             executor=executor, method_options=options)
    summary = {"n": len(result.table), "norm": norm, "method": method, **result.summary(),
               "seconds": round(time.perf_counter() - t0, 2), "margins": str(result.path)}
    table = Table(title=safe_text(f"input margins ({norm}) — {out}", "table.title"))  # paths: printed literally
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, "–" if value is None else f"{value:.4g}" if isinstance(value, float)
                      else safe_text(value))
    emit(summary, table)
    if not State.quiet:
        console.print(safe_text(f"per-sample results: {out / 'margins.parquet'}"))


def register(app: typer.Typer) -> None:
    app.command('margins')(margins)
