"""The OOD detector base: a `brittle.scores.base.Scorer` with ``flag_below = False`` (higher = more OOD),
plus what several detectors share — finding the final linear layer and the penultimate layer of a model,
per-class statistics, labels, and compact JSON encoding of fitted arrays.

**Which layer, which head.** Feature-based detectors (Mahalanobis, RMD, KNN, ViM, GradNorm, SHE, and the
activation modifiers ReAct / ASH / SCALE / DICE) read the *penultimate* features ``h``: the input of the
model's final linear layer, so that ``logits = W h + b``. brittle finds them as follows (`find_head`,
`penultimate_layer`):

* the **head** is the last ``nn.Linear`` in ``model.named_modules()`` order (``head=`` names another);
* the **penultimate layer** is the module just before the head in its ``nn.Sequential`` parent (for the zoo's
  ``mnist_cnn``: head ``"7"``, penultimate ``"6"``, the ReLU after the 100-unit dense layer). For other
  architectures pass ``layer=`` — the module whose output is the head's input.
* Detectors that use ``W`` and ``b`` (ViM, ReAct, ASH, SCALE, DICE) **validate** the pair at fit time: the
  logits rebuilt as ``h Wᵀ + b`` must equal the model's logits (max deviation ≤ 1e-3·(1 + max|logit|)),
  otherwise `InputError` says which layer to pass.

``bind(model)`` resolves both (``fit_model`` calls it); ``set_head(W, b)`` sets the head without a model.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import InputError, ModelError
from ..models.features import Features
from ..scores.base import Scorer, check_features

# --------------------------------------------------------------------------------------------
# model structure
# --------------------------------------------------------------------------------------------


def find_head(model: nn.Module, head: str | None = None) -> tuple[str, nn.Linear]:
    """``(name, module)`` of the final linear layer: ``head`` when given, else the last ``nn.Linear``."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}", "pass the classifier")
    modules = dict(model.named_modules())
    if head is not None:
        if head not in modules or not isinstance(modules[head], nn.Linear):
            raise InputError(f"head {head!r} is not an nn.Linear of the model",
                             "pass head= the name of the final linear layer (see brittle.models.layer_names)")
        return head, modules[head]
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("the model has no nn.Linear layer, so its final linear layer cannot be found",
                         "use a detector that reads only the logits (msp, energy, ...) or pass head=/layer=")
    return linears[-1]


def penultimate_layer(model: nn.Module, head: str | None = None) -> str:
    """Name of the module whose output feeds the final linear layer (the one before it in its
    ``nn.Sequential`` parent); `ModelError` when the structure does not say."""
    head_name, _ = find_head(model, head)
    parent_name, _, child = head_name.rpartition(".")
    parent = dict(model.named_modules())[parent_name] if parent_name else model
    if isinstance(parent, nn.Sequential):
        names = [n for n, _ in parent.named_children()]
        i = names.index(child)
        if i > 0:
            return f"{parent_name}.{names[i - 1]}" if parent_name else names[i - 1]
    raise ModelError(f"cannot tell which module feeds the final linear layer {head_name!r} "
                     "(it is not preceded by a module in an nn.Sequential)",
                     "pass layer= the name of the module whose output is the final linear layer's input")


# --------------------------------------------------------------------------------------------
# arrays in JSON
# --------------------------------------------------------------------------------------------


def encode_array(a: Any) -> dict[str, Any]:
    """An array as JSON: dtype, shape and base64 of its little-endian bytes (exact, compact, no pickle)."""
    arr = np.ascontiguousarray(np.asarray(a))
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    if dtype.kind not in "fiub":
        raise InputError(f"cannot store an array of dtype {arr.dtype}", "store numbers only")
    return {"dtype": dtype.str, "shape": list(arr.shape),
            "data": base64.b64encode(arr.astype(dtype).tobytes()).decode("ascii")}


def decode_array(d: Any) -> np.ndarray:
    """Inverse of `encode_array` (validated)."""
    try:
        dtype = np.dtype(d["dtype"])
        if dtype.kind not in "fiub":
            raise ValueError(f"dtype {dtype}")
        raw = base64.b64decode(d["data"], validate=True)
        return np.frombuffer(raw, dtype=dtype).reshape([int(s) for s in d["shape"]]).copy()
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"a stored array is corrupt ({type(exc).__name__}: {exc})",
                         "re-fit the detector and save it again") from None


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def as_labels(target: Any, n: int, num_classes: int, logits: np.ndarray) -> np.ndarray:
    """Class labels for class-conditional statistics: ``target`` (validated) or, when None, the predicted
    classes (``argmax`` of the logits)."""
    if target is None:
        return np.asarray(logits).argmax(1)
    if hasattr(target, "detach"):
        target = target.detach().cpu().numpy()
    y = np.asarray(target)
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"target has shape {y.shape}, expected ({n},) labels", "pass one class label per input")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise InputError(f"target has dtype {y.dtype}, expected integer labels", "pass integer class labels")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise InputError(f"labels must lie in [0, {num_classes - 1}], got [{y.min()}, {y.max()}]",
                         "pass the class labels of the fit data")
    return y.astype(np.int64)


def layer_matrix(features: Features, layer: str) -> np.ndarray:
    """The ``(N, D)`` float64 output of ``layer``, validated finite."""
    h = np.asarray(features.output(layer), dtype=np.float64).reshape(len(features), -1)
    if not np.isfinite(h).all():
        raise InputError(f"the output of layer {layer!r} contains NaN or infinite values",
                         "check the model and the inputs")
    return h


def t64(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A numpy array as a float64 tensor on ``like``'s device."""
    return torch.as_tensor(a, dtype=torch.float64, device=like.device)


# --------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------


class OODDetector(Scorer):
    """Base of brittle's OOD detectors: higher score = more out-of-distribution (``flag_below = False``).

    Class attributes say what a detector needs: ``uses_layer`` (the penultimate features, or ``layer=``),
    ``uses_head`` (the final linear layer's ``W``, ``b``), ``min_fit_inputs`` / ``min_fit_classes`` (what a fit
    set must hold, checked by `check_fit_data`). ``bind(model)`` resolves the layer and head from a model.
    ``fit`` records the class count and layer widths that ``score`` then checks (`Scorer.check_score_features`).
    Subclasses implement ``_fit(features, target)`` (when ``requires_fit``), ``score_tensor`` and
    ``_params`` / ``_state`` / ``_set_state`` for persistence.
    """

    flag_below: ClassVar[bool] = False
    uses_layer: ClassVar[bool] = False
    uses_head: ClassVar[bool] = False
    #: fewest fit inputs ``fit`` accepts (2 where a covariance or a spread is estimated)
    min_fit_inputs: ClassVar[int] = 1
    #: fewest classes among the fit labels ``fit`` accepts (2 where scores are relative to other classes)
    min_fit_classes: ClassVar[int] = 1
    #: short paper reference, shown in reports
    paper: ClassVar[str] = ""

    def __init__(self, layer: str | None = None, head: str | None = None):
        if layer is not None and (not isinstance(layer, str) or not layer):
            raise InputError(f"layer must be a layer name, got {layer!r}", "pass a name from brittle.models.layer_names(model)")
        if head is not None and (not isinstance(head, str) or not head):
            raise InputError(f"head must be a layer name, got {head!r}", "pass the final nn.Linear's name")
        self.layer = layer
        self.head = head
        self.head_weight_: np.ndarray | None = None
        self.head_bias_: np.ndarray | None = None
        self._fitted = False

    @classmethod
    def param_names(cls) -> list[str]:
        """Constructor arguments, without the base's ``layer`` / ``head`` for detectors that read neither."""
        drop = {n for n, used in (("layer", cls.uses_layer), ("head", cls.uses_head)) if not used}
        return [n for n in super().param_names() if n not in drop]

    # --- structure ------------------------------------------------------------------------------
    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,) if self.uses_layer and self.layer is not None else ()

    def bind(self, model: nn.Module) -> OODDetector:
        """Resolve the penultimate layer and the final linear layer from ``model`` (no-op for detectors that
        read only the logits). Returns ``self``."""
        if self.uses_layer and self.layer is None:
            self.layer = penultimate_layer(model, self.head)
        if self.uses_head:
            name, lin = find_head(model, self.head)
            self.head = name
            w = lin.weight.detach().double().cpu().numpy()
            b = (lin.bias.detach().double().cpu().numpy() if lin.bias is not None else np.zeros(w.shape[0]))
            self.set_head(w, b)
        return self

    def set_head(self, weight: Any, bias: Any) -> OODDetector:
        """Set the final linear layer ``logits = h Wᵀ + b`` by value (``W``: (C, D), ``b``: (C,))."""
        w = np.asarray(weight, dtype=np.float64)
        b = np.asarray(bias, dtype=np.float64).reshape(-1)
        if w.ndim != 2 or b.shape != (w.shape[0],) or not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise InputError(f"head weight {w.shape} / bias {b.shape} do not form a finite linear layer (C, D) / (C,)",
                             "pass the final nn.Linear's weight and bias")
        self.head_weight_, self.head_bias_ = w, b
        return self

    def _require_layer(self) -> str:
        if self.layer is None:
            raise InputError(f"{type(self).__name__} reads a hidden layer but none is set",
                             "pass layer='NAME' (the module feeding the final linear layer), or call "
                             "bind(model) / fit_model(model, data) first")
        return self.layer

    def _check_head(self, features: Features) -> np.ndarray:
        """Penultimate features, checked to rebuild the logits through the head."""
        layer = self._require_layer()
        if self.head_weight_ is None:
            raise InputError(f"{type(self).__name__} needs the final linear layer",
                             "call bind(model) (or set_head(W, b)) first, or use fit_model(model, data)")
        h = layer_matrix(features, layer)
        w, b = self.head_weight_, self.head_bias_
        if h.shape[1] != w.shape[1] or w.shape[0] != features.logits.shape[1]:
            raise InputError(f"layer {layer!r} has {h.shape[1]} features and {features.logits.shape[1]} logits, "
                             f"the head maps {w.shape[1]} → {w.shape[0]}",
                             "pass layer= the module whose output is the final linear layer's input")
        z = np.asarray(features.logits, dtype=np.float64)
        dev = float(np.max(np.abs(h @ w.T + b - z)))
        if dev > 1e-3 * (1.0 + float(np.max(np.abs(z)))):
            raise InputError(f"layer {layer!r} does not feed the final linear layer {self.head!r}: h·Wᵀ + b differs "
                             f"from the logits by up to {dev:.3g}",
                             "pass layer= the module whose output is the final linear layer's input (for an "
                             "nn.Sequential: the module just before it)")
        return h

    # --- fitting ----------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self._fitted or not self.requires_fit

    def check_fit_data(self, n: int, labels: Any = None) -> None:
        """`InputError` when ``n`` fit inputs with class ``labels`` (None: not known yet) make this detector
        degenerate (``min_fit_inputs``, ``min_fit_classes``). `fit` calls it; so do `brittle.ood.run.run_ood` and
        `brittle.ood.Benchmark.evaluate` before any detector runs."""
        name = type(self).__name__
        if n < self.min_fit_inputs:
            raise InputError(f"{name} needs at least {self.min_fit_inputs} fit inputs, got {n} (its covariance / "
                             "spread would be zero and every score meaningless)",
                             "fit on more in-distribution inputs")
        if self.min_fit_classes > 1 and labels is not None:
            present = np.unique(np.asarray(labels))
            if len(present) < self.min_fit_classes:
                which = f"only class {present[0]}" if len(present) else "no class"
                raise InputError(f"{name} needs fit inputs of at least {self.min_fit_classes} classes, the fit labels "
                                 f"hold {which}",
                                 f"fit on in-distribution data of several classes, or drop {self.name} (for one-class "
                                 "data use e.g. mahalanobis or knn)")

    def fit(self, features: Features, target: Any = None) -> OODDetector:
        """Learn from in-distribution features (``target``: class labels where a detector is class-conditional;
        None = the predicted classes)."""
        features = check_features(features)
        labels = None
        if self.min_fit_classes > 1:
            labels = as_labels(target, len(features), features.logits.shape[1], features.logits)
        self.check_fit_data(len(features), labels)
        self._fit(features, target)
        self._fitted = True
        self.remember_fit_shapes(features)
        return self

    def _fit(self, features: Features, target: Any) -> None:
        if self.uses_head:
            self._check_head(features)

    def fit_model(self, model: nn.Module, data: Any, target: Any = None, **extract_options: Any) -> OODDetector:
        """`bind` to ``model``, then fit on the features of ``data`` (labels of ``data`` used when ``target`` is None
        and the data has them)."""
        from ..data.loading import as_data

        self.bind(model)
        d = as_data(data)
        if target is None and d.y is not None:
            target = d.y.numpy()
        return self.fit(self.extract(model, d, **extract_options), target)

    # --- persistence --------------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {}

    def _state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        pass

    def get_params(self) -> dict[str, Any]:
        p = dict(self._params())
        if self.uses_layer:
            p["layer"] = self.layer
        if self.uses_head:
            p["head"] = self.head
        return p

    def get_state(self) -> dict[str, Any]:
        s: dict[str, Any] = {"fitted": bool(self._fitted)}
        if self.uses_head and self.head_weight_ is not None:
            s["head_weight"] = encode_array(self.head_weight_)
            s["head_bias"] = encode_array(self.head_bias_)
        if self._fitted:
            s.update(self._state())
        return s

    def set_state(self, state: dict[str, Any]) -> None:
        if "head_weight" in state:
            self.set_head(decode_array(state["head_weight"]), decode_array(state["head_bias"]))
        if state.get("fitted"):
            try:
                self._set_state(state)
            except KeyError as exc:
                raise InputError(f"the stored {type(self).__name__} lacks {exc}", "re-fit and save it again") from None
            self._fitted = True


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    if value not in choices:
        raise InputError(f"{name} must be one of {list(choices)}, got {value!r}", f"pass {name}={choices[0]!r}")
    return value


def check_positive(value: Any, name: str, *, allow_zero: bool = False, integer: bool = False) -> Any:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0) and (not integer or float(value) == int(value))
    if not ok:
        what = "an integer" if integer else "a finite number"
        raise InputError(f"{name} must be {what} {'>= 0' if allow_zero else '> 0'}, got {value!r}",
                         f"pass a valid {name}")
    return int(value) if integer else float(value)


def check_percentile(value: Any, name: str = "percentile") -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and 0 <= value < 100
    if not ok:
        raise InputError(f"{name} must be a number in [0, 100), got {value!r}", f"pass e.g. {name}=90")
    return float(value)
