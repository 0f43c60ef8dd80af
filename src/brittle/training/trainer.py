"""Standard and adversarial training (Madry PGD / fast FGSM-RS / APGD, TRADES) with ε schedules.

`Trainer` holds the settings of a run (all checked when it is built) and runs the epoch / batch loop;
the loss of each batch comes from its `brittle.training.objectives.Objective` (one class per method, registered
in ``OBJECTIVES``). `train` is the functional form.

Training is deterministic on the CPU for a given ``seed``: the batch order and every random start of epoch
``e`` come from generators seeded by ``(seed, e)``, so a run resumed from a checkpoint (``resume_state``)
continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.validation import check_eps_for_domain, check_nonnegative, check_nonnegative_int, check_norm
from ..data.loading import Data, as_data
from ..errors import InputError, ModelError
from ..margins.attacks.pgd import run_attack
from ..models.checkpoint import short_message
from ..models.loading import check_input_scale, checked_forward, model_devices, resolve_device
from .objectives import OBJECTIVES, BatchContext, Objective, make_objective
from .schedules import Schedule, make_schedule

__all__ = [
    "LR_SCHEDULES",
    "METHODS",
    "OPTIMIZERS",
    "PROTOCOLS",
    "EpochRecord",
    "History",
    "Trainer",
    "evaluate",
    "train",
]

METHODS = tuple(OBJECTIVES)
PROTOCOLS = ("full", "linear", "partial")
LR_SCHEDULES = ("constant", "cosine", "cyclic")
OPTIMIZERS = ("sgd", "adam")

ScheduleSpec = str | Schedule | Callable[[float], float] | None


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
        """The records as a pandas DataFrame (one row per epoch): ``epoch`` int64, every other column float64,
        with NaN where a metric was not measured (no attack, no validation data), so ``.plot()`` and ``.mean()``
        work on every column."""
        import pandas as pd

        columns = [f.name for f in fields(EpochRecord)]
        frame = pd.DataFrame(self.to_dicts(), columns=columns)
        return frame.astype({c: "int64" if c == "epoch" else "float64" for c in columns})


def evaluate(model: nn.Module, data: Data, *, norm: str = "linf", eps: float = 0.0, attack: str = "pgd",
             steps: int = 10, batch_size: int = 500, seed: int = 0,
             device: str | torch.device | None = "auto") -> tuple[float, float | None]:
    """Clean accuracy and (when ``eps > 0``) robust accuracy under a fixed-budget attack on ``data``."""
    norm = check_norm(norm)
    dev = resolve_device(device)
    modes = [(module, module.training) for module in model.modules()]
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
    finally:  # every module in its own mode again
        for module, training in modes:
            module.training = training
    n = len(data)
    return clean / n, (robust / n if eps > 0 else None)


def check_model_on(model: nn.Module, data: Data, what: str = "training") -> None:
    """Refuse, in one line naming ``what`` data, a model that cannot train on ``data``: one forward pass on two
    inputs with the audit's checks (`brittle.models.loading.checked_forward`: input shape and channels, logits of
    shape (N, classes), finite, not probabilities; `check_input_scale`: inputs far outside the model's own domain),
    then the labels against the model's outputs (`brittle.margins.compute.check_labels_fit`).

    The pass runs in eval mode on the device the model is on; every module's mode is restored afterwards and the
    model is neither moved nor changed. A model whose forward returns a tuple or dict is refused: training needs
    the logits themselves (wrap it in `brittle.models.loading.LogitsAdapter`).
    """
    devices = model_devices(model)
    dev = next(iter(devices)) if len(devices) == 1 else torch.device("cpu")
    sample = data.x[:2].to(dev)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        _probe(model, data, sample, dev)
    except (InputError, ModelError) as exc:  # the same message, naming the data set
        raise type(exc)(f"{what} data: {exc.problem}", exc.fix) from None
    finally:
        for module, training in modes:
            module.training = training


def _probe(model: nn.Module, data: Data, sample: torch.Tensor, dev: torch.device) -> None:
    from ..margins.compute import check_labels_fit

    check_input_scale(model, sample)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # checked_forward's note that it adapts a tuple output: refused below
        adapted, _ = checked_forward(model, sample, data.num_classes)
        kind = type(model(sample)).__name__ if adapted is not model else ""
    if kind:
        raise ModelError(f"the model returns {kind}, not a tensor of logits; training needs forward to return "
                         "the logits",
                         "wrap it: brittle.models.loading.LogitsAdapter(model, select=<index or key of the logits>), "
                         "or make forward return a (batch, num_classes) tensor")
    check_labels_fit(model, data, dev)


def _lr_factor(kind: str, total: int) -> Callable[[int], float]:
    if kind == "constant":
        return lambda i: 1.0
    if kind == "cosine":
        return lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total))
    # cyclic (Smith; Wong et al. 2020): linear up to the peak at 40% of the run, then linear down to 0
    peak = max(1, int(0.4 * total))
    return lambda i: i / peak if i < peak else max(0.0, (total - i) / max(total - peak, 1))


def _schedule_name(schedule: Any) -> str:
    return schedule if isinstance(schedule, str) else getattr(schedule, "__name__", type(schedule).__name__)


def _positive_int(value: Any, name: str, fix: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}", fix)
    return value


def _non_negative(value: Any, name: str, fix: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or v < 0:
        raise InputError(f"{name} must be finite and >= 0, got {value!r}", fix)
    return v


class Trainer:
    """Train a model in place with one objective, optimizer, learning-rate and ε schedule.

    Every setting is checked here, before any model or file is touched; `fit` checks the model and data before
    it moves or changes the model. See `train` for the settings.
    """

    def __init__(self, *, method: str = "standard", attack: str = "pgd", norm: str = "linf", eps: float = 0.0,
                 steps: int = 10, step_ratio: float | None = None, trades_beta: float = 6.0, epochs: int = 1,
                 lr: float = 1e-3, batch_size: int = 128, optimizer: str = "adam", weight_decay: float = 0.0,
                 momentum: float = 0.9, lr_schedule: str = "constant", schedule: ScheduleSpec = "constant",
                 schedule_options: dict[str, float] | None = None, label_smoothing: float = 0.0,
                 protocol: str = "full", last_k: int = 1, val_eps: float | None = None, val_steps: int = 10,
                 seed: int = 0, device: str | torch.device | None = "cpu", progress: bool = True):
        self.objective: Objective = make_objective(method, attack=attack, norm=norm, steps=steps,
                                                   step_ratio=step_ratio, label_smoothing=label_smoothing,
                                                   trades_beta=trades_beta)
        eps = check_nonnegative(eps)
        if self.objective.adversarial and eps == 0:
            raise InputError(f"method {method!r} needs eps > 0", "pass eps > 0 or method='standard'")
        _positive_int(epochs, "epochs", "pass a positive number of epochs")
        if not (lr > 0 and math.isfinite(lr)):
            raise InputError(f"lr must be > 0, got {lr}", "pass a positive learning rate")
        _positive_int(batch_size, "batch_size", "pass a positive batch size")
        _non_negative(trades_beta, "trades_beta", "use e.g. 6.0")  # checked for every method, as train() always did
        if optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {optimizer!r}", f"use one of {OPTIMIZERS}")
        _non_negative(weight_decay, "weight_decay", "pass e.g. 5e-4 (or 0)")
        _non_negative(momentum, "momentum", "pass e.g. 0.9")
        if lr_schedule not in LR_SCHEDULES:
            raise InputError(f"unknown lr schedule {lr_schedule!r}", f"use one of {LR_SCHEDULES}")
        if protocol not in PROTOCOLS:
            raise InputError(f"unknown training protocol {protocol!r}", f"use one of {PROTOCOLS}")
        if protocol == "partial" and (not isinstance(last_k, int) or last_k < 1):
            raise InputError(f"protocol 'partial' needs last_k >= 1, got {last_k!r}",
                             "pass the number of last layers to train")
        if val_eps is not None:
            _non_negative(val_eps, "val_eps", "pass a non-negative validation budget, or None for eps")
        _positive_int(val_steps, "val_steps", "pass a positive number of validation attack steps")
        seed = check_nonnegative_int(seed, "seed", "pass e.g. seed=0 (--seed 0)")
        if not self.objective.adversarial and (schedule_options or schedule not in (None, "constant")):
            given = ", ".join([*([f"schedule={_schedule_name(schedule)!r}"] if schedule not in (None, "constant")
                                 else []), *(f"{k}={v!r}" for k, v in (schedule_options or {}).items())])
            raise InputError(f"an ε schedule ({given}) applies to adversarial training only, and method {method!r} "
                             "trains without adversarial examples",
                             "drop the schedule and its options, or train adversarially (method 'madry' or 'trades', "
                             "--method)")
        self.method, self.norm, self.eps, self.epochs = method, self.objective.norm, eps, epochs
        self.lr, self.batch_size, self.optimizer = lr, batch_size, optimizer
        self.weight_decay, self.momentum, self.lr_schedule = weight_decay, momentum, lr_schedule
        self.schedule_spec: ScheduleSpec = schedule if self.objective.adversarial else "constant"
        self.schedule_options = dict(schedule_options or {}) if self.objective.adversarial else {}
        self.make_schedule()  # checks the ε schedule and its options
        self.protocol, self.last_k = protocol, last_k
        self.val_eps, self.val_steps, self.seed, self.progress = val_eps, val_steps, int(seed), progress
        self.device = resolve_device(device)

    def make_schedule(self) -> Schedule:
        """A fresh ε schedule of this run (constant 0 for objectives without adversarial examples)."""
        return make_schedule(self.schedule_spec, self.eps if self.objective.adversarial else 0.0, self.epochs,
                             **self.schedule_options)

    # ------------------------------------------------------------------------------------------ checks

    @staticmethod
    def labelled(data: Data | Any, what: str = "training") -> Data:
        """``data`` as a `Data` (a `Data` keeps its own domain), checked to carry labels."""
        data = data if isinstance(data, Data) else as_data(data)
        if data.y is None:
            raise InputError(f"{what} data has no labels", f"pass labelled {what} data (x, y)")
        return data

    def trained_modules(self, model: nn.Module) -> list[nn.Module]:
        """The parameterised modules the protocol trains (all, the last one, or the last ``last_k``)."""
        modules = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
        if not modules:
            raise InputError("the model has no parameters to train", "pass a model with parameters")
        if self.protocol == "full":
            return modules
        k = 1 if self.protocol == "linear" else self.last_k
        if k > len(modules):
            raise InputError(f"last_k={k} but the model has {len(modules)} parameterised layers",
                             f"pass last_k <= {len(modules)}")
        return modules[-k:]

    def check(self, model: nn.Module, data: Data | Any, val_data: Data | Any | None = None
              ) -> tuple[Data, Data | None]:
        """``(data, val_data)`` as labelled `Data`, checked with the model before anything is trained or written:
        ε against each data's domain (`check_eps_for_domain`), one forward pass of the model on two inputs of each
        (the audit's model check: input shape and channels, logits of shape (N, classes)) and the labels against
        the model's outputs (`brittle.margins.compute.check_labels_fit`)."""
        data = self.labelled(data)
        if val_data is not None:
            val_data = self.labelled(val_data, "validation")
        self.trained_modules(model)
        for part, what in ((data, "training"), (val_data, "validation")):
            if part is None:
                continue
            budgets = [e for e in (self.eps, self.val_eps if what == "validation" else None) if e]
            if budgets:  # e.g. 8 meant as 8/255: refused now, not after every epoch has been trained at it
                check_eps_for_domain(budgets, self.norm, part.domain, int(np.prod(part.input_shape)))
            check_model_on(model, part, what)
        return data, val_data

    @staticmethod
    def _check_resume(model: nn.Module, state: dict[str, Any]) -> None:
        """Refuse a ``resume_state`` of another model or run before the model is touched."""
        def refuse(why: str) -> InputError:
            return InputError(f"resume_state does not fit this run ({short_message(why)})",
                              "resume from a state saved by checkpoint_fn of the same model and settings")

        if not isinstance(state, dict):
            raise refuse(f"a {type(state).__name__}, not a dict")
        missing = [k for k in ("epoch", "model", "optimizer", "lr_scheduler") if k not in state]
        if missing:
            raise refuse(f"KeyError: {missing[0]!r}")
        own, saved = model.state_dict(), state["model"]
        if not isinstance(saved, dict) or set(own) != set(saved) or any(
                getattr(saved[k], "shape", None) != v.shape for k, v in own.items()):
            raise refuse("RuntimeError: the saved weights are of another model")

    # ---------------------------------------------------------------------------------------- training

    def fit(self, model: nn.Module, data: Data | Any, *, val_data: Data | None = None,
            callback: Callable[[EpochRecord], bool | None] | None = None,
            checkpoint_fn: Callable[[int, dict[str, Any]], None] | None = None,
            resume_state: dict[str, Any] | None = None) -> History:
        """Train ``model`` in place on labelled ``data`` and return its `History` (see `train`)."""
        data, val_data = self.check(model, data, val_data)
        train_mods = self.trained_modules(model)
        if resume_state is not None:
            self._check_resume(model, resume_state)
        sched = self.make_schedule()
        dev = self.device
        model.to(dev)
        params = [p for m in train_mods for p in m.parameters(recurse=False)]
        trainable = {id(p) for p in params}
        saved_flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            for p in model.parameters():
                p.requires_grad_(id(p) in trainable)
            if self.optimizer == "adam":
                opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
            else:
                opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
            per_epoch = math.ceil(len(data) / self.batch_size)
            lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(self.lr_schedule, self.epochs * per_epoch))
            history, start_epoch = History(), 0
            if resume_state is not None:
                history, start_epoch = self._resume(model, opt, lr_sched, sched, resume_state)
            for epoch in range(start_epoch, self.epochs):
                t0 = time.perf_counter()
                rec = self._train_epoch(model, data, opt, lr_sched, sched, epoch, per_epoch, train_mods)
                if val_data is not None:
                    v_eps = self.eps if self.val_eps is None else self.val_eps
                    rec.val_eps = v_eps if v_eps > 0 else None
                    rec.val_accuracy, rec.val_robust_accuracy = evaluate(
                        model, val_data, norm=self.norm, eps=v_eps, steps=self.val_steps, seed=self.seed, device=dev)
                sched.observe(epoch, rec.val_accuracy if rec.val_accuracy is not None else rec.clean_accuracy)
                rec.seconds = time.perf_counter() - t0
                history.records.append(rec)
                if self.progress:
                    _write(_format(rec))
                if checkpoint_fn is not None:
                    checkpoint_fn(epoch, {"epoch": epoch, "model": copy.deepcopy(model.state_dict()),
                                          "optimizer": copy.deepcopy(opt.state_dict()),
                                          "lr_scheduler": lr_sched.state_dict(), "schedule": sched.state_dict(),
                                          "history": history.to_dicts(), "seed": self.seed})
                if callback is not None and callback(rec):
                    break
        finally:
            for p, flag in saved_flags:
                p.requires_grad_(flag)
            model.eval()
        return history

    @staticmethod
    def _resume(model: nn.Module, opt: torch.optim.Optimizer, lr_sched: Any, sched: Schedule,
                state: dict[str, Any]) -> tuple[History, int]:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            lr_sched.load_state_dict(state["lr_scheduler"])
            sched.load_state_dict(state.get("schedule", {}))
            history = History([EpochRecord(**r) for r in state.get("history", [])])
            return history, int(state["epoch"]) + 1
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise InputError(f"resume_state does not fit this run ({type(exc).__name__}: {short_message(exc)})",
                             "resume from a state saved by checkpoint_fn of the same model and settings") from None

    def train_mode(self, model: nn.Module, train_mods: list[nn.Module]) -> None:
        """Put ``model`` in the mode of a training step: everything in train mode under the ``full`` protocol;
        under ``linear`` / ``partial`` only the part the protocol trains (its modules and every module registered
        after the first of them, e.g. a dropout between two trained layers), while the frozen part stays in
        eval mode: its BatchNorm running statistics do not move and its dropout is off, so the trained layers
        see the features the frozen model computes at evaluation."""
        if self.protocol == "full":
            model.train()
            return
        model.eval()
        modules = list(model.modules())
        trained = {id(m) for m in train_mods}
        first = next(i for i, m in enumerate(modules) if id(m) in trained)
        for module in modules[first:]:
            module.training = True  # this module only: its children are in the list as well

    def _train_epoch(self, model: nn.Module, data: Data, opt: torch.optim.Optimizer, lr_sched: Any,
                     sched: Schedule, epoch: int, per_epoch: int, train_mods: list[nn.Module]) -> EpochRecord:
        """One pass over ``data`` in the epoch's seeded order: per batch the objective's loss, one update."""
        dev, bs = self.device, self.batch_size
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        dgen = torch.Generator(device=dev).manual_seed(self.seed * 100_003 + epoch + 7919) if dev.type != "cpu" else gen
        order = torch.randperm(len(data), generator=gen)
        tot_loss = tot_clean = tot_adv = 0.0
        seen = adv_seen = 0
        eps_t = 0.0
        bar = _bar(range(per_epoch), f"epoch {epoch + 1}/{self.epochs}", self.progress)
        for b in bar:
            idx = order[b * bs:(b + 1) * bs]
            xb, yb = data.x[idx].to(dev), data.y[idx].to(dev)
            eps_t = float(sched(epoch + b / per_epoch))
            ctx = BatchContext(eps=eps_t, domain=data.domain, generator=dgen)
            self.train_mode(model, train_mods)
            loss = self.objective.loss(model, xb, yb, ctx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_sched.step()
            m = len(yb)
            seen += m
            tot_loss += float(loss.detach()) * m
            clean_logits = ctx.clean_logits
            if clean_logits is None:  # the objective trained on other inputs: one clean forward for the metric
                with torch.no_grad():
                    model.eval()
                    clean_logits = model(xb)
            tot_clean += float((clean_logits.argmax(1) == yb).sum())
            if ctx.adv_logits is not None:
                tot_adv += float((ctx.adv_logits.argmax(1) == yb).sum())
                adv_seen += m
            if self.progress:
                bar.set_postfix(loss=f"{tot_loss / seen:.3f}", eps=f"{eps_t:.3g}")
        if hasattr(bar, "close"):
            bar.close()
        model.eval()
        return EpochRecord(epoch=epoch, loss=tot_loss / seen, clean_accuracy=tot_clean / seen,
                           adv_accuracy=(tot_adv / adv_seen) if adv_seen else None,
                           eps=eps_t, lr=float(opt.param_groups[0]["lr"]), seconds=0.0)


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

    Methods (`brittle.training.objectives.OBJECTIVES`): ``standard``; ``madry`` (cross-entropy on adversarial
    examples from ``attack`` with the budget ``eps`` of the ``schedule``); ``trades`` (CE(clean) +
    ``trades_beta`` · KL(clean ‖ adv), the inner attack maximising the KL term). ``attack``: ``pgd``
    (``steps`` steps of ``step_ratio``·ε, default 2.5/steps), ``fgsm-rs`` (one step of ``step_ratio``·ε,
    default 1.25) or ``apgd-ce``.

    ``schedule``: ``constant``, ``linear``, ``two-hinge``, ``auto``, a `Schedule`, or a callable
    ``epoch_float -> eps`` (``schedule_options`` set e.g. ``warmup``, ``t1``, ``t2``; an option the schedule does
    not take, a schedule that cannot reach ε within ``epochs`` and a schedule for a method without adversarial
    examples are refused). ``protocol``: ``full`` (all parameters), ``linear`` (last parameterised layer only),
    ``partial`` (last ``last_k``); the part a protocol does not train stays in eval mode (`Trainer.train_mode`:
    BatchNorm running statistics unchanged, dropout off), so a probe trains on the frozen model's features.
    ``val_data``: evaluated after each epoch (clean, and PGD-``val_steps`` at ``val_eps``, default ``eps``).

    ``callback(record)`` runs after each epoch; returning True stops training. ``checkpoint_fn(epoch, state)``
    receives after each epoch a state (model, optimizer, lr scheduler, ε schedule, history) that
    ``resume_state`` accepts to continue from the next epoch. Every setting is checked before the model is
    changed (`Trainer`).
    """
    trainer = Trainer(method=method, attack=attack, norm=norm, eps=eps, steps=steps, step_ratio=step_ratio,
                      trades_beta=trades_beta, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                      weight_decay=weight_decay, momentum=momentum, lr_schedule=lr_schedule, schedule=schedule,
                      schedule_options=schedule_options, label_smoothing=label_smoothing, protocol=protocol,
                      last_k=last_k, val_eps=val_eps, val_steps=val_steps, seed=seed, device=device,
                      progress=progress)
    return trainer.fit(model, data, val_data=val_data, callback=callback, checkpoint_fn=checkpoint_fn,
                       resume_state=resume_state)


def _bar(it: range, desc: str, progress: bool) -> Any:
    """A tqdm bar over ``it`` when ``progress`` (and tqdm is there), else ``it`` itself."""
    if not progress:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return it
    return tqdm(it, desc=desc, leave=False)


def _write(line: str) -> None:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        print(line)
        return
    tqdm.write(line)


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

