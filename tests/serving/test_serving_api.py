"""stellar.v1 over a real server on 127.0.0.1: every RPC, health, reflection, metrics, bad input."""

from __future__ import annotations

import math
import queue
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stellar_core.contract import CLASSES, MODEL_INPUTS
from stellar_core.features import FEATURE_NAMES
from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from stellar_api.client import StellarClient, class_name

from .messages import probabilities_of, to_objects

MAX_BATCH = 200


@pytest.fixture
def served(make_server, registry):
    registry.set_champion("1")
    server = make_server(max_batch_size=MAX_BATCH, max_concurrent_streams=1, max_message_bytes=256 * 1024)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield server, pb_grpc.ClassifierServiceStub(channel), channel
    channel.close()


def test_classify_one_real_object_matches_in_process_prediction(served, registry, sample_inputs):
    server, stub, _ = served
    obj = to_objects(sample_inputs[:1], "spec")[0]
    result = stub.Classify(pb.ClassifyRequest(object=obj), timeout=10).result
    expected = registry.expected("1", sample_inputs[:1])[0]
    assert result.client_id == "spec-0"
    assert result.model_version == "1"
    assert probabilities_of(result) == expected.tolist()  # float32 on both sides: exactly equal
    assert class_name(result.predicted_class) == CLASSES[int(expected.argmax())]


def test_batch_and_stream_match_in_process_predictions(served, registry, sample_inputs):
    server, stub, _ = served
    inputs = sample_inputs[:MAX_BATCH]
    expected = registry.expected("1", inputs)
    batch = stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=to_objects(inputs)), timeout=10)
    assert batch.model_version == "1"
    assert [r.client_id for r in batch.results] == [f"obj-{k}" for k in range(len(inputs))]
    assert np.array([probabilities_of(r) for r in batch.results], dtype=np.float32).tolist() == expected.tolist()

    chunks = [to_objects(sample_inputs[k:k + 70], f"c{k}") for k in range(0, 350, 70)]
    responses = list(stub.ClassifyStream(iter(pb.ClassifyStreamRequest(objects=c) for c in chunks), timeout=20))
    assert [len(r.results) for r in responses] == [70] * 5
    streamed = np.array([probabilities_of(r) for resp in responses for r in resp.results], dtype=np.float32)
    assert streamed.tolist() == registry.expected("1", sample_inputs[:350]).tolist()
    assert responses[3].results[0].client_id == "c210-0"


def test_model_info_describes_the_champion(served, registry):
    server, stub, _ = served
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert (info.name, info.version, info.alias, info.source) == ("stellar-classifier", "1", "champion", "registry")
    assert (info.training_window_first_week, info.training_window_last_week) == registry.windows["1"]
    assert info.metrics["accuracy"] == pytest.approx(0.9)
    assert list(info.contract.features) == list(FEATURE_NAMES)
    assert list(info.contract.inputs) == list(MODEL_INPUTS)
    assert list(info.contract.classes) == list(CLASSES)
    assert {r.name: (r.min, r.max) for r in info.contract.input_ranges}["redshift"] == (-0.1, 10.0)
    assert info.run_id and info.loaded_at.seconds > 0


def test_health_and_reflection_list_the_services(served):
    server, _, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "stellar.v1.ClassifierService", "inference.GRPCInferenceService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service

    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="stellar.v1.ClassifierService")]
    answers = list(reflect.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"stellar.v1.ClassifierService", "inference.GRPCInferenceService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    from google.protobuf import descriptor_pb2

    files = []
    for answer in answers[1:]:
        assert answer.WhichOneof("message_response") == "file_descriptor_response", answer
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            files.append(descriptor_pb2.FileDescriptorProto.FromString(raw))
    by_name = {f.name: f for f in files}
    assert "ModelInfer" in [m.name for m in by_name["inference/grpc_predict_v2.proto"].service[0].method]
    assert "ClassifyStream" in [m.name for m in by_name["stellar/v1/classifier.proto"].service[0].method]


def _objects_with(**changes):
    base = dict(u=19.5, g=18.1, r=17.4, i=17.0, z=16.8, redshift=0.08)
    base.update(changes)
    return pb.SdssObject(client_id="bad-one", **{k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize("changes, expected", [
    (dict(u=None), "field 'u' is missing"),
    (dict(redshift=None), "field 'redshift' is missing"),
    (dict(g=math.nan), "field 'g' is NaN"),
    (dict(r=math.inf), "field 'r' is +infinite"),
    (dict(z=-math.inf), "field 'z' is -infinite"),
    (dict(i=45.0), "field 'i' = 45 is outside the physical range [5, 40]"),
    (dict(u=-9999.0), "field 'u' = -9999 is outside the physical range [5, 40]"),
    (dict(redshift=-0.5), "field 'redshift' = -0.5 is outside the physical range [-0.1, 10]"),
    (dict(redshift=12.0), "field 'redshift' = 12 is outside the physical range [-0.1, 10]"),
])
def test_each_invalid_object_is_named_and_the_server_keeps_serving(served, sample_inputs, changes, expected):
    server, stub, _ = served
    good = to_objects(sample_inputs[:3])
    with pytest.raises(grpc.RpcError) as single:
        stub.Classify(pb.ClassifyRequest(object=_objects_with(**changes)), timeout=10)
    assert single.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert single.value.details() == f"object 0 (client_id 'bad-one'): {expected}"

    with pytest.raises(grpc.RpcError) as batch:
        stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=[*good[:2], _objects_with(**changes), good[2]]), timeout=10)
    assert batch.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert batch.value.details() == f"object 2 (client_id 'bad-one'): {expected}"

    assert stub.Classify(pb.ClassifyRequest(object=good[0]), timeout=10).result.model_version == "1"


def test_zero_redshift_is_valid_but_a_missing_one_is_not(served):
    server, stub, _ = served
    assert stub.Classify(pb.ClassifyRequest(object=_objects_with(redshift=0.0)), timeout=10).result.predicted_class


def test_batch_size_and_request_shape_errors(served, sample_inputs):
    server, stub, _ = served
    cases = [
        (lambda: stub.ClassifyBatch(pb.ClassifyBatchRequest(), timeout=10),
         f"batch is empty: send between 1 and {MAX_BATCH} objects"),
        (lambda: stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=to_objects(sample_inputs[:MAX_BATCH + 1])),
                                    timeout=10),
         f"batch has {MAX_BATCH + 1} objects; the maximum is {MAX_BATCH} (split it, or use ClassifyStream)"),
        (lambda: stub.Classify(pb.ClassifyRequest(), timeout=10), "ClassifyRequest.object is missing"),
    ]
    for call, message in cases:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    # Several bad objects: the first is named, the rest counted.
    objects = to_objects(sample_inputs[:5])
    objects[1].ClearField("g")
    objects[3].u = 99.0
    with pytest.raises(grpc.RpcError) as err:
        stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=objects), timeout=10)
    assert err.value.details() == "object 1 (client_id 'obj-1'): field 'g' is missing (1 more invalid object in this request)"


def test_invalid_stream_message_names_message_and_object(served, sample_inputs):
    server, stub, _ = served
    bad = to_objects(sample_inputs[:4], "s")
    bad[2].z = math.nan
    messages = [pb.ClassifyStreamRequest(objects=to_objects(sample_inputs[:4])), pb.ClassifyStreamRequest(objects=bad)]
    call = stub.ClassifyStream(iter(messages), timeout=10)
    first = next(call)
    assert len(first.results) == 4
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "stream message 1, object 2 (client_id 's-2'): field 'z' is NaN"


def test_stream_errors_name_the_stream_message(served, sample_inputs):
    server, stub, _ = served
    messages = [pb.ClassifyStreamRequest(objects=to_objects(sample_inputs[:2])), pb.ClassifyStreamRequest()]
    with pytest.raises(grpc.RpcError) as err:
        list(stub.ClassifyStream(iter(messages), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == f"stream message 1 is empty: send between 1 and {MAX_BATCH} objects"


def test_deadlines_message_size_and_stream_limits(served, sample_inputs):
    server, stub, channel = served
    obj = to_objects(sample_inputs[:1])[0]
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(pb.ClassifyRequest(object=obj), timeout=1e-6)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    # 256 KiB limit: 5000 objects (~300 KB) are refused before any parsing.
    huge = pb.ClassifyBatchRequest(objects=to_objects(np.repeat(sample_inputs[:1], 5000, axis=0)))
    assert huge.ByteSize() > 256 * 1024
    with pytest.raises(grpc.RpcError) as err:
        stub.ClassifyBatch(huge, timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # One stream allowed (max_concurrent_streams=1): a second is refused while the first is open.
    feed: queue.Queue = queue.Queue()
    first = stub.ClassifyStream(iter(feed.get, None), timeout=20)
    feed.put(pb.ClassifyStreamRequest(objects=[obj]))
    assert next(first).results[0].model_version == "1"
    with pytest.raises(grpc.RpcError) as err:
        list(stub.ClassifyStream(iter([pb.ClassifyStreamRequest(objects=[obj])]), timeout=10))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many concurrent ClassifyStream calls (limit 1)" in err.value.details()
    feed.put(None)
    assert list(first) == []
    # The slot is free again.
    assert len(list(stub.ClassifyStream(iter([pb.ClassifyStreamRequest(objects=[obj])]), timeout=10))) == 1
    assert stub.Classify(pb.ClassifyRequest(object=obj), timeout=10).result.model_version == "1"


def test_prometheus_metrics_count_requests_errors_batches_and_version(served, sample_inputs):
    server, stub, _ = served
    objects = to_objects(sample_inputs[:25])
    for obj in objects[:3]:
        stub.Classify(pb.ClassifyRequest(object=obj), timeout=10)
    stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=objects), timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.ClassifyBatch(pb.ClassifyBatchRequest(), timeout=10)
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    assert 'stellar_grpc_requests_total{code="OK",method="Classify"} 3.0' in text
    assert 'stellar_grpc_errors_total{code="INVALID_ARGUMENT",method="ClassifyBatch"} 1.0' in text
    assert 'stellar_batch_size_objects_bucket{le="25.0",method="ClassifyBatch"} 1.0' in text
    assert 'stellar_batch_size_objects_bucket{le="10.0",method="ClassifyBatch"} 0.0' in text
    assert 'stellar_grpc_request_duration_seconds_count{method="Classify"} 3.0' in text
    assert 'stellar_model_version{model="stellar-classifier"} 1.0' in text
    assert 'stellar_model_info{model="stellar-classifier",source="registry",version="1"} 1.0' in text
    assert 'stellar_objects_classified_total{method="ClassifyBatch"} 25.0' in text
    assert "stellar_booster_call_rows_count 4.0" in text and "stellar_booster_call_rows_sum 28.0" in text


def test_python_client_library(served, registry, sample_inputs):
    server, _, _ = served
    inputs = sample_inputs[:120]
    expected = registry.expected("1", inputs)
    rows = [dict(zip(MODEL_INPUTS, map(float, row)), spec_obj_ID=str(k)) for k, row in enumerate(inputs)]
    with StellarClient(f"127.0.0.1:{server.port}") as client:
        assert client.health() == "SERVING"
        one = client.classify(rows[0])
        assert (one.client_id, one.model_version) == ("0", "1")
        assert probabilities_of(one) == expected[0].tolist()
        assert [probabilities_of(r) for r in client.classify_batch(rows[:50])] == expected[:50].tolist()
        streamed = [r for chunk in client.classify_stream(rows, chunk_size=32) for r in chunk]
        assert [r.client_id for r in streamed] == [str(k) for k in range(120)]
        assert [probabilities_of(r) for r in streamed] == expected.tolist()
        assert client.model_info().version == "1"
        missing = dict(rows[0])
        del missing["i"]
        with pytest.raises(grpc.RpcError) as err:
            client.classify(missing)
        assert err.value.details() == "object 0 (client_id '0'): field 'i' is missing"
