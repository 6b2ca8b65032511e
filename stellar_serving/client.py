"""Python client of the stellar.v1 classification API.

    from stellar_serving.client import StellarClient
    with StellarClient("localhost:50051", token="...", tls_ca="ca.pem") as client:
        result = client.classify(u=19.1, g=17.9, r=17.3, i=17.0, z=16.8, redshift=0.07, client_id="obj-1")
        for result in client.classify_stream(objects):   # dicts with u, g, r, i, z, redshift[, client_id]
            ...

Errors come back as grpc.RpcError (code() and details() say what was wrong).
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stellar_core.contract import MODEL_INPUTS

from stellar_serving._generated.stellar.v1 import classifier_pb2 as pb
from stellar_serving._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc

CLIENT_ID_COLUMNS = ("client_id", "spec_obj_ID", "obj_ID", "object_id")
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Result:
    client_id: str
    predicted_class: str
    probabilities: dict[str, float]
    model_version: str

    @classmethod
    def from_proto(cls, message: pb.Classification) -> "Result":
        return cls(message.client_id, message.predicted_class, dict(message.probabilities), message.model_version)


def to_object(values: Mapping) -> pb.SdssObject:
    """A mapping (dict, CSV row) -> SdssObject. Absent or empty inputs stay unset, so
    the server names them as missing instead of reading 0.0."""
    fields = {}
    for name in MODEL_INPUTS:
        value = values.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        fields[name] = float(value)
    client_id = next((str(values[c]) for c in CLIENT_ID_COLUMNS if values.get(c) not in (None, "")), "")
    return pb.SdssObject(client_id=client_id, **fields)


def read_csv_objects(path: str | Path) -> Iterator[dict]:
    """Rows of a CSV (optionally .gz) file as dicts, streamed (no pandas)."""
    path = Path(path)
    raw = gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")
    with raw as handle:
        yield from csv.DictReader(handle)


def count_csv_rows(path: str | Path) -> int:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")) - 1)


class StellarClient:
    def __init__(self, target: str, *, token: str | None = None, tls_ca: str | Path | bytes | None = None,
                 tls: bool = False, timeout: float | None = 30.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 tls_server_name: str | None = None) -> None:
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        if tls_ca is not None or tls:
            root = Path(tls_ca).read_bytes() if isinstance(tls_ca, (str, Path)) else tls_ca
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root), options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self.stub = pb_grpc.ClassifierStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout = timeout

    def __enter__(self) -> "StellarClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call_kwargs(self, timeout: float | None) -> dict:
        return {"metadata": self.metadata, "timeout": self.timeout if timeout is None else timeout}

    def classify(self, obj: Mapping | pb.SdssObject | None = None, *, timeout: float | None = None,
                 **fields) -> Result:
        message = obj if isinstance(obj, pb.SdssObject) else to_object({**(obj or {}), **fields})
        response = self.stub.Classify(pb.ClassifyRequest(object=message), **self._call_kwargs(timeout))
        return Result.from_proto(response.result)

    def classify_batch(self, objects: Iterable[Mapping | pb.SdssObject], *, timeout: float | None = None) -> list[Result]:
        request = pb.ClassifyBatchRequest(objects=[o if isinstance(o, pb.SdssObject) else to_object(o) for o in objects])
        response = self.stub.ClassifyBatch(request, **self._call_kwargs(timeout))
        return [Result.from_proto(r) for r in response.results]

    def classify_stream(self, objects: Iterable[Mapping | pb.SdssObject], *, chunk_size: int = 500,
                        timeout: float | None = None) -> Iterator[list[Result]]:
        """Stream objects in chunks through ClassifyStream; yield each chunk's results as it returns."""

        def requests() -> Iterator[pb.ClassifyBatchRequest]:
            chunk: list[pb.SdssObject] = []
            for o in objects:
                chunk.append(o if isinstance(o, pb.SdssObject) else to_object(o))
                if len(chunk) >= chunk_size:
                    yield pb.ClassifyBatchRequest(objects=chunk)
                    chunk = []
            if chunk:
                yield pb.ClassifyBatchRequest(objects=chunk)

        kwargs = self._call_kwargs(timeout)
        if timeout is None:
            kwargs["timeout"] = None  # a stream lasts as long as its input
        for response in self.stub.ClassifyStream(requests(), **kwargs):
            yield [Result.from_proto(r) for r in response.results]

    def model_info(self, *, timeout: float | None = None) -> pb.ModelInfo:
        return self.stub.GetModelInfo(pb.GetModelInfoRequest(), **self._call_kwargs(timeout))

    def reload_model(self, *, timeout: float | None = None) -> pb.ReloadModelResponse:
        return self.stub.ReloadModel(pb.ReloadModelRequest(), **self._call_kwargs(timeout))

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        response = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout if timeout is None else timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


__all__ = ["Result", "StellarClient", "count_csv_rows", "read_csv_objects", "to_object"]
