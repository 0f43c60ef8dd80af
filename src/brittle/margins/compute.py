"""Batched, resumable computation of per-sample margins into a run store.

This is the expensive step of every audit: logit margins and input-margin brackets, batch by batch, each
batch committed to the run store as it completes so that an interrupted run resumes where it stopped.
The result of a resumed run equals that of an uninterrupted one (each batch has its own seed).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from ..core.progress import progress_bar

from .._version import __version__
from ..core.provenance import cpu_name  # noqa: F401 - re-exported for scripts
from ..data.loading import Data, as_data
from ..errors import InputError, ModelError, StoreError
from .logit import margins_from_logits
from ..models.loading import keeps_model_mode, model_fingerprint
from .settings import (RANDOM_MODEL, MarginSettings, build_attack, check_budgets, check_labels_fit,  # noqa: F401 - API
                       check_margin_settings, prepared_for_margins)
from ..execution.executor import Executor, as_executor, batch_seed
from ..execution.store import RunStore

JOB = "margins"


@dataclass
class MarginTable:
    """Per-sample margins of a dataset: the table plus the adversarial inputs found (clean x where none)."""

    table: pd.DataFrame
    x_adv: np.ndarray
    forward_passes: int
    backward_passes: int
    seconds: float
    path: Path | None = None  # margins.parquet, once saved

    def to_frame(self) -> pd.DataFrame:
        """The per-sample table (``table``), as every result's ``to_frame()`` gives it."""
        return self.table

    def summary(self) -> dict[str, Any]:
        """Headline figures: median input margin, share censored (no adversarial example found), median
        upper/lower bracket ratio, and the attack's cost."""
        upper = self.table["input_margin_upper"].to_numpy(float)
        lower = self.table["input_margin_lower"].to_numpy(float)
        ok = np.isfinite(upper) & (lower > 0)
        return {"n": len(upper), "median_input_margin": float(np.median(upper)),
                "share_censored": float(np.mean(~np.isfinite(upper))),
                "median_bracket_gap": float(np.median(upper[ok] / lower[ok])) if ok.any() else None,
                "forward_passes": self.forward_passes, "backward_passes": self.backward_passes}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the per-sample table to ``directory/margins.parquet`` (atomically)."""
        directory = Path(directory)
        tmp = directory / "margins.parquet.tmp"
        try:
            self.table.to_parquet(tmp, index=False)
            os.replace(tmp, directory / "margins.parquet")
        except OSError as exc:
            raise StoreError(f"cannot write {directory / 'margins.parquet'} ({exc.strerror or exc})",
                             "choose a writable --out directory with free space") from None
        self.path = directory / "margins.parquet"
        return self.path


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


def batch_margins(model: nn.Module, part: Data, batch: int, settings: MarginSettings,
                  device: torch.device) -> dict[str, np.ndarray]:
    """Margins of batch number ``batch`` (its samples are ``part``): the arrays committed to the run store.

    Every executor calls this; the batch's seed is `batch_seed` of the run's seed, so results do not depend
    on where or in which order batches run. ``model`` must be prepared on ``device``.
    """
    from .input import margins_for_batch

    x = part.x.to(device)
    with torch.inference_mode():
        logits = model(x).float()
    margin, pred, runner = margins_from_logits(logits)
    seed = batch_seed(settings.seed, batch)
    result = margins_for_batch(model, x, norm=settings.norm, method=settings.method, domain=part.domain, seed=seed,
                               lower=settings.lower, num_classes=part.num_classes,
                               attack=build_attack(settings.method, settings.norm, seed=seed,
                                                   **settings.method_options),
                               **settings.method_options)
    if not np.array_equal(result.pred.numpy(), pred.cpu().numpy()):
        raise ModelError(*RANDOM_MODEL)
    return {"logit_margin": margin.cpu().numpy(), "pred": pred.cpu().numpy(),
            "runner_up": runner.cpu().numpy(), "input_margin_upper": result.upper.numpy(),
            "input_margin_lower": result.lower.numpy(), "adv_class": result.adv_class.numpy(),
            "x_adv": result.x_adv.float().numpy(),
            "cost": np.array([result.cost.forward, result.cost.backward]),
            "seconds": np.array([result.seconds])}


@keeps_model_mode  # eval mode inside, the caller's mode afterwards
def compute_margins(model: nn.Module, data: Any, *, norm: str = "linf", method: str = "brittle",
                    lower: str | None = None, batch_size: int = 250, device: str | torch.device | None = "auto",
                    seed: int = 0, out: str | os.PathLike | None = None, overwrite: bool = False,
                    store: RunStore | None = None, progress: bool = False,
                    method_options: dict[str, Any] | None = None,
                    executor: Executor | str | None = None) -> MarginTable:
    """Logit margins and input-margin brackets of every sample of ``data``, batch by batch.

    With ``out``, the run is resumable in that directory (``run.sqlite``; re-running resumes, a different run
    is refused unless ``overwrite``) and the per-sample table is written to ``out/margins.parquet``. (``store``
    is the lower-level form: batches are committed into an open `RunStore`.) ``executor`` computes the batches
    (default: this process; `brittle.execution.make_executor("ray", workers=4)` for Ray actors); per-sample
    results do not depend on it, and a run started with one executor resumes with the other.
    Every setting, the model and the data are checked before anything is written or started.
    """
    data = data if isinstance(data, Data) else as_data(data)
    settings = check_margin_settings(norm=norm, method=method, lower=lower, batch_size=batch_size, seed=seed,
                                     method_options=method_options)
    check_budgets(settings, data)
    executor = as_executor(executor)
    if out is not None and store is not None:
        raise InputError("both out and store were given", "pass out=DIR (a run directory) or store=, not both")
    dev = executor.driver_device(device)
    model = prepared_for_margins(model, data, settings, dev)
    executor.prepare(device)  # Ray: the device, the cluster's connection and resources, before the store exists
    try:
        if out is None:
            return _compute(model, data, settings, executor, dev, device, store, progress)
        config = run_config(model, data, job="margins", norm=settings.norm, method=method, lower=lower,
                            batch_size=batch_size, seed=seed, method_options=settings.method_options)
        with RunStore(out, config, overwrite=overwrite) as run_store:
            result = _compute(model, data, settings, executor, dev, device, run_store, progress)
    finally:
        executor.close()  # what prepare opened, also when the store or the run failed (run closes it itself)
    result.save(out)
    return result


def _compute(model: nn.Module, data: Data, settings: MarginSettings, executor: Executor, dev: torch.device,
             device: Any, store: RunStore | None, progress: bool) -> MarginTable:
    method, batch_size = settings.method, settings.batch_size
    n_batches = -(-len(data) // batch_size)
    where = "" if executor.name == "local" else f", {executor.describe(device)}"
    bar = progress_bar(len(data), unit="sample", desc=f"input margins ({settings.norm}, {method}{where})",
                       enabled=progress)  # plain sparse lines when stderr is not a terminal
    resumed = {"n": 0}

    def on_batch(samples: int, recomputed: bool) -> None:
        if not recomputed:
            resumed["n"] += samples
        bar.update(samples)

    try:
        arrays = executor.run(model, data, settings, batch_margins, store=store, job=JOB,
                              device=dev if executor.name == "local" else device, on_batch=on_batch)
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

