"""Build the template context from run directories and render the self-contained HTML pages."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from ..errors import InputError, RunNotFoundError, StoreError
from . import _plots as plots
from ..analysis.consistency import share_robust
from ._load import Run, load_run, lookup_eps, num

#: The gallery shows at most this many of the most brittle inputs.
GALLERY_LIMIT = 12


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("brittle.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=pct, f3=f3, ci=ci_text, eps=eps_text)
    return env


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

DASH = "—"


def pct(value: Any, digits: int = 1) -> str:
    """``0.8731`` → ``"87.3%"``; missing → an em dash."""
    v = num(value)
    return DASH if v is None or not math.isfinite(v) else f"{100 * v:.{digits}f}%"


def f3(value: Any) -> str:
    """Three decimals; missing → an em dash."""
    v = num(value)
    if v is None:
        return DASH
    return "∞" if v == math.inf else f"{v:.3f}"


def ci_text(obj: Any) -> str:
    """``{"ci_low", "ci_high"}`` → ``"0.681 – 0.742"``; missing → an em dash."""
    if not isinstance(obj, dict):
        return DASH
    lo, hi = num(obj.get("ci_low")), num(obj.get("ci_high"))
    return DASH if lo is None or hi is None else f"{lo:.3f} – {hi:.3f}"


def eps_text(value: Any) -> str:
    """ε as short as it is exact (``0.1``, ``8/255`` printed as ``0.03137``)."""
    v = num(value)
    return DASH if v is None else f"{v:.4g}"


def norm_text(norm: str) -> str:
    """Display name of the norm."""
    return {"linf": "L∞", "l2": "L2"}.get(norm, norm)


def seconds_text(value: Any) -> str:
    """``3725.2`` → ``"1 h 02 min"``."""
    s = num(value)
    if s is None or not math.isfinite(s) or s < 0:  # a damaged summary: shown as unknown, never a crash
        return DASH
    if s < 60:
        return f"{s:.1f} s"
    minutes = int(round(s / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


# --------------------------------------------------------------------------------------------
# Run → context
# --------------------------------------------------------------------------------------------

def _flipped_share(run: Run, eps: float, bound: str) -> float | None:
    """Share of correctly classified inputs whose ``bound`` input margin is ≤ ε (summary first, then samples).

    With ``bound="upper"`` this is a lower bound on the share that can be flipped; with ``"lower"`` an upper one.
    """
    clean = num(run.summary.get("clean_accuracy"))
    ra = num((run.at("robust_accuracy", eps) or {}).get(bound))
    if clean is not None and clean > 0 and ra is not None:
        return max(0.0, min(1.0, (clean - ra) / clean))
    correct = plots.correct_mask(run)
    column = f"input_margin_{bound}"
    if correct is None or run.samples is None or column not in run.samples.columns or not correct.any():
        return None
    margin = run.samples[column].to_numpy(dtype=float, na_value=np.nan)[correct]
    if bound == "lower" and not np.nanmax(np.nan_to_num(margin), initial=0) > 0:
        return None
    return 1.0 - float(share_robust(np.nan_to_num(margin, nan=0.0), np.ones(len(margin), bool), [eps])[0])


def _unlabelled_share(run: Run, eps: float) -> float | None:
    if run.samples is None or "input_margin_upper" not in run.samples.columns or len(run.samples) == 0:
        return None
    margin = run.samples["input_margin_upper"].to_numpy(dtype=float, na_value=np.nan)
    return float(np.mean(np.nan_to_num(margin, nan=np.inf) <= eps))


def consistency_word(tau: float) -> str:
    """Plain-language strength of a Kendall τ."""
    if tau >= 0.7:
        return "high"
    if tau >= 0.5:
        return "moderate"
    if tau >= 0.3:
        return "low"
    return "very low"


#: The report recommends a logit-margin monitor at ε only when, with the threshold that flags 95% of the
#: non-robust inputs (the target recall), at most this share of the robust inputs is flagged too (FPR@95).
#: Above it most alarms would be false: the report then says so and recommends no monitor.
MONITOR_MAX_FPR = 0.2


def monitor_advice(run: Run) -> dict[str, Any] | None:
    """Whether to deploy a threshold on the logit margin, and which threshold (see `MONITOR_MAX_FPR`).

    With a calibrated monitor in the run (``--monitor-eps``) its held-out threshold, recall and false-alarm
    rate decide; otherwise the threshold is read off the audited inputs at the middle audited ε (threshold =
    the 95th percentile of the logit margins of the non-robust correctly classified inputs; false alarms =
    robust correctly classified inputs below it), which is optimistic because it is fitted and measured on the
    same inputs.
    """
    mon = run.summary.get("monitor")
    if isinstance(mon, dict) and num(mon.get("threshold")) is not None and num(mon.get("false_alarm_rate")) is not None:
        score = "pseudo-margin" if mon.get("score") == "pseudo_margin" else "logit margin"
        eps, threshold, fpr = mon.get("eps"), num(mon.get("threshold")), num(mon.get("false_alarm_rate"))
        recall, where = num(mon.get("recall")), f"on {mon.get('n', DASH)} held-out inputs"
    else:
        lm = _samples_column(run, "logit_margin")
        im = _samples_column(run, "input_margin_upper")
        correct = _samples_column(run, "correct")
        if lm is None or im is None or correct is None or not run.eps:
            return None
        eps = run.eps[len(run.eps) // 2]
        correct = correct.astype(bool)
        positive = correct & (np.nan_to_num(im, nan=np.inf) <= eps)
        negative = correct & ~positive
        if positive.sum() < 2 or negative.sum() < 2:
            return None
        ranked = np.sort(lm[positive])  # the smallest threshold that flags at least 95% of them
        score, threshold = "logit margin", float(ranked[int(np.ceil(0.95 * len(ranked))) - 1])
        recall = float(np.mean(lm[positive] <= threshold))
        fpr = float(np.mean(lm[negative] <= threshold))
        where = f"on the {int(correct.sum())} correctly classified audited inputs, fitted on the same inputs"
    recommended = fpr <= MONITOR_MAX_FPR
    facts = Markup("flagging inputs whose {} is ≤ <strong>{}</strong> catches {} of the inputs non-robust at "
                   "ε = {} and flags <strong>{}</strong> of the robust ones ({})").format(
        score, f3(threshold), pct(recall), eps_text(eps), pct(fpr), where)
    if recommended:
        sentence = Markup("Deployable monitor: {}. The false-alarm rate is at most {}, so brittle recommends this "
                          "threshold.").format(facts, pct(MONITOR_MAX_FPR, 0))
    else:
        sentence = Markup("No monitor recommended: {}, more than the {} brittle accepts, so most alarms would be "
                          "false.").format(facts, pct(MONITOR_MAX_FPR, 0))
    return {"recommended": recommended, "threshold": threshold, "eps": eps, "recall": recall, "fpr": fpr,
            "score": score, "sentence": sentence}


def _samples_column(run: Run, name: str) -> np.ndarray | None:
    if run.samples is None or name not in run.samples.columns or len(run.samples) == 0:
        return None
    return run.samples[name].to_numpy(dtype=float, na_value=np.nan)


def _lead(run: Run) -> list[Markup]:
    """The plain-language sentences at the top of the report."""
    norm = norm_text(run.norm)
    clean = num(run.summary.get("clean_accuracy"))
    out: list[Markup] = []
    if clean is not None:
        out.append(Markup("The model classifies <strong>{}</strong> of the {} inputs correctly.").format(
            pct(clean), run.summary.get("n", DASH)))
    shown = run.eps if len(run.eps) <= 5 else [run.eps[len(run.eps) // 2]]
    for e in shown:
        det = run.at("detection", e) or {}
        auroc = num(det.get("auroc"))
        detect = (Markup(" The logit margin detects the non-robust inputs with <strong>AUROC {}</strong>.").format(f3(auroc))
                  if auroc is not None else
                  Markup(" Detection is undefined at this ε: every input is on the same side of it."))
        lo_share = _flipped_share(run, e, "upper") if clean is not None else None
        if lo_share == 0.0:
            out.append(Markup("The attack flipped <strong>none</strong> of the correctly classified inputs with an "
                              "{} perturbation ≤ {}.").format(norm, eps_text(e)) + detect)
        elif lo_share == 1.0:  # the attack flipped every one: "at least 100%" reads oddly
            out.append(Markup("The attack flipped <strong>every one</strong> of the correctly classified inputs with "
                              "an {} perturbation ≤ {}.").format(norm, eps_text(e)) + detect)
        elif lo_share is not None:
            hi_share = _flipped_share(run, e, "lower")
            bound = (Markup(" and at most {} (the rest are certified robust)").format(pct(hi_share))
                     if hi_share is not None and hi_share < 1.0 else "")
            out.append(Markup("At least <strong>{}</strong> of the correctly classified inputs can be flipped by an "
                              "{} perturbation ≤ {}{}.").format(pct(lo_share), norm, eps_text(e), bound) + detect)
        else:
            share = _unlabelled_share(run, e)
            if share is not None:
                out.append(Markup("<strong>{}</strong> of the inputs can be flipped by an {} perturbation ≤ {}.").format(
                    pct(share), norm, eps_text(e)) + detect)
    tau = run.summary.get("kendall_tau") or {}
    value = num(tau.get("value")) if isinstance(tau, dict) else None
    if value is not None:
        sentence = Markup("Margin consistency is <strong>{}</strong> (Kendall τ = {}, 95% CI {}): ").format(
            consistency_word(value), f3(value), ci_text(tau))
        sentence += ("the logit margin, which costs one forward pass, ranks inputs by robustness much like the "
                     "input margin does." if value >= 0.5 else
                     "the logit margin ranks inputs by robustness only loosely.")
        out.append(sentence)
    advice = monitor_advice(run)
    if advice is not None:
        out.append(advice["sentence"])
    er = run.summary.get("expected_robustness") or {}
    er_value = num(er.get("from_margins")) if isinstance(er, dict) else None
    if er_value is not None:
        out.append(Markup("Expected robustness (accuracy averaged over ε from 0 to {}) is <strong>{}</strong>.").format(
            eps_text(plots.eps_max_of(run)), pct(er_value)))
    return out


def _card(run: Run) -> list[tuple[str, str]]:
    s = run.summary
    rows = [("Model", str(s.get("model", DASH))), ("Data", str(s.get("data", DASH))),
            ("Inputs", str(s.get("n", DASH))), ("Norm", norm_text(run.norm)),
            ("ε", ", ".join(eps_text(e) for e in run.eps) or DASH),
            ("Attack", str(s.get("attack") or s.get("method", DASH))), ("Seed", str(s.get("seed", DASH))),
            ("Device", str(s.get("device", DASH))),
            *([("Finished", str(s["finished"]))] if s.get("finished") else []),
            # seconds: this session's wall-clock time (a resumed run counts only its own session); attack_seconds:
            # the attack time of every batch, stored with the batch, so it covers every session of the run
            ("Run time (this session)", seconds_text(s.get("seconds"))),
            *([("Attack time (all sessions)", seconds_text(s.get("attack_seconds")))]
              if num(s.get("attack_seconds")) is not None else []),
            ("Run directory", run.path.name or str(run.path))]
    if run.samples is not None and "label" not in run.samples.columns:
        rows.append(("Labels", "none (unlabelled data: correctness unknown)"))
    return rows


def _headline(run: Run) -> list[dict[str, str]]:
    s = run.summary
    rows = [{"metric": "Clean accuracy", "value": pct(s.get("clean_accuracy")), "ci": "",
             "note": "share of inputs classified correctly"}]
    for key, name, note in (("kendall_tau", "Kendall τ", "margin consistency: input vs logit margin ranks"),
                            ("spearman", "Spearman ρ", "rank correlation"),
                            ("pearson", "Pearson r", "linear correlation of finite margins")):
        obj = s.get(key)
        if isinstance(obj, dict):
            rows.append({"metric": name, "value": f3(obj.get("value")), "ci": ci_text(obj), "note": note})
    er = s.get("expected_robustness")
    if isinstance(er, dict):
        rows.append({"metric": "Expected robustness", "value": f3(er.get("from_margins")), "ci": "",
                     "note": f"area under robust accuracy vs ε, divided by ε_max = {eps_text(er.get('eps_max'))}"})
    return rows


def _per_eps(run: Run) -> list[dict[str, str]]:
    rows = []
    for e in run.eps:
        ra, det = run.at("robust_accuracy", e) or {}, run.at("detection", e) or {}
        npos, nneg = det.get("n_positive"), det.get("n_negative")
        rows.append({"eps": eps_text(e), "upper": pct(ra.get("upper")), "lower": pct(ra.get("lower")),
                     "flipped": pct(_flipped_share(run, e, "upper")),
                     "auroc": f3(det.get("auroc")), "aupr": f3(det.get("aupr")),
                     "fpr95": pct(det.get("fpr_at_95_tpr")),
                     "npos": DASH if npos is None else str(npos), "nneg": DASH if nneg is None else str(nneg)})
    return rows


def _gallery(run: Run) -> list[dict[str, Any]]:
    ex = run.examples
    if ex is None:
        return []
    k = ex["x"].shape[0]
    margin = np.asarray(ex.get("input_margin", np.full(k, np.nan)), dtype=float).reshape(-1)[:k]
    order = np.argsort(np.where(np.isnan(margin), np.inf, margin), kind="stable")[:GALLERY_LIMIT]

    def field(name: str, i: int) -> Any:
        arr = ex.get(name)
        return arr.reshape(-1)[i].item() if arr is not None and arr.size > i else None

    items = []
    for i in order:
        x, x_adv = ex["x"][i], ex["x_adv"][i]
        delta = np.asarray(x_adv, dtype=np.float64) - np.asarray(x, dtype=np.float64)
        peak = float(np.abs(delta).max())
        adv_class = field("adv_class", i)
        items.append({
            "index": field("index", i), "pred": field("pred", i),
            "adv_class": None if adv_class is None or adv_class < 0 else adv_class,
            "margin": f3(margin[i]), "linf": f3(peak), "amplify": f"×{0.5 / peak:.0f}" if peak > 0 else "",
            "clean": plots.image_uri(x), "adv": plots.image_uri(x_adv),
            "delta": plots.image_uri(delta, diverging=True),
        })
    return items


def _pseudo(run: Run) -> dict[str, Any] | None:
    pm = run.summary.get("pseudo_margin")
    if not isinstance(pm, dict):
        return None
    rows = [{"what": "Kendall τ", "before": f3(pm.get("kendall_tau_before")), "after": f3(pm.get("kendall_tau_after"))}]
    for e in run.eps:
        before, after = lookup_eps(pm.get("auroc_before"), e), lookup_eps(pm.get("auroc_after"), e)
        if before is not None or after is not None:
            rows.append({"what": f"AUROC at ε = {eps_text(e)}", "before": f3(before), "after": f3(after)})
    return {"layer": str(pm.get("layer", DASH)), "rows": rows, "scatter": plots.pseudo_margin_scatter(run)}


def _monitor(run: Run) -> dict[str, Any] | None:
    mon = run.summary.get("monitor")
    if not isinstance(mon, dict):
        return None
    score = "pseudo-margin" if mon.get("score") == "pseudo_margin" else "logit margin"
    sentence = Markup("Flag an input when its {} is below <strong>{}</strong>. At ε = {} this catches "
                      "<strong>{}</strong> of the non-robust inputs (target {}) and raises a false alarm on "
                      "<strong>{}</strong> of the robust ones ({} held-out inputs; threshold calibrated on the {}).").format(
        score, f3(mon.get("threshold")), eps_text(mon.get("eps")), pct(mon.get("recall")),
        pct(mon.get("target_recall"), 0), pct(mon.get("false_alarm_rate")), mon.get("n", DASH),
        mon.get("calibrated_on", "fit half"))
    rows = [("ε", eps_text(mon.get("eps"))),
            (f"{score.capitalize().replace(' ', '-')} threshold", f3(mon.get("threshold"))),
            ("Target recall", pct(mon.get("target_recall"))), ("Recall achieved", pct(mon.get("recall"))),
            ("False-alarm rate", pct(mon.get("false_alarm_rate")))]
    return {"sentence": sentence, "rows": rows}


def _subset(run: Run) -> dict[str, Any] | None:
    rows = run.summary.get("subset_estimates")
    if not isinstance(rows, list) or not rows:
        return None
    rows = [r for r in rows if isinstance(r, dict)]
    table = []
    for r in rows:
        est, lo, hi, true = (num(r.get(k)) for k in ("estimate", "ci_low", "ci_high", "true"))
        covered = DASH if None in (lo, hi, true) else ("yes" if lo <= true <= hi else "no")
        table.append({"eps": eps_text(r.get("eps")), "n": str(r.get("n", DASH)), "method": str(r.get("method", DASH)),
                      "estimate": pct(est), "ci": DASH if lo is None or hi is None else f"{pct(lo)} – {pct(hi)}",
                      "true": pct(true), "covered": covered})
    return {"rows": table, "plot": plots.subset_plot(rows)}


def _footer(run: Run) -> dict[str, Any]:
    versions = run.summary.get("versions")
    versions = [(str(k), str(v)) for k, v in versions.items()] if isinstance(versions, dict) else []
    return {"command": str(run.summary.get("command", "")), "versions": versions}


def report_context(run: Run) -> dict[str, Any]:
    """Everything ``report.html.j2`` needs, computed from one run (figures as data URIs)."""
    return {
        "title": f"brittle report: {run.model}", "model": run.model, "norm": norm_text(run.norm),
        "lead": _lead(run), "card": _card(run), "headline": _headline(run), "per_eps": _per_eps(run),
        "has_lower": any((run.at("robust_accuracy", e) or {}).get("lower") is not None for e in run.eps),
        "figures": {"scatter": plots.margin_scatter(run), "curves": plots.detection_curves(run),
                    "robust": plots.robust_accuracy_plot(run), "hist": plots.margin_histograms(run)},
        "gallery": _gallery(run), "pseudo": _pseudo(run), "monitor": _monitor(run), "subset": _subset(run),
        "footer": _footer(run), "brittle_version": _version(),
    }


def _version() -> str:
    from .._version import __version__

    return __version__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write(html: str, out: Path) -> Path:
    """Write ``html`` to ``out`` atomically (a reader never sees half a page)."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=out.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(html)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report is an ordinary file (0644 at umask 022)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StoreError(f"cannot write the report to {out} ({exc.strerror or exc})",
                         "pass a writable path with --out") from None
    return out


#: keys that every audit's summary.json holds; a summary with none of them is not an audit's
AUDIT_KEYS = ("eps", "n", "norm", "clean_accuracy", "robust_accuracy", "kendall_tau", "detection")


def check_audit(run: Run) -> Run:
    """``run``, checked to be a finished audit: it has a summary.json holding an audit's summary. A margins-only
    run (``brittle margins``: margins.parquet, no summary) or an unfinished audit raises `RunNotFoundError`; a
    summary.json that is empty or holds none of an audit's keys raises `StoreError`."""
    summary_path = run.path / "summary.json"
    if not summary_path.is_file():
        if (run.path / "margins.parquet").is_file() and not (run.path / "samples.parquet").is_file():
            raise RunNotFoundError(f"{run.path} holds a margins-only run (margins.parquet, no summary.json), not an "
                                   "audit", f"audit the model with `brittle audit ... --out DIR` and pass that "
                                   f"directory, or leave {run.path} out")
        raise RunNotFoundError(f"{run.path} has no summary.json, so it is not a finished audit",
                               "run the audit to completion (re-running the same command resumes), or pass its "
                               "--out directory")
    if not any(key in run.summary for key in AUDIT_KEYS):
        what = ("an empty JSON object" if not run.summary
                else f"none of the keys an audit writes: {', '.join(AUDIT_KEYS)}")
        raise StoreError(f"{summary_path} is not a valid audit summary (it holds {what})",
                         "re-run the audit that wrote it to rewrite it (the same command resumes from run.sqlite)")
    return run


def render_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Render the HTML report of one audit and return its path (default ``run_dir/report.html``).

    The page is a single self-contained file: figures are embedded PNGs, styles are inline, nothing is
    fetched over the network. Every user-supplied string is HTML-escaped.
    """
    run = check_audit(load_run(run_dir))
    html = _environment().get_template("report.html.j2").render(**report_context(run))
    return _write(html, Path(out) if out is not None else run.path / "report.html")


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------

def _labels(runs: Sequence[Run]) -> list[str]:
    """Run labels for the comparison: the model name, suffixed with the directory when names repeat."""
    names = [r.model for r in runs]
    out = []
    for run, name in zip(runs, names):
        out.append(f"{name} ({run.path.name})" if names.count(name) > 1 else name)
    if len(set(out)) < len(out) or len({plots.plain(label, 28) for label in out}) < len(out):
        out = [f"{i + 1}. {label}" for i, label in enumerate(out)]  # distinct also as the figures shorten them
    return out


def _best(values: list[float | None], groups: list[Any] | None = None) -> list[bool]:
    """Which cells are the highest of their row, compared only within a group of comparable runs (same
    ``groups`` key; ``None`` = comparable with no other run). Nothing is bold in a group of one or of ties."""
    groups = [0] * len(values) if groups is None else groups
    flags = [False] * len(values)
    for key in {g for g in groups if g is not None}:
        members = [i for i, g in enumerate(groups) if g == key and values[i] is not None and math.isfinite(values[i])]
        if len(members) < 2:
            continue
        top, bottom = max(values[i] for i in members), min(values[i] for i in members)
        if top != bottom:
            for i in members:
                flags[i] = values[i] == top
    return flags


def _metric_row(name: str, values: list[float | None], fmt: Any, note: str = "",
                extra: list[str] | None = None, best: bool = True, groups: list[Any] | None = None,
                derived: list[bool] | None = None) -> dict[str, Any]:
    flags = _best(values, groups) if best else [False] * len(values)
    derived = derived or [False] * len(values)
    cells = []
    for i, (v, flag) in enumerate(zip(values, flags)):
        text = fmt(v)
        if extra is not None and extra[i] and text != DASH:
            text = f"{text} {extra[i]}"
        cells.append({"text": text, "best": flag, "derived": bool(derived[i]) and text != DASH})
    return {"metric": name, "note": note, "cells": cells, "numeric": True}


# Values a run's summary lacks (an ε another run audited, another ε_max), computed from its stored per-sample
# margins with the audit's own formulas. Each is used only when the same computation reproduces the values
# the run's summary does hold, so a derived cell means what its neighbours mean.

def _margins(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    upper = _samples_column(run, "input_margin_upper")
    correct = plots.correct_mask(run)
    if upper is None or correct is None:
        return None
    return np.nan_to_num(upper, nan=0.0), correct


def _ra_from_samples(run: Run, eps: float) -> tuple[float | None, float | None]:
    """(attack upper, certified lower) robust accuracy at ``eps`` from the samples; None where unavailable."""
    got = _margins(run)
    if got is None:
        return None, None
    upper, correct = got
    up = float(share_robust(upper, correct, [eps])[0])
    lower = _samples_column(run, "input_margin_lower")
    lo = None
    if lower is not None and np.nanmax(np.nan_to_num(lower, nan=0.0), initial=0.0) > 0:
        lo = float(share_robust(np.nan_to_num(lower, nan=0.0), correct, [eps])[0])
    return up, lo


def _ra_derivable(run: Run) -> bool:
    stored = [(e, num((run.at("robust_accuracy", e) or {}).get("upper"))) for e in run.eps]
    stored = [(e, v) for e, v in stored if v is not None]
    return _margins(run) is not None and all(abs(_ra_from_samples(run, e)[0] - v) <= 1e-9 for e, v in stored)


def _auroc_from_samples(run: Run, eps: float) -> float | None:
    from ..analysis.detection import detection_metrics

    upper = _samples_column(run, "input_margin_upper")
    logit = _samples_column(run, "logit_margin")
    if upper is None or logit is None or np.isnan(logit).any():
        return None
    try:
        det = detection_metrics(np.nan_to_num(upper, nan=0.0), logit, [eps])
    except (InputError, ValueError):
        return None
    return num(det[0].auroc)


def _auroc_derivable(run: Run) -> bool:
    stored = [(e, num((run.at("detection", e) or {}).get("auroc"))) for e in run.eps]
    stored = [(e, v) for e, v in stored if v is not None]
    if not stored:
        return False
    for e, v in stored:
        got = _auroc_from_samples(run, e)
        if got is None or abs(got - v) > 1e-9:
            return False
    return True


def _er_from_samples(run: Run, eps_max: float) -> float | None:
    got = _margins(run)
    if got is None or not eps_max > 0:
        return None
    grid = np.linspace(0.0, eps_max, 201)
    acc = share_robust(got[0], got[1], grid)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz
    return float(trapezoid(acc, grid) / eps_max)


def _er(run: Run) -> tuple[float | None, float | None]:
    er = run.summary.get("expected_robustness")
    if not isinstance(er, dict):
        return None, None
    return num(er.get("from_margins")), num(er.get("eps_max"))


def _er_derivable(run: Run) -> bool:
    value, eps_max = _er(run)
    if value is None or eps_max is None:
        return False
    got = _er_from_samples(run, eps_max)
    return got is not None and abs(got - value) <= 1e-6


def comparison_context(runs: Sequence[Run]) -> dict[str, Any]:
    """Everything ``compare.html.j2`` needs for several runs.

    Bold marks the best value only among runs that are comparable (same data and norm; same ε_max for
    expected robustness). Values a summary lacks are computed from the run's stored margins and marked.
    """
    labels = _labels(runs)
    s = [r.summary for r in runs]
    # runs are compared (a best value bolded) only on the same inputs (data and their number) and, for what an
    # attack measures, with the same attack: robust accuracy from a weaker attack is a higher upper bound,
    # not a more robust model
    data_key = [f"{x.get('data')} (n={x.get('n')})" for x in s]
    norm_key = [(d, r.norm, str(x.get("attack") or x.get("method"))) for d, r, x in zip(data_key, runs, s)]
    norms = sorted({r.norm for r in runs})

    def info(name: str, values: list[str]) -> dict[str, Any]:
        return {"metric": name, "note": "", "cells": [{"text": v, "best": False, "derived": False} for v in values],
                "numeric": False}

    def group(name: str, note: str) -> dict[str, Any]:
        return {"metric": name, "note": note, "cells": [], "numeric": False, "group": True}

    def sub(obj: Any, key: str) -> float | None:
        return num(obj.get(key)) if isinstance(obj, dict) else None

    # expected robustness: per norm at one ε_max (the largest of that norm's runs), from the samples where a
    # run's own ε_max differs, so that the row compares like with like
    er_values, er_eps, er_derived = [], [], []
    common = {nm: max([m for r in runs if r.norm == nm for m in [_er(r)[1]] if m is not None], default=None)
              for nm in norms}
    for r in runs:
        value, eps_max = _er(r)
        target = common[r.norm]
        if eps_max is not None and target is not None and eps_max != target and _er_derivable(r):
            value, eps_max, derived = _er_from_samples(r, target), target, True
        else:
            derived = False
        er_values.append(value), er_eps.append(eps_max), er_derived.append(derived)
    er_text = [eps_text(m) for m in er_eps]
    er_name, er_extra = "Expected robustness", [f"(ε ≤ {m})" for m in er_text]
    if len(set(er_text)) == 1 and len(norms) == 1:
        er_name, er_extra = f"Expected robustness (ε ≤ {er_text[0]})", None
    rows = [info("Data", [str(x.get("data", DASH)) for x in s]),
            info("Norm", [norm_text(r.norm) for r in runs]),
            info("Attack", [str(x.get("attack") or x.get("method", DASH)) for x in s]),
            info("Inputs", [str(x.get("n", DASH)) for x in s]),
            _metric_row("Clean accuracy", [num(x.get("clean_accuracy")) for x in s], pct, groups=data_key),
            _metric_row("Kendall τ [95% CI]", [sub(x.get("kendall_tau"), "value") for x in s], f3,
                        extra=[f"[{ci_text(x.get('kendall_tau'))}]" if ci_text(x.get("kendall_tau")) != DASH else ""
                               for x in s], groups=norm_key),
            _metric_row("Spearman ρ", [sub(x.get("spearman"), "value") for x in s], f3, groups=norm_key),
            _metric_row(er_name, er_values, pct, extra=er_extra,
                        groups=[(*k, m) if m is not None else None for k, m in zip(norm_key, er_eps)],
                        derived=er_derived)]

    ra_ok = [_ra_derivable(r) for r in runs]
    auroc_ok = [_auroc_derivable(r) for r in runs]
    eps_rows = [(nm, e) for nm in norms for e in sorted({e for r in runs if r.norm == nm for e in r.eps})]

    def eps_label(nm: str, e: float) -> str:
        return f"ε = {eps_text(e)}" if len(norms) == 1 else f"{norm_text(nm)} ε = {eps_text(e)}"

    if eps_rows:
        rows.append(group("Robust accuracy", "attack upper bound, certified lower bound in brackets"))
    for nm, e in eps_rows:
        ups, los, derived = [], [], []
        for i, r in enumerate(runs):
            stored = r.at("robust_accuracy", e) if r.norm == nm else None
            up, lo, d = None, None, False
            if isinstance(stored, dict) and num(stored.get("upper")) is not None:
                up, lo = num(stored.get("upper")), num(stored.get("lower"))
            elif r.norm == nm and ra_ok[i]:
                (up, lo), d = _ra_from_samples(r, e), True
            ups.append(up), los.append(lo), derived.append(d)
        rows.append(_metric_row(eps_label(nm, e), ups, pct,
                                extra=[f"({pct(lo)})" if lo is not None else "" for lo in los],
                                groups=[k if r.norm == nm else None for k, r in zip(norm_key, runs)],
                                derived=derived))
    if eps_rows:
        rows.append(group("AUROC", "the logit margin detecting non-robust inputs"))
    for nm, e in eps_rows:
        values, derived = [], []
        for i, r in enumerate(runs):
            stored = num((r.at("detection", e) or {}).get("auroc")) if r.norm == nm else None
            d = False
            if stored is None and r.norm == nm and auroc_ok[i] and r.at("detection", e) is None:
                stored, d = _auroc_from_samples(r, e), True
            values.append(stored), derived.append(d)
        rows.append(_metric_row(eps_label(nm, e), values, f3,
                                groups=[k if r.norm == nm else None for k, r in zip(norm_key, runs)],
                                derived=derived))
    warnings = []
    if len(norms) > 1:
        warnings.append("The runs use different norms: their ε values and robust accuracies are not comparable "
                        "(rows are per norm, and bold compares runs of the same norm only).")
    if len({str(x.get("data")) for x in s}) > 1:
        warnings.append("The runs audit different data: differences mix model and data effects "
                        "(bold compares runs on the same data only).")
    elif len(set(data_key)) > 1:
        warnings.append("The runs audit different numbers of inputs: their figures are not measured on the same "
                        "inputs (bold compares runs on the same inputs only).")
    if len({k[2] for k in norm_key}) > 1:
        warnings.append("The runs were attacked differently (see Attack): robust accuracy from a weaker attack is a "
                        "higher upper bound, not a more robust model (bold compares runs attacked alike only).")
    return {
        "title": "brittle comparison: " + ", ".join(labels), "labels": labels,
        "colors": [plots.RUN_COLORS[i % len(plots.RUN_COLORS)] for i in range(len(runs))],
        "rows": rows, "warnings": warnings,
        "any_derived": any(c["derived"] for row in rows for c in row["cells"]),
        "figures": {"robust": plots.compare_robust(runs, labels), "tau": plots.compare_tau(runs, labels)},
        "thumbs": [{"label": label, "uri": plots.scatter_thumbnail(run, label), "dir": str(run.path)}
                   for run, label in zip(runs, labels)],
        "commands": [{"label": label, "command": str(run.summary.get("command", "")),
                      "versions": ", ".join(f"{k} {v}" for k, v in (run.summary.get("versions") or {}).items())}
                     for run, label in zip(runs, labels)],
        "brittle_version": _version(),
    }


def render_comparison(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Render one self-contained HTML page comparing several audits side by side; returns ``out``."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if len(run_dirs) < 1:
        raise InputError("no run directories to compare", "pass one or more audit --out directories")
    runs = [load_run(d) for d in run_dirs]
    html = _environment().get_template("compare.html.j2").render(**comparison_context(runs))
    return _write(html, Path(out))
