"""Post-hoc out-of-distribution (OOD) detectors on brittle's one `Scorer` base, their benchmark and metrics.

Every detector is a `brittle.scores.base.Scorer` with ``flag_below = False``: **higher score = more OOD**.
Logit-based: `MSP`, `MaxLogit`, `Energy`, `Entropy`, `GEN`, `KLMatching`, `ODIN` (input preprocessing).
Feature-based (penultimate layer, see `brittle.ood._base` for how it is found): `Mahalanobis` (one or
several layers, optional input noise), `RMD`, `KNN`, `ViM`, `GradNorm`, `SHE`. Activation modifiers wrapping a
logit detector: `ReAct`, `ASH`, `SCALE`, `DICE`. Registry names: ``brittle.ood.DETECTORS``.

Why a top-level package (``brittle.ood``) and not ``brittle.scores.ood``: the detectors are one family of
scorers, but the package also holds what only OOD detection needs — the shared forward-pass cache, the
offline `Benchmark` (ID/OOD sets, per-detector scores for combinations) — and is where combinations and
GROOD are built on top; ``brittle.scores`` stays the small base everyone depends on.

    from brittle.ood import Benchmark, make_detector
    bench = Benchmark.mnist()                               # MNIST fit/val/test vs Fashion-MNIST + generated sets
    result = bench.evaluate(model, ["energy", "knn", "vim"])
    result.table                                            # detector × OOD set: AUROC, AUPR-In/Out, FPR@95, ...
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "MSP": ".msp", "MaxLogit": ".max_logit", "Energy": ".energy", "Entropy": ".entropy", "GEN": ".gen",
    "KLMatching": ".kl_matching", "ODIN": ".odin", "Mahalanobis": ".mahalanobis", "RMD": ".rmd", "KNN": ".knn",
    "ViM": ".vim", "GradNorm": ".gradnorm", "SHE": ".she", "ReAct": ".react", "ASH": ".ash", "SCALE": ".scale",
    "DICE": ".dice", "OODDetector": "._base", "find_head": "._base", "penultimate_layer": "._base",
    "FeatureCache": ".cache", "layers_of": ".cache", "Benchmark": ".benchmark", "BenchmarkResult": ".benchmark",
    "DETECTORS": ".registry", "make_detector": ".registry", "detector_names": ".registry",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
