"""Adapting along a test stream, the metrics of a run, and the resumable run behind ``brittle adapt``.

Metrics (all in `AdaptationResult.summary`):

- **online accuracy / error** of each pass: the predictions made on each batch *before* the update on that
  batch (the model is scored on data it has not adapted to yet), averaged over the stream;
- **accuracy per segment** (per corruption of a shift or continual stream) of each pass;
- **forgetting**: accuracy on clean held-out data of the adapted model after each pass (predictions that
  change nothing; BatchNorm normalises with the policy the adapter uses — with ``"batch"`` statistics
  that is the statistics of the clean evaluation batches), next to the source model's clean accuracy;
  ``forgetting = source clean accuracy − adapted clean accuracy``;
- **updates per layer**: how many steps changed each adapted layer (which layers the gate chose).

The per-step table has one row per step: ``pass``, ``step`` (within the pass), ``start`` / ``stop`` (samples),
``n``, ``correct``, ``accuracy``, ``loss``, ``entropy``, ``segment`` (of the batch's first sample) and
``updated_<i>`` / ``cos_<i>`` per layer ``i`` (names in ``summary["layers"]``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from ..data.corruptions import Stream
from ..data.loading import Data
from ..core.runs import read_run_json, read_run_table
from ..errors import InputError
from ..models.loading import model_fingerprint
from .base import Adapter, model_failure
from ..core.serialize import json_default, jsonable

JOB = "adapt"
SOURCE_JOB = "source"


@dataclass
class AdaptationResult:
    """A finished adaptation run: ``summary`` (JSON-friendly), ``steps`` (one row per step), ``samples`` (one
    row per sample and pass), and the fitted adapter when the run was computed in this process."""

    summary: dict[str, Any]
    steps: pd.DataFrame
    samples: pd.DataFrame
    adapter: Adapter | None = field(default=None, repr=False)
    out: Path | None = None

    def to_frame(self) -> pd.DataFrame:
        """The per-step table (``steps``); ``samples`` holds one row per sample and pass."""
        return self.steps

    def report(self, path: str | os.PathLike | None = None) -> Path:
        """Write the HTML page of this run (default ``OUT/report.html``)."""
        from ..report.adapt import render_adapt_report

        if self.out is None and path is None:
            raise InputError("this run has no output directory", "pass a path for the report")
        return render_adapt_report(self.out if self.out is not None else Path(path).parent, path)


def _check_stream(stream: Any) -> Stream:
    if isinstance(stream, Stream):
        st = stream
    elif isinstance(stream, Data):
        st = Stream(stream, (), "")
    else:
        from ..data.loading import as_data

        st = Stream(as_data(stream), (), "")
    if st.data.y is None:
        raise InputError("the stream has no labels, so accuracy cannot be measured",
                         "pass labelled data (the labels are never shown to the adapter)")
    return st


def _check_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}", f"pass e.g. {name}={max(low, 1)}")
    return int(value)


def _eval_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Evaluation batches ``[a, b)`` of ``n`` samples, a final batch of one sample merged into the one before
    (with ``"batch"`` statistics a single sample cannot be normalised)."""
    bounds = [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


@torch.no_grad()
def clean_accuracy(adapter: Adapter, data: Data, batch_size: int = 128) -> float:
    """Accuracy of the adapted model on ``data`` without changing it (the forgetting measurement); batches of
    ``batch_size``, a final batch of one sample merged into the one before."""
    if data.y is None:
        raise InputError("clean held-out data needs labels", "pass labelled data")
    correct = 0
    for a, b in _eval_bounds(len(data), batch_size):
        correct += int((adapter.predict(data.x[a:b], b - a).argmax(1) == data.y[a:b]).sum())
    return correct / len(data)


@torch.no_grad()
def source_predictions(model: torch.nn.Module, data: Data, batch_size: int = 256) -> np.ndarray:
    """Predicted classes of the unadapted model (eval mode)."""
    from ..models.loading import resolve_device

    dev = next((p.device for p in model.parameters()), resolve_device("cpu"))
    was = model.training
    model.eval()
    try:
        return torch.cat([model(xb.to(dev)).argmax(1).cpu() for _, xb, _ in data.batches(batch_size)]).numpy()
    finally:
        model.train(was)


def _run_steps(adapter: Adapter, stream: Stream, seg_names: np.ndarray, pass_idx: int, lo: int, hi: int,
               batch_size: int, on_step: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Steps ``lo:hi`` of pass ``pass_idx``: per-step and per-sample arrays."""
    x, y = stream.data.x, stream.data.y
    n_layers = len(adapter.layers_)
    rows: dict[str, list[Any]] = {k: [] for k in ("step", "start", "stop", "correct", "loss", "entropy")}
    upd, cos, preds = [], [], []
    for s in range(lo, hi):
        a, b = s * batch_size, min((s + 1) * batch_size, len(stream))
        out = adapter.step(x[a:b])
        pred = out.logits.argmax(1).cpu()
        preds.append(pred.numpy())
        rows["step"].append(s)
        rows["start"].append(a)
        rows["stop"].append(b)
        rows["correct"].append(int((pred == y[a:b]).sum()))
        rows["loss"].append(out.loss)
        rows["entropy"].append(out.entropy)
        upd.append(out.updated)
        cos.append(out.cos)
        if on_step:
            on_step(b - a)
    arrays = {k: np.asarray(v, dtype=np.float64 if k in ("loss", "entropy") else np.int64) for k, v in rows.items()}
    arrays["pass"] = np.full(hi - lo, pass_idx, dtype=np.int64)
    arrays["updated"] = np.asarray(upd, dtype=bool).reshape(hi - lo, n_layers)
    arrays["cos"] = np.asarray(cos, dtype=np.float64).reshape(hi - lo, n_layers)
    arrays["pred"] = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    return arrays


def _tables(chunks: list[dict[str, np.ndarray]], stream: Stream, seg_names: np.ndarray,
            layer_names: list[str], source_pred: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    steps = pd.DataFrame({k: np.concatenate([c[k] for c in chunks]) for k in
                          ("pass", "step", "start", "stop", "correct", "loss", "entropy")})
    steps.insert(4, "n", steps["stop"] - steps["start"])
    steps.insert(6, "accuracy", steps["correct"] / steps["n"])
    steps["segment"] = seg_names[steps["start"].to_numpy()] if len(steps) else []
    updated = np.concatenate([c["updated"] for c in chunks]) if chunks else np.zeros((0, len(layer_names)), bool)
    cosv = np.concatenate([c["cos"] for c in chunks]) if chunks else np.zeros((0, len(layer_names)))
    for i in range(len(layer_names)):
        steps[f"updated_{i}"] = updated[:, i]
        steps[f"cos_{i}"] = cosv[:, i]
    y = stream.data.y.numpy()
    passes = sorted(set(int(p) for c in chunks for p in c["pass"]))
    preds = {p: np.concatenate([c["pred"] for c in chunks if int(c["pass"][0]) == p]) for p in passes}
    samples = pd.concat([pd.DataFrame({"pass": p, "index": np.arange(len(y)), "segment": seg_names, "label": y,
                                       "pred": preds[p], "correct": preds[p] == y, "source_pred": source_pred})
                         for p in passes], ignore_index=True) if passes else pd.DataFrame()
    return steps, samples


def _summarise(steps: pd.DataFrame, samples: pd.DataFrame, stream: Stream, seg_names: np.ndarray,
               layer_names: list[str], source_pred: np.ndarray, clean: dict[str, Any]) -> dict[str, Any]:
    y = stream.data.y.numpy()
    order = list(dict.fromkeys(seg_names.tolist()))
    src_correct = source_pred == y
    per_pass = []
    for p, grp in samples.groupby("pass", sort=True):
        acc_seg = grp.groupby("segment")["correct"].mean()
        per_pass.append({"pass": int(p) + 1, "online_accuracy": round(float(grp["correct"].mean()), 5),
                         "online_error": round(1 - float(grp["correct"].mean()), 5),
                         "accuracy_per_segment": {s: round(float(acc_seg[s]), 5) for s in order}})
    after = clean.get("after_pass", [])
    src_clean = clean.get("source")
    for rec, acc in zip(per_pass, after):
        rec["clean_accuracy"] = acc
        rec["forgetting"] = None if src_clean is None or acc is None else round(src_clean - acc, 5)
    updates = {name: int(steps[f"updated_{i}"].sum()) for i, name in enumerate(layer_names)}
    src_seg = pd.Series(src_correct).groupby(seg_names).mean()
    last = per_pass[-1] if per_pass else {}
    return {
        "n": int(len(y)), "steps": int(len(steps)),
        "source_accuracy": round(float(src_correct.mean()), 5),
        "source_accuracy_per_segment": {s: round(float(src_seg[s]), 5) for s in order},
        "online_accuracy": last.get("online_accuracy"), "online_error": last.get("online_error"),
        "accuracy_per_segment": last.get("accuracy_per_segment"),
        "passes": per_pass,
        "clean_accuracy": {"source": src_clean, "after_pass": after, "n": clean.get("n"), "data": clean.get("data")},
        "forgetting": last.get("forgetting"),
        "layers": layer_names, "updates_per_layer": updates,
        "update_rate_per_layer": {k: round(v / max(len(steps), 1), 5) for k, v in updates.items()},
    }


def adapt_stream(adapter: Adapter, stream: Stream | Data | Any, *, model: torch.nn.Module | None = None,
                 batch_size: int = 128, passes: int = 1, clean: Data | None = None,
                 progress: bool = False) -> AdaptationResult:
    """Adapt online along ``stream`` (``passes`` times over it, in order) and measure it; in memory.

    ``adapter`` is fitted on ``model`` when given (else it must be fitted). ``clean`` (labelled) measures
    forgetting after each pass. Returns an `AdaptationResult` with the fitted adapter.
    """
    if model is not None:
        adapter.fit(model)
    adapter._check_fitted()
    st, batch_size, passes, source_model = _prepare(adapter, stream, batch_size, passes, clean)
    seg_names = st.segment_names()
    source_pred = source_predictions(source_model, st.data)
    clean_info = _clean_start(source_model, clean)
    n_steps = math.ceil(len(st) / batch_size)
    bar = _bar(progress, passes * len(st), adapter.name)
    t0 = time.perf_counter()
    chunks = []
    for p in range(passes):
        chunks.append(_run_steps(adapter, st, seg_names, p, 0, n_steps, batch_size, bar.update if bar else None))
        if clean is not None:
            clean_info["after_pass"].append(round(clean_accuracy(adapter, clean), 5))
    if bar:
        bar.close()
    steps, samples = _tables(chunks, st, seg_names, adapter.layer_names_, source_pred)
    summary = _summarise(steps, samples, st, seg_names, adapter.layer_names_, source_pred, clean_info)
    summary.update(settings=adapter.get_params(), batch_size=batch_size, n_passes=passes,
                   seconds=round(time.perf_counter() - t0, 2))
    return AdaptationResult(summary, steps, samples, adapter)


def _prepare(adapter: Adapter, stream: Any, batch_size: Any, passes: Any,
             clean: Data | None) -> tuple[Stream, int, int, torch.nn.Module]:
    """The checks `adapt_stream` and `adapt_run` share, before any step (and before a run writes anything): the
    stream and the counts, the model on the stream's inputs and labels (`_probe`), and batch sizes the
    BatchNorm policy can normalise (`_check_batches`). Returns the stream, the counts and the source model."""
    st = _check_stream(stream)
    batch_size, passes = _check_int("batch_size", batch_size), _check_int("passes", passes)
    source_model = _source_model(adapter)
    _probe(source_model, st.data)
    _check_batches(adapter, len(st), batch_size, None if clean is None else len(clean))
    return st, batch_size, passes, source_model


def _check_batches(adapter: Adapter, n: int, batch_size: int, n_clean: int | None) -> None:
    """Refuse up front what BatchNorm with batch statistics would refuse at the step that meets it: a batch of
    one sample in the stream with ``bn_stats='batch'``, or a clean hold-out of one sample evaluated with batch
    statistics (``'batch'``, or ``'auto'`` after a last stream batch of at least `AUTO_MIN_BATCH` samples)."""
    from .norm import AUTO_MIN_BATCH, batchnorm_layers

    if not batchnorm_layers(adapter.model_):
        return
    policy = adapter.bn_stats
    last = n - (math.ceil(n / batch_size) - 1) * batch_size     # samples in the stream's last batch
    if policy == "batch" and (batch_size == 1 or last == 1):
        where = ("every batch has 1 sample (batch size 1)" if batch_size == 1 else
                 f"the stream's last batch has 1 sample ({n} samples in batches of {batch_size})")
        raise InputError(f"bn_stats='batch' needs batches of at least 2 samples, but {where}",
                         "use bn_stats='ema' or 'auto' (CLI: --bn-stats ema), or a --limit / --batch-size that "
                         "leaves no batch of one sample")
    evaluates_batch = policy == "batch" or (policy == "auto" and last >= AUTO_MIN_BATCH)
    if n_clean == 1 and evaluates_batch:
        raise InputError("the clean hold-out has 1 sample, which BatchNorm cannot normalise with batch statistics",
                         "hold out at least 2 images (CLI: --holdout), none (--holdout 0), or use bn_stats='ema'")


def _source_model(adapter: Adapter) -> torch.nn.Module:
    """The source model as it was given (a fresh eval-mode copy restored from the adapter's source state)."""
    import copy

    from .norm import batchnorm_layers

    net = copy.deepcopy(adapter.model_)
    net.load_state_dict(adapter.source_state_)
    for _, mod in batchnorm_layers(net):
        if hasattr(mod, "tta_policy"):
            mod.tta_policy = "source"
    return net.eval()


def _clean_start(source_model: torch.nn.Module, clean: Data | None) -> dict[str, Any]:
    if clean is None:
        return {"source": None, "after_pass": [], "n": None, "data": None}
    if clean.y is None:
        raise InputError("clean held-out data needs labels", "pass labelled data")
    acc = float((source_predictions(source_model, clean) == clean.y.numpy()).mean())
    return {"source": round(acc, 5), "after_pass": [], "n": len(clean), "data": clean.name}


def _bar(progress: bool, total: int, name: str) -> Any:
    if not progress:
        return None
    from ..core.progress import progress_bar

    return progress_bar(total, desc=f"adapt ({name})", unit="img", leave=False)


# --------------------------------------------------------------------------------------------
# The resumable run (brittle adapt)
# --------------------------------------------------------------------------------------------

def adapt_run(adapter: Adapter, model: torch.nn.Module, stream: Stream, out: str | os.PathLike, *,
              batch_size: int = 128, passes: int = 1, clean: Data | None = None, chunk_samples: int = 1024,
              overwrite: bool = False, progress: bool = False, save_model: bool = False,
              run_config: dict[str, Any] | None = None, command: str | None = None,
              on_chunk: Callable[[int], None] | None = None) -> AdaptationResult:
    """`adapt_stream` into a crash-safe run directory ``out`` (`brittle.execution.store.RunStore`).

    The stream is cut into chunks of about ``chunk_samples`` samples; each chunk commits its per-step and
    per-sample results together with the adapter's full state after it (adapted parameters, BatchNorm
    statistics, optimiser and gate state) in one transaction, so re-running the same command resumes after
    the last committed chunk and gives the same results as an uninterrupted run. Writes ``summary.json``,
    ``steps.parquet``, ``samples.parquet`` and (``save_model``) ``model.pt`` — the adapted state dict, loadable
    into the original architecture.
    """
    from ..execution.store import RunStore

    chunk_samples = _check_int("chunk_samples", chunk_samples)
    adapter.fit(model)
    st, batch_size, passes, source_model = _prepare(adapter, stream, batch_size, passes, clean)
    seg_names = st.segment_names()
    n_steps = math.ceil(len(st) / batch_size)
    per_chunk = max(1, chunk_samples // batch_size)
    bounds = [(lo, min(lo + per_chunk, n_steps)) for lo in range(0, n_steps, per_chunk)]
    config = {"kind": "adapt", "version": __version__, "settings": adapter.get_params(), "batch_size": batch_size,
              "passes": passes, "chunk_steps": per_chunk, "stream": st.data.fingerprint(),
              "segments": [(s.name, s.start, s.stop) for s in st.segments],
              "clean": None if clean is None else clean.fingerprint(),
              "model": model_fingerprint(source_model), **(run_config or {})}
    t0 = time.perf_counter()
    with RunStore(out, config, overwrite=overwrite) as store:
        source_pred = _stored_source(store, source_model, st.data)
        clean_info = _clean_start(source_model, clean)
        done = store.done(JOB)
        total_chunks = passes * len(bounds)
        resume_at = 0
        while resume_at in done:
            resume_at += 1
        chunks: list[dict[str, np.ndarray]] = []
        after: dict[int, float] = {}
        for c, _, _, arrays in store.batches(JOB):
            if c >= resume_at:
                break
            chunks.append({k: v for k, v in arrays.items() if not k.startswith("state/")})
            if "clean_accuracy" in arrays:
                after[int(arrays["pass"][0])] = float(arrays["clean_accuracy"])
            if c == resume_at - 1:  # continue from the state after the last committed chunk
                adapter.load_state_arrays({k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")})
        bar = _bar(progress, passes * len(st), adapter.name)
        if bar:
            bar.update(sum(int(a["stop"][-1] - a["start"][0]) for a in chunks))
        for c in range(resume_at, total_chunks):
            p, j = divmod(c, len(bounds))
            lo, hi = bounds[j]
            arrays = _run_steps(adapter, st, seg_names, p, lo, hi, batch_size, bar.update if bar else None)
            if j == len(bounds) - 1 and clean is not None:
                arrays["clean_accuracy"] = np.asarray(round(clean_accuracy(adapter, clean), 5))
                after[p] = float(arrays["clean_accuracy"])
            arrays.update({f"state/{k}": v for k, v in adapter.state_arrays().items()})
            store.put_batch(JOB, c, lo * batch_size, min(hi * batch_size, len(st)), arrays)
            chunks.append({k: v for k, v in arrays.items() if not k.startswith("state/")})
            if on_chunk:
                on_chunk(c)
        if bar:
            bar.close()
    clean_info["after_pass"] = [round(after[p], 5) for p in sorted(after)]
    steps, samples = _tables(chunks, st, seg_names, adapter.layer_names_, source_pred)
    summary = _summarise(steps, samples, st, seg_names, adapter.layer_names_, source_pred, clean_info)
    summary.update(settings=adapter.get_params(), batch_size=batch_size, n_passes=passes,
                   stream={"name": st.data.name, "description": st.description, "n": len(st),
                           "segments": [{"name": s.name, "start": s.start, "stop": s.stop} for s in st.segments]},
                   seconds=round(time.perf_counter() - t0, 2), command=command, versions=_versions(),
                   device=str(adapter.device_), **(run_config or {}))
    out = Path(out)
    _write_json(out / "summary.json", summary)
    _write_parquet(out / "steps.parquet", steps)
    _write_parquet(out / "samples.parquet", samples)
    if save_model:
        buf = __import__("io").BytesIO()
        torch.save(adapter.adapted_state_dict(), buf)
        _write_bytes(out / "model.pt", buf.getvalue())
        summary["saved_model"] = str(out / "model.pt")
        _write_json(out / "summary.json", summary)
    return AdaptationResult(summary, steps, samples, adapter, out)


def _probe(model: torch.nn.Module, data: Data) -> None:
    """Fail before anything is written when the model cannot classify the stream's inputs."""
    from ..errors import ModelError

    try:
        with torch.no_grad():
            logits = model(data.x[:2].to(next((p.device for p in model.parameters()), torch.device("cpu"))))
    except Exception as exc:  # noqa: BLE001 - any failure of a user model on the data
        raise model_failure(exc, data.x.shape[1:], "the stream's inputs") from None
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ModelError(f"the model returns shape {tuple(logits.shape)}, not (batch, classes) logits",
                         "pass a classifier returning one logit per class")
    if data.y is not None and int(data.y.max()) >= logits.shape[1]:
        raise ModelError(f"labels go up to {int(data.y.max())} but the model has {logits.shape[1]} classes",
                         "pass data with the model's classes")


def _stored_source(store: Any, model: torch.nn.Module, data: Data) -> np.ndarray:
    from ..execution.store import pack_arrays, unpack_arrays

    payload = store.get_artifact(SOURCE_JOB)
    if payload is not None:
        return unpack_arrays(payload)["pred"]
    pred = source_predictions(model, data)
    store.put_artifact(SOURCE_JOB, pack_arrays({"pred": pred}))
    return pred


def _versions() -> dict[str, str]:
    return {"brittle": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "threads": str(torch.get_num_threads())}


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _write_bytes(path, (json.dumps(jsonable(obj), indent=2, default=json_default) + "\n").encode())



def _write_parquet(path: Path, df: pd.DataFrame) -> None:
    tmp = path.with_suffix(".tmp.parquet")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def load_adapt_run(directory: str | os.PathLike) -> AdaptationResult:
    """A finished ``brittle adapt`` run directory, read back."""
    d = Path(directory)
    if not (d / "summary.json").exists():
        raise InputError(f"{d} holds no adaptation run (no summary.json)", "pass a directory written by brittle adapt")
    fix = "re-run brittle adapt to rewrite it"
    summary = read_run_json(d / "summary.json", fix)
    steps = read_run_table(d / "steps.parquet", fix)
    samples = read_run_table(d / "samples.parquet", fix) if (d / "samples.parquet").exists() else pd.DataFrame()
    return AdaptationResult(summary, steps, samples, None, d)
