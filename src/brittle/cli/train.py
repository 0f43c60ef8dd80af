"""`brittle train` and `brittle finetune`: resumable (robust) training."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ._common import (DATA_ROOT, OVERWRITE, State, TRUST_MODEL, WEIGHTS, add_missing_channel, command_line, console, emit,
                      safe_text, torch_seed)


def _training(net: Any, out: Path, data: str, val_data: Optional[str], data_root: Optional[Path], limit: Optional[int],
              options: dict[str, Any], overwrite: bool, eval_n: int) -> None:
    from ..core.validation import check_positive_int
    from ..data.loading import load_data
    from ..training.run import train_run

    # named by its option (load_data's limit= would call it "limit"), before any data is loaded
    check_positive_int(eval_n, "--eval-n", "pass the number of validation samples to evaluate, e.g. --eval-n 1000")
    train_data = load_data(data, data_root, limit=limit)
    val = load_data(val_data, data_root, limit=eval_n) if val_data else None
    modes = [(module, module.training) for module in net.modules()]
    net.eval()  # the probe for a missing channel must not update batch-norm statistics before training
    try:  # (N, H, W) grayscale images: the channel is added with a note, as `brittle audit` does
        train_data = add_missing_channel(net, train_data)
        val = add_missing_channel(net, val) if val is not None else None
    finally:
        for module, training in modes:
            module.training = training
    summary = train_run(net, train_data, out, val_data=val, overwrite=overwrite, progress=not State.quiet,
                        command=command_line(), eval_n=eval_n, **options)
    table = Table(title=safe_text(f"training run {out}", "table.title"))  # a path: printed literally
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("epochs", "clean_accuracy", "robust_accuracy", "robust_eps", "expected_robustness", "train_seconds"):
        if key in summary:
            value = summary[key]
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    emit({k: v for k, v in summary.items() if k != "history"}, table)
    if not State.quiet:
        console.print(safe_text(f"weights: {out / 'model.pt'}  ·  curve: {out / 'training_curve.png'}  ·  "
                                f"{out / 'summary.json'}"))


def _train_options(method: str, attack: str, norm: str, eps: float, steps: int, trades_beta: float, epochs: int,
                   lr: float, batch_size: int, schedule: str, t1: Optional[float], t2: Optional[float],
                   warmup: Optional[float], label_smoothing: float, protocol: str, last_k: int, seed: int,
                   device: str) -> dict[str, Any]:
    schedule_options = {k: v for k, v in (("t1", t1), ("t2", t2), ("warmup", warmup)) if v is not None}
    return {"method": method, "attack": attack, "norm": norm, "eps": eps, "steps": steps, "trades_beta": trades_beta,
            "epochs": epochs, "lr": lr, "batch_size": batch_size, "schedule": schedule,
            "schedule_options": schedule_options, "label_smoothing": label_smoothing, "protocol": protocol,
            "last_k": last_k, "seed": seed, "device": device}


_METHOD = typer.Option("standard", help="standard, madry or trades.")
_ATTACK = typer.Option("pgd", help="Training attack: pgd, fgsm-rs or apgd-ce.")
_NORM = typer.Option("linf", help="linf or l2.")
_EPS = typer.Option(0.0, help="Target ε of adversarial training.")
_STEPS = typer.Option(10, help="Attack steps (pgd / apgd-ce).")
_BETA = typer.Option(6.0, help="TRADES β.")
_EPOCHS = typer.Option(5, help="Epochs.")
_LR = typer.Option(1e-3, help="Learning rate (Adam).")
_BATCH = typer.Option(128, help="Batch size.")
_SCHEDULE = typer.Option("constant", help="ε schedule: constant, linear, two-hinge or auto.")
_T1 = typer.Option(None, help="two-hinge: epoch where the ε ramp starts (< --epochs; default 10% of them).")
_T2 = typer.Option(None, help="two-hinge: epoch where the ramp reaches ε (<= --epochs; default 40% of them).")
_WARMUP = typer.Option(None, help="linear: epochs of warm-up (<= --epochs; default 30% of them).")
_SMOOTH = typer.Option(0.0, help="Label smoothing.")
_PROTOCOL = typer.Option("full", help="full, linear (probe) or partial (last --last-k layers); the layers not "
                                       "trained stay in eval mode (BatchNorm statistics kept, dropout off).")
_LASTK = typer.Option(1, help="Layers trained with --protocol partial.")


def train_cmd(out: Path = typer.Option(..., "--out", "-o", help="Run directory (resumable)."),
              arch: str = typer.Option("brittle.models.zoo.architectures:mnist_cnn", help="module:factory building the model."),
              data: str = typer.Option("mnist:train", "--data", "-d", help="Training data."),
              val_data: Optional[str] = typer.Option("mnist:test", help="Validation / evaluation data."),
              data_root: Optional[Path] = DATA_ROOT,
              limit: Optional[int] = typer.Option(None, help="Use only the first N training samples."),
              method: str = _METHOD, attack: str = _ATTACK, norm: str = _NORM, eps: float = _EPS,
              steps: int = _STEPS, trades_beta: float = _BETA, epochs: int = _EPOCHS, lr: float = _LR,
              batch_size: int = _BATCH, schedule: str = _SCHEDULE, t1: Optional[float] = _T1,
              t2: Optional[float] = _T2, warmup: Optional[float] = _WARMUP, label_smoothing: float = _SMOOTH,
              eval_n: int = typer.Option(1000, help="Validation samples for the final robust evaluation."),
              seed: int = typer.Option(0, help="Random seed."), device: str = typer.Option("cpu", help="cpu, cuda, auto."),
              overwrite: bool = OVERWRITE) -> None:
    """Train a model from scratch (standard, Madry or TRADES) with an ε schedule; resumable."""
    from ..core.validation import check_nonnegative_int
    from ..models.loading import import_factory

    torch_seed(check_nonnegative_int(seed, "seed", "pass e.g. --seed 0"))
    net = import_factory(arch)()
    _training(net, out, data, val_data, data_root, limit,
              _train_options(method, attack, norm, eps, steps, trades_beta, epochs, lr, batch_size, schedule, t1, t2,
                             warmup, label_smoothing, "full", 1, seed, device), overwrite, eval_n)


def finetune(model: str = typer.Option(..., "--model", "-m", help="Pretrained model: zoo name or module:factory."),
             out: Path = typer.Option(..., "--out", "-o", help="Run directory (resumable)."),
             weights: Optional[Path] = WEIGHTS,
             trust_model: bool = TRUST_MODEL,
             data: str = typer.Option(..., "--data", "-d", help="Target-task training data."),
             val_data: Optional[str] = typer.Option(None, help="Target-task validation / evaluation data."),
             data_root: Optional[Path] = DATA_ROOT,
             limit: Optional[int] = typer.Option(None, help="Use only the first N training samples."),
             reset_head: bool = typer.Option(False, help="Re-initialise the last linear layer first."),
             protocol: str = _PROTOCOL, last_k: int = _LASTK,
             method: str = _METHOD, attack: str = _ATTACK, norm: str = _NORM, eps: float = _EPS,
             steps: int = _STEPS, trades_beta: float = _BETA, epochs: int = _EPOCHS, lr: float = _LR,
             batch_size: int = _BATCH, schedule: str = _SCHEDULE, t1: Optional[float] = _T1,
             t2: Optional[float] = _T2, warmup: Optional[float] = _WARMUP, label_smoothing: float = _SMOOTH,
             eval_n: int = typer.Option(1000, help="Validation samples for the final robust evaluation."),
             seed: int = typer.Option(0, help="Random seed."), device: str = typer.Option("cpu", help="cpu, cuda, auto."),
             overwrite: bool = OVERWRITE) -> None:
    """Fine-tune a pretrained model on a target task (full, linear probe or partial), e.g. robustly with an ε
    schedule; resumable."""
    from torch import nn

    from ..core.validation import check_nonnegative_int
    from ..models.loading import load_model

    torch_seed(check_nonnegative_int(seed, "seed", "pass e.g. --seed 0"))
    net = load_model(model, weights, device="cpu", trust=trust_model)
    if reset_head:
        last = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if not last:
            from ..errors import ModelError
            raise ModelError("--reset-head: the model has no nn.Linear layer", "drop --reset-head")
        last[-1].reset_parameters()
    _training(net, out, data, val_data, data_root, limit,
              _train_options(method, attack, norm, eps, steps, trades_beta, epochs, lr, batch_size, schedule, t1, t2,
                             warmup, label_smoothing, protocol, last_k, seed, device), overwrite, eval_n)


def register(app: typer.Typer) -> None:
    app.command('train')(train_cmd)
    app.command('finetune')(finetune)
