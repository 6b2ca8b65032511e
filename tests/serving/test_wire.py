"""stellar_serving.wire: the encoded results are the messages the generated classes build.

The reference below builds each response with the message API, as the servicers
did before the encoder; the encoder's bytes must parse to an equal message.
(Not to equal bytes: protobuf leaves the order of map entries to each
implementation, and upb's is not the insertion order.)
"""

from __future__ import annotations

import numpy as np
import pytest

from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_serving import wire
from stellar_serving.servicers import CLASS_ENUM

CLIENT_IDS = ["obj-1", "", "étoile ☆", "x" * 300, "SDSS J123456.78+123456.7", "0"]


def reference_results(response, client_ids, proba, classes, version):
    for client_id, row in zip(client_ids, proba.tolist()):
        result = response.results.add(client_id=client_id, predicted_class=CLASS_ENUM[classes[int(np.argmax(row))]],
                                      model_version=version)
        for label, p in zip(classes, row):
            result.probabilities[label] = p
    return response


def probabilities(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    proba = rng.random((n, 3)).astype(np.float32)
    proba /= proba.sum(axis=1, keepdims=True)
    proba[0] = (1.0, 0.0, 0.0)  # a certain row: zeros are sent like any value
    return proba


@pytest.mark.parametrize("classes", [("GALAXY", "QSO", "STAR"), ("STAR", "GALAXY", "QSO")])
@pytest.mark.parametrize("version", ["1", "12345"])
def test_batch_bytes_are_the_message_built_response(classes, version):
    proba = probabilities(len(CLIENT_IDS))
    encoder = wire.ResultEncoder(classes, [CLASS_ENUM[c] for c in classes], version)
    encoded = encoder.batch(CLIENT_IDS, proba)
    expected = reference_results(pb.ClassifyBatchResponse(model_version=version), CLIENT_IDS, proba, classes, version)
    assert pb.ClassifyBatchResponse.FromString(encoded) == expected
    # A stream message has the batch's layout.
    stream = reference_results(pb.ClassifyStreamResponse(model_version=version), CLIENT_IDS, proba, classes, version)
    assert pb.ClassifyStreamResponse.FromString(encoded) == stream


@pytest.mark.parametrize("classes", [("GALAXY", "QSO", "STAR"), ("STAR", "GALAXY", "QSO")])
def test_batch_bytes_built_at_once_are_the_message_built_response(classes):
    client_ids = ["obj-1", "", "SDSS J123456.78+123456.7", "0", "1237650000000000000", ""]  # ASCII, short
    proba = probabilities(len(client_ids))
    encoder = wire.ResultEncoder(classes, [CLASS_ENUM[c] for c in classes], "31")
    assert encoder.results_at_once(client_ids, proba) is not None  # numpy places every byte
    expected = reference_results(pb.ClassifyBatchResponse(model_version="31"), client_ids, proba, classes, "31")
    assert pb.ClassifyBatchResponse.FromString(encoder.batch(client_ids, proba)) == expected


def test_results_at_once_are_the_row_by_row_bytes_or_declined():
    encoder = wire.ResultEncoder(("GALAXY", "QSO", "STAR"), [1, 2, 3], "12")
    one = probabilities(1)
    for length in range(0, 130):  # up to the longest id whose result fits a one-byte length, and past it
        ids = ["7" * length]
        fits = len(encoder.results_row_by_row(ids, one)) - 2 < 0x80  # its key and length, then its body
        at_once = encoder.results_at_once(ids, one)
        assert (at_once is not None) == fits, length
        assert at_once is None or at_once == encoder.results_row_by_row(ids, one)
    assert encoder.results_at_once(["étoile"], one) is None  # not ASCII
    assert encoder.results_at_once(["id\0"], one) is None  # numpy's fixed-width bytes would drop the NUL
    rng = np.random.default_rng(5)
    alphabet = np.array(list("abcXYZ0123456789-_.:+ J"))
    for trial in range(300):
        n = int(rng.integers(1, 65))
        ids = ["".join(rng.choice(alphabet, size=int(rng.choice([0, 1, 8, 19, 40, 70])))) for _ in range(n)]
        proba = probabilities(n, seed=trial)
        at_once = encoder.results_at_once(ids, proba)
        assert at_once is not None and at_once == encoder.results_row_by_row(ids, proba), ids


def test_every_class_can_be_predicted_and_large_batches_keep_their_order():
    classes = ("GALAXY", "QSO", "STAR")
    proba = probabilities(1000, seed=3)
    proba[1:4] = np.eye(3, dtype=np.float32)
    client_ids = [f"id-{k}" for k in range(1000)]
    decoded = pb.ClassifyBatchResponse.FromString(
        wire.ResultEncoder(classes, [CLASS_ENUM[c] for c in classes], "7").batch(client_ids, proba))
    assert [r.client_id for r in decoded.results] == client_ids
    assert [r.predicted_class for r in decoded.results[1:4]] == [pb.OBJECT_CLASS_GALAXY, pb.OBJECT_CLASS_QSO,
                                                                 pb.OBJECT_CLASS_STAR]
    got = np.array([[r.probabilities[c] for c in classes] for r in decoded.results], dtype=np.float32)
    assert np.array_equal(got, proba)


def test_single_is_a_classify_response():
    classes = ("GALAXY", "QSO", "STAR")
    proba = probabilities(1)
    encoded = wire.ResultEncoder(classes, [1, 2, 3], "4").single("obj-9", proba)
    expected = pb.ClassifyResponse(result=reference_results(pb.ClassifyBatchResponse(), ["obj-9"], proba, classes,
                                                            "4").results[0])
    assert pb.ClassifyResponse.FromString(encoded) == expected


def test_class_values_beyond_one_byte_are_refused():
    with pytest.raises(ValueError, match="one-byte varints"):
        wire.ResultEncoder(("GALAXY", "QSO", "STAR"), [1, 2, 300], "1")


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**35])
def test_varint(value):
    # An int64 field holds the same varint after its key byte.
    encoded = wire.varint(value)
    from google.protobuf import wrappers_pb2
    assert wrappers_pb2.UInt64Value(value=value).SerializeToString() == (b"\x08" + encoded if value else b"")
