"""Combining OOD detectors (Novello et al., arXiv 2407.07135): majority vote, empirical CDF, Gaussian-copula
CDF and center-outward (optimal-transport) quantiles over the ``(N, d)`` scores of ``d`` detectors, fitted on
in-distribution data only; multi-dimensional AUROC / FPR@TPR; choosing detectors without OOD data; and the
`CombinedDetector` scorer."""

from ..._lazy import lazy_exports

_EXPORTS = {
    "Combiner": ".base", "COMBINERS": ".base", "make_combiner": ".base", "combiner_from_dict": ".base",
    "strategy_names": ".base", "check_score_matrix": ".base",
    "MajorityVote": ".vote", "EmpiricalCDF": ".ecdf", "ecdf_brute_force": ".ecdf",
    "GaussianCopulaCDF": ".copula", "gaussian_cdf_genz": ".copula",
    "CenterOutward": ".center_outward", "spherical_uniform_grid": ".center_outward",
    "multidim_metrics": ".metrics", "MultiDimMetrics": ".metrics",
    "CombinedDetector": ".detector", "combine_scores": ".detector",
    "synthetic_outliers": ".selection", "rank_subsets": ".selection", "evaluate_subset": ".selection",
    "validate_cli": ".cli", "cli_extension": ".cli",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
