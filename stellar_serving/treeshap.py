"""Exact TreeSHAP in C over a model's trees as flat arrays, for the Explain RPC.

XGBoost's `pred_contribs` costs about 21 µs per boosting round for one object
(about 8.7 ms for the served 400-round, 3-class model). This module computes
the same quantity (path-dependent TreeSHAP, node covers as the background,
the bias column holding the base margin plus each tree's expected value) with
a few lines of generic C compiled once per process, compiler and quadrature size.

How it is computed, per tree, for one object x (written from the algorithm's
definition, not from another implementation):
- A leaf's path from the root meets a set F of distinct features (n of them).
  Each feature f in F has a "zero fraction" z_f, the product over the path's
  splits on f of cover(child on the path) / cover(node), and a "one fraction"
  o_f, 1 when x takes the path's branch at every split on f, else 0 ("hot",
  else "cold"). z_f is fixed by the tree and computed here, once.
- The leaf's value v contributes to feature i of F the Shapley value of the
  game S -> v * prod_{f in S} o_f * prod_{f in F \\ S} z_f:
      phi_i = v (o_i - z_i) sum_{S subset of F\\{i}} w(|S|) prod_S o_f prod_{F\\S\\{i}} z_f,
  w(s) = s! (n - s - 1)! / n! = integral_0^1 t^s (1 - t)^(n - s - 1) dt.
  Moving the sum inside the integral, with b_f(t) = z_f (1 - t) + o_f t:
      phi_i = v (o_i - z_i) integral_0^1 prod_{f != i} b_f(t) dt
            = integral_0^1 B(t) (o_i - z_i) / b_i(t) dt,   B(t) = v prod_f b_f(t),
  so a cold feature gets -integral B(t) / (1 - t) dt, the same for every cold
  feature of the leaf, and a hot one (1 - z_i) integral B(t) / b_i(t) dt.
  The integrands are polynomials of degree n - 1: Gauss-Legendre quadrature
  with ceil(n / 2) points is exact, so a leaf costs O(n * points) flops.
- Which features are hot: the features of a node's path get their positions in
  the order they first appear from the root, which is the same for every path
  through the node. One pass over the internal nodes (parents first) carries a
  bit mask of hot positions from each node to its children; a leaf reads its own.
- A tree's expected value (its bias share) does not depend on x: it is summed
  per class when the arrays are built.
XGBoost's splits: x < threshold (float32) goes left, a missing value (NaN)
takes the node's default branch.

`build` returns a `TreeShap` only after it agreed with XGBoost's
pred_contribs on the probe rows within PROBE_TOLERANCE; every failure (no
compiler, a compile error, a model it cannot lay out, answers that differ) is
an ExplainerUnavailable whose message says why in one sentence, and the
caller keeps XGBoost.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stellar_serving import c_library, tree_model

PROBE_TOLERANCE = 1e-5  # largest contribution difference from XGBoost's pred_contribs allowed on probe rows
MAX_DEPTH = 30  # the C code's scratch arrays; deeper trees are refused (XGBoost answers)
SUPPORTED_OBJECTIVES = ("multi:softprob", "multi:softmax")  # base_score is a margin per class for these

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#define MAXD %(max_depth)d
#define POINTS %(points)d

/* One leaf's contributions: n distinct features, bit k of `hot` set when feature k is hot.
   t, w: the quadrature points and weights on [0, 1]; cold_w[j] = w[j] / (1 - t[j]).
   B(t) without feature k's factor is (factors before k) * (factors after k): no division, and the
   hot/cold choice is a select, not a branch (which features are hot is unpredictable). */
static inline void leaf_contributions(int n, const int32_t* features, const double* zero, uint32_t hot,
                                      double value, const double* t, const double* w, const double* cold_w,
                                      double* phi) {
  double before[MAXD + 1][POINTS], b[MAXD][POINTS], after[POINTS], cold = 0.0;
  for (int j = 0; j < POINTS; ++j) before[0][j] = value;
  for (int k = 0; k < n; ++k) {
    const double one = (double)(hot >> k & 1u), z = zero[k];
    for (int j = 0; j < POINTS; ++j) {
      b[k][j] = z * (1.0 - t[j]) + one * t[j];
      before[k + 1][j] = before[k][j] * b[k][j];
    }
  }
  for (int j = 0; j < POINTS; ++j) {
    cold -= before[n][j] * cold_w[j];
    after[j] = w[j];
  }
  for (int k = n - 1; k >= 0; --k) {
    double others = 0.0;
    for (int j = 0; j < POINTS; ++j) {
      others += before[k][j] * after[j];
      after[j] *= b[k][j];
    }
    phi[features[k]] += (hot >> k & 1u) ? (1.0 - zero[k]) * others : cold;
  }
}

/* rows [n_rows, n_features] float32 -> out [n_rows, n_groups, n_features + 1] float64.
   Tree t's internal nodes are node_begin[t] .. node_begin[t + 1] (parents before children), numbered
   from 0 in the tree; its leaves are leaf_begin[t] .. leaf_begin[t + 1], numbered in the tree after
   the internal nodes. node_left/node_right are those numbers; node_position is the position of the
   node's feature among its path's distinct features. A leaf's distinct features start at
   unique_begin[leaf] (unique_count[leaf] of them: feature, zero fraction). */
void treeshap(const float* rows, int64_t n_rows, int32_t n_features, int32_t n_trees, int32_t n_groups,
              const int32_t* tree_group, const int32_t* node_begin, const int32_t* node_feature,
              const float* node_threshold, const uint8_t* node_default_left, const int32_t* node_left,
              const int32_t* node_right, const uint8_t* node_position, const int32_t* leaf_begin,
              const double* leaf_value, const int32_t* unique_begin, const uint8_t* unique_count,
              const int32_t* unique_feature, const double* unique_zero, const double* points,
              const double* weights, const double* cold_weights, const double* bias, int32_t max_nodes,
              double* out) {
  uint32_t* hot = (uint32_t*)malloc(sizeof(uint32_t) * (size_t)(max_nodes > 0 ? max_nodes : 1));
  const int64_t width = (int64_t)n_features + 1;
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* x = rows + r * n_features;
    double* row_out = out + r * n_groups * width;
    memset(row_out, 0, sizeof(double) * n_groups * width);
    for (int32_t g = 0; g < n_groups; ++g) row_out[g * width + n_features] = bias[g];
    for (int32_t tree = 0; tree < n_trees; ++tree) {
      double* phi = row_out + tree_group[tree] * width;
      const int32_t first = node_begin[tree], n_internal = node_begin[tree + 1] - first;
      hot[0] = ~0u;
      for (int32_t i = 0; i < n_internal; ++i) {
        const int32_t node = first + i;
        const float v = x[node_feature[node]];
        const int left = isnan(v) ? node_default_left[node] : (v < node_threshold[node]);
        const uint32_t mask = hot[i], off = mask & ~(1u << node_position[node]);
        hot[node_left[node]] = left ? mask : off;
        hot[node_right[node]] = left ? off : mask;
      }
      const int32_t leaf0 = leaf_begin[tree];
      for (int32_t leaf = leaf0; leaf < leaf_begin[tree + 1]; ++leaf) {
        const int n = unique_count[leaf];
        if (n == 0) continue;  /* a tree that is one leaf: its value is all bias */
        leaf_contributions(n, unique_feature + unique_begin[leaf], unique_zero + unique_begin[leaf],
                           hot[n_internal + leaf - leaf0], leaf_value[leaf], points, weights, cold_weights, phi);
      }
    }
  }
  free(hot);
}
"""


class ExplainerUnavailable(RuntimeError):
    """No C TreeSHAP for this model; the message says why in one sentence."""


@functools.cache
def _treeshap_function(compiler: str, points: int):
    """The C code compiled once per process, compiler and quadrature size (the arrays are arguments)."""
    return c_library.function(SOURCE % {"max_depth": MAX_DEPTH, "points": points}, compiler, "TreeSHAP", "treeshap",
                              [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                               *[ctypes.c_void_p] * len(ARRAYS), ctypes.c_int32, ctypes.c_void_p],
                              error=ExplainerUnavailable)


# The arrays treeshap() reads, in its argument order, with their C types.
ARRAYS = {"tree_group": np.int32, "node_begin": np.int32, "node_feature": np.int32, "node_threshold": np.float32,
          "node_default_left": np.uint8, "node_left": np.int32, "node_right": np.int32, "node_position": np.uint8,
          "leaf_begin": np.int32, "leaf_value": np.float64, "unique_begin": np.int32, "unique_count": np.uint8,
          "unique_feature": np.int32, "unique_zero": np.float64, "points": np.float64, "weights": np.float64,
          "cold_weights": np.float64, "bias": np.float64}
PER_TREE = ("tree_group", "node_begin", "leaf_begin")  # indexed by tree: offset to split the trees
PER_NODE = ("node_feature", "node_threshold", "node_default_left", "node_left", "node_right", "node_position")
PER_LEAF = ("leaf_value", "unique_count", "unique_begin")
PER_UNIQUE = ("unique_feature", "unique_zero")


class FlatTrees:
    """A booster's trees as the arrays the C code reads (see SOURCE and ARRAYS)."""

    def __init__(self, booster) -> None:
        try:
            model = tree_model.read(booster, SUPPORTED_OBJECTIVES, "C TreeSHAP")
        except tree_model.UnsupportedModel as exc:
            raise ExplainerUnavailable(str(exc)) from None
        self.n_features, self.n_groups = model.n_features, model.n_groups
        columns: dict[str, list] = {name: [] for name in (*PER_NODE, *PER_LEAF, *PER_UNIQUE)}
        node_begin, leaf_begin = [0], [0]
        expected = np.zeros(self.n_groups, dtype=np.float64)
        groups = model.groups
        for tree, group in zip(model.trees, groups):
            expected[group] += _lay_out_tree(tree, columns)
            node_begin.append(len(columns["node_feature"]))
            leaf_begin.append(len(columns["leaf_value"]))
        self.n_trees = len(groups)
        self.max_nodes = max((n + l for n, l in zip(np.diff(node_begin), np.diff(leaf_begin))), default=1)
        most_features = max(columns["unique_count"], default=0)
        self.n_points = max(1, (most_features + 1) // 2)  # Gauss-Legendre on n points is exact to degree 2n - 1
        nodes, weights = np.polynomial.legendre.leggauss(self.n_points)
        points, weights = (nodes + 1) / 2, weights / 2  # from [-1, 1] to [0, 1]
        arrays = {**columns, "tree_group": groups, "node_begin": node_begin, "leaf_begin": leaf_begin,
                  "points": points, "weights": weights, "cold_weights": weights / (1 - points),
                  "bias": model.base_margins + expected}
        for name, dtype in ARRAYS.items():
            setattr(self, name, np.ascontiguousarray(arrays[name], dtype=dtype))


def _lay_out_tree(tree: dict, columns: dict) -> float:
    """Append one tree's internal nodes (breadth first) and leaves to `columns`; its expected value."""
    left, right, cover = tree["left_children"], tree["right_children"], tree["sum_hessian"]
    internal, leaves = [], []
    # Breadth first: (node, its path's distinct features in order of appearance, their zero fractions).
    queue: list[tuple[int, tuple[int, ...], tuple[float, ...], float]] = [(0, (), (), 1.0)]
    for node, features, zero, reach in queue:
        if left[node] == -1:
            leaves.append((node, features, zero, reach))
            continue
        if len(features) >= MAX_DEPTH:
            raise ExplainerUnavailable(f"C TreeSHAP handles at most {MAX_DEPTH} distinct features per path")
        feature = int(tree["split_indices"][node])
        if feature not in features:
            features, zero = features + (feature,), zero + (1.0,)
        position = features.index(feature)
        internal.append((node, position))
        for child in (left[node], right[node]):
            ratio = float(cover[child]) / float(cover[node])
            queue.append((child, features, zero[:position] + (zero[position] * ratio,) + zero[position + 1:],
                          reach * ratio))
    number = {node: k for k, (node, _) in enumerate(internal)}
    number.update({node: len(internal) + k for k, (node, *_) in enumerate(leaves)})
    for node, position in internal:
        columns["node_feature"].append(int(tree["split_indices"][node]))
        columns["node_threshold"].append(tree["split_conditions"][node])
        columns["node_default_left"].append(1 if tree["default_left"][node] else 0)
        columns["node_left"].append(number[left[node]])
        columns["node_right"].append(number[right[node]])
        columns["node_position"].append(position)
    expected = 0.0
    for node, features, zero, reach in leaves:
        value = float(tree["split_conditions"][node])  # a leaf's value is its split condition in the JSON
        columns["unique_begin"].append(len(columns["unique_feature"]))
        columns["unique_count"].append(len(features))
        columns["unique_feature"].extend(features)
        columns["unique_zero"].extend(zero)
        columns["leaf_value"].append(value)
        expected += reach * value
    return expected


class TreeShap:
    """contributions(features float32 [n, n_features]) -> float64 [n, groups, n_features + 1], last column bias.

    TreeSHAP adds up over trees, so with two cores a call splits the trees in two
    halves: the calling thread explains the first (and adds the bias), a worker
    thread the second, and the two sums are added. The C code runs without the
    GIL; one object then costs about half (benchmarks/treeshap_c.py)."""

    def __init__(self, booster, compiler: str = "gcc", threads: int | None = None) -> None:
        self.trees = FlatTrees(booster)
        self._treeshap = _treeshap_function(compiler, self.trees.n_points)
        arrays = {name: getattr(self.trees, name) for name in ARRAYS}  # alive as long as self.trees
        # Each array's address, and its step per tree (per-tree arrays only); `bias` (ARRAYS' last) is an argument.
        self._addresses = [(a.ctypes.data, a.itemsize if name in PER_TREE else 0)
                           for name, a in arrays.items() if name != "bias"]
        self._bias = self.trees.bias.ctypes.data
        self._no_bias_array = np.zeros_like(self.trees.bias)
        self._no_bias = self._no_bias_array.ctypes.data
        threads = min(2, len(os.sched_getaffinity(0))) if threads is None else threads
        self._split = self.trees.n_trees // 2 if threads > 1 and self.trees.n_trees > 1 else None

    def __call__(self, features: np.ndarray) -> np.ndarray:
        t = self.trees
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != t.n_features:
            raise ValueError(f"expected features of shape [n, {t.n_features}], got {list(features.shape)}")
        out = np.empty((len(features), t.n_groups, t.n_features + 1), dtype=np.float64)
        if self._split is None:
            self._explain(features, 0, t.n_trees, self._bias, out)
            return out
        second = np.empty_like(out)
        other_half = _worker().submit(self._explain, features, self._split, t.n_trees, self._no_bias, second)
        self._explain(features, 0, self._split, self._bias, out)
        other_half.result()
        out += second
        return out

    def _explain(self, features: np.ndarray, first: int, last: int, bias: int, out: np.ndarray) -> None:
        """Trees first..last-1 into `out`, plus the bias at address `bias`: the per-tree arrays start
        at tree `first` (node and leaf numbers are absolute, so the other arrays are passed whole)."""
        t = self.trees
        self._treeshap(features.ctypes.data, len(features), t.n_features, last - first, t.n_groups,
                       *[address + first * step for address, step in self._addresses], bias,
                       int(t.max_nodes), out.ctypes.data)


@functools.cache
def _worker() -> ThreadPoolExecutor:
    """The one thread that explains the second half of the trees (one per process)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="stellar-treeshap")


def xgboost_contributions(booster, features: np.ndarray) -> np.ndarray:
    """XGBoost's own pred_contribs for float32 features: [n, groups, n_features + 1]."""
    import xgboost as xgb

    matrix = xgb.DMatrix(np.asarray(features, dtype=np.float32), nthread=1)
    out = booster.predict(matrix, pred_contribs=True, strict_shape=True, validate_features=False)
    return np.asarray(out).reshape(len(features), -1, features.shape[1] + 1)


def max_difference(explain, booster, probe: np.ndarray) -> float:
    """Largest absolute contribution difference from XGBoost's pred_contribs on the probe rows."""
    got, want = explain(probe), xgboost_contributions(booster, probe)
    if got.shape != want.shape:
        return float("inf")
    diff = np.abs(got - want.astype(np.float64))
    return float(diff.max()) if np.isfinite(diff).all() else float("inf")


def probe_features(seed: int = 14) -> np.ndarray:
    """float32 [144, 13] features: 64 objects spread over the input ranges, 64 random ones in them, and
    16 of those with a few values missing (NaN), so the check walks every kind of branch."""
    from stellar_core.contract import INPUT_RANGES, MODEL_INPUTS
    from stellar_core.features import derive_feature_matrix

    rng = np.random.default_rng(seed)
    low = np.array([INPUT_RANGES[n][0] for n in MODEL_INPUTS])
    high = np.array([INPUT_RANGES[n][1] for n in MODEL_INPUTS])
    spread = np.linspace(0.05, 0.95, 64)[:, None]
    inputs = low + np.concatenate([spread * np.ones((1, len(low))), rng.random((64, len(low)))]) * (high - low)
    features = derive_feature_matrix(inputs.astype(np.float32))
    missing = features[-16:].copy()
    missing[rng.random(missing.shape) < 0.3] = np.nan
    return np.ascontiguousarray(np.concatenate([features, missing]), dtype=np.float32)


def build(booster, probe: np.ndarray, compiler: str = "gcc", tolerance: float = PROBE_TOLERANCE) -> TreeShap:
    """The C TreeSHAP of `booster`, once it agrees with XGBoost on `probe`; else ExplainerUnavailable."""
    try:
        explain = TreeShap(booster, compiler)
    except ExplainerUnavailable:
        raise
    except Exception as exc:  # a model file it cannot read, a library that does not load
        raise ExplainerUnavailable(f"C TreeSHAP could not be prepared: {type(exc).__name__}: {exc}"[:300]) from exc
    worst = max_difference(explain, booster, probe)
    if not worst <= tolerance:
        raise ExplainerUnavailable(f"C TreeSHAP differed from XGBoost's pred_contribs by {worst:.3g} on probe rows "
                                   f"(at most {tolerance:g} allowed)")
    return explain


if __name__ == "__main__":  # pragma: no cover - prints the C source, to read or compile by hand
    sys.stdout.write(SOURCE % {"max_depth": MAX_DEPTH, "points": 3})
