"""Is any tree evaluator faster than XGBoost's own for the served model?

    .venv/bin/python benchmarks/batch_evaluators.py [--rounds 400] [--venv .tools/ort-venv]

Issue 14 asks for v2 1000-row batches at 1.5x MLServer's rows/s. MLServer's
XGBoost runtime calls the same XGBoost predictor as this server, so that target
needs an evaluator faster than XGBoost itself. This script trains the served
model's shape (multi:softprob, 3 classes, depth 6, `--rounds` rounds) on the
SDSS sample and times, on the same 1000-row batch and on one row, in one run:

  xgboost   Booster.inplace_predict, nthread 1 and 2 (the baseline)
  onnxrt    ONNX Runtime's TreeEnsemble on the same trees (onnxmltools converts
            them), intra-op threads 1 and 2

ONNX Runtime and onnxmltools are installed by this script into their own
virtualenv (default .tools/ort-venv, git-ignored), never into the project's.
(tl2cgen's compiled trees are timed by benchmarks/compiled_predictor.py.)
Prints p50 per call and the ratio to XGBoost with the same threads; timings
are printed, never asserted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO.parent / "shared" / "data" / "sdss17_sample.csv.gz"
ORT_PACKAGES = ["onnxruntime==1.32.0", "onnxmltools==1.16.0", "onnx"]

# Runs in the ONNX Runtime virtualenv: model.ubj and features.npy in argv[1], prints one line per path.
TIMER = r'''
import os, statistics, sys, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np, onnxruntime as ort, xgboost as xgb
from onnxmltools.convert import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType
folder = sys.argv[1]
booster = xgb.Booster(); booster.load_model(f"{folder}/model.ubj"); booster.feature_names = None
batch = np.load(f"{folder}/features.npy")
expected = booster.inplace_predict(batch)
onnx_model = convert_xgboost(booster, initial_types=[("input", FloatTensorType([None, batch.shape[1]]))],
                             target_opset=15).SerializeToString()

def p50_ms(call, rows, calls):
    call(rows)
    times = []
    for _ in range(calls):
        start = time.perf_counter(); call(rows); times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000

for threads in (1, 2):
    copy = booster.copy(); copy.set_param({"nthread": threads})
    options = ort.SessionOptions(); options.intra_op_num_threads = threads; options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
    onnx_call = lambda rows: session.run(None, {"input": rows})[1]
    difference = float(np.abs(onnx_call(batch) - expected).max())
    for rows, calls in ((batch, 40), (batch[:1].copy(), 400)):
        base = p50_ms(copy.inplace_predict, rows, calls)
        onnx = p50_ms(onnx_call, rows, calls)
        print(f"{len(rows):>5} rows, {threads} thread(s): xgboost {base:8.3f} ms   onnxrt {onnx:8.3f} ms   "
              f"onnxrt/xgboost {onnx / base:5.2f}x   max difference {difference:.1e}")
'''


def ort_python(venv: Path) -> Path:
    """The virtualenv's python, with ONNX Runtime, onnxmltools and this project's xgboost version."""
    import xgboost

    from serving_benchmark import throwaway_venv  # this folder is on sys.path when a script here runs

    probe = "import onnxruntime, onnxmltools, xgboost; print(xgboost.__version__)"
    return throwaway_venv(venv, [*ORT_PACKAGES, f"xgboost=={xgboost.__version__}", "numpy"], probe,
                          xgboost.__version__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=400, help="boosting rounds of the model (400, as served)")
    parser.add_argument("--venv", default=str(REPO / ".tools" / "ort-venv"),
                        help="virtualenv for ONNX Runtime (made and filled by this script when it lacks them)")
    args = parser.parse_args(argv)

    import xgboost as xgb

    from stellar_core.contract import MODEL_INPUTS
    from stellar_core.features import build_features, derive_feature_matrix, feature_matrix, label_indices

    features, _ = build_features(pd.read_csv(SAMPLE))
    python = ort_python(Path(args.venv))
    print(f"training a {args.rounds}-round model on {len(features)} SDSS objects ...", flush=True)
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "tree_method": "hist", "max_depth": 6,
                         "eta": 0.1, "seed": 0},
                        xgb.DMatrix(feature_matrix(features), label=label_indices(features["label"])), args.rounds)
    inputs = np.ascontiguousarray(features.loc[:, list(MODEL_INPUTS)].to_numpy(dtype=np.float32))
    with tempfile.TemporaryDirectory() as folder:
        booster.save_model(f"{folder}/model.ubj")
        np.save(f"{folder}/features.npy", derive_feature_matrix(inputs[:1000]))
        done = subprocess.run([str(python), "-c", TIMER, folder], text=True)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
