"""The `Scorer` base: one score per input, computed from what a forward pass gives (logits and hooked layers).

Every per-input score in brittle — the logit margin, the learned pseudo-margin, and the OOD detectors — is a
`Scorer`. The contract, in the spirit of pytorch-ood's ``fit_features`` / ``predict_features`` and
scikit-learn's estimators:

* parameters are set in ``__init__`` and validated there; ``fit`` learns the fitted attributes (names ending
  in ``_``) and returns ``self``; ``requires_fit`` says whether ``fit`` must run before scoring;
* ``layers`` names the hidden layers the scorer reads (``()`` = logits only). Features of several scorers on
  the same data come from one forward pass: extract the union of their layers once with
  `brittle.models.extract_features` and hand each scorer the same `Features`;
* ``score(features)`` returns a float64 array of shape ``(N,)``; ``score_tensor(logits, outputs)`` computes the
  same in the serving forward pass (used by `brittle.monitoring.Monitor`). ``score`` checks its features in one
  place (`Scorer.check_score_features`): finite logits and layer outputs, and — for a scorer that recorded them
  at fit time (`Scorer.remember_fit_shapes`) — the same number of classes and the same width of every layer it
  reads as at fit time;
* unknown constructor arguments are refused by name (`make_scorer`, `scorer_from_dict`: ``param_names``);
* **orientation** is declared once per class by ``flag_below``: margins are *low* on the inputs they flag
  (``flag_below = True``: a small margin is a brittle decision), detectors are *high* on the inputs they flag
  (``flag_below = False``: a high OOD score is an out-of-distribution input). `risk` turns either into
  "higher = flag", which is what thresholds, AUROC and the monitor use;
* ``to_dict`` / `scorer_from_dict` round-trip a fitted scorer through plain JSON (never pickle), the widths
  recorded at fit time (``fit_shapes``) included.

Scorers that need more than a forward pass (input gradients, input preprocessing) set ``needs_model = True``
and override `score_model` / `score_batch`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..core.registry import check_params, import_builtins, init_param_names, lookup, lookup_description
from ..errors import InputError
from ..models.features import Features, extract_features

#: name → scorer class; filled by `register` (a new scorer is a new module plus one `@register`).
SCORERS: dict[str, type["Scorer"]] = {}


def register(cls: type["Scorer"]) -> type["Scorer"]:
    """Class decorator adding a scorer to `SCORERS` under ``cls.name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    SCORERS[cls.name] = cls
    return cls


class Scorer:
    """Base class of per-input scores (see the module docstring for the contract)."""

    #: registry name, e.g. ``"logit_margin"``
    name: ClassVar[str] = ""
    #: True when the scorer flags *low* scores (margins), False when it flags *high* ones (OOD detectors)
    flag_below: ClassVar[bool] = True
    #: True when `fit` must run before `score`
    requires_fit: ClassVar[bool] = False
    #: True when scoring needs the model itself (gradients, input preprocessing), not only forward outputs
    needs_model: ClassVar[bool] = False

    # --- what to extract ----------------------------------------------------------------------
    @property
    def layers(self) -> tuple[str, ...]:
        """Hidden layers this scorer reads (names of ``model.named_modules()``); empty = logits only."""
        return ()

    # --- fitting --------------------------------------------------------------------------------
    def fit(self, features: Features, target: Any = None) -> "Scorer":
        """Learn the fitted attributes from in-distribution features (and ``target`` where the scorer is
        supervised, e.g. input margins). Scorers without state return ``self`` unchanged."""
        return self

    @property
    def is_fitted(self) -> bool:
        return True

    def check_fitted(self) -> None:
        if self.requires_fit and not self.is_fitted:
            name = type(self).__name__
            raise InputError(f"this {name} is not fitted yet", f"call {name}.fit(features) first, or load a fitted one")

    def remember_fit_shapes(self, features: Features) -> None:
        """Record what `check_score_features` compares at score time: the number of classes of the logits and
        the width of every layer this scorer reads (fitted detectors call it at the end of ``fit``)."""
        self.fit_shapes_: dict[str, int] = {"logits": int(np.shape(features.logits)[1]),
                                            **{name: _width(features.output(name)) for name in self.layers}}

    def check_score_features(self, features: Any) -> Features:
        """``features`` validated for scoring (`InputError` otherwise): `check_features`, every layer this scorer
        reads present with one finite row per input, and the class count / layer widths of fit time."""
        features = check_features(features)
        shapes = getattr(self, "fit_shapes_", None) or {}
        name = type(self).__name__
        classes = int(features.logits.shape[1])
        if "logits" in shapes and classes != shapes["logits"]:
            raise InputError(f"the logits have {classes} classes, {name} was fitted on {shapes['logits']}",
                             "score features of the model it was fitted on (the same classes)")
        for layer in self.layers:
            out = np.asarray(features.output(layer))
            if len(out) != len(features):
                raise InputError(f"layer {layer!r} has {len(out)} rows but the logits have {len(features)}",
                                 "pass the features of one forward pass (extract_features)")
            width = _width(out)
            if layer in shapes and width != shapes[layer]:
                raise InputError(f"layer {layer!r} has {width} features, {name} was fitted on {shapes[layer]}",
                                 "score features of the layer (and model) it was fitted on")
            if not np.isfinite(out).all():
                raise InputError(f"the output of layer {layer!r} contains NaN or infinite values",
                                 "check the model and the inputs")
        return features

    # --- scoring --------------------------------------------------------------------------------
    def score(self, features: Features) -> np.ndarray:
        """Score of every input, float64 of shape ``(N,)`` (orientation: see ``flag_below``)."""
        self.check_fitted()
        features = self.check_score_features(features)
        logits = torch.from_numpy(np.ascontiguousarray(features.logits, dtype=np.float32))
        outputs = {name: torch.from_numpy(np.ascontiguousarray(features.output(name), dtype=np.float32))
                   for name in self.layers}
        with torch.no_grad():
            return self.score_tensor(logits, outputs).double().cpu().numpy()

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The score of a batch from its logits and hooked layer outputs (on their device)."""
        raise NotImplementedError(f"{type(self).__name__} does not score from forward outputs alone")

    def risk(self, scores: np.ndarray) -> np.ndarray:
        """Scores oriented so that higher = flagged (``-score`` for margins, ``score`` for detectors)."""
        s = np.asarray(scores, dtype=np.float64)
        return -s if self.flag_below else s

    # --- model-level conveniences ----------------------------------------------------------------
    def extract(self, model: nn.Module, data: Any, *, batch_size: int = 512,
                device: str | torch.device | None = "auto") -> Features:
        """The features this scorer needs, from one forward pass over ``data``."""
        return extract_features(model, data, list(self.layers) or None, batch_size=batch_size, device=device)

    def fit_model(self, model: nn.Module, data: Any, target: Any = None, **extract_options: Any) -> "Scorer":
        """`fit` on the features of ``data`` under ``model``."""
        return self.fit(self.extract(model, data, **extract_options), target)

    def score_model(self, model: nn.Module, data: Any, **extract_options: Any) -> np.ndarray:
        """`score` of the features of ``data`` under ``model``."""
        return self.score(self.extract(model, data, **extract_options))

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Score of one batch for scorers with ``needs_model`` (the monitor calls this instead of
        `score_tensor`); the default runs one forward pass with hooks."""
        raise NotImplementedError(f"{type(self).__name__} scores from forward outputs; use score_tensor")

    # --- persistence --------------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """The keyword arguments the constructor takes (what `make_scorer` and `from_dict` accept)."""
        return init_param_names(cls)

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-able)."""
        return {}

    def get_state(self) -> dict[str, Any]:
        """Fitted attributes as JSON-able values (lists of numbers); empty for stateless scorers."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what `get_state` wrote."""

    def to_dict(self) -> dict[str, Any]:
        d = {"scorer": self.name, "params": self.get_params(), "state": self.get_state()}
        if getattr(self, "fit_shapes_", None):
            d["fit_shapes"] = dict(self.fit_shapes_)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scorer":
        """Rebuild from `to_dict` output."""
        params = d.get("params") or {}
        check_params(cls.name, params, cls.param_names())
        scorer = cls(**params)
        scorer.set_state(d.get("state") or {})
        if d.get("fit_shapes"):
            try:
                scorer.fit_shapes_ = {str(k): int(v) for k, v in dict(d["fit_shapes"]).items()}
            except (TypeError, ValueError):
                raise InputError(f"the stored {cls.__name__} has corrupt fit_shapes", "re-fit and save it again") from None
        return scorer

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def check_features(features: Any) -> Features:
    """``features`` as `Features` with 2-D finite logits, or `InputError`."""
    if not isinstance(features, Features):
        raise InputError(f"expected Features (from brittle.models.extract_features), got {type(features).__name__}",
                         "pass extract_features(model, data, layers) output, or use score_model(model, data)")
    logits = np.asarray(features.logits)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise InputError(f"logits have shape {logits.shape}: expected (N, num_classes >= 2)",
                         "extract features from a classifier")
    if len(logits) == 0:
        raise InputError("the features hold no input", "pass at least one input")
    if not np.isfinite(logits).all():
        raise InputError("the logits contain NaN or infinite values", "check the model and the inputs")
    return features


def _width(a: Any) -> int:
    """Features per input of an ``(N, ...)`` layer output."""
    return int(np.prod(np.shape(a)[1:], dtype=np.int64))


def make_scorer(name: str, **params: Any) -> Scorer:
    """A scorer by registry name, e.g. ``make_scorer("logit_margin")``; an unknown parameter is an `InputError`."""
    _load_builtin()
    cls = lookup(SCORERS, name, "scorer")
    check_params(name, params, cls.param_names())
    return cls(**params)


def scorer_from_dict(d: dict[str, Any]) -> Scorer:
    """Rebuild a scorer written by ``to_dict`` (validated; never unpickles)."""
    _load_builtin()
    return lookup_description(SCORERS, d, "scorer", "scorer", "pass Scorer.to_dict() output").from_dict(d)


def _load_builtin() -> None:
    """Import the modules that register built-in scorers (lazily, to keep ``import brittle`` light)."""
    import_builtins(BUILTIN_MODULES, __package__)


#: modules whose import registers scorers; OOD detectors add theirs here.
BUILTIN_MODULES: list[str] = [".logit_margin", ".pseudo_margin", "brittle.ood._builtin"]
