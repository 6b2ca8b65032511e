"""Server bootstrap: configuration, TLS, interceptors (auth, metrics, logs), health,
reflection, the model store, and a graceful shutdown that drains in-flight calls.

    from stellar_serving.batching import MicroBatcher
from stellar_serving.config import ServingConfig
    from stellar_serving.server import StellarServer
    server = StellarServer(ServingConfig.from_env()).start()   # returns once the model is loaded (or not)
    server.wait_for_termination()  # or serve_forever(config): SIGTERM/SIGINT drain and stop
"""

from __future__ import annotations

import os

# XGBoost's OpenMP threads spin while they wait for work. When other processes
# keep the cores busy, a spinning team member holds the core another one needs
# and a 0.4 ms prediction takes 20-100 ms (measured on the shared 2-core host);
# sleeping waiters cost microseconds. libgomp reads it when xgboost loads: the
# `serve` command sets it first thing; this line covers embedding the server in
# a process that has not loaded xgboost yet. Client users are untouched.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hmac  # noqa: E402
import json
import logging
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from stellar_serving._generated.inference import grpc_predict_v2_pb2 as v2
from stellar_serving._generated.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from stellar_serving._generated.stellar.v1 import classifier_pb2 as pb
from stellar_serving._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from stellar_serving.batching import MicroBatcher
from stellar_serving.config import ServingConfig
from stellar_serving.metrics import ServerMetrics
from stellar_serving.model_store import LoadedModel, ModelStore
from stellar_serving.servicers import ClassifierServicer, InferenceServicer

log = logging.getLogger("stellar_serving.server")

CLASSIFIER_SERVICE = pb.DESCRIPTOR.services_by_name["Classifier"].full_name
INFERENCE_SERVICE = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVED_SERVICES = (CLASSIFIER_SERVICE, INFERENCE_SERVICE)
# Generic tools must reach these without credentials.
OPEN_SERVICES = (health.SERVICE_NAME, reflection.SERVICE_NAME)
ADMIN_METHODS = (f"/{CLASSIFIER_SERVICE}/ReloadModel",)


# -- interceptors ---------------------------------------------------------------------


def _abort_handler(code: grpc.StatusCode, details: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only refuses."""

    def refuse(request_or_iterator, context):
        context.abort(code, details)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)


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
        service = method.rsplit("/", 2)[1] if method.count("/") >= 2 else ""
        if service in OPEN_SERVICES:
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


class TelemetryInterceptor(grpc.ServerInterceptor):
    """Counts, times and logs every call by method and final status code."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._lock = threading.Lock()

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

    def _record(self, method: str, code: str, seconds: float, context, details: str = "") -> None:
        m = self._metrics
        m.requests.labels(method, code).inc()
        m.latency.labels(method).observe(seconds)
        if code != "OK":
            m.errors.labels(method, code).inc()
            level = logging.ERROR if code in ("UNKNOWN", "INTERNAL") else logging.WARNING
            log.log(level, "%s %s: %s", method, code, details, extra={
                "event": "rpc", "method": method, "code": code, "duration_ms": round(seconds * 1000, 3),
                "peer": context.peer(), "details": details})
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s OK", method, extra={"event": "rpc", "method": method, "code": code,
                                              "duration_ms": round(seconds * 1000, 3), "peer": context.peer()})

    @staticmethod
    def _status(context, exc: BaseException | None) -> tuple[str, str]:
        code = context.code()
        if code is None or code == grpc.StatusCode.OK:
            if exc is None:
                return "OK", ""
            log.exception("unhandled error", exc_info=exc)
            return "UNKNOWN", f"{type(exc).__name__}: {exc}"
        details = context.details()
        if isinstance(details, bytes):
            details = details.decode("utf-8", "replace")
        return code.name, details or ""

    def _wrap(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        method = full_method.rsplit("/", 1)[-1]
        record, status = self._record, self._status

        if handler.response_streaming:
            behaviour = handler.stream_stream or handler.unary_stream

            def streaming(request, context):
                start = time.perf_counter()
                exc = None
                cancelled = False
                try:
                    yield from behaviour(request, context)
                except GeneratorExit:  # the client cancelled or went away
                    cancelled = True
                    raise
                except BaseException as error:
                    exc = error
                    raise
                finally:
                    if cancelled:
                        record(method, "CANCELLED", time.perf_counter() - start, context, "cancelled by the client")
                    else:
                        code, details = status(context, exc)
                        record(method, code, time.perf_counter() - start, context, details)

            factory = (grpc.stream_stream_rpc_method_handler if handler.request_streaming
                       else grpc.unary_stream_rpc_method_handler)
            return factory(streaming, handler.request_deserializer, handler.response_serializer)

        behaviour = handler.stream_unary or handler.unary_unary

        def unary(request, context):
            start = time.perf_counter()
            exc = None
            try:
                return behaviour(request, context)
            except BaseException as error:
                exc = error
                raise
            finally:
                code, details = status(context, exc)
                record(method, code, time.perf_counter() - start, context, details)

        factory = grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
        return factory(unary, handler.request_deserializer, handler.response_serializer)


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


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("stellar_serving")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


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
    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.store = ModelStore(config, self.metrics)
        self.health = health.HealthServicer()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._stopped = threading.Event()

        interceptors: list[grpc.ServerInterceptor] = [TelemetryInterceptor(self.metrics)]
        if config.auth_token:
            interceptors.append(AuthInterceptor(config.auth_token, config.auth_scope))
        else:
            log.warning("STELLAR_AUTH_TOKEN is not set: every RPC, ReloadModel included, is open",
                        extra={"event": "auth_off"})
        limit = config.max_message_bytes
        self.server = grpc.server(
            # Each open ClassifyStream holds a thread; unary calls keep max_workers of their own.
            futures.ThreadPoolExecutor(max_workers=config.max_workers + config.max_concurrent_streams,
                                       thread_name_prefix="stellar-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.max_concurrent_streams", config.max_concurrent_rpcs),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        # Shared: stellar.v1 and v2 calls are predicted together.
        batcher = MicroBatcher(config.micro_batch_max_rows, observe=self.metrics.booster_rows.observe)
        pb_grpc.add_ClassifierServicer_to_server(
            ClassifierServicer(self.store, config, self.metrics, batcher), self.server)
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

    def start(self) -> "StellarServer":
        """Open the ports (health NOT_SERVING), load the champion, then SERVING."""
        if self.config.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(self.config.metrics_host, self.config.metrics_port)
        self.server.start()
        log.info("listening", extra={"event": "listening", "grpc_port": self.port, "metrics_port": self.metrics_port,
                                     "tls": self.config.tls_enabled, "auth": bool(self.config.auth_token)})
        self.store.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish (up to `grace` seconds), release everything."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()  # health answers NOT_SERVING while draining
        self.store.stop()
        started = time.monotonic()
        self.server.stop(grace).wait()
        self.metrics.stop()
        log.info("stopped", extra={"event": "stopped", "drain_seconds": round(time.monotonic() - started, 3)})

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)


def serve_forever(config: ServingConfig) -> int:
    """Run until SIGTERM or SIGINT, then drain in-flight calls and exit 0."""
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
