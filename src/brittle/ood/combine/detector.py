"""`CombinedDetector`: several OOD detectors fused by a combination strategy, itself a `Scorer`.

It reads the union of its detectors' layers (one forward pass), scores each detector, orients every column
"higher = more OOD" with the detector's ``risk`` (a margin, ``flag_below = True``, is negated), and hands the
``(N, d)`` matrix to a fitted `Combiner`. Being a `Scorer` with ``flag_below = False``, it works wherever a
detector does: `brittle.monitoring.Monitor`, ``score_tensor`` in the serving pass, JSON round trip.

**Fitting** uses in-distribution data only. ``fit(features, target)`` splits the inputs with ``seed``: detectors
that need fitting are fitted on the first ``1 − val_fraction`` of them, and the strategy on the detectors'
scores of the remaining **validation** part (so the strategy sees scores of inputs the detectors were not fitted
on — in-sample scores of e.g. KNN or Mahalanobis would be optimistic). When no detector needs fitting, the
strategy is fitted on all inputs. `fit_combiner` fits only the strategy, on validation features, for detectors
fitted beforehand.

**Detectors that score through the model** (``needs_model``: ODIN with ``eps > 0``, Mahalanobis with noise) are
scored with their own ``score_model`` by `fit_model` / `score_model` (and ``score_batch`` in the monitor), on the
same inputs as the others; `fit` and `score` on features alone refuse such a combination with that fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ...models.features import Features
from ...scores.base import Scorer, check_features, make_scorer, register, scorer_from_dict
from .base import Combiner, check_score_matrix, combiner_from_dict, make_combiner


def _as_scorer(spec: Any) -> Scorer:
    if isinstance(spec, Scorer):
        return spec
    if isinstance(spec, str):
        return make_scorer(spec)
    if isinstance(spec, dict) and "scorer" in spec:
        return scorer_from_dict(spec)
    raise InputError(f"cannot make a detector from {str(spec)[:60]!r}",
                     "pass detector names, Scorer objects or Scorer.to_dict() dicts")


@register
class CombinedDetector(Scorer):
    """Several detectors fused by one strategy (``"vote"``, ``"ecdf"``, ``"copula"``, ``"ot"``)."""

    name = "combined"
    flag_below = False
    requires_fit = True
    #: built from other detectors: not listed by ``brittle.ood.detector_names("all")``
    composite = True

    def __init__(self, detectors: Sequence[Any] = ("msp",), strategy: str = "ecdf",
                 strategy_params: dict[str, Any] | None = None, val_fraction: float = 0.5, seed: int = 0):
        if isinstance(detectors, (str, Scorer)) or not isinstance(detectors, Sequence) or len(detectors) == 0:
            raise InputError("detectors must be a non-empty list", "pass e.g. detectors=['msp', 'energy']")
        self.detectors = [_as_scorer(d) for d in detectors]
        self.strategy = strategy
        self.strategy_params = dict(strategy_params or {})
        self.combiner: Combiner = make_combiner(strategy, **self.strategy_params)
        if not (0.0 < float(val_fraction) < 1.0):
            raise InputError(f"val_fraction must be in (0, 1), got {val_fraction!r}", "pass e.g. val_fraction=0.5")
        self.val_fraction, self.seed = float(val_fraction), int(seed)

    # --- layers / orientation ---------------------------------------------------------------------
    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(layer for det in self.detectors for layer in det.layers))

    @property
    def needs_model(self) -> bool:  # type: ignore[override]
        return any(det.needs_model for det in self.detectors)

    @property
    def is_fitted(self) -> bool:
        return self.combiner.is_fitted and all(d.is_fitted for d in self.detectors)

    def score_matrix(self, features: Features, model: nn.Module | None = None, data: Any = None,
                     **score_options: Any) -> np.ndarray:
        """``(N, d)``: each detector's score on ``features``, oriented higher = more OOD. Detectors that score
        through the model (``needs_model``: ODIN with ``eps > 0``, Mahalanobis with noise) score ``data`` with
        their ``score_model(model, data)``; without a model they are refused."""
        features = check_features(features)
        if model is None:
            self._refuse_without_model()
        cols = []
        for det in self.detectors:
            if det.needs_model:
                s = det.score_model(model, data, **score_options)
            else:
                s = det.score(features.select(det.layers))
            cols.append(det.risk(s))
        return np.column_stack(cols)

    def _refuse_without_model(self) -> None:
        need = [det for det in self.detectors if det.needs_model]
        if need:
            raise InputError(f"{need[0]!r} in this combination scores through the model (input preprocessing), "
                             "so the combination cannot be fitted or scored from features alone",
                             "use fit_model(model, data) and score_model(model, data) (or score_batch in a monitor)")

    def bind(self, model: nn.Module) -> "CombinedDetector":
        """Bind every detector that reads the model's structure (penultimate layer, head)."""
        for det in self.detectors:
            if hasattr(det, "bind"):
                det.bind(model)
        return self

    def prepare_fit(self, model: nn.Module, data: Any, target: Any = None) -> "CombinedDetector":
        """Model-level preparation of the detectors that need it (GROOD's early-layer mix-up)."""
        for det in self.detectors:
            if hasattr(det, "prepare_fit"):
                det.prepare_fit(model, data, target)
        return self

    def fit_model(self, model: nn.Module, data: Any, target: Any = None, **extract_options: Any) -> "CombinedDetector":
        """`bind`, `prepare_fit`, then `fit` on the features of ``data`` (its labels when ``target`` is None);
        detectors that score through the model score their part of ``data`` with it."""
        from ...data.loading import as_data

        d = as_data(data)
        if target is None and d.y is not None:
            target = d.y.numpy()
        self.bind(model).prepare_fit(model, d, target)
        return self._fit(self.extract(model, d, **extract_options), target, model, d, extract_options)

    # --- fitting --------------------------------------------------------------------------------------
    def fit(self, features: Features, target: Any = None) -> "CombinedDetector":
        return self._fit(features, target)

    def _fit(self, features: Features, target: Any, model: nn.Module | None = None, data: Any = None,
             options: dict[str, Any] | None = None) -> "CombinedDetector":
        features = check_features(features)
        if model is None:
            self._refuse_without_model()
        n = len(features)
        must_fit = [d for d in self.detectors if d.requires_fit]
        if must_fit:
            if n < 4:
                raise InputError(f"{n} inputs cannot be split into a detector-fit and a validation part",
                                 "pass at least 4 in-distribution inputs")
            perm = np.random.default_rng(self.seed).permutation(n)
            n_val = min(n - 2, max(2, int(round(self.val_fraction * n))))
            fit_idx, val_idx = np.sort(perm[n_val:]), np.sort(perm[:n_val])
            fit_target = None if target is None else np.asarray(target)[fit_idx]
            for det in must_fit:
                det.fit(features.subset(fit_idx).select(det.layers), fit_target)
            val = features.subset(val_idx)
            val_data = None if data is None else data.subset(val_idx)
        else:
            val, val_data = features, data
        self.fit_combiner(val, model, val_data, **(options or {}))
        self.remember_fit_shapes(features)
        return self

    def fit_combiner(self, val_features: Features, model: nn.Module | None = None, data: Any = None,
                     **score_options: Any) -> "CombinedDetector":
        """Fit only the strategy, on the (already fitted) detectors' scores of ID validation features (and, for
        detectors that score through the model, of the same inputs ``data`` under ``model``)."""
        for det in self.detectors:
            det.check_fitted()
        self.combiner.fit(self.score_matrix(val_features, model, data, **score_options))
        return self

    # --- scoring ----------------------------------------------------------------------------------
    def score(self, features: Features) -> np.ndarray:
        self.check_fitted()
        return self.combiner.score(self.score_matrix(self.check_score_features(features)))

    def score_model(self, model: nn.Module, data: Any, **extract_options: Any) -> np.ndarray:
        """Scores of every input of ``data`` under ``model`` (one forward pass for the feature-based detectors,
        ``score_model`` for those that score through the model)."""
        from ...data.loading import as_data

        self.check_fitted()
        d = as_data(data)
        features = self.check_score_features(self.extract(model, d, **extract_options))
        return self.combiner.score(self.score_matrix(features, model, d, **extract_options))

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_fitted()
        cols = []
        for det in self.detectors:
            s = det.score_tensor(logits, {k: outputs[k] for k in det.layers})
            cols.append(det.risk(s.detach().double().cpu().numpy()))
        out = self.combiner.score(np.column_stack(cols))
        return torch.as_tensor(out, dtype=torch.float64, device=logits.device)

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        self.check_fitted()
        cols = []
        for det in self.detectors:
            if det.needs_model:
                s = det.score_batch(model, x)
            else:
                from ...models.features import capture_many, resolve_layer
                with capture_many({name: resolve_layer(model, name) for name in det.layers}) as held, torch.no_grad():
                    logits = model(x)
                s = det.score_tensor(logits, {k: held[k] for k in det.layers})
            cols.append(det.risk(s.detach().double().cpu().numpy()))
        return torch.as_tensor(self.combiner.score(np.column_stack(cols)), dtype=torch.float64, device=x.device)

    def threshold(self, tpr: float = 0.95) -> float:
        """Combined score accepting ``tpr`` of the ID validation inputs (flag ``score > t``)."""
        return self.combiner.threshold(tpr)

    # --- persistence --------------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {"detectors": [{"scorer": d.name, "params": d.get_params()} for d in self.detectors],
                "strategy": self.strategy, "strategy_params": self.strategy_params,
                "val_fraction": self.val_fraction, "seed": self.seed}

    def get_state(self) -> dict[str, Any]:
        if not self.combiner.is_fitted:
            return {}
        return {"detectors": [d.to_dict() for d in self.detectors], "combiner": self.combiner.to_dict()}

    def set_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.detectors = [scorer_from_dict(d) for d in state["detectors"]]
        self.combiner = combiner_from_dict(state["combiner"])


def combine_scores(scores_id_val: Any, strategy: str = "ecdf", **params: Any) -> Combiner:
    """Fit a strategy on an ID validation score matrix ``(N, d)`` (columns oriented higher = more OOD)."""
    return make_combiner(strategy, **params).fit(check_score_matrix(scores_id_val, "scores_id_val"))
