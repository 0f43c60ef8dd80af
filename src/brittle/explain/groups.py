"""Players as feature groups (e.g. the one-hot columns of one categorical variable as one player)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InputError


def resolve_groups(groups, n_features: int, feature_names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Map every feature to a player: ``(feature_to_group, group_names)``.

    ``groups`` is None (each feature its own player), a mapping ``name -> columns`` or a sequence of column
    lists; columns are indices or feature names. Features not listed become players of their own (after the
    listed groups); a feature in two groups is refused.
    """
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(n_features)]
    if groups is None:
        return np.arange(n_features, dtype=np.int64), names
    if isinstance(groups, Mapping):
        items = [(str(k), v) for k, v in groups.items()]
    elif isinstance(groups, Sequence) and not isinstance(groups, (str, bytes)):
        items = [(None, v) for v in groups]
    else:
        raise InputError(f"groups must be a mapping or a list of column lists, not {type(groups).__name__}",
                         "pass e.g. {'colour': ['red', 'green', 'blue']} or [[0, 1, 2], [3]]")
    owner = np.full(n_features, -1, dtype=np.int64)
    group_names: list[str] = []
    for g, (gname, cols) in enumerate(items):
        if isinstance(cols, (str, int, np.integer)):
            cols = [cols]
        idx = []
        for c in cols:
            if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                if not 0 <= int(c) < n_features:
                    raise InputError(f"group column {c} is out of range for {n_features} features",
                                     f"use column indices 0..{n_features - 1} or feature names")
                idx.append(int(c))
            elif isinstance(c, str) and c in names:
                idx.append(names.index(c))
            else:
                raise InputError(f"group column {c!r} is not a feature", "use column indices or feature names")
        if not idx:
            raise InputError(f"group {gname or g} is empty", "give every group at least one column")
        for j in idx:
            if owner[j] >= 0:
                raise InputError(f"feature {names[j]!r} is in two groups", "put each feature in one group only")
            owner[j] = g
        group_names.append(gname if gname is not None else "+".join(names[j] for j in idx))
    for j in np.flatnonzero(owner < 0):
        owner[j] = len(group_names)
        group_names.append(names[j])
    if len(set(group_names)) != len(group_names):
        raise InputError("two groups have the same name", "give every group a distinct name")
    return owner, group_names
