"""Python client of the stellar.v1 classification API.

    from stellar_api.client import StellarClient
    with StellarClient("localhost:50051", token="...", tls_ca="ca.pem") as client:
        result = client.classify(u=19.1, g=17.9, r=17.3, i=17.0, z=16.8, redshift=0.07, client_id="obj-1")
        for result in client.classify_stream(objects):   # dicts with u, g, r, i, z, redshift[, client_id]
            ...

Errors come back as grpc.RpcError (code() and details() say what was wrong);
for invalid input, `field_violations(error)` lists which field of which object
and why (the google.rpc.BadRequest details of the status).
CsvObjects reads a CSV file (plain or gzip) for ClassifyStream, checking each
row with the server's own validation first, so a bad row is named by its line.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stellar_core.contract import MODEL_INPUTS

from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from stellar_api.status_details import FieldViolation, field_violations

CLIENT_ID_COLUMNS = ("client_id", "spec_obj_ID", "obj_ID", "object_id")
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


CLASS_PREFIX = "OBJECT_CLASS_"


def class_name(value: int) -> str:
    """An ObjectClass value -> the class name the model uses (e.g. OBJECT_CLASS_STAR -> "STAR")."""
    return pb.ObjectClass.Name(value).removeprefix(CLASS_PREFIX)


@dataclass(frozen=True)
class Result:
    client_id: str
    predicted_class: str  # class name: GALAXY, QSO or STAR
    probabilities: dict[str, float]
    model_version: str

    @classmethod
    def from_proto(cls, message: pb.Classification) -> "Result":
        return cls(message.client_id, class_name(message.predicted_class), dict(message.probabilities),
                   message.model_version)


def to_object(values: Mapping) -> pb.SdssObject:
    """A mapping (dict, CSV row) -> SdssObject. Absent or empty inputs stay unset, so
    the server names them as missing instead of reading 0.0."""
    fields = {}
    for name in MODEL_INPUTS:
        value = values.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        fields[name] = float(value)
    return pb.SdssObject(client_id=_client_id(values), **fields)


GZIP_MAGIC = b"\x1f\x8b"


class CsvInputError(ValueError):
    """A CSV file that cannot be read as objects; str() names the file and the problem."""


class InvalidRow(ValueError):
    """A row the server would refuse; `field` names the input at fault ("" if none)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


@dataclass(frozen=True)
class RejectedRow:
    line: int
    client_id: str
    field: str
    reason: str
    values: list[str]

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (id {self.client_id!r})" if self.client_id else "")
        return f"{where}: {self.reason}"


def is_gzip(path: str | Path) -> bool:
    """Whether the file's first bytes are gzip's magic number (its name does not matter)."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_csv_text(path: str | Path):
    """A text handle on a CSV file, gunzipped if its bytes say gzip; a UTF-8 BOM is dropped."""
    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def open_binary(path: str | Path):
    """A binary handle on a file, gunzipped if its bytes say gzip."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def utf8_lines(binary, path: str | Path) -> Iterator[str]:
    """The lines of a binary handle as text, decoded one by one so that an error names its line."""
    for number, raw in enumerate(binary, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")  # -sig: drop a BOM
        except UnicodeDecodeError as exc:
            raise CsvInputError(f"{path} line {number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                                f"character {exc.start + 1}); save the file as UTF-8") from None


def read_csv_objects(path: str | Path) -> Iterator[dict]:
    """Rows of a CSV (optionally gzip) file as dicts, streamed (no pandas)."""
    with open_csv_text(path) as handle:
        yield from csv.DictReader(handle)


def count_csv_rows(path: str | Path) -> int:
    opener = gzip.open if is_gzip(path) else open
    with opener(path, "rb") as handle:
        return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")) - 1)


def _client_id(row: Mapping) -> str:
    return next((str(row[c]) for c in CLIENT_ID_COLUMNS if row.get(c) not in (None, "")), "")


def checked_object(row: Mapping) -> pb.SdssObject:
    """A CSV row -> SdssObject, or InvalidRow if the server's validation would refuse it.

    Parsing is local (only the client sees the text); the checks are the server's
    own (stellar_api.validation), so client and server agree on what is valid.
    """
    from stellar_api.validation import DEFAULT_MAX_CLIENT_ID, InvalidInput, objects_to_inputs

    fields = {}
    for name in MODEL_INPUTS:
        value = row.get(name)
        if value is None or not value.strip():
            continue  # left unset: the validation names it as missing
        try:
            fields[name] = float(value)
        except ValueError:
            raise InvalidRow(name, f"field '{name}' = {value.strip()!r} is not a number") from None
    obj = pb.SdssObject(**fields)  # no id yet: the validation's message then starts with "object 0: "
    try:
        objects_to_inputs([obj], max_batch=1)
    except InvalidInput as exc:
        reason = str(exc).removeprefix("object 0: ")
        field = re.search(r"field '(\w+)'", reason)
        raise InvalidRow(field.group(1) if field else "", reason) from None
    obj.client_id = _client_id(row)
    if len(obj.client_id) > DEFAULT_MAX_CLIENT_ID:  # the server would refuse the whole stream for it
        raise InvalidRow("client_id", f"client_id is {len(obj.client_id)} characters long; the server accepts "
                                      f"at most {DEFAULT_MAX_CLIENT_ID} (STELLAR_MAX_CLIENT_ID_CHARS)")
    return obj


def _read_error(path: Path, exc: Exception, line: int | None = None) -> CsvInputError:
    where = f"{path}" + (f" line {line}" if line else "")
    if isinstance(exc, FileNotFoundError):
        return CsvInputError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return CsvInputError(f"{path} is a folder, not a CSV file")
    if isinstance(exc, PermissionError):
        return CsvInputError(f"{path}: permission denied")
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        return CsvInputError(f"{where}: damaged or truncated gzip data ({exc})")
    return CsvInputError(f"{where}: cannot be read ({exc})")


READ_ERRORS = (OSError, EOFError, csv.Error, zlib.error)


class CsvObjects:
    """The objects of a CSV file, checked row by row while they are streamed.

    Construction reads the header and the first row: a missing file, missing
    columns or no rows raise CsvInputError before anything is sent. Iterating
    yields the valid rows as SdssObject messages. An invalid row is passed to
    `on_reject` if given; otherwise it ends the iteration, as does a file that
    cannot be read further, with `failure` saying why. The iteration never
    raises: gRPC reads it on its own thread, where an exception only cancels
    the call with an unhelpful message.
    """

    def __init__(self, path: str | Path, on_reject: Callable[[RejectedRow], None] | None = None) -> None:
        self.path = Path(path)
        self.on_reject = on_reject
        self.failure: CsvInputError | InvalidRow | None = None
        self.rows = 0
        self.sent = 0
        self.rejected = 0
        self.first_rejected: RejectedRow | None = None
        self.duplicate_ids: Counter = Counter()  # id -> extra occurrences
        self._seen_ids: set[str] = set()
        self.header = self._check_start()

    def _check_start(self) -> list[str]:
        try:
            with open_binary(self.path) as handle:
                reader = csv.reader(utf8_lines(handle, self.path))
                header = next(reader, None)
                first_row = next((row for row in reader if row), None)
        except READ_ERRORS as exc:
            raise _read_error(self.path, exc) from None
        needed = ", ".join(MODEL_INPUTS)
        if header is None:
            raise CsvInputError(f"{self.path} is empty: expected a header line with columns {needed}")
        header = [name.strip() for name in header]
        missing = [name for name in MODEL_INPUTS if name not in header]
        if missing:
            raise CsvInputError(f"{self.path}: missing column{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(missing)} (needed: {needed}; the header has: {', '.join(header)})")
        if first_row is None:
            raise CsvInputError(f"{self.path} has a header but no rows")
        return header

    def __iter__(self) -> Iterator[pb.SdssObject]:
        reader = None
        try:
            with open_binary(self.path) as handle:
                reader = csv.reader(utf8_lines(handle, self.path))
                next(reader)
                for values in reader:
                    if not values:
                        continue  # a blank line
                    obj = self._check_row(reader.line_num, values)
                    if self.failure is not None:
                        return
                    if obj is not None:
                        self.sent += 1
                        yield obj
        except CsvInputError as exc:
            self.failure = exc
        except READ_ERRORS as exc:
            self.failure = _read_error(self.path, exc, reader.line_num + 1 if reader else None)

    def _check_row(self, line: int, values: list[str]) -> pb.SdssObject | None:
        self.rows += 1
        row = dict(zip(self.header, values))
        try:
            if len(values) > len(self.header):
                raise InvalidRow("", f"{len(values)} fields but the header has {len(self.header)} "
                                     "(an unquoted comma?)")
            obj = checked_object(row)
        except InvalidRow as exc:
            rejected = RejectedRow(line, _client_id(row), exc.field, str(exc), values)
            if self.on_reject is None:
                self.failure = InvalidRow(exc.field, f"{self.path} {rejected}")
                return None
            self.rejected += 1
            self.first_rejected = self.first_rejected or rejected
            self.on_reject(rejected)
            return None
        self._note_id(obj.client_id)
        return obj

    def _note_id(self, client_id: str) -> None:
        if not client_id:
            return
        if client_id in self._seen_ids:
            self.duplicate_ids[client_id] += 1
        else:
            self._seen_ids.add(client_id)


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
        self.stub = pb_grpc.ClassifierServiceStub(self.channel)
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

        def requests() -> Iterator[pb.ClassifyStreamRequest]:
            chunk: list[pb.SdssObject] = []
            for o in objects:
                chunk.append(o if isinstance(o, pb.SdssObject) else to_object(o))
                if len(chunk) >= chunk_size:
                    yield pb.ClassifyStreamRequest(objects=chunk)
                    chunk = []
            if chunk:
                yield pb.ClassifyStreamRequest(objects=chunk)

        kwargs = self._call_kwargs(timeout)
        if timeout is None:
            kwargs["timeout"] = None  # a stream lasts as long as its input
        for response in self.stub.ClassifyStream(requests(), **kwargs):
            yield [Result.from_proto(r) for r in response.results]

    def explain(self, objects: Iterable[Mapping | pb.SdssObject], *, timeout: float | None = None) -> pb.ExplainResponse:
        """Per-feature contributions (TreeSHAP) to every class's margin, with the bias, for each object."""
        request = pb.ExplainRequest(objects=[o if isinstance(o, pb.SdssObject) else to_object(o) for o in objects])
        return self.stub.Explain(request, **self._call_kwargs(timeout))

    def model_info(self, *, timeout: float | None = None) -> pb.GetModelInfoResponse:
        return self.stub.GetModelInfo(pb.GetModelInfoRequest(), **self._call_kwargs(timeout))

    def reload_model(self, *, timeout: float | None = None) -> pb.ReloadModelResponse:
        return self.stub.ReloadModel(pb.ReloadModelRequest(), **self._call_kwargs(timeout))

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        response = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout if timeout is None else timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


__all__ = ["CsvInputError", "CsvObjects", "FieldViolation", "InvalidRow", "RejectedRow", "Result", "StellarClient",
           "checked_object", "class_name", "count_csv_rows", "field_violations", "is_gzip", "open_csv_text",
           "read_csv_objects", "to_object"]
