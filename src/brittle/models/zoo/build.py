"""Build the bundled model zoo: train each small MNIST CNN with brittle's own training code.

``python -m brittle.models.zoo.build --root /work/shared/data [--names standard linf_madry ...]`` trains the
recipes below on the MNIST train split (the last 1,000 images held out for validation / best-epoch
selection), measures clean accuracy on the full 10k test split and robust accuracy (PGD-40, plus APGD-CE
on the first 1,000 test images), and writes ``weights/NAME.pt`` (float32 state dict) and ``cards/NAME.json``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data.loading import Data, load_mnist
from ...errors import InputError
from ..loading import resolve_device
from ...training.schedules import make_schedule
from ...training.trainer import EpochRecord, evaluate, train
from .architectures import ARCHITECTURES

__all__ = ["Recipe", "RECIPES", "build_zoo", "build_model", "main"]


@dataclass(frozen=True)
class Recipe:
    """How one zoo model is trained and evaluated."""

    name: str
    description: str
    method: str = "standard"
    attack: str = "pgd"
    norm: str = "linf"
    eps: float = 0.0
    steps: int = 1
    step_ratio: float | None = None
    trades_beta: float = 6.0
    epochs: int = 6
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    optimizer: str = "adam"
    batch_size: int = 128
    schedule: str = "constant"
    schedule_options: dict[str, float] = field(default_factory=dict)
    label_smoothing: float = 0.0
    seed: int = 0
    eval_norm: str = "linf"
    eval_eps: float = 0.3
    extra_evals: tuple[tuple[str, float], ...] = ()
    architecture: str = "mnist_cnn"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "attack": self.attack if self.method != "standard" else None,
                "norm": self.norm, "eps": self.eps, "steps": self.steps if self.method != "standard" else None,
                "step_ratio": self.step_ratio, "trades_beta": self.trades_beta if self.method == "trades" else None,
                "epochs": self.epochs, "lr": self.lr, "lr_schedule": self.lr_schedule, "optimizer": self.optimizer,
                "batch_size": self.batch_size, "seed": self.seed, "label_smoothing": self.label_smoothing,
                "schedule": make_schedule(self.schedule, self.eps, self.epochs, **self.schedule_options).describe()
                if self.method != "standard" else None}


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("standard", "plain cross-entropy training (no adversarial examples)", epochs=10,
           eval_eps=0.1, extra_evals=(("linf", 0.3), ("l2", 1.0))),
    Recipe("linf_madry", "L-inf adversarial training at eps=0.3, fast FGSM with random start (alpha=1.25 eps), "
           "eps ramped up over the first 3 epochs, cyclic learning rate",
           method="madry", attack="fgsm-rs", eps=0.3, step_ratio=1.25, epochs=12, lr=5e-3, lr_schedule="cyclic",
           schedule="linear", schedule_options={"warmup": 3.0}, extra_evals=(("linf", 0.1), ("l2", 2.0))),
    Recipe("linf_trades", "TRADES (beta=6) at L-inf eps=0.3, 4-step PGD inner maximisation of the KL term, "
           "eps ramped up over the first 2.5 epochs",
           method="trades", attack="pgd", eps=0.3, steps=4, trades_beta=6.0, epochs=6, lr=2e-3, lr_schedule="cyclic",
           schedule="linear", schedule_options={"warmup": 2.5}, extra_evals=(("linf", 0.1), ("l2", 2.0))),
    Recipe("l2_madry", "L2 adversarial training at eps=2.0, 5-step PGD, eps ramped up over the first 2 epochs",
           method="madry", attack="pgd", norm="l2", eps=2.0, steps=5, epochs=5, lr=2e-3, lr_schedule="cyclic",
           schedule="linear", schedule_options={"warmup": 2.0}, eval_norm="l2", eval_eps=2.0,
           extra_evals=(("l2", 1.0), ("linf", 0.1), ("linf", 0.3))),
    Recipe("linf_madry_ls", "L-inf fast adversarial training at eps=0.3 (as linf_madry) with strong label "
           "smoothing (0.5), ramp over 2.5 epochs: logit margins saturate, so they rank input margins less faithfully",
           method="madry", attack="fgsm-rs", eps=0.3, step_ratio=1.25, epochs=8, lr=5e-3, lr_schedule="cyclic",
           schedule="linear", schedule_options={"warmup": 2.5}, label_smoothing=0.5,
           extra_evals=(("linf", 0.1), ("l2", 2.0))),
    Recipe("linf_small", "L-inf fast adversarial training at a small eps=0.1 (FGSM-RS): robust only near the data",
           method="madry", attack="fgsm-rs", eps=0.1, step_ratio=1.25, epochs=4, lr=5e-3, lr_schedule="cyclic",
           schedule="linear", schedule_options={"warmup": 1.0}, eval_eps=0.1,
           extra_evals=(("linf", 0.3), ("l2", 1.0))),
    Recipe("standard_bn", "plain cross-entropy training of the BatchNorm CNN (mnist_bn_cnn), for test-time "
           "adaptation (TENT adapts BatchNorm affine parameters)", epochs=4, eval_eps=0.1,
           extra_evals=(("linf", 0.3), ("l2", 1.0)), architecture="mnist_bn_cnn"),
]}

VAL_SIZE = 1000


def default_out_dir() -> Path:
    """The package's zoo folder (``cards/`` and ``weights/`` live under it)."""
    return Path(str(resources.files("brittle.models.zoo")))


def _scaled(recipe: Recipe, scale: float) -> Recipe:
    if scale == 1.0:
        return recipe
    epochs = max(1, int(round(recipe.epochs * scale)))
    opts = {k: (v * scale if k in ("warmup", "t1", "t2", "ramp") else v) for k, v in recipe.schedule_options.items()}
    return Recipe(**{**recipe.__dict__, "epochs": epochs, "schedule_options": opts})


def estimate_margin_consistency(model: torch.nn.Module, data: Data, norm: str, eps: float, *,
                                 samples: int = 1000) -> dict[str, Any]:
    """Margin consistency and margin-implied robust accuracy with brittle's own input margins.

    On the first ``samples`` inputs: input margins from `brittle.input_margins` (the default minimal-norm
    attack: verified upper bounds), Kendall τ-b between them and the logit margins over all inputs (as an
    audit reports it), and the robust accuracy they imply at ``eps`` (correct and margin > ``eps``) — usually
    tighter than a fixed-budget attack at ``eps``.
    """
    from ...analysis.consistency import margin_correlations
    from ...margins.input import input_margins
    from ...margins.logit import logit_margins
    from ...analysis.robustness import robust_accuracy_from_margins

    subset = data.head(samples)
    # with the audit's budget stage at eps: without it the margins read up to ~4 points high where they pile up
    # at the training ε (benchmarks/RESULTS.md, AutoAttack comparison), and the card's headline is the lowest
    result = input_margins(model, subset, norm, device="cpu", seed=0, budgets=[eps])
    scores = logit_margins(model, subset, device="cpu")
    tau = margin_correlations(result.upper, scores.margin, n_boot=0).kendall.value
    robust = robust_accuracy_from_margins(result.upper, scores.pred == subset.y.numpy(), [eps])["robust_accuracy"]
    return {"kendall_tau": round(float(tau), 4), "norm": norm, "samples": len(subset),
            "input_margin": f"brittle.input_margins (default attack, budgets=[{eps:g}] as an audit at that ε; "
                            "verified upper bounds)",
            "data": f"{data.name} (first {len(subset)})",
            "median_input_margin": round(float(np.median(result.upper)), 4),
            "robust_accuracy_from_margins": {"eps": eps, "value": round(float(robust.iloc[0]), 4)}}


def measure(model: torch.nn.Module, recipe: Recipe, test_data: Data, *, device: str | torch.device = "cpu",
            eval_limit: int | None = 1000, pgd_steps: int = 40, log: Any = print) -> dict[str, Any]:
    """The measured card fields of a trained zoo model: clean / robust accuracies, margin consistency."""
    t1 = time.perf_counter()
    model = model.float().cpu().eval()
    clean, robust = evaluate(model, test_data, norm=recipe.eval_norm, eps=recipe.eval_eps, attack="pgd",
                             steps=pgd_steps, device=device)
    model.cpu()
    subset = test_data.head(eval_limit) if eval_limit else test_data
    extra = []
    for norm, eps in ((recipe.eval_norm, recipe.eval_eps), *recipe.extra_evals):
        _, r = evaluate(model, subset, norm=norm, eps=eps, attack="apgd-ce", steps=100, device=device)
        model.cpu()
        extra.append({"norm": norm, "eps": eps, "attack": "apgd-ce-100", "value": r, "samples": len(subset),
                      "data": f"{test_data.name} (first {len(subset)})"})
    consistency = estimate_margin_consistency(model, test_data, recipe.eval_norm, recipe.eval_eps)
    log(f"  [{recipe.name}] clean {clean:.4f}  pgd-{pgd_steps} {recipe.eval_norm}@{recipe.eval_eps}: {robust:.4f}  "
        f"margins: {consistency['robust_accuracy_from_margins']['value']:.4f}  kendall tau {consistency['kendall_tau']} "
        f"(eval {time.perf_counter() - t1:.0f}s)")
    from . import strongest_robust_accuracy

    card = {
        "clean_accuracy": clean,
        "clean_accuracy_data": f"{test_data.name} ({len(test_data)})",
        "robust_accuracy": {"norm": recipe.eval_norm, "eps": recipe.eval_eps, "attack": f"pgd-{pgd_steps}",
                            "value": robust, "samples": len(test_data), "data": test_data.name},
        "robust_accuracy_extra": extra,
        "margin_consistency_estimate": consistency,
    }
    strongest = strongest_robust_accuracy(card)  # the card leads with it; PGD-40 is kept, labelled weaker
    card["robust_accuracy"]["note"] = (f"PGD-{pgd_steps}, a weaker attack: its numbers are higher than the strongest "
                                       "evaluation (robust_accuracy_strongest)")
    return {"clean_accuracy": clean, "clean_accuracy_data": card["clean_accuracy_data"],
            "robust_accuracy_strongest": strongest, **{k: v for k, v in card.items() if k.startswith(("robust_", "margin_"))}}


def build_model(recipe: Recipe, train_data: Data, val_data: Data, test_data: Data, *,
                device: str | torch.device = "cpu", eval_limit: int | None = 1000, pgd_steps: int = 40,
                progress: bool = False, log: Any = print) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train one zoo model and measure it; returns the model and its card (without ``built_with``)."""
    torch.manual_seed(recipe.seed)
    model = ARCHITECTURES[recipe.architecture]()
    best: dict[str, Any] = {"score": -math.inf, "state": None, "epoch": None}
    adversarial = recipe.method != "standard"

    def keep_best(rec: EpochRecord) -> None:
        log(f"  [{recipe.name}] epoch {rec.epoch + 1}: loss {rec.loss:.4f} clean {rec.clean_accuracy:.4f} "
            f"adv {rec.adv_accuracy} eps {rec.eps:.3g} val {rec.val_accuracy} val-rob {rec.val_robust_accuracy} "
            f"({rec.seconds:.0f}s)")
        # best epoch once the full eps is reached (guards against catastrophic overfitting of FGSM training)
        if not adversarial:
            score = rec.val_accuracy or 0.0
        elif rec.eps < recipe.eps - 1e-9:
            return
        else:
            score = (rec.val_robust_accuracy or 0.0) + 1e-3 * (rec.val_accuracy or 0.0)
        if score >= best["score"]:
            best.update(score=score, state=copy.deepcopy(model.state_dict()), epoch=rec.epoch)

    t0 = time.perf_counter()
    history = train(model, train_data, method=recipe.method, attack=recipe.attack, norm=recipe.norm, eps=recipe.eps,
                    steps=recipe.steps, step_ratio=recipe.step_ratio, trades_beta=recipe.trades_beta,
                    epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size, optimizer=recipe.optimizer,
                    lr_schedule=recipe.lr_schedule, schedule=recipe.schedule,
                    schedule_options=recipe.schedule_options, label_smoothing=recipe.label_smoothing,
                    val_data=val_data, val_steps=10, seed=recipe.seed, device=device, progress=progress,
                    callback=keep_best)
    seconds = time.perf_counter() - t0
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model = model.float().cpu().eval()

    measured = measure(model, recipe, test_data, device=device, eval_limit=eval_limit, pgd_steps=pgd_steps, log=log)
    card = {
        "name": recipe.name,
        "description": recipe.description,
        "architecture": {"name": recipe.architecture, "kwargs": {}},
        "dataset": "mnist",
        "input_shape": [1, 28, 28],
        "domain": [0.0, 1.0],
        "num_classes": 10,
        "recipe": recipe.to_dict(),
        "training_data": f"{train_data.name} (first {len(train_data)}; last {len(val_data)} held out for validation)",
        "selected_epoch": (best["epoch"] + 1) if best["epoch"] is not None else len(history),
        **measured,
        "training_seconds": round(seconds, 1),
        "history": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in history.to_dicts()],
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(resolve_device(device)),
    }
    return model, card


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _with_strongest(card: dict[str, Any], strongest: dict[str, Any] | None) -> dict[str, Any]:
    """``card`` with ``robust_accuracy_strongest`` right before ``robust_accuracy`` (the card leads with it)."""
    out = {}
    for key, value in card.items():
        if key == "robust_accuracy":
            out["robust_accuracy_strongest"] = strongest
        if key != "robust_accuracy_strongest":
            out[key] = value
    return out


def build_zoo(out_dir: str | os.PathLike | None = None, root: str | os.PathLike = "/work/shared/data",
              names: Sequence[str] | None = None, device: str = "auto", epochs_scale: float = 1.0,
              eval_limit: int | None = 1000, progress: bool = False, command: str | None = None,
              evaluate_only: bool = False, margins_only: bool = False) -> list[dict[str, Any]]:
    """Train and write the zoo models ``names`` (default: all `RECIPES`) under ``out_dir``; returns their cards.

    Each model is written as soon as it is done (``weights/NAME.pt``, ``cards/NAME.json``).
    ``epochs_scale`` shrinks the recipes for a quick smoke build. ``evaluate_only`` re-measures already
    built models (accuracies, margin consistency) and updates their cards without training; ``margins_only``
    re-measures only the margin consistency (and the strongest evaluation it may change).
    """
    names = list(names) if names else list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise InputError(f"unknown zoo model(s) {unknown}", f"use some of {list(RECIPES)}")
    if not epochs_scale > 0:
        raise InputError(f"epochs_scale must be > 0, got {epochs_scale}", "pass e.g. 1.0")
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    (out / "cards").mkdir(parents=True, exist_ok=True)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    test_data = load_mnist("test", root)
    command = command or "python -m brittle.models.zoo.build " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    cards = []
    if evaluate_only or margins_only:
        for name in names:
            card_path, weights_path = out / "cards" / f"{name}.json", out / "weights" / f"{name}.pt"
            if not (card_path.exists() and weights_path.exists()):
                raise InputError(f"zoo model {name!r} is not built under {out}",
                                 "build it first (without --evaluate-only)")
            model = ARCHITECTURES[RECIPES[name].architecture]()
            model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
            print(f"evaluating {name}", flush=True)
            card = json.loads(card_path.read_text())
            if margins_only:
                from . import strongest_robust_accuracy

                recipe = RECIPES[name]
                card["margin_consistency_estimate"] = estimate_margin_consistency(
                    model.float().eval(), test_data, recipe.eval_norm, recipe.eval_eps)
                strongest = strongest_robust_accuracy(  # recomputed from the evaluations, this one new
                    {k: v for k, v in card.items() if k != "robust_accuracy_strongest"})
                card = _with_strongest(card, strongest)
                card["robust_accuracy"].setdefault(
                    "note", f"{card['robust_accuracy'].get('attack', 'PGD').upper()}, a weaker attack: its numbers are "
                            "higher than the strongest evaluation (robust_accuracy_strongest)")
                print(f"  [{name}] margins: {card['margin_consistency_estimate']}", flush=True)
                card["margins_evaluated_with"] = command
            else:
                card.update(measure(model, RECIPES[name], test_data, device=device, eval_limit=eval_limit,
                                    log=lambda s: print(s, flush=True)))
                card["evaluated_with"] = command
            _write_atomic(card_path, (json.dumps(card, indent=2) + "\n").encode())
            cards.append(card)
        return cards
    full = load_mnist("train", root)
    train_data = full.subset(slice(0, len(full) - VAL_SIZE))
    val_data = full.subset(slice(len(full) - VAL_SIZE, len(full)))
    for name in names:
        recipe = _scaled(RECIPES[name], epochs_scale)
        print(f"building {name}: {recipe.description}", flush=True)
        model, card = build_model(recipe, train_data, val_data, test_data, device=device, eval_limit=eval_limit,
                                  progress=progress, log=lambda s: print(s, flush=True))
        card["built_with"] = command
        state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
        buf = io.BytesIO()
        torch.save(state, buf)
        _write_atomic(out / "weights" / f"{name}.pt", buf.getvalue())
        _write_atomic(out / "cards" / f"{name}.json", (json.dumps(card, indent=2) + "\n").encode())
        cards.append(card)
    return cards


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m brittle.models.zoo.build``)."""
    p = argparse.ArgumentParser(prog="python -m brittle.models.zoo.build", description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("BRITTLE_DATA_ROOT", "/work/shared/data"),
                   help="folder with mnist/ idx files (train split needed)")
    p.add_argument("--names", nargs="*", default=None, help=f"models to build (default all: {' '.join(RECIPES)})")
    p.add_argument("--out-dir", default=None, help="zoo folder (default: the installed package's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--eval-limit", type=int, default=1000, help="test images for the APGD-CE evaluations")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on shared cores)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--evaluate-only", action="store_true", help="re-measure built models, no training")
    p.add_argument("--margins-only", action="store_true",
                   help="re-measure only the margin consistency of built models (no training, no PGD/APGD)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python -m brittle.models.zoo.build " + " ".join(shlex.quote(a) for a in argv_list)
    build_zoo(args.out_dir, args.root, args.names, args.device, args.epochs_scale, args.eval_limit or None,
              args.progress, command, args.evaluate_only, args.margins_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
