"""Explain (TreeSHAP contributions), BadRequest details on invalid input, and the predictor
named by GetModelInfo, over a real server on 127.0.0.1."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import xgboost as xgb

from stellar_core.contract import CLASSES
from stellar_core.features import FEATURE_NAMES, derive_feature_matrix
from stellar_api._generated.inference import grpc_predict_v2_pb2 as v2
from stellar_api._generated.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api.client import StellarClient, class_name, field_violations
from stellar_api.status_details import DETAILS_KEY
from stellar_serving.servicers import EXPLAIN_MAX_OBJECTS

from .messages import to_objects

MAX_BATCH = 50


@pytest.fixture
def served(make_server, registry):
    registry.set_champion("1")
    server = make_server(max_batch_size=MAX_BATCH)
    with StellarClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        yield server, client


def _margins(registry, version: str, inputs: np.ndarray) -> np.ndarray:
    """The booster's own class margins (scores before the softmax) for raw inputs: [n, classes]."""
    booster = registry.bundles[version].booster
    matrix = xgb.DMatrix(derive_feature_matrix(inputs), feature_names=booster.feature_names)
    return booster.predict(matrix, output_margin=True, strict_shape=True)


def _check_explains(response, registry, version: str, inputs: np.ndarray) -> None:
    assert response.model_version == version
    assert list(response.feature_names) == list(FEATURE_NAMES)
    expected = _margins(registry, version, inputs)
    assert len(response.explanations) == len(inputs)
    for k, explanation in enumerate(response.explanations):
        assert explanation.client_id == f"obj-{k}"
        assert [class_name(c.object_class) for c in explanation.class_contributions] == list(CLASSES)
        for j, contributions in enumerate(explanation.class_contributions):
            assert len(contributions.contributions) == len(FEATURE_NAMES)
            total = sum(contributions.contributions) + contributions.bias
            assert total == pytest.approx(expected[k, j], abs=1e-4), (k, j)
            assert contributions.margin == pytest.approx(expected[k, j], abs=1e-4)
        assert class_name(explanation.predicted_class) == CLASSES[int(expected[k].argmax())]


def test_explain_contributions_and_bias_sum_to_the_served_models_margin(served, registry, sample_inputs):
    server, client = served
    one = sample_inputs[:1]
    _check_explains(client.explain(to_objects(one)), registry, "1", one)
    batch = sample_inputs[10:17]
    _check_explains(client.explain(to_objects(batch)), registry, "1", batch)
    # Every contribution is used: the bias alone is not the margin.
    response = client.explain(to_objects(batch))
    assert any(abs(v) > 1e-3 for e in response.explanations for c in e.class_contributions for v in c.contributions)
    # The class Explain names is the one Classify answers.
    classified = client.classify_batch(to_objects(batch))
    assert [r.predicted_class for r in classified] == [class_name(e.predicted_class) for e in response.explanations]

    # After a swap the explanations come from the new version, and say so.
    registry.set_champion("2")
    assert client.reload_model().version == "2"
    _check_explains(client.explain(to_objects(batch)), registry, "2", batch)


def _refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return err.value


def test_explain_refuses_bad_input_as_classify_does(served, sample_inputs):
    server, client = served
    objects = to_objects(sample_inputs[:4])
    objects[2].ClearField("r")
    explained = _refusal(lambda: client.explain(objects))
    classified = _refusal(lambda: client.classify_batch(objects))
    assert explained.details() == classified.details() == "object 2 (client_id 'obj-2'): field 'r' is missing"
    assert [v.field for v in field_violations(explained)] == ["objects[2].r"]

    assert _refusal(lambda: client.explain([])).details() == f"batch is empty: send between 1 and {MAX_BATCH} objects"
    too_many = _refusal(lambda: client.explain(to_objects(sample_inputs[:MAX_BATCH + 1])))
    assert too_many.details().startswith(f"batch has {MAX_BATCH + 1} objects; the maximum is {MAX_BATCH}")
    long_id = to_objects(sample_inputs[:2])
    long_id[1].client_id = "x" * 300
    assert [v.field for v in field_violations(_refusal(lambda: client.explain(long_id)))] == ["objects[1].client_id"]
    # The server goes on explaining.
    assert client.explain(to_objects(sample_inputs[:1])).model_version == "1"


def test_explain_takes_a_bounded_batch_whatever_the_batch_size(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server(max_batch_size=EXPLAIN_MAX_OBJECTS * 5)
    with StellarClient(f"127.0.0.1:{server.port}", timeout=60) as client:
        error = _refusal(lambda: client.explain(to_objects(sample_inputs[:EXPLAIN_MAX_OBJECTS + 1])))
        assert error.details() == (f"Explain takes at most {EXPLAIN_MAX_OBJECTS} objects per call, "
                                   f"got {EXPLAIN_MAX_OBJECTS + 1}: split the request")
        assert [v.field for v in field_violations(error)] == ["objects"]
        assert len(client.explain(to_objects(sample_inputs[:EXPLAIN_MAX_OBJECTS])).explanations) == EXPLAIN_MAX_OBJECTS


def test_invalid_input_carries_bad_request_details_naming_object_and_field(served, sample_inputs):
    server, client = served
    objects = to_objects(sample_inputs[:5])
    objects[1].ClearField("g")
    objects[3].u = 99.0
    error = _refusal(lambda: client.classify_batch(objects))
    assert error.details().startswith("object 1 (client_id 'obj-1'): field 'g' is missing")
    violations = field_violations(error)
    assert [v.field for v in violations] == ["objects[1].g", "objects[3].u"]
    assert violations[0].description == "object 1 (client_id 'obj-1'): field 'g' is missing"
    assert violations[1].description == "object 3 (client_id 'obj-3'): field 'u' = 99 is outside the physical range [5, 40]"

    single = _refusal(lambda: client.classify(objects[1]))
    assert [v.field for v in field_violations(single)] == ["object.g"]

    stream = _refusal(lambda: list(client.classify_stream(objects, chunk_size=2)))
    assert [(v.field, v.description) for v in field_violations(stream)] == [
        ("objects[1].g", "stream message 0, object 1 (client_id 'obj-1'): field 'g' is missing")]

    # The v2 API: the tensor is named, the row and column in the description.
    features = derive_feature_matrix(sample_inputs[:3]).astype(np.float32)
    features[2, 4] = np.nan
    request = v2.ModelInferRequest(model_name="stellar-classifier", raw_input_contents=[features.tobytes()])
    request.inputs.add(name="input__0", datatype="FP32", shape=list(features.shape))
    v2_error = _refusal(lambda: v2_grpc.GRPCInferenceServiceStub(client.channel).ModelInfer(request, timeout=10))
    assert [(v.field, v.description) for v in field_violations(v2_error)] == [
        ("inputs[0]", "input__0 row 2: field 'z' is NaN")]


def _wire_fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """Protocol Buffers wire format -> [(field number, varint or bytes)], read by hand so the
    check does not share the server's message definitions."""
    fields, at = [], 0

    def varint() -> int:
        nonlocal at
        value, shift = 0, 0
        while True:
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while at < len(data):
        key = varint()
        number, kind = key >> 3, key & 7
        assert kind in (0, 2), f"unexpected wire type {kind}"
        if kind == 0:
            fields.append((number, varint()))
        else:
            length = varint()
            fields.append((number, data[at:at + length]))
            at += length
    return fields


def test_the_details_trailer_is_a_google_rpc_status_on_the_wire(served, sample_inputs):
    server, client = served
    objects = to_objects(sample_inputs[:2])
    objects[1].redshift = 50.0
    error = _refusal(lambda: client.classify_batch(objects))
    raw = dict(error.trailing_metadata())[DETAILS_KEY]
    # google.rpc.Status: code = 1, message = 2, details = 3 (google.protobuf.Any: type_url = 1, value = 2).
    status = _wire_fields(raw)
    assert (1, grpc.StatusCode.INVALID_ARGUMENT.value[0]) in status
    assert (2, error.details().encode()) in status
    any_fields = dict(_wire_fields(next(value for number, value in status if number == 3)))
    assert any_fields[1] == b"type.googleapis.com/google.rpc.BadRequest"
    # google.rpc.BadRequest: field_violations = 1 (FieldViolation: field = 1, description = 2).
    violation = dict(_wire_fields(dict(_wire_fields(any_fields[2]))[1]))
    assert violation[1] == b"objects[1].redshift"
    assert violation[2].decode().startswith("object 1 (client_id 'obj-1'): field 'redshift' = 50 is outside")


def _predictor(model) -> tuple[str, str]:
    return getattr(model, "predictor", "xgboost"), getattr(model, "predictor_note", "")


def test_model_info_names_the_predictor(served):
    server, client = served
    # The store may swap in a compiled predictor during the call: the answer is the state before or after.
    before = _predictor(server.store.current)
    info = client.model_info()
    after = _predictor(server.store.current)
    assert info.version == "1"
    assert info.predictor != ""
    assert (info.predictor, info.predictor_note) in {before, after}
