"""The served tree kernel and tl2cgen's compiled trees against XGBoost, in one process, on the same rows.

    .venv/bin/python benchmarks/compiled_predictor.py [--model-rounds 400] [--repeats 5] [--cold]

Trains the serving benchmark's champion (multi:softprob, depth 6, eta 0.1) on
the SDSS sample, builds the tree kernel (stellar_serving.tree_kernel, timed)
and compiles the model with stellar_serving.compiled (timed), then measures, in
interleaved repeats, the predictors the server can use:

  xgboost 1 thread   booster_call.DensePredictor on a one-thread copy
  xgboost all cores  booster_call.DensePredictor on the booster
  compiled           compiled.CompiledPredictor (tl2cgen; one thread, row by row)
  kernel 1 thread    tree_kernel.TreeKernel on one thread
  kernel             tree_kernel.TreeKernel as served (two threads from 256 rows)

for requests of 1 to 1000 rows, and prints the median time per call and the
ratios of the served kernel to the faster XGBoost predictor and to compiled.

In a server, the trees are not in the CPU's caches when a request comes: the
gRPC and Python work between two calls evicts them (the compiled library of a
400-round model is ~1.8 MB of code, the kernel's arrays 0.9 MB of data).
`--cold` also times one-row calls after evicting the caches (reading a 32 MB
buffer), which is what a served call pays.
`--explain` times what the Explain RPC computes for one object: XGBoost's
exact TreeSHAP (`pred_contribs`) on a one-thread copy of the booster, for the
first 1, 100, 200 and all rounds (its cost per round), and with the rounds
split over two threads (two sliced boosters, contributions summed).
Timings are printed, never asserted; the kernel's and compiled's largest
differences from XGBoost on 2000 rows are printed beside them.
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
    parser.add_argument("--explain", action="store_true", help="also time TreeSHAP for one object (see above)")
    args = parser.parse_args(argv)

    from stellar_serving import compiled, tree_kernel
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
        start = time.perf_counter()
        kernel = tree_kernel.TreeKernel(booster, args.compiler)
        kernel_seconds = time.perf_counter() - start
        kernel_one = tree_kernel.TreeKernel(booster, args.compiler, threads=1)
        worst_kernel = max(compiled.max_difference(k, xgb_one, rows[:2000]) for k in (kernel, kernel_one))
        predictors = {"xgboost 1 thread": xgb_one, "xgboost all cores": xgb_all, "compiled": fast,
                      "kernel 1 thread": kernel_one, "kernel": kernel}
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
          f"kernel built in {kernel_seconds:.2f} s; max |compiled - xgboost| on 2000 rows: {worst:.2g}, "
          f"max |kernel - xgboost|: {worst_kernel:.2g}\n")
    print(f"{'rows':>5}" + "".join(f" {name:>17}" for name in predictors) + f" {'kernel/best xgb':>16} "
          f"{'kernel/compiled':>16}")
    for size in SIZES:
        ms = {name: 1e3 * float(np.median(results[(name, size)])) for name in predictors}
        best = min(ms["xgboost 1 thread"], ms["xgboost all cores"])
        print(f"{size:>5}" + "".join(f" {ms[name]:>14.3f} ms" for name in predictors)
              + f" {ms['kernel'] / best:>15.2f}x {ms['kernel'] / ms['compiled']:>15.2f}x")
    if cold:
        print("\none row after evicting the caches (what a served call pays), median: "
              + ", ".join(f"{name} {1e3 * float(np.median(v)):.3f} ms" for name, v in cold.items()))
    if args.explain:
        explain_costs(booster, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
