"""C TreeSHAP (stellar_serving/treeshap.py) against XGBoost's pred_contribs, in one process.

    .venv/bin/python benchmarks/treeshap_c.py [--model-rounds 400] [--check-rows 5000] [--calls 300]

Trains the serving benchmark's champion (compiled_predictor.train: multi:softprob,
depth 6, eta 0.1) on the SDSS sample, then:
- checks the C contributions against XGBoost's pred_contribs (one thread) on
  --check-rows real rows and on the same rows with a quarter of the values set
  missing (NaN): the largest absolute difference, and the largest difference
  between a row's contributions + bias and XGBoost's margin (output_margin),
  beside the same for XGBoost's own contributions (its float32 rounding);
- times, interleaved, one-object calls (a different row each call) and
  batches of 7, 64 and 256 rows: C TreeSHAP, and XGBoost on a one-thread
  copy of the booster (what Explain uses today for small requests) and on all
  cores. Prints medians; nothing is asserted.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the server sets it before loading xgboost

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiled_predictor import median_call_seconds, train  # noqa: E402

BATCHES = (1, 7, 64, 256)


def check(explain, booster, rows: np.ndarray) -> tuple[float, float, float]:
    """On `rows`: max |C - pred_contribs|, max |sum of C contributions - output_margin|, and XGBoost's
    own max |sum of pred_contribs - output_margin| (its float32 rounding, for scale)."""
    import xgboost as xgb

    from stellar_serving.treeshap import xgboost_contributions

    got, reference = explain(rows), xgboost_contributions(booster, rows).astype(np.float64)
    margins = booster.predict(xgb.DMatrix(rows, nthread=1), output_margin=True, strict_shape=True,
                              validate_features=False)
    return (float(np.abs(got - reference).max()), float(np.abs(got.sum(axis=2) - margins).max()),
            float(np.abs(reference.sum(axis=2) - margins).max()))


def with_missing(rows: np.ndarray, fraction: float = 0.25, seed: int = 14) -> np.ndarray:
    rows = rows.copy()
    rows[np.random.default_rng(seed).random(rows.shape) < fraction] = np.nan
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-rounds", type=int, default=400)
    parser.add_argument("--check-rows", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=300, help="one-object calls per predictor and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurement rounds")
    parser.add_argument("--compiler", default="gcc")
    args = parser.parse_args(argv)

    from stellar_serving import treeshap
    from stellar_serving.treeshap import xgboost_contributions

    print(f"training a {args.model_rounds}-round model ...", flush=True)
    booster, rows = train(args.model_rounds)
    single = booster.copy()
    single.set_param({"nthread": 1})
    start = time.perf_counter()
    explain = treeshap.TreeShap(booster, args.compiler)
    build_seconds = time.perf_counter() - start
    t = explain.trees
    print(f"built in {build_seconds:.2f} s (arrays + gcc -O3, first in this process): {t.n_trees} trees, "
          f"{len(t.leaf_value)} leaves, {len(t.node_feature)} nodes, mean distinct features per leaf "
          f"{t.unique_count.mean():.2f}")
    check_rows = rows[:args.check_rows]
    for name, sample in (("real rows", check_rows), ("real rows, 25% missing", with_missing(check_rows))):
        difference, margin, own = check(explain, single, sample)
        print(f"{name} ({len(sample)}): max |C - pred_contribs| {difference:.3g}; max |sum of C - output_margin| "
              f"{margin:.3g} (XGBoost's own sum of pred_contribs - output_margin: {own:.3g})")

    halves = treeshap.TreeShap(booster, args.compiler, threads=2)  # as served on 2+ cores: half the trees each
    explain_one_thread = treeshap.TreeShap(booster, args.compiler, threads=1)
    predictors = {"C treeshap": explain_one_thread, "C treeshap 2 threads": halves,
                  "xgboost 1 thread": lambda r: xgboost_contributions(single, r),
                  "xgboost all cores": lambda r: xgboost_contributions(booster, r)}
    results: dict[tuple[str, int], list[float]] = {}
    for repeat in range(args.repeats):
        for size in BATCHES:
            calls = args.calls if size == 1 else max(3, min(50, 500 // size))
            starts = (repeat * 7919 + np.arange(calls) * (size * 13 + 1)) % (len(rows) - size)
            chunks = [rows[s:s + size] for s in starts]
            for name, predict in predictors.items():
                results.setdefault((name, size), []).append(median_call_seconds(predict, chunks))
    print(f"\nmedian per call, {args.repeats} interleaved repeats, {os.cpu_count()} CPUs, "
          f"1-min load {os.getloadavg()[0]:.1f}:")
    print(f"{'rows':>5} " + " ".join(f"{name:>18}" for name in predictors) + f" {'xgb 1 thread / C':>17}")
    for size in BATCHES:
        ms = {name: 1e3 * float(np.median(results[(name, size)])) for name in predictors}
        print(f"{size:>5} " + " ".join(f"{ms[name]:>15.3f} ms" for name in predictors)
              + f" {ms['xgboost 1 thread'] / ms['C treeshap']:>16.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
