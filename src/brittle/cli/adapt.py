"""`brittle adapt`: test-time adaptation along a shifted test stream (resumable), with its HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ._common import DATA_ROOT, OVERWRITE, State, TRUST_MODEL, WEIGHTS, command_line, console, emit, parse_floats, safe_text

ORDERS = ("sequence", "sorted", "imbalanced")


def _table(summary: dict[str, Any], title: str) -> Table:
    def pct(v: Any) -> str:
        return "–" if v is None else f"{100 * v:.1f}%"

    table = Table(title=safe_text(title, "table.title"))  # the model, data and layer names: printed literally
    for col in ("segment", "source", "adapted (last pass)"):
        table.add_column(col, justify="right" if col != "segment" else "left")
    for name, acc in (summary.get("accuracy_per_segment") or {}).items():
        table.add_row(safe_text(name), pct(summary["source_accuracy_per_segment"].get(name)), pct(acc))
    table.add_row("all", pct(summary.get("source_accuracy")), pct(summary.get("online_accuracy")))
    clean = summary.get("clean_accuracy") or {}
    after = (clean.get("after_pass") or [None])[-1]
    updates = ", ".join(f"{k} {v}" for k, v in (summary.get("updates_per_layer") or {}).items())
    table.caption = safe_text(f"clean held-out accuracy {pct(clean.get('source'))} → {pct(after)} · updates per "
                              f"layer: {updates or '–'} · {summary.get('steps')} steps in "
                              f"{summary.get('seconds', 0):.1f}s", "table.caption")
    return table


def adapt(model: str = typer.Option(..., "--model", "-m", help="Zoo name (e.g. standard_bn), TorchScript file, or "
                                                                 "module:factory with --weights."),
          data: str = typer.Option("mnist", "--data", "-d", help="mnist, fashion-mnist, a .npz or idx folder (images)."),
          shift: str = typer.Option(..., "--shift", "-s", metavar="NAME:SEV,...",
                                    help="Corruptions visited in sequence, e.g. gaussian_noise:3,fog:5 (all:5 = every "
                                         "corruption; clean = no corruption)."),
          out: Path = typer.Option(..., "--out", "-o", help="Output directory (resumable run)."),
          method: str = typer.Option("tent", help="tent, pl, shot-im, bn (BatchNorm statistics only) or source."),
          gate: str = typer.Option("none", help="none, least (threshold mode) or least-single (single-layer mode)."),
          threshold: float = typer.Option(0.75, help="Gate threshold λ in [-1, 1]: an update passes when cos > λ."),
          window: int = typer.Option(20, help="Gate window s: the anchor resets every s samples (or steps)."),
          window_unit: str = typer.Option("samples", help="samples or steps."),
          params: str = typer.Option("bn", help="Adapted parameters: bn (BatchNorm affine) or all."),
          lr: float = typer.Option(1e-3, help="Learning rate."),
          optimizer: str = typer.Option("adam", help="adam or sgd."),
          batch_size: int = typer.Option(128, help="Samples per step (down to 1)."),
          passes: int = typer.Option(1, help="Passes over the stream (over-adaptation shows after several)."),
          episodic: bool = typer.Option(False, help="Reset to the source model before every batch."),
          bn_stats: str = typer.Option("auto", help="BatchNorm statistics: auto, batch, ema or source."),
          order: str = typer.Option("sequence", help="sequence (shifts in order), sorted (by label within each "
                                                     "shift) or imbalanced (long-tailed classes)."),
          imbalance: float = typer.Option(10.0, help="--order imbalanced: most / least frequent class."),
          per_shift: Optional[int] = typer.Option(None, help="Images per shift (default: all after --limit)."),
          limit: Optional[int] = typer.Option(None, help="Use only the first N images for the stream."),
          holdout: int = typer.Option(1000, help="The last N images are held out, clean, to measure forgetting "
                                                 "(0: no forgetting measurement)."),
          weights: Optional[Path] = WEIGHTS,
          trust_model: bool = TRUST_MODEL,
          data_root: Optional[Path] = DATA_ROOT,
          domain: Optional[str] = typer.Option(None, help="Input domain low,high (default 0,1)."),
          chunk: int = typer.Option(1024, help="Samples per checkpoint of the adapted state."),
          device: str = typer.Option("cpu", help="cpu, cuda or auto."),
          seed: int = typer.Option(0, help="Seed of the corruptions and stream order."),
          save_model: bool = typer.Option(False, "--save-model", help="Write DIR/model.pt (the adapted state dict)."),
          overwrite: bool = OVERWRITE,
          report: bool = typer.Option(True, help="Write DIR/report.html.")) -> None:
    """Adapt a model online on a shifted test stream (TENT, PL, SHOT-IM, BatchNorm statistics; optional
    layer-wise gate); writes DIR/summary.json, DIR/steps.parquet, DIR/samples.parquet and DIR/report.html."""
    from ..adaptation.methods import make_adapter
    from ..adaptation.stream import adapt_run
    from ..data import corruptions as C
    from ..data.loading import DEFAULT_DOMAIN, load_data
    from ..errors import InputError
    from ..models.loading import load_model

    # every input is checked before the output directory exists
    shifts = C.parse_shifts(shift)
    if order not in ORDERS:
        raise InputError(f"unknown --order {order!r}", f"use one of {', '.join(ORDERS)}")
    for name, value, low in (("--batch-size", batch_size, 1), ("--passes", passes, 1), ("--chunk", chunk, 1),
                             ("--holdout", holdout, 0)):
        if value < low:
            raise InputError(f"{name} must be >= {low}, got {value}", f"pass e.g. {name} {max(low, 1)}")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}", "pass e.g. --seed 0")
    options: dict[str, Any] = {"lr": lr, "optimizer": optimizer, "params": params, "gate": gate,
                               "threshold": threshold, "window": window, "window_unit": window_unit,
                               "episodic": episodic, "bn_stats": bn_stats, "device": device}
    adapter = make_adapter(method, **options)
    adapter._validate()
    if out.exists() and not out.is_dir():
        from ..errors import StoreError
        raise StoreError(f"--out {out} is a file", "choose a directory")
    dom = tuple(parse_floats(domain, "domain")) if domain is not None else DEFAULT_DOMAIN
    if len(dom) != 2:
        raise InputError(f"--domain needs two numbers low,high, got {domain!r}", "pass e.g. --domain 0,1")
    dataset = load_data(data, data_root, domain=dom)
    if dataset.y is None:
        raise InputError(f"{data} has no labels, so accuracy along the stream cannot be measured",
                         "pass labelled data (labels are never shown to the adapter)")
    if holdout >= len(dataset):
        raise InputError(f"--holdout {holdout} leaves no images for the stream ({len(dataset)} in {data})",
                         "pass a smaller --holdout")
    clean = dataset.subset(slice(len(dataset) - holdout, len(dataset))) if holdout else None
    pool = dataset.subset(slice(0, len(dataset) - holdout)).head(limit)
    net = load_model(model, weights, device=device, trust=trust_model)
    stream = C.shift_stream(pool, shifts, seed=seed, per_shift=per_shift)
    if order == "sorted":
        stream = C.label_sorted(stream)
    elif order == "imbalanced":
        stream = C.class_imbalanced(stream, imbalance, seed=seed)
    run_config = {"model": model, "data": data, "shift": shift, "order": order, "limit": limit, "holdout": holdout,
                  "seed": seed, "per_shift": per_shift, "imbalance": imbalance if order == "imbalanced" else None}
    result = adapt_run(adapter, net, stream, out, batch_size=batch_size, passes=passes, clean=clean,
                       chunk_samples=chunk, overwrite=overwrite, progress=not State.quiet, save_model=save_model,
                       run_config=run_config, command=command_line())
    if report:
        result.report()
    emit(result.summary, _table(result.summary, f"{model} · {adapter.name} · {stream.data.name}"))
    if not State.quiet:
        extra = f"  ·  adapted weights: {out / 'model.pt'}" if save_model else ""
        console.print(safe_text(f"results: {out}" + (f"  ·  report: {out / 'report.html'}" if report else "")
                                + extra))


def register(app: typer.Typer) -> None:
    app.command("adapt")(adapt)
