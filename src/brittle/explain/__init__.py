"""Explanations you can check: exact interventional TreeSHAP, Shapley–Taylor interactions, consensus orders.

Free of torch and images. Names are imported lazily::

    from brittle.explain import TreeExplainer, consensus_order
    ex = TreeExplainer().fit(model, background)          # scikit-learn, XGBoost or LightGBM trees
    e = ex.explain(X)                                     # Explanation: values, base_value, feature_names
    e = ex.explain_interactions(X)                        # + Shapley–Taylor matrices (n, G, G)
    order = consensus_order(importances_of_K_models, e.feature_names)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TreeExplainer": ".tree_shap",
    "Explanation": ".explanation",
    "TreeEnsemble": ".trees", "from_model": ".trees",
    "PartialOrder": ".consensus", "consensus_order": ".consensus",
    "hasse_svg": ".hasse",
    "load_model": ".loading",
    "explain_to_dir": ".run",
    "brute_force_values": ".brute_force", "brute_force_interactions": ".brute_force",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(_EXPORTS)


__all__ = sorted(_EXPORTS)
