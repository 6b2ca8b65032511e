"""Mutated request bytes on every unary method of stellar.v1 and the v2 inference
service: the server answers each with a deliberate status (never UNKNOWN or
INTERNAL), holds no slot for ever, and good calls work afterwards. Seeded and bounded."""

from __future__ import annotations

import random
from concurrent import futures

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stellar_core.features import derive_feature_matrix
from stellar_core.model_bundle import DEFAULT_MODEL_NAME
from stellar_api._generated.inference import grpc_predict_v2_pb2 as v2
from stellar_api._generated.stellar.v1 import classifier_pb2 as pb

from .messages import to_objects

SEED = 20261127
# Codes that mean the server failed rather than judged the request (UNAVAILABLE:
# refused streams; DEADLINE_EXCEEDED within 10 s: a hang).
FAILURES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED}


def _seeds(sample_inputs) -> dict[str, tuple[list[bytes], int]]:
    """{method path: (valid serialized requests to mutate, how many mutations)}."""
    objects = to_objects(sample_inputs[:3])
    features = derive_feature_matrix(sample_inputs[:3]).astype("<f4")
    tensor = dict(name="input__0", datatype="FP32", shape=list(features.shape))
    raw_infer = v2.ModelInferRequest(model_name=DEFAULT_MODEL_NAME, id="r1",
                                     inputs=[v2.ModelInferRequest.InferInputTensor(**tensor)],
                                     raw_input_contents=[features.tobytes()])
    typed_infer = v2.ModelInferRequest(model_name=DEFAULT_MODEL_NAME, inputs=[v2.ModelInferRequest.InferInputTensor(
        **tensor, contents=v2.InferTensorContents(fp32_contents=features.ravel().tolist()))])
    classifier, inference = "/stellar.v1.ClassifierService/", "/inference.GRPCInferenceService/"
    return {
        classifier + "Classify": ([pb.ClassifyRequest(object=objects[0]).SerializeToString()], 500),
        classifier + "ClassifyBatch": ([pb.ClassifyBatchRequest(objects=objects).SerializeToString()], 500),
        classifier + "GetModelInfo": ([pb.GetModelInfoRequest().SerializeToString()], 100),
        classifier + "ReloadModel": ([pb.ReloadModelRequest().SerializeToString()], 40),  # each asks the registry
        inference + "ServerLive": ([v2.ServerLiveRequest().SerializeToString()], 100),
        inference + "ServerReady": ([v2.ServerReadyRequest().SerializeToString()], 100),
        inference + "ServerMetadata": ([v2.ServerMetadataRequest().SerializeToString()], 100),
        inference + "ModelReady": ([v2.ModelReadyRequest(name=DEFAULT_MODEL_NAME).SerializeToString()], 150),
        inference + "ModelMetadata": ([v2.ModelMetadataRequest(name=DEFAULT_MODEL_NAME).SerializeToString()], 150),
        inference + "ModelInfer": ([raw_infer.SerializeToString(), typed_infer.SerializeToString()], 800),
        "/grpc.health.v1.Health/Check": ([health_pb2.HealthCheckRequest().SerializeToString(),
                                          health_pb2.HealthCheckRequest(service="stellar.v1.ClassifierService")
                                          .SerializeToString()], 150),
    }


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random corruption: bit flips, truncation, inserted, overwritten, duplicated or random bytes."""
    kind = rng.randrange(6)
    buf = bytearray(data)
    if kind == 0 and buf:
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(len(buf))
            buf[k] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del buf[rng.randrange(len(buf) + 1):]
    elif kind == 2:
        k = rng.randrange(len(buf) + 1)
        buf[k:k] = rng.randbytes(rng.randint(1, 16))
    elif kind == 3 and buf:
        k = rng.randrange(len(buf))
        buf[k:k + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00", b"\x80\x80\x80", rng.randbytes(4)])
    elif kind == 4 and buf:
        k, j = sorted(rng.randrange(len(buf) + 1) for _ in range(2))
        buf[j:j] = buf[k:j]
    else:
        buf = bytearray(rng.randbytes(rng.randint(0, 64)))
    return bytes(buf)


def _call(channel, method: str, payload: bytes) -> grpc.StatusCode:
    try:
        channel.unary_unary(method, request_serializer=None, response_deserializer=None)(payload, timeout=10)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.mark.timeout(600)
def test_mutated_requests_on_every_unary_method_get_deliberate_answers(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server(max_concurrent_rpcs=16)  # a leaked slot would show within 16 calls
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    rng = random.Random(SEED)
    calls = [(method, mutate(rng.choice(seeds), rng))
             for method, (seeds, count) in _seeds(sample_inputs).items() for _ in range(count)]
    rng.shuffle(calls)
    with futures.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda call: _call(channel, *call), calls))
    failures = [(method, payload.hex(), code.name) for (method, payload), code in zip(calls, codes) if code in FAILURES]
    assert failures == [], f"{len(failures)} of {len(calls)} calls failed, e.g. {failures[:5]}"
    assert {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT} <= set(codes)  # the mutations hit both sides

    # Good calls still work, and nothing was counted as a server failure.
    from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc

    stub = pb_grpc.ClassifierServiceStub(channel)
    for _ in range(20):
        assert stub.Classify(pb.ClassifyRequest(object=to_objects(sample_inputs[:1])[0]), timeout=5) \
            .result.model_version == "1"
    assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING
    for code in ("UNKNOWN", "INTERNAL"):
        for method in {m.rsplit("/", 1)[-1] for m, _ in calls}:
            assert server.metrics.registry.get_sample_value(
                "stellar_grpc_errors_total", {"method": method, "code": code}) is None


def test_mutated_stream_messages_get_deliberate_answers(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server(max_concurrent_rpcs=16, max_concurrent_streams=2)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stream = channel.stream_stream("/stellar.v1.ClassifierService/ClassifyStream",
                                   request_serializer=None, response_deserializer=None)
    seed = pb.ClassifyStreamRequest(objects=to_objects(sample_inputs[:3])).SerializeToString()
    rng = random.Random(SEED + 1)
    codes = []
    for _ in range(60):  # one at a time: two stream slots, so a leaked slot shows at once
        call = stream(iter([seed, mutate(seed, rng), mutate(seed, rng)]), timeout=10)
        try:
            list(call)
        except grpc.RpcError:
            pass
        codes.append(call.code())
    assert not FAILURES & set(codes), codes
    assert grpc.StatusCode.INVALID_ARGUMENT in codes
    good = list(stream(iter([seed]), timeout=10))
    assert pb.ClassifyStreamResponse.FromString(good[0]).model_version == "1"
