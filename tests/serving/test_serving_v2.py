"""Open Inference Protocol (KServe v2) with the unchanged tritonclient[grpc] client."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

import grpc

from stellar_core.contract import CLASSES, MODEL_INPUTS
from stellar_core.features import FEATURE_NAMES, derive_feature_matrix
from stellar_api._generated.inference import grpc_predict_v2_pb2 as v2
from stellar_api._generated.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from stellar_api.client import class_name

from .messages import probabilities_of, to_objects

MODEL = "stellar-classifier"


@pytest.fixture
def served(make_server, registry):
    registry.set_champion("1")
    server = make_server()
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield server, client
    client.close()


def _infer(client, features: np.ndarray, **kwargs):
    tensor = triton.InferInput("input__0", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    return client.infer(MODEL, [tensor], **kwargs)


def test_liveness_readiness_and_metadata(served):
    server, client = served
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version="1")
    assert not client.is_model_ready(MODEL, model_version="7")
    meta = client.get_model_metadata(MODEL)
    assert (meta.name, list(meta.versions)) == (MODEL, ["1"])
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input__0", "FP32", [-1, 13])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("output__0", "FP32", [-1, 3]), ("output__1", "INT64", [-1])]
    assert client.get_server_metadata().name == "stellar"
    # Column names and order travel in the metadata properties (a field tritonclient's own
    # proto lacks, so read with our stub).
    stub = v2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    props = stub.ModelMetadata(v2.ModelMetadataRequest(name=MODEL), timeout=5).properties
    assert props["input__0.columns"].split(",") == list(FEATURE_NAMES)
    assert props["output__0.columns"].split(",") == list(CLASSES)
    assert props["raw_inputs"].split(",") == list(MODEL_INPUTS)


def test_infer_on_real_objects_is_identical_to_classify(served, registry, sample_inputs):
    server, client = served
    inputs = sample_inputs[1000:1300]
    features = derive_feature_matrix(inputs)
    result = _infer(client, features, request_id="req-7")
    proba, index = result.as_numpy("output__0"), result.as_numpy("output__1")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (MODEL, "1", "req-7")
    assert proba.dtype == np.float32 and proba.shape == (300, 3)
    assert index.dtype == np.int64 and index.tolist() == proba.argmax(axis=1).tolist()

    stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    batch = stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=to_objects(inputs)), timeout=10)
    assert proba.tolist() == [probabilities_of(r) for r in batch.results]
    assert [CLASSES[k] for k in index] == [class_name(r.predicted_class) for r in batch.results]
    assert proba.tolist() == registry.expected("1", inputs).tolist()

    only = _infer(client, features[:5], outputs=[triton.InferRequestedOutput("output__1")])
    assert only.as_numpy("output__0") is None
    assert only.as_numpy("output__1").tolist() == index[:5].tolist()


def test_typed_contents_give_the_same_answer(served, sample_inputs):
    server, client = served
    features = derive_feature_matrix(sample_inputs[:40])
    stub = v2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    request = v2.ModelInferRequest(model_name=MODEL, inputs=[v2.ModelInferRequest.InferInputTensor(
        name="input__0", datatype="FP32", shape=[40, 13],
        contents=v2.InferTensorContents(fp32_contents=features.ravel().tolist()))])
    response = stub.ModelInfer(request, timeout=10)
    typed = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(40, 3)
    assert typed.tolist() == _infer(client, features).as_numpy("output__0").tolist()


def _error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as err:
        call()
    return err.value


def test_wrong_requests_get_standard_codes_and_clear_messages(served, sample_inputs):
    server, client = served
    features = derive_feature_matrix(sample_inputs[:4])

    def infer(array, datatype="FP32", model=MODEL, version=""):
        tensor = triton.InferInput("input__0", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return client.infer(model, [tensor], model_version=version)

    cases = [
        (lambda: infer(features.astype(np.float64), "FP64"), "StatusCode.INVALID_ARGUMENT",
         "input__0 has datatype FP64; expected FP32"),
        (lambda: infer(np.ascontiguousarray(features[:, :6])), "StatusCode.INVALID_ARGUMENT",
         "input__0 has shape [4, 6]; expected [n, 13]"),
        (lambda: infer(features.reshape(2, 2, 13)), "StatusCode.INVALID_ARGUMENT",
         "input__0 has shape [2, 2, 13]"),
        (lambda: infer(features, model="resnet50"), "StatusCode.NOT_FOUND",
         "unknown model 'resnet50'; this server serves 'stellar-classifier'"),
        (lambda: infer(features, version="9"), "StatusCode.NOT_FOUND",
         "model 'stellar-classifier' version '9' is not being served; current version is '1'"),
        (lambda: client.get_model_metadata("resnet50"), "StatusCode.NOT_FOUND", "unknown model 'resnet50'"),
    ]
    bad_colour = features.copy()
    bad_colour[2, 7] += 0.5  # g_r no longer g - r
    cases.append((lambda: infer(bad_colour), "StatusCode.INVALID_ARGUMENT",
                  "input__0 row 2: column 7 (g_r) is"))
    nan_input = features.copy()
    nan_input[3, 0] = np.nan
    cases.append((lambda: infer(nan_input), "StatusCode.INVALID_ARGUMENT", "input__0 row 3: field 'u' is NaN"))
    far = features.copy()
    far[1, 5] = 11.0
    cases.append((lambda: infer(far), "StatusCode.INVALID_ARGUMENT",
                  "input__0 row 1: field 'redshift' = 11 is outside the physical range [-0.1, 10]"))
    for call, status, text in cases:
        error = _error(call)
        assert error.status() == status, error
        assert text in error.message(), error
    assert client.is_server_ready()  # still serving
