"""Server configuration: every setting, its environment variable and default, in ONE place.

`ServingConfig.from_env()` reads the process environment; `env_vars()` lists the
names (README.md, Serving and the production stack's compose file are checked
against it). Nothing else in stellar_serving reads os.environ for settings.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Mapping

from stellar_core.contract import CHAMPION_ALIAS, DEFAULT_MODEL_NAME  # no xgboost: see server.py's first lines

AUTH_SCOPES = ("all", "admin")


def _env(name: str, default, doc: str):
    return field(default=default, metadata={"env": name, "doc": doc})


@dataclass(frozen=True)
class ServingConfig:
    grpc_host: str = _env("STELLAR_GRPC_HOST", "0.0.0.0", "address the gRPC server binds")
    grpc_port: int = _env("STELLAR_GRPC_PORT", 50051, "gRPC port (0: any free port)")
    metrics_host: str = _env("STELLAR_METRICS_HOST", "0.0.0.0", "address of the Prometheus HTTP endpoint")
    metrics_port: int = _env("STELLAR_METRICS_PORT", 9464, "Prometheus /metrics port (0: any free port, -1: off)")
    tracking_uri: str = _env("MLFLOW_TRACKING_URI", "", "MLflow tracking/registry URI (empty: MLflow's default)")
    model_name: str = _env("STELLAR_MODEL_NAME", DEFAULT_MODEL_NAME, "registered model to serve")
    model_alias: str = _env("STELLAR_MODEL_ALIAS", CHAMPION_ALIAS, "alias that names the version to serve")
    cache_dir: str = _env("STELLAR_MODEL_CACHE_DIR", ".stellar/model-cache", "local copy of the last good model")
    poll_seconds: float = _env("STELLAR_POLL_SECONDS", 30.0, "alias polling interval (0: no polling)")
    registry_timeout_seconds: float = _env(
        "STELLAR_REGISTRY_TIMEOUT_SECONDS", 5.0, "HTTP timeout of one registry request")
    registry_max_retries: int = _env(
        "STELLAR_REGISTRY_MAX_RETRIES", 1, "retries of a failed registry request before falling back")
    tls_cert: str = _env("STELLAR_TLS_CERT", "", "PEM certificate chain file (with STELLAR_TLS_KEY: TLS on)")
    tls_key: str = _env("STELLAR_TLS_KEY", "", "PEM private key file")
    auth_token: str = _env("STELLAR_AUTH_TOKEN", "", "bearer token clients must send (empty: no auth)")
    auth_scope: str = _env(
        "STELLAR_AUTH_SCOPE", "all", "with a token: 'all' RPCs or only 'admin' (ReloadModel) need it")
    max_message_bytes: int = _env(
        "STELLAR_MAX_MESSAGE_BYTES", 16 * 1024 * 1024, "largest request/response message")
    max_batch_size: int = _env("STELLAR_MAX_BATCH_SIZE", 10_000, "most objects in one batch, stream message or tensor")
    max_concurrent_streams: int = _env(
        "STELLAR_MAX_CONCURRENT_STREAMS", 16, "ClassifyStream calls open at once (server-wide)")
    max_workers: int = _env("STELLAR_MAX_WORKERS", 16, "threads for unary calls (streams get their own on top)")
    predict_threads: int = _env(
        "STELLAR_PREDICT_THREADS", 0, "booster threads for large batches (0: all cores)")
    parallel_batch_min: int = _env(
        "STELLAR_PARALLEL_BATCH_MIN", 256,
        "smaller requests predict on one thread (OpenMP start-up costs more than it saves, and stalls under load)")
    micro_batch_max_rows: int = _env(
        "STELLAR_MICRO_BATCH_MAX_ROWS", 64,
        "concurrent requests smaller than this are predicted together (0: off)")
    max_concurrent_rpcs: int = _env(
        "STELLAR_MAX_CONCURRENT_RPCS", 256, "calls in progress or queued before RESOURCE_EXHAUSTED")
    shutdown_grace_seconds: float = _env(
        "STELLAR_SHUTDOWN_GRACE_SECONDS", 20.0, "on SIGTERM, time in-flight calls get to finish")
    log_level: str = _env("STELLAR_LOG_LEVEL", "INFO", "DEBUG logs every call")

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "ServingConfig":
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f, raw)
        return cls(**{**values, **overrides})

    @classmethod
    def env_vars(cls) -> dict[str, tuple[str, object, str]]:
        """{ENV_VAR: (field, default, description)}."""
        return {
            f.metadata["env"]: (f.name, f.default if f.default is not MISSING else None, f.metadata["doc"])
            for f in fields(cls)
        }

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert or self.tls_key)

    def validate(self) -> None:
        problems = []
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append("STELLAR_TLS_CERT and STELLAR_TLS_KEY must be set together")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                problems.append(f"{self.env_vars_by_field()[name]}={path!r} is not a file")
        if self.auth_scope not in AUTH_SCOPES:
            problems.append(f"STELLAR_AUTH_SCOPE must be one of {AUTH_SCOPES}, got {self.auth_scope!r}")
        if self.max_batch_size < 1:
            problems.append("STELLAR_MAX_BATCH_SIZE must be at least 1")
        if self.max_concurrent_streams < 1 or self.max_workers < 1:
            problems.append("STELLAR_MAX_CONCURRENT_STREAMS and STELLAR_MAX_WORKERS must be at least 1")
        if self.max_message_bytes < 1024:
            problems.append("STELLAR_MAX_MESSAGE_BYTES must be at least 1024")
        if problems:
            raise ValueError("invalid serving configuration: " + "; ".join(problems))

    @classmethod
    def env_vars_by_field(cls) -> dict[str, str]:
        return {f.name: f.metadata["env"] for f in fields(cls)}


def _parse(f, raw: str):
    kind = type(f.default)
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        raise ValueError(f"{f.metadata['env']}={raw!r} is not a valid {kind.__name__}") from None
    return raw
