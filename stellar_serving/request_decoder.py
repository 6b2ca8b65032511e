"""ClassifyBatch and ClassifyStream requests read straight from their wire bytes, when they are plainly valid.

Reading 1,000 objects through protobuf messages costs about 2.4 ms (parsing,
then 7,000 field reads from Python), more than the tree kernel takes to
classify them. A few lines of C read the bytes in one pass instead: the
objects' six inputs into a float64 array and their client ids into one
buffer. That is done only for the plain form every protobuf library writes:

- the request holds field 1 (`objects`) only, each object fields 1-7 only,
  each at most once, with their declared wire types and one-byte keys;
- every input is present, finite and inside its physical range;
- every client id is ASCII without NUL and within STELLAR_MAX_CLIENT_ID_CHARS;
- between 1 and STELLAR_MAX_BATCH_SIZE objects.

Anything else (an unknown field, a repeated field, a missing or invalid value,
a non-ASCII client id, a malformed message) is read by protobuf as before, so
every refusal and its message stays what objects_to_inputs says. The fast
read accepts a request only where that path would accept it with the same
inputs and client ids (tests/serving/test_request_decoder.py compares them on
generated and corrupted requests).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from dataclasses import dataclass

import numpy as np

from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api.validation import inputs_in_range
from stellar_core.contract import MODEL_INPUTS
from stellar_serving import c_library

log = logging.getLogger("stellar_serving.request_decoder")

# Per object: a key and 8 bytes for each input, and a key and a length for the object: no object the fast
# read accepts is shorter, so the input arrays are sized from the request's length.
MIN_OBJECT_BYTES = 2 + len(MODEL_INPUTS) * 9

SOURCE = r"""
#include <stdint.h>
#include <string.h>
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the wire's doubles are little-endian: this reader copies them as they are"
#endif

static int varint(const uint8_t** p, const uint8_t* end, uint64_t* out) {
  uint64_t value = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    const uint8_t byte = *(*p)++;
    value |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) { *out = value; return 1; }
  }
  return 0;
}

/* The objects of a ClassifyBatchRequest (field 1, length-delimited SdssObject messages: client_id = 1,
   the inputs = fields 2..7 as doubles). Returns their number, or -1 when the bytes are not in the plain
   form (see request_decoder.py): then nothing written is used. values [capacity, 6]; ids: the client
   ids, each followed by a NUL (at most `size` bytes). */
int64_t read_objects(const uint8_t* data, int64_t size, int64_t capacity, int64_t max_id, double* values,
                     uint8_t* ids) {
  const uint8_t* p = data;
  const uint8_t* const end = data + size;
  int64_t n = 0;
  uint8_t* id_out = ids;
  while (p < end) {
    uint64_t length;
    /* Every key this reads is one byte; a key written longer is left to protobuf, whose parsers differ on it. */
    if (p >= end || *p++ != ((1 << 3) | 2)) return -1;
    if (!varint(&p, end, &length) || length > (uint64_t)(end - p) || n >= capacity) return -1;
    const uint8_t* q = p;
    const uint8_t* const stop = p + length;
    p = stop;
    unsigned seen = 0;
    double* row = values + n * 6;
    while (q < stop) {
      const uint8_t k = *q++;
      if (k & 0x80) return -1;
      const unsigned field = k >> 3, wire = k & 7;
      if (field == 1 && wire == 2 && !(seen & 1u)) {
        uint64_t id_length;
        if (!varint(&q, stop, &id_length) || id_length > (uint64_t)(stop - q) || id_length > (uint64_t)max_id)
          return -1;
        for (uint64_t c = 0; c < id_length; ++c)
          if (q[c] == 0 || q[c] >= 0x80) return -1;
        memcpy(id_out, q, id_length);
        id_out += id_length;
        q += id_length;
        seen |= 1u;
      } else if (field >= 2 && field <= 7 && wire == 1 && !(seen & (1u << (field - 1)))) {
        if (stop - q < 8) return -1;
        memcpy(row + (field - 2), q, 8);
        q += 8;
        seen |= 1u << (field - 1);
      } else {
        return -1;
      }
    }
    if ((seen & 0x7eu) != 0x7eu) return -1;
    *id_out++ = 0;
    ++n;
  }
  return n;
}
"""


@dataclass(frozen=True)
class DecodedObjects:
    """A request's objects, read and checked: float32 [n, 6] inputs (MODEL_INPUTS order) and client ids."""

    inputs: np.ndarray
    client_ids: list[str]


class RequestDecoder:
    """decode(bytes) -> DecodedObjects for a plainly valid ClassifyBatchRequest or ClassifyStreamRequest (the same
    wire form), else None (protobuf reads it)."""

    def __init__(self, max_batch: int, max_client_id: int, compiler: str = "gcc") -> None:
        _check_layout()
        self._read = c_library.function(SOURCE, compiler, "the request decoder", "read_objects",
                                        [ctypes.c_char_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                         ctypes.c_void_p, ctypes.c_void_p], restype=ctypes.c_int64)
        self.max_batch = max_batch
        self.max_client_id = max_client_id

    def __call__(self, data: bytes) -> DecodedObjects | None:
        capacity = min(len(data) // MIN_OBJECT_BYTES, self.max_batch)
        if capacity == 0:
            return None
        values = np.empty((capacity, len(MODEL_INPUTS)), dtype=np.float64)
        ids = ctypes.create_string_buffer(len(data))
        n = self._read(data, len(data), capacity, self.max_client_id, values.ctypes.data, ids)
        if n <= 0:
            return None
        values = values[:n]
        if not inputs_in_range(values):
            return None
        # Each id is followed by a NUL: the last split is the empty rest of the buffer.
        client_ids = ids.raw.decode("ascii").split("\0", n)[:n]
        return DecodedObjects(values.astype(np.float32), client_ids)


class BackgroundDecoder:
    """The decoder, compiled on a thread of its own when the server starts, so that a slow or stuck compiler
    never holds up the start: until it is ready, and where it cannot be built, protobuf reads every request."""

    def __init__(self, max_batch: int, max_client_id: int, compiler: str) -> None:
        self.decoder: RequestDecoder | None = None
        self.ready = threading.Event()  # set once the build ended, built or not
        threading.Thread(target=self._build, args=(max_batch, max_client_id, compiler), daemon=True,
                         name="stellar-request-decoder").start()

    def _build(self, max_batch: int, max_client_id: int, compiler: str) -> None:
        try:
            self.decoder = RequestDecoder(max_batch, max_client_id, compiler)
        except c_library.CBuildFailed as exc:
            log.warning("protobuf reads every ClassifyBatch request: %s", exc,
                        extra={"event": "request_decoder_off"})
        finally:
            self.ready.set()

    def deserializer(self, parse):
        """A request deserializer: the fast read, else `parse` (the message's FromString)."""
        def deserialize(data: bytes):
            decoder = self.decoder
            decoded = decoder(data) if decoder is not None else None
            return decoded if decoded is not None else parse(data)
        return deserialize


def _check_layout() -> None:
    """The C code reads SdssObject as it is declared today; a changed message must change the code too."""
    fields = pb.SdssObject.DESCRIPTOR.fields_by_name
    double = fields["u"].TYPE_DOUBLE
    layout = [(name, fields[name].number, fields[name].type) for name in MODEL_INPUTS]
    expected = [(name, 2 + k, double) for k, name in enumerate(MODEL_INPUTS)]
    objects = [message.DESCRIPTOR.fields_by_name["objects"].number
               for message in (pb.ClassifyBatchRequest, pb.ClassifyStreamRequest)]
    if (layout, fields["client_id"].number, len(fields), objects) != (expected, 1, 1 + len(MODEL_INPUTS), [1, 1]) or (
            sys.byteorder != "little"):
        raise c_library.CBuildFailed("the request decoder reads SdssObject fields 1-7 of today's stellar.v1 on a "
                                     "little-endian machine; this build differs")

