"""A booster's trees as XGBoost's JSON describes them, for the C code that walks them.

The C TreeSHAP (treeshap.py) and the tree kernel (tree_kernel.py) both read
the same things off a booster: its objective, the trees of each class, and the
intercept. `read` checks what both need (a gbtree booster of numeric splits
with a supported objective) and says in one sentence what is not supported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np


class UnsupportedModel(ValueError):
    """The booster is of a kind the C code does not handle; the message names what."""


@dataclass(frozen=True)
class TreeModel:
    objective: str
    n_features: int
    n_groups: int  # classes (1 for a model with one output)
    trees: list  # XGBoost's JSON trees, in boosting order
    groups: list  # the class of each tree
    base_margins: np.ndarray  # float64 [n_groups]: the margin every tree adds to


def read(booster, objectives: tuple[str, ...], what: str) -> TreeModel:
    """The booster's trees; UnsupportedModel when `what` cannot handle them."""
    learner = json.loads(bytes(booster.save_raw(raw_format="json")))["learner"]
    objective = learner["objective"]["name"]
    if objective not in objectives:
        raise UnsupportedModel(f"{what} supports objectives {objectives}, not {objective!r}")
    kind = learner["gradient_booster"].get("name")
    if kind != "gbtree":
        raise UnsupportedModel(f"{what} supports gbtree boosters, not {kind!r}")
    model = learner["gradient_booster"]["model"]
    if any(any(tree.get("split_type", [])) for tree in model["trees"]):
        raise UnsupportedModel(f"{what} handles numeric splits only; the model has categorical ones")
    n_groups = max(1, int(learner["learner_model_param"]["num_class"]))
    return TreeModel(objective=objective, n_features=int(learner["learner_model_param"]["num_feature"]),
                     n_groups=n_groups, trees=model["trees"], groups=[int(g) for g in model["tree_info"]],
                     base_margins=base_margins(learner["learner_model_param"]["base_score"], n_groups))


def base_margins(base_score: str, n_groups: int) -> np.ndarray:
    """The model's intercept per class: a scalar or "[a,b,c]" in the JSON (margins for multi:soft*)."""
    values = [float(v) for v in str(base_score).strip("[]").split(",") if v.strip()]
    if len(values) == 1:
        values = values * n_groups
    if len(values) != n_groups:
        raise UnsupportedModel(f"base_score {base_score!r} does not give one margin per class ({n_groups})")
    return np.asarray(values, dtype=np.float64)


def depth(tree: dict) -> int:
    """The number of splits on the tree's longest path (0 for a tree that is one leaf)."""
    left, right = tree["left_children"], tree["right_children"]
    deepest, level = 0, [(0, 0)]
    while level:
        node, d = level.pop()
        if left[node] == -1:
            deepest = max(deepest, d)
        else:
            level += [(left[node], d + 1), (right[node], d + 1)]
    return deepest
