"""google.rpc.BadRequest details on gRPC errors, both ways (gRPC's "richer error model").

The server puts a serialized `google.rpc.Status` (code, message, details) in the
`grpc-status-details-bin` trailer beside the usual code and message; its one
detail is a `google.rpc.BadRequest` whose field violations say which object,
which field and why ("objects[3].u", "field 'u' is missing"). Any gRPC client
can read it (grpcio-status's `rpc_status.from_call` in Python).

The messages come from googleapis-common-protos when it is installed. Without
it they are declared here, in a private descriptor pool, with the same full
names and field numbers: the bytes on the wire are the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

DETAILS_KEY = "grpc-status-details-bin"
BAD_REQUEST_TYPE = "google.rpc.BadRequest"
# A violation list is bounded: trailers share gRPC's metadata size limit (8 KiB by default).
MAX_VIOLATIONS = 10
MAX_DESCRIPTION = 300


@dataclass(frozen=True)
class FieldViolation:
    field: str  # path in the request message, e.g. "objects[3].u"
    description: str  # why it is refused


def _declared_messages():
    """Status and BadRequest declared in a private pool (field numbers as in google/rpc/*.proto)."""
    string, int32, message = (descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                              descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                              descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE)
    optional, repeated = (descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                          descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)

    def field(name, number, kind, label=optional, type_name=None):
        return descriptor_pb2.FieldDescriptorProto(name=name, number=number, type=kind, label=label,
                                                   type_name=type_name)

    file = descriptor_pb2.FileDescriptorProto(
        name="stellar_api/google_rpc_subset.proto", package="google.rpc", syntax="proto3",
        dependency=["google/protobuf/any.proto"])
    file.message_type.add(name="Status", field=[
        field("code", 1, int32), field("message", 2, string),
        field("details", 3, message, repeated, ".google.protobuf.Any")])
    bad_request = file.message_type.add(name="BadRequest", field=[
        field("field_violations", 1, message, repeated, ".google.rpc.BadRequest.FieldViolation")])
    bad_request.nested_type.add(name="FieldViolation", field=[
        field("field", 1, string), field("description", 2, string)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(
        any_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(file)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.BadRequest")))


try:
    from google.rpc.error_details_pb2 import BadRequest
    from google.rpc.status_pb2 import Status
except ImportError:  # googleapis-common-protos not installed
    Status, BadRequest = _declared_messages()


def bad_request_trailer(code: grpc.StatusCode, message: str,
                        violations: Iterable[FieldViolation]) -> tuple[str, bytes]:
    """The `grpc-status-details-bin` trailer of an error with a BadRequest detail."""
    detail = BadRequest()
    for violation in list(violations)[:MAX_VIOLATIONS]:
        detail.field_violations.add(field=violation.field, description=violation.description[:MAX_DESCRIPTION])
    status = Status(code=code.value[0], message=message)
    status.details.add().Pack(detail)
    return DETAILS_KEY, status.SerializeToString()


def field_violations(error: grpc.RpcError) -> list[FieldViolation]:
    """The BadRequest field violations a failed call carries ([] if none)."""
    trailers = error.trailing_metadata() or ()
    raw = next((value for key, value in trailers if key == DETAILS_KEY), None)
    if raw is None:
        return []
    status = Status.FromString(raw)
    violations = []
    for detail in status.details:
        if detail.type_url.rsplit("/", 1)[-1] == BAD_REQUEST_TYPE:
            request = BadRequest.FromString(detail.value)
            violations += [FieldViolation(v.field, v.description) for v in request.field_violations]
    return violations
