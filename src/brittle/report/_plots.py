"""Figures for the HTML report, drawn with matplotlib's Agg canvas and returned as ``data:`` PNG URIs."""

from __future__ import annotations

import base64
import io
from typing import Any, Callable, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..analysis.consistency import share_robust
from ._load import Run, num

CORRECT, INCORRECT, UNLABELLED, CENSORED = "#2b6cb0", "#dd6b20", "#4a5568", "#6b46c1"
UPPER, LOWER = "#2b6cb0", "#2f855a"
RC = {
    "font.size": 9.5, "axes.titlesize": 10.5, "axes.labelsize": 9.5, "legend.fontsize": 8.5,
    "xtick.labelsize": 8.5, "ytick.labelsize": 8.5, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": "#e2e8f0", "grid.linewidth": 0.7, "axes.edgecolor": "#4a5568",
    "axes.titleweight": "bold", "legend.frameon": False,
}
DPI = 150


def plain(text: str, limit: int = 40) -> str:
    """A user-supplied string made safe for matplotlib text: no mathtext, bounded length."""
    text = " ".join(str(text).split())
    if len(text) > limit:  # cut in the middle: run names that share a prefix differ at their end (seed0, seed1)
        head = (limit - 1) // 2
        text = text[:head] + "…" + text[len(text) - (limit - 1 - head):]
    return text.replace("$", r"\$")


def norm_symbol(norm: str) -> str:
    """Plot label of the perturbation norm."""
    return "L∞" if norm == "linf" else "L2" if norm == "l2" else plain(norm, 10)


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure styled for the report."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def legend(target: Any, *args: Any, handles: Sequence[Any] | None = None, **kwargs: Any) -> None:
    """``target.legend(...)`` (an axes or a figure) only when there is something to name: without labelled
    artists (a run with nothing flipped, no curve drawn) matplotlib would draw an empty box and warn "No artists
    with labels found to put in legend" on stderr."""
    if handles is None:
        axes = target.axes if isinstance(target, Figure) else [target]
        handles = [h for ax in axes for h, label in zip(*ax.get_legend_handles_labels()) if label]
        if handles:
            target.legend(*args, **kwargs)
    elif handles:
        target.legend(*args, handles=handles, **kwargs)


def to_data_uri(fig: Figure) -> str:
    """Encode ``fig`` as a base64 PNG ``data:`` URI (no timestamp metadata, so output is reproducible)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _styled(draw: Callable[..., str | None]) -> Callable[..., str | None]:
    """Run a drawing function inside the report's rc settings (ticks and fonts are read at draw time)."""
    import functools

    import matplotlib

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> str | None:
        with matplotlib.rc_context(RC):
            return draw(*args, **kwargs)

    return wrapper


def _column(run: Run, name: str) -> np.ndarray | None:
    if run.samples is None or name not in run.samples.columns:
        return None
    return run.samples[name].to_numpy(dtype=float, na_value=np.nan)


def correct_mask(run: Run) -> np.ndarray | None:
    """Per-sample correctness as booleans, or ``None`` when the run is unlabelled."""
    if run.samples is None or "correct" not in run.samples.columns:
        return None
    label = _column(run, "label")
    if label is not None and np.all(np.isnan(label)):
        return None
    col = run.samples["correct"]
    if col.isna().all():
        return None
    return col.fillna(False).to_numpy(dtype=bool)


def eps_colors(n: int) -> list[Any]:
    """Distinguishable colours for ``n`` ε values, light to dark along one hue ramp."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.05, 0.8, max(n, 1))][:n]


# --------------------------------------------------------------------------------------------
# Margin scatter
# --------------------------------------------------------------------------------------------

def _draw_scatter(ax: Any, run: Run, *, thumbnail: bool = False) -> bool:
    lm, im = _column(run, "logit_margin"), _column(run, "input_margin_upper")
    if lm is None or im is None:
        return False
    keep = ~np.isnan(lm) & ~np.isnan(im)
    lm, im = lm[keep], im[keep]
    if lm.size == 0:
        return False
    correct = correct_mask(run)
    correct = correct[keep] if correct is not None else None
    censored = np.isinf(im)
    finite_im = im[~censored & (im > 0)]
    pos_lm = lm[lm > 0]
    # Axis floors from the 1st percentile, not the minimum: one misclassified input with a margin of 1e-7
    # would otherwise stretch the log axis over decades; the few points below are drawn on the floor.
    y_floor = float(np.quantile(finite_im, 0.01)) / 2 if finite_im.size else 1e-3
    x_floor = float(np.quantile(pos_lm, 0.01)) / 2 if pos_lm.size else 1e-3
    if run.eps:
        y_floor = min(y_floor, min(run.eps) / 2)  # every audited ε stays inside the plot
    y_top_data = max(float(finite_im.max()) if finite_im.size else 0.0, max(run.eps or [1.0]))
    y_edge = y_top_data * 1.8
    x = np.clip(lm, x_floor, None)
    y = np.where(censored, y_edge, np.clip(im, y_floor, None))

    size, alpha = (5, 0.55) if thumbnail else (9, 0.6)
    groups = ([("correct", correct, CORRECT), ("incorrect", ~correct, INCORRECT)]
              if correct is not None else [("unlabelled", np.ones_like(censored), UNLABELLED)])
    clipped = ~censored & ((lm < x_floor) | (im < y_floor))  # off the scale: drawn on the floor, marked
    for name, mask, color in groups:
        sel = mask & ~censored & ~clipped
        if sel.any():
            ax.scatter(x[sel], y[sel], s=size, alpha=alpha, color=color, linewidths=0,
                       label=f"{name} (n={int((mask & ~censored).sum())})", rasterized=True)
    if clipped.any():
        clip_color = [CORRECT if c else INCORRECT for c in correct[clipped]] if correct is not None else UNLABELLED
        ax.scatter(x[clipped], y[clipped], s=size * 2.2, marker="v", facecolors="none", edgecolors=clip_color,
                   linewidths=0.8, alpha=0.8, rasterized=True,
                   label=f"below the axis (n={int(clipped.sum())}), drawn on its floor")
    n_cens = int(censored.sum())
    if n_cens:
        cens_color = [CORRECT if c else INCORRECT for c in correct[censored]] if correct is not None else UNLABELLED
        ax.scatter(x[censored], y[censored], s=size * 2.2, marker="^", facecolors="none",
                   edgecolors=cens_color, linewidths=0.8, alpha=0.8, rasterized=True,
                   label=f"no adversarial found (n={n_cens}), drawn at top edge")
        ax.axhline(y_edge * 0.87, color="#a0aec0", lw=0.8, ls=(0, (4, 3)))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(y_floor * 0.8, y_edge * 1.35)
    for e, color in zip(run.eps, eps_colors(len(run.eps))):  # every audited ε, thumbnails included
        if y_floor < e < y_edge:
            ax.axhline(e, color=color, lw=0.9 if not thumbnail else 0.7, ls=":", zorder=0)
    if not thumbnail:
        for e in run.eps:
            if y_floor < e < y_edge:
                ax.annotate(f"ε={e:g}", xy=(1.0, e), xycoords=("axes fraction", "data"), xytext=(3, 0),
                            textcoords="offset points", va="center", fontsize=8, color="#4a5568")
        ax.set_xlabel("logit margin (top-1 − runner-up logit)")
        ax.set_ylabel(f"input margin ({norm_symbol(run.norm)}, attack upper bound)")
        legend(ax, loc="lower right", markerscale=1.6, frameon=True, framealpha=0.9, edgecolor="#e2e8f0")
    return True


@_styled
def margin_scatter(run: Run) -> str | None:
    """Input margin (y) against logit margin (x), log-log, coloured by correctness; τ in the title."""
    fig = new_figure(7.2, 4.8)
    ax = fig.add_subplot()
    if not _draw_scatter(ax, run):
        return None
    ax.set_title(tau_title(run.summary.get("kendall_tau")))
    return to_data_uri(fig)


@_styled
def scatter_thumbnail(run: Run, title: str) -> str | None:
    """A small version of the margin scatter for the comparison page."""
    fig = new_figure(3.4, 2.7)
    ax = fig.add_subplot()
    if not _draw_scatter(ax, run, thumbnail=True):
        return None
    ax.set_title(f"{plain(title, 30)}\n{tau_title(run.summary.get('kendall_tau'), short=True)}", fontsize=9)
    ax.set_xlabel("logit margin", fontsize=8)
    ax.set_ylabel("input margin", fontsize=8)
    ax.tick_params(labelsize=7)
    return to_data_uri(fig)


def tau_title(tau: Any, short: bool = False) -> str:
    """``"Kendall τ = 0.72 (95% CI 0.69–0.75)"`` from the summary's ``kendall_tau`` object."""
    if not isinstance(tau, dict) or num(tau.get("value")) is None:
        return "Kendall τ: not available"
    text = f"Kendall τ = {num(tau['value']):.3f}"
    lo, hi = num(tau.get("ci_low")), num(tau.get("ci_high"))
    if lo is not None and hi is not None:
        text += f" [{lo:.2f}, {hi:.2f}]" if short else f"  (95% CI {lo:.3f} – {hi:.3f})"
    return text


# --------------------------------------------------------------------------------------------
# ROC / PR
# --------------------------------------------------------------------------------------------

@_styled
def detection_curves(run: Run) -> str | None:
    """ROC and precision–recall curves of the logit-margin detector, one line per ε."""
    entries = [(e, run.curve(e)) for e in run.eps]
    entries = [(e, c) for e, c in entries if isinstance(c, dict)
               and ((c.get("roc") or {}).get("fpr") or (c.get("pr") or {}).get("recall"))]
    if not entries:  # detection undefined at every ε (every input on one side): no empty figure
        return None
    fig = new_figure(9.6, 4.1)
    ax_roc, ax_pr = fig.subplots(1, 2)
    for (e, c), color in zip(entries, eps_colors(len(entries))):
        det = run.at("detection", e) or {}
        roc, pr = c.get("roc") or {}, c.get("pr") or {}
        auroc, aupr = num(det.get("auroc")), num(det.get("aupr"))
        if roc.get("fpr") and roc.get("tpr"):
            label = f"ε = {e:g}" + (f"  (AUROC {auroc:.3f})" if auroc is not None else "")
            ax_roc.plot(roc["fpr"], roc["tpr"], color=color, lw=1.8, label=label, drawstyle="steps-post")
        if pr.get("recall") and pr.get("precision"):
            label = f"ε = {e:g}" + (f"  (AUPR {aupr:.3f})" if aupr is not None else "")
            ax_pr.plot(pr["recall"], pr["precision"], color=color, lw=1.8, label=label, drawstyle="steps-post")
            npos, nneg = num(det.get("n_positive")), num(det.get("n_negative"))
            if npos is not None and nneg is not None and npos + nneg > 0:
                ax_pr.axhline(npos / (npos + nneg), color=color, lw=0.9, ls=":")
    ax_roc.plot([0, 1], [0, 1], color="#a0aec0", lw=0.9, ls="--", label="chance")
    ax_roc.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (robust inputs flagged)",
               ylabel="true positive rate (non-robust inputs flagged)", title="ROC")
    ax_pr.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (non-robust inputs flagged)", ylabel="precision",
              title="Precision–recall  (dotted: share of non-robust inputs)")
    ax_roc.set_aspect("equal")
    ax_pr.set_aspect("equal")
    legend(ax_roc, loc="lower right")
    legend(ax_pr, loc="lower left")
    return to_data_uri(fig)


# --------------------------------------------------------------------------------------------
# Robust accuracy vs ε
# --------------------------------------------------------------------------------------------

def robust_curve(run: Run, eps_max: float, points: int = 241) -> dict[str, np.ndarray] | None:
    """Robust accuracy on a fine ε grid from per-sample margins: ``{"eps", "upper", "lower"?}``.

    A sample counts at ε when it is correct and its margin exceeds ε (non-robust means ``d_in <= ε``).
    ``lower`` (from certified margins) is present only when some certified margin is positive.
    """
    correct = correct_mask(run)
    upper = _column(run, "input_margin_upper")
    if correct is None or upper is None or eps_max <= 0:
        return None
    grid = np.linspace(0.0, eps_max, points)

    def share_above(margin: np.ndarray) -> np.ndarray:  # mean(correct & margin > ε) for every ε of the grid
        return share_robust(np.nan_to_num(margin, nan=0.0), correct, grid)

    out = {"eps": grid, "upper": share_above(upper)}
    lower = _column(run, "input_margin_lower")
    if lower is not None and np.nanmax(np.nan_to_num(lower, nan=0.0), initial=0.0) > 0:
        out["lower"] = share_above(lower)
    return out


def eps_max_of(run: Run) -> float:
    """ε_max of the expected-robustness integral (summary value, else the largest audited ε)."""
    er = run.summary.get("expected_robustness") or {}
    value = num(er.get("eps_max")) if isinstance(er, dict) else None
    return value if value is not None and value > 0 else max(run.eps or [0.0])


def summary_points(run: Run) -> tuple[list[float], list[float | None], list[float | None]]:
    """ε, attack (upper) and certified (lower) robust accuracy from ``summary.json``, with ε = 0 prepended."""
    eps, upper, lower = [], [], []
    clean = num(run.summary.get("clean_accuracy"))
    if clean is not None:
        eps.append(0.0), upper.append(clean), lower.append(clean)
    for e in run.eps:
        ra = run.at("robust_accuracy", e) or {}
        eps.append(e), upper.append(num(ra.get("upper"))), lower.append(num(ra.get("lower")))
    return eps, upper, lower


def _draw_robust(ax: Any, run: Run, color_upper: str, color_lower: str, label: str = "",
                 markers: bool = True, band_alpha: float = 0.13) -> None:
    eps_max = eps_max_of(run)
    curve = robust_curve(run, eps_max)
    eps, up, lo = summary_points(run)
    prefix = f"{label}: " if label else ""
    if curve is not None:
        ax.plot(curve["eps"], curve["upper"], color=color_upper, lw=1.9,
                label=f"{prefix}attack upper bound")
        if "lower" in curve:
            ax.plot(curve["eps"], curve["lower"], color=color_lower, lw=1.6, ls="--",
                    label=f"{prefix}certified lower bound")
            ax.fill_between(curve["eps"], curve["lower"], curve["upper"], color=color_upper, alpha=band_alpha,
                            lw=0, label=f"{prefix}true value lies in this band" if not label else None)
    else:
        pts = [(e, u) for e, u in zip(eps, up) if u is not None]
        if pts:
            ax.plot(*zip(*pts), color=color_upper, lw=1.9, label=f"{prefix}attack upper bound")
        both = [(e, lw_, u) for e, lw_, u in zip(eps, lo, up) if lw_ is not None and u is not None]
        if len(both) > 1:
            be, bl, bu = map(list, zip(*both))
            ax.plot(be, bl, color=color_lower, lw=1.6, ls="--", label=f"{prefix}certified lower bound")
            ax.fill_between(be, bl, bu, color=color_upper, alpha=band_alpha, lw=0)
    if markers:
        ax.plot([e for e, u in zip(eps, up) if u is not None], [u for u in up if u is not None], "o",
                color=color_upper, ms=5, zorder=3)
        pts = [(e, v) for e, v in zip(eps[1:], lo[1:]) if v is not None]
        if pts:
            ax.plot(*zip(*pts), "s", color=color_lower, ms=4.5, zorder=3)


@_styled
def robust_accuracy_plot(run: Run) -> str | None:
    """Robust accuracy against ε: attack upper bound, certified lower bound, the band, expected robustness."""
    eps, up, _ = summary_points(run)
    if all(u is None for u in up) and robust_curve(run, eps_max_of(run)) is None:
        return None
    fig = new_figure(7.2, 4.0)
    ax = fig.add_subplot()
    _draw_robust(ax, run, UPPER, LOWER)
    er = run.summary.get("expected_robustness") or {}
    value = num(er.get("from_margins")) if isinstance(er, dict) else None
    if value is not None:
        ax.plot([], [], " ", label=f"expected robustness (ε ≤ {eps_max_of(run):g}): {100 * value:.1f}%")
    ax.set_xlabel(f"ε ({norm_symbol(run.norm)} perturbation budget)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, max(eps_max_of(run), max(run.eps or [0])) * 1.02 or 1)
    ax.set_ylim(0, 1.02)
    rows = _eps_lines(ax, run.eps)  # after the x limits: labels that would overlap are staggered
    ax.set_title("Robust accuracy against perturbation size", pad=4 + 10 * rows)
    legend(ax, loc="lower left", frameon=True, framealpha=0.9)
    return to_data_uri(fig)


# --------------------------------------------------------------------------------------------
# Histograms
# --------------------------------------------------------------------------------------------

@_styled
def margin_histograms(run: Run) -> str | None:
    """Histograms of the logit margin (by correctness) and of the finite input margins (log ε axis)."""
    lm, im = _column(run, "logit_margin"), _column(run, "input_margin_upper")
    if lm is None or im is None:
        return None
    correct = correct_mask(run)
    fig = new_figure(9.6, 3.5)
    ax_l, ax_i = fig.subplots(1, 2)
    ok = ~np.isnan(lm)
    bins = np.histogram_bin_edges(lm[ok], bins=40) if ok.any() else 10
    groups = ([("correct", correct, CORRECT), ("incorrect", ~correct, INCORRECT)]
              if correct is not None else [("all inputs", np.ones(lm.size, bool), UNLABELLED)])
    for name, mask, color in groups:
        sel = mask & ok
        if sel.any():
            ax_l.hist(lm[sel], bins=bins, color=color, alpha=0.6, label=f"{name} (n={int(sel.sum())})")
    ax_l.set(title="Logit margin", xlabel="logit margin", ylabel="inputs")
    legend(ax_l)
    finite = im[np.isfinite(im) & (im > 0)]
    n_cens = int(np.isinf(im).sum())
    if finite.size:
        lo, hi = finite.min(), finite.max()
        edges = np.geomspace(lo, hi * 1.0001, 41) if hi > lo else np.array([lo * 0.9, hi * 1.1])
        ax_i.hist(finite, bins=edges, color=UNLABELLED, alpha=0.65)
        ax_i.set_xscale("log")
        for e, color in zip(run.eps, eps_colors(len(run.eps))):
            ax_i.axvline(e, color=color, lw=1.4, ls="--", label=f"ε = {e:g}")
        if run.eps:
            legend(ax_i, loc="best")
    else:
        ax_i.text(0.5, 0.5, "no finite input margin:\nthe attack found no adversarial example", ha="center",
                  va="center", transform=ax_i.transAxes, color="#4a5568")
        ax_i.set(xticks=[], yticks=[])
    xlabel = "input margin (attack upper bound)"
    if n_cens:
        xlabel += f"\nnot shown: {n_cens} input{'s' if n_cens != 1 else ''} without an adversarial example"
    ax_i.set(title=f"Input margin ({norm_symbol(run.norm)})", xlabel=xlabel, ylabel="inputs")
    return to_data_uri(fig)


# --------------------------------------------------------------------------------------------
# Pseudo-margin and subset estimates
# --------------------------------------------------------------------------------------------

@_styled
def pseudo_margin_scatter(run: Run) -> str | None:
    """Input margin against the pseudo-margin (when ``samples.parquet`` has a ``pseudo_margin`` column)."""
    pm, im = _column(run, "pseudo_margin"), _column(run, "input_margin_upper")
    if pm is None or im is None or np.all(np.isnan(pm)):
        return None
    split = run.samples["split"].to_numpy() if "split" in run.samples.columns else None
    held_out = np.ones(len(pm), bool) if split is None else split != "fit"
    fig = new_figure(4.8, 3.6)
    ax = fig.add_subplot()
    # the held-out inputs only, as the section's figures (the pseudo-margin was fitted on the others)
    ok = held_out & ~np.isnan(pm) & np.isfinite(im) & (im > 0)
    ax.scatter(pm[ok], im[ok], s=7, alpha=0.55, color=CENSORED, linewidths=0, rasterized=True)
    ax.set_yscale("log")
    if np.all(pm[ok] > 0):
        ax.set_xscale("log")
    for e, color in zip(run.eps, eps_colors(len(run.eps))):  # every audited ε (the axis extends to show it)
        ax.axhline(e, color=color, lw=0.9, ls=":", zorder=0, label=f"ε = {e:g}")
    if run.eps:
        legend(ax, loc="lower right", fontsize=7.5, frameon=True, framealpha=0.9)
    ax.set(xlabel="pseudo-margin", ylabel="input margin",
           title="Input margin against pseudo-margin" + (" (held-out inputs)" if split is not None else ""))
    return to_data_uri(fig)


@_styled
def subset_plot(rows: Sequence[dict[str, Any]]) -> str | None:
    """Subset estimates of robust accuracy with their CIs, against the full-set value when known."""
    rows = [r for r in rows if num(r.get("estimate")) is not None]
    if not rows:
        return None
    methods = sorted({str(r.get("method", "")) for r in rows})
    fig = new_figure(7.2, 0.9 + 0.38 * max(len(rows), 3))
    ax = fig.add_subplot()
    colors = dict(zip(methods, ["#2b6cb0", "#dd6b20", "#2f855a", "#6b46c1", "#b83280", "#4a5568"] * 4))
    labels, seen = [], set()
    for i, r in enumerate(rows):
        est, lo, hi, true = (num(r.get(k)) for k in ("estimate", "ci_low", "ci_high", "true"))
        m = str(r.get("method", ""))
        xerr = [[est - lo], [hi - est]] if lo is not None and hi is not None else None
        ax.errorbar(est, i, xerr=xerr, fmt="o", color=colors[m], capsize=3, ms=5,
                    label=plain(m) if m not in seen else None)
        seen.add(m)
        if true is not None:
            ax.plot(true, i, marker="|", color="#1a202c", ms=14, mew=2,
                    label="full-set value" if "true" not in seen else None)
            seen.add("true")
        labels.append(f"ε={num(r.get('eps')) or 0:g}, n={r.get('n', '?')}")
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("robust accuracy")
    ax.set_title("Robust accuracy estimated from an attacked subset")
    legend(fig, loc="outside lower center", ncols=min(len(seen), 4))
    return to_data_uri(fig)


# --------------------------------------------------------------------------------------------
# Gallery images
# --------------------------------------------------------------------------------------------

def image_uri(img: np.ndarray, *, diverging: bool = False) -> str:
    """One (C, H, W) image as a PNG data URI; ``diverging`` maps ±max|img| to blue/red around white."""
    import matplotlib.image as mimage

    arr = np.asarray(img, dtype=np.float64)
    arr = np.nan_to_num(arr)
    buf = io.BytesIO()
    if diverging:
        scale = float(np.abs(arr).max()) or 1.0
        if arr.shape[0] == 1:
            mimage.imsave(buf, arr[0], cmap="RdBu_r", vmin=-scale, vmax=scale, format="png",
                          metadata={"Software": None})
        else:
            rgb = np.clip(0.5 + 0.5 * arr[:3] / scale, 0, 1).transpose(1, 2, 0)
            mimage.imsave(buf, rgb, format="png", metadata={"Software": None})
    elif arr.shape[0] == 1:
        mimage.imsave(buf, np.clip(arr[0], 0, 1), cmap="gray", vmin=0, vmax=1, format="png",
                      metadata={"Software": None})
    else:
        mimage.imsave(buf, np.clip(arr[:3], 0, 1).transpose(1, 2, 0), format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Comparison figures
# --------------------------------------------------------------------------------------------

RUN_COLORS = ["#2b6cb0", "#dd6b20", "#2f855a", "#6b46c1", "#b83280", "#c53030", "#2c7a7b", "#744210",
              "#4a5568", "#d69e2e"]


def _eps_lines(ax: Any, eps: Sequence[float], *, label: bool = True) -> int:
    """A dotted vertical line at every audited ε, labelled at the top of the axes; a label that would overlap
    the one before it goes one row higher. Returns the number of label rows (call after the x limits are set)."""
    lo, hi = ax.get_xlim()
    span = (hi - lo) or 1.0
    fig = ax.get_figure()
    width_pts = max(ax.get_position().width * fig.get_figwidth() * 72, 1.0)
    row_ends: list[float] = []  # right edge of the last label of each row, as a fraction of the axes' width
    for e, color in zip(eps, eps_colors(len(eps))):
        ax.axvline(e, color=color, lw=0.9, ls=":", zorder=0)
        if not label:
            continue
        text = f"ε={e:g}"
        half = 0.5 * len(text) * 7.5 * 0.62 / width_pts  # half the label's width (7.5 pt font)
        x = (e - lo) / span
        row = next((i for i, end in enumerate(row_ends) if x - half > end + 0.01), len(row_ends))
        if row == len(row_ends):
            row_ends.append(x + half)
        else:
            row_ends[row] = x + half
        ax.annotate(text, xy=(e, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2 + 10 * row),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7.5, color="#4a5568")
    return max(len(row_ends), 1)


def _drawable(run: Run) -> bool:
    """Whether `_draw_robust` draws a curve for ``run`` (a summary point or a curve from the samples)."""
    return robust_curve(run, eps_max_of(run)) is not None or any(u is not None for u in summary_points(run)[1])


@_styled
def compare_robust(runs: Sequence[Run], labels: Sequence[str]) -> str | None:
    """Robust-accuracy-vs-ε curves of several runs overlaid (band where certified bounds exist), one panel per
    norm (ε of different norms share no axis); each panel's legend names only the runs and the kinds of line
    drawn in it, and every audited ε of its runs has its line."""
    drawable = [i for i, run in enumerate(runs) if _drawable(run)]
    if not drawable:
        return None
    norms = list(dict.fromkeys(runs[i].norm for i in drawable))
    several = len(norms) > 1
    fig = new_figure(7.6 if not several else 4.4 * len(norms), 4.2 if not several else 4.5)
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    for k, (ax, nm) in enumerate(zip(axes, norms)):
        members = [i for i in drawable if runs[i].norm == nm]
        drawn, dashed = [], False
        for i in members:
            color = RUN_COLORS[i % len(RUN_COLORS)]
            before = list(ax.lines)
            _draw_robust(ax, runs[i], color, color, label=plain(labels[i], 28), band_alpha=0.06)
            new_lines = [line for line in ax.lines if line not in before and len(line.get_xdata())]  # drawn
            if new_lines:
                drawn.append(i)
                dashed |= any(line.get_linestyle() == "--" for line in new_lines)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, None)
        rows = _eps_lines(ax, sorted({e for i in members for e in runs[i].eps}))
        symbol = norm_symbol(nm)
        ax.set_xlabel(f"ε ({symbol} perturbation budget)")
        if k == 0:
            ax.set_ylabel("accuracy")
        ax.set_title(f"{symbol} runs" if several else "Robust accuracy against perturbation size",
                     pad=4 + 10 * rows)
        handles = [Line2D([], [], color=RUN_COLORS[i % len(RUN_COLORS)], lw=2,
                          label=plain(labels[i], 28) + (f" ({symbol})" if several else "")) for i in drawn]
        handles.append(Line2D([], [], color="#4a5568", lw=1.6, label="attack upper bound"))
        if dashed:
            handles.append(Line2D([], [], color="#4a5568", lw=1.4, ls="--", label="certified lower bound"))
        legend(ax, handles=handles if drawn else [], loc="upper right")
    if several:
        fig.suptitle("Robust accuracy against perturbation size, one panel per norm (their ε are not comparable)")
    return to_data_uri(fig)


@_styled
def compare_tau(runs: Sequence[Run], labels: Sequence[str]) -> str | None:
    """Kendall τ of each run with its confidence interval, as a dot plot."""
    rows = []
    for i, (run, label) in enumerate(zip(runs, labels)):
        tau = run.summary.get("kendall_tau") or {}
        value = num(tau.get("value")) if isinstance(tau, dict) else None
        if value is not None and -1.0 <= value <= 1.0:  # a τ outside [-1, 1] is a damaged summary: not drawn
            lo, hi = num(tau.get("ci_low")), num(tau.get("ci_high"))
            ci_ok = lo is not None and hi is not None and -1.0 <= lo <= value <= hi <= 1.0
            rows.append((i, label, value, lo if ci_ok else None, hi if ci_ok else None))
    if not rows:
        return None
    fig = new_figure(7.6, 0.9 + 0.42 * len(rows))
    ax = fig.add_subplot()
    for pos, (i, label, value, lo, hi) in enumerate(rows):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        xerr = [[value - lo], [hi - value]] if lo is not None and hi is not None else None
        ax.errorbar(value, pos, xerr=xerr, fmt="o", color=color, capsize=4, ms=6, lw=1.6)
    ax.set_yticks(range(len(rows)), [plain(r[1], 28) for r in rows])
    ax.invert_yaxis()
    lows = [r[3] if r[3] is not None else r[2] for r in rows]
    highs = [r[4] if r[4] is not None else r[2] for r in rows]
    span = max(highs) - min(lows)
    pad = max(0.05, 0.15 * span)
    ax.set_xlim(max(-1.0, min(lows) - pad), min(1.0, max(highs) + pad))
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("Kendall τ between input margin and logit margin (95% CI)")
    ax.set_title("Margin consistency")
    return to_data_uri(fig)
