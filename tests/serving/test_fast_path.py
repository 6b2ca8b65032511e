"""The unary fast path in process: the direct booster call and the one-object validation.

Both replace slower code that stays in use elsewhere (Booster.inplace_predict,
the vectorised checks), so each is held to giving exactly what the slower code
gives.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from stellar_core.contract import CLASSES, MODEL_INPUTS
from stellar_core.features import derive_feature_matrix
from stellar_serving import booster_call
from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_serving.booster_call import BoosterCallError, DensePredictor
from stellar_api.validation import InvalidInput, objects_to_inputs

from .messages import to_objects


def _inplace(booster, features: np.ndarray) -> np.ndarray:
    return np.asarray(booster.inplace_predict(features), dtype=np.float32).reshape(-1, len(CLASSES))


@pytest.mark.parametrize("rows", [1, 7, 64, 1000])
def test_direct_call_gives_inplace_predict_bits(registry, sample_inputs, rows):
    booster = registry.bundles["1"].booster
    features = derive_feature_matrix(sample_inputs[100:100 + rows])
    predict = DensePredictor(booster, features.shape[1], len(CLASSES))
    assert predict(features).tobytes() == _inplace(booster, features).tobytes()


def test_direct_call_converts_strided_and_float64_input(registry, sample_inputs):
    booster = registry.bundles["2"].booster
    features = derive_feature_matrix(sample_inputs[:40])
    predict = DensePredictor(booster, features.shape[1], len(CLASSES))
    expected = _inplace(booster, features[::2])
    assert predict(features[::2]).tobytes() == expected.tobytes()  # not C-contiguous
    assert predict(features[::2].astype(np.float64)).tobytes() == expected.tobytes()


def test_wrong_width_and_wrong_output_count_are_refused(registry, sample_inputs):
    booster = registry.bundles["1"].booster
    features = derive_feature_matrix(sample_inputs[:3])
    with pytest.raises(ValueError, match="expected 13 features per row, got 6"):
        DensePredictor(booster, 13, len(CLASSES))(sample_inputs[:3])
    # A model answering 3 values per row where 2 were expected: refused, not reshaped into nonsense.
    with pytest.raises(BoosterCallError, match="answered 9 values for 3 rows x 2 outputs"):
        DensePredictor(booster, 13, 2)(features)


def test_threads_sharing_one_predictor_each_get_their_own_rows(registry, sample_inputs):
    """XGBoost writes results to a per-thread buffer; each caller must read its own."""
    booster = registry.bundles["1"].booster.copy()
    booster.set_param({"nthread": 1})
    predict = DensePredictor(booster, 13, len(CLASSES))
    features = derive_feature_matrix(sample_inputs[:800])
    expected = _inplace(booster, features)
    wrong: list[int] = []

    def work(offset: int) -> None:
        for k in range(offset, len(features), 8):
            if predict(features[k:k + 1]).tobytes() != expected[k:k + 1].tobytes():
                wrong.append(k)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_for_booster_falls_back_to_inplace_predict_when_the_call_is_unusable(registry, sample_inputs, monkeypatch):
    booster = registry.bundles["1"].booster
    probe = derive_feature_matrix(sample_inputs[:16])
    assert isinstance(DensePredictor.for_booster(booster, len(CLASSES), probe), DensePredictor)

    # An xgboost build without the C function (the one case that cannot be produced here for real).
    def no_function():
        raise AttributeError("libxgboost.so: undefined symbol: XGBoosterPredictFromDense")

    monkeypatch.setattr(booster_call, "_library", no_function)
    fallback = DensePredictor.for_booster(booster, len(CLASSES), probe)
    assert not isinstance(fallback, DensePredictor)
    assert fallback(probe).tobytes() == _inplace(booster, probe).tobytes()


def test_one_object_validation_matches_the_vectorised_checks(sample_inputs):
    for n in (1, 3, 8, 9, 50):  # 8 is the largest request the scalar check takes
        objects = to_objects(sample_inputs[:n], "v")
        got = objects_to_inputs(objects, 100)
        assert got.dtype == np.float32 and got.shape == (n, len(MODEL_INPUTS))
        assert got.tobytes() == sample_inputs[:n].tobytes()


@pytest.mark.parametrize("field, value, message", [
    ("redshift", None, "object 1 (client_id 'v-1'): field 'redshift' is missing"),
    ("g", float("nan"), "object 1 (client_id 'v-1'): field 'g' is NaN"),
    ("z", float("-inf"), "object 1 (client_id 'v-1'): field 'z' is -infinite"),
    ("u", 99.0, "object 1 (client_id 'v-1'): field 'u' = 99 is outside the physical range"),
])
def test_one_object_path_still_names_each_problem(sample_inputs, field, value, message):
    objects = to_objects(sample_inputs[:2], "v")
    broken = pb.SdssObject()
    broken.CopyFrom(objects[1])
    if value is None:
        broken.ClearField(field)
    else:
        setattr(broken, field, value)
    with pytest.raises(InvalidInput) as raised:
        objects_to_inputs([objects[0], broken], 100)
    assert str(raised.value).startswith(message)


def test_an_explicit_zero_redshift_is_accepted_on_the_one_object_path(sample_inputs):
    obj = to_objects(sample_inputs[:1], "v")[0]
    obj.redshift = 0.0
    assert objects_to_inputs([obj], 10)[0, MODEL_INPUTS.index("redshift")] == 0.0
