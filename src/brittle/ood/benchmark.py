"""Offline OOD benchmark: ID fit / validation / test splits, named OOD test sets, ``evaluate(model, detectors)``.

The pytorch-ood style entry points: `Benchmark.train_set` (what detectors are fitted on), `Benchmark.val_set`
(ID data neither fitted on nor tested on — for calibrating thresholds and for combining detectors),
`Benchmark.test_sets` (``"id"`` plus every OOD set) and `Benchmark.evaluate`.

`Benchmark.mnist` — ID = MNIST. brittle ships only the MNIST *test* split, so by default it is cut in three,
in file order: images 0–3,999 **fit**, 4,000–4,999 **val**, 5,000–9,999 **test**. With ``root=`` (or
``BRITTLE_DATA_ROOT``) holding the MNIST train split, fit = train 0–54,999, val = train 55,000–59,999 and test =
the whole test split. OOD sets: `brittle.data.ood_sets` (Fashion-MNIST and the seeded generated sets; the
transformed sets transform the ID *test* images).

`Benchmark.from_data` — any ID data (split as above, 40% / 10% / 50% in order, or pass the three parts) and
any named OOD data. Features of every set come from one forward pass for all detectors (`FeatureCache`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from ..analysis.detection import ood_metrics
from ..data.loading import Data, as_data
from ..errors import InputError
from ..scores.base import Scorer
from .cache import FeatureCache, layers_of
from .registry import detector_names, make_detector

ID_SETS = ("id_fit", "id_val", "id_test")


def split_id(data: Any, fractions: tuple[float, float] = (0.4, 0.1)) -> tuple[Data, Data, Data]:
    """``(fit, val, test)``: the first 40%, the next 10% and the remaining 50% of ``data`` (file order)."""
    d = as_data(data)
    n = len(d)
    a, b = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    if a < 2 or b - a < 1 or n - b < 1:
        raise InputError(f"{n} ID inputs are too few to split into fit / val / test", "pass at least 20 ID inputs")
    return d.subset(slice(0, a)), d.subset(slice(a, b)), d.subset(slice(b, n))


def as_detectors(detectors: Any) -> list[Scorer]:
    """Detector instances from ``"all"``, a comma-separated string, names or instances."""
    if isinstance(detectors, Scorer):
        return [detectors]
    if isinstance(detectors, str):
        return [make_detector(n) for n in detector_names(detectors)]
    out = []
    for d in detectors:
        out.extend([d] if isinstance(d, Scorer) else [make_detector(n) for n in detector_names(d)])
    if not out:
        raise InputError("no detector given", "pass detectors='all' or a list of names")
    return out


def detector_label(det: Scorer) -> str:
    """The label of one detector on its own: its ``label`` attribute when set, else its registry name."""
    return getattr(det, "label", None) or det.name


def _param_text(value: Any) -> str:
    if isinstance(value, dict) and "scorer" in value:  # a wrapped detector's description
        inner = ", ".join(f"{k}={_param_text(v)}" for k, v in (value.get("params") or {}).items())
        return f"{value['scorer']}({inner})" if inner else str(value["scorer"])
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_param_text(v) for v in value) + "]"
    return str(value) if isinstance(value, str) else repr(value)


def detector_labels(detectors: Sequence[Scorer]) -> list[str]:
    """One distinct label per detector (the keys of `Benchmark.evaluate`'s results and `run_ood`'s store): the
    plain `detector_label` where it is unique, else the name with the parameters that differ among the
    detectors sharing it, e.g. ``vim(dim=10)`` and ``vim(dim=60)``. Two detectors equal in name and parameters
    are an `InputError` (their results would overwrite each other)."""
    import json

    base = [detector_label(d) for d in detectors]
    params = [d.get_params() for d in detectors]
    labels = list(base)
    for label in dict.fromkeys(base):
        group = [i for i, b in enumerate(base) if b == label]
        if len(group) < 2:
            continue
        keys = list(dict.fromkeys(k for i in group for k in params[i]))
        text = {i: {k: json.dumps(params[i].get(k), sort_keys=True, default=str) for k in keys} for i in group}
        differ = [k for k in keys if len({text[i][k] for i in group}) > 1]
        if not differ:
            continue  # identical detectors: refused below
        for i in group:
            inner = ", ".join(f"{k}={_param_text(params[i].get(k))}" for k in differ)
            labels[i] = f"{label}({inner})"
    seen: dict[str, int] = {}
    for i, lab in enumerate(labels):
        if lab in seen:
            raise InputError(f"detectors {seen[lab] + 1} and {i + 1} are both {lab!r} with the same parameters, so "
                             "their results would overwrite each other",
                             "pass each detector once (or give one a different label: det.label = 'NAME')")
        seen[lab] = i
    return labels


@dataclass
class BenchmarkResult:
    """What `Benchmark.evaluate` returns.

    ``table``: one row per (detector, OOD set) with ``auroc, aupr_in, aupr_out, fpr_at_tpr, detection_error,
    threshold, n_id, n_ood``; ``scores[detector][set]``: per-input scores for ``id_val``, ``id_test`` and each
    OOD set (what a combination of detectors is fitted on: ``id_val``); ``detectors``: the fitted detectors;
    ``seconds[detector]``: ``{"fit": s, "score": s}``.
    """

    table: pd.DataFrame
    scores: dict[str, dict[str, np.ndarray]]
    detectors: dict[str, Scorer]
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    target_tpr: float = 0.95

    def to_frame(self) -> pd.DataFrame:
        """The detector × OOD set table (``table``), as every result's ``to_frame()`` gives it."""
        return self.table

    def pivot(self, metric: str = "auroc") -> pd.DataFrame:
        """Detector × OOD set table of one metric, with the mean over sets."""
        p = self.table.pivot(index="detector", columns="ood_set", values=metric)
        p = p.reindex(index=list(dict.fromkeys(self.table["detector"])),
                      columns=list(dict.fromkeys(self.table["ood_set"])))
        p["mean"] = p.mean(axis=1)
        return p

    def winners(self, metric: str = "auroc") -> dict[str, str]:
        """Best detector per OOD set (highest AUROC, or lowest FPR / detection error)."""
        p = self.pivot(metric)
        best = p.idxmin() if metric in ("fpr_at_tpr", "detection_error") else p.idxmax()
        return {str(k): str(v) for k, v in best.items()}


class Benchmark:
    """ID fit/val/test splits and named OOD test sets (see the module docstring)."""

    def __init__(self, fit: Any, test: Any, ood: dict[str, Any], *, val: Any = None, name: str = "custom",
                 notes: Sequence[str] = ()):
        self.fit_data, self.test_data = as_data(fit), as_data(test)
        self.val_data = as_data(val) if val is not None else None
        if not isinstance(ood, dict) or not ood:
            raise InputError("no OOD set given", "pass ood={'name': data, ...}")
        self.ood = {str(k): as_data(v) for k, v in ood.items()}
        clash = set(self.ood) & {"id", *ID_SETS}
        if clash:
            raise InputError(f"OOD set name {min(clash)!r} is reserved", "rename the OOD set")
        shapes = {tuple(d.x.shape[1:]) for d in (self.fit_data, self.test_data, *self.ood.values())}
        if len(shapes) != 1:
            raise InputError(f"ID and OOD inputs have different shapes {sorted(shapes)}",
                             "resize the OOD data to the ID input shape")
        self.name = name
        self.notes = list(notes)

    # --- the pytorch-ood style accessors -------------------------------------------------------------
    def train_set(self) -> Data:
        """ID data the detectors are fitted on."""
        return self.fit_data

    def val_set(self) -> Data | None:
        """Held-out ID data (thresholds, combinations); None when not split off."""
        return self.val_data

    def test_sets(self) -> dict[str, Data]:
        """``{"id": ID test, <ood name>: OOD test, ...}``."""
        return {"id": self.test_data, **self.ood}

    def data(self, set_name: str) -> Data:
        """A set by name: ``id_fit``, ``id_val``, ``id_test`` or an OOD set's name."""
        sets = {"id_fit": self.fit_data, "id_val": self.val_data, "id_test": self.test_data, **self.ood}
        if set_name not in sets or sets[set_name] is None:
            raise InputError(f"no set {set_name!r} in this benchmark", f"use one of {[k for k, v in sets.items() if v is not None]}")
        return sets[set_name]

    @property
    def score_sets(self) -> list[str]:
        """The sets every detector scores: ``id_val`` (when present), ``id_test`` and the OOD sets."""
        return (["id_val"] if self.val_data is not None else []) + ["id_test", *self.ood]

    # --- constructors --------------------------------------------------------------------------------
    @classmethod
    def mnist(cls, ood: Iterable[str] | str = "all", *, root: str | os.PathLike | None = None, seed: int = 0,
              limit: int | None = None) -> Benchmark:
        """MNIST vs Fashion-MNIST and the generated sets (splits: module docstring). ``limit`` caps every set."""
        from ..data.loading import load_mnist
        from ..data.ood_sets import OOD_SETS, load_ood_set

        names = list(OOD_SETS) if ood == "all" else ([p.strip() for p in ood.split(",") if p.strip()]
                                                     if isinstance(ood, str) else list(ood))
        root = root or os.environ.get("BRITTLE_DATA_ROOT")
        notes = []
        train = None
        if root is not None:
            try:
                train = load_mnist("train", root)
            except InputError:
                notes.append(f"no MNIST train split under {root}: splits cut from the bundled test split")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 20):
            raise InputError(f"limit must be an integer >= 20, got {limit!r}", "pass e.g. limit=1000")
        # (start, size) of fit, val and test in their sources, cut to --limit: the note names the images used
        if train is not None:
            spans = [(0, 55000), (55000, 5000), (0, 10000)]
        else:
            spans = [(0, 4000), (4000, 1000), (5000, 5000)]
        if limit is not None:
            spans = [(a, min(n, cap)) for (a, n), cap in zip(spans, (limit, max(10, limit // 4), limit))]
        (f0, fn), (v0, vn), (t0, tn) = spans

        def images(a: int, n: int) -> str:
            return f"{a:,}–{a + n - 1:,}"

        if train is not None:
            test_src = load_mnist("test", root)
            fit, val, test = (train.subset(slice(f0, f0 + fn)), train.subset(slice(v0, v0 + vn)),
                              test_src.subset(slice(t0, t0 + tn)))
            notes.append(f"ID: MNIST train {images(f0, fn)} fit, {images(v0, vn)} val; MNIST test {images(t0, tn)} "
                         "test")
        else:
            mn = load_mnist("test")
            fit, val, test = (mn.subset(slice(f0, f0 + fn)), mn.subset(slice(v0, v0 + vn)),
                              mn.subset(slice(t0, t0 + tn)))
            notes.append(f"ID: bundled MNIST test split — images {images(f0, fn)} fit, {images(v0, vn)} val, "
                         f"{images(t0, tn)} test")
        sets = {}
        for name in names:
            if name in OOD_SETS:
                sets[name] = load_ood_set(name, test, seed=seed, root=root, n=limit)
            else:
                from ..data.loading import load_data

                sets[name] = load_data(name, root, limit=limit)
        return cls(fit, test, sets, val=val, name="mnist", notes=notes)

    @classmethod
    def from_data(cls, id_data: Any, ood: dict[str, Any], **kwargs: Any) -> Benchmark:
        """Any ID data split 40% fit / 10% val / 50% test (in order) against named OOD data."""
        fit, val, test = split_id(id_data)
        return cls(fit, test, ood, val=val, **kwargs)

    # --- evaluation ------------------------------------------------------------------------------------
    def session(self, model: nn.Module, *, batch_size: int = 512, device: Any = "auto") -> Session:
        return Session(self, model, batch_size=batch_size, device=device)

    def evaluate(self, model: nn.Module, detectors: Any = "all", *, target_tpr: float = 0.95, batch_size: int = 512,
                 device: Any = "auto", progress: Callable[[str], None] | None = None) -> BenchmarkResult:
        """Fit every detector on `train_set`, score the val/test/OOD sets, compute the metrics per OOD set."""
        dets = as_detectors(detectors)
        s = self.session(model, batch_size=batch_size, device=device)
        s.prepare(dets)
        labels = detector_labels(dets)
        s.check_fit(dets)
        scores: dict[str, dict[str, np.ndarray]] = {}
        fitted: dict[str, Scorer] = {}
        seconds: dict[str, dict[str, float]] = {}
        for det, label in zip(dets, labels):
            if progress:
                progress(label)
            t0 = time.perf_counter()
            s.fit(det)
            t1 = time.perf_counter()
            scores[label] = {name: s.score(det, name) for name in self.score_sets}
            seconds[label] = {"fit": t1 - t0, "score": time.perf_counter() - t1}
            fitted[label] = det
        return BenchmarkResult(self.metrics(scores, target_tpr), scores, fitted, seconds, target_tpr)

    def metrics(self, scores: dict[str, dict[str, np.ndarray]], target_tpr: float = 0.95) -> pd.DataFrame:
        """The detector × OOD set table from per-set scores."""
        rows = []
        for label, per_set in scores.items():
            for name in self.ood:
                m = ood_metrics(per_set["id_test"], per_set[name], target_tpr=target_tpr)
                rows.append({"detector": label, "ood_set": name, **m.summary()})
        return pd.DataFrame(rows)


class Session:
    """One model on one benchmark: bound detectors and the shared feature cache (used by `evaluate` and by
    the resumable CLI, which fits and scores detector by detector)."""

    def __init__(self, bench: Benchmark, model: nn.Module, *, batch_size: int = 512, device: Any = "auto"):
        self.bench, self.model = bench, model
        self.cache = FeatureCache(model, batch_size=batch_size, device=device)
        self.layers: list[str] = []
        self.batch_size, self.device = batch_size, device

    def prepare(self, detectors: Sequence[Scorer]) -> None:
        """Bind every detector to the model and record the union of the layers they read."""
        for d in detectors:
            if hasattr(d, "bind"):
                d.bind(self.model)
        self.layers = list(dict.fromkeys([*self.layers, *layers_of(detectors)]))

    def features(self, set_name: str):
        return self.cache.get(set_name, self.bench.data(set_name), self.layers)

    def check_fit(self, detectors: Sequence[Scorer]) -> None:
        """Refuse, before any detector runs, a fit set that would make one degenerate (too few inputs, too few
        classes: ``check_fit_data``; the members of a combination too). Without ID labels the classes are the
        model's predictions on the fit set."""
        members = [m for d in detectors for m in (d, *getattr(d, "detectors", ()))]
        checks = [d for d in members if d.requires_fit and hasattr(d, "check_fit_data")]
        if not checks:
            return
        fit = self.bench.fit_data
        labels = None
        if fit.y is not None:
            labels = fit.y.numpy()
        elif any(getattr(d, "min_fit_classes", 1) > 1 for d in checks):
            labels = np.asarray(self.features("id_fit").logits).argmax(1)
        for det in checks:
            det.check_fit_data(len(fit), labels)

    def fit(self, det: Scorer) -> Scorer:
        if not det.requires_fit:
            return det
        y = self.bench.fit_data.y
        if det.needs_model and hasattr(det, "fit_model"):  # fitted through the model (a combination with ODIN)
            return det.fit_model(self.model, self.bench.fit_data, None if y is None else y.numpy(),
                                 batch_size=min(self.batch_size, 256), device=self.device)
        f = self.features("id_fit")
        if hasattr(det, "prepare_fit"):  # detectors that need the model on the fit data first (GROOD's mix-up)
            det.prepare_fit(self.model, self.bench.fit_data, None if y is None else y.numpy())
        return det.fit(f.select(det.layers) if det.layers else f, None if y is None else y.numpy())

    def score(self, det: Scorer, set_name: str) -> np.ndarray:
        if det.needs_model:
            return det.score_model(self.model, self.bench.data(set_name), batch_size=min(self.batch_size, 256),
                                   device=self.device)
        return det.score(self.features(set_name))
