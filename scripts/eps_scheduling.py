"""Suboptimal transfer and ε-scheduling at small scale (issue #7, item 3).

The zoo's non-robust ``standard`` MNIST CNN is fine-tuned robustly (Madry adversarial training, L∞, full
fine-tuning, classification head re-initialised) on a subset of Fashion-MNIST with

- ``fixed``:     ε = ε_g from the first iteration;
- ``two-hinge``: ε = 0 before epoch T1, linear ramp to ε_g at T2, ε_g after (the paper's T1 = 12, T2 = 37
  of 50 epochs, scaled to the number of epochs here);
- ``standard``:  plain cross-entropy fine-tuning (ε = 0), the clean reference;
- ``scratch``:   fixed-ε Madry training of the same architecture from a random
  initialisation, i.e. without the pretrained weights;

for each target ε_g and each seed. Every run is a resumable `brittle.training.run` run directory under ``--out``:
a finished run is reused, a killed one continues from its last finished epoch. Each model is then evaluated
on a held-out Fashion-MNIST test subset with `brittle.analysis.robustness`: clean accuracy, APGD-CE robust accuracy
on an ε grid over [0, ε_g] (expected robustness = trapezoid area / ε_g), and a stronger APGD-CE at ε_g.
The script writes the results table, a figure and ``docs/epsilon-scheduling.md``.

    nice -n 10 python scripts/eps_scheduling.py            # the configuration documented in docs/
    python scripts/eps_scheduling.py --quick               # a one-minute smoke test into runs/eps-scheduling-quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import brittle
from brittle.core.provenance import cpu_name
from brittle.models import zoo
from brittle.data.loading import load_data
from brittle.analysis.robustness import expected_robustness, robust_accuracy_curve
from brittle.training.run import train_run
from brittle.models.zoo.architectures import mnist_cnn

ROOT = Path(__file__).resolve().parents[1]
PAPER_EPOCHS, PAPER_T1, PAPER_T2 = 50, 12, 37
CONFIGS = ("standard", "fixed", "two-hinge", "scratch")
LABELS = {"standard": "standard FT (ε = 0)", "fixed": "fixed ε", "two-hinge": "two-hinge schedule",
          "scratch": "fixed ε, from scratch"}
COLORS = {"standard": "tab:gray", "fixed": "tab:red", "two-hinge": "tab:blue", "scratch": "tab:green"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2], help="target ε_g values (L∞, [0, 1] scale)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train-n", type=int, default=10_000, help="first N Fashion-MNIST training images")
    p.add_argument("--val-n", type=int, default=1000,
                   help="validation images (Fashion-MNIST train, from index 50000; never trained on)")
    p.add_argument("--test-n", type=int, default=2000, help="first N Fashion-MNIST test images (final evaluation)")
    p.add_argument("--train-steps", type=int, default=5, help="PGD steps of the training attack")
    p.add_argument("--eval-steps", type=int, default=10, help="APGD-CE steps on the ε grid (the paper: 10)")
    p.add_argument("--strong-steps", type=int, default=50, help="APGD-CE steps of the extra check at ε_g")
    p.add_argument("--grid-points", type=int, default=9, help="ε grid points over [0, ε_g] (the paper: 9 at 8/255)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--no-scratch", dest="scratch", action="store_false",
                   help="skip the fixed-ε training from a random initialisation")
    p.add_argument("--no-standard", action="store_true", help="skip the standard (ε = 0) fine-tuning reference")
    p.add_argument("--data-root", default=os.environ.get("BRITTLE_DATA_ROOT", "/work/shared/data"))
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "eps-scheduling")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "epsilon-scheduling.md")
    p.add_argument("--img", type=Path, default=ROOT / "docs" / "img" / "epsilon-scheduling.png")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: tiny sizes, one seed, writes under runs/eps-scheduling-quick only")
    args = p.parse_args(argv)
    if args.quick:
        args.eps, args.seeds, args.epochs = [0.1], [0], 3
        args.train_n, args.val_n, args.test_n, args.strong_steps = 1000, 200, 200, 10
        quick = ROOT / "runs" / "eps-scheduling-quick"
        args.out, args.doc, args.img = quick, quick / "epsilon-scheduling.md", quick / "epsilon-scheduling.png"
    return args


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------

def hinges(epochs: int) -> tuple[float, float]:
    """The paper's T1 = 12, T2 = 37 of 50 epochs, scaled to ``epochs``."""
    return PAPER_T1 * epochs / PAPER_EPOCHS, PAPER_T2 * epochs / PAPER_EPOCHS


def initial_model(config: str, seed: int) -> nn.Module:
    """The pretrained non-robust zoo model with a freshly initialised head (new task), or a random network."""
    torch.manual_seed(seed)
    if config == "scratch":
        return mnist_cnn()
    model = zoo.load("standard")
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    head.reset_parameters()  # as `brittle finetune --reset-head`
    return model


def train_options(args: argparse.Namespace, config: str, eps: float, seed: int) -> dict[str, Any]:
    opts: dict[str, Any] = {"method": "standard" if config == "standard" else "madry", "attack": "pgd",
                            "norm": "linf", "eps": 0.0 if config == "standard" else eps, "steps": args.train_steps,
                            "epochs": args.epochs, "lr": args.lr, "optimizer": "adam", "lr_schedule": "cosine",
                            "batch_size": args.batch_size, "protocol": "full", "val_eps": eps, "val_steps": 10,
                            "seed": seed, "device": "cpu", "schedule": "constant", "callback": print_epoch}
    if config == "two-hinge":
        t1, t2 = hinges(args.epochs)
        opts.update(schedule="two-hinge", schedule_options={"t1": t1, "t2": t2})
    return opts


def run_name(config: str, eps: float, seed: int) -> str:
    return f"standard-seed{seed}" if config == "standard" else f"{config}-eps{eps:g}-seed{seed}"


def print_epoch(rec: Any) -> None:
    rob = "" if rec.val_robust_accuracy is None else f" val-rob {rec.val_robust_accuracy:.3f}@{rec.val_eps:g}"
    adv = "" if rec.adv_accuracy is None else f" adv {rec.adv_accuracy:.3f}"
    print(f"    epoch {rec.epoch + 1:2d}  ε {rec.eps:.3f}  loss {rec.loss:.3f}  train {rec.clean_accuracy:.3f}{adv}"
          f"  val {rec.val_accuracy:.3f}{rob}  {rec.seconds:.1f}s", flush=True)


def train_one(args: argparse.Namespace, config: str, eps: float, seed: int, data: dict[str, Any]) -> Path:
    out = args.out / run_name(config, eps, seed)
    model_file = out / "model.pt"
    if (out / "summary.json").exists() and model_file.exists():
        print(f"  {out.name}: finished earlier, reused", flush=True)
        return out
    resumed = " (continuing an interrupted run; finished epochs are kept)" if (out / "run.sqlite").exists() else ""
    print(f"  {out.name}: training ({args.epochs} epochs){resumed}", flush=True)
    opts = train_options(args, config, eps, seed)
    model = initial_model(config, seed)
    summary = train_run(model, data["train"], out, val_data=data["val"], eval_eps_grid=[0.0, eps / 2, eps],
                        eval_n=len(data["val"]), progress=False, command=data["command"], **opts)
    print(f"  {out.name}: done in {summary['train_seconds']:.0f}s", flush=True)
    return out


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------

def evaluate_one(args: argparse.Namespace, run_dir: Path, eps: float, test: Any) -> dict[str, Any]:
    """Clean / APGD-CE robust accuracy on the ε grid, expected robustness, and a stronger APGD-CE at ε_g."""
    grid = np.linspace(0.0, eps, args.grid_points).round(10).tolist()
    settings = {"test": test.fingerprint()[:16], "test_n": len(test), "grid": grid, "eval_steps": args.eval_steps,
                "strong_steps": args.strong_steps, "model_mtime": (run_dir / "model.pt").stat().st_mtime}
    cache = run_dir / f"eval-eps{eps:g}.json"
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("settings") == settings:
            return saved
    t0 = time.perf_counter()
    model = initial_model("scratch", 0)  # architecture only; the weights come from the run
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    model.eval()
    curve = robust_accuracy_curve(model, test, "linf", grid, attack="apgd-ce", steps=args.eval_steps, seed=0,
                                  device="cpu")
    acc = curve["robust_accuracy"].to_numpy()
    strong = robust_accuracy_curve(model, test, "linf", [0.0, eps], attack="apgd-ce", steps=args.strong_steps,
                                   seed=1, device="cpu")["robust_accuracy"].to_numpy()
    result = {"settings": settings, "clean": float(acc[0]), "adv": float(acc[-1]), "adv_strong": float(strong[-1]),
              "expected_robustness": expected_robustness(grid, acc), "curve": acc.tolist(),
              "seconds": time.perf_counter() - t0}
    cache.write_text(json.dumps(result, indent=2))
    return result


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def pct(values: list[float]) -> str:
    a = 100 * np.asarray(values, dtype=float)
    return f"{a.mean():.1f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.1f}"


def machine_line() -> str:
    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} logical CPUs (shared with other jobs), torch {torch.__version__} with "
            f"{torch.get_num_threads()} thread(s), Python {platform.python_version()}, brittle {brittle.__version__}, "
            f"{platform.system()} {platform.release()}")


def collect(args: argparse.Namespace, configs: list[str], results: dict[tuple[str, float, int], dict[str, Any]]
            ) -> list[dict[str, Any]]:
    rows = []
    for eps in args.eps:
        for config in configs:
            res = [results[(config, eps, s)] for s in args.seeds if (config, eps, s) in results]
            if not res:
                continue
            rows.append({"eps": eps, "config": config, "n": len(res),
                         **{k: [r[k] for r in res] for k in ("clean", "adv", "adv_strong", "expected_robustness")}})
    return rows


def paired(args: argparse.Namespace, results: dict, a: str, b: str, eps: float, key: str) -> str:
    d = [results[(a, eps, s)][key] - results[(b, eps, s)][key] for s in args.seeds
         if (a, eps, s) in results and (b, eps, s) in results]
    if not d:
        return "–"
    d = 100 * np.asarray(d)
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    return f"{d.mean():+.1f} ± {sd:.1f} ({int((d > 0).sum())}/{len(d)} seeds > 0)"


def history_curves(run_dir: Path) -> dict[str, np.ndarray]:
    hist = json.loads((run_dir / "summary.json").read_text())["history"]
    return {k: np.array([h[k] if h[k] is not None else np.nan for h in hist], dtype=float)
            for k in ("val_accuracy", "val_robust_accuracy", "eps")}


def plot(args: argparse.Namespace, configs: list[str], results: dict, runs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(args.eps)
    fig, axes = plt.subplots(2, n, figsize=(5 * n + 2.2, 7.2), squeeze=False, constrained_layout=True)
    for j, eps in enumerate(args.eps):
        ax_t, ax_e = axes[0, j], axes[1, j]
        for config in configs:
            dirs = [runs[(config, eps, s)] for s in args.seeds if (config, eps, s) in runs]
            if not dirs:
                continue
            hs = [history_curves(d) for d in dirs]
            ep = np.arange(1, len(hs[0]["val_accuracy"]) + 1)
            for key, style in (("val_accuracy", "-"), ("val_robust_accuracy", "--")):
                if key == "val_robust_accuracy" and config == "standard":
                    continue  # its per-epoch robust validation ran at the first ε_g only
                m = np.nanmean([h[key] for h in hs], 0)
                lab = f"{LABELS[config]}, {'clean' if key == 'val_accuracy' else 'PGD-10 @ε_g'}"
                ax_t.plot(ep, m, style, color=COLORS[config], label=lab)
            res = [results[(config, eps, s)] for s in args.seeds if (config, eps, s) in results]
            grid = res[0]["settings"]["grid"]
            curves = np.array([r["curve"] for r in res])
            ax_e.errorbar(grid, curves.mean(0), yerr=curves.std(0, ddof=1) if len(res) > 1 else None,
                          color=COLORS[config], marker="o", markersize=3, capsize=2,
                          label=f"{LABELS[config]} (E.R. {100 * np.mean([r['expected_robustness'] for r in res]):.1f}%)")
        t1, t2 = hinges(args.epochs)
        ax_t.axvspan(t1, t2, color="tab:blue", alpha=0.07, label="two-hinge ramp")  # x = epochs completed
        ax_t.set(xlim=(0, args.epochs), xlabel="epochs completed", ylabel="validation accuracy", ylim=(0, 1),
                 title=f"ε_g = {eps:g}: validation accuracy per epoch")
        ax_t.grid(alpha=0.3)
        if j == n - 1:  # one legend per row, outside the axes
            ax_t.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax_e.set(xlabel="ε (L∞)", ylabel="robust accuracy (APGD-CE)", ylim=(0, 1),
                 title=f"ε_g = {eps:g}: test accuracy vs ε (mean ± std)")
        ax_e.grid(alpha=0.3)
        ax_e.legend(fontsize=7, loc="lower left")
    args.img.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.img, dpi=100)
    plt.close(fig)


def write_doc(args: argparse.Namespace, configs: list[str], results: dict, runs: dict, command: str,
              wall: float) -> None:
    rows = collect(args, configs, results)
    t1, t2 = hinges(args.epochs)
    train_s = sum(h["seconds"] for d in set(runs.values())  # per epoch, kept across resumed invocations
                  for h in json.loads((d / "summary.json").read_text())["history"])
    eval_s = sum(r["seconds"] for r in results.values())
    img_rel = os.path.relpath(args.img, args.doc.parent)
    log = args.out / "invocations.jsonl"
    total_wall = sum(json.loads(line)["wall_seconds"] for line in log.read_text().splitlines() if line.strip())
    lines = [
        "# Suboptimal transfer and ε-scheduling at small scale",
        "",
        "<!-- written by scripts/eps_scheduling.py; the section 'Conclusions' is kept when the script rewrites the file -->",
        "",
        "Issue #7, item 3: does robust fine-tuning of a *non-robust* pretrained model with a fixed ε fail to adapt",
        "to the new task (*suboptimal transfer*, Ngnawé et al., ICLR 2026), and does the two-hinge ε schedule help?",
        "",
        "## Setup",
        "",
        "- **Pretrained model**: the zoo's non-robust `standard` MNIST CNN (`brittle.models.zoo.load(\"standard\")`,",
        "  Conv-Conv-FC-FC, 166k parameters), classification head re-initialised (new task), full fine-tuning.",
        f"- **Target task**: Fashion-MNIST, the first {args.train_n:,} training images; validation (logged each",
        f"  epoch, never used for selection): {args.val_n:,} training images from index 50,000; **test**: the first",
        f"  {args.test_n:,} images of the Fashion-MNIST test split. Inputs in [0, 1], L∞ threat model.",
        f"- **Training**: `brittle.training.run` (resumable run directories), Madry adversarial training with PGD-{args.train_steps}",
        f"  (step 2.5ε/{args.train_steps}, random start, last iterate), Adam lr {args.lr:g} with cosine decay, batch",
        f"  {args.batch_size}, {args.epochs} epochs, seeds {', '.join(map(str, args.seeds))} (the seed sets the head",
        "  initialisation, batch order and attack randomness; the pretrained body is the same).",
        f"  - *fixed*: ε = ε_g from the first iteration;",
        f"  - *two-hinge*: ε = 0 before epoch T1 = {t1:g}, linear ramp (per iteration) to ε_g at T2 = {t2:g}, ε_g",
        f"    after — the paper's T1 = 12, T2 = 37 of 50 epochs scaled to {args.epochs};",
        "  - *standard FT*: plain cross-entropy fine-tuning (ε = 0), the clean reference (shared by both ε_g).",
    ]
    if "scratch" in configs:
        lines.append("  - *from scratch*: fixed-ε Madry training of a randomly initialised network of the same architecture.")
    lines += [
        f"- **Evaluation** (`brittle.analysis.robustness`) on the test subset: clean accuracy; robust accuracy by APGD-CE with",
        f"  {args.eval_steps} steps (one restart) at {args.grid_points} evenly spaced ε in [0, ε_g] (`robust_accuracy_curve`);",
        "  **expected robustness** = trapezoid area under that curve / ε_g (`expected_robustness`); and, as a check of",
        f"  the attack's strength, APGD-CE with {args.strong_steps} steps at ε_g. Robust accuracies are upper bounds",
        "  (an attack that fails does not prove robustness).",
        "",
        "## Results",
        "",
        f"Test accuracy in %, mean ± standard deviation over {len(args.seeds)} seeds.",
        "",
        f"| ε_g | fine-tuning | clean | adv @ε_g (APGD-CE-{args.eval_steps}) | adv @ε_g (APGD-CE-{args.strong_steps}) "
        f"| expected robustness [0, ε_g] |",
        "| ---: | :--- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['eps']:g} | {LABELS[r['config']]} | {pct(r['clean'])} | {pct(r['adv'])} | "
                     f"{pct(r['adv_strong'])} | {pct(r['expected_robustness'])} |")
    lines += ["", "Paired differences, two-hinge minus fixed ε, same seed (percentage points, mean ± std):", "",
              "| ε_g | clean | adv (APGD-CE-%d) | adv (APGD-CE-%d) | expected robustness |" % (args.eval_steps,
                                                                                             args.strong_steps),
              "| ---: | ---: | ---: | ---: | ---: |"]
    for eps in args.eps:
        lines.append(f"| {eps:g} | " + " | ".join(paired(args, results, "two-hinge", "fixed", eps, k)
                                                 for k in ("clean", "adv", "adv_strong", "expected_robustness")) + " |")
    lines += ["", f"![validation accuracy per epoch and test accuracy vs ε]({img_rel})", "",
              "Top: validation clean accuracy (solid) and PGD-10 robust accuracy at ε_g (dashed) after each epoch,",
              "mean over seeds; the shaded band is the two-hinge ramp. Bottom: test robust accuracy (APGD-CE-%d)"
              % args.eval_steps, "against ε; E.R. = expected robustness.",
              "", "Per-seed values (clean / adv APGD-CE-%d / expected robustness, %%):" % args.eval_steps, ""]
    for eps in args.eps:
        for config in configs:
            vals = [results[(config, eps, s)] for s in args.seeds if (config, eps, s) in results]
            cells = ", ".join(f"{100 * v['clean']:.1f}/{100 * v['adv']:.1f}/{100 * v['expected_robustness']:.1f}"
                              for v in vals)
            lines.append(f"- ε_g = {eps:g}, {LABELS[config]}: {cells}")
    lines += [
        "",
        "## Reproduce",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Each run is a `brittle.training.run` directory under `{os.path.relpath(args.out, ROOT)}/` (run store with a",
        "checkpoint per epoch, `model.pt`, `history.csv`, `training_curve.png`, `summary.json`) plus the test",
        "evaluation `eval-eps*.json`. Re-running the command reuses finished runs and evaluations and resumes an",
        "interrupted run from its last finished epoch.",
        "",
        f"Machine: {machine_line()}.",
        "",
        f"Wall time: {len(set(runs.values()))} training runs took {train_s / 60:.1f} min of training epochs (as recorded in",
        f"their run directories) and {eval_s / 60:.1f} min of test evaluation; the invocations of the script into",
        f"`{os.path.relpath(args.out, ROOT)}/` took {total_wall / 60:.1f} min of wall time in all, the last one"
        f" {wall / 60:.1f} min (finished runs are reused).",
        "",
    ]
    old = args.doc.read_text() if args.doc.exists() else ""
    marker = "## Conclusions"
    conclusions = old[old.index(marker):].rstrip() + "\n" if marker in old else (
        f"{marker}\n\n(to be written after looking at the numbers above)\n")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text("\n".join(lines) + "\n" + conclusions)


# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    command = "nice -n 10 python scripts/eps_scheduling.py " + " ".join(shlex.quote(a) for a in
                                                                      (sys.argv[1:] if argv is None else argv))
    root = args.data_root
    train = load_data("fashion-mnist:train", root)
    data = {"train": train.head(args.train_n), "val": train.subset(slice(50_000, 50_000 + args.val_n)),
            "test": load_data("fashion-mnist:test", root).head(args.test_n), "command": command.strip()}
    if args.train_n > 50_000:
        raise SystemExit("--train-n must be <= 50000 (the validation images start at 50000)")
    configs = (["standard"] if not args.no_standard else []) + ["fixed", "two-hinge"] + (
        ["scratch"] if args.scratch else [])
    jobs = [(c, e, s) for s in args.seeds for c in configs for e in (args.eps[:1] if c == "standard" else args.eps)]
    print(f"{len(jobs)} runs into {args.out} (T1, T2 = {hinges(args.epochs)})", flush=True)
    runs: dict[tuple[str, float, int], Path] = {}
    results: dict[tuple[str, float, int], dict[str, Any]] = {}
    for i, (config, eps, seed) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {config} ε_g={eps:g} seed={seed}  ({(time.perf_counter() - t0) / 60:.1f} min)",
              flush=True)
        run_dir = train_one(args, config, eps, seed, data)
        for e in (args.eps if config == "standard" else [eps]):
            runs[(config, e, seed)] = run_dir
            res = evaluate_one(args, run_dir, e, data["test"])
            results[(config, e, seed)] = res
            print(f"  test ε_g={e:g}: clean {res['clean']:.3f}  adv {res['adv']:.3f} "
                  f"(APGD-CE-{args.strong_steps}: {res['adv_strong']:.3f})  E.R. {res['expected_robustness']:.3f}",
                  flush=True)
    (args.out / "results.json").write_text(json.dumps(
        [{"config": c, "eps": e, "seed": s, "run": str(runs[(c, e, s)]), **{k: v for k, v in r.items()}}
         for (c, e, s), r in results.items()], indent=2))
    plot(args, configs, results, runs)
    wall = time.perf_counter() - t0
    with open(args.out / "invocations.jsonl", "a") as fh:  # the doc reports the wall time of all invocations
        fh.write(json.dumps({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command.strip(),
                             "wall_seconds": wall}) + "\n")
    write_doc(args, configs, results, runs, command.strip(), wall)
    for row in collect(args, configs, results):
        print(f"ε_g={row['eps']:g} {LABELS[row['config']]:24s} clean {pct(row['clean'])}  adv {pct(row['adv'])}  "
              f"adv-strong {pct(row['adv_strong'])}  E.R. {pct(row['expected_robustness'])}")
    print(f"wrote {args.doc} and {args.img} in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
