"""C TreeSHAP (stellar_serving/treeshap.py) against XGBoost's pred_contribs, and Explain's use of it.

Real compiles with the machine's gcc; the reference is always XGBoost's own
pred_contribs and output_margin on the same float32 features.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import xgboost as xgb

from stellar_core.contract import CLASSES
from stellar_core.features import FEATURE_NAMES, build_features, derive_feature_matrix, feature_matrix, label_indices
from stellar_api.client import StellarClient
from stellar_serving import treeshap
from stellar_serving.servicers import Explainer

from .messages import to_objects

TOLERANCE = treeshap.PROBE_TOLERANCE
SETTLE_TIMEOUT = 120  # seconds: only to detect a hang (a build on a busy 2-core machine)


def _features(sample_inputs: np.ndarray, rows: int, offset: int = 0) -> np.ndarray:
    return derive_feature_matrix(sample_inputs[offset:offset + rows])


def _xgboost(booster, features: np.ndarray) -> np.ndarray:
    return treeshap.xgboost_contributions(booster, features).astype(np.float64)


def _margins(booster, features: np.ndarray) -> np.ndarray:
    return booster.predict(xgb.DMatrix(features, nthread=1), output_margin=True, strict_shape=True,
                           validate_features=False)


@pytest.fixture(scope="module")
def explainers(registry) -> dict[str, treeshap.TreeShap]:
    return {version: treeshap.TreeShap(bundle.booster) for version, bundle in registry.bundles.items()}


@pytest.fixture(scope="module")
def deep_booster(sample):
    """Depth 9 on 13 features: paths split on the same feature again and again, and have up to 9
    distinct features (five quadrature points, where the served models need three)."""
    features, _ = build_features(sample)
    matrix = xgb.DMatrix(feature_matrix(features), label=label_indices(features["label"]),
                         feature_names=list(FEATURE_NAMES))
    return xgb.train({"objective": "multi:softprob", "num_class": 3, "tree_method": "hist", "nthread": 2,
                      "max_depth": 9, "eta": 0.3, "seed": 9}, matrix, 15)


@pytest.mark.parametrize("rows", [1, 7, 64, 1000])
@pytest.mark.parametrize("version", ["1", "2"])
def test_c_treeshap_agrees_with_pred_contribs_and_sums_to_the_margin(explainers, registry, sample_inputs,
                                                                     version, rows):
    booster = registry.bundles[version].booster
    features = _features(sample_inputs, rows, offset=37)
    got = explainers[version](features)
    assert got.shape == (rows, len(CLASSES), len(FEATURE_NAMES) + 1)
    assert np.abs(got - _xgboost(booster, features)).max() <= TOLERANCE
    assert np.abs(got.sum(axis=2) - _margins(booster, features)).max() <= TOLERANCE
    assert np.abs(got[..., :-1]).max() > 1e-3  # the features carry the explanation, not the bias alone


def test_missing_values_take_the_default_branches(explainers, registry, sample_inputs):
    inputs = sample_inputs[:500].copy()
    inputs[np.random.default_rng(3).random(inputs.shape) < 0.2] = np.nan  # colours of a missing band are NaN too
    features = derive_feature_matrix(inputs)
    assert np.isnan(features).any()
    for version, explain in explainers.items():
        booster = registry.bundles[version].booster
        got = explain(features)
        assert np.abs(got - _xgboost(booster, features)).max() <= TOLERANCE, version
        assert np.abs(got.sum(axis=2) - _margins(booster, features)).max() <= TOLERANCE, version


def test_deep_trees_with_repeated_features_agree(deep_booster, sample_inputs):
    explain = treeshap.TreeShap(deep_booster)
    assert explain.trees.n_points >= 4
    assert explain.trees.unique_count.max() > 6
    features = _features(sample_inputs, 300, offset=900)
    assert np.abs(explain(features) - _xgboost(deep_booster, features)).max() <= TOLERANCE


@pytest.mark.parametrize("model", ["served", "deep"])
def test_two_halves_of_the_trees_add_up_to_the_whole(model, registry, deep_booster, sample_inputs):
    # 1,200 trees, and 45 (an odd count: unequal halves); rows with missing values.
    booster = registry.bundles["1"].booster if model == "served" else deep_booster
    whole, halves = treeshap.TreeShap(booster, threads=1), treeshap.TreeShap(booster, threads=2)
    assert whole._split is None and halves._split == whole.trees.n_trees // 2
    inputs = sample_inputs[:64].copy()
    inputs[np.random.default_rng(5).random(inputs.shape) < 0.2] = np.nan
    for features in (_features(sample_inputs, 1, offset=11), derive_feature_matrix(inputs)):
        assert np.abs(halves(features) - whole(features)).max() <= 1e-12
    assert np.abs(whole(features) - _xgboost(booster, features)).max() <= TOLERANCE


def test_build_checks_against_xgboost_and_refuses_what_differs(registry):
    booster = registry.bundles["1"].booster
    probe = treeshap.probe_features()
    assert np.isnan(probe).any()
    assert isinstance(treeshap.build(booster, probe), treeshap.TreeShap)
    # Float32 XGBoost and float64 C differ in the last bits: a zero tolerance shows the check can fail.
    with pytest.raises(treeshap.ExplainerUnavailable, match="differed from XGBoost's pred_contribs"):
        treeshap.build(booster, probe, tolerance=0.0)
    # Another model's explainer is far off.
    other = treeshap.TreeShap(registry.bundles["2"].booster)
    assert treeshap.max_difference(other, booster, probe) > 1e-2


def test_a_compiler_that_does_not_exist_is_reported(registry, tmp_path):
    missing = str(tmp_path / "no-such-cc")
    with pytest.raises(treeshap.ExplainerUnavailable, match="no C compiler for TreeSHAP"):
        treeshap.build(registry.bundles["1"].booster, treeshap.probe_features(), missing)


def _settle(explainer: Explainer, model) -> treeshap.TreeShap | None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while explainer.describe(model)[1] == Explainer.PREPARING_NOTE:
        assert time.monotonic() < deadline, "the C TreeSHAP build never settled"
        time.sleep(0.05)
    return explainer.c_explainer(model)


class _Model:
    """What Explainer reads of a LoadedModel."""

    def __init__(self, bundle, version: str, compiling: bool = False) -> None:
        self.bundle, self.version, self.classes, self.parallel_batch_min = bundle, version, CLASSES, 256
        self.compiling = compiling  # still waiting for its compiled predictor


def test_explainer_uses_c_treeshap_once_ready(registry, sample_inputs):
    explainer = Explainer()
    model = _Model(registry.bundles["1"], "1")
    inputs = sample_inputs[:7]
    assert explainer.c_explainer(model) is None  # nothing prepared: XGBoost answers
    first = explainer.contributions(model, inputs)
    explainer.prepare(model)  # as the store swaps v1 in
    explain = _settle(explainer, model)
    assert explain is not None, explainer.describe(model)
    assert explainer.describe(model) == (Explainer.C_TREESHAP, "C TreeSHAP (within 1e-05 of XGBoost pred_contribs "
                                                              "on probe rows) explains v1")
    got = explainer.contributions(model, inputs)
    np.testing.assert_array_equal(got, explain(derive_feature_matrix(inputs)).astype(np.float32))
    assert np.abs(got.astype(np.float64) - first).max() <= TOLERANCE
    # Another version: its own explainer, never the previous one's.
    other = _Model(registry.bundles["2"], "2")
    assert explainer.c_explainer(other) is None
    explainer.prepare(other)
    explain_other = _settle(explainer, other)
    assert explain_other is not None and explain_other is not explain
    assert np.abs(explainer.contributions(other, inputs) - _xgboost(registry.bundles["2"].booster,
                                                                    derive_feature_matrix(inputs))).max() <= TOLERANCE


def test_explainer_falls_back_to_xgboost_when_compiling_fails(registry, sample_inputs, tmp_path):
    explainer = Explainer(compiler=str(tmp_path / "no-such-cc"))
    model = _Model(registry.bundles["1"], "1")
    inputs = sample_inputs[:64]
    explainer.prepare(model)
    assert _settle(explainer, model) is None
    which, note = explainer.describe(model)
    assert which == Explainer.XGBOOST
    assert "XGBoost pred_contribs explains v1" in note and "no C compiler" in note
    got = explainer.contributions(model, inputs)
    want = treeshap.xgboost_contributions(registry.bundles["1"].booster, derive_feature_matrix(inputs))
    np.testing.assert_array_equal(got, want.astype(np.float32))  # XGBoost's own answer, bit for bit


def test_explainer_without_a_compiler_setting_explains_with_xgboost_and_says_why(registry, sample_inputs):
    explainer = Explainer(compiler=None)  # STELLAR_EXPLAINER=xgboost
    model = _Model(registry.bundles["1"], "1")
    inputs = sample_inputs[:7]
    explainer.prepare(model)
    got = explainer.contributions(model, inputs)
    assert explainer.c_explainer(model) is None
    assert explainer.describe(model) == (Explainer.XGBOOST, Explainer.OFF_NOTE)
    want = treeshap.xgboost_contributions(registry.bundles["1"].booster, derive_feature_matrix(inputs))
    np.testing.assert_array_equal(got, want.astype(np.float32))


def _contributions(response) -> np.ndarray:
    return np.array([[list(c.contributions) + [c.bias] for c in e.class_contributions]
                     for e in response.explanations], dtype=np.float32)


def test_the_server_explains_with_c_treeshap_from_the_version_that_answers(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server()
    inputs = sample_inputs[20:27]
    features = derive_feature_matrix(inputs)
    with StellarClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        for version in ("1", "2"):
            if version == "2":
                registry.set_champion("2")
                assert client.reload_model().version == "2"
            before = client.model_info()  # GetModelInfo names the explainer of the version it serves
            assert before.version == version
            # Built in the background since the version was swapped in: under way or ready.
            assert (before.explainer, before.explainer_note) in {
                ("xgboost", Explainer.PREPARING_NOTE),
                ("c_treeshap", f"C TreeSHAP (within 1e-05 of XGBoost pred_contribs on probe rows) explains v{version}")}
            c_answer = treeshap.TreeShap(registry.bundles[version].booster)(features).astype(np.float32)
            xgb_answer = _xgboost(registry.bundles[version].booster, features).astype(np.float32)
            assert not np.array_equal(c_answer, xgb_answer)  # the two are told apart by their last bits
            deadline = time.monotonic() + SETTLE_TIMEOUT
            while True:
                response = client.explain(to_objects(inputs))
                assert response.model_version == version
                got = _contributions(response)
                assert np.abs(got.astype(np.float64) - xgb_answer).max() <= TOLERANCE
                if np.array_equal(got, c_answer):
                    break
                assert time.monotonic() < deadline, f"C TreeSHAP never answered for version {version}"
                time.sleep(0.1)
            after = client.model_info()
            assert (after.version, after.explainer) == (version, "c_treeshap")
            assert f"C TreeSHAP (within 1e-05 of XGBoost pred_contribs on probe rows) explains v{version}" == \
                after.explainer_note
    registry.set_champion("1")


def test_a_server_told_to_explain_with_xgboost_never_compiles(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server(explainer="xgboost")
    inputs = sample_inputs[:3]
    with StellarClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        got = _contributions(client.explain(to_objects(inputs)))
        info = client.model_info()
    assert (info.explainer, info.explainer_note) == ("xgboost", Explainer.OFF_NOTE)
    want = _xgboost(registry.bundles["1"].booster, derive_feature_matrix(inputs)).astype(np.float32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("env, message", [
    ({"STELLAR_EXPLAINER": "c"}, "STELLAR_EXPLAINER must be one of ('auto', 'xgboost'), got 'c'"),
    # The compiler is checked when C TreeSHAP may compile, even with the compiled predictor off.
    ({"STELLAR_COMPILED_PREDICTOR": "off", "STELLAR_COMPILED_PREDICTOR_CC": "gcc; rm"},
     "STELLAR_COMPILED_PREDICTOR_CC must name a C compiler"),
])
def test_bad_explainer_settings_are_refused(env, message):
    from stellar_serving.config import ServingConfig

    with pytest.raises(ValueError) as err:
        ServingConfig.from_env(env)
    assert message in str(err.value)
    assert "STELLAR_EXPLAINER" in ServingConfig.env_vars()
    ServingConfig.from_env({"STELLAR_COMPILED_PREDICTOR": "off", "STELLAR_EXPLAINER": "xgboost",
                            "STELLAR_TREE_KERNEL": "off", "STELLAR_REQUEST_DECODER": "off",
                            "STELLAR_COMPILED_PREDICTOR_CC": "gcc; rm"})  # nothing compiles: not checked
