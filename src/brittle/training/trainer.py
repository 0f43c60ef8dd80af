"""Standard and adversarial training (Madry PGD / fast FGSM-RS / APGD, TRADES) with ε schedules.

`train` is deterministic on the CPU for a given ``seed``: the batch order and every random start of epoch
``e`` come from generators seeded by ``(seed, e)``, so a run resumed from a checkpoint (``resume_state``)
continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validation import check_norm
from ..margins.attacks.pgd import FIXED_BUDGET_ATTACKS, run_attack
from ..data.loading import Data, as_data
from ..errors import InputError
from ..models.loading import resolve_device
from .schedules import Schedule, make_schedule

__all__ = ["train", "History", "EpochRecord", "evaluate", "METHODS", "PROTOCOLS", "LR_SCHEDULES"]

METHODS = ("standard", "madry", "trades")
PROTOCOLS = ("full", "linear", "partial")
LR_SCHEDULES = ("constant", "cosine", "cyclic")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class EpochRecord:
    """Metrics of one epoch: train loss, clean and adversarial accuracy on the training batches (the
    adversarial examples the update used), ε at the epoch's end, learning rate, and validation metrics."""

    epoch: int
    loss: float
    clean_accuracy: float
    adv_accuracy: float | None
    eps: float
    lr: float
    seconds: float
    val_accuracy: float | None = None
    val_robust_accuracy: float | None = None
    val_eps: float | None = None


@dataclass
class History:
    """Per-epoch records of a training run."""

    records: list[EpochRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> EpochRecord:
        return self.records[i]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]

    def to_frame(self) -> Any:
        """The records as a pandas DataFrame (one row per epoch)."""
        import pandas as pd

        return pd.DataFrame(self.to_dicts())


def _kl_loss(p_clean: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-sample KL(p_clean || softmax(logits)), the TRADES inner objective."""

    def loss(logits: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, 1), p_clean, reduction="none").sum(1)

    return loss


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    correct = 0
    for lo in range(0, len(x), batch_size):
        correct += int((model(x[lo:lo + batch_size]).argmax(1) == y[lo:lo + batch_size]).sum())
    return correct / max(len(x), 1)


def evaluate(model: nn.Module, data: Data, *, norm: str = "linf", eps: float = 0.0, attack: str = "pgd",
             steps: int = 10, batch_size: int = 500, seed: int = 0,
             device: str | torch.device | None = "auto") -> tuple[float, float | None]:
    """Clean accuracy and (when ``eps > 0``) robust accuracy under a fixed-budget attack on ``data``."""
    norm = check_norm(norm)
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=dev).manual_seed(seed)
    clean = robust = 0
    try:
        for _, xb, yb in data.batches(batch_size):
            xb, yb = xb.to(dev), yb.to(dev)
            with torch.no_grad():
                ok = model(xb).argmax(1) == yb
            clean += int(ok.sum())
            if eps > 0 and bool(ok.any()):
                xo, yo = xb[ok], yb[ok]  # only correctly classified inputs can be robust
                xa = run_attack(attack, model, xo, yo, eps, norm=norm, steps=steps, domain=data.domain, generator=gen)
                with torch.no_grad():
                    robust += int((model(xa).argmax(1) == yo).sum())
    finally:
        model.train(was_training)
    n = len(data)
    return clean / n, (robust / n if eps > 0 else None)


def _trainable_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]


def _lr_factor(kind: str, total: int) -> Callable[[int], float]:
    if kind == "constant":
        return lambda i: 1.0
    if kind == "cosine":
        return lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total))
    # cyclic (Smith; Wong et al. 2020): linear up to the peak at 40% of the run, then linear down to 0
    peak = max(1, int(0.4 * total))
    return lambda i: i / peak if i < peak else max(0.0, (total - i) / max(total - peak, 1))


def _validate(method: str, attack: str, norm: str, eps: float, steps: int, trades_beta: float, epochs: int,
              lr: float, batch_size: int, protocol: str, last_k: int, lr_schedule: str, optimizer: str,
              label_smoothing: float) -> str:
    if method not in METHODS:
        raise InputError(f"unknown training method {method!r}", f"use one of {METHODS}")
    if attack not in FIXED_BUDGET_ATTACKS:
        raise InputError(f"unknown training attack {attack!r}", f"use one of {sorted(FIXED_BUDGET_ATTACKS)}")
    norm = check_norm(norm)
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise InputError(f"eps must be finite and >= 0, got {eps!r}", "pass a non-negative perturbation budget")
    if method != "standard" and eps == 0:
        raise InputError(f"method {method!r} needs eps > 0", "pass eps > 0 or method='standard'")
    if not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}", "pass a positive number of attack steps")
    if not isinstance(epochs, int) or epochs < 1:
        raise InputError(f"epochs must be an integer >= 1, got {epochs!r}", "pass a positive number of epochs")
    if not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"lr must be > 0, got {lr}", "pass a positive learning rate")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}", "pass a positive batch size")
    if trades_beta < 0:
        raise InputError(f"trades_beta must be >= 0, got {trades_beta}", "use e.g. 6.0")
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown training protocol {protocol!r}", f"use one of {PROTOCOLS}")
    if protocol == "partial" and (not isinstance(last_k, int) or last_k < 1):
        raise InputError(f"protocol 'partial' needs last_k >= 1, got {last_k!r}",
                         "pass the number of last layers to train")
    if lr_schedule not in LR_SCHEDULES:
        raise InputError(f"unknown lr schedule {lr_schedule!r}", f"use one of {LR_SCHEDULES}")
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r}", f"use one of {OPTIMIZERS}")
    if not 0 <= label_smoothing < 1:
        raise InputError(f"label_smoothing must be in [0, 1), got {label_smoothing}", "use e.g. 0.1")
    return norm


def train(model: nn.Module, data: Data | Any, *, method: str = "standard", attack: str = "pgd", norm: str = "linf",
          eps: float = 0.0, steps: int = 10, step_ratio: float | None = None, trades_beta: float = 6.0,
          epochs: int = 1, lr: float = 1e-3, batch_size: int = 128, optimizer: str = "adam",
          weight_decay: float = 0.0, momentum: float = 0.9, lr_schedule: str = "constant",
          schedule: str | Schedule | Callable[[float], float] | None = "constant",
          schedule_options: dict[str, float] | None = None, label_smoothing: float = 0.0,
          protocol: str = "full", last_k: int = 1, val_data: Data | None = None, val_eps: float | None = None,
          val_steps: int = 10, seed: int = 0, device: str | torch.device | None = "cpu", progress: bool = True,
          callback: Callable[[EpochRecord], bool | None] | None = None,
          checkpoint_fn: Callable[[int, dict[str, Any]], None] | None = None,
          resume_state: dict[str, Any] | None = None) -> History:
    """Train ``model`` in place on labelled ``data`` and return its `History`.

    Methods: ``standard``; ``madry`` (cross-entropy on adversarial examples from ``attack`` with the
    budget ``eps`` of the ``schedule``); ``trades`` (CE(clean) + ``trades_beta`` · KL(clean ‖ adv), the
    inner attack maximising the KL term). ``attack``: ``pgd`` (``steps`` steps of ``step_ratio``·ε, default
    2.5/steps), ``fgsm-rs`` (one step of ``step_ratio``·ε, default 1.25) or ``apgd-ce``.

    ``schedule``: ``constant``, ``linear``, ``two-hinge``, ``auto``, a `Schedule`, or a callable
    ``epoch_float -> eps`` (``schedule_options`` set e.g. ``warmup``, ``t1``, ``t2``). ``protocol``:
    ``full`` (all parameters), ``linear`` (last parameterised layer only), ``partial`` (last ``last_k``).
    ``val_data``: evaluated after each epoch (clean, and PGD-``val_steps`` at ``val_eps``, default ``eps``).

    ``callback(record)`` runs after each epoch; returning True stops training. ``checkpoint_fn(epoch, state)``
    receives after each epoch a state (model, optimizer, lr scheduler, ε schedule, history) that
    ``resume_state`` accepts to continue from the next epoch.
    """
    norm = _validate(method, attack, norm, eps, steps, trades_beta, epochs, lr, batch_size, protocol, last_k,
                     lr_schedule, optimizer, label_smoothing)
    data = data if isinstance(data, Data) else as_data(data)  # keep a Data's own domain
    if data.y is None:
        raise InputError("training data has no labels", "pass labelled data (x, y)")
    if val_data is not None:
        val_data = val_data if isinstance(val_data, Data) else as_data(val_data)
        if val_data.y is None:
            raise InputError("validation data has no labels", "pass labelled validation data")
    sched = make_schedule(schedule if method != "standard" else "constant", eps if method != "standard" else 0.0,
                          epochs, **(schedule_options or {}))
    dev = resolve_device(device)
    model.to(dev)

    modules = _trainable_modules(model)
    if not modules:
        raise InputError("the model has no parameters to train", "pass a model with parameters")
    if protocol == "full":
        train_mods = modules
    else:
        k = 1 if protocol == "linear" else last_k
        if k > len(modules):
            raise InputError(f"last_k={k} but the model has {len(modules)} parameterised layers",
                             f"pass last_k <= {len(modules)}")
        train_mods = modules[-k:]
    params = [p for m in train_mods for p in m.parameters(recurse=False)]
    trainable = {id(p) for p in params}
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)

    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = len(data)
    per_epoch = math.ceil(n / batch_size)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(lr_schedule, epochs * per_epoch))

    history = History()
    start_epoch = 0
    if resume_state is not None:
        try:
            model.load_state_dict(resume_state["model"])
            opt.load_state_dict(resume_state["optimizer"])
            lr_sched.load_state_dict(resume_state["lr_scheduler"])
            sched.load_state_dict(resume_state.get("schedule", {}))
            history = History([EpochRecord(**r) for r in resume_state.get("history", [])])
            start_epoch = int(resume_state["epoch"]) + 1
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise InputError(f"resume_state does not fit this run ({type(exc).__name__}: {str(exc)[:120]})",
                             "resume from a state saved by checkpoint_fn of the same model and settings") from None

    x_all, y_all = data.x, data.y
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        progress = False
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
            dgen = torch.Generator(device=dev).manual_seed(seed * 100_003 + epoch + 7919) if dev.type != "cpu" else gen
            order = torch.randperm(n, generator=gen)
            tot_loss = tot_clean = tot_adv = 0.0
            seen = adv_seen = 0
            eps_t = 0.0
            bar = tqdm(range(per_epoch), desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress)
            for b in bar:
                idx = order[b * batch_size:(b + 1) * batch_size]
                xb, yb = x_all[idx].to(dev), y_all[idx].to(dev)
                eps_t = float(sched(epoch + b / per_epoch)) if method != "standard" else 0.0
                x_adv = None
                if eps_t > 0:
                    model.eval()
                    if method == "madry":
                        x_adv = run_attack(attack, model, xb, yb, eps_t, norm=norm, steps=steps, domain=data.domain,
                                           step_ratio=step_ratio, keep_best=False, generator=dgen)
                    else:
                        with torch.no_grad():
                            p_clean = F.softmax(model(xb), 1)
                        x_adv = run_attack(attack, model, xb, yb, eps_t, norm=norm, steps=steps, domain=data.domain,
                                           step_ratio=step_ratio, keep_best=False, loss=_kl_loss(p_clean),
                                           generator=dgen)
                model.train()
                if method == "trades":
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
                    if x_adv is not None:
                        adv_logits = model(x_adv)
                        loss = loss + trades_beta * F.kl_div(F.log_softmax(adv_logits, 1), F.softmax(logits, 1),
                                                             reduction="batchmean")
                    else:
                        adv_logits = None
                    clean_logits = logits.detach()
                else:
                    logits = model(x_adv if x_adv is not None else xb)
                    loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
                    adv_logits = logits if x_adv is not None else None
                    clean_logits = logits.detach() if x_adv is None else None
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                lr_sched.step()
                m = len(yb)
                seen += m
                tot_loss += float(loss.detach()) * m
                if clean_logits is None:
                    with torch.no_grad():
                        model.eval()
                        clean_logits = model(xb)
                tot_clean += float((clean_logits.argmax(1) == yb).sum())
                if adv_logits is not None:
                    tot_adv += float((adv_logits.detach().argmax(1) == yb).sum())
                    adv_seen += m
                if progress:
                    bar.set_postfix(loss=f"{tot_loss / seen:.3f}", eps=f"{eps_t:.3g}")
            bar.close()
            model.eval()
            rec = EpochRecord(epoch=epoch, loss=tot_loss / seen, clean_accuracy=tot_clean / seen,
                              adv_accuracy=(tot_adv / adv_seen) if adv_seen else None,
                              eps=eps_t, lr=float(opt.param_groups[0]["lr"]), seconds=0.0)
            if val_data is not None:
                v_eps = eps if val_eps is None else val_eps
                rec.val_eps = v_eps if v_eps > 0 else None
                rec.val_accuracy, rec.val_robust_accuracy = evaluate(
                    model, val_data, norm=norm, eps=v_eps, steps=val_steps, seed=seed, device=dev)
            sched.observe(epoch, rec.val_accuracy if rec.val_accuracy is not None else rec.clean_accuracy)
            rec.seconds = time.perf_counter() - t0
            history.records.append(rec)
            if progress:
                tqdm.write(_format(rec))
            if checkpoint_fn is not None:
                checkpoint_fn(epoch, {"epoch": epoch, "model": copy.deepcopy(model.state_dict()),
                                      "optimizer": copy.deepcopy(opt.state_dict()),
                                      "lr_scheduler": lr_sched.state_dict(), "schedule": sched.state_dict(),
                                      "history": history.to_dicts(), "seed": seed})
            if callback is not None and callback(rec):
                break
    finally:
        for p, flag in saved_flags:
            p.requires_grad_(flag)
        model.eval()
    return history


def _format(rec: EpochRecord) -> str:
    parts = [f"epoch {rec.epoch + 1}", f"loss {rec.loss:.4f}", f"clean {rec.clean_accuracy:.4f}"]
    if rec.adv_accuracy is not None:
        parts.append(f"adv {rec.adv_accuracy:.4f} @eps {rec.eps:.3g}")
    if rec.val_accuracy is not None:
        parts.append(f"val {rec.val_accuracy:.4f}")
    if rec.val_robust_accuracy is not None:
        parts.append(f"val-rob {rec.val_robust_accuracy:.4f} @{rec.val_eps:.3g}")
    parts.append(f"{rec.seconds:.1f}s")
    return " | ".join(parts)

