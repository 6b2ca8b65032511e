"""The request decoder (stellar_serving/request_decoder.py) against protobuf and objects_to_inputs.

Its promise: it accepts a request only where protobuf and objects_to_inputs
accept it, with the same inputs and client ids; everything else is left to
them (None). Checked on generated requests, on hand-made unusual encodings,
and on corrupted bytes; then in a real server, where refusals must read as before.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api.validation import objects_to_inputs
from stellar_core.contract import MODEL_INPUTS
from stellar_serving import request_decoder
from stellar_serving.server import OBJECT_BATCH_METHODS

from .messages import probabilities_of, to_objects

MAX_BATCH, MAX_ID = 500, 40


@pytest.fixture(scope="module")
def decoder() -> request_decoder.RequestDecoder:
    return request_decoder.RequestDecoder(MAX_BATCH, MAX_ID)


def _protobuf_reading(data: bytes):
    """What the server reads through protobuf: (inputs, client ids), or None where it refuses the request."""
    try:
        request = pb.ClassifyBatchRequest.FromString(data)
        inputs = objects_to_inputs(request.objects, MAX_BATCH, max_client_id=MAX_ID)
    except Exception:  # DecodeError, InvalidInput: a refusal
        return None
    return inputs, [obj.client_id for obj in request.objects]


def _agrees(decoder, data: bytes) -> bool:
    """The decoder's answer is None, or protobuf's reading to the bit."""
    decoded, expected = decoder(data), _protobuf_reading(data)
    if decoded is None:
        return True
    return (expected is not None and decoded.inputs.dtype == np.float32
            and np.array_equal(decoded.inputs, expected[0]) and decoded.client_ids == expected[1])


def _objects(sample_inputs: np.ndarray, rng, n: int, ids=None) -> list:
    rows = sample_inputs[rng.choice(len(sample_inputs), n, replace=False)].astype(np.float64)
    ids = ids if ids is not None else [f"obj-{k}" for k in range(n)]
    return [pb.SdssObject(client_id=i, **dict(zip(MODEL_INPUTS, map(float, row)))) for i, row in zip(ids, rows)]


def test_plain_requests_are_read_as_protobuf_reads_them(decoder, sample_inputs):
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 64, MAX_BATCH):
        ids = ["", "a", "x" * MAX_ID, "with space", "0"] * n
        data = pb.ClassifyBatchRequest(objects=_objects(sample_inputs, rng, n, ids[:n])).SerializeToString()
        decoded, (inputs, client_ids) = decoder(data), _protobuf_reading(data)
        assert decoded is not None, f"{n} plain objects were left to protobuf"
        np.testing.assert_array_equal(decoded.inputs, inputs)
        assert decoded.client_ids == client_ids
    # The stream's messages have the same wire form.
    data = pb.ClassifyStreamRequest(objects=_objects(sample_inputs, rng, 3)).SerializeToString()
    assert decoder(data).client_ids == ["obj-0", "obj-1", "obj-2"]


def test_zero_is_a_value_when_it_is_sent(decoder, sample_inputs):
    """redshift 0.0 is in range: sent explicitly it is a value (proto3 optional keeps its presence)."""
    obj = _objects(sample_inputs, np.random.default_rng(2), 1)[0]
    obj.redshift = 0.0
    data = pb.ClassifyBatchRequest(objects=[obj]).SerializeToString()
    assert decoder(data).inputs[0, 5] == 0.0
    assert _agrees(decoder, data)


@pytest.mark.parametrize("change", [
    "missing field", "nan", "infinite", "out of range", "unicode id", "id too long", "nul in id", "empty request",
    "too many objects", "unknown object field", "unknown request field", "repeated field", "float wire type",
    "long request key", "long object key",
])
def test_anything_unusual_is_left_to_protobuf(decoder, sample_inputs, change):
    rng = np.random.default_rng(3)
    objects = _objects(sample_inputs, rng, 5)
    extra = b""
    if change == "missing field":
        objects[2].ClearField("g")
    elif change == "nan":
        objects[1].z = float("nan")
    elif change == "infinite":
        objects[4].u = float("inf")
    elif change == "out of range":
        objects[0].redshift = 11.0
    elif change == "unicode id":
        objects[3].client_id = "étoile"
    elif change == "id too long":
        objects[3].client_id = "x" * (MAX_ID + 1)
    elif change == "nul in id":
        objects[3].client_id = "a\0b"
    elif change == "empty request":
        objects = []
    elif change == "too many objects":
        objects = _objects(sample_inputs, rng, MAX_BATCH + 1)
    data = pb.ClassifyBatchRequest(objects=objects).SerializeToString()
    if change == "unknown object field":  # field 9 (varint 7) inside the last object: rebuilt by hand
        last = objects[-1].SerializeToString() + b"\x48\x07"
        data = pb.ClassifyBatchRequest(objects=objects[:-1]).SerializeToString() + b"\x0a" + bytes([len(last)]) + last
    elif change == "unknown request field":
        extra = b"\x10\x01"  # field 2, varint 1
    elif change == "repeated field":  # u sent twice in one object: protobuf keeps the last
        last = objects[-1].SerializeToString() + b"\x11" + np.float64(21.5).tobytes()
        data = pb.ClassifyBatchRequest(objects=objects[:-1]).SerializeToString() + b"\x0a" + bytes([len(last)]) + last
    elif change == "float wire type":  # u as a 32-bit value: not the declared double
        last = b"\x15" + np.float32(20.0).tobytes() + objects[-1].SerializeToString()
        data = pb.ClassifyBatchRequest(objects=objects[:-1]).SerializeToString() + b"\x0a" + bytes([len(last)]) + last
    elif change == "long request key":  # the objects' key 0x0a written in six bytes: upb refuses it
        assert data[0] == 0x0a
        data = b"\x8a\x80\x80\x80\x80\x00" + data[1:]
    elif change == "long object key":  # u's key 0x11 written in two bytes inside the last object
        last = objects[-1].SerializeToString()
        at = last.index(b"\x11")
        last = last[:at] + b"\x91\x00" + last[at + 1:]
        data = pb.ClassifyBatchRequest(objects=objects[:-1]).SerializeToString() + b"\x0a" + bytes([len(last)]) + last
    data += extra
    assert decoder(data) is None
    if change == "repeated field":  # protobuf accepts it, with the last value
        assert _protobuf_reading(data)[0][-1, 0] == np.float32(21.5)


def test_corrupted_bytes_are_never_read_otherwise_than_protobuf_reads_them(decoder, sample_inputs):
    rng = np.random.default_rng(4)
    data = pb.ClassifyBatchRequest(objects=_objects(sample_inputs, rng, 12)).SerializeToString()
    read = 0
    for trial in range(3000):
        corrupted = bytearray(data)
        kind = trial % 3
        if kind == 0:  # flip a few bytes
            for at in rng.integers(0, len(corrupted), size=rng.integers(1, 4)):
                corrupted[at] = int(rng.integers(0, 256))
        elif kind == 1:  # cut it
            corrupted = corrupted[:int(rng.integers(0, len(corrupted)))]
        else:  # insert bytes
            at = int(rng.integers(0, len(corrupted)))
            corrupted[at:at] = bytes(rng.integers(0, 256, size=int(rng.integers(1, 5))).tolist())
        assert _agrees(decoder, bytes(corrupted)), f"trial {trial}: {bytes(corrupted)!r}"
        read += decoder(bytes(corrupted)) is not None
    assert read > 0  # some corruptions are still plain, valid requests (a changed digit of a value)


# -- in the server ------------------------------------------------------------------------------------------


def _call(server, request: bytes):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        batch = channel.unary_unary("/stellar.v1.ClassifierService/ClassifyBatch", request_serializer=None,
                                    response_deserializer=pb.ClassifyBatchResponse.FromString)
        return batch(request, timeout=30)


def test_the_server_answers_the_same_read_either_way(make_server, registry, sample_inputs):
    registry.set_champion("1")
    fast, slow = make_server(), make_server(request_decoder="off")
    assert fast.decoder.ready.wait(60) and fast.decoder.decoder is not None and slow.decoder is None
    assert set(fast.telemetry._readers) == set(OBJECT_BATCH_METHODS) and not slow.telemetry._readers
    objects = to_objects(sample_inputs[:300])
    plain = pb.ClassifyBatchRequest(objects=objects).SerializeToString()
    unusual = plain + b"\x10\x01"  # an unknown field: protobuf reads it in both servers
    answers = [[(r.client_id, r.predicted_class, probabilities_of(r)) for r in _call(server, data).results]
               for server in (fast, slow) for data in (plain, unusual)]
    assert answers[0] == answers[1] == answers[2] == answers[3]
    assert [a[0] for a in answers[0]] == [o.client_id for o in objects]
    expected = registry.expected("1", sample_inputs[:300])
    np.testing.assert_array_equal(np.array([a[2] for a in answers[0]], dtype=np.float32), expected)


@pytest.mark.parametrize("spoil", ["missing", "out of range", "undecodable"])
def test_refusals_read_as_before(make_server, registry, sample_inputs, spoil):
    registry.set_champion("1")
    fast, slow = make_server(), make_server(request_decoder="off")
    assert fast.decoder.ready.wait(60) and fast.decoder.decoder is not None
    objects = to_objects(sample_inputs[:20])
    if spoil == "missing":
        objects[7].ClearField("r")
    elif spoil == "out of range":
        objects[3].u = 99.0
    data = pb.ClassifyBatchRequest(objects=objects).SerializeToString()
    if spoil == "undecodable":
        data = data[:-3]
    errors = []
    for server in (fast, slow):
        with pytest.raises(grpc.RpcError) as err:
            _call(server, data)
        errors.append((err.value.code(), err.value.details()))
    assert errors[0] == errors[1]
    assert errors[0][0] == grpc.StatusCode.INVALID_ARGUMENT
    if spoil == "missing":
        assert "object 7" in errors[0][1] and "field 'r' is missing" in errors[0][1]



def test_a_stuck_compiler_never_holds_up_the_start(make_server, registry, sample_inputs, tmp_path):
    """The decoder's compile runs on its own thread: the server answers (through protobuf) meanwhile."""
    registry.set_champion("1")
    gate = tmp_path / "gate"
    stuck = tmp_path / "stuck-cc"
    stuck.write_text(f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\nexec gcc \"$@\"\n")
    stuck.chmod(0o755)
    # Only the decoder compiles with it: the kernel and C TreeSHAP are off here.
    server = make_server(compiled_compiler=str(stuck), tree_kernel="off", explainer="xgboost")
    try:
        assert not server.decoder.ready.is_set()
        data = pb.ClassifyBatchRequest(objects=to_objects(sample_inputs[:9])).SerializeToString()
        answered = np.array([probabilities_of(r) for r in _call(server, data).results], dtype=np.float32)
        np.testing.assert_array_equal(answered, registry.expected("1", sample_inputs[:9]))
    finally:
        gate.touch()
    assert server.decoder.ready.wait(60) and server.decoder.decoder is not None


def test_a_bad_request_decoder_setting_is_refused():
    from stellar_serving.config import ServingConfig

    with pytest.raises(ValueError, match=r"STELLAR_REQUEST_DECODER must be one of \('auto', 'off'\), got 'yes'"):
        ServingConfig.from_env({"STELLAR_REQUEST_DECODER": "yes"})
