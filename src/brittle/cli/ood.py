"""`brittle ood`: benchmark post-hoc OOD detectors on a model — ID data vs named OOD sets — resumably.

    brittle ood -m standard --id mnist --ood fashion-mnist,uniform,rotated --detectors all --out runs/ood

Every input is validated before the output directory is created (model, ID data, OOD sets, detector names,
target TPR, ``--combine`` strategies and that they have two detectors to combine; fit data too small or of too
few classes for a detector is refused by `brittle.ood.run.run_ood` before it opens the store). Writes ``DIR/summary.json``, ``DIR/scores.parquet``, ``DIR/report.html``
and the resumable ``DIR/run.sqlite`` (see `brittle.ood.run`).

Extension point for combinations of detectors (issue #16): ``--combine a,b`` is parsed here and handed to
``brittle.ood.combine`` when that module exists — it must provide ``validate_cli(names: list[str],
detectors: list[str]) -> list[str]`` (called during validation, before the output directory exists;
``detectors`` are the run's detector names) and ``cli_extension(names, options) -> callable(RunContext) -> dict``
(run after the detectors, see `brittle.ood.run.RunContext`). Until then
``--combine`` is refused with a one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ._common import OVERWRITE, State, TRUST_MODEL, WEIGHTS, add_missing_channel, command_line, console, emit, safe_text


def _combine_module() -> Any:
    import importlib

    from ..errors import InputError

    try:
        mod = importlib.import_module("brittle.ood.combine")
    except ModuleNotFoundError as exc:
        if exc.name != "brittle.ood.combine":
            raise
        raise InputError("--combine needs the detector-combination module, which this brittle does not have",
                         "drop --combine, or upgrade brittle") from None
    if not (hasattr(mod, "validate_cli") and hasattr(mod, "cli_extension")):
        raise InputError("--combine is not wired to the command line yet (brittle.ood.combine lacks validate_cli / "
                         "cli_extension)", "drop --combine, or combine detectors from Python")
    return mod


def _ood_set(name: str, test: Any, seed: int, root: str | None, limit: int | None, net: Any) -> Any:
    from ..data.loading import load_data
    from ..data.ood_sets import OOD_SETS, load_ood_set

    if name in OOD_SETS:
        return load_ood_set(name, test, seed=seed, root=root, n=limit)
    return add_missing_channel(net, load_data(name, root, limit=limit))


def _check_model_on_id(net: Any, bench: Any) -> None:
    """One forward pass on two ID inputs and the ID labels against the model's outputs — before any file is
    written (a model that does not take the data, or labels it cannot have, fail here and not mid-run)."""
    import warnings

    import torch

    from ..errors import InputError
    from ..models.loading import checked_forward

    dev = next((p.device for p in net.parameters()), torch.device("cpu"))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, logits = checked_forward(net, bench.fit_data.x[:2].to(dev), check_values=False)
    classes = int(logits.shape[1])
    tops = [int(d.y.max()) for d in (bench.fit_data, bench.val_data, bench.test_data)
            if d is not None and d.y is not None and len(d.y)]
    if tops and max(tops) >= classes:
        raise InputError(f"the ID labels go up to {max(tops)} but the model has {classes} outputs "
                         f"(classes 0..{classes - 1})",
                         "pass ID data labelled with the model's classes (or without labels: detectors then fit "
                         "on the predicted classes)")


def _table(summary: dict[str, Any]) -> Table:
    sets = summary["ood_sets"]  # set names (data file paths), the model and detector names: printed literally
    table = Table(title=safe_text(f"AUROC · FPR@{round(100 * summary['target_tpr'])}%TPR  ({summary.get('model')})",
                                  "table.title"))
    table.add_column("detector")
    for s in sets:
        table.add_column(safe_text(s), justify="right")
    table.add_column("mean AUROC", justify="right")
    for det, per_set in summary["metrics"].items():
        table.add_row(safe_text(det),
                      *[f"{per_set[s]['auroc']:.3f} · {100 * per_set[s]['fpr_at_tpr']:.0f}%" for s in sets],
                      f"{summary['mean_auroc'][det]:.3f}")
    winners = summary["winners"]
    table.caption = safe_text("best AUROC: " + ", ".join(f"{s} → {winners[s]['auroc']}" for s in sets)
                              + f"; mean → {winners['mean']['auroc']}", "table.caption")
    return table


def ood(model: str = typer.Option(..., "--model", "-m", help="Zoo name, TorchScript file, or module:factory."),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory (resumable run)."),
        id_data: str = typer.Option("mnist", "--id", help="In-distribution data: mnist (fit/val/test splits, see "
                                    "docs/ood.md) or any --data spec (split 40/10/50% in order)."),
        ood_sets: str = typer.Option("all", "--ood", help="Comma-separated OOD sets: fashion-mnist, uniform, "
                                     "gaussian, rotated, inverted, permuted, digits, 'all', or data specs (.npz)."),
        detectors: str = typer.Option("all", "--detectors", help="Comma-separated detector names or 'all'."),
        combine: Optional[str] = typer.Option(None, "--combine", help="Combination strategies of the detectors "
                                              "(when available), comma-separated."),
        weights: Optional[Path] = WEIGHTS,
        trust_model: bool = TRUST_MODEL,
        data_root: Optional[Path] = typer.Option(None, help="Folder with dataset files (MNIST train split, full "
                                                 "Fashion-MNIST); also BRITTLE_DATA_ROOT."),
        limit: Optional[int] = typer.Option(None, help="Cap every set at N inputs (quick runs)."),
        target_tpr: float = typer.Option(0.95, "--target-tpr", help="TPR (share of ID accepted) for FPR and thresholds."),
        batch_size: int = typer.Option(512, help="Inputs per forward pass."),
        device: str = typer.Option("auto", help="auto, cpu or cuda."),
        seed: int = typer.Option(0, help="Seed of the generated OOD sets."),
        overwrite: bool = OVERWRITE,
        report: bool = typer.Option(True, help="Write DIR/report.html.")) -> None:
    """Benchmark OOD detectors: fit on ID data, score ID test and OOD sets; summary.json, scores.parquet, report."""
    from ..core.validation import check_unit_interval
    from ..data.loading import load_data
    from ..data.ood_sets import OOD_SETS
    from ..errors import InputError, StoreError
    from ..models.loading import load_model, model_fingerprint
    from ..ood.benchmark import Benchmark, as_detectors
    from ..ood.run import run_ood

    # --- validate everything before the output directory exists --------------------------------------
    if out.exists() and not out.is_dir():
        raise StoreError(f"--out {out} exists and is not a directory", "pass a directory path")
    target_tpr = check_unit_interval(target_tpr, "target_tpr")
    if limit is not None and limit < 20:
        raise InputError(f"--limit must be at least 20, got {limit}", "pass e.g. --limit 1000")
    if batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {batch_size}", "pass e.g. --batch-size 512")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}", "pass e.g. --seed 0")
    names = [p.strip() for p in ood_sets.split(",") if p.strip()]
    if not names:
        raise InputError("--ood is empty", f"pass some of {', '.join(OOD_SETS)} or 'all'")
    names = [n for p in names for n in (OOD_SETS if p == "all" else [p])]
    names = list(dict.fromkeys(names))
    dets = as_detectors(detectors)
    strategies: list[str] = []
    if combine:
        mod = _combine_module()
        strategies = mod.validate_cli([p.strip() for p in combine.split(",") if p.strip()], [d.name for d in dets])
    net = load_model(model, weights, device=device, trust=trust_model)
    root = str(data_root) if data_root is not None else None
    for n in names:
        if n not in OOD_SETS and not Path(n).exists() and not n.startswith(("torchvision:", "fashion-mnist:")):
            if "/" in n or "\\" in n or Path(n).suffix:
                raise InputError(f"OOD data file {n} does not exist", "check the path (or name a generated set: "
                                 f"{', '.join(OOD_SETS)})")
            raise InputError(f"unknown OOD set {n!r}", f"use some of {', '.join(OOD_SETS)}, 'all', or a data file")
    if id_data.lower() in ("mnist", "mnist:test"):
        bench = Benchmark.mnist(names, root=root, seed=seed, limit=limit)
    else:

        data = add_missing_channel(net, load_data(id_data, root, limit=None))
        from ..ood.benchmark import split_id

        fit, val, test = split_id(data)
        if limit is not None:
            fit, val, test = fit.head(limit), val.head(max(10, limit // 4)), test.head(limit)
        sets = {n: _ood_set(n, test, seed, root, limit, net) for n in names}
        bench = Benchmark(fit, test, sets, val=val, name=id_data,
                          notes=[f"ID: {id_data} split in file order — 40% fit, 10% val, 50% test"])
    _check_model_on_id(net, bench)
    for det in dets:  # resolve layers / heads now: a model they do not fit is refused before any file is written
        if hasattr(det, "bind"):
            det.bind(net)
    config = {"command": "ood", "model_name": model, "model": model_fingerprint(net), "id": id_data,
              "data": {k: bench.data(k).fingerprint() for k in ("id_fit", "id_val", "id_test")},
              "ood": {k: v.fingerprint() for k, v in bench.ood.items()},
              "detectors": [d.to_dict()["params"] | {"name": d.name} for d in dets], "combine": strategies,
              "target_tpr": target_tpr, "seed": seed, "limit": limit}
    extensions = []
    if strategies:
        extensions.append(_combine_module().cli_extension(strategies, {"target_tpr": target_tpr, "seed": seed}))

    # --- run ---------------------------------------------------------------------------------------------
    common = {"config": config, "target_tpr": target_tpr, "overwrite": overwrite, "batch_size": batch_size,
              "device": device, "extensions": extensions, "report": report, "command": command_line()}
    if State.quiet:
        summary = run_ood(net, bench, dets, out, **common)
    else:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        # the description names the OOD sets (file paths): never read as markup
        with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task("ood", total=None)

            def progress(text: str, done: int, total: int) -> None:
                bar.update(task, description=safe_text(text).plain, completed=done, total=total)

            summary = run_ood(net, bench, dets, out, progress=progress, **common)
    emit(summary, _table(summary))
    if not State.quiet:
        console.print(safe_text(f"results: {out}" + (f"  ·  report: {out / 'report.html'}" if report else "")))


def register(app: typer.Typer) -> None:
    app.command("ood")(ood)
