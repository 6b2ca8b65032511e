"""Compiled trees (tl2cgen) against XGBoost, in one process, on the same rows.

    .venv/bin/python benchmarks/compiled_predictor.py [--model-rounds 400] [--repeats 5]

Trains the serving benchmark's champion (multi:softprob, depth 6, eta 0.1) on
the SDSS sample, compiles it with stellar_serving.compiled (timed), then
measures, in interleaved repeats, the three predictors the server can use:

  xgboost 1 thread   booster_call.DensePredictor on a one-thread copy (small requests today)
  xgboost all cores  booster_call.DensePredictor on the booster (requests of STELLAR_PARALLEL_BATCH_MIN rows or more)
  compiled           compiled.CompiledPredictor (one thread, row by row)

for requests of 1 to 1000 rows, and prints the median time per call and the
ratio to the faster XGBoost predictor of the same size. The first size where
compiled is no longer faster is the STELLAR_COMPILED_MAX_ROWS to choose.

In a server, the trees are not in the CPU's caches when a request comes: the
gRPC and Python work between two calls evicts them (the compiled library of a
400-round model is ~1.8 MB of code). `--cold` also times one-row calls after
evicting the caches (reading a 32 MB buffer), which is what a served call pays.

`--flat` adds a prototype that is not served: the trees as flat arrays
(complete binary trees in level order, 16 trees walked side by side so their
cache misses overlap), evaluated by a few lines of generic C compiled with the
same compiler. It measures how much a compact layout would save against the
compiled code; its answers are checked against XGBoost like the others.
`--explain` times what the Explain RPC computes for one object: XGBoost's
exact TreeSHAP (`pred_contribs`) on a one-thread copy of the booster, for the
first 1, 100, 200 and all rounds (its cost per round), and with the rounds
split over two threads (two sliced boosters, contributions summed).
Timings are printed, never asserted.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the server sets it before loading xgboost

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "sdss17_sample.csv.gz"
SIZES = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 256, 1000)


def train(rounds: int):
    import xgboost as xgb

    from stellar_core.features import FEATURE_NAMES, build_features, feature_matrix, label_indices

    features, _ = build_features(pd.read_csv(SAMPLE))
    matrix = xgb.DMatrix(feature_matrix(features), label=label_indices(features["label"]),
                         feature_names=list(FEATURE_NAMES))
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "tree_method": "hist", "max_depth": 6,
                         "eta": 0.1, "seed": 0}, matrix, rounds)
    return booster, np.ascontiguousarray(feature_matrix(features), dtype=np.float32)


def median_call_seconds(predict, chunks: list[np.ndarray]) -> float:
    # Different rows every call: the same row again and again would let the CPU's
    # branch predictor learn its path through the trees, which no server sees.
    times = []
    for rows in chunks:
        start = time.perf_counter()
        predict(rows)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# The --flat prototype: one generic evaluator for any model laid out as complete trees.
FLAT_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#define LANES 16
/* Tree t's internal node i (level order, children 2i+1 and 2i+2) is at t * n_internal + i;
   missing values go right where default_right is 1 (XGBoost: x < threshold goes left). */
static int64_t walk(const float* x, int64_t node0, int64_t i, const float* thresholds, const uint8_t* features,
                    const uint8_t* default_right) {
  const int64_t node = node0 + i;
  const float v = x[features[node]];
  const int right = isnan(v) ? default_right[node] : !(v < thresholds[node]);
  return 2 * i + 1 + right;
}
void predict_margins(const float* rows, int64_t n_rows, int64_t n_features, const float* thresholds,
                     const uint8_t* features, const uint8_t* default_right, const float* leaves,
                     const int32_t* groups, int64_t n_trees, int32_t depth, const float* base, int32_t n_groups,
                     float* out) {
  const int64_t n_internal = ((int64_t)1 << depth) - 1, n_leaves = (int64_t)1 << depth;
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* x = rows + r * n_features;
    float* o = out + r * n_groups;
    for (int32_t g = 0; g < n_groups; ++g) o[g] = base[g];
    int64_t t = 0;
    for (; t + LANES <= n_trees; t += LANES) {  /* LANES independent walks: their cache misses overlap */
      int64_t at[LANES] = {0};
      for (int32_t d = 0; d < depth; ++d)
        for (int j = 0; j < LANES; ++j) at[j] = walk(x, (t + j) * n_internal, at[j], thresholds, features, default_right);
      for (int j = 0; j < LANES; ++j) o[groups[t + j]] += leaves[(t + j) * n_leaves + at[j] - n_internal];
    }
    for (; t < n_trees; ++t) {
      int64_t i = 0;
      for (int32_t d = 0; d < depth; ++d) i = walk(x, t * n_internal, i, thresholds, features, default_right);
      o[groups[t]] += leaves[t * n_leaves + i - n_internal];
    }
  }
}
"""


class FlatTrees:
    """The --flat prototype: XGBoost's trees padded to complete trees of the model's depth, as arrays."""

    def __init__(self, booster, folder: Path, compiler: str, probe: np.ndarray) -> None:
        import ctypes
        import json
        import subprocess

        model = json.loads(bytes(booster.save_raw(raw_format="json")))["learner"]["gradient_booster"]["model"]
        trees = model["trees"]
        if any(any(tree.get("split_type", [])) for tree in trees):
            raise ValueError("the --flat prototype handles numeric splits only")
        self.depth = max(_depth(tree, 0) for tree in trees)
        n_internal, n_leaves = 2 ** self.depth - 1, 2 ** self.depth
        self.thresholds = np.full((len(trees), n_internal), np.inf, dtype=np.float32)  # padding: always left
        self.features = np.zeros((len(trees), n_internal), dtype=np.uint8)
        self.default_right = np.zeros((len(trees), n_internal), dtype=np.uint8)
        self.leaves = np.zeros((len(trees), n_leaves), dtype=np.float32)
        for t, tree in enumerate(trees):
            self._lay_out(t, tree, 0, 0, 0)
        self.groups = np.asarray(model["tree_info"], dtype=np.int32)
        self.n_groups = int(self.groups.max()) + 1
        source, library = folder / "flat.c", folder / "flat.so"
        source.write_text(FLAT_SOURCE)
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
        self._lib = ctypes.CDLL(str(library))
        fn = self._lib.predict_margins
        p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
        fn.argtypes = [p, i64, i64, p, p, p, p, p, i64, i32, p, i32, p]
        fn.restype = None
        self._fn = fn
        # The base margin (XGBoost's intercept), read off XGBoost's own margins on probe rows.
        import xgboost as xgb

        margins = booster.predict(xgb.DMatrix(probe), output_margin=True, validate_features=False)
        self.base = np.zeros(self.n_groups, dtype=np.float32)  # margins() below then sums the leaves alone
        self.base = np.median(margins - self.margins(probe), axis=0).astype(np.float32)

    def _lay_out(self, t: int, tree: dict, node: int, slot: int, level: int) -> None:
        left = tree["left_children"][node]
        if left == -1:  # a leaf above the last level fills every leaf slot below its slot
            first = last = slot
            for _ in range(self.depth - level):
                first, last = 2 * first + 1, 2 * last + 2
            n_internal = 2 ** self.depth - 1
            self.leaves[t, first - n_internal:last - n_internal + 1] = tree["split_conditions"][node]
            return
        self.thresholds[t, slot] = tree["split_conditions"][node]
        self.features[t, slot] = tree["split_indices"][node]
        self.default_right[t, slot] = 0 if tree["default_left"][node] else 1
        self._lay_out(t, tree, left, 2 * slot + 1, level + 1)
        self._lay_out(t, tree, tree["right_children"][node], 2 * slot + 2, level + 1)

    def margins(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        out = np.empty((len(rows), self.n_groups), dtype=np.float32)
        self._fn(rows.ctypes.data, len(rows), rows.shape[1], self.thresholds.ctypes.data, self.features.ctypes.data,
                 self.default_right.ctypes.data, self.leaves.ctypes.data, self.groups.ctypes.data, len(self.groups),
                 self.depth, self.base.ctypes.data, self.n_groups, out.ctypes.data)
        return out

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        margins = self.margins(rows)
        exp = np.exp(margins - margins.max(axis=1, keepdims=True))  # softmax, as multi:softprob
        return exp / exp.sum(axis=1, keepdims=True)


def _depth(tree: dict, node: int) -> int:
    left = tree["left_children"][node]
    if left == -1:
        return 0
    return 1 + max(_depth(tree, left), _depth(tree, tree["right_children"][node]))


ROW_STRIDE = 7  # a different row each call (a prime, so every row comes round)


def cold_call_seconds(predict, rows: np.ndarray, calls: int = 200) -> float:
    """Median time of one-row calls, each after reading a buffer larger than the CPU's private caches."""
    evict = np.ones(8 << 20, dtype=np.float32)  # 32 MB
    times = []
    for k in range(calls):
        row = rows[k * ROW_STRIDE % len(rows):][:1]
        evict.sum()
        start = time.perf_counter()
        predict(row)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def explain_costs(booster, rows: np.ndarray, calls: int = 100) -> None:
    """Median time of pred_contribs for one object, by rounds, and with the rounds split over two threads."""
    from concurrent.futures import ThreadPoolExecutor

    import xgboost as xgb

    def one_thread(model):
        model = model.copy()
        model.set_param({"nthread": 1})
        return model

    def contribs(model, row):
        return model.predict(xgb.DMatrix(row, nthread=1), pred_contribs=True, strict_shape=True,
                             validate_features=False)

    rounds = booster.num_boosted_rounds()
    chunks = [rows[k * 13:k * 13 + 1] for k in range(calls)]
    print(f"\nExplain, one object, exact TreeSHAP (pred_contribs), one thread, 1-min load {os.getloadavg()[0]:.1f}:")
    for k in sorted({1, min(100, rounds), min(200, rounds), rounds}):
        model = one_thread(booster[0:k])
        ms = 1e3 * median_call_seconds(lambda row: contribs(model, row), chunks)
        print(f"  first {k:>4} rounds: {ms:7.3f} ms")
    halves = [one_thread(booster[0:rounds // 2]), one_thread(booster[rounds // 2:rounds])]
    with ThreadPoolExecutor(max_workers=1) as pool:
        def split(row):
            other = pool.submit(contribs, halves[1], row)
            return contribs(halves[0], row) + other.result()  # the bias holds the base margin twice: timing only
        ms = 1e3 * median_call_seconds(split, chunks)
    print(f"  all {rounds} rounds split over two threads: {ms:7.3f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-rounds", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--compiler", default="gcc")
    parser.add_argument("--cold", action="store_true", help="also time one-row calls after evicting the caches")
    parser.add_argument("--flat", action="store_true",
                        help="also measure the flat-array prototype (not served; see the module's doc)")
    parser.add_argument("--explain", action="store_true", help="also time TreeSHAP for one object (see above)")
    args = parser.parse_args(argv)

    from stellar_serving import compiled
    from stellar_serving.booster_call import DensePredictor

    print(f"training a {args.model_rounds}-round model ...", flush=True)
    booster, rows = train(args.model_rounds)
    single = booster.copy()
    single.set_param({"nthread": 1})
    xgb_one = DensePredictor(single, rows.shape[1], 3)
    xgb_all = DensePredictor(booster, rows.shape[1], 3)
    with tempfile.TemporaryDirectory() as tmp:
        model_bytes = bytes(booster.save_raw(raw_format="ubj"))
        path = compiled.library_path(Path(tmp), "1", model_bytes, args.compiler)
        start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        compiled.compile_library(model_bytes, path, args.compiler)
        compile_seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the compile child and its compilers
        compile_cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        fast = compiled.CompiledPredictor(path, rows.shape[1], 3)
        worst = compiled.max_difference(fast, xgb_one, rows[:2000])
        predictors = {"xgboost 1 thread": xgb_one, "xgboost all cores": xgb_all, "compiled": fast}
        if args.flat:
            predictors["flat"] = flat = FlatTrees(booster, Path(tmp), args.compiler, rows[:256])
            worst_flat = compiled.max_difference(flat, xgb_one, rows[:2000])
        results: dict[tuple[str, int], list[float]] = {}
        cold: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            for size in SIZES:
                calls = max(5, min(300, 3000 // size))
                starts = (repeat * 7919 + np.arange(calls) * size) % (len(rows) - size)
                chunks = [rows[s:s + size] for s in starts]
                for name, predict in predictors.items():
                    results.setdefault((name, size), []).append(median_call_seconds(predict, chunks))
            for name, predict in predictors.items() if args.cold else ():
                cold.setdefault(name, []).append(cold_call_seconds(predict, rows[repeat * 997:]))

    print(f"\n{args.model_rounds}-round model, {os.cpu_count()} CPUs, 1-min load average {os.getloadavg()[0]:.1f}; "
          f"compile: {compile_seconds:.1f} s wall, {compile_cpu:.1f} s CPU (at nice {compiled.COMPILE_NICENESS}); "
          f"max |compiled - xgboost| on 2000 rows: {worst:.2g}"
          + (f"; max |flat - xgboost|: {worst_flat:.2g}" if args.flat else "") + "\n")
    flat_header = f" {'flat':>10} {'flat/compiled':>14}" if args.flat else ""
    print(f"{'rows':>5} {'xgboost 1 thread':>17} {'xgboost all cores':>18} {'compiled':>10} {'compiled/best xgb':>18}"
          + flat_header)
    for size in SIZES:
        ms = {name: 1e3 * float(np.median(results[(name, size)])) for name in predictors}
        best = min(ms["xgboost 1 thread"], ms["xgboost all cores"])
        flat_cells = f" {ms['flat']:>7.3f} ms {ms['flat'] / ms['compiled']:>13.2f}x" if args.flat else ""
        print(f"{size:>5} {ms['xgboost 1 thread']:>14.3f} ms {ms['xgboost all cores']:>15.3f} ms "
              f"{ms['compiled']:>7.3f} ms {ms['compiled'] / best:>17.2f}x" + flat_cells)
    if cold:
        print("\none row after evicting the caches (what a served call pays), median: "
              + ", ".join(f"{name} {1e3 * float(np.median(v)):.3f} ms" for name, v in cold.items()))
    if args.explain:
        explain_costs(booster, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
