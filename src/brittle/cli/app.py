"""The ``brittle`` command line: a thin layer over the Python API.

Exit codes: 0 success; 2 invalid input, model or settings (one-line message); 3 the output directory
cannot be used (another run, unwritable, disk full); 130 interrupted. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from .._version import __version__
from ..errors import BrittleError, StoreError

try:  # recent typer vendors click; older releases use the click package
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions

EXIT_INPUT, EXIT_STORE, EXIT_INTERRUPTED = 2, 3, 130

app = typer.Typer(help="brittle: detect brittle decisions of PyTorch classifiers for free.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
zoo_app = typer.Typer(help="The bundled MNIST model zoo.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")

console = Console()
err_console = Console(stderr=True)


class State:
    quiet = False
    as_json = False


def _version_callback(value: bool) -> None:
    if value:
        print(f"brittle {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="Print the version and exit."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
          as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
          debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    State.quiet, State.as_json = quiet or as_json, as_json


def emit(payload: dict[str, Any], table: Table | None = None) -> None:
    """Print a result: JSON with ``--json``, else the rich table unless ``--quiet``."""
    if State.as_json:
        print(json.dumps(payload, indent=2, default=_json_default))
    elif table is not None and not State.quiet:
        console.print(table)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def parse_floats(text: str, what: str = "eps") -> list[float]:
    """``"0.1,0.2"`` → ``[0.1, 0.2]``; a clear error for anything that is not a number (ranges are checked
    by the API, e.g. ε > 0)."""
    from ..errors import InputError

    values = []
    for part in text.split(","):
        try:
            values.append(float(part))
        except ValueError:
            raise InputError(f"--{what} value {part!r} is not a number", f"pass numbers like --{what} 0.1,0.2") from None
    return values


# --------------------------------------------------------------------------------------------
# zoo
# --------------------------------------------------------------------------------------------

@zoo_app.command("list")
def zoo_list() -> None:
    """List the bundled models with their clean and robust accuracy."""
    from ..models import zoo

    rows = [zoo.card(name) for name in zoo.names()]
    table = Table(title="brittle zoo (MNIST)")
    for col in ("name", "training", "clean acc", "robust acc (PGD)", "robust acc (margins)", "τ"):
        table.add_column(col)
    for c in rows:
        recipe, ra = c.get("recipe", {}), c.get("robust_accuracy", {})
        mc = c.get("margin_consistency_estimate") or {}
        by_margins = (mc.get("robust_accuracy_from_margins") or {}).get("value")
        table.add_row(c["name"], f"{recipe.get('method', '?')} {recipe.get('norm', '')} eps={recipe.get('eps', 0)}",
                      f"{100 * c.get('clean_accuracy', float('nan')):.2f}%",
                      f"{100 * ra.get('value', float('nan')):.2f}% ({ra.get('norm', '')} eps={ra.get('eps', '')})",
                      "–" if by_margins is None else f"{100 * by_margins:.1f}% (first {mc.get('samples')})",
                      "–" if mc.get("kendall_tau") is None else f"{mc['kendall_tau']:.2f}")
    emit({"models": rows}, table)


@zoo_app.command("show")
def zoo_show(name: str = typer.Argument(..., help="Zoo model name (see `brittle zoo list`).")) -> None:
    """Show a zoo model's card: recipe, accuracies, how it was built."""
    from ..models import zoo

    info = zoo.card(name)
    table = Table(title=f"zoo model {name}", show_header=False)
    for key, value in info.items():
        table.add_row(key, json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
    emit(info, table)


@zoo_app.command("build")
def zoo_build(root: Path = typer.Option(..., "--root", help="Folder with MNIST idx files (train and test)."),
              names: Optional[str] = typer.Option(None, help="Comma-separated subset of models to build."),
              device: str = typer.Option("auto", help="auto, cpu or cuda."),
              epochs_scale: float = typer.Option(1.0, help="Scale every recipe's epochs (quick trial < 1).")) -> None:
    """Train the zoo from brittle's own training code and write weights and model cards."""
    from ..models.zoo.build import build_zoo

    build_zoo(root=str(root), names=names.split(",") if names else None, device=device, epochs_scale=epochs_scale)


# --------------------------------------------------------------------------------------------
# margins
# --------------------------------------------------------------------------------------------

_BACKEND = typer.Option("local", help="Where margins are computed: local (this process) or ray.")
_WORKERS = typer.Option(1, help="--backend ray: number of Ray workers (actors).")
_GPUS = typer.Option(0.0, "--gpus-per-worker", help="--backend ray: GPUs per worker (fractions share a GPU).")
_ADDRESS = typer.Option(None, help="--backend ray: existing cluster (auto, ray://HOST:10001); default: start one.")


@app.command()
def margins(model: str = typer.Option(..., "--model", "-m", help="Zoo name, TorchScript file, or module:factory."),
            data: str = typer.Option("mnist", "--data", "-d", help="mnist, fashion-mnist, digits, a .npz or idx folder."),
            out: Path = typer.Option(..., "--out", "-o", help="Output directory (resumable run)."),
            norm: str = typer.Option("linf", help="linf or l2."),
            method: str = typer.Option("brittle", help="brittle, ensemble, exact, fab-autoattack, fab-torchattacks, ..."),
            lower: Optional[str] = typer.Option(None, help="Certified lower bounds (ReLU nets): crown (tightest, slow on conv nets), crown-ibp or ibp."),
            weights: Optional[Path] = typer.Option(None, help="State-dict checkpoint for module:factory models."),
            data_root: Optional[Path] = typer.Option(None, help="Folder holding dataset files."),
            limit: Optional[int] = typer.Option(None, help="Use only the first N samples."),
            batch_size: int = typer.Option(250, help="Samples per batch (and per checkpoint)."),
            device: str = typer.Option("auto", help="auto, cpu or cuda."),
            seed: int = typer.Option(0, help="Random seed."),
            overwrite: bool = typer.Option(False, help="Replace a different run in --out."),
            backend: str = _BACKEND, workers: int = _WORKERS, gpus_per_worker: float = _GPUS,
            address: Optional[str] = _ADDRESS) -> None:
    """Input margins (a lower-upper bracket per sample) and logit margins; writes DIR/margins.parquet."""
    import numpy as np

    from ..margins.compute import compute_margins, run_config
    from ..execution.store import RunStore

    net, dataset = _load_inputs(model, data, weights, data_root, limit, None, device)
    t0 = time.perf_counter()
    config = run_config(net, dataset, job="margins", norm=norm, method=method, lower=lower, batch_size=batch_size,
                        seed=seed, method_options={})
    with RunStore(out, config, overwrite=overwrite) as store:
        result = compute_margins(net, dataset, norm=norm, method=method, lower=lower, batch_size=batch_size,
                                 device=device, seed=seed, store=store, progress=not State.quiet, backend=backend,
                                 workers=workers, gpus_per_worker=gpus_per_worker, address=address)
    result.table.to_parquet(out / "margins.parquet", index=False)
    upper = result.table["input_margin_upper"].to_numpy(float)
    lower_b = result.table["input_margin_lower"].to_numpy(float)
    ok = np.isfinite(upper) & (lower_b > 0)
    summary = {"n": len(upper), "norm": norm, "method": method,
               "median_input_margin": float(np.median(upper)),
               "share_censored": float(np.mean(~np.isfinite(upper))),
               "median_bracket_gap": float(np.median(upper[ok] / lower_b[ok])) if ok.any() else None,
               "forward_passes": result.forward_passes, "backward_passes": result.backward_passes,
               "seconds": round(time.perf_counter() - t0, 2)}
    table = Table(title=f"input margins ({norm}) — {out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value))
    emit(summary, table)
    if not State.quiet:
        console.print(f"per-sample results: {out / 'margins.parquet'}")


# --------------------------------------------------------------------------------------------
# audit, report, compare, demo
# --------------------------------------------------------------------------------------------

def _load_inputs(model: str, data: str, weights: Optional[Path], data_root: Optional[Path], limit: Optional[int],
                 domain: Optional[str], device: str):
    from ..data.loading import DEFAULT_DOMAIN, load_data
    from ..models.loading import load_model

    dom = tuple(parse_floats(domain, "domain")) if domain else DEFAULT_DOMAIN
    if len(dom) != 2:
        from ..errors import InputError
        raise InputError(f"--domain needs two numbers low,high, got {domain!r}", "pass e.g. --domain 0,1")
    dataset = load_data(data, data_root, domain=dom, limit=limit)
    return load_model(model, weights, device=device), dataset


def audit_summary_table(summary: dict[str, Any], title: str) -> Table:
    """The end-of-run summary as a rich table."""
    def pct(v: Any) -> str:
        return "–" if v is None else f"{100 * v:.1f}%"

    def num(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    table = Table(title=title)
    for col in ("ε", "robust acc (attack, upper)", "robust acc (certified, lower)", "AUROC", "AUPR", "FPR@95"):
        table.add_column(col, justify="right")
    for e in summary.get("eps", []):
        ra = summary.get("robust_accuracy", {}).get(str(e), {})
        det = summary.get("detection", {}).get(str(e), {})
        table.add_row(f"{e:g}", pct(ra.get("upper")), pct(ra.get("lower")), num(det.get("auroc")),
                      num(det.get("aupr")), num(det.get("fpr_at_95_tpr")))
    tau = summary.get("kendall_tau") or {}
    table.caption = (f"clean accuracy {pct(summary.get('clean_accuracy'))} · Kendall τ {num(tau.get('value'))} "
                     f"[{num(tau.get('ci_low'))}, {num(tau.get('ci_high'))}] · expected robustness "
                     f"{pct((summary.get('expected_robustness') or {}).get('from_margins'))} · "
                     f"{summary.get('n')} samples in {summary.get('seconds', 0):.1f}s")
    return table


@app.command()
def audit(model: str = typer.Option(..., "--model", "-m", help="Zoo name, TorchScript file, or module:factory."),
          data: str = typer.Option("mnist", "--data", "-d", help="mnist, fashion-mnist, digits, a .npz or idx folder."),
          out: Path = typer.Option(..., "--out", "-o", help="Output directory (resumable run)."),
          norm: str = typer.Option("linf", help="linf or l2."),
          eps: Optional[str] = typer.Option(None, help="Comma-separated budgets (default: MNIST's standard three)."),
          method: str = typer.Option("brittle", help="Input-margin method (see `brittle margins --help`)."),
          lower: Optional[str] = typer.Option(None, help="Certified lower bounds (ReLU nets): crown (tightest, slow on conv nets), crown-ibp or ibp."),
          weights: Optional[Path] = typer.Option(None, help="State-dict checkpoint for module:factory models."),
          data_root: Optional[Path] = typer.Option(None, help="Folder holding dataset files."),
          domain: Optional[str] = typer.Option(None, help="Input domain low,high (default 0,1)."),
          limit: Optional[int] = typer.Option(None, help="Use only the first N samples."),
          batch_size: int = typer.Option(250, help="Samples per batch (and per checkpoint)."),
          device: str = typer.Option("auto", help="auto, cpu or cuda."),
          seed: int = typer.Option(0, help="Random seed."),
          overwrite: bool = typer.Option(False, help="Replace a different run in --out."),
          report: bool = typer.Option(True, help="Write DIR/report.html."),
          backend: str = _BACKEND, workers: int = _WORKERS, gpus_per_worker: float = _GPUS,
          address: Optional[str] = _ADDRESS,
          pseudo_margin: Optional[str] = typer.Option(
              None, "--pseudo-margin", metavar="LAYER|logits",
              help="Fit a pseudo-margin (from the logits, or a named layer's output plus the logits) on half the "
                   "samples and compare it with the logit margin on the other half; writes DIR/pseudo_margin.json."),
          monitor_eps: Optional[float] = typer.Option(
              None, "--monitor-eps", metavar="E",
              help="Calibrate a deployment monitor for inputs non-robust at E (same norm and units as --eps) on "
                   "half the samples, measure it on the other half; writes DIR/monitor.json."),
          monitor_recall: float = typer.Option(0.95, "--monitor-recall", metavar="R",
                                               help="Target recall of non-robust inputs for --monitor-eps, in (0, 1].")
          ) -> None:
    """Audit a model: margins, margin consistency, detection, robust accuracy; writes DIR/summary.json,
    DIR/samples.parquet and DIR/report.html (plus pseudo-margin and monitor files when asked for)."""
    from ..auditing.pipeline import audit as run_audit

    net, dataset = _load_inputs(model, data, weights, data_root, limit, domain, device)
    result = run_audit(net, dataset, norm=norm, eps=parse_floats(eps) if eps else None, method=method, lower=lower,
                       batch_size=batch_size, device=device, seed=seed, out=out, overwrite=overwrite,
                       progress=not State.quiet, model_name=model, command=_command_line(), backend=backend,
                       workers=workers, gpus_per_worker=gpus_per_worker, address=address,
                       pseudo_margin=pseudo_margin, monitor_eps=monitor_eps, monitor_recall=monitor_recall)
    if report:
        result.report()
    emit(result.summary, audit_summary_table(result.summary, f"{model} on {dataset.name} ({result.summary['norm']})"))
    if not State.quiet:
        for line in audit_extras_lines(result.summary):
            console.print(line, highlight=False)
        console.print(f"results: {out}" + (f"  ·  report: {out / 'report.html'}" if report else ""))


def audit_extras_lines(summary: dict[str, Any]) -> list[str]:
    """One line each for the pseudo-margin and the monitor of an audit, when present."""
    def num(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    def pct(v: Any) -> str:
        return "–" if v is None else f"{100 * v:.1f}%"

    lines = []
    pm = summary.get("pseudo_margin")
    if isinstance(pm, dict):
        lines.append(f"pseudo-margin ({pm.get('layer')}): Kendall τ {num(pm.get('kendall_tau_before'))} → "
                     f"{num(pm.get('kendall_tau_after'))} on the {pm.get('n_eval')} held-out samples")
    mon = summary.get("monitor")
    if isinstance(mon, dict):
        lines.append(f"monitor (ε = {mon.get('eps'):g}, score {mon.get('score')} ≤ {num(mon.get('threshold'))}): "
                     f"recall {pct(mon.get('recall'))} of {mon.get('n_nonrobust')} non-robust (target "
                     f"{pct(mon.get('target_recall'))}), false alarms {pct(mon.get('false_alarm_rate'))} on the "
                     f"{mon.get('n')} held-out samples")
    return lines


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="A run directory written by `brittle audit`."),
               out: Optional[Path] = typer.Option(None, help="Where to write the HTML (default DIR/report.html).")) -> None:
    """(Re-)render the HTML report of an audit run."""
    from ..report import render_report

    path = render_report(run_dir, out)
    emit({"report": str(path)})
    if not State.quiet:
        console.print(f"report: {path}")


@app.command()
def compare(run_dirs: list[Path] = typer.Argument(..., help="Two or more audit run directories."),
            out: Path = typer.Option(Path("comparison.html"), help="Output HTML file.")) -> None:
    """One HTML report comparing several audit runs side by side."""
    from ..report import render_comparison

    path = render_comparison(run_dirs, out)
    emit({"report": str(path)})
    if not State.quiet:
        console.print(f"comparison report: {path}")


@app.command()
def demo(out: Path = typer.Option(Path("brittle-demo"), "--out", "-o", help="Output directory."),
         n: int = typer.Option(200, help="Number of bundled MNIST test images to audit."),
         seed: int = typer.Option(0, help="Random seed.")) -> None:
    """Offline demo: audit the bundled model zoo on the bundled MNIST test split (L∞ and L2), write reports."""
    from ..demo import run_demo

    result = run_demo(out, n, progress=not State.quiet, seed=seed, command=_command_line())
    summaries = {name: a.summary for name, a in result["runs"].items()}
    table = Table(title=f"brittle demo: {n} MNIST test images, bundled zoo",
                  caption="robust accuracy and AUROC at the budget shown; E(robust): expected robustness, "
                          "accuracy averaged over ε in [0, largest ε]")
    for col in ("model", "budget", "clean", "robust", "τ", "AUROC", "E(robust)", "time"):
        table.add_column(col, justify="left" if col in ("model", "budget") else "right", no_wrap=True)
    for name, s in summaries.items():
        mid = str(s["eps"][len(s["eps"]) // 2])
        tau = (s.get("kendall_tau") or {}).get("value")
        auroc = s["detection"][mid]["auroc"]
        model_name, _, norm = name.rpartition("-")
        table.add_row(model_name or name, f"{'L∞' if norm == 'linf' else 'L2'} {float(mid):g}",
                      f"{100 * s['clean_accuracy']:.1f}%", f"{100 * s['robust_accuracy'][mid]['upper']:.1f}%",
                      "–" if tau is None else f"{tau:.2f}", "–" if auroc is None else f"{auroc:.3f}",
                      f"{100 * s['expected_robustness']['from_margins']:.1f}%", f"{s['seconds']:.0f}s")
    emit({"runs": summaries, "comparisons": {k: str(v) for k, v in result["comparisons"].items()}}, table)
    if not State.quiet:
        for name in summaries:
            console.print(f"report: {out / name / 'report.html'}")
        for norm, path in result["comparisons"].items():
            console.print(f"comparison ({norm}): {path}")


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

def _training(net: Any, out: Path, data: str, val_data: Optional[str], data_root: Optional[Path], limit: Optional[int],
              options: dict[str, Any], overwrite: bool, eval_n: int) -> None:
    from ..data.loading import load_data
    from ..training.run import train_run

    train_data = load_data(data, data_root, limit=limit)
    val = load_data(val_data, data_root, limit=eval_n) if val_data else None
    summary = train_run(net, train_data, out, val_data=val, overwrite=overwrite, progress=not State.quiet,
                        command=_command_line(), eval_n=eval_n, **options)
    table = Table(title=f"training run {out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("epochs", "clean_accuracy", "robust_accuracy", "robust_eps", "expected_robustness", "train_seconds"):
        if key in summary:
            value = summary[key]
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    emit({k: v for k, v in summary.items() if k != "history"}, table)
    if not State.quiet:
        console.print(f"weights: {out / 'model.pt'}  ·  curve: {out / 'training_curve.png'}  ·  {out / 'summary.json'}")


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
_T1 = typer.Option(None, help="two-hinge: epoch where the ε ramp starts.")
_T2 = typer.Option(None, help="two-hinge: epoch where the ramp reaches ε.")
_WARMUP = typer.Option(None, help="linear: epochs of warm-up.")
_SMOOTH = typer.Option(0.0, help="Label smoothing.")
_PROTOCOL = typer.Option("full", help="full, linear (probe) or partial (last --last-k layers).")
_LASTK = typer.Option(1, help="Layers trained with --protocol partial.")


@app.command("train")
def train_cmd(out: Path = typer.Option(..., "--out", "-o", help="Run directory (resumable)."),
              arch: str = typer.Option("brittle.models.zoo.architectures:mnist_cnn", help="module:factory building the model."),
              data: str = typer.Option("mnist:train", "--data", "-d", help="Training data."),
              val_data: Optional[str] = typer.Option("mnist:test", help="Validation / evaluation data."),
              data_root: Optional[Path] = typer.Option(None, help="Folder holding dataset files."),
              limit: Optional[int] = typer.Option(None, help="Use only the first N training samples."),
              method: str = _METHOD, attack: str = _ATTACK, norm: str = _NORM, eps: float = _EPS,
              steps: int = _STEPS, trades_beta: float = _BETA, epochs: int = _EPOCHS, lr: float = _LR,
              batch_size: int = _BATCH, schedule: str = _SCHEDULE, t1: Optional[float] = _T1,
              t2: Optional[float] = _T2, warmup: Optional[float] = _WARMUP, label_smoothing: float = _SMOOTH,
              eval_n: int = typer.Option(1000, help="Validation samples for the final robust evaluation."),
              seed: int = typer.Option(0, help="Random seed."), device: str = typer.Option("cpu", help="cpu, cuda, auto."),
              overwrite: bool = typer.Option(False, help="Replace a different run in --out.")) -> None:
    """Train a model from scratch (standard, Madry or TRADES) with an ε schedule; resumable."""
    from ..models.loading import import_factory

    torch_seed(seed)
    net = import_factory(arch)()
    _training(net, out, data, val_data, data_root, limit,
              _train_options(method, attack, norm, eps, steps, trades_beta, epochs, lr, batch_size, schedule, t1, t2,
                             warmup, label_smoothing, "full", 1, seed, device), overwrite, eval_n)


@app.command()
def finetune(model: str = typer.Option(..., "--model", "-m", help="Pretrained model: zoo name or module:factory."),
             out: Path = typer.Option(..., "--out", "-o", help="Run directory (resumable)."),
             weights: Optional[Path] = typer.Option(None, help="State-dict checkpoint for module:factory models."),
             data: str = typer.Option(..., "--data", "-d", help="Target-task training data."),
             val_data: Optional[str] = typer.Option(None, help="Target-task validation / evaluation data."),
             data_root: Optional[Path] = typer.Option(None, help="Folder holding dataset files."),
             limit: Optional[int] = typer.Option(None, help="Use only the first N training samples."),
             reset_head: bool = typer.Option(False, help="Re-initialise the last linear layer first."),
             protocol: str = _PROTOCOL, last_k: int = _LASTK,
             method: str = _METHOD, attack: str = _ATTACK, norm: str = _NORM, eps: float = _EPS,
             steps: int = _STEPS, trades_beta: float = _BETA, epochs: int = _EPOCHS, lr: float = _LR,
             batch_size: int = _BATCH, schedule: str = _SCHEDULE, t1: Optional[float] = _T1,
             t2: Optional[float] = _T2, warmup: Optional[float] = _WARMUP, label_smoothing: float = _SMOOTH,
             eval_n: int = typer.Option(1000, help="Validation samples for the final robust evaluation."),
             seed: int = typer.Option(0, help="Random seed."), device: str = typer.Option("cpu", help="cpu, cuda, auto."),
             overwrite: bool = typer.Option(False, help="Replace a different run in --out.")) -> None:
    """Fine-tune a pretrained model on a target task (full, linear probe or partial), e.g. robustly with an ε
    schedule; resumable."""
    from torch import nn

    from ..models.loading import load_model

    torch_seed(seed)
    net = load_model(model, weights, device="cpu")
    if reset_head:
        last = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if not last:
            from ..errors import ModelError
            raise ModelError("--reset-head: the model has no nn.Linear layer", "drop --reset-head")
        last[-1].reset_parameters()
    _training(net, out, data, val_data, data_root, limit,
              _train_options(method, attack, norm, eps, steps, trades_beta, epochs, lr, batch_size, schedule, t1, t2,
                             warmup, label_smoothing, protocol, last_k, seed, device), overwrite, eval_n)


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _command_line() -> str:
    import shlex

    return "brittle " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------

_GLOBAL_FLAGS = ("--json", "--quiet", "-q", "--debug")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn brittle's errors into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    flags = [a for a in args if a in _GLOBAL_FLAGS]  # global flags are accepted anywhere on the line
    args = flags + [a for a in args if a not in _GLOBAL_FLAGS]
    debug = "--debug" in args
    try:
        app(args=args, prog_name="brittle", standalone_mode=False)
    except BrittleError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_STORE if isinstance(exc, StoreError) else EXIT_INPUT
    except click_exceptions.Exit as exc:
        return exc.exit_code
    except click_exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (KeyboardInterrupt, click_exceptions.Abort):
        err_console.print("interrupted: finished batches are saved; re-run the same command to resume")
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
