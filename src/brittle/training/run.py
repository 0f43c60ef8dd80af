"""Resumable training runs: a `brittle.training.trainer.Trainer` with a checkpoint per epoch in a run store.

``train_run`` writes into its output directory: ``run.sqlite`` (configuration, fingerprints, the state after
every finished epoch), and at the end ``model.pt`` (state dict), ``history.csv``, ``training_curve.png`` and
``summary.json`` (clean / robust / expected-robust accuracy). Re-running the same command after a kill
continues from the last finished epoch.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..analysis.robustness import expected_robustness, robust_accuracy_curve
from ..core.serialize import json_default, jsonable
from ..core.validation import check_eps_for_domain, check_eps_grid, check_positive_int
from ..data.loading import Data
from ..errors import StoreError
from ..execution.store import RunStore
from ..margins.compute import versions
from ..models.checkpoint import short_message
from ..models.loading import model_fingerprint, resolve_device
from .trainer import History, Trainer

CHECKPOINT = "checkpoint"


def _state_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _load_state(payload: bytes) -> dict[str, Any]:
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is reported the same way
        reason = short_message(exc) or type(exc).__name__  # an empty file's EOFError has no message
        raise StoreError(f"the saved training checkpoint cannot be read ({reason})",
                         "pass --overwrite (Python: overwrite=True) to restart the training run") from None


def plot_history(history: History, path: Path) -> Path:
    """Training curve: loss, clean / adversarial train accuracy, validation accuracies and ε per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = history.to_frame()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    epochs = df["epoch"] + 1
    for col, label, style in (("clean_accuracy", "train clean", "-"), ("adv_accuracy", "train adversarial", "--"),
                              ("val_accuracy", "val clean", "-o"), ("val_robust_accuracy", "val robust", "--o")):
        if col in df and df[col].notna().any():
            ax_acc.plot(epochs, df[col], style, label=label, markersize=3)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend(fontsize=8)
    ax_acc.grid(alpha=0.3)
    ax_loss.plot(epochs, df["loss"], color="tab:red", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss", color="tab:red")
    ax_eps = ax_loss.twinx()
    ax_eps.plot(epochs, df["eps"], color="tab:gray", linestyle=":", label="ε")
    ax_eps.set_ylabel("ε (end of epoch)", color="tab:gray")
    ax_loss.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def train_run(model: nn.Module, data: Data, out: str | os.PathLike, *, val_data: Data | None = None,
              eval_eps_grid: list[float] | None = None, eval_n: int = 1000, overwrite: bool = False,
              progress: bool = False, command: str | None = None, **train_options: Any) -> dict[str, Any]:
    """Train ``model`` (in place) with a `brittle.training.trainer.Trainer`, checkpointing each epoch into ``out``.

    ``eval_eps_grid`` (starting at 0; default ``[0, ε/4, ε/2, 3ε/4, ε]`` of the training ε) sets the APGD-CE
    grid on up to ``eval_n`` samples of ``val_data`` for the final clean / robust / expected-robust accuracy.
    Returns the summary written to ``out/summary.json`` (``train_seconds``: the time of every epoch summed, over
    all sessions of a resumed run; the final evaluation is not included). Every setting (``train_options`` as for
    `brittle.training.trainer.train`), the data, the model on the data and the grid are checked before ``out`` is
    written (`brittle.training.trainer.Trainer.check`: ε against the data's domain, one forward pass of the model
    on each data set, the labels against the model's outputs).
    """
    out = Path(out)
    # every check before the run directory is written: settings, data, model on the data, evaluation grid
    fit_options = {k: v for k, v in train_options.items() if k == "callback"}
    trainer = Trainer(progress=progress, **{k: v for k, v in train_options.items() if k not in fit_options})
    data, val_data = trainer.check(model, data, val_data)
    eps = trainer.eps
    grid = list(eval_eps_grid) if eval_eps_grid is not None else (
        [0.0] + [eps * f for f in (0.25, 0.5, 0.75, 1.0)] if eps > 0 else [0.0])
    if val_data is not None:
        check_positive_int(eval_n, "eval_n", "pass the number of validation samples to evaluate, e.g. 1000")
        grid = [float(e) for e in check_eps_grid(grid)]  # starts at 0 (the clean accuracy), increasing
        if len(grid) > 1:  # the final evaluation's budgets, in the validation data's units
            check_eps_for_domain(grid[1:], trainer.norm, val_data.domain, int(np.prod(val_data.input_shape)))
    settings = {k: _setting(v) for k, v in sorted(train_options.items())}
    config = {"job": "train", "initial_model_fingerprint": model_fingerprint(model),
              "data_fingerprint": data.fingerprint(),
              "val_fingerprint": val_data.fingerprint() if val_data is not None else None, **settings}
    with RunStore(out, config, overwrite=overwrite) as store:
        saved = store.get_artifact(CHECKPOINT)
        try:
            resume = _load_state(saved) if saved is not None else None
        except StoreError:
            if not overwrite:
                raise
            store.drop_artifact(CHECKPOINT)  # --overwrite: an unreadable checkpoint restarts the run
            resume = None
        if resume is not None and progress:
            print(f"resuming after epoch {int(resume['epoch']) + 1} from {out}")

        def checkpoint(epoch: int, state: dict[str, Any]) -> None:
            store.put_artifact(CHECKPOINT, _state_bytes(state))

        history = trainer.fit(model, data, val_data=val_data, checkpoint_fn=checkpoint, resume_state=resume,
                              **fit_options)
    torch.save(model.state_dict(), out / "model.pt")
    history.to_frame().to_csv(out / "history.csv", index=False)
    plot_history(history, out / "training_curve.png")
    # the epochs' own times, kept in the checkpoint's history: a resumed run counts its earlier sessions too
    summary: dict[str, Any] = {"epochs": len(history), "history": history.to_dicts(),
                               "train_seconds": float(sum(r.seconds for r in history.records))}
    if val_data is not None:
        norm = trainer.norm
        curve = robust_accuracy_curve(model, val_data.head(min(eval_n, len(val_data))), norm, grid,
                                      seed=int(train_options.get("seed", 0)),
                                      device=train_options.get("device", "cpu"))
        acc = curve["robust_accuracy"].to_numpy()
        summary.update({"clean_accuracy": float(acc[0]), "robust_accuracy": float(acc[-1]),
                        "robust_eps": float(grid[-1]), "norm": norm, "eval_attack": "apgd-ce",
                        "expected_robustness": expected_robustness(grid, acc) if len(grid) > 1 else float(acc[0]),
                        "eval_curve": {"eps": list(map(float, grid)), "accuracy": acc.tolist()},
                        "eval_n": int(min(eval_n, len(val_data)))})
    summary.update({"versions": versions(), "device": str(resolve_device(train_options.get("device", "cpu"))),
                    "seed": train_options.get("seed", 0), "command": command or "brittle.train_run(...)"})
    (out / "summary.json").write_text(json.dumps(jsonable(summary), indent=2, default=json_default))
    return summary


def _setting(value: Any) -> Any:
    """A run-configuration value that is the same in every process: plain values as they are, a function by its
    qualified name (its repr holds a memory address, which would make a resumed run look like a different one)."""
    if isinstance(value, (int, float, str, bool, type(None), list, dict)):
        return value
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return repr(value)
