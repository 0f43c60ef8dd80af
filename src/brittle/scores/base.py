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
  same in the serving forward pass (used by `brittle.monitoring.Monitor`);
* **orientation** is declared once per class by ``flag_below``: margins are *low* on the inputs they flag
  (``flag_below = True``: a small margin is a brittle decision), detectors are *high* on the inputs they flag
  (``flag_below = False``: a high OOD score is an out-of-distribution input). `risk` turns either into
  "higher = flag", which is what thresholds, AUROC and the monitor use;
* ``to_dict`` / `scorer_from_dict` round-trip a fitted scorer through plain JSON (never pickle).

Scorers that need more than a forward pass (input gradients, input preprocessing) set ``needs_model = True``
and override `score_model` / `score_batch`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..core.registry import import_builtins, lookup, lookup_description
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

    # --- scoring --------------------------------------------------------------------------------
    def score(self, features: Features) -> np.ndarray:
        """Score of every input, float64 of shape ``(N,)`` (orientation: see ``flag_below``)."""
        self.check_fitted()
        features = check_features(features)
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
    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-able)."""
        return {}

    def get_state(self) -> dict[str, Any]:
        """Fitted attributes as JSON-able values (lists of numbers); empty for stateless scorers."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what `get_state` wrote."""

    def to_dict(self) -> dict[str, Any]:
        return {"scorer": self.name, "params": self.get_params(), "state": self.get_state()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scorer":
        """Rebuild from `to_dict` output."""
        scorer = cls(**(d.get("params") or {}))
        scorer.set_state(d.get("state") or {})
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


def make_scorer(name: str, **params: Any) -> Scorer:
    """A scorer by registry name, e.g. ``make_scorer("logit_margin")``."""
    _load_builtin()
    return lookup(SCORERS, name, "scorer")(**params)


def scorer_from_dict(d: dict[str, Any]) -> Scorer:
    """Rebuild a scorer written by ``to_dict`` (validated; never unpickles)."""
    _load_builtin()
    return lookup_description(SCORERS, d, "scorer", "scorer", "pass Scorer.to_dict() output").from_dict(d)


def _load_builtin() -> None:
    """Import the modules that register built-in scorers (lazily, to keep ``import brittle`` light)."""
    import_builtins(BUILTIN_MODULES, __package__)


#: modules whose import registers scorers; OOD detectors add theirs here.
BUILTIN_MODULES: list[str] = [".logit_margin", ".pseudo_margin", "brittle.ood._builtin"]
