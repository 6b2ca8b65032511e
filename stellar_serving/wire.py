"""stellar.v1 classification results, encoded straight to protobuf wire bytes.

Built as messages, a 1,000-object ClassifyBatch response costs 2-3.7 ms of
Python on this machine (a Classification and a three-entry map per object, then
the serializer), more than reading the request. Every result of one model
version shares its layout: the predicted-class field, the three map entries and
the version differ only in one enum byte and twelve float bytes. So the shared
bytes are laid out once per version and numpy writes the varying bytes of all
rows at once. When every result's lengths fit in one byte (ASCII client ids of
up to about 76 characters), numpy also places the ids and the headers: 0.21
ms for 1,000 results against 0.64 ms joining them row by row, which is kept
for the rest.

The bytes parse to the message the generated classes build (tests compare the
two), and the server sends bytes a servicer
returns as they are (server.py `_sending_bytes`). Field numbers come from the
generated descriptors, so a renumbered field cannot drift from this encoder.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from stellar_api._generated.stellar.v1 import classifier_pb2 as pb

_VARINT, _LENGTH_DELIMITED, _FIXED32 = 0, 2, 5  # protobuf wire types


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Lengths under 2048 bytes (a result with a client id of up to 256 characters, the default limit) from a table.
_SMALL_VARINTS = [varint(n) for n in range(1 << 11)]


def _length(n: int) -> bytes:
    return _SMALL_VARINTS[n] if n < len(_SMALL_VARINTS) else varint(n)


def _key(message, field: str, wire_type: int) -> bytes:
    return varint(message.DESCRIPTOR.fields_by_name[field].number << 3 | wire_type)


def _field(key: bytes, payload: bytes) -> bytes:
    return key + _length(len(payload)) + payload


_CLIENT_ID_KEY = _key(pb.Classification, "client_id", _LENGTH_DELIMITED)
_PROBABILITY_KEY = _key(pb.Classification, "probabilities", _LENGTH_DELIMITED)
_VERSION_KEY = _key(pb.Classification, "model_version", _LENGTH_DELIMITED)
_CLASS_KEY = _key(pb.Classification, "predicted_class", _VARINT)
_MAP_KEY_KEY = _key(pb.Classification.ProbabilitiesEntry, "key", _LENGTH_DELIMITED)
_MAP_VALUE_KEY = _key(pb.Classification.ProbabilitiesEntry, "value", _FIXED32)
_RESULTS_KEY = _key(pb.ClassifyBatchResponse, "results", _LENGTH_DELIMITED)
_BATCH_VERSION_KEY = _key(pb.ClassifyBatchResponse, "model_version", _LENGTH_DELIMITED)
# The layout follows the field numbers, the order the generated messages serialize
# in: client_id 1, probabilities 3, model_version 4, predicted_class 5. A stream
# message and a ClassifyResponse number their fields as a batch response does
# (tests/serving/test_wire.py compares all three with the messages).


class ResultEncoder:
    """One model version's Classification results -> wire bytes.

    `classes`: the model's class names in probability-column order; `class_values`:
    their ObjectClass numbers (one-byte varints); `version`: the model version."""

    def __init__(self, classes: Sequence[str], class_values: Sequence[int], version: str) -> None:
        if any(not 0 < value < 0x80 for value in class_values):
            raise ValueError(f"ObjectClass values {list(class_values)} must be one-byte varints (1..127)")
        # The bytes after the client id, the same for every result but for 13 bytes.
        layout = bytearray()
        float_offsets = []
        for name in classes:
            entry_head = _field(_MAP_KEY_KEY, name.encode()) + _MAP_VALUE_KEY  # then the float
            layout += _PROBABILITY_KEY + _length(len(entry_head) + 4) + entry_head
            float_offsets.append(len(layout))
            layout += b"\0\0\0\0"
        layout += _field(_VERSION_KEY, version.encode())
        layout += _CLASS_KEY
        self._class_offset = len(layout)
        layout += b"\0"
        self._layout = np.frombuffer(bytes(layout), dtype=np.uint8)
        self._float_columns = (np.array(float_offsets)[:, None] + np.arange(4)).ravel()
        self._class_bytes = np.array(class_values, dtype=np.uint8)
        self._version_field = _field(_BATCH_VERSION_KEY, version.encode())

    def _rows(self, proba: np.ndarray) -> np.ndarray:
        """uint8 [n, layout width]: each row's bytes after its client id."""
        n = len(proba)
        rows = np.empty((n, len(self._layout)), dtype=np.uint8)
        rows[:] = self._layout
        rows[:, self._float_columns] = np.ascontiguousarray(proba, dtype="<f4").view(np.uint8).reshape(n, -1)
        rows[:, self._class_offset] = self._class_bytes[proba.argmax(axis=1)]
        return rows

    def results_row_by_row(self, client_ids: Sequence[str], proba: np.ndarray) -> bytes:
        """Each row of `proba` with its client id, as a length-delimited field 1 (`results`/`result`)."""
        width = len(self._layout)
        shared = self._rows(proba).tobytes()
        out = []
        for k, client_id in enumerate(client_ids):
            body = shared[k * width:(k + 1) * width]
            if client_id:  # proto3 leaves an empty string out
                encoded = client_id.encode()
                body = _CLIENT_ID_KEY + _length(len(encoded)) + encoded + body
            out.append(_RESULTS_KEY + _length(len(body)) + body)
        return b"".join(out)

    def results_at_once(self, client_ids: Sequence[str], proba: np.ndarray) -> bytes | None:
        """The same bytes as results_row_by_row, built by numpy; None unless every length is one byte
        (ASCII ids without NUL, each result under 128 bytes) and the two keys are one byte each.

        Each result is laid out in a row of one padded matrix (its key and length, the id's key and
        length, the id padded to the longest, the layout); the padding is then dropped."""
        joined = "".join(client_ids)
        if (not proba.size or not joined.isascii() or "\0" in joined  # numpy's bytes drop trailing NULs
                or len(_RESULTS_KEY) != 1 or len(_CLIENT_ID_KEY) != 1):
            return None
        id_lengths = np.fromiter(map(len, client_ids), dtype=np.int64, count=len(client_ids))
        has_id = id_lengths > 0  # proto3 leaves an empty string out
        bodies = np.where(has_id, id_lengths + 2, 0) + len(self._layout)
        if bodies.max() >= 0x80:
            return None
        longest = int(id_lengths.max())
        padded = np.empty((len(proba), 4 + longest + len(self._layout)), dtype=np.uint8)
        padded[:, 0] = _RESULTS_KEY[0]
        padded[:, 1] = bodies
        padded[:, 2] = _CLIENT_ID_KEY[0]
        padded[:, 3] = id_lengths
        if longest:
            padded[:, 4:4 + longest] = np.array(client_ids, dtype=f"S{longest}").view(np.uint8).reshape(-1, longest)
        padded[:, 4 + longest:] = self._rows(proba)
        keep = np.ones(padded.shape, dtype=bool)
        keep[:, 2:4] = has_id[:, None]
        keep[:, 4:4 + longest] = np.arange(longest) < id_lengths[:, None]
        return padded[keep].tobytes()

    def batch(self, client_ids: Sequence[str], proba: np.ndarray) -> bytes:
        """A ClassifyBatchResponse (or ClassifyStreamResponse): the results, then the version."""
        results = self.results_at_once(client_ids, proba)
        if results is None:
            results = self.results_row_by_row(client_ids, proba)
        return results + self._version_field

    def single(self, client_id: str, proba: np.ndarray) -> bytes:
        """A ClassifyResponse: the one row of `proba` (shape [1, n_classes])."""
        return self.results_row_by_row([client_id], proba)  # for one row the loop is the quicker


@lru_cache(maxsize=16)
def encoder_for(classes: tuple[str, ...], class_values: tuple[int, ...], version: str) -> ResultEncoder:
    """The encoder of one model version (a server serves one or two at a time)."""
    return ResultEncoder(classes, class_values, version)
