"""Batched, resumable computation of per-sample margins into a run store.

This is the expensive step of every audit: logit margins and input-margin brackets, batch by batch, each
batch committed to the run store as it completes so that an interrupted run resumes where it stopped.
The result of a resumed run equals that of an uninterrupted one (each batch has its own seed).
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .._version import __version__
from ..core.validation import check_norm
from ..data.loading import Data
from ..errors import InputError
from .logit import margins_from_logits
from ..models.loading import model_fingerprint, prepare_model, resolve_device
from ..execution.store import RunStore, run_batched

JOB = "margins"


@dataclass
class MarginTable:
    """Per-sample margins of a dataset: the table plus the adversarial inputs found (clean x where none)."""

    table: pd.DataFrame
    x_adv: np.ndarray
    forward_passes: int
    backward_passes: int
    seconds: float


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for result files and reports."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Versions recorded in every summary."""
    import numpy
    import scipy
    import sklearn

    return {"brittle": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "python": sys.version.split()[0], "platform": platform.platform()}


def run_config(model: nn.Module, data: Data, **settings: Any) -> dict[str, Any]:
    """What identifies a run: model weights, data and every setting that changes the numbers."""
    return {"model_fingerprint": model_fingerprint(model), "data_fingerprint": data.fingerprint(),
            "domain": list(data.domain), "brittle": __version__, **settings}


def check_labels_fit(model: nn.Module, data: Data, device: torch.device) -> None:
    """Refuse labels that name classes the model does not have."""
    if data.y is None:
        return
    with torch.inference_mode():
        classes = model(data.x[:1].to(device)).shape[1]
    top = int(data.y.max())
    if top >= classes:
        raise InputError(f"labels go up to {top} but the model has {classes} outputs (classes 0..{classes - 1})",
                         "map the labels to the model's class indices, or use the model trained for this data")


@dataclass(frozen=True)
class MarginSettings:
    """Everything besides model and data that a batch of `compute_margins` is computed with."""

    norm: str
    method: str
    lower: str | None
    batch_size: int
    seed: int
    method_options: dict[str, Any]


def batch_margins(model: nn.Module, part: Data, batch: int, settings: MarginSettings,
                  device: torch.device) -> dict[str, np.ndarray]:
    """Margins of batch number ``batch`` (its samples are ``part``): the arrays committed to the run store.

    Every backend calls this; the batch's seed is ``seed * 100_003 + batch``, so results do not depend on
    where or in which order batches run. ``model`` must be prepared on ``device``.
    """
    from .input import input_margins

    with torch.inference_mode():
        logits = model(part.x.to(device)).float()
    margin, pred, runner = margins_from_logits(logits)
    result = input_margins(model, part, norm=settings.norm, method=settings.method, lower=settings.lower,
                           batch_size=len(part), device=device, seed=settings.seed * 100_003 + batch,
                           **settings.method_options)
    if not np.array_equal(result.pred, pred.cpu().numpy()):
        raise RuntimeError("the model's predictions changed between two identical forward passes "
                           "(non-deterministic model?)")
    return {"logit_margin": margin.cpu().numpy(), "pred": pred.cpu().numpy(),
            "runner_up": runner.cpu().numpy(), "input_margin_upper": result.upper,
            "input_margin_lower": result.lower, "adv_class": result.adv_class,
            "x_adv": result.x_adv.astype(np.float32),
            "cost": np.array([result.forward_passes, result.backward_passes]),
            "seconds": np.array([result.seconds])}


def compute_margins(model: nn.Module, data: Data, *, norm: str = "linf", method: str = "brittle",
                    lower: str | None = None, batch_size: int = 250, device: str | torch.device | None = "auto",
                    seed: int = 0, store: RunStore | None = None, progress: bool = False,
                    method_options: dict[str, Any] | None = None, backend: str = "local", workers: int = 1,
                    gpus_per_worker: float = 0.0, address: str | None = None) -> MarginTable:
    """Logit margins and input-margin brackets of every sample of ``data``, batch by batch.

    With ``store``, each finished batch is committed and batches already there are not recomputed.
    ``backend="ray"`` computes the batches on ``workers`` Ray actors (``gpus_per_worker`` GPUs each) of the
    cluster at ``address`` (default: a local Ray instance started for the run); per-sample results equal
    the local backend's, and a run started with one backend resumes with the other (see `brittle.execution.ray`).
    """
    from ..execution.ray import check_backend

    norm = check_norm(norm)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}", "pass e.g. --batch-size 250")
    check_backend(backend, workers, gpus_per_worker, address)
    dev = resolve_device(device) if backend == "local" else torch.device("cpu")  # ray: checks run on the driver's CPU
    model = prepare_model(model, device=dev, sample=data.x[:2], num_classes=data.num_classes)
    check_labels_fit(model, data, dev)
    settings = MarginSettings(norm, method, lower, batch_size, seed, dict(method_options or {}))
    n_batches = -(-len(data) // batch_size)

    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        return batch_margins(model, data.subset(slice(start, stop)), start // batch_size, settings, dev)

    where = "" if backend == "local" else f", ray × {workers}"
    bar = tqdm(total=len(data), unit="sample", desc=f"input margins ({norm}, {method}{where})",
               disable=not progress, dynamic_ncols=True, file=sys.stderr)
    resumed = {"n": 0}

    def on_batch(samples: int, recomputed: bool) -> None:
        if not recomputed:
            resumed["n"] += samples
        bar.update(samples)

    try:
        if backend == "local":
            arrays = run_batched(store, JOB, len(data), batch_size, compute, on_batch)
        else:
            from ..execution.ray import run_ray

            arrays = run_ray(model, data, settings, store=store, job=JOB, workers=workers,
                             gpus_per_worker=gpus_per_worker, address=address, device=device, on_batch=on_batch)
    finally:
        bar.close()
    if progress and resumed["n"]:
        print(f"resumed: {resumed['n']} samples were already computed in {store.directory}", file=sys.stderr)
    cost = arrays.pop("cost").reshape(n_batches, 2).sum(0)
    seconds = float(arrays.pop("seconds").sum())
    x_adv = arrays.pop("x_adv")
    table = pd.DataFrame({"index": np.arange(len(data))})
    if data.y is not None:
        table["label"] = data.y.numpy()
        table["correct"] = arrays["pred"] == table["label"].to_numpy()
    for key, value in arrays.items():
        table[key] = value
    return MarginTable(table, x_adv, int(cost[0]), int(cost[1]), seconds)

