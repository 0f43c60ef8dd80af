"""HTML reports: a synthetic but coherent run directory is rendered, parsed, and (when Chromium is installed)
opened headless, screenshotted and checked for console errors through the DevTools protocol."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from brittle.errors import StoreError
from brittle.report import render_comparison, render_report

EVIL = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


# --------------------------------------------------------------------------------------------
# A coherent synthetic run directory, written per the run-directory contract
# --------------------------------------------------------------------------------------------

def _corr(a: np.ndarray, b: np.ndarray, kind: str, rng: np.random.Generator) -> dict[str, float]:
    fn = {"kendall": lambda u, v: stats.kendalltau(u, v)[0], "spearman": lambda u, v: stats.spearmanr(u, v)[0],
          "pearson": lambda u, v: stats.pearsonr(u, v)[0]}[kind]
    if kind == "pearson":
        keep = np.isfinite(a)
        a, b = a[keep], b[keep]
    a = np.where(np.isinf(a), 1e9, a)
    boots = [fn(a[i], b[i]) for i in (rng.integers(0, a.size, a.size) for _ in range(30))]
    return {"value": float(fn(a, b)), "ci_low": float(np.quantile(boots, 0.025)),
            "ci_high": float(np.quantile(boots, 0.975))}


def make_run(directory: Path, *, model: str = "synthetic-cnn", n: int = 300, seed: int = 0, strength: float = 1.0,
             images: np.ndarray | None = None, labelled: bool = True, extras: bool = True) -> Path:
    """Write summary.json, samples.parquet, curves.json and examples.npz that agree with one another.

    The input margin grows with the logit margin (with noise); ``strength`` scales the robustness; margins above
    the attack budget are censored to ``inf``; certified lower bounds are a fraction of the input margin.
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    eps = [0.05, 0.1, 0.2]
    budget = 0.3
    logit = rng.lognormal(1.0, 0.8, n)
    input_margin = 0.025 * strength * logit ** 0.9 * rng.lognormal(0.0, 0.35, n)
    upper = np.where(input_margin > budget, np.inf, input_margin)
    lower = np.where(rng.random(n) < 0.7, input_margin * rng.uniform(0.2, 0.8, n), 0.0)
    label = rng.integers(0, 10, n)
    correct = rng.random(n) < 1 / (1 + np.exp(-(logit - 0.4)))
    pred = np.where(correct, label, (label + 1 + rng.integers(0, 9, n)) % 10)
    runner_up = (pred + 1 + rng.integers(0, 9, n)) % 10
    adv_class = np.where(np.isinf(upper), -1, runner_up)
    frame = {"index": np.arange(n), "label": label.astype(float) if labelled else np.full(n, np.nan), "pred": pred,
             "correct": correct, "logit_margin": logit, "runner_up": runner_up, "input_margin_upper": upper,
             "input_margin_lower": lower, "adv_class": adv_class}
    if extras:
        frame["pseudo_margin"] = logit ** 0.95 * rng.lognormal(0, 0.15, n)
    if not labelled:
        del frame["label"]
    pd.DataFrame(frame).to_parquet(directory / "samples.parquet")

    detection, curves, robust = {}, {}, {}
    for e in eps:
        positive = upper <= e
        key = f"{e:g}"
        robust[key] = {"upper": float(np.mean(correct & (upper > e))), "lower": float(np.mean(correct & (lower > e)))}
        if 0 < positive.sum() < n:
            fpr, tpr, _ = roc_curve(positive, -logit)
            precision, recall, _ = precision_recall_curve(positive, -logit)
            detection[key] = {"auroc": float(roc_auc_score(positive, -logit)),
                              "aupr": float(average_precision_score(positive, -logit)),
                              "fpr_at_95_tpr": float(fpr[np.searchsorted(tpr, 0.95)]),
                              "n_positive": int(positive.sum()), "n_negative": int((~positive).sum())}
            curves[key] = {"roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
                           "pr": {"precision": precision.tolist(), "recall": recall.tolist()}}
        else:
            detection[key] = {"auroc": None, "aupr": None, "fpr_at_95_tpr": None,
                              "n_positive": int(positive.sum()), "n_negative": int((~positive).sum())}
    grid = np.linspace(0, max(eps), 201)
    expected = float(np.mean([np.mean(correct & (upper > g)) for g in grid]))
    summary = {
        "model": model, "data": "synthetic digits (test split)", "norm": "linf", "eps": eps, "n": n,
        "clean_accuracy": float(correct.mean()), "robust_accuracy": robust,
        "kendall_tau": _corr(upper, logit, "kendall", rng), "spearman": _corr(upper, logit, "spearman", rng),
        "pearson": _corr(upper, logit, "pearson", rng), "detection": detection,
        "expected_robustness": {"eps_max": max(eps), "from_margins": expected},
        "method": "pgd-linf (binary search, 20 steps)", "seconds": 754.3, "seed": seed, "device": "cpu",
        "versions": {"brittle": "0.1.0", "torch": "2.13.0", "python": "3.11.2"},
        "command": f"brittle audit -m '{model}' -d digits --norm linf --eps 0.05,0.1,0.2 --out runs/x",
    }
    if extras:
        summary["pseudo_margin"] = {"layer": "features.4", "kendall_tau_before": summary["kendall_tau"]["value"],
                                    "kendall_tau_after": summary["kendall_tau"]["value"] + 0.06,
                                    "auroc_before": {k: v["auroc"] for k, v in detection.items()},
                                    "auroc_after": {k: (v["auroc"] or 0.5) + 0.02 for k, v in detection.items()}}
        threshold = float(np.quantile(logit[upper <= 0.1], 0.95))
        flagged = logit <= threshold
        summary["monitor"] = {"eps": 0.1, "threshold": threshold, "target_recall": 0.95,
                              "recall": float(flagged[upper <= 0.1].mean()),
                              "false_alarm_rate": float(flagged[upper > 0.1].mean())}
        summary["subset_estimates"] = [
            {"eps": e, "n": 100, "method": method, "estimate": robust[f"{e:g}"]["upper"] + shift,
             "ci_low": robust[f"{e:g}"]["upper"] + shift - 0.06, "ci_high": robust[f"{e:g}"]["upper"] + shift + 0.06,
             "true": robust[f"{e:g}"]["upper"]}
            for e in (0.05, 0.1) for method, shift in (("logit-margin regression", 0.01), ("plain subset", -0.03))]
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    (directory / "curves.json").write_text(json.dumps(curves))

    if images is None:  # smooth random blobs, 1×28×28
        yy, xx = np.mgrid[0:28, 0:28] / 27.0
        k = 8
        centers = rng.uniform(0.3, 0.7, (k, 2))
        images = np.exp(-((xx - centers[:, :1, None]) ** 2 + (yy - centers[:, 1:, None]) ** 2) / 0.03)[:, None]
    k = images.shape[0]
    chosen = np.argsort(upper)[:k]
    x = images.astype(np.float32)
    x_adv = np.clip(x + upper[chosen, None, None, None] * np.sign(rng.standard_normal(x.shape)), 0, 1).astype(np.float32)
    np.savez(directory / "examples.npz", index=chosen, x=x, x_adv=x_adv, pred=pred[chosen],
             adv_class=adv_class[chosen], input_margin=upper[chosen])
    return directory


# --------------------------------------------------------------------------------------------
# HTML checks
# --------------------------------------------------------------------------------------------

class _Page(HTMLParser):
    """Collects ids, image sources, every URL-bearing attribute, and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("src", "href", "srcset", "action", "poster", "data") and value:
                self.urls.append(value)
                if tag == "img" and name == "src":
                    self.images.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(path: Path) -> tuple[str, _Page]:
    html = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    return html, page


def _assert_self_contained(html: str, page: _Page) -> None:
    for url in page.urls:
        assert url.startswith(("data:", "#")), f"external reference {url[:80]!r}"
    assert not re.search(r"url\(\s*['\"]?(?!data:)", html), "CSS url() to something other than data:"
    assert "@import" not in html
    assert "script" not in page.tags and "link" not in page.tags


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run", model=f"resnet {EVIL} & co")


def test_report_sections_images_and_escaping(run_dir: Path) -> None:
    out = render_report(run_dir)
    assert out == run_dir / "report.html"
    html, page = _parse(out)
    for section in ("overview", "card", "summary", "scatter", "detection", "robust", "histograms", "gallery",
                    "pseudo", "monitor", "subset", "reproduce"):
        assert section in page.ids, f"section {section} missing"
    # figures: scatter, ROC/PR, robust accuracy, histograms, pseudo scatter, subset plot + 3 images per example
    assert len(page.images) == 6 + 3 * 8
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    _assert_self_contained(html, page)
    assert "<script>alert" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = " ".join(page.text)
    assert f"resnet {EVIL} & co" in text  # the parser unescapes: the name is shown as the user wrote it
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"{100 * summary['clean_accuracy']:.1f}%" in text
    assert f"{summary['kendall_tau']['value']:.3f}" in text
    assert "can be flipped by an L∞ perturbation ≤ 0.1" in text
    assert f"AUROC {summary['detection']['0.1']['auroc']:.3f}" in text
    assert "drawn at top edge" not in text  # legend text lives inside the PNG, not the HTML
    assert summary["command"] in text and "torch" in text


def test_report_minimal_run_without_optional_parts(tmp_path: Path) -> None:
    run = make_run(tmp_path / "bare", labelled=False, extras=False)
    (run / "examples.npz").unlink()
    summary = json.loads((run / "summary.json").read_text())
    summary["clean_accuracy"] = None
    (run / "summary.json").write_text(json.dumps(summary))
    out = render_report(run, tmp_path / "elsewhere" / "page.html")
    html, page = _parse(out)
    assert out.is_file() and not (run / "report.html").exists()
    assert {"scatter", "detection", "histograms"} <= page.ids
    assert not {"gallery", "pseudo", "monitor", "subset"} & page.ids
    assert "unlabelled" in html
    _assert_self_contained(html, page)


def test_report_refuses_a_directory_without_summary(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="summary.json"):
        render_report(tmp_path / "empty")


def test_comparison(tmp_path: Path) -> None:
    runs = [make_run(tmp_path / "a", model="standard", seed=1, extras=False),
            make_run(tmp_path / "b", model=f"madry {EVIL}", seed=2, strength=2.5, extras=False),
            make_run(tmp_path / "c", model="standard", seed=3, strength=1.5, extras=False)]
    out = render_comparison(runs, tmp_path / "cmp" / "compare.html")
    html, page = _parse(out)
    assert {"metrics", "robust", "tau", "scatters", "reproduce"} <= page.ids
    assert len(page.images) == 2 + 3  # overlaid curves, τ dot plot, three scatter thumbnails
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    _assert_self_contained(html, page)
    assert "<script>alert" not in html.lower()
    text = " ".join(page.text)
    assert "standard (a)" in text and "standard (c)" in text  # repeated model names are told apart
    assert "Kendall τ [95% CI]" in text and "Robust accuracy" in text and "ε = 0.1" in text


# --------------------------------------------------------------------------------------------
# Headless Chromium: screenshot + console errors, driven over the DevTools protocol (pipe transport)
# --------------------------------------------------------------------------------------------

def _high_fd(fd: int) -> int:
    """``fd`` moved to a number >= 10 (close-on-exec), so the child's dup2 onto 3 and 4 cannot clobber it."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class _DevTools:
    """Minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out)."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = map(_high_fd, os.pipe())
        self._from_chrome, from_chrome_w = map(_high_fd, os.pipe())
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}",
                "--remote-debugging-pipe", "about:blank"]

        def fds() -> None:  # runs in the child: put the pipe ends on fds 3 and 4 (dup2 makes them inheritable;
            os.dup2(to_chrome_r, 3)  # every other descriptor of ours is non-inheritable, so exec closes it)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(args, close_fds=False, preexec_fn=fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._from_chrome], [], [], remaining)[0]:
                raise TimeoutError("Chromium did not answer over the DevTools pipe")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 20, **params) -> dict:
        self._next_id += 1
        payload = {"id": self._next_id, "method": method, "params": params}
        if session:
            payload["sessionId"] = session
        os.write(self._to_chrome, json.dumps(payload).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            message = self._read_message(deadline)
            self.events.append(message)
            if message.get("method") == method:
                return message

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def open_in_chromium(html_path: Path, profile: Path, width: int = 1280, height: int = 4000) -> tuple[bytes, list[str]]:
    """Load ``html_path`` in headless Chromium; return a PNG screenshot and every console / page error."""
    tools = _DevTools(profile)
    try:
        target = tools.call("Target.createTarget", url="about:blank")["targetId"]
        session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            tools.call(domain, session=session)
        tools.call("Emulation.setDeviceMetricsOverride", session=session, width=width, height=height,
                   deviceScaleFactor=1, mobile=False)
        tools.events.clear()
        tools.call("Page.navigate", session=session, url=html_path.resolve().as_uri())
        tools.wait_for("Page.loadEventFired")
        tools.call("Runtime.evaluate", session=session, expression="document.title")  # flush pending console events
        shot = tools.call("Page.captureScreenshot", session=session, format="png")
        errors = []
        for event in tools.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                errors.append(f"{details.get('text', 'exception')} {details.get('exception', {}).get('description', '')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                errors.append(params["entry"].get("text", ""))
        return base64.b64decode(shot["data"]), errors
    finally:
        tools.close()


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed: `apt-get install chromium chromium-driver` "
                    "(CI's .ci/run installs them) to run the headless report test")
    return CHROMIUM


def test_report_in_headless_chromium(run_dir: Path, tmp_path: Path, chromium: str) -> None:
    from PIL import Image

    # The error collection itself works: a page that throws and logs an error is caught.
    canary = tmp_path / "canary.html"
    canary.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('canary-log');"
                      "undefinedFunction();</script></body></html>")
    _, canary_errors = open_in_chromium(canary, tmp_path / "profile-canary", height=300)
    assert any("undefinedFunction" in e for e in canary_errors), canary_errors
    assert any("canary-log" in e for e in canary_errors), canary_errors

    out = render_report(run_dir)
    png, errors = open_in_chromium(out, tmp_path / "profile")
    assert errors == [], errors
    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert image.shape == (4000, 1280)
    assert image.std() > 20, "screenshot is (nearly) blank"
    assert (image < 128).mean() > 0.01  # there is dark ink (text, plots) on the page
    # the embedded figures were decoded and painted: the top 4000 px hold several non-white, non-text blocks
    rows_with_ink = (image < 200).mean(axis=1)
    assert (rows_with_ink > 0.05).sum() > 400


def test_robust_accuracy_curve_matches_its_definition(tmp_path: Path) -> None:
    from brittle.report._load import load_run
    from brittle.report._plots import robust_curve

    run = load_run(make_run(tmp_path / "r", n=400, extras=False))
    curve = robust_curve(run, 0.2)
    correct = run.samples["correct"].to_numpy()
    for column, key in (("input_margin_upper", "upper"), ("input_margin_lower", "lower")):
        margin = run.samples[column].to_numpy()
        expected = [np.mean(correct & (margin > e)) for e in curve["eps"]]
        np.testing.assert_allclose(curve[key], expected)
    # its mean over the grid is the expected robustness the run reports (same integral, same grid density)
    assert math.isclose(curve["upper"].mean(), run.summary["expected_robustness"]["from_margins"], abs_tol=2e-3)


def test_report_file_mode_follows_the_umask(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", n=60)
    old = os.umask(0o022)
    try:
        path = render_report(run)
        cmp_path = render_comparison([run, make_run(tmp_path / "run2", n=60, seed=1)], tmp_path / "cmp.html")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert cmp_path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("strength", [1.0, 0.2])
def test_report_recommends_a_monitor_only_when_its_false_alarms_allow(tmp_path: Path, strength: float) -> None:
    from brittle.report._load import load_run
    from brittle.report._render import MONITOR_MAX_FPR, monitor_advice

    run = make_run(tmp_path / "run", n=300, strength=strength)
    monitor = json.loads((run / "summary.json").read_text())["monitor"]  # a calibrated monitor decides
    advice = monitor_advice(load_run(run))
    assert advice["threshold"] == monitor["threshold"] and advice["fpr"] == monitor["false_alarm_rate"]
    assert advice["recommended"] == (monitor["false_alarm_rate"] <= MONITOR_MAX_FPR)
    run = make_run(tmp_path / "plain", n=300, strength=strength, extras=False)  # without one: from the samples
    advice = monitor_advice(load_run(run))
    assert advice is not None and advice["recommended"] == (advice["fpr"] <= MONITOR_MAX_FPR)
    samples = pd.read_parquet(run / "samples.parquet")
    eps = json.loads((run / "summary.json").read_text())["eps"][1]
    correct = samples["correct"].to_numpy(bool)
    im = samples["input_margin_upper"].to_numpy(float)
    pos, neg = correct & (im <= eps), correct & (im > eps)
    lm = samples["logit_margin"].to_numpy(float)
    assert advice["recall"] >= 0.95 and advice["fpr"] == pytest.approx(np.mean(lm[neg] <= advice["threshold"]))
    assert np.mean(lm[pos] <= advice["threshold"]) == advice["recall"]
    html = render_report(run).read_text()
    text = " ".join(re.sub(r"<[^>]+>", "", html).split())
    if advice["recommended"]:
        assert "Deployable monitor: flagging inputs whose logit margin is ≤" in text
    else:
        assert "No monitor recommended" in text and "cheap robustness monitor" not in text


def test_scatter_axes_are_not_stretched_by_one_outlier_and_show_every_eps(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from brittle.report._load import load_run
    from brittle.report._plots import _draw_scatter

    run_dir = make_run(tmp_path / "run", n=300)
    samples = pd.read_parquet(run_dir / "samples.parquet")
    finite = samples["input_margin_upper"].replace(np.inf, np.nan).dropna()
    samples.loc[samples.index[0], ["input_margin_upper", "correct"]] = [1e-9, False]  # one misclassified outlier
    samples.to_parquet(run_dir / "samples.parquet", index=False)
    ax = Figure().add_subplot()
    run = load_run(run_dir)
    assert _draw_scatter(ax, run)
    low, high = ax.get_ylim()
    assert low > 0.1 * float(finite.min())  # one 1e-9 outlier would have put the floor near 1e-9
    assert all(low < e < high for e in run.eps)


# --------------------------------------------------------------------------------------------
# Comparison pages: curves that exist, bold among comparable runs, values from stored margins, ε lines
# --------------------------------------------------------------------------------------------

def _edit_summary(directory: Path, edit) -> Path:
    summary = json.loads((directory / "summary.json").read_text())
    edit(summary)
    (directory / "summary.json").write_text(json.dumps(summary))
    return directory


def _trapezoid_er(directory: Path, eps_max: float) -> float:
    samples = pd.read_parquet(directory / "samples.parquet")
    correct, upper = samples["correct"].to_numpy(bool), samples["input_margin_upper"].to_numpy(float)
    grid = np.linspace(0, eps_max, 201)
    acc = np.array([np.mean(correct & (upper > g)) for g in grid])
    return float(np.sum((acc[1:] + acc[:-1]) / 2 * np.diff(grid)) / eps_max)


def _audited_like(directory: Path, eps: list[float] | None = None, norm: str = "linf") -> Path:
    """make_run's run with a subset of its ε and the expected robustness an audit writes (trapezoid rule)."""
    def edit(summary):
        keep = eps or summary["eps"]
        summary["eps"], summary["norm"] = keep, norm
        for section in ("robust_accuracy", "detection"):
            summary[section] = {k: v for k, v in summary[section].items() if float(k) in keep}
        summary["expected_robustness"] = {"eps_max": max(keep), "from_margins": _trapezoid_er(directory, max(keep))}
    return _edit_summary(directory, edit)


def _cell(ctx: dict, metric: str, column: int, after: str | None = None) -> dict:
    rows = ctx["rows"]
    start = next(i for i, r in enumerate(rows) if r["metric"] == after) if after else 0
    row = next(r for r in rows[start:] if r["metric"] == metric)
    return row["cells"][column]


def test_comparison_fills_missing_eps_and_eps_max_from_stored_margins(tmp_path: Path) -> None:
    from brittle.report._load import load_run
    from brittle.report._render import comparison_context

    a = _audited_like(make_run(tmp_path / "a", model="a", seed=1, extras=False))
    b = _audited_like(make_run(tmp_path / "b", model="b", seed=2, strength=2.0, extras=False), eps=[0.05, 0.1])
    ctx = comparison_context([load_run(a), load_run(b)])
    samples = pd.read_parquet(b / "samples.parquet")
    correct = samples["correct"].to_numpy(bool)
    up = np.mean(correct & (samples["input_margin_upper"].to_numpy(float) > 0.2))
    lo = np.mean(correct & (samples["input_margin_lower"].to_numpy(float) > 0.2))
    cell = _cell(ctx, "ε = 0.2", 1, after="Robust accuracy")  # b never audited ε = 0.2: from its samples
    assert cell["derived"] and cell["text"] == f"{100 * up:.1f}% ({100 * lo:.1f}%)"
    assert not _cell(ctx, "ε = 0.2", 0, after="Robust accuracy")["derived"]  # a's own value, from its summary
    assert not _cell(ctx, "ε = 0.1", 1, after="Robust accuracy")["derived"]
    auroc = _cell(ctx, "ε = 0.2", 1, after="AUROC")
    assert auroc["derived"] and auroc["text"] != "—"
    positive = samples["input_margin_upper"].to_numpy(float) <= 0.2
    assert float(auroc["text"]) == pytest.approx(roc_auc_score(positive, -samples["logit_margin"]), abs=5e-4)
    # expected robustness at one ε_max (a's 0.2): b's computed from its samples, so the row compares like with like
    er = _cell(ctx, "Expected robustness (ε ≤ 0.2)", 1)
    assert er["text"].endswith("%")  # expected robustness is an accuracy: shown in % like the others
    assert er["derived"] and float(er["text"].rstrip("%")) / 100 == pytest.approx(_trapezoid_er(b, 0.2), abs=5e-4)
    html = render_comparison([a, b], tmp_path / "cmp.html").read_text()
    assert "<sup" in html and "computed from its stored per-sample" in html


def test_comparison_bolds_best_only_among_comparable_runs(tmp_path: Path) -> None:
    from brittle.report._load import load_run
    from brittle.report._render import comparison_context

    a = _audited_like(make_run(tmp_path / "a", model="a", seed=1, extras=False))
    b = _audited_like(make_run(tmp_path / "b", model="b", seed=2, strength=3.0, extras=False))
    c = _audited_like(make_run(tmp_path / "c", model="c", seed=3, strength=9.0, extras=False), norm="l2")
    ctx = comparison_context([load_run(a), load_run(b), load_run(c)])
    assert any("different norms" in w for w in ctx["warnings"])
    metrics = [r["metric"] for r in ctx["rows"]]
    assert "L∞ ε = 0.1" in metrics and "L2 ε = 0.1" in metrics  # rows per norm
    linf = _cell(ctx, "L∞ ε = 0.2", 0, after="Robust accuracy")
    row = next(r for r in ctx["rows"] if r["metric"] == "L∞ ε = 0.2")
    assert row["cells"][2]["text"] == "—" and not row["cells"][2]["best"]  # the L2 run is not in the L∞ row
    assert [c["best"] for c in row["cells"]].count(True) == 1 and row["cells"][1]["best"] and not linf["best"]
    l2 = next(r for r in ctx["rows"] if r["metric"] == "L2 ε = 0.2")
    assert not any(c["best"] for c in l2["cells"])  # one L2 run: nothing to compare it with
    tau = next(r for r in ctx["rows"] if r["metric"] == "Kendall τ [95% CI]")
    assert sum(c["best"] for c in tau["cells"][:2]) == 1 and not tau["cells"][2]["best"]
    er = next(r for r in ctx["rows"] if r["metric"].startswith("Expected robustness"))
    assert not er["cells"][2]["best"] and sum(c["best"] for c in er["cells"]) == 1
    # different ε_max without stored margins to recompute from: not compared
    d = _edit_summary(make_run(tmp_path / "d", model="d", seed=4, extras=False),
                      lambda s: s["expected_robustness"].update(eps_max=0.3))
    e = make_run(tmp_path / "e", model="e", seed=5, strength=3.0, extras=False)
    (d / "samples.parquet").unlink()
    (e / "samples.parquet").unlink()
    ctx = comparison_context([load_run(d), load_run(e)])
    er = next(r for r in ctx["rows"] if r["metric"].startswith("Expected robustness"))
    assert not any(c["best"] for c in er["cells"]) and "(ε ≤ 0.3)" in er["cells"][0]["text"]


def _figures(monkeypatch) -> list:
    from brittle.report import _plots

    figs = []
    monkeypatch.setattr(_plots, "to_data_uri", lambda fig: figs.append(fig) or "data:image/png;base64,")
    return figs


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_comparison_legend_lists_only_curves_that_exist(tmp_path: Path, monkeypatch) -> None:
    from brittle.report import _plots
    from brittle.report._load import load_run

    def no_certificates(directory: Path) -> Path:
        samples = pd.read_parquet(directory / "samples.parquet")
        samples["input_margin_lower"] = 0.0
        samples.to_parquet(directory / "samples.parquet")
        return _edit_summary(directory, lambda s: [v.update(lower=None) for v in s["robust_accuracy"].values()])

    a = no_certificates(make_run(tmp_path / "a", model="alpha", seed=1, extras=False))
    b = no_certificates(make_run(tmp_path / "b", model="beta", seed=2, extras=False))
    figs = _figures(monkeypatch)
    _plots.compare_robust([load_run(a), load_run(b)], ["alpha", "beta"])
    texts = _legend_texts(figs[-1])
    assert "certified lower bound" not in texts and {"alpha", "beta", "attack upper bound"} <= set(texts)
    c = make_run(tmp_path / "c", model="gamma", seed=3, extras=False)  # with certified bounds
    _plots.compare_robust([load_run(a), load_run(c)], ["alpha", "gamma"])
    assert "certified lower bound" in _legend_texts(figs[-1])
    empty = _edit_summary(make_run(tmp_path / "empty", model="empty", seed=4, extras=False),
                          lambda s: [s.pop(k) for k in ("clean_accuracy", "robust_accuracy")])
    (empty / "samples.parquet").unlink()
    _plots.compare_robust([load_run(a), load_run(empty)], ["alpha", "empty"])
    assert "empty" not in _legend_texts(figs[-1])  # a run without any curve is not in the legend


def _has_eps_line(fig, e: float) -> bool:
    for ax in fig.axes:
        for line in ax.lines:
            for data in (line.get_xdata(), line.get_ydata()):
                values = np.asarray(data, dtype=float)
                if values.size == 2 and np.allclose(values, e):
                    return True
    return False


def test_every_eps_plot_draws_the_audited_eps(tmp_path: Path, monkeypatch) -> None:
    from brittle.report import _plots
    from brittle.report._load import load_run

    run = load_run(make_run(tmp_path / "run", seed=1))
    other = load_run(make_run(tmp_path / "other", seed=2))
    figs = _figures(monkeypatch)
    drawn = {"robust_accuracy_plot": _plots.robust_accuracy_plot(run), "margin_scatter": _plots.margin_scatter(run),
             "scatter_thumbnail": _plots.scatter_thumbnail(run, "run"),
             "margin_histograms": _plots.margin_histograms(run),
             "pseudo_margin_scatter": _plots.pseudo_margin_scatter(run),
             "compare_robust": _plots.compare_robust([run, other], ["run", "other"])}
    assert all(drawn.values()) and len(figs) == len(drawn)
    for (name, _), fig in zip(drawn.items(), figs):
        for e in run.eps:
            assert _has_eps_line(fig, e), f"{name} has no line at the audited ε = {e}"


def test_mixed_norm_comparison_draws_one_panel_per_norm(tmp_path: Path, monkeypatch) -> None:
    """L∞ and L2 budgets share no axis: one panel per norm, each with its own runs and its own ε lines, the legend
    naming each run's norm; ε labels that would overlap are put on separate rows."""
    from brittle.report import _plots
    from brittle.report._load import load_run

    a = _audited_like(make_run(tmp_path / "a", model="a", seed=1, extras=False), eps=[0.05, 0.1])
    b = _audited_like(make_run(tmp_path / "b", model="b", seed=2, extras=False), eps=[0.1, 0.2], norm="l2")
    figs = _figures(monkeypatch)
    assert _plots.compare_robust([load_run(a), load_run(b)], ["alpha", "beta"])
    fig = figs[-1]
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    assert [ax.get_xlabel() for ax in panels] == ["ε (L∞ perturbation budget)", "ε (L2 perturbation budget)"]

    def eps_labels(ax):
        return sorted(t.get_text() for t in ax.texts if t.get_text().startswith("ε="))

    assert eps_labels(panels[0]) == ["ε=0.05", "ε=0.1"] and eps_labels(panels[1]) == ["ε=0.1", "ε=0.2"]
    texts = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in panels]
    assert "alpha (L∞)" in texts[0] and "beta" not in " ".join(texts[0]) and "beta (L2)" in texts[1]
    one = _plots.compare_robust([load_run(a), load_run(a)], ["alpha", "again"])
    assert one and len([ax for ax in figs[-1].axes if ax.get_xlabel()]) == 1  # one norm: one panel, as before

    fig = _plots.new_figure(7.6, 4.2)
    ax = fig.add_subplot()
    ax.set_xlim(0, 2.0)  # 0.05 and 0.1 on an axis up to 2: their labels would print on top of each other
    rows = _plots._eps_lines(ax, [0.05, 0.1, 1.0])
    offsets = {t.get_text(): t.xyann[1] for t in ax.texts}
    assert rows == 2 and offsets["ε=0.05"] != offsets["ε=0.1"] and offsets["ε=1"] == offsets["ε=0.05"]


def test_the_card_says_which_time_it_shows(tmp_path: Path) -> None:
    from brittle.report._load import load_run
    from brittle.report._render import _card

    run_dir = _edit_summary(make_run(tmp_path / "run", seed=1), lambda s: s.update(seconds=0.42, attack_seconds=1.84))
    card = dict(_card(load_run(run_dir)))
    assert card["Run time (this session)"] == "0.4 s" and card["Attack time (all sessions)"] == "1.8 s"
    assert "Run time" not in card


def test_comparison_groups_runs_by_the_data_name(tmp_path: Path) -> None:
    """Runs on data with different names (an idx folder is no longer called mnist:test; two .npz files with one stem
    are named by their paths) are compared as runs on different data: a warning, and no bold across them."""
    from brittle.report._load import load_run
    from brittle.report._render import comparison_context

    a = _edit_summary(make_run(tmp_path / "a", model="a", seed=1, extras=False), lambda s: s.update(data="a/ok.npz"))
    b = _edit_summary(make_run(tmp_path / "b", model="b", seed=2, strength=3.0, extras=False),
                      lambda s: s.update(data="b/ok.npz"))
    ctx = comparison_context([load_run(a), load_run(b)])
    assert any("different data" in w for w in ctx["warnings"])
    assert not any(c["best"] for c in _row(ctx, "Clean accuracy")["cells"])
    _edit_summary(b, lambda s: s.update(data="a/ok.npz"))
    ctx = comparison_context([load_run(a), load_run(b)])
    assert not any("different data" in w for w in ctx["warnings"])


def _row(ctx: dict, metric: str) -> dict:
    return next(r for r in ctx["rows"] if r["metric"] == metric)


def test_long_run_names_stay_distinct_in_the_comparison_figures():
    """Labels were cut to their first 28 characters: two models whose names share a prefix drew as one."""
    from pathlib import Path

    from brittle.core.runs import Run
    from brittle.report._plots import plain
    from brittle.report._render import _labels

    base = "long/mnist_cnn_standard_training_finetuned_with_long_descriptive_name"
    runs = [Run(path=Path(f"r{i}"), summary={"model": f"{base}_seed{i}.pt"}, samples=None, curves={}, examples=None)
            for i in range(2)]
    assert len({plain(label, 28) for label in _labels(runs)}) == 2
    middle = [Run(path=Path(f"m{i}"), summary={"model": f"aaaaaaaaaaaaaaaaaaaa{i}bbbbbbbbbbbbbbbbbbbbbbbb"}, samples=None,
                  curves={}, examples=None) for i in range(2)]
    labels = _labels(middle)  # differing in the middle, where the cut falls: numbered
    assert labels[0].startswith("1. ") and len({plain(label, 28) for label in labels}) == 2


def test_the_lead_says_every_input_was_flipped_not_at_least_100_percent(tmp_path: Path) -> None:
    from brittle.report._load import load_run
    from brittle.report._render import _lead

    run = load_run(make_run(tmp_path / "r", strength=0.001, extras=False))  # margins far below every ε
    text = " ".join(str(m) for m in _lead(run))
    assert "flipped <strong>every one</strong> of the correctly classified inputs" in text
    assert "At least <strong>100.0%</strong>" not in text


def test_the_pseudo_margin_scatter_shows_only_the_held_out_inputs(tmp_path: Path, monkeypatch) -> None:
    """The section compares on the held-out half, but its scatter also drew the half the pseudo-margin was
    fitted on."""
    import pandas as pd

    from brittle.report import _plots
    from brittle.report._load import load_run

    path = make_run(tmp_path / "run", seed=1)
    samples = pd.read_parquet(path / "samples.parquet")
    samples["pseudo_margin"] = np.linspace(0.1, 1.0, len(samples))
    samples["split"] = np.where(np.arange(len(samples)) % 3 == 0, "fit", "evaluation")
    samples.to_parquet(path / "samples.parquet")
    run = load_run(path)
    figs = _figures(monkeypatch)
    assert _plots.pseudo_margin_scatter(run)
    upper = samples["input_margin_upper"].to_numpy(float)
    shown = (samples["split"] != "fit").to_numpy() & np.isfinite(upper) & (upper > 0)
    (points,) = [c for c in figs[-1].axes[0].collections if len(c.get_offsets())]
    assert len(points.get_offsets()) == int(shown.sum()) < int((np.isfinite(upper) & (upper > 0)).sum())
    assert "held-out" in figs[-1].axes[0].get_title()


def test_points_below_the_scatter_axes_are_marked_not_drawn_as_if_there(tmp_path: Path, monkeypatch) -> None:
    """The axis floors sit at half the 1st percentile: the few inputs below were drawn on the floor like any
    other point, about 2.7x away from their real position on both axes."""
    import pandas as pd

    from brittle.report import _plots
    from brittle.report._load import load_run

    path = make_run(tmp_path / "run", seed=1)
    samples = pd.read_parquet(path / "samples.parquet")
    samples.loc[0, "input_margin_upper"] = 1e-7  # far below every other margin
    samples.to_parquet(path / "samples.parquet")
    figs = _figures(monkeypatch)
    assert _plots.margin_scatter(load_run(path))
    assert "below the axis (n=1), drawn on its floor" in _legend_texts(figs[-1])
