"""The tree kernel (stellar_serving/tree_kernel.py) against XGBoost, and the server's use of it.

Real compiles with the machine's gcc; the reference is always XGBoost's own
inplace_predict on the same float32 features. The kernel claims XGBoost's
arithmetic, so the answers are compared bit for bit.
"""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
import xgboost as xgb

from stellar_core.features import FEATURE_NAMES, build_features, derive_feature_matrix, feature_matrix, label_indices
from stellar_serving import tree_kernel
from stellar_serving.model_store import _kernel_probe_features

from .messages import probabilities_of, to_objects


def _train(sample, rounds: int, **params) -> xgb.Booster:
    features, _ = build_features(sample)
    matrix = xgb.DMatrix(feature_matrix(features), label=label_indices(features["label"]),
                         feature_names=list(FEATURE_NAMES))
    return xgb.train({"objective": "multi:softprob", "num_class": 3, "tree_method": "hist", "nthread": 2,
                      "seed": 3, **params}, matrix, rounds)


def _xgboost(booster):
    one = booster.copy()
    one.set_param({"nthread": 1})
    return lambda rows: one.inplace_predict(np.ascontiguousarray(rows, dtype=np.float32))


@pytest.fixture(scope="module")
def boosters(registry, sample) -> dict[str, xgb.Booster]:
    """The served test models (depth 4 and 2), a deep one whose trees end at many depths (padding), and one
    trained on a quarter of missing values, so default branches to both sides are learned."""
    features, _ = build_features(sample)
    missing = feature_matrix(features).copy()
    missing[np.random.default_rng(5).random(missing.shape) < 0.25] = np.nan
    sparse = xgb.train({"objective": "multi:softprob", "num_class": 3, "tree_method": "hist", "max_depth": 5,
                        "seed": 4}, xgb.DMatrix(missing, label=label_indices(features["label"])), 40)
    return {"v1": registry.bundles["1"].booster, "v2": registry.bundles["2"].booster,
            "deep": _train(sample, 25, max_depth=9, eta=0.3, min_child_weight=4), "missing": sparse}


def _rows(sample_inputs: np.ndarray, n: int, missing_share: float = 0.0, offset: int = 0) -> np.ndarray:
    rows = derive_feature_matrix(sample_inputs[offset:offset + n]).copy()
    if missing_share:
        rows[np.random.default_rng(n).random(rows.shape) < missing_share] = np.nan
    return rows


@pytest.mark.parametrize("rows", [1, 7, 64, 1000])
@pytest.mark.parametrize("model", ["v1", "v2", "deep", "missing"])
def test_the_kernel_answers_as_xgboost_bit_for_bit(boosters, sample_inputs, model, rows):
    booster = boosters[model]
    kernel = tree_kernel.TreeKernel(booster)
    reference = _xgboost(booster)
    for share in (0.0, 0.2):  # row groups with no missing value take another path through the C code
        features = _rows(sample_inputs, rows, share, offset=500)
        got = kernel(features)
        assert got.dtype == np.float32 and got.shape == (rows, 3)
        np.testing.assert_array_equal(got, reference(features))


def test_extreme_values_and_every_missing_value_follow_xgboost(boosters, sample_inputs):
    booster = boosters["missing"]
    features = _rows(sample_inputs, 40, offset=900)
    features[0:8] = np.nan  # a whole row group missing everything
    features[8:16, ::2] = np.inf
    features[16:24, 1::2] = -np.inf
    features[24:32] = np.float32(3.4e38)
    np.testing.assert_array_equal(tree_kernel.TreeKernel(booster)(features), _xgboost(booster)(features))


def test_two_threads_answer_as_one(boosters, sample_inputs):
    booster = boosters["v1"]
    features = _rows(sample_inputs, 1003, 0.05)  # not a multiple of the 8 rows walked side by side
    one = tree_kernel.TreeKernel(booster, threads=1)(features)
    np.testing.assert_array_equal(tree_kernel.TreeKernel(booster, threads=2)(features), one)
    # Split from 9 rows: halves of whole 8-row groups and a rest walked row by row.
    small = tree_kernel.TreeKernel(booster, threads=2, split_min_rows=9)
    for rows in (9, 17, 23):
        np.testing.assert_array_equal(small(features[:rows]), one[:rows])


@pytest.mark.parametrize("split_min_rows", [1, 9, 256])
def test_every_row_is_walked_once_and_only_rows_of_the_request(boosters, sample_inputs, split_min_rows):
    """However small STELLAR_PARALLEL_BATCH_MIN is, the halves cover the request's rows exactly."""
    booster = boosters["v1"]
    kernel = tree_kernel.TreeKernel(booster, threads=2, split_min_rows=split_min_rows)
    walk, walked = kernel._walk, []

    def recording_walk(features, out, first, last):
        walked.append((first, last))
        walk(features, out, first, last)

    kernel._walk = recording_walk
    reference = _xgboost(booster)
    for n in (*range(1, 20), 300):
        walked.clear()
        features = _rows(sample_inputs, n, 0.1)
        np.testing.assert_array_equal(kernel(features), reference(features))
        rows = sorted(walked)
        assert rows[0][0] == 0 and rows[-1][1] == n and all(a < b for a, b in rows), (n, rows)
        assert all(rows[k][1] == rows[k + 1][0] for k in range(len(rows) - 1)), (n, rows)


def test_a_busy_worker_is_not_waited_for(boosters, sample_inputs):
    """The worker thread is held by another call's half: the calling thread walks both halves itself."""
    kernel = tree_kernel.TreeKernel(boosters["v1"], threads=2)
    features = _rows(sample_inputs, 600)
    release = threading.Event()
    held = tree_kernel._worker().submit(release.wait, 30)
    try:
        got = kernel(features)  # returns while the worker is still held
        assert not held.done()
    finally:
        release.set()
        held.result(timeout=30)
    np.testing.assert_array_equal(got, _xgboost(boosters["v1"])(features))


def test_build_checks_the_kernel_against_the_reference(boosters):
    booster = boosters["v1"]
    kernel = tree_kernel.build(booster, _xgboost(booster), _kernel_probe_features())
    assert kernel.probe_difference == 0.0
    off = lambda rows: _xgboost(booster)(rows) + np.float32(1e-3)  # noqa: E731  a reference the kernel misses
    with pytest.raises(tree_kernel.KernelUnavailable, match=r"differed from XGBoost by 0\.001 .*at most 1e-05"):
        tree_kernel.build(booster, off, _kernel_probe_features())


def test_models_the_kernel_cannot_take_are_named(sample, boosters, tmp_path):
    too_deep = _train(sample, 3, max_depth=12, min_child_weight=0, eta=1.0)
    with pytest.raises(tree_kernel.KernelUnavailable, match=r"pads trees to depth 1[1-2]: .*at most depth 10"):
        tree_kernel.TreeKernel(too_deep)
    features, _ = build_features(sample)
    binary = xgb.train({"objective": "binary:logistic", "max_depth": 3},
                       xgb.DMatrix(feature_matrix(features), label=(features["label"] == "STAR").astype(int)), 5)
    with pytest.raises(tree_kernel.KernelUnavailable, match=r"objectives \('multi:softprob',\), not 'binary:logistic'"):
        tree_kernel.TreeKernel(binary)
    with pytest.raises(tree_kernel.KernelUnavailable, match="no C compiler for the tree kernel: 'no-such-cc-14'"):
        tree_kernel.TreeKernel(boosters["v1"], compiler="no-such-cc-14")
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'broken-cc: refusing to compile' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(tree_kernel.KernelUnavailable, match="compiling the tree kernel .* broken-cc: refusing"):
        tree_kernel.TreeKernel(boosters["v2"], compiler=str(broken))


# -- in the server -----------------------------------------------------------------------------------------


def _model_info(server):
    from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
    from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        return pb_grpc.ClassifierServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)


def _outcomes(server) -> dict[str, float]:
    return {sample.labels["outcome"]: sample.value for metric in server.metrics.tree_kernels.collect()
            for sample in metric.samples if sample.name.endswith("_total")}


def _classify_batch(server, inputs: np.ndarray) -> tuple[str, np.ndarray]:
    from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
    from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = pb_grpc.ClassifierServiceStub(channel).ClassifyBatch(
            pb.ClassifyBatchRequest(objects=to_objects(inputs)), timeout=30)
    proba = np.array([probabilities_of(r) for r in reply.results], dtype=np.float32)
    return reply.results[0].model_version, proba


def test_the_server_answers_every_request_with_the_kernel_and_says_so(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server(parallel_batch_min=64)
    model = server.store.current
    assert (model.predictor, model.predict_kernel is not None, model.predict_compiled) == ("tree_kernel", True, None)
    assert model.predict_kernel.split_min_rows == 64  # STELLAR_PARALLEL_BATCH_MIN
    info = _model_info(server)
    assert info.predictor == "tree_kernel"
    assert info.predictor_note.startswith("the tree kernel answers every request")
    assert "largest difference from XGBoost on probe rows 0" in info.predictor_note
    assert _outcomes(server) == {"built": 1.0}
    for rows in (1, 7, 1000):
        inputs = sample_inputs[100:100 + rows]
        version, proba = _classify_batch(server, inputs)
        assert version == "1"
        np.testing.assert_array_equal(proba, registry.expected("1", inputs))


def test_without_a_compiler_xgboost_answers_and_info_says_why(make_server, registry, sample_inputs, tmp_path):
    registry.set_champion("1")
    server = make_server(compiled_compiler=str(tmp_path / "no-such-cc"), explainer="xgboost")
    model = server.store.current
    assert (model.predictor, model.predict_kernel) == ("xgboost", None)
    info = _model_info(server)
    assert info.predictor == "xgboost"
    assert "no tree kernel: no C compiler for the tree kernel" in info.predictor_note
    assert _outcomes(server) == {"unavailable": 1.0}
    inputs = sample_inputs[:64]
    np.testing.assert_array_equal(_classify_batch(server, inputs)[1], registry.expected("1", inputs))


def test_switched_off_the_kernel_is_not_built(make_server, registry):
    registry.set_champion("1")
    server = make_server(tree_kernel="off")
    assert (server.store.current.predictor, server.store.current.predict_kernel) == ("xgboost", None)
    assert "tree kernel" not in _model_info(server).predictor_note
    assert _outcomes(server) == {"off": 1.0}


def test_a_bad_tree_kernel_setting_is_refused():
    from stellar_serving.config import ServingConfig

    with pytest.raises(ValueError, match=r"STELLAR_TREE_KERNEL must be one of \('auto', 'off'\), got 'on'"):
        ServingConfig.from_env({"STELLAR_TREE_KERNEL": "on"})
    # The kernel compiles too: a compiler setting that is not one command is refused while it is on.
    with pytest.raises(ValueError, match="STELLAR_COMPILED_PREDICTOR_CC must name a C compiler"):
        ServingConfig.from_env({"STELLAR_COMPILED_PREDICTOR": "off", "STELLAR_EXPLAINER": "xgboost",
                                "STELLAR_COMPILED_PREDICTOR_CC": "gcc; rm"})
