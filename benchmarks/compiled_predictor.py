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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-rounds", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--compiler", default="gcc")
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
        results: dict[tuple[str, int], list[float]] = {}
        for repeat in range(args.repeats):
            for size in SIZES:
                calls = max(5, min(300, 3000 // size))
                starts = (repeat * 7919 + np.arange(calls) * size) % (len(rows) - size)
                chunks = [rows[s:s + size] for s in starts]
                for name, predict in (("xgboost 1 thread", xgb_one), ("xgboost all cores", xgb_all),
                                      ("compiled", fast)):
                    results.setdefault((name, size), []).append(median_call_seconds(predict, chunks))

    print(f"\n{args.model_rounds}-round model, {os.cpu_count()} CPUs, 1-min load average {os.getloadavg()[0]:.1f}; "
          f"compile: {compile_seconds:.1f} s wall, {compile_cpu:.1f} s CPU (at nice {compiled.COMPILE_NICENESS}); "
          f"max |compiled - xgboost| on 2000 rows: {worst:.2g}\n")
    print(f"{'rows':>5} {'xgboost 1 thread':>17} {'xgboost all cores':>18} {'compiled':>10} {'compiled/best xgb':>18}")
    for size in SIZES:
        ms = {name: 1e3 * float(np.median(results[(name, size)]))
              for name in ("xgboost 1 thread", "xgboost all cores", "compiled")}
        best = min(ms["xgboost 1 thread"], ms["xgboost all cores"])
        print(f"{size:>5} {ms['xgboost 1 thread']:>14.3f} ms {ms['xgboost all cores']:>15.3f} ms "
              f"{ms['compiled']:>7.3f} ms {ms['compiled'] / best:>17.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
