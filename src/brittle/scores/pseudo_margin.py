"""Learned pseudo-margins: restore margin consistency when the logit margin orders samples poorly.

A `PseudoMargin` maps what one forward pass gives (logits and/or a hidden layer's output) to a score whose
order should follow the input margin. Two objectives (both a small torch MLP; ``hidden=()`` is linear):

* ``loss="regression"`` — as in the paper: regress ``sqrt(input_margin)`` (mean squared error on the
  standardised target); `PseudoMargin.predict` returns ``s·|s|`` for the predicted root ``s``, an estimate of
  the input margin itself (monotone in ``s``, so the ranking is that of ``s``).
* ``loss="ranking"`` — pairwise logistic ranking loss on random pairs in each minibatch,
  ``softplus(-sign(d_i - d_j)·(f_i - f_j))`` (tied pairs skipped), as in the authors' ``xtrain_epoch``;
  only the order of the output is meaningful.

Censored margins (``inf``: the attack found nothing) in training: ``censored="cap"`` (default) keeps them —
the regression target is capped at the largest finite training margin (the true margin is at least that large),
the ranking loss treats them as larger than every finite margin and tied with one another;
``censored="drop"`` leaves them out.

Features: pass the `Features` returned by `extract_features` (recommended: the pseudo-margin then records
which layer it needs, so a `brittle.monitoring.monitor.Monitor` can rebuild its input in one forward pass) or any 2-D
array. With `Features`, ``inputs="logits"`` uses the sorted logit gaps ``top1 - top_k`` (k = 2..C; the first
is the logit margin; invariant to adding a constant to all logits and to class permutations),
``inputs="layer"`` the hooked layer's flattened output, ``inputs="both"`` their concatenation.

Saved as JSON (configuration, standardisation and weights as numbers), never pickle.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..analysis.consistency import detection_metrics, margin_correlations
from ..core.validation import (
    as_eps_array,
    as_margin_array,
    check_nonnegative,
    check_positive,
    check_positive_int,
)
from ..core.serialize import read_json_file
from ..core.randomness import seeded
from ..errors import InputError
from ..models.features import Features
from .base import Scorer, register

Loss = Literal["regression", "ranking"]
Inputs = Literal["logits", "layer", "both"]
FORMAT = "brittle.pseudo_margin"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Features from one forward pass
# --------------------------------------------------------------------------------------------

def logit_gaps(logits: Any) -> np.ndarray:
    """Sorted logit gaps ``top1 - top_k`` for k = 2..C, shape (N, C-1); column 0 is the logit margin."""
    z = np.asarray(logits.detach().cpu().numpy() if hasattr(logits, "detach") else logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise InputError(f"logits have shape {z.shape}: expected (N, num_classes >= 2)", "pass a 2-D logits array")
    s = -np.sort(-z, axis=1)
    return s[:, :1] - s[:, 1:]


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run tiny-network maths on one intra-op thread (much faster than contended threads on shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _adam_step(params: list[torch.Tensor], moments: list[tuple[torch.Tensor, torch.Tensor]], step: int,
               lr: float, weight_decay: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
    """One Adam update with L2 weight decay, as ``torch.optim.Adam`` (written out: creating a torch optimizer
    imports torch._dynamo and sympy, seconds of start-up for a network this small)."""
    with torch.no_grad():
        for p, (m, v) in zip(params, moments):
            if p.grad is None:
                continue
            g = p.grad + weight_decay * p if weight_decay else p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2 ** step)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1 ** step))


def _mlp(n_in: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _check_hidden(hidden: Any) -> tuple[int, ...]:
    """``hidden`` as a tuple of positive ints (the MLP's hidden widths), or `InputError`."""
    if not isinstance(hidden, (tuple, list)) or not all(
            isinstance(h, (int, np.integer)) and not isinstance(h, (bool, np.bool_)) for h in hidden):
        raise InputError(f"hidden must be a tuple of ints (hidden-layer widths), got {hidden!r}",
                         "pass e.g. hidden=(64,), or hidden=() for a linear map")
    if any(h < 1 for h in hidden):
        raise InputError(f"hidden widths must be >= 1, got {tuple(hidden)}", "pass e.g. hidden=(64,) or () for linear")
    return tuple(int(h) for h in hidden)


def _check_array(value: Any, name: str, n: int) -> np.ndarray:
    """A saved standardisation vector: finite floats of shape ``(n,)`` (ValueError otherwise: a corrupt file)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n},) finite values")
    return arr


@register
class PseudoMargin(Scorer):
    """A learned score whose order follows the input margin (sklearn style: `fit`, `predict`).

    Args:
        loss: ``"regression"`` (on ``sqrt(margin)``, the paper's choice) or ``"ranking"`` (pairwise logistic).
        inputs: with `Features`: ``"logits"`` (sorted logit gaps), ``"layer"`` or ``"both"``.
        hidden: hidden widths of the MLP (``()`` for a linear map).
        epochs, lr, weight_decay, batch_size: Adam training settings.
        censored: ``"cap"`` or ``"drop"`` for ``inf`` training margins (see module docstring).
        seed: seed of initialisation and minibatch order (the global torch RNG is left untouched).
    """

    def __init__(self, loss: Loss = "regression", *, inputs: Inputs = "logits", hidden: tuple[int, ...] = (64,),
                 epochs: int = 100, lr: float = 3e-3, weight_decay: float = 1e-4, batch_size: int = 256,
                 censored: Literal["cap", "drop"] = "cap", seed: int = 0):
        if loss not in ("regression", "ranking"):
            raise InputError(f"unknown loss {loss!r}", "use 'regression' or 'ranking'")
        if inputs not in ("logits", "layer", "both"):
            raise InputError(f"unknown inputs {inputs!r}", "use 'logits', 'layer' or 'both'")
        if censored not in ("cap", "drop"):
            raise InputError(f"censored must be 'cap' or 'drop', got {censored!r}", "pass censored='cap' or 'drop'")
        hidden = _check_hidden(hidden)
        epochs = check_positive_int(epochs, "epochs", "pass e.g. epochs=100")
        batch_size = check_positive_int(batch_size, "batch_size", "pass e.g. batch_size=256")
        lr = check_positive(lr, "lr", "pass e.g. lr=3e-3")
        weight_decay = check_nonnegative(weight_decay, "weight_decay", "pass e.g. weight_decay=1e-4 (0 for none)")
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise InputError(f"seed must be an integer, got {seed!r}", "pass e.g. seed=0")
        seed = int(seed)
        self.loss, self.inputs, self.hidden = loss, inputs, hidden
        self.epochs, self.lr, self.weight_decay, self.batch_size = epochs, lr, weight_decay, batch_size
        self.censored, self.seed = censored, seed
        self.source: str | None = None  # "features" or "array", set by fit
        self.layer: str | None = None
        self.n_features: int | None = None
        self.net: nn.Sequential | None = None
        self._x_mean = self._x_std = None  # type: np.ndarray | None
        self._t_mean, self._t_std = 0.0, 1.0

    # --- features ----------------------------------------------------------------------------
    def feature_matrix(self, X: Any) -> np.ndarray:
        """The design matrix for ``X`` (`Features` or a 2-D array), checked against what `fit` saw."""
        if isinstance(X, Features):
            parts = []
            if self.inputs in ("logits", "both"):
                parts.append(logit_gaps(X.logits))
            if self.inputs in ("layer", "both"):
                if X.layer_output is None:
                    raise InputError(f"inputs={self.inputs!r} needs a layer's output but the features have none",
                                     "extract features with layer='<name>' or use inputs='logits'")
                if self.layer is not None and X.layer != self.layer:
                    raise InputError(f"the pseudo-margin was fitted on layer {self.layer!r}, got features of {X.layer!r}",
                                     f"extract features with layer={self.layer!r}")
                parts.append(np.asarray(X.layer_output, dtype=np.float64).reshape(len(X), -1))
            mat = np.concatenate(parts, axis=1)
            source = "features"
        else:
            if hasattr(X, "detach"):
                X = X.detach().cpu().numpy()
            try:
                mat = np.asarray(X, dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError("features are not numeric", "pass Features or a 2-D float array") from None
            if mat.ndim == 1:
                mat = mat[:, None]
            if mat.ndim != 2:
                raise InputError(f"features have shape {mat.shape}: expected (N, D)", "pass a 2-D array")
            source = "array"
        if not np.isfinite(mat).all():
            raise InputError("features contain NaN or inf", "check the model outputs")
        if self.source is not None:
            if source != self.source:
                raise InputError(f"the pseudo-margin was fitted on {self.source} and now gets {source}",
                                 "pass the same kind of input to fit and predict")
            if mat.shape[1] != self.n_features:
                raise InputError(f"features have {mat.shape[1]} columns, the pseudo-margin was fitted on {self.n_features}",
                                 "pass features from the same model / layer")
        return mat

    # --- training ----------------------------------------------------------------------------
    def fit(self, X: Any, input_margin: Any) -> "PseudoMargin":
        """Learn the pseudo-margin from features ``X`` and input margins (``inf`` = censored)."""
        self.source = None
        mat = self.feature_matrix(X)
        d = as_margin_array(input_margin, "input_margin", n=len(mat), min_len=2)
        keep = np.ones(len(d), bool) if self.censored == "cap" else np.isfinite(d)
        mat, d = mat[keep], d[keep]
        finite = np.isfinite(d)
        if finite.sum() < 2:
            raise InputError(f"only {int(finite.sum())} finite input margin(s) to learn from",
                             "attack with a larger budget or pass more samples")
        if len(np.unique(d)) < 2:
            raise InputError("all input margins are equal: nothing to learn", "pass samples with different margins")
        cap = float(d[finite].max())
        self.source = "features" if isinstance(X, Features) else "array"
        self.layer = X.layer if isinstance(X, Features) and self.inputs != "logits" else None
        self.n_features = mat.shape[1]
        self._x_mean = mat.mean(0)
        std = mat.std(0)
        self._x_std = np.where(std > 1e-12, std, 1.0)
        xs = torch.as_tensor((mat - self._x_mean) / self._x_std, dtype=torch.float32)
        if self.loss == "regression":
            t = np.sqrt(np.minimum(d, cap))
            self._t_mean, self._t_std = float(t.mean()), float(t.std()) or 1.0
            target = torch.as_tensor((t - self._t_mean) / self._t_std, dtype=torch.float32)
        else:
            self._t_mean, self._t_std = 0.0, 1.0
            rank_ready = np.where(np.isfinite(d), d, cap * 2 + 1.0)
            target = torch.as_tensor(rank_ready, dtype=torch.float32)
        with seeded(self.seed), _single_thread():
            self.net = _mlp(self.n_features, self.hidden)
            self._train(xs, target)
        self.net.eval()
        return self

    def _train(self, xs: torch.Tensor, target: torch.Tensor) -> None:
        assert self.net is not None
        params = list(self.net.parameters())
        moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        step = 0
        n = len(xs)
        bs = min(self.batch_size, n)
        self.net.train()
        for _ in range(self.epochs):
            order = torch.randperm(n)
            for lo in range(0, n, bs):
                b = order[lo:lo + bs]
                if len(b) < 2:
                    continue
                out = self.net(xs[b]).squeeze(1)
                if self.loss == "regression":
                    loss = torch.mean((out - target[b]) ** 2)
                else:
                    j = torch.randperm(len(b))
                    sign = torch.sign(target[b] - target[b][j])
                    valid = sign != 0
                    if not bool(valid.any()):
                        continue
                    loss = nn.functional.softplus(-sign[valid] * (out - out[j])[valid]).mean()
                for p in params:
                    p.grad = None
                loss.backward()
                step += 1
                _adam_step(params, moments, step, self.lr, self.weight_decay)

    # --- inference ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.net is None:
            raise InputError("the pseudo-margin is not fitted", "call fit(features, input_margin) first (or load one)")

    # --- the Scorer contract ---------------------------------------------------------------------
    name = "pseudo_margin"
    flag_below = True  # a small pseudo-margin, like a small margin, marks a brittle decision
    requires_fit = True

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,) if self.layer is not None else ()

    @property
    def is_fitted(self) -> bool:
        return self.net is not None

    def score(self, features: Any) -> np.ndarray:
        """`predict` (the Scorer name): larger = more robust."""
        return self.predict(features)

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self._check_fitted()
        layer_output = outputs.get(self.layer) if self.layer is not None else None
        return self.predict_tensor(self.design_tensor(logits, layer_output)).to(logits.device)

    def get_params(self) -> dict[str, Any]:
        return {"loss": self.loss, "inputs": self.inputs, "hidden": list(self.hidden), "epochs": self.epochs,
                "lr": self.lr, "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                "censored": self.censored, "seed": self.seed}

    def predict(self, X: Any) -> np.ndarray:
        """Pseudo-margin of each sample (larger = more robust); regression: an estimate of the input margin."""
        self._check_fitted()
        mat = self.feature_matrix(X)
        return self.predict_tensor(torch.as_tensor((mat - self._x_mean) / self._x_std, dtype=torch.float32),
                                   standardized=True).numpy().astype(np.float64)

    def predict_tensor(self, mat: torch.Tensor, *, standardized: bool = False) -> torch.Tensor:
        """`predict` on a float design-matrix tensor (used by the monitor; no validation)."""
        assert self.net is not None
        if not standardized:
            mat = (mat.double().cpu() - torch.as_tensor(self._x_mean)) / torch.as_tensor(self._x_std)
        with torch.inference_mode():
            out = self.net(mat.float().cpu()).squeeze(1).double()
        if self.loss == "regression":
            s = out * self._t_std + self._t_mean
            return s * s.abs()
        return out

    def design_tensor(self, logits: torch.Tensor, layer_output: torch.Tensor | None) -> torch.Tensor:
        """The design matrix from one forward pass's tensors (as `feature_matrix` on `Features`)."""
        if self.source != "features":
            raise InputError("this pseudo-margin was fitted on a raw array, so its inputs cannot be rebuilt from "
                             "a forward pass", "fit it on brittle.extract_features(...) output")
        parts = []
        if self.inputs in ("logits", "both"):
            s = logits.double().sort(dim=1, descending=True).values
            parts.append(s[:, :1] - s[:, 1:])
        if self.inputs in ("layer", "both"):
            if layer_output is None:
                raise InputError(f"the pseudo-margin needs layer {self.layer!r}", "hook that layer")
            parts.append(layer_output.double().reshape(len(layer_output), -1))
        mat = torch.cat([p.cpu() for p in parts], dim=1)
        if mat.shape[1] != self.n_features:
            raise InputError(f"the forward pass gives {mat.shape[1]} features, the pseudo-margin expects {self.n_features}",
                             "use the model the pseudo-margin was fitted on")
        return mat

    # --- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (configuration, standardisation, weights)."""
        self._check_fitted()
        assert self.net is not None
        layers = [{"weight": m.weight.detach().double().tolist(), "bias": m.bias.detach().double().tolist()}
                  for m in self.net if isinstance(m, nn.Linear)]
        return {"format": FORMAT, "version": FORMAT_VERSION, "scorer": self.name, "loss": self.loss, "inputs": self.inputs,
                "hidden": list(self.hidden), "epochs": self.epochs, "lr": self.lr, "weight_decay": self.weight_decay,
                "batch_size": self.batch_size, "censored": self.censored, "seed": self.seed, "source": self.source,
                "layer": self.layer, "n_features": self.n_features, "x_mean": self._x_mean.tolist(),
                "x_std": self._x_std.tolist(), "t_mean": self._t_mean, "t_std": self._t_std, "linear_layers": layers}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PseudoMargin":
        """Rebuild from `to_dict` output."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError("not a brittle pseudo-margin description", "load a file written by PseudoMargin.save")
        if d.get("version") != FORMAT_VERSION:
            raise InputError(f"pseudo-margin format version {d.get('version')!r} is not supported (expected {FORMAT_VERSION})",
                             "re-fit and save it with this version of brittle")
        try:
            pm = cls(d["loss"], inputs=d["inputs"], hidden=d["hidden"], epochs=d["epochs"], lr=d["lr"],
                     weight_decay=d["weight_decay"], batch_size=d["batch_size"], censored=d["censored"], seed=d["seed"])
            pm.source, pm.layer = d["source"], d["layer"]
            if pm.source not in ("features", "array") or not (pm.layer is None or isinstance(pm.layer, str)):
                raise ValueError(f"source {pm.source!r} / layer {pm.layer!r} are not those of a fitted pseudo-margin")
            pm.n_features = check_positive_int(d["n_features"], "n_features")
            pm._x_mean = _check_array(d["x_mean"], "x_mean", pm.n_features)
            pm._x_std = _check_array(d["x_std"], "x_std", pm.n_features)
            if (pm._x_std <= 0).any():
                raise ValueError("x_std has values <= 0")
            pm._t_mean, pm._t_std = float(d["t_mean"]), float(d["t_std"])
            if not (math.isfinite(pm._t_mean) and math.isfinite(pm._t_std) and pm._t_std > 0):
                raise ValueError(f"t_mean / t_std are {pm._t_mean!r} / {pm._t_std!r}")
            # the saved layers are checked against the widths before the network is built: widths written in
            # a small file must not make brittle allocate a network far larger than the weights it holds
            widths = [pm.n_features, *pm.hidden, 1]
            layers = d["linear_layers"]
            if not isinstance(layers, list) or len(layers) != len(widths) - 1:
                raise ValueError("layer count mismatch")
            values = []
            for i, (w, n_in, n_out) in enumerate(zip(layers, widths[:-1], widths[1:])):
                for key, shape in (("weight", (n_out, n_in)), ("bias", (n_out,))):
                    value = torch.as_tensor(np.asarray(w[key], dtype=np.float32))
                    if tuple(value.shape) != shape or not bool(torch.isfinite(value).all()):
                        raise ValueError(f"linear layer {i} {key} has shape {tuple(value.shape)}, expected "
                                         f"{shape} finite values")
                    values.append(value)
            net = _mlp(pm.n_features, pm.hidden)
            with torch.no_grad():
                params = [p for m in net if isinstance(m, nn.Linear) for p in (m.weight, m.bias)]
                for param, value in zip(params, values):
                    param.copy_(value)
        except InputError as exc:  # a setting of the wrong type or value
            raise InputError(f"the pseudo-margin description is corrupt ({exc.problem})",
                             "re-save it with PseudoMargin.save") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"the pseudo-margin description is corrupt ({type(exc).__name__}: {exc})",
                             "re-save it with PseudoMargin.save") from None
        pm.net = net.eval()
        return pm

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted pseudo-margin to a JSON file."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PseudoMargin":
        """Read a pseudo-margin written by `save`."""
        return cls.from_dict(read_json_file(path, "pseudo-margin", "re-save it"))

    def __repr__(self) -> str:
        state = "fitted" if self.net is not None else "unfitted"
        return f"PseudoMargin(loss={self.loss!r}, inputs={self.inputs!r}, hidden={self.hidden}, {state})"


def evaluate_pseudo_margin(pseudo_margin: PseudoMargin, X: Any, input_margin: Any, eps: Any, *,
                           baseline: Any = None, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Kendall τ and detection metrics of the baseline score vs the pseudo-margin on held-out samples.

    ``X`` must be a split the pseudo-margin was *not* fitted on. ``baseline`` defaults to the logit margin
    (from ``X.logits`` when ``X`` is `Features`; required otherwise). One row per (score, ε) with columns
    ``score, eps, kendall_tau, tau_ci_low, tau_ci_high, auroc, aupr, fpr_at_95tpr``.
    """
    pred = pseudo_margin.predict(X)
    d = as_margin_array(input_margin, "input_margin", n=len(pred), min_len=2)
    eps_arr = as_eps_array(eps)
    if baseline is None:
        if not isinstance(X, Features):
            raise InputError("no baseline score for raw-array features", "pass baseline=<logit margins of these samples>")
        baseline = X.logit_margin
    base = as_margin_array(baseline, "baseline", n=len(pred), allow_inf=False, nonnegative=False)
    rows = []
    for name, score in (("logit_margin", base), ("pseudo_margin", pred)):
        corr = margin_correlations(d, score, n_boot=n_boot, seed=seed)
        for det in detection_metrics(d, score, eps_arr):
            rows.append({"score": name, "eps": det.eps, "kendall_tau": corr.kendall.value,
                         "tau_ci_low": corr.kendall.ci_low, "tau_ci_high": corr.kendall.ci_high,
                         "auroc": det.auroc, "aupr": det.aupr, "fpr_at_95tpr": det.fpr_at_95tpr})
    return pd.DataFrame(rows)
