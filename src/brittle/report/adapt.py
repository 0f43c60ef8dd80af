"""The HTML page of a test-time adaptation run (``brittle adapt``): accuracy along the stream, accuracy per
segment, the per-layer update heat map and the settings. Self-contained (figures as ``data:`` PNGs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from .._version import __version__
from ..core.runs import read_run_json, read_run_table
from ..errors import InputError
from ._plots import RC, new_figure, plain, to_data_uri

ADAPTED, SOURCE = "#2b6cb0", "#a0aec0"


def _environment() -> Environment:
    from ._render import pct

    env = Environment(loader=PackageLoader("brittle.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=pct)
    return env


def _smooth(values: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    if len(values) == 0:
        return values
    k = max(1, min(k, len(values)))
    kernel = np.ones(k)
    num = np.convolve(values * weights, kernel, mode="same")
    den = np.convolve(weights, kernel, mode="same")
    return num / np.maximum(den, 1e-12)


def stream_plot(summary: dict[str, Any], steps: pd.DataFrame, samples: pd.DataFrame, smooth_samples: int) -> str:
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = new_figure(10, 3.4)
        ax = fig.add_subplot(1, 1, 1)
        n = int(summary["n"])
        batch = int(summary.get("batch_size") or 1)
        k = max(1, smooth_samples // batch)
        for seg_i, seg in enumerate((summary.get("stream") or {}).get("segments") or []):
            if seg_i % 2 == 0:
                for p in range(int(summary.get("n_passes", 1))):
                    ax.axvspan(p * n + seg["start"], p * n + seg["stop"], color="#edf2f7", lw=0)
        if len(steps):
            x = steps["pass"].to_numpy() * n + (steps["start"].to_numpy() + steps["stop"].to_numpy()) / 2
            ax.plot(x, _smooth(steps["accuracy"].to_numpy(float), steps["n"].to_numpy(float), k), color=ADAPTED,
                    lw=1.4, label=f"adapted ({plain(summary['settings']['method'], 20)})")
        if len(samples) and "source_pred" in samples:
            first = samples[samples["pass"] == samples["pass"].min()]
            src = (first["source_pred"] == first["label"]).to_numpy(float)
            xs = np.arange(len(src))
            ks = max(1, smooth_samples)
            for p in range(int(summary.get("n_passes", 1))):
                ax.plot(xs + p * n, _smooth(src, np.ones_like(src), ks), color=SOURCE, lw=1.1,
                        label="source" if p == 0 else None)
        for p in range(1, int(summary.get("n_passes", 1))):
            ax.axvline(p * n, color="#4a5568", lw=0.8, ls=":")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("samples seen")
        ax.set_ylabel("accuracy")
        ax.legend(loc="lower left")
        return to_data_uri(fig)


def heatmap(summary: dict[str, Any], steps: pd.DataFrame, bins: int = 60) -> str | None:
    import matplotlib

    layers = summary.get("layers") or []
    if not layers or not len(steps):
        return None
    upd = np.stack([steps[f"updated_{i}"].to_numpy(float) for i in range(len(layers))], 0)
    edges = np.linspace(0, upd.shape[1], min(bins, upd.shape[1]) + 1).astype(int)
    grid = np.stack([upd[:, a:b].mean(1) for a, b in zip(edges[:-1], edges[1:])], 1)
    with matplotlib.rc_context({**RC, "axes.grid": False}):
        fig = new_figure(10, 0.6 + 0.32 * len(layers))
        ax = fig.add_subplot(1, 1, 1)
        im = ax.imshow(grid, aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest",
                       extent=(0, upd.shape[1], len(layers) - 0.5, -0.5))
        ax.set_yticks(range(len(layers)), [plain(l, 28) for l in layers])
        ax.set_xlabel("step")
        fig.colorbar(im, ax=ax, label="update rate", fraction=0.03, pad=0.01)
        return to_data_uri(fig)


def adapt_context(summary: dict[str, Any], steps: pd.DataFrame, samples: pd.DataFrame) -> dict[str, Any]:
    settings = summary.get("settings") or {}
    gate = settings.get("gate")
    gate_text = None if not gate else (f"{gate['mode']} mode, λ = {gate['threshold']:g}, window "
                                       f"{gate['window']} {gate['window_unit']}")
    seg_acc = summary.get("accuracy_per_segment") or {}
    src_acc = summary.get("source_accuracy_per_segment") or {}
    seg_n = {s["name"]: 0 for s in (summary.get("stream") or {}).get("segments") or []}
    for s in (summary.get("stream") or {}).get("segments") or []:
        seg_n[s["name"]] += s["stop"] - s["start"]
    segments = []
    for name, acc in seg_acc.items():
        src = src_acc.get(name)
        change = "—" if src is None or acc is None else f"{100 * (acc - src):+.1f} pts"
        segments.append({"name": name, "n": seg_n.get(name, summary.get("n")), "source": src, "adapted": acc,
                         "change": change})
    n_steps = max(int(summary.get("steps") or 0), 1)
    layers = [{"name": k, "count": v, "rate": v / n_steps} for k, v in (summary.get("updates_per_layer") or {}).items()]
    clean = summary.get("clean_accuracy") or {}
    after = (clean.get("after_pass") or [None])[-1]
    fg = summary.get("forgetting")
    shown = {k: v for k, v in settings.items() if k != "gate"}
    shown.update({"gate": gate_text or "none", "batch size": summary.get("batch_size"),
                  "passes": summary.get("n_passes"), "stream": (summary.get("stream") or {}).get("description"),
                  "model": summary.get("model"), "data": summary.get("data"), "seconds": summary.get("seconds"),
                  "device": summary.get("device")})
    versions = ", ".join(f"{k} {v}" for k, v in (summary.get("versions") or {}).items())
    return {
        "title": f"{summary.get('model') or 'model'} adapted with {settings.get('method')} on "
                 f"{(summary.get('stream') or {}).get('name') or 'a stream'}",
        "brittle_version": __version__, "method": settings.get("method"), "gate": gate_text,
        "online_accuracy": summary.get("online_accuracy"), "source_accuracy": summary.get("source_accuracy"),
        "n": summary.get("n"), "batch_size": summary.get("batch_size"), "n_passes": summary.get("n_passes") or 1,
        "clean_source": clean.get("source"), "clean_after": after, "clean_n": clean.get("n"),
        "forgetting_text": "—" if fg is None else f"{100 * fg:+.1f} points",
        "passes": summary.get("passes") or [], "segments": segments, "layers": layers,
        "stream_plot": stream_plot(summary, steps, samples, 100), "smooth": 100,
        "heatmap": heatmap(summary, steps), "settings": [(k, "—" if v is None else v) for k, v in shown.items()],
        "command": summary.get("command"), "versions": versions,
    }


def render_adapt_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the HTML page of the adaptation run in ``run_dir`` (default ``run_dir/report.html``)."""
    d = Path(run_dir)
    if not (d / "summary.json").exists() or not (d / "steps.parquet").exists():
        raise InputError(f"{d} holds no finished adaptation run (summary.json / steps.parquet missing)",
                         "pass a directory written by brittle adapt")
    fix = "re-run brittle adapt to rewrite it"
    summary = read_run_json(d / "summary.json", fix)
    steps = read_run_table(d / "steps.parquet", fix)
    samples = read_run_table(d / "samples.parquet", fix) if (d / "samples.parquet").exists() else pd.DataFrame()
    html = _environment().get_template("adapt.html.j2").render(**adapt_context(summary, steps, samples))
    path = Path(out) if out is not None else d / "report.html"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
