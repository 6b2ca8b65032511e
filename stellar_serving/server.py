"""Server bootstrap: configuration, TLS, interceptors (auth, metrics, logs), health,
reflection, the model store, and a graceful shutdown that drains in-flight calls.

    from stellar_serving.config import ServingConfig
    from stellar_serving.server import StellarServer
    server = StellarServer(ServingConfig.from_env()).start()   # returns once the model is loaded (or not)
    server.wait_for_termination()  # or serve_forever(config): SIGTERM/SIGINT drain and stop
"""

from __future__ import annotations

# First: config sets OMP_WAIT_POLICY before anything loads xgboost (see config.py).
from stellar_serving.config import ServingConfig  # noqa: I001

import hmac
import json
import logging
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import grpc
from google.protobuf import descriptor_pool
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from stellar_api._generated.inference import grpc_predict_v2_pb2 as v2
from stellar_api._generated.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from stellar_serving import request_decoder
from stellar_serving.batching import MicroBatcher
from stellar_serving.metrics import ServerMetrics
from stellar_serving.model_store import LoadedModel, ModelStore
from stellar_serving.servicers import ClassifierServicer, InferenceServicer
from stellar_api.validation import bounded

if TYPE_CHECKING:
    from stellar_serving.peers import Peers

log = logging.getLogger("stellar_serving.server")

CLASSIFIER_SERVICE = pb.DESCRIPTOR.services_by_name["ClassifierService"].full_name
INFERENCE_SERVICE = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVED_SERVICES = (CLASSIFIER_SERVICE, INFERENCE_SERVICE)
# Generic tools must reach these without credentials.
OPEN_SERVICES = (health.SERVICE_NAME, reflection.SERVICE_NAME)
ADMIN_METHODS = (f"/{CLASSIFIER_SERVICE}/ReloadModel",)
HEALTH_CHECK = f"/{health.SERVICE_NAME}/Check"
# Requests of many objects, read from their bytes when plainly valid (request_decoder.py).
OBJECT_BATCH_METHODS = (f"/{CLASSIFIER_SERVICE}/ClassifyBatch", f"/{CLASSIFIER_SERVICE}/ClassifyStream")
HEALTH_WATCH = f"/{health.SERVICE_NAME}/Watch"
RELOAD_CALL_THREADS = 16  # ReloadModel calls only wait for the one shared reload: waiting threads are cheap
# Health checks run on their own threads: unary calls held by clients that never
# send their message cannot make the orchestrator's probe time out.
HEALTH_CHECK_THREADS = 4
SHUTTING_DOWN = "the server is shutting down; retry on another replica"
DEADLINE_MARGIN_SECONDS = 0.25  # see _ended_by_client


# -- interceptors ---------------------------------------------------------------------


class _Undecodable:
    """What a request deserializer gives for bytes that are not the method's message."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(deserializer):
    """`deserializer` that returns _Undecodable instead of raising.

    gRPC answers a deserializer's exception itself (INTERNAL), and on that path
    the call never gave back its HTTP/2 stream: 256 bad requests froze the
    server. Returning a value lets the handler answer INVALID_ARGUMENT the
    ordinary way. Only the error's text is kept: the exception's traceback
    holds the call, and a call that stays referenced keeps its stream."""
    if deserializer is None:
        return None

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf raises DecodeError, but any failure is the request's fault
            return _Undecodable(f"{type(exc).__name__}: {bounded(str(exc), 200)}")

    return deserialize


def _sending_bytes(serializer):
    """`serializer` that sends a response a servicer already encoded (bytes, see wire.py) as it is."""
    if serializer is None:
        return None

    def serialize(response) -> bytes:
        return response if type(response) is bytes else serializer(response)

    return serialize


def _ignore_request(data: bytes) -> None:
    return _IGNORED


_IGNORED = object()  # a refused call's request: never parsed


def _refuse_undecodable(request, context, method: str) -> None:
    if isinstance(request, _Undecodable):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {method} message: {request.error}")


def _decoded(requests, context, method: str):
    for request in requests:
        _refuse_undecodable(request, context, method)
        yield request


def _abort_handler(code: grpc.StatusCode, details: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only refuses (and never parses the request)."""

    def refuse(request_or_iterator, context):
        context.abort(code, details)

    refuse.reads_no_request = True  # the TelemetryInterceptor then does not wait for the message
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, _ignore_request, handler.response_serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, _ignore_request, handler.response_serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, _ignore_request, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, _ignore_request, handler.response_serializer)


class AuthInterceptor(grpc.ServerInterceptor):
    """Bearer token in the `authorization` metadata; health and reflection stay open.

    scope "all": every other RPC needs the token; scope "admin": only ReloadModel.
    """

    def __init__(self, token: str, scope: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._scope = scope
        self._refusals: dict[tuple[str, str], grpc.RpcMethodHandler] = {}  # stable handlers: cacheable downstream

    def _refuse(self, method: str, details: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        key = (method, details)
        refusal = self._refusals.get(key)
        if refusal is None:
            refusal = self._refusals.setdefault(key, _abort_handler(grpc.StatusCode.UNAUTHENTICATED, details, handler))
        return refusal

    def _needs_token(self, method: str) -> bool:
        if _service_of(method) in OPEN_SERVICES:
            return False
        return self._scope == "all" or method in ADMIN_METHODS

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not self._needs_token(handler_call_details.method):
            return handler
        presented = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                presented = value
                break
        method = handler_call_details.method
        if not presented:
            return self._refuse(method, "missing 'authorization: Bearer <token>' metadata", handler)
        if not hmac.compare_digest(presented.encode(), self._expected):
            return self._refuse(method, "invalid bearer token", handler)
        return handler


def _service_of(method: str) -> str:
    return method.rsplit("/", 2)[1] if method.count("/") >= 2 else ""


class _OpenStream:
    """A call the watchdog watches: an open stream, or a unary call waiting for its message."""

    __slots__ = ("context", "last_active", "ended_idle", "waits_for_request", "limit")

    def __init__(self, context, limit: float, waits_for_request: bool = False) -> None:
        self.context = context
        self.last_active = time.monotonic()
        self.ended_idle = False
        self.waits_for_request = waits_for_request
        self.limit = limit  # seconds without a message before the watchdog ends the call


class StreamGuard:
    """Bounds streaming calls by group and ends idle ones.

    Every open stream holds a server thread. Without a bound, idle streams
    (reflection needs no token) took every thread and unary calls and health
    checks timed out. Each group has its own slots, refused with
    RESOURCE_EXHAUSTED when full, and the server's pool has a thread for each
    slot on top of the unary workers. One watchdog thread ends streams that
    neither received nor sent a message for `idle_seconds`, and unary calls
    whose request message has not arrived after `first_message_seconds` (a
    client that opens a call and never sends held a thread for ever; each such
    call holds one for seconds, not a whole idle period).
    """

    def __init__(self, limits: dict[str, tuple[int, str]], idle_seconds: float,
                 first_message_seconds: float) -> None:
        self._limits = limits  # group -> (slots, env var that sets them)
        self._slots = {group: threading.BoundedSemaphore(n) for group, (n, _) in limits.items()}
        self._idle_seconds = idle_seconds
        self._first_message_seconds = first_message_seconds
        self._open: set[_OpenStream] = set()
        self._idle_ended: dict[int, str] = {}  # id(context) -> message, until telemetry records the call
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="stellar-stream-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()

    def guarded(self, behaviour, group: str, method: str, request_streaming: bool, response_streaming: bool,
                idle_exempt: bool = False):
        """`behaviour` holding a slot of `group` while it runs, its messages keeping it alive
        (`idle_exempt`: never ended for idleness, for streams that are quiet by design)."""
        if response_streaming:
            def guarded_stream(request, context):
                stream = self._enter(group, method, context, idle_exempt)
                try:
                    if request_streaming:
                        request = self._received(request, stream)
                    for response in behaviour(request, context):
                        stream.last_active = time.monotonic()
                        yield response
                finally:
                    self._leave(group, stream)
            return guarded_stream

        def guarded_call(request_iterator, context):
            stream = self._enter(group, method, context, idle_exempt)
            try:
                return behaviour(self._received(request_iterator, stream), context)
            finally:
                self._leave(group, stream)
        return guarded_call

    def first_message(self, requests, context):
        """The request of a unary-request call (None if the call has none), awaited under the watchdog
        for at most `first_message_seconds` (or the call's deadline, if sooner)."""
        limit = self._first_message_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            limit = min(limit, remaining)
        waiting = _OpenStream(context, limit, waits_for_request=True)
        with self._lock:
            self._open.add(waiting)
        try:
            return next(requests, None)
        finally:
            self._forget(waiting)

    def ended_idle(self, context) -> str | None:
        """The message this call was ended with if the watchdog ended it (asked once, after the call)."""
        if not self._idle_ended:
            return None
        with self._lock:
            return self._idle_ended.pop(id(context), None)

    def _enter(self, group: str, method: str, context, idle_exempt: bool) -> _OpenStream:
        if not self._slots[group].acquire(blocking=False):
            limit, env = self._limits[group]
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"too many concurrent {method} calls (limit {limit}): {env} streams may be open at once; "
                          "retry later")
        stream = _OpenStream(context, self._idle_seconds)
        if not idle_exempt:
            with self._lock:
                self._open.add(stream)
        return stream

    def _leave(self, group: str, stream: _OpenStream) -> None:
        self._forget(stream)
        self._slots[group].release()

    def _forget(self, watched: _OpenStream) -> None:
        with self._lock:
            self._open.discard(watched)

    @staticmethod
    def _received(requests, stream: _OpenStream):
        for request in requests:
            stream.last_active = time.monotonic()
            yield request

    def _idle_message(self, watched: _OpenStream) -> str:
        if watched.waits_for_request:
            return (f"no request message arrived within {watched.limit:g} s (STELLAR_FIRST_MESSAGE_SECONDS, "
                    "or the call's deadline)")
        return (f"stream idle for {self._idle_seconds:g} s (STELLAR_STREAM_IDLE_SECONDS): "
                "no message received or sent; open a new stream")

    def _watch(self) -> None:
        tick = min(1.0, self._idle_seconds / 4, self._first_message_seconds / 4)
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                idle = [s for s in self._open if now - s.last_active > s.limit and not s.ended_idle]
            for stream in idle:
                stream.ended_idle = True
                message = self._idle_message(stream)
                with self._lock:  # before ending it: whoever records the call's end must find it
                    self._idle_ended[id(stream.context)] = message
                _end_call(stream.context, grpc.StatusCode.DEADLINE_EXCEEDED, message)


def _no_request(requests, context) -> None:
    return None


def _ended_by_client(context) -> tuple[str, str]:
    """(code, details) of a call the client ended: its deadline passed, or it cancelled or went away."""
    remaining = context.time_remaining()
    # The client gives up when its own clock says so, a little before the server's deadline
    # (which starts when the call arrives): a cancellation this close to it is the deadline.
    if remaining is not None and remaining <= DEADLINE_MARGIN_SECONDS:
        return "DEADLINE_EXCEEDED", "the client's deadline passed before the call finished"
    return "CANCELLED", "cancelled by the client"


def _client_state_known(context) -> bool:
    """Whether grpcio exposes the call's client state (`_state.client`), which tells a cancel from
    a half-close once the call has ended. Without it, streams ending normally count as OK."""
    return isinstance(getattr(getattr(context, "_state", None), "client", None), str)


def _client_cancelled(context) -> bool:
    return getattr(getattr(context, "_state", None), "client", None) == "cancelled"


def _end_call(context, code: grpc.StatusCode, details: str) -> None:
    """End a call from another thread than the one serving it, with a status the client sees.

    The public `context.cancel()` would only tell the client CANCELLED; the
    underlying call can carry our code and details. Falls back to cancel()."""
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        call.cancel(code.value[0], details)
    except Exception:  # another grpcio layout: the plain cancel still frees the stream
        context.cancel()


class TelemetryInterceptor(grpc.ServerInterceptor):
    """Counts, times and logs every call by method and final status code; answers
    undecodable requests; puts streams under the StreamGuard and some methods on their own threads."""

    def __init__(self, metrics: ServerMetrics, streams: StreamGuard,
                 thread_pools: dict[str, futures.ThreadPoolExecutor] | None = None,
                 readers: dict[str, Callable] | None = None) -> None:
        self._metrics = metrics
        self._streams = streams
        self._thread_pools = thread_pools or {}
        # method -> (its deserializer -> a deserializer that reads plain requests faster; request_decoder.py)
        self._readers = readers or {}
        self._wrapped: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._lock = threading.Lock()
        self._served_in_flight = 0  # calls of SERVED_SERVICES running: the drain waits for them
        self._draining = False  # set by start_drain(): served calls are then refused
        self._idle = threading.Condition(self._lock)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        cached = self._wrapped.get(id(handler))
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, handler_call_details.method)
        with self._lock:
            if len(self._wrapped) < 1024:  # handlers are per method; a bound keeps this from growing
                self._wrapped[id(handler)] = (handler, wrapped)
        return wrapped

    def start_drain(self) -> None:
        """From now on, new calls of the served services answer UNAVAILABLE (health and reflection
        still answer): under steady traffic the calls in flight could otherwise never reach zero."""
        with self._idle:
            self._draining = True

    def wait_for_served_calls(self, timeout: float) -> bool:
        """Wait until no call of the served services runs (True) or `timeout` passes (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._served_in_flight == 0, timeout)

    def _admit(self, context) -> None:
        """Count a served call in flight, or refuse it (UNAVAILABLE) once the drain started."""
        with self._idle:
            if not self._draining:
                self._served_in_flight += 1
                return
        context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)

    def _release(self) -> None:
        with self._idle:
            self._served_in_flight -= 1
            if self._served_in_flight == 0:
                self._idle.notify_all()

    def _record(self, method: str, code: str, seconds: float, context, details: str = "") -> None:
        m = self._metrics
        m.requests_of(method, code).inc()
        m.latency_of(method).observe(seconds)
        if code != "OK":
            m.errors_of(method, code).inc()
            level = (logging.ERROR if code in ("UNKNOWN", "INTERNAL")
                     else logging.INFO if code == "CANCELLED" else logging.WARNING)
            details = bounded(details)
            log.log(level, "%s %s: %s", method, code, details, extra={
                "event": "rpc", "method": method, "code": code, "duration_ms": round(seconds * 1000, 3),
                "peer": context.peer(), "details": details})
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s OK", method, extra={"event": "rpc", "method": method, "code": code,
                                              "duration_ms": round(seconds * 1000, 3), "peer": context.peer()})

    def _status(self, context, exc: BaseException | None) -> tuple[str, str]:
        idle = self._streams.ended_idle(context)
        if idle is not None:
            return "DEADLINE_EXCEEDED", idle
        code = context.code()
        if code is None or code == grpc.StatusCode.OK:
            if not context.is_active():  # the client cancelled, went away, or its deadline passed: not our error
                return _ended_by_client(context)
            if exc is None:
                return "OK", ""
            log.exception("unhandled error", exc_info=exc)
            return "UNKNOWN", f"{type(exc).__name__}: {exc}"
        details = context.details()
        if isinstance(details, bytes):
            details = details.decode("utf-8", "replace")
        return code.name, details or ""

    def _wrap(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        """`handler` with telemetry, under the StreamGuard, and always request-streaming: a unary
        request is then read by our code, under the watchdog, instead of by gRPC before our code runs."""
        method = full_method.rsplit("/", 1)[-1]
        behaviour = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        served = _service_of(full_method) in SERVED_SERVICES
        refusal = getattr(behaviour, "reads_no_request", False)
        if (handler.request_streaming or handler.response_streaming) and not refusal:
            # Health Watch is idle by design, and must not queue behind reflection streams.
            group = "served" if served else "watch" if full_method == HEALTH_WATCH else "open"
            behaviour = self._streams.guarded(behaviour, group, method, handler.request_streaming,
                                              handler.response_streaming, idle_exempt=group == "watch")
        if refusal:  # a refused call (no token) is answered at once: its message is never awaited
            take = _no_request
        else:
            take = self._request_taker(method, reads_one=not handler.request_streaming)
        if handler.response_streaming:
            wrapped = self._wrap_streaming(behaviour, method, take, served)
            factory = grpc.stream_stream_rpc_method_handler
        else:
            wrapped = self._wrap_unary(behaviour, method, take, served)
            factory = grpc.stream_unary_rpc_method_handler
        pool = self._thread_pools.get(full_method)
        if pool is not None:
            wrapped.experimental_thread_pool = pool  # grpc runs the call on this pool
        deserializer = handler.request_deserializer
        reader = self._readers.get(full_method)
        if reader is not None and deserializer is not None:
            deserializer = reader(deserializer)
        return factory(wrapped, _tolerant(deserializer), _sending_bytes(handler.response_serializer))

    def _request_taker(self, method: str, reads_one: bool):
        """requests iterator -> what the behaviour takes: the one request, or the checked iterator."""
        if not reads_one:
            return lambda requests, context: _decoded(requests, context, method)
        first_message = self._streams.first_message

        def one(requests, context):
            request = first_message(requests, context)
            if request is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{method} takes exactly one request message; the call ended without one")
            _refuse_undecodable(request, context, method)
            return request

        return one

    def _wrap_streaming(self, behaviour, method: str, take, served: bool):
        record, status, admit, release = self._record, self._status, self._admit, self._release
        ended_idle = self._streams.ended_idle

        def streaming(requests, context):
            start = time.perf_counter()
            exc = None
            cancelled = False
            admitted = False
            once = threading.Lock()  # recorded exactly once: here, or by the termination callback

            def record_once(code: str, details: str) -> None:
                if once.acquire(blocking=False):
                    record(method, code, time.perf_counter() - start, context, details)

            finished_ok = []  # set when the generator ended normally: gRPC alone knows yet whether that was a cancel

            def on_termination():
                # A cancel can reach this generator as the end of the requests (gRPC completes the
                # pending read with nothing before it learns of the cancel), or not at all while it
                # waits at a `yield`. By the time gRPC calls this, it knows.
                idle = ended_idle(context)  # the watchdog's own cancel is not the client's
                if idle is not None:
                    record_once("DEADLINE_EXCEEDED", idle)
                elif _client_cancelled(context):
                    record_once(*_ended_by_client(context))
                elif finished_ok:
                    record_once("OK", "")
                elif not context.is_active():
                    record_once(*status(context, None))

            context.add_callback(on_termination)
            try:
                if served:
                    admit(context)
                    admitted = True
                yield from behaviour(take(requests, context), context)
            except GeneratorExit:  # the client cancelled or went away
                cancelled = True
                raise
            except BaseException as error:
                exc = error
                raise
            finally:
                if admitted:
                    release()
                outcome = status(context, None if cancelled else exc)
                if outcome[0] == "OK" and _client_state_known(context):
                    finished_ok.append(True)  # on_termination records it, as OK or as the cancel it was
                else:
                    record_once(*outcome)
                exc = None  # see _wrap_unary

        return streaming

    def _wrap_unary(self, behaviour, method: str, take, served: bool):
        record, status, admit, release = self._record, self._status, self._admit, self._release

        def unary(requests, context):
            start = time.perf_counter()
            exc = None
            admitted = False
            try:
                if served:
                    admit(context)
                    admitted = True
                return behaviour(take(requests, context), context)
            except BaseException as error:
                exc = error
                raise
            finally:
                if admitted:
                    release()
                code, details = status(context, exc)
                record(method, code, time.perf_counter() - start, context, details)
                # The exception's traceback holds this frame and the frame held the
                # exception: a cycle that kept the call, and its HTTP/2 stream, until a
                # garbage collection. Enough failed calls and the server refused all.
                exc = None

        return unary


# -- structured logs ----------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    _RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str = "INFO", fields: dict | None = None) -> None:
    """JSON lines on stderr; `fields` are added to every line (which server process wrote it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    if fields:
        handler.addFilter(_Fields(fields))
    root = logging.getLogger("stellar_serving")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class _Fields(logging.Filter):
    def __init__(self, fields: dict) -> None:
        super().__init__()
        self._fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.update(self._fields)
        return True


# -- the server ----------------------------------------------------------------------------


def _reflection_pool() -> descriptor_pool.DescriptorPool:
    """One pool holding every served file: the inference stubs live in a private
    pool (see setup.py), so the global pool cannot describe them."""
    pool = descriptor_pool.DescriptorPool()
    for file in (timestamp_pb2.DESCRIPTOR, pb.DESCRIPTOR, v2.DESCRIPTOR, health_pb2.DESCRIPTOR,
                 reflection_pb2.DESCRIPTOR):
        pool.AddSerializedFile(file.serialized_pb)
    return pool


class StellarServer:
    def __init__(self, config: ServingConfig, peers: "Peers | None" = None) -> None:
        """peers: the other processes sharing the port (stellar_serving.processes); None: the only one."""
        self.config = config
        self.peers = peers
        self.metrics = ServerMetrics()
        self.store = ModelStore(config, self.metrics)
        self.health = health.HealthServicer()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._stopped = threading.Event()

        self.streams = StreamGuard({
            "served": (config.max_concurrent_streams, "STELLAR_MAX_CONCURRENT_STREAMS"),
            "open": (config.max_open_streams, "STELLAR_MAX_OPEN_STREAMS"),
            "watch": (config.max_watch_streams, "STELLAR_MAX_WATCH_STREAMS"),
        }, config.stream_idle_seconds, config.first_message_seconds)
        # ReloadModel waits for the registry: on its own threads, a burst of them
        # cannot take the threads that answer classification.
        self._reload_pool = futures.ThreadPoolExecutor(max_workers=RELOAD_CALL_THREADS,
                                                       thread_name_prefix="stellar-reload-rpc")
        self._health_pool = futures.ThreadPoolExecutor(max_workers=HEALTH_CHECK_THREADS,
                                                       thread_name_prefix="stellar-health-rpc")
        self.decoder = (request_decoder.BackgroundDecoder(config.max_batch_size, config.max_client_id_chars,
                                                          config.compiled_compiler)
                        if config.request_decoder == "auto" else None)
        self.telemetry = TelemetryInterceptor(self.metrics, self.streams, {
            **{method: self._reload_pool for method in ADMIN_METHODS}, HEALTH_CHECK: self._health_pool},
            readers={method: self.decoder.deserializer for method in OBJECT_BATCH_METHODS} if self.decoder else None)
        interceptors: list[grpc.ServerInterceptor] = [self.telemetry]
        if config.auth_token:
            interceptors.append(AuthInterceptor(config.auth_token, config.auth_scope))
        else:
            log.warning("STELLAR_AUTH_TOKEN is not set: every RPC, ReloadModel included, is open",
                        extra={"event": "auth_off"})
        limit = config.max_message_bytes
        stream_threads = config.max_concurrent_streams + config.max_open_streams + config.max_watch_streams
        self.server = grpc.server(
            # Each open stream holds a thread; unary calls keep max_workers of their own.
            futures.ThreadPoolExecutor(max_workers=config.max_workers + stream_threads,
                                       thread_name_prefix="stellar-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.max_concurrent_streams", config.max_concurrent_rpcs),
                # Only processes of one supervisor share a port (it checked the port was free);
                # otherwise a second server on a busy port fails to start rather than take half its calls.
                ("grpc.so_reuseport", 1 if peers is not None else 0),
            ],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        # Shared: stellar.v1 and v2 calls are predicted together.
        batcher = MicroBatcher(config.micro_batch_max_rows, observe=self.metrics.booster_rows.observe)
        pb_grpc.add_ClassifierServiceServicer_to_server(
            ClassifierServicer(self.store, config, self.metrics, batcher, peers), self.server)
        v2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.store, config, self.metrics, batcher), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVED_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server, pool=_reflection_pool())
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.store.add_listener(self._on_model)

        address = f"{config.grpc_host}:{config.grpc_port}"
        if config.tls_enabled:
            credentials = grpc.ssl_server_credentials(
                [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())])
            self.port = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot bind gRPC to {address}")

    def _set_health(self, status) -> None:
        for service in ("", *SERVED_SERVICES):
            self.health.set(service, status)

    def _on_model(self, model: LoadedModel) -> None:
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        if self.peers is not None:
            self.peers.served(model.version)

    def start(self) -> "StellarServer":
        """Open the ports (health NOT_SERVING), load the champion, then SERVING.

        One of several processes loads first: until then its siblings take every connection."""
        if self.config.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(self.config.metrics_host, self.config.metrics_port)
        if self.peers is not None:
            self.store.start()
        self.server.start()
        log.info("listening", extra={"event": "listening", "grpc_port": self.port, "metrics_port": self.metrics_port,
                                     "tls": self.config.tls_enabled, "auth": bool(self.config.auth_token)})
        if self.peers is None:
            self.store.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING and new served calls UNAVAILABLE, let in-flight calls finish
        (up to `grace` seconds), then refuse every call and release everything."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        self.telemetry.start_drain()
        self.health.enter_graceful_shutdown()  # health answers NOT_SERVING while draining
        self.store.stop()
        started = time.monotonic()
        # Still accepting calls here: health checks get NOT_SERVING, not a refused connection.
        self.telemetry.wait_for_served_calls(grace)
        self.server.stop(max(0.0, grace - (time.monotonic() - started))).wait()
        self.streams.stop()
        self._reload_pool.shutdown(wait=False, cancel_futures=True)
        self._health_pool.shutdown(wait=False, cancel_futures=True)
        self.metrics.stop()
        log.info("stopped", extra={"event": "stopped", "drain_seconds": round(time.monotonic() - started, 3)})

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)


def serve_forever(config: ServingConfig) -> int:
    """Run until SIGTERM or SIGINT, then drain in-flight calls and exit 0 (one process; several:
    stellar_serving.processes.supervise)."""
    configure_logging(config.log_level)
    server = StellarServer(config)
    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("signal %s: draining", signal.Signals(signum).name, extra={"event": "shutdown"})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0
