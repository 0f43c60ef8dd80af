"""Tree ensembles as flat arrays, read from scikit-learn, XGBoost and LightGBM models.

Every supported model becomes one :class:`TreeEnsemble`: the nodes of all its trees in flat arrays, the leaf
values already multiplied by the tree's weight in the ensemble (``1/T`` for a forest, the learning rate for
scikit-learn's gradient boosting), and an intercept, so that the explained output is
``intercept + sum of the leaf values reached``. Which way an input goes at a node is decided by
:meth:`TreeEnsemble.decisions` exactly as the library's own ``predict`` decides it:

- scikit-learn: the input is cast to float32, then ``x <= threshold`` (threshold in float64); NaN follows
  ``missing_go_to_left``;
- XGBoost: float32 input, ``x < split_condition`` (float32); NaN follows ``default_left``;
- LightGBM: float64 input, ``|x| <= 1e-35`` read as 0, then ``x <= threshold``; NaN is read as 0 unless the node's missing type is NaN; a
  missing value (NaN, or 0 for missing type Zero) follows ``default_left``.

The trees read are those the model's own ``predict`` uses: an XGBoost scikit-learn model trained with early
stopping up to ``best_iteration`` (its ``iteration_range``); a ``Booster`` all of them, as ``Booster.predict``
does by default. Models whose structure cannot be read this way (categorical splits, linear trees, multi-output
leaves) are refused with a :class:`~brittle.errors.ModelError`, and so are scikit-learn models whose node arrays
are damaged (checked before brittle or scikit-learn indexes them: scikit-learn follows them without bounds checks,
see `brittle.explain._model_files.sklearn_tree_problem`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, ModelError

SKLEARN, XGBOOST, LIGHTGBM = "sklearn", "xgboost", "lightgbm"
_LGB_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold (a float): |x| <= it reads as 0


@dataclass
class TreeEnsemble:
    """All trees of one model output, flattened (node arrays indexed globally across trees)."""

    feature: np.ndarray        # int32, -1 at leaves
    threshold: np.ndarray      # float64
    left: np.ndarray           # int32
    right: np.ndarray          # int32
    default_left: np.ndarray   # bool: direction of a missing value
    missing_type: np.ndarray   # int8, LightGBM only: 0 None, 1 Zero, 2 NaN
    value: np.ndarray          # float64 leaf value times tree weight (0 at internal nodes)
    roots: np.ndarray          # int32 root node of each tree
    kind: str                  # SKLEARN | XGBOOST | LIGHTGBM
    n_features: int
    intercept: float = 0.0
    output: str = ""           # what is explained, in words
    float32_output: bool = False  # the library's own predict rounds to float32 (XGBoost)
    feature_names: list[str] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    @property
    def n_nodes(self) -> int:
        return len(self.feature)

    def tree_of_node(self) -> np.ndarray:
        """Index of the tree each node belongs to (nodes of a tree are contiguous)."""
        sizes = np.diff(np.append(self.roots, self.n_nodes))
        return np.repeat(np.arange(self.n_trees), sizes)

    def max_depth(self) -> int:
        depth = np.zeros(self.n_nodes, dtype=np.int64)
        best = 0
        for t in range(self.n_trees):  # nodes are stored parents-first within each tree
            stack = [int(self.roots[t])]
            while stack:
                node = stack.pop()
                if self.feature[node] >= 0:
                    for child in (self.left[node], self.right[node]):
                        depth[child] = depth[node] + 1
                        stack.append(int(child))
                else:
                    best = max(best, int(depth[node]))
        return best

    def used_features(self) -> np.ndarray:
        return np.unique(self.feature[self.feature >= 0])

    def decisions(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_nodes)`` uint8: 1 where the row goes to the left child (0 at leaves), as the library does."""
        X = np.asarray(X, dtype=np.float64)
        internal = np.flatnonzero(self.feature >= 0)
        out = np.zeros((X.shape[0], self.n_nodes), dtype=np.uint8)
        if len(internal) == 0:
            return out
        feat = self.feature[internal]
        if self.kind == SKLEARN:
            xv = X.astype(np.float32)[:, feat].astype(np.float64)
            go = xv <= self.threshold[internal]
            nan = np.isnan(xv)
            go = np.where(nan, self.default_left[internal], go)
        elif self.kind == XGBOOST:
            xv = X.astype(np.float32)[:, feat]
            go = xv < self.threshold[internal].astype(np.float32)
            go = np.where(np.isnan(xv), self.default_left[internal], go)
        elif self.kind == LIGHTGBM:
            xv = X[:, feat]
            xv = np.where(np.abs(xv) <= _LGB_ZERO, 0.0, xv)  # LightGBM's predictor drops these as zeros
            mt = self.missing_type[internal]
            nan = np.isnan(xv)
            xv = np.where(nan & (mt != 2), 0.0, xv)
            missing = ((mt == 1) & (np.abs(xv) <= _LGB_ZERO)) | ((mt == 2) & nan)
            with np.errstate(invalid="ignore"):
                go = np.where(missing, self.default_left[internal], xv <= self.threshold[internal])
        else:  # pragma: no cover - constructed internally
            raise ModelError(f"unknown tree kind {self.kind!r}", "use a supported model")
        out[:, internal] = go
        return out

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_trees)`` global index of the leaf each row reaches in each tree."""
        dec = self.decisions(X)
        rows = np.arange(dec.shape[0])
        node = np.tile(self.roots, (dec.shape[0], 1)).astype(np.int64)
        for _ in range(self.max_depth()):
            internal = self.feature[node] >= 0
            if not internal.any():
                break
            goes_left = dec[rows[:, None], node].astype(bool)
            nxt = np.where(goes_left, self.left[node], self.right[node])
            node = np.where(internal, nxt, node)
        return node

    def predict(self, X: np.ndarray, per_tree: bool = False) -> np.ndarray:
        """The explained output from the flat trees: ``intercept + sum of leaf values`` (float64)."""
        vals = self.value[self.leaves(X)]
        return vals if per_tree else self.intercept + vals.sum(axis=1)


# ----------------------------------------------------------------------------------------------------------
# builders


def _concat(trees: list[dict], kind: str, n_features: int, **kw) -> TreeEnsemble:
    """Join per-tree local arrays into one ensemble with global node indices."""
    if not trees:
        raise ModelError("the model has no trees", "fit the model before explaining it")
    parts: dict[str, list] = {k: [] for k in ("feature", "threshold", "left", "right", "default_left",
                                              "missing_type", "value")}
    roots, offset = [], 0
    for t in trees:
        n = len(t["feature"])
        roots.append(offset)
        for k in parts:
            arr = np.asarray(t.get(k, np.zeros(n)))
            if k in ("left", "right"):
                arr = np.where(np.asarray(t["feature"]) >= 0, arr + offset, -1)
            parts[k].append(arr)
        offset += n
    return TreeEnsemble(
        feature=np.concatenate(parts["feature"]).astype(np.int32),
        threshold=np.concatenate(parts["threshold"]).astype(np.float64),
        left=np.concatenate(parts["left"]).astype(np.int32),
        right=np.concatenate(parts["right"]).astype(np.int32),
        default_left=np.concatenate(parts["default_left"]).astype(bool),
        missing_type=np.concatenate(parts["missing_type"]).astype(np.int8),
        value=np.concatenate(parts["value"]).astype(np.float64),
        roots=np.asarray(roots, dtype=np.int32), kind=kind, n_features=int(n_features), **kw)


def _sk_tree(tree, values: np.ndarray, weight: float) -> dict:
    t = tree.tree_
    feature = np.where(t.children_left >= 0, t.feature, -1)
    missing = getattr(t, "missing_go_to_left", np.zeros(t.node_count, dtype=bool))
    return {"feature": feature, "threshold": t.threshold, "left": t.children_left, "right": t.children_right,
            "default_left": np.asarray(missing, dtype=bool),
            "value": np.where(feature < 0, values * weight, 0.0)}


def _plain(value) -> str:
    """A class label as the user wrote it: ``1``, ``'yes'`` (not numpy's ``np.int64(1)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _resolve_output(output, n_outputs: int, names: list, what: str) -> int:
    if output in (None, "auto"):
        if n_outputs == 1:
            return 0
        if n_outputs == 2 and what == "class":
            return 1
        raise InputError(f"the model has {n_outputs} outputs ({', '.join(map(str, names))}) and none was chosen",
                         "pass output=<index> (CLI: --output K) to say which one to explain")
    if isinstance(output, (bool, np.bool_)) or not isinstance(output, (int, np.integer)):
        # a class label given by value
        matches = [i for i, n in enumerate(names) if str(n) == str(output)]
        if len(matches) != 1:
            raise InputError(f"output {output!r} is not one of the model's outputs "
                             f"[{', '.join(_plain(n) for n in names)}]",
                             "pass output as an index 0..K-1 or one of the listed labels")
        return matches[0]
    if not 0 <= int(output) < n_outputs:
        raise InputError(f"output={output} is out of range for a model with {n_outputs} outputs",
                         f"pass an index between 0 and {n_outputs - 1}")
    return int(output)


def _check_binary_output(output, labels: list, model, score: str = "the log-odds") -> None:
    """A binary classifier with one raw score, for class ``labels[1]``: only that class (or "auto")."""
    if output in (None, "auto") or _resolve_output(output, 2, labels, "class") == 1:
        return
    raise InputError(f"output={output!r} asks for class {_plain(labels[0])}, but {type(model).__name__} has one raw "
                     f"score, {score} of class {_plain(labels[1])}",
                     f"pass output=1 or auto (for class {_plain(labels[0])}, negate the attributions and the base "
                     "value)")


def _not_fitted(model) -> ModelError:
    return ModelError(f"{type(model).__name__} is not fitted", "fit the model before explaining it")


def _sklearn_allows_nan(model) -> bool:
    """Whether the estimator's own predict accepts NaN, from scikit-learn's estimator tags."""
    if hasattr(model, "__sklearn_tags__"):  # scikit-learn >= 1.6
        return bool(model.__sklearn_tags__().input_tags.allow_nan)
    return bool(model._get_tags().get("allow_nan", False))  # scikit-learn < 1.6


def _quiet(fn):
    """Call a scikit-learn method on a bare array without its 'no feature names' warning."""
    import warnings

    def call(X):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return fn(X)
    return call


def _check_sklearn_trees(model, estimators: list, names: list[str], outputs: int, classes: int) -> None:
    """Refuse a model whose trees scikit-learn would read out of bounds or loop on (see `sklearn_tree_problem`);
    called before anything (brittle or scikit-learn) indexes the trees' node arrays."""
    from ._model_files import SKLEARN_FIX, sklearn_tree_problem

    for est, name in zip(estimators, names):
        tree = getattr(est, "tree_", None)
        problem = sklearn_tree_problem(tree, int(model.n_features_in_), outputs, classes) if tree is not None \
            else f"it is a {type(est).__name__}, not a fitted decision tree"
        if problem:
            raise ModelError(f"the {type(model).__name__} is corrupt or was tampered with: {name}: {problem}",
                             SKLEARN_FIX)


def _from_sklearn(model, output) -> TreeEnsemble:
    from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                                  GradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor)
    from sklearn.tree import BaseDecisionTree

    from ._model_files import SKLEARN_FIX

    if not hasattr(model, "n_features_in_"):
        raise _not_fitted(model)
    names = [str(c) for c in getattr(model, "feature_names_in_", [])] or None
    d = model.n_features_in_
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 1 \
            or (names is not None and len(names) != d):
        raise ModelError(f"the {type(model).__name__} is corrupt or was tampered with: n_features_in_ is {d!r}"
                         + (f" for {len(names)} feature names" if names is not None else ""), SKLEARN_FIX)
    is_clf = hasattr(model, "classes_")
    if isinstance(model, (GradientBoostingClassifier, GradientBoostingRegressor)):
        stages = model.estimators_  # (n_stages, K)
        if not isinstance(stages, np.ndarray) or stages.ndim != 2 or stages.size == 0:
            raise ModelError(f"the {type(model).__name__} is corrupt or was tampered with: its estimators_ is not "
                             f"a 2-D array of trees", SKLEARN_FIX)
        _check_sklearn_trees(model, list(stages.ravel()),
                             [f"stage {s}" + (f" output {j}" if stages.shape[1] > 1 else "")
                              for s in range(stages.shape[0]) for j in range(stages.shape[1])], 1, 1)
        n_out = stages.shape[1]
        labels = list(model.classes_) if is_clf else list(range(n_out))
        if is_clf and len(labels) == 2:
            _check_binary_output(output, labels, model)
            k, desc = 0, f"decision_function: log-odds of class {_plain(labels[1])} (raw score, before the sigmoid)"
        else:
            k = _resolve_output(output, n_out, labels, "class" if is_clf else "target")
            desc = (f"decision_function[:, {k}]: raw score of class {_plain(labels[k])} (before the softmax)" if is_clf
                    else "predict (raw output)")
        lr = float(model.learning_rate)
        trees = [_sk_tree(stages[s, k], stages[s, k].tree_.value[:, 0, 0], lr) for s in range(stages.shape[0])]
        ens = _concat(trees, SKLEARN, d, output=desc, feature_names=names)
        ens.extra["raw"] = _quiet(model.decision_function if is_clf else model.predict)
        ens.extra["raw_index"] = None if (not is_clf or len(labels) == 2) else k
        ens.extra["intercept_from_model"] = True
        ens.extra["leaf_ids"] = _quiet(lambda X: model.apply(X).reshape(len(X), stages.shape[0], -1)[:, :, k])
        ens.extra["allow_nan"] = _sklearn_allows_nan(model)
        return ens
    if isinstance(model, BaseDecisionTree):
        estimators, weight = [model], 1.0
    elif isinstance(model, (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier,
                            ExtraTreesRegressor)):
        estimators = list(model.estimators_)
        if not estimators:
            raise ModelError(f"the {type(model).__name__} is corrupt or was tampered with: it has no trees",
                             SKLEARN_FIX)
        weight = 1.0 / len(estimators)
    else:
        raise ModelError(f"{type(model).__name__} is not a supported scikit-learn tree model",
                         "use a DecisionTree, RandomForest, ExtraTrees or GradientBoosting model "
                         "(or XGBoost / LightGBM)")
    tree_names = ["the tree"] if isinstance(model, BaseDecisionTree) else [f"tree {i}" for i in range(len(estimators))]
    if isinstance(model, BaseDecisionTree):
        leaf_ids = _quiet(lambda X: model.apply(X)[:, None])
    else:
        leaf_ids = _quiet(model.apply)
    if is_clf:
        if isinstance(model.classes_, list) or getattr(model, "n_outputs_", 1) > 1:
            raise ModelError("multi-output classifiers are not supported", "fit one classifier per output")
        labels = list(model.classes_)
        _check_sklearn_trees(model, estimators, tree_names, 1, len(labels))
        k = _resolve_output(output, len(labels), labels, "class")
        trees = []
        for est in estimators:
            v = est.tree_.value[:, 0, :]
            tot = v.sum(axis=1)
            proba = np.divide(v[:, k], tot, out=np.zeros_like(tot), where=tot > 0)
            trees.append(_sk_tree(est, proba, weight))
        desc = f"predict_proba[:, {k}]: probability of class {_plain(labels[k])}"
        ens = _concat(trees, SKLEARN, d, output=desc, feature_names=names)
        ens.extra["raw"] = _quiet(model.predict_proba)
        ens.extra["raw_index"] = k
        ens.extra["leaf_ids"] = leaf_ids
    else:
        n_out = getattr(model, "n_outputs_", 1)
        if isinstance(n_out, (bool, np.bool_)) or not isinstance(n_out, (int, np.integer)) or n_out < 1:
            raise ModelError(f"the {type(model).__name__} is corrupt or was tampered with: n_outputs_ is "
                             f"{n_out!r}", SKLEARN_FIX)
        _check_sklearn_trees(model, estimators, tree_names, int(n_out), 1)
        k = _resolve_output(output, n_out, list(range(n_out)), "target")
        trees = [_sk_tree(est, est.tree_.value[:, k, 0], weight) for est in estimators]
        desc = "predict" if n_out == 1 else f"predict[:, {k}]"
        ens = _concat(trees, SKLEARN, d, output=desc, feature_names=names)
        ens.extra["raw"] = _quiet(model.predict)
        ens.extra["raw_index"] = None if n_out == 1 else k
    ens.extra["leaf_ids"] = leaf_ids
    ens.extra["allow_nan"] = _sklearn_allows_nan(model)
    return ens


def _xgb_booster(model):
    if not hasattr(model, "get_booster"):  # a Booster
        return model
    is_fitted = getattr(model, "__sklearn_is_fitted__", None)
    if is_fitted is not None and not is_fitted():
        raise _not_fitted(model)
    return model.get_booster()


def _xgb_rounds(model, model_js: dict, trees_per_round: int) -> tuple[int | None, int]:
    """``(best_iteration, number of trees)`` that the model's own ``predict`` uses.

    The scikit-learn wrappers predict with ``iteration_range=(0, best_iteration + 1)`` after early stopping; a
    ``Booster``'s ``predict`` uses every tree by default, even when the model records a ``best_iteration``."""
    n_trees = len(model_js["trees"])
    if not hasattr(model, "get_booster"):
        return None, n_trees
    try:
        best = int(model.best_iteration)
    except AttributeError:  # no early stopping
        return None, n_trees
    indptr = model_js.get("iteration_indptr")  # tree offsets per round (XGBoost >= 2)
    used = int(indptr[best + 1]) if indptr is not None else (best + 1) * trees_per_round
    return best, min(used, n_trees)


def _from_xgboost(model, output) -> TreeEnsemble:
    booster = _xgb_booster(model)
    raw = booster.save_raw("json")
    js = json.loads(bytes(raw).decode("utf-8"))
    learner = js["learner"]
    gb = learner["gradient_booster"]
    name = gb.get("name", "gbtree")
    if name == "dart":
        weights = [float(w) for w in gb.get("weight_drop", [])]
        gb = gb["gbtree"]
    elif name == "gbtree":
        weights = None
    else:
        raise ModelError(f"XGBoost booster {name!r} has no trees", "use booster='gbtree' or 'dart'")
    mp = learner["learner_model_param"]
    n_class = int(mp.get("num_class", "0"))
    n_target = int(mp.get("num_target", "1"))
    d = int(mp["num_feature"])
    model_js = gb["model"]
    info = list(model_js["tree_info"])
    n_groups = max(n_class, n_target, 1)
    objective = learner.get("objective", {}).get("name", "")
    binary = n_groups == 1 and objective.startswith("binary:")
    labels = list(getattr(model, "classes_", range(2 if binary else n_groups)))
    if binary:
        _check_binary_output(output, labels, model, "the log-odds" if "logi" in objective else "the margin")
        k = 0
    elif n_groups == 1:
        k = _resolve_output(output, 1, labels[:1], "target")
    else:
        k = _resolve_output(output, n_groups, labels, "class" if n_class else "target")
    per_round = int(model_js.get("gbtree_model_param", {}).get("num_parallel_tree", "1")) * n_groups
    best, n_used = _xgb_rounds(model, model_js, per_round)
    trees = []
    for i, t in enumerate(model_js["trees"][:n_used]):
        if info[i] != k:
            continue
        if int(t["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise ModelError("XGBoost multi-output trees (multi_strategy='multi_output_tree') are not supported",
                             "train with multi_strategy='one_output_per_tree'")
        if any(int(s) != 0 for s in t.get("split_type", [])):
            raise ModelError("XGBoost categorical splits are not supported",
                             "one-hot encode categorical features before training")
        left = np.asarray(t["left_children"], dtype=np.int64)
        feature = np.where(left >= 0, np.asarray(t["split_indices"], dtype=np.int64), -1)
        cond = np.asarray(t["split_conditions"], dtype=np.float32).astype(np.float64)
        w = 1.0 if weights is None else weights[i]
        trees.append({"feature": feature, "threshold": cond, "left": left,
                      "right": np.asarray(t["right_children"], dtype=np.int64),
                      "default_left": np.asarray(t["default_left"], dtype=bool),
                      "value": np.where(feature < 0, cond * w, 0.0)})
    names = booster.feature_names
    desc = (f"margin (output_margin=True) of output {k}" + (f" ({objective})" if objective else ""))
    if objective in ("binary:logistic", "binary:logitraw"):
        desc = f"margin (output_margin=True): log-odds of class {_plain(labels[1])} ({objective})"
    elif binary:
        desc = f"margin (output_margin=True) of class {_plain(labels[1])} ({objective})"
    elif objective == "reg:logistic":
        desc = f"margin (output_margin=True): log-odds ({objective})"
    if best is not None:
        desc += f", trees of rounds 0..{best} (best_iteration={best} from early stopping, as predict uses)"
    elif booster.attr("best_iteration") is not None:  # a Booster: its predict uses every round by default
        desc += (f", every round as Booster.predict uses (the recorded best_iteration="
                 f"{booster.attr('best_iteration')} is not applied)")
    ens = _concat(trees, XGBOOST, d, output=desc, float32_output=True,
                  feature_names=list(names) if names else None)
    rounds = (0, 0) if best is None else (0, best + 1)  # (0, 0): every tree

    def raw(X):
        import xgboost

        return booster.predict(xgboost.DMatrix(X, feature_names=names), output_margin=True, iteration_range=rounds)

    def leaf_ids(X):
        import xgboost

        return booster.predict(xgboost.DMatrix(X, feature_names=names), pred_leaf=True, iteration_range=rounds)

    ens.extra.update(raw=raw, raw_index=None if n_groups == 1 else k, intercept_from_model=True,
                     leaf_ids=leaf_ids, tree_rows=np.flatnonzero(np.asarray(info[:n_used]) == k))
    return ens


def _from_lightgbm(model, output) -> TreeEnsemble:
    if hasattr(model, "fit"):  # a scikit-learn wrapper (LGBMRegressor, ...): booster_ is missing until fitted
        if not hasattr(model, "booster_"):
            raise _not_fitted(model)
        booster = model.booster_
    else:
        booster = model
    dump = booster.dump_model()
    n_class = int(dump.get("num_tree_per_iteration", 1))
    objective = dump.get("objective", "").split(" ")[0]
    binary = n_class == 1 and objective == "binary"
    labels = list(getattr(model, "classes_", range(2 if binary else n_class)))
    if binary:
        _check_binary_output(output, labels, model)
        k = 0
    elif n_class == 1:
        k = _resolve_output(output, 1, labels[:1], "target")
    else:
        k = _resolve_output(output, n_class, labels, "class")
    infos = dump["tree_info"]
    n_iter = len(infos) // n_class
    weight = 1.0 / n_iter if dump.get("average_output") else 1.0
    trees = []
    for i, info in enumerate(infos):
        if i % n_class != k:
            continue
        feats, thr, left, right, dl, mt, val, lab = [], [], [], [], [], [], [], []

        def add(node):
            idx = len(feats)
            for lst in (feats, thr, left, right, dl, mt, val, lab):
                lst.append(0)
            lab[idx] = -1
            if "leaf_value" in node or "split_feature" not in node:
                feats[idx], left[idx], right[idx] = -1, -1, -1
                lab[idx] = int(node.get("leaf_index", 0))
                val[idx] = float(node.get("leaf_value", 0.0)) * weight
                if node.get("leaf_coeff"):
                    raise ModelError("LightGBM linear trees are not supported", "train with linear_tree=False")
                return idx
            if node.get("decision_type", "<=") != "<=":
                raise ModelError("LightGBM categorical splits are not supported",
                                 "one-hot encode categorical features, or train without categorical_feature")
            feats[idx] = int(node["split_feature"])
            thr[idx] = float(node["threshold"])
            dl[idx] = bool(node.get("default_left", True))
            mt[idx] = {"None": 0, "Zero": 1, "NaN": 2}[node.get("missing_type", "None")]
            left[idx] = add(node["left_child"])
            right[idx] = add(node["right_child"])
            return idx

        add(info["tree_structure"])
        trees.append({"feature": feats, "threshold": thr, "left": left, "right": right,
                      "default_left": dl, "missing_type": mt, "value": val, "label": lab})
    names = [str(n) for n in dump.get("feature_names", [])] or None
    desc = "raw_score" + (f"[:, {k}]" if n_class > 1 else "")
    if binary:
        desc += f": log-odds of class {_plain(labels[1])}"
    desc += f" ({objective})" if objective else ""
    if dump.get("average_output"):  # boosting_type="rf": predict averages the trees, raw_score sums them
        desc += ", averaged over the trees as predict does (boosting_type='rf')"
    ens = _concat(trees, LIGHTGBM, int(dump["max_feature_idx"]) + 1, output=desc, feature_names=names)
    ens.extra.update(raw=lambda X: booster.predict(X, raw_score=True) * weight, raw_index=None if n_class == 1 else k,
                     leaf_ids=lambda X: booster.predict(X, pred_leaf=True),
                     tree_rows=np.arange(k, len(infos), n_class),
                     leaf_label=np.concatenate([np.asarray(t["label"]) for t in trees]))
    return ens


def library_of(model) -> str:
    """``"sklearn"``, ``"xgboost"`` or ``"lightgbm"`` from the model's class, without importing the libraries."""
    mod = type(model).__module__.split(".")[0]
    if mod == "sklearn":
        return SKLEARN
    if mod == "xgboost":
        return XGBOOST
    if mod == "lightgbm":
        return LIGHTGBM
    raise ModelError(f"{type(model).__module__}.{type(model).__name__} is not a supported tree model",
                     "pass a fitted scikit-learn tree/forest/gradient-boosting model, an XGBoost or a LightGBM model")


def from_model(model, output=None) -> TreeEnsemble:
    """Read a fitted tree model into a :class:`TreeEnsemble` for one output (see module docstring)."""
    lib = library_of(model)
    if lib == SKLEARN:
        return _from_sklearn(model, output)
    if lib == XGBOOST:
        return _from_xgboost(model, output)
    return _from_lightgbm(model, output)


def check_traversal(ens: TreeEnsemble, X: np.ndarray, ours: np.ndarray | None = None) -> None:
    """Refuse to explain if the flat trees send any row of ``X`` to another leaf than the library does."""
    fn = ens.extra.get("leaf_ids")
    if fn is None:
        return
    if ours is None:
        ours = ens.leaves(X)
    theirs = np.asarray(fn(X)).reshape(X.shape[0], -1).astype(np.int64)
    rows = ens.extra.get("tree_rows")
    if rows is not None:
        theirs = theirs[:, rows]
    label = ens.extra.get("leaf_label")
    mine = label[ours] if label is not None else ours - ens.roots[None, :]
    if theirs.shape != mine.shape or not np.array_equal(theirs, mine):
        bad = int(np.argwhere(theirs != mine)[0][0]) if theirs.shape == mine.shape else 0
        raise ModelError(f"brittle reads the trees differently from the library's own predict (row {bad})",
                         "report this model at the brittle issue tracker; its trees cannot be explained exactly")


def model_output(ens: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """The explained output computed by the model's own API (float64)."""
    out = np.asarray(ens.extra["raw"](X), dtype=np.float64)
    k = ens.extra.get("raw_index")
    if out.ndim == 2:
        out = out[:, 0 if k is None else k]
    return out
