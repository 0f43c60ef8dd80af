"""Exact interventional TreeSHAP and order-2 Shapley–Taylor interactions for tree ensembles.

The game explained for a row x is ``v(S) = mean over background z of f(x_S, z_S̄)`` — the model's output on the
hybrid input taking the players in S from x and the others from z — averaged over a background set B. Its
Shapley values satisfy ``Σ_g φ_g(x) = f(x) - mean f(B)`` to float precision, and its order-2 Shapley–Taylor
indices (Sundararajan et al. 2020) sum with the main effects to the same difference. The computation walks
each tree once per (x, z) pair through the nodes a hybrid can reach (see :mod:`brittle.explain._kernel`),
with the branch decisions taken exactly as the model's own ``predict`` takes them.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, ModelError
from ._kernel import HAVE_NUMBA, run_game
from ._validate import as_matrix, refuse_missing
from .explanation import Explanation
from .groups import resolve_groups
from .trees import TreeEnsemble, check_traversal, from_model, model_output

_CHUNK_CELLS = 20_000_000  # decisions per chunk of foreground rows (uint8)


class TreeExplainer:
    """Exact interventional TreeSHAP (and Shapley–Taylor interactions) for tree models.

    Parameters
    ----------
    output : "auto" | int | class label
        Which model output to explain. "auto": the prediction of a regressor, the positive class of a binary
        classifier (probability for scikit-learn trees and forests, log-odds for gradient boosting, the margin
        for XGBoost and LightGBM). Multiclass models need an explicit output.
    groups : None | mapping | list of column lists
        Players made of several columns (e.g. one-hot columns), see :func:`~brittle.explain.groups.resolve_groups`.
    per_tree : bool
        ``explain`` returns values of shape ``(n, T, G)``: each tree's contribution (their sum over trees is the
        ensemble's values).
    feature_names : list of str, optional
        Names for the columns when neither the model nor the background carries them.
    use_numba : bool
        Use the compiled kernel when numba is installed (else, or with False, plain Python: same numbers,
        ~100× slower).

    Fitted attributes: ``ensemble_``, ``background_``, ``base_value_``, ``n_features_in_``, ``feature_names_``,
    ``group_names_``, ``feature_to_group_``, ``output_``, ``n_trees_``, ``max_depth_``.
    """

    def __init__(self, output="auto", groups=None, per_tree: bool = False, feature_names=None,
                 use_numba: bool = True):
        self.output = output
        self.groups = groups
        self.per_tree = per_tree
        self.feature_names = feature_names
        self.use_numba = use_numba

    # ------------------------------------------------------------------------------------------------------
    def fit(self, model, background) -> "TreeExplainer":
        """Read the model's trees and the background set; check both against the model's own predict."""
        ens = from_model(model, None if self.output == "auto" else self.output)
        names = ens.feature_names
        bg, cols = as_matrix(background, "background", ens.n_features, names)
        names = names or cols
        if self.feature_names is not None:
            if len(self.feature_names) != ens.n_features:
                raise InputError(f"feature_names has {len(self.feature_names)} names for {ens.n_features} features",
                                 "pass one name per feature column")
            names = [str(n) for n in self.feature_names]
        names = names or [f"x{j}" for j in range(ens.n_features)]
        if not ens.extra.get("allow_nan", True):
            refuse_missing(bg, "the background", type(model).__name__, names)
        owner, group_names = resolve_groups(self.groups, ens.n_features, names)
        leaves = ens.leaves(bg)
        check_traversal(ens, bg, leaves)
        sums = ens.value[leaves].sum(axis=1)
        raw = model_output(ens, bg)
        if ens.extra.get("intercept_from_model"):
            ens.intercept = float(np.mean(raw - sums))
        ours = ens.intercept + sums
        scale = 1.0 + float(np.max(np.abs(raw)))
        tol = (1e-4 if ens.float32_output else 1e-9) * scale
        err = float(np.max(np.abs(ours - raw)))
        if not err <= tol:
            raise ModelError(f"the trees read from {type(model).__name__} reproduce its output only to {err:.3g}",
                             "explain a supported model (see brittle.explain.trees) or report it as a bug")
        self.ensemble_: TreeEnsemble = ens
        self.model_ = model
        self.background_ = bg
        self.n_features_in_ = ens.n_features
        self.feature_names_ = names
        self.feature_to_group_ = owner
        self.group_names_ = group_names
        self.output_ = ens.output
        self.n_trees_ = ens.n_trees
        self.max_depth_ = ens.max_depth()
        self.base_value_ = float(np.mean(ours))
        self.tree_base_values_ = ens.value[leaves].mean(axis=0)
        self._dz = ens.decisions(bg)
        self._node_group = np.where(ens.feature >= 0, owner[np.maximum(ens.feature, 0)], -1)
        return self

    def _check_fitted(self):
        if not hasattr(self, "ensemble_"):
            raise InputError("this explainer is not fitted", "call explainer.fit(model, background) first")

    def _run(self, X, with_inter: bool, per_tree: bool):
        self._check_fitted()
        ens = self.ensemble_
        x, _ = as_matrix(X, "X", ens.n_features, ens.feature_names)
        if self.per_tree and with_inter:
            raise InputError("per-tree interactions are not computed", "use per_tree=False for interactions")
        if not ens.extra.get("allow_nan", True):
            refuse_missing(x, "X", type(self.model_).__name__, self.feature_names_)
        leaves = ens.leaves(x)
        check_traversal(ens, x, leaves)
        pred = ens.intercept + ens.value[leaves].sum(axis=1)
        T, G = ens.n_trees, len(self.group_names_)
        slot = np.arange(T) if per_tree else np.zeros(T, dtype=np.int64)
        n_slots = T if per_tree else 1
        chunk = max(1, _CHUNK_CELLS // max(ens.n_nodes, 1))
        phis, inters = [], []
        for start in range(0, x.shape[0], chunk):
            dx = ens.decisions(x[start:start + chunk])
            phi, inter = run_game(dx, self._dz, self._node_group, ens.left, ens.right, ens.value, ens.roots, slot,
                                  n_slots, G, self.max_depth_, with_inter, use_numba=self.use_numba)
            phis.append(phi)
            if with_inter:
                inters.append(inter)
        phi = np.concatenate(phis)
        values = phi if per_tree else phi[:, 0, :]
        groups = [list(np.flatnonzero(self.feature_to_group_ == g)) for g in range(G)]
        return Explanation(values=values, base_value=self.base_value_, feature_names=list(self.group_names_),
                           prediction=pred, output=self.output_, data=x,
                           interactions=np.concatenate(inters) if with_inter else None, groups=groups,
                           index=X.index.copy() if hasattr(X, "columns") and hasattr(X, "index") else None)

    def explain(self, X) -> Explanation:
        """Shapley values of the rows of ``X`` (``(n, G)``, or ``(n, T, G)`` with ``per_tree=True``)."""
        return self._run(X, with_inter=False, per_tree=self.per_tree)

    def explain_interactions(self, X) -> Explanation:
        """Shapley values and order-2 Shapley–Taylor interaction matrices ``(n, G, G)`` of the rows of ``X``."""
        return self._run(X, with_inter=True, per_tree=False)

    @property
    def compiled(self) -> bool:
        """Whether the numba kernel is used."""
        return HAVE_NUMBA and self.use_numba
