"""Request validation: requests -> float32 [n, len(MODEL_INPUTS)] or a clear InvalidInput.

Every problem names the object (index and client id) and the field, so a client
can fix its data; the servicers turn InvalidInput into INVALID_ARGUMENT, with its
field violations (path in the request, why) as google.rpc.BadRequest details.
Vectorised: one attrgetter pass over the messages, then numpy checks.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Sequence

import numpy as np

from stellar_core.contract import INPUT_RANGES, MODEL_INPUTS
from stellar_core.features import COLOURS, FEATURE_NAMES, derive_feature_matrix

from stellar_api.status_details import MAX_VIOLATIONS, FieldViolation

_LOW = np.array([INPUT_RANGES[name][0] for name in MODEL_INPUTS], dtype=np.float64)
_HIGH = np.array([INPUT_RANGES[name][1] for name in MODEL_INPUTS], dtype=np.float64)
_GET_INPUTS = attrgetter(*MODEL_INPUTS)
N_INPUTS = len(MODEL_INPUTS)
_BOUNDS = tuple(zip(_LOW.tolist(), _HIGH.tolist()))
# Up to this many objects, plain Python comparisons beat numpy's per-call cost.
_SCALAR_CHECK_MAX = 8

# Longest client_id accepted, and how much of one an error message repeats.
DEFAULT_MAX_CLIENT_ID = 256
ECHOED_CLIENT_ID = 64

# A colour column of a v2 feature tensor may differ from the server's own
# difference of its two bands by this much (magnitudes): float32 rounding when a
# client computes colours in float64, never a real colour change.
COLOUR_TOLERANCE = 1e-3


# The request field holding the objects: `objects[k]` in batches and streams,
# `object` in ClassifyRequest (one object, no index).
OBJECTS_FIELD = "objects"
SINGLE_OBJECT_FIELD = "object"
# The request field of a v2 feature tensor (ModelInferRequest.inputs[0]).
TENSOR_FIELD = "inputs[0]"


class InvalidInput(ValueError):
    """A request the server refuses; str() is the message sent to the client.

    `violations`: which field of the request is wrong and why, the first one
    being the problem the message names (for google.rpc.BadRequest)."""

    def __init__(self, message: str, violations: Sequence[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.violations = tuple(violations)


def object_path(field: str, k: int) -> str:
    """The path of object `k` in the request: objects[k], or `object` in a one-object request."""
    return field if field == SINGLE_OBJECT_FIELD else f"{field}[{k}]"


def check_count(n: int, max_batch: int, what: str = "batch", field: str = OBJECTS_FIELD) -> None:
    if n == 0:
        message = f"{what} is empty: send between 1 and {max_batch} objects"
    elif n > max_batch:
        message = f"{what} has {n} objects; the maximum is {max_batch} (split it, or use ClassifyStream)"
    else:
        return
    raise InvalidInput(message, [FieldViolation(field, message)])


def objects_to_inputs(objects: Sequence, max_batch: int, what: str = "batch",
                      max_client_id: int | None = DEFAULT_MAX_CLIENT_ID, field: str = OBJECTS_FIELD) -> np.ndarray:
    """stellar.v1 SdssObject messages -> float32 [n, 6] model inputs (MODEL_INPUTS order).

    max_client_id None: the caller checks client ids with check_client_id as it copies them
    (reading 10k client_id strings once more cost ~3 ms a batch). `field`: the request
    field holding the objects, for the violations' paths."""
    n = len(objects)
    check_count(n, max_batch, what, field)
    if max_client_id is not None:
        _check_client_ids(objects, max_client_id, what, field)
    if n <= _SCALAR_CHECK_MAX:
        rows = _plainly_valid_rows(objects)
        if rows is not None:
            return np.array(rows, dtype=np.float32)
    values = np.array(list(map(_GET_INPUTS, objects)), dtype=np.float64).reshape(n, N_INPUTS)
    # Unset optional fields read as 0.0: only rows holding a 0.0 need the
    # (slower) presence check; 0.0 is out of range for magnitudes anyway.
    missing = np.zeros_like(values, dtype=bool)
    for k, j in zip(*np.nonzero(values == 0.0)):
        if not objects[k].HasField(MODEL_INPUTS[j]):
            missing[k, j] = True
    # In a stream, name the message as well as the object.
    where = f"{what}, " if what.startswith("stream message") else ""
    _raise_first_problem(values, missing, lambda k: where + _object_label(objects, k),
                         lambda k, j: f"{object_path(field, k)}.{MODEL_INPUTS[j]}")
    return values.astype(np.float32)


def inputs_in_range(values: np.ndarray) -> bool:
    """Whether every value of float [n, 6] inputs (MODEL_INPUTS order) is finite and inside its physical range:
    the inputs objects_to_inputs accepts, once every field is known to be present."""
    with np.errstate(invalid="ignore"):
        return bool(((values >= _LOW) & (values <= _HIGH)).all())  # NaN fails both comparisons


def _check_client_ids(objects: Sequence, max_client_id: int, what: str, field: str) -> None:
    lengths = [len(obj.client_id) for obj in objects]
    longest = max(lengths)
    if longest > max_client_id:
        k = lengths.index(longest)
        check_client_id(objects[k].client_id, k, max_client_id, what, field)


def check_client_id(client_id: str, k: int, max_client_id: int, what: str, field: str = OBJECTS_FIELD) -> None:
    """InvalidInput naming object `k` if its `client_id` is longer than `max_client_id` characters."""
    if len(client_id) > max_client_id:
        where = f"{what}, " if what.startswith("stream message") else ""
        message = (f"{where}object {k}: client_id {echo(client_id)!r} is too long: "
                   f"{len(client_id)} characters; the maximum is {max_client_id}")
        raise InvalidInput(message, [FieldViolation(f"{object_path(field, k)}.client_id", message)])


def echo(client_id: str) -> str:
    """`client_id` as error messages and logs repeat it: cut to ECHOED_CLIENT_ID characters."""
    return bounded(client_id, ECHOED_CLIENT_ID)


def bounded(text: str, limit: int = 1000) -> str:
    """`text` cut to `limit` characters, saying how long it was: for anything a client sent
    that a message or log repeats (gRPC refuses status details over its metadata limit)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} chars)"


def _plainly_valid_rows(objects: Sequence) -> list[tuple[float, ...]] | None:
    """The objects' inputs if every value is inside its range and none is 0.0, else None.

    The fast path for one-object calls. A 0.0 may be an unset field, NaN fails
    every comparison, and anything else doubtful returns None: the vectorised
    checks below then find and name the problem, so there is one set of messages.
    """
    rows = []
    for obj in objects:
        row = _GET_INPUTS(obj)
        for value, (low, high) in zip(row, _BOUNDS):
            if not low <= value <= high or value == 0.0:
                return None
        rows.append(row)
    return rows


def features_to_inputs(matrix: np.ndarray, max_batch: int) -> np.ndarray:
    """An Open Inference Protocol `input__0` tensor [n, 13] (FEATURE_NAMES order) -> [n, 6] inputs.

    The raw inputs (columns 0..5) get the same checks as stellar.v1 objects; the
    colour columns must be finite and equal to the server's own derivation (the
    server predicts from its derivation, so a wrong colour is an error, not
    silently ignored).
    """
    n = matrix.shape[0]
    check_count(n, max_batch, what="input__0", field=TENSOR_FIELD)
    inputs = matrix[:, :N_INPUTS]
    with np.errstate(invalid="ignore"):  # a signalling NaN warns when cast; the checks below name it
        values = inputs.astype(np.float64)
    _raise_first_problem(values, np.zeros(inputs.shape, dtype=bool), lambda k: f"input__0 row {k}",
                         lambda k, j: TENSOR_FIELD)
    colours = matrix[:, N_INPUTS:]
    bad = ~np.isfinite(colours)
    if bad.any():
        k, j = np.argwhere(bad)[0]
        _refuse_tensor(f"input__0 row {k}: column {N_INPUTS + j} ({FEATURE_NAMES[N_INPUTS + j]}) is {colours[k, j]}")
    derived = derive_feature_matrix(inputs)[:, N_INPUTS:]
    off = np.abs(colours - derived) > COLOUR_TOLERANCE
    if off.any():
        k, j = np.argwhere(off)[0]
        a, b = COLOURS[j]
        _refuse_tensor(
            f"input__0 row {k}: column {N_INPUTS + j} ({FEATURE_NAMES[N_INPUTS + j]}) is {colours[k, j]:.6g} "
            f"but {a} - {b} = {derived[k, j]:.6g}; colour columns must be the band differences "
            "(see the model metadata property 'input__0.columns')"
        )
    return np.ascontiguousarray(inputs, dtype=np.float32)


def _refuse_tensor(message: str) -> None:
    raise InvalidInput(message, [FieldViolation(TENSOR_FIELD, message)])


def _object_label(objects: Sequence, k: int) -> str:
    client_id = objects[k].client_id
    return f"object {k} (client_id {echo(client_id)!r})" if client_id else f"object {k}"


def _raise_first_problem(values: np.ndarray, missing: np.ndarray, label, path) -> None:
    """InvalidInput naming the first invalid object, with a violation for each of the
    first MAX_VIOLATIONS invalid objects (`path(k, j)`: the field of object k, input j)."""
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        out_of_range = finite & ((values < _LOW) | (values > _HIGH))
    bad = missing | ~finite | out_of_range
    if not bad.any():
        return
    bad_rows = np.flatnonzero(bad.any(axis=1))
    violations = []
    for k in bad_rows[:MAX_VIOLATIONS].tolist():
        j = int(np.flatnonzero(bad[k])[0])
        violations.append(FieldViolation(path(k, j), f"{label(k)}: {_problem(values[k, j], bool(missing[k, j]), j)}"))
    more = len(bad_rows) - 1
    suffix = f" ({more} more invalid object{'s' if more > 1 else ''} in this request)" if more else ""
    raise InvalidInput(violations[0].description + suffix, violations)


def _problem(value: float, missing: bool, j: int) -> str:
    name = MODEL_INPUTS[j]
    if missing:
        return f"field '{name}' is missing"
    if np.isnan(value):
        return f"field '{name}' is NaN"
    if not np.isfinite(value):
        return f"field '{name}' is {'+' if value > 0 else '-'}infinite"
    return f"field '{name}' = {value:g} is outside the physical range [{_LOW[j]:g}, {_HIGH[j]:g}]"
