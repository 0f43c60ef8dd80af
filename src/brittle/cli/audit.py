"""`brittle audit`, `brittle report`, `brittle compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ._common import (ADDRESS, BACKEND, DATA_ROOT, GPUS, OVERWRITE, STRENGTH, TRUST_MODEL, WEIGHTS, WORKERS, State,
                      attack_options, command_line, console, emit, load_inputs, parse_floats, safe_text)


def audit_summary_table(summary: dict[str, Any], title: str) -> Table:
    """The end-of-run summary as a rich table."""
    def pct(v: Any) -> str:
        return "–" if v is None else f"{100 * v:.1f}%"

    def num(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    table = Table(title=safe_text(title, "table.title"))  # the model and data names: printed literally
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
                     f"{summary.get('n')} samples in {summary.get('seconds', 0):.1f}s (this session)")
    return table


def audit(model: str = typer.Option(..., "--model", "-m", help="Zoo name, TorchScript file, or module:factory."),
          data: str = typer.Option("mnist", "--data", "-d", help="mnist, fashion-mnist, digits, a .npz or idx folder."),
          out: Path = typer.Option(..., "--out", "-o", help="Output directory (resumable run)."),
          norm: str = typer.Option("linf", help="linf or l2."),
          eps: Optional[str] = typer.Option(None, help="Comma-separated budgets (default: MNIST's standard three)."),
          method: str = typer.Option("brittle", help="Input-margin method (see `brittle margins --help`)."),
          strength: Optional[str] = STRENGTH,
          lower: Optional[str] = typer.Option(None, help="Certified lower bounds (ReLU nets): crown (tightest, slow on conv nets), crown-ibp or ibp."),
          weights: Optional[Path] = WEIGHTS,
          trust_model: bool = TRUST_MODEL,
          data_root: Optional[Path] = DATA_ROOT,
          domain: Optional[str] = typer.Option(None, help="Input domain low,high (default 0,1)."),
          limit: Optional[int] = typer.Option(None, help="Use only the first N samples."),
          shift: Optional[str] = typer.Option(None, "--shift", metavar="NAME:SEVERITY",
                                              help="Audit under a corruption of the data (e.g. fog:5; see "
                                                   "`brittle adapt --help`), applied after --limit with --seed."),
          batch_size: int = typer.Option(250, help="Samples per batch (and per checkpoint)."),
          device: str = typer.Option("auto", help="auto, cpu or cuda."),
          seed: int = typer.Option(0, help="Random seed."),
          overwrite: bool = OVERWRITE,
          report: bool = typer.Option(True, help="Write DIR/report.html."),
          backend: str = BACKEND, workers: int = WORKERS, gpus_per_worker: float = GPUS,
          address: Optional[str] = ADDRESS,
          pseudo_margin: Optional[str] = typer.Option(
              None, "--pseudo-margin", metavar="LAYER|logits",
              help="Fit a pseudo-margin (from the logits, or a named layer's output plus the logits) on half the "
                   "samples and compare it with the logit margin on the other half; writes DIR/pseudo_margin.json."),
          monitor_eps: Optional[float] = typer.Option(
              None, "--monitor-eps", metavar="E",
              help="Calibrate a deployment monitor for inputs non-robust at E (same norm and units as --eps) on "
                   "half the samples, measure it on the other half; writes DIR/monitor.json."),
          monitor_recall: float = typer.Option(0.95, "--monitor-recall", metavar="R",
                                               help="Target recall of non-robust inputs for --monitor-eps, in (0, 1]."),
          subset_estimate: Optional[int] = typer.Option(
              None, "--subset-estimate", metavar="N",
              help="Also estimate robust accuracy from attacking only N inputs (logit margin for the rest) and "
                   "check it against the full audit: the report's subset section.")
          ) -> None:
    """Audit a model: margins, margin consistency, detection, robust accuracy; writes DIR/summary.json,
    DIR/samples.parquet and DIR/report.html (plus pseudo-margin and monitor files when asked for)."""
    from ..auditing.pipeline import audit as run_audit
    from ..execution.executor import make_executor

    options = attack_options(method, strength)
    budgets = parse_floats(eps) if eps is not None else None  # --eps "" is refused, not read as the default
    executor = make_executor(backend, workers=workers, gpus_per_worker=gpus_per_worker, address=address,
                             device=device)
    if shift is not None:  # checked before anything is loaded or written
        from ..data.corruptions import apply_shift, parse_shifts
        from ..errors import InputError

        if not shift.strip():  # e.g. --shift "$SHIFT" with the variable unset: refused, not read as "no shift"
            raise InputError("--shift is empty", "pass one NAME:SEVERITY like --shift fog:5, or leave --shift out "
                                                 "to audit the data as it is")
        if len(parse_shifts(shift)) != 1:
            raise InputError(f"--shift takes one NAME:SEVERITY, got {shift!r}", "pass e.g. --shift fog:5")
    net, dataset = load_inputs(model, data, weights, data_root, limit, domain, device, trust_model)
    if shift is not None:
        dataset = apply_shift(dataset, shift, seed=seed)
    result = run_audit(net, dataset, norm=norm, eps=budgets, method=method, lower=lower,
                       batch_size=batch_size, device=device, seed=seed, out=out, overwrite=overwrite,
                       progress=not State.quiet, model_name=model, command=command_line(), executor=executor,
                       pseudo_margin=pseudo_margin, monitor_eps=monitor_eps, monitor_recall=monitor_recall,
                       subset_estimate=subset_estimate, report=report, method_options=options or None)
    emit(result.summary, audit_summary_table(result.summary, f"{model} on {dataset.name} ({result.summary['norm']})"))
    if not State.quiet:
        for line in audit_extras_lines(result.summary):
            console.print(safe_text(line), highlight=False)  # layer names come from the model
        console.print(safe_text(f"results: {out}" + (f"  ·  report: {out / 'report.html'}" if report else "")))


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


def report_cmd(run_dir: Path = typer.Argument(..., help="A run directory written by `brittle audit`."),
               out: Optional[Path] = typer.Option(None, help="Where to write the HTML (default DIR/report.html).")) -> None:
    """(Re-)render the HTML report of an audit run."""
    from ..report import render_report

    path = render_report(run_dir, out)
    emit({"report": str(path)})
    if not State.quiet:
        console.print(safe_text(f"report: {path}"))


def compare(run_dirs: list[Path] = typer.Argument(..., help="Two or more audit run directories."),
            out: Path = typer.Option(Path("comparison.html"), help="Output HTML file.")) -> None:
    """One HTML report comparing several audit runs side by side."""
    from ..errors import InputError
    from ..report import render_comparison
    from ..report._load import load_run
    from ..report._render import check_audit

    if len(run_dirs) < 2:
        raise InputError(f"brittle compare needs two or more run directories, got {len(run_dirs)}",
                         "pass two or more audit --out directories (`brittle report DIR` renders one run)")
    for run_dir in run_dirs:  # every run is a finished audit: checked before the comparison is written
        check_audit(load_run(run_dir))
    path = render_comparison(run_dirs, out)
    emit({"report": str(path)})
    if not State.quiet:
        console.print(safe_text(f"comparison report: {path}"))


def register(app: typer.Typer) -> None:
    app.command('audit')(audit)
    app.command('report')(report_cmd)
    app.command('compare')(compare)
