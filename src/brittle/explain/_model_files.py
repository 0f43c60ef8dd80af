"""Checks of XGBoost's and LightGBM's native model files before their own parsers read them, and of
scikit-learn's tree arrays before anything indexes them.

Their parsers crash or hang on some corrupt files (a truncated LightGBM text: a segmentation fault; a truncated
XGBoost ``.ubj``: an endless loop that allocates memory; an XGBoost model whose tree arrays point out of range:
a segmentation fault while loading or predicting), so `brittle.explain.loading` checks a file here first and
refuses it with one :class:`~brittle.errors.ModelError` line. scikit-learn's ``Tree`` (in a ``.skops`` file:
raw node arrays) is checked by `sklearn_tree_problem` when `brittle.explain.trees` reads a model.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InputError, ModelError

XGB_FIX = "save the model with XGBoost's save_model('model.json')"
LGB_FIX = "save the model with LightGBM's booster.save_model('model.txt')"


def lightgbm_text(path: Path) -> str:
    """The text of a LightGBM model file, checked for what LightGBM's own parser crashes on, minus ``tree_sizes``.

    With ``tree_sizes`` the parser finds tree ``i`` at the first ``Tree=`` line plus the sizes before ``i``,
    without bounds checks (a truncated file: a segmentation fault), and parses the trees in an OpenMP loop where
    an error in a tree aborts the process. Without it, it reads the trees in order and raises on a bad one.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read model file {path.name}: {exc.strerror}",
                         "check the file's permissions") from None
    if not raw.strip():
        raise ModelError(f"model file {path.name} is empty", LGB_FIX)
    if raw.split(b"\n", 1)[0].strip() != b"tree":
        raise ModelError(f"{path.name} is not a LightGBM text model (its first line is not 'tree')", LGB_FIX)
    if b"\0" in raw:  # LightGBM's parser would stop there, as at the end of a truncated file
        raise ModelError(f"{path.name} is a corrupt LightGBM model (byte {raw.index(bytes(1))} is a NUL byte)",
                         LGB_FIX)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{path.name} is a corrupt LightGBM model (byte {exc.start} is not UTF-8 text)",
                         LGB_FIX) from None
    raw = raw.replace(b"\r\n", b"\n")  # Windows line endings (e.g. git autocrlf): as LightGBM wrote it
    first, end = raw.find(b"\nTree="), raw.find(b"\nend of trees")
    if first < 0 or end < first:
        raise ModelError(f"{path.name} is a truncated or corrupt LightGBM model (its trees do not end with "
                         f"'end of trees')", LGB_FIX)
    params = raw.find(b"\nparameters:\n", end)
    if params >= 0:  # LightGBM's Python package reads these "[name: value]" lines back, trusting their shape
        stop = raw.find(b"\nend of parameters", params)
        if stop < 0:
            raise ModelError(f"{path.name} is a truncated LightGBM model (its parameters do not end with "
                             f"'end of parameters')", LGB_FIX)
        for line in raw[params + len(b"\nparameters:\n"):stop].splitlines():  # a lone "\r" ends a line too
            line = line.strip()
            if line and not (line.startswith(b"[") and line.endswith(b"]") and b": " in line):
                raise ModelError(f"{path.name} is a corrupt LightGBM model (a line of its parameters is not "
                                 f"'[name: value]')", LGB_FIX)
    problem = _lightgbm_trees_problem(raw[:first].decode("utf-8"), raw[first + 1:end].decode("utf-8"))
    if problem:
        raise ModelError(f"{path.name} is a corrupt LightGBM model ({problem})", LGB_FIX)
    # Without tree_sizes LightGBM reads the trees one after the other (bounded by the text) instead of at the
    # offsets tree_sizes gives, in parallel, where a malformed tree aborts the process instead of raising
    raw = b"".join(ln for ln in raw[:first + 1].splitlines(keepends=True) if not ln.startswith(b"tree_sizes=")) \
        + raw[first + 1:]
    return raw.decode("utf-8")


def _lightgbm_trees_problem(header: str, trees: str) -> str | None:
    """What in LightGBM's trees (the text from the first ``Tree=`` to ``end of trees``) it would trust and crash
    on, or None: a child or feature index out of range, arrays of the wrong length, a node reached twice, a
    categorical split outside its categories (LightGBM reads out of bounds predicting: a segmentation fault)."""
    import numpy as np

    fields = dict(line.split("=", 1) for line in header.splitlines() if "=" in line)
    if "max_feature_idx" not in fields:  # LightGBM refuses such a file itself
        return None
    try:
        features = int(fields["max_feature_idx"]) + 1
    except ValueError:
        return "its max_feature_idx is not an integer"
    for block in ("\n" + trees).split("\nTree=")[1:]:
        name = f"tree {block.split(chr(10), 1)[0].strip()}"
        lines = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        try:
            _check_lightgbm_tree(lines, features)
        except CorruptModel as exc:
            return f"{name}: {exc}"
    return None


def _check_lightgbm_tree(lines: dict, features: int) -> None:
    import numpy as np

    def numbers(key: str, size: int, kind: type = float) -> np.ndarray:
        text = lines.get(key, "").split()
        if len(text) != size:
            raise CorruptModel(f"{key} has {len(text)} values for {size}")
        try:
            return np.array([kind(t) for t in text]) if text else np.zeros(0, dtype=kind)
        except ValueError:
            raise CorruptModel(f"{key} is not a list of {'integers' if kind is int else 'numbers'}") from None

    leaves = int(numbers("num_leaves", 1, int)[0])
    cats = int(numbers("num_cat", 1, int)[0]) if "num_cat" in lines else 0
    if leaves < 1 or cats < 0:
        raise CorruptModel(f"num_leaves={leaves}, num_cat={cats}")
    numbers("leaf_value", leaves)
    inner = leaves - 1
    if inner:
        split = numbers("split_feature", inner, int)
        if (split < 0).any() or (split >= features).any():
            raise CorruptModel(f"a split on a feature out of range (the model has {features})")
        kinds = numbers("decision_type", inner, int)
        thresholds = numbers("threshold", inner)
        left, right = numbers("left_child", inner, int), numbers("right_child", inner, int)
        children = np.concatenate([left, right])
        nodes = np.where(children >= 0, children, inner + ~children)  # leaves after the inner nodes
        if ((children >= 0) & ((children < 1) | (children >= inner))).any() \
                or ((children < 0) & (~children >= leaves)).any():
            raise CorruptModel("a child index out of range")
        if len(np.unique(nodes)) != len(nodes):
            raise CorruptModel("a node reached twice")
        categorical = (kinds & 1) == 1
        if categorical.any():
            bounds = numbers("cat_boundaries", cats + 1, int)
            values = numbers("cat_threshold", int(bounds[-1]) if len(bounds) else 0, int)
            index = thresholds[categorical]
            if bounds[0] != 0 or (np.diff(bounds) < 0).any() or len(values) != bounds[-1] \
                    or (index != np.round(index)).any() or (index < 0).any() or (index >= cats).any():
                raise CorruptModel("a categorical split outside its categories")
    if lines.get("is_linear", "0").strip() == "1":
        counts = numbers("num_features", leaves, int)
        if (counts < 0).any():
            raise CorruptModel("a negative num_features")
        numbers("leaf_const", leaves)
        used = numbers("leaf_features", int(counts.sum()), int)
        numbers("leaf_coeff", int(counts.sum()))
        if (used < 0).any() or (used >= features).any():
            raise CorruptModel(f"a linear leaf on a feature out of range (the model has {features})")


_UBJ_SIZES = {b"Z": 0, b"N": 0, b"T": 0, b"F": 0, b"i": 1, b"U": 1, b"C": 1, b"I": 2, b"l": 4, b"d": 4, b"L": 8,
              b"D": 8}
_UBJ_NUMBERS = {b"i": ">i1", b"U": ">u1", b"I": ">i2", b"l": ">i4", b"L": ">i8", b"d": ">f4", b"D": ">f8"}
_UBJ_CONSTANTS = {b"Z": None, b"T": True, b"F": False}


class CorruptModel(Exception):
    """Why a model file's content is not what its library would read safely (one line)."""


def ubjson_decode(raw: bytes) -> Any:
    """The value in ``raw``, a complete UBJSON document (XGBoost's ``.ubj``); raises `CorruptModel` where it is
    truncated, has an unknown marker or bytes after the value. Typed arrays of numbers become numpy arrays."""
    import numpy as np

    n = len(raw)

    def need(pos: int, k: int) -> None:
        if k < 0 or pos + k > n:
            raise CorruptModel(f"ends early, at byte {n}" if k >= 0 else f"negative length at byte {pos}")

    def number(marker: bytes, pos: int) -> tuple[Any, int]:
        size = _UBJ_SIZES[marker]
        need(pos, size)
        return np.frombuffer(raw, _UBJ_NUMBERS[marker], 1, pos)[0].item(), pos + size

    def length(pos: int) -> tuple[int, int]:
        need(pos, 1)
        marker = raw[pos:pos + 1]
        if marker not in _UBJ_NUMBERS or marker in (b"d", b"D"):
            raise CorruptModel(f"expected a length at byte {pos}")
        value, pos = number(marker, pos + 1)
        if value < 0:
            raise CorruptModel(f"negative length at byte {pos}")
        return value, pos

    def text(pos: int) -> tuple[str, int]:
        size, pos = length(pos)
        need(pos, size)
        try:
            return raw[pos:pos + size].decode("utf-8"), pos + size
        except UnicodeDecodeError:
            raise CorruptModel(f"a string at byte {pos} is not UTF-8") from None

    def payload(marker: bytes, pos: int, depth: int) -> tuple[Any, int]:
        if marker in _UBJ_CONSTANTS:
            return _UBJ_CONSTANTS[marker], pos
        if marker == b"C":
            need(pos, 1)
            return chr(raw[pos]), pos + 1
        if marker in _UBJ_NUMBERS:
            return number(marker, pos)
        if marker in (b"S", b"H"):
            return text(pos)
        if marker in (b"[", b"{"):
            if depth > 256:
                raise CorruptModel("nested too deeply")
            return container(marker == b"{", pos, depth + 1)
        raise CorruptModel(f"unknown marker {marker!r} at byte {pos - 1}")

    def value(pos: int, depth: int) -> tuple[Any, int]:
        need(pos, 1)
        return payload(raw[pos:pos + 1], pos + 1, depth)

    def container(is_object: bool, pos: int, depth: int) -> tuple[Any, int]:
        kind = count = None
        if raw[pos:pos + 1] == b"$":
            need(pos + 1, 1)
            kind, pos = raw[pos + 1:pos + 2], pos + 2
            need(pos, 1)
            if raw[pos:pos + 1] != b"#":
                raise CorruptModel(f"a typed container without a count at byte {pos}")
        if raw[pos:pos + 1] == b"#":
            count, pos = length(pos + 1)
        if count is not None and kind in _UBJ_NUMBERS and not is_object:  # a typed array of numbers
            size = count * _UBJ_SIZES[kind]
            need(pos, size)
            return np.frombuffer(raw, _UBJ_NUMBERS[kind], count, pos), pos + size
        items: list[Any] = []
        keys: list[str] = []
        if count is not None:
            need(pos, min(count, n))  # every element takes a byte at least (ends early otherwise)
        end = b"}" if is_object else b"]"
        while count is None or len(items) < count:
            if count is None:
                need(pos, 1)
                if raw[pos:pos + 1] == end:
                    pos += 1
                    break
                if raw[pos:pos + 1] == b"N":  # no-op
                    pos += 1
                    continue
            if is_object:
                key, pos = text(pos)
                keys.append(key)
            item, pos = payload(kind, pos, depth) if kind is not None else value(pos, depth)
            items.append(item)
        return (dict(zip(keys, items)) if is_object else items), pos

    try:
        out, end = value(0, 0)
    except RecursionError:
        raise CorruptModel("nested too deeply") from None
    if raw[end:].strip():
        raise CorruptModel(f"unexpected bytes after the model, at byte {end}")
    return out


def xgboost_file_problem(path: Path) -> str | None:
    """Why the XGBoost model file at ``path`` (``.json`` or ``.ubj``) would not load safely, or None."""
    import json

    raw = path.read_bytes()
    try:
        if path.suffix.lower() == ".ubj":
            model = ubjson_decode(raw)
        else:
            try:
                model = json.loads(raw)
            except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                return "not valid JSON"
    except CorruptModel as exc:
        return str(exc)
    return xgboost_problem(model)


#: XGBoost's parent id of a tree's root node (-1 in multi-target trees)
_ROOT_PARENT = 2147483647


def _ints(seq: Any, what: str) -> Any:
    """``seq`` as a 1-D int64 array; `CorruptModel` where it is not an array of integers."""
    import numpy as np

    try:
        arr = np.asarray(seq)
    except (TypeError, ValueError):
        raise CorruptModel(f"{what} is not an array of numbers") from None
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iub"):
        raise CorruptModel(f"{what} is not an array of integers")
    return arr.astype(np.int64)


def _count(text: Any, what: str) -> int:
    """``text`` (XGBoost writes counts as strings) as a non-negative integer; `CorruptModel` otherwise."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise CorruptModel(f"{what} is not an integer") from None
    if value < 0:
        raise CorruptModel(f"{what} is negative")
    return value


def xgboost_problem(model: Any) -> str | None:
    """What in a decoded XGBoost model (its JSON or UBJSON document) XGBoost would trust and crash on, or None.

    XGBoost checks a model's syntax but not its trees' layout: a child, parent or feature index out of range,
    arrays of the wrong length or a cycle make it read out of bounds while loading or predicting (a
    segmentation fault). Checked here: the booster's shape (trees, their groups, the iteration index) and,
    per tree, its arrays' lengths, children and parents (every node reached once from the root, each child's
    parent its node), split features and categorical segments.
    """
    import numpy as np

    try:
        learner = model["learner"]
        params = learner["learner_model_param"]
        features = _count(params["num_feature"], "num_feature")
        groups = max(_count(params.get("num_class", 0), "num_class"),
                     _count(params.get("num_target", 1), "num_target"), 1)
        booster = learner["gradient_booster"]
        name = booster["name"]
        if name == "gblinear":
            weights = np.asarray(booster["model"]["weights"])
            if weights.ndim != 1 or len(weights) != (features + 1) * groups:
                raise CorruptModel(f"the linear booster has {weights.size} weights for {features} features")
            return None
        if name not in ("gbtree", "dart"):
            raise CorruptModel(f"unknown booster {name!r}")
        trees_model = booster["model"] if name == "gbtree" else booster["gbtree"]["model"]
        trees = trees_model["trees"]
        num_trees = _count(trees_model["gbtree_model_param"]["num_trees"], "num_trees")
        if not isinstance(trees, list) or len(trees) != num_trees:
            raise CorruptModel(f"the model says {num_trees} trees but holds {len(trees)}")
        tree_info = _ints(trees_model["tree_info"], "tree_info")
        if len(tree_info) != num_trees or (num_trees and not (0 <= tree_info.min() and tree_info.max() < groups)):
            raise CorruptModel("tree_info does not give each tree an output group")
        if "iteration_indptr" in trees_model:
            indptr = _ints(trees_model["iteration_indptr"], "iteration_indptr")
            if len(indptr) == 0 or indptr[0] != 0 or indptr[-1] != num_trees or (np.diff(indptr) < 0).any():
                raise CorruptModel("iteration_indptr does not index the trees")
        if name == "dart" and len(np.asarray(booster["weight_drop"])) != num_trees:
            raise CorruptModel("dart's weight_drop does not have a weight per tree")
        for i, tree in enumerate(trees):
            _check_tree(tree, i, features)
    except CorruptModel as exc:
        return str(exc)
    except (KeyError, TypeError, IndexError, AttributeError):
        return "its layout is not an XGBoost model's"
    return None


def _check_tree(tree: dict, i: int, features: int) -> None:
    import numpy as np

    nodes = _count(tree["tree_param"]["num_nodes"], f"tree {i}'s num_nodes")
    if nodes < 1:
        raise CorruptModel(f"tree {i} has no nodes")
    left, right = _ints(tree["left_children"], "left_children"), _ints(tree["right_children"], "right_children")
    parents, split = _ints(tree["parents"], "parents"), _ints(tree["split_indices"], "split_indices")
    arrays = {"left_children": left, "right_children": right, "parents": parents, "split_indices": split,
              **{k: np.asarray(tree[k]) for k in ("split_conditions", "default_left", "loss_changes",
                                                  "sum_hessian")}}
    if "split_type" in tree:
        arrays["split_type"] = _ints(tree["split_type"], "split_type")
    for key, arr in arrays.items():
        if arr.ndim != 1 or len(arr) != nodes:
            raise CorruptModel(f"tree {i}'s {key} has {arr.size} values for {nodes} nodes")
    leaf_size = max(_count(tree["tree_param"].get("size_leaf_vector", 1), "size_leaf_vector"), 1)
    if np.asarray(tree["base_weights"]).size not in (nodes, nodes * leaf_size):
        raise CorruptModel(f"tree {i}'s base_weights do not match its {nodes} nodes")
    leaf = left == -1
    if "leaf_weights" in tree:  # a multi-target tree: a leaf's right child is its row of leaf_weights
        rows = np.asarray(tree["leaf_weights"]).size // leaf_size
        if ((right[leaf] < 0) | (right[leaf] >= rows)).any():
            raise CorruptModel(f"tree {i} has a leaf index out of range")
    elif ((right == -1) != leaf).any():
        raise CorruptModel(f"tree {i} has a node with one child")
    inner = ~leaf
    if (left[inner] < 1).any() or (left[inner] >= nodes).any() or (right[inner] < 1).any() \
            or (right[inner] >= nodes).any():
        raise CorruptModel(f"tree {i} has a child index out of range")
    if (split[inner] < 0).any() or (split[inner] >= max(features, 1)).any():
        raise CorruptModel(f"tree {i} splits on a feature out of range (the model has {features})")
    if parents[0] not in (_ROOT_PARENT, -1):  # -1 in multi-target trees
        raise CorruptModel(f"tree {i}'s root has a parent")
    seen = np.zeros(nodes, dtype=bool)
    seen[0] = True
    frontier = np.array([0])
    while frontier.size:  # breadth first: every node reached once, each child's parent its node
        frontier = frontier[inner[frontier]]
        children = np.concatenate([left[frontier], right[frontier]])
        if seen[children].any() or len(np.unique(children)) != len(children):
            raise CorruptModel(f"tree {i} reaches a node twice")
        if (parents[children] != np.concatenate([frontier, frontier])).any():
            raise CorruptModel(f"tree {i}'s parents do not match its children")
        seen[children] = True
        frontier = children
    others = parents[~seen]
    if ((others != _ROOT_PARENT) & (others != -1) & ((others < 0) | (others >= nodes))).any():
        raise CorruptModel(f"tree {i} has a parent index out of range")
    if "split_type" in arrays:
        kinds = arrays["split_type"]
        if ((kinds != 0) & (kinds != 1)).any():
            raise CorruptModel(f"tree {i} has an unknown split type")
        cat_nodes = _ints(tree.get("categories_nodes", []), "categories_nodes")
        segments = _ints(tree.get("categories_segments", []), "categories_segments")
        sizes = _ints(tree.get("categories_sizes", []), "categories_sizes")
        cats = np.asarray(tree.get("categories", []))
        if not (len(cat_nodes) == len(segments) == len(sizes)) or (cat_nodes < 0).any() \
                or (cat_nodes >= nodes).any() or (segments < 0).any() or (sizes < 0).any() \
                or (segments + sizes > cats.size).any() or int((kinds[inner] == 1).sum()) > len(cat_nodes):
            raise CorruptModel(f"tree {i}'s categorical splits do not match their categories")


#: what to do about a scikit-learn model whose trees fail `sklearn_tree_problem`
SKLEARN_FIX = "re-save the model with skops (skops.io.dump) from the trained estimator, or refit it"


def sklearn_tree_problem(tree: Any, features: int, outputs: int, classes: int) -> str | None:
    """What in a scikit-learn ``Tree`` (``estimator.tree_``) scikit-learn would trust and crash on, or None.

    scikit-learn indexes its node arrays without bounds checks (a ``.skops`` file holds them as raw data): a
    child index out of range makes ``apply`` / ``predict`` read out of bounds (a segmentation fault), a cycle
    makes a traversal loop forever, a feature index out of range reads beyond the input row, and a
    ``node_count`` above the node array's length makes even reading the arrays read beyond them. scikit-learn's
    builders (depth first, best first, pruning) give every child a larger id than its parent, which rules out
    cycles. Checked, vectorised: the node count against the arrays' lengths, each internal node's children
    after it and within the tree, each node but the root the child of exactly one node (the root of none), the
    split features within the ``features`` the model takes, no NaN threshold (infinite ones are scikit-learn's
    own, for missing values), and the values' shape ``(nodes, outputs, classes)``. ``features``, ``outputs``
    and ``classes`` come from the model.
    """
    import numpy as np
    from sklearn.tree._tree import Tree

    if not isinstance(tree, Tree):
        return f"its tree_ is a {type(tree).__name__}, not a scikit-learn Tree"
    nodes, capacity = int(tree.node_count), int(tree.capacity)
    if nodes < 1 or nodes > capacity:  # the arrays below would be views of `nodes` rows of `capacity` stored
        return f"it says {nodes} nodes but its node array holds {capacity}"
    if int(tree.n_features) != features:
        return f"it takes {int(tree.n_features)} features, the model {features}"
    left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
    feature, threshold = np.asarray(tree.feature), np.asarray(tree.threshold)
    arrays = {"children_left": left, "children_right": right, "feature": feature, "threshold": threshold,
              "n_node_samples": np.asarray(tree.n_node_samples),
              "weighted_n_node_samples": np.asarray(tree.weighted_n_node_samples),
              "impurity": np.asarray(tree.impurity)}
    for key, arr in arrays.items():
        if arr.ndim != 1 or len(arr) != nodes:
            return f"its {key} has {arr.size} values for {nodes} nodes"
    value = np.asarray(tree.value)
    if value.shape != (nodes, outputs, classes):
        return f"its values have shape {value.shape}, not ({nodes}, {outputs}, {classes}) for {nodes} nodes"
    ids = np.arange(nodes)
    leaf = left == -1
    inner = ~leaf

    def first(mask: np.ndarray) -> int | None:
        hit = np.flatnonzero(mask)
        return int(hit[0]) if hit.size else None

    node = first(leaf != (right == -1))
    if node is not None:
        return f"node {node} has one child (left {int(left[node])}, right {int(right[node])})"
    for name, child in (("left", left), ("right", right)):
        node = first(inner & ((child <= ids) | (child >= nodes)))
        if node is not None:
            return f"node {node}'s {name} child is {int(child[node])}, not a node after it and below {nodes}"
    # every child is after its parent, so the root (node 0) is no node's child; every other node must be one's
    parents = np.bincount(np.concatenate([left[inner], right[inner]]), minlength=nodes)
    node = first(parents[1:] != 1)
    if node is not None:
        return f"node {node + 1} is the child of {int(parents[node + 1])} nodes"
    node = first(inner & ((feature < 0) | (feature >= features)))
    if node is not None:
        return f"node {node} splits on feature {int(feature[node])}, but the model takes {features} features"
    node = first(inner & np.isnan(threshold))
    if node is not None:
        return f"node {node}'s threshold is NaN"
    return None


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Within the block, whatever is written to file descriptor 2 (by native code too) is discarded."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2: nothing to silence
        yield
        return
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
