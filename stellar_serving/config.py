"""Server configuration: every setting, its environment variable and default, in ONE place.

`ServingConfig.from_env()` reads the process environment; `env_vars()` lists the
names (README.md, Serving and the production stack's compose file are checked
against it). Nothing else in stellar_serving reads os.environ for settings.
"""

from __future__ import annotations

import math
import os
import ssl
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Mapping

# XGBoost's OpenMP threads spin while they wait for work. When other processes
# keep the cores busy, a spinning team member holds the core another one needs
# and a 0.4 ms prediction takes 20-100 ms (measured on the shared 2-core host);
# sleeping waiters cost microseconds. libgomp reads it when xgboost loads: the
# `serve` command sets it first thing; this line (run when the server imports
# its config, before xgboost) covers embedding the server in a process that has
# not loaded xgboost yet. Client users are untouched.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from stellar_mlflow.names import CHAMPION_ALIAS  # noqa: E402
from stellar_core.contract import DEFAULT_MODEL_NAME  # noqa: E402

AUTH_SCOPES = ("all", "admin")
AUTO_OR_OFF = ("auto", "off")  # STELLAR_TREE_KERNEL, STELLAR_REQUEST_DECODER, STELLAR_COMPILED_PREDICTOR
EXPLAINER_MODES = ("auto", "xgboost")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _env(name: str, default, doc: str):
    return field(default=default, metadata={"env": name, "doc": doc})


@dataclass(frozen=True)
class ServingConfig:
    grpc_host: str = _env("STELLAR_GRPC_HOST", "0.0.0.0", "address the gRPC server binds")
    grpc_port: int = _env("STELLAR_GRPC_PORT", 50051, "gRPC port (0: any free port)")
    server_processes: int = _env(
        "STELLAR_SERVER_PROCESSES", 1,
        "server processes sharing the gRPC port (SO_REUSEPORT), each with its own model copy, threads and "
        "limits; a supervisor restarts any that dies and serves their metrics summed (1: one process, no "
        "supervisor; 0: one per CPU this process may use, within its cgroup CPU quota)")
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
        "STELLAR_MAX_CONCURRENT_STREAMS", 16,
        "ClassifyStream calls open at once (server-wide; more get RESOURCE_EXHAUSTED)")
    max_open_streams: int = _env(
        "STELLAR_MAX_OPEN_STREAMS", 4,
        "reflection streams open at once (they need no token; more get RESOURCE_EXHAUSTED)")
    max_watch_streams: int = _env(
        "STELLAR_MAX_WATCH_STREAMS", 4,
        "health Watch streams open at once (never ended for idleness; more get RESOURCE_EXHAUSTED)")
    stream_idle_seconds: float = _env(
        "STELLAR_STREAM_IDLE_SECONDS", 60.0,
        "a stream that receives and sends no message for this long is ended with DEADLINE_EXCEEDED")
    first_message_seconds: float = _env(
        "STELLAR_FIRST_MESSAGE_SECONDS", 2.0,
        "a unary call whose request message has not arrived after this long (or by its deadline) "
        "is ended with DEADLINE_EXCEEDED")
    max_workers: int = _env("STELLAR_MAX_WORKERS", 16, "threads for unary calls (streams get their own on top)")
    reload_timeout_seconds: float = _env(
        "STELLAR_RELOAD_TIMEOUT_SECONDS", 60.0,
        "longest a ReloadModel call without a deadline waits for the (shared) reload")
    max_client_id_chars: int = _env(
        "STELLAR_MAX_CLIENT_ID_CHARS", 256, "longest client_id accepted (longer: INVALID_ARGUMENT)")
    predict_threads: int = _env(
        "STELLAR_PREDICT_THREADS", 0,
        "threads for large batches: XGBoost's, and the tree kernel's (it uses at most 2) (0: all cores)")
    parallel_batch_min: int = _env(
        "STELLAR_PARALLEL_BATCH_MIN", 256,
        "smaller requests predict on one thread (XGBoost's OpenMP start-up, or the tree kernel's hand-off, costs "
        "more than it saves)")
    tree_kernel: str = _env(
        "STELLAR_TREE_KERNEL", "auto",
        "auto: every request is answered by the tree kernel (XGBoost's arithmetic in C over the trees as arrays, "
        "built when a version loads, checked against XGBoost on probe rows); off: the compiled predictor or "
        "XGBoost answers (as they do for a model the kernel cannot take)")
    request_decoder: str = _env(
        "STELLAR_REQUEST_DECODER", "auto",
        "auto: plainly valid ClassifyBatch and ClassifyStream requests are read from their bytes by a few lines "
        "of C (compiled in the background at start); any other request, and every request with off, is read by "
        "protobuf")
    compiled_predictor: str = _env(
        "STELLAR_COMPILED_PREDICTOR", "auto",
        "auto: where there is no tree kernel, compile each model version's trees to C (tl2cgen, in the "
        "background, cached) for small requests; off: XGBoost answers every request the kernel does not")
    compiled_max_rows: int = _env(
        "STELLAR_COMPILED_MAX_ROWS", 32,
        "requests with fewer rows use the compiled predictor, larger ones XGBoost (measured crossover: "
        "benchmarks/compiled_predictor.py)")
    compiled_compiler: str = _env(
        "STELLAR_COMPILED_PREDICTOR_CC", "gcc",
        "C compiler for the tree kernel, tl2cgen and C TreeSHAP (gcc or clang, or a path to one)")
    explainer: str = _env(
        "STELLAR_EXPLAINER", "auto",
        "auto: Explain answers with exact C TreeSHAP (compiled with STELLAR_COMPILED_PREDICTOR_CC in the "
        "background when a version is loaded or swapped in, after its compiled predictor, and checked against "
        "XGBoost), XGBoost pred_contribs until then; "
        "xgboost: XGBoost pred_contribs always")
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

    def set_mlflow_http_defaults(self) -> None:
        """MLflow's HTTP timeout and retries from these settings, unless the environment sets them.

        MLflow reads these per request; without them an unreachable server costs
        minutes of retries with backoff before the server may fall back to the cache."""
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, self.registry_timeout_seconds))))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(self.registry_max_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")  # an int for MLflow 3

    @property
    def processes(self) -> int:
        """How many server processes: STELLAR_SERVER_PROCESSES, 0 resolved to the CPUs this process may use."""
        return self.server_processes or usable_cpus()

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert or self.tls_key)

    def validate(self) -> None:
        problems = [*self._range_problems(), *self._tls_problems(), *self._auth_problems()]
        for variable, value in (("STELLAR_COMPILED_PREDICTOR", self.compiled_predictor),
                                ("STELLAR_TREE_KERNEL", self.tree_kernel),
                                ("STELLAR_REQUEST_DECODER", self.request_decoder)):
            if value not in AUTO_OR_OFF:
                problems.append(f"{variable} must be one of {AUTO_OR_OFF}, got {value!r}")
        if self.explainer not in EXPLAINER_MODES:
            problems.append(f"STELLAR_EXPLAINER must be one of {EXPLAINER_MODES}, got {self.explainer!r}")
        compiler = self.compiled_compiler
        # tl2cgen runs the compiler through the shell: a space or a shell character would split or run other things.
        compiles = (self.compiled_predictor != "off" or self.explainer == "auto" or self.tree_kernel == "auto"
                    or self.request_decoder == "auto")
        if compiles and (not compiler or not all(c.isalnum() or c in "/._+-" for c in compiler)):
            problems.append(f"STELLAR_COMPILED_PREDICTOR_CC must name a C compiler (a command or path of letters, "
                            f"digits and / . _ + -), got {compiler!r}")
        if self.log_level.upper() not in LOG_LEVELS:
            problems.append(f"STELLAR_LOG_LEVEL must be one of {LOG_LEVELS}, got {self.log_level!r}")
        if problems:
            raise ValueError("invalid serving configuration: " + "; ".join(problems))

    def _range_problems(self) -> list[str]:
        env = self.env_vars_by_field()
        problems = []
        for name, (low, high) in _LIMITS.items():
            value = getattr(self, name)
            if value != value or value < low:  # value != value: NaN
                problems.append(f"{env[name]} must be at least {low}, got {value!r}")
            elif high is not None and value > high:
                problems.append(f"{env[name]} must be at most {high}, got {value!r}")
        return problems

    def _tls_problems(self) -> list[str]:
        if bool(self.tls_cert) != bool(self.tls_key):
            return ["STELLAR_TLS_CERT and STELLAR_TLS_KEY must be set together"]
        missing = [f"{self.env_vars_by_field()[name]}={getattr(self, name)!r} is not a file"
                   for name in ("tls_cert", "tls_key") if getattr(self, name) and not Path(getattr(self, name)).is_file()]
        if missing or not self.tls_enabled:
            return missing
        # Loaded now, not when the port binds: gRPC reports a bad file as "Failed to bind".
        # With a password callback an encrypted key fails here instead of asking on the terminal.
        asked: list[bool] = []

        def no_pass_phrase() -> bytes:
            asked.append(True)
            return b""

        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.tls_cert, self.tls_key, password=no_pass_phrase)
        except (ssl.SSLError, OSError) as exc:
            if asked:
                return [f"STELLAR_TLS_KEY={self.tls_key!r} is encrypted (it needs a pass phrase); the server "
                        "cannot ask for one: give it the key without encryption (e.g. `openssl pkey -in KEY -out "
                        f"PLAIN`) and protect the file instead ({exc})"]
            return [f"STELLAR_TLS_CERT={self.tls_cert!r} and STELLAR_TLS_KEY={self.tls_key!r} are not a PEM "
                    f"certificate chain and its private key: {exc}"]
        return []

    def _auth_problems(self) -> list[str]:
        problems = []
        if self.auth_scope not in AUTH_SCOPES:
            problems.append(f"STELLAR_AUTH_SCOPE must be one of {AUTH_SCOPES}, got {self.auth_scope!r}")
        token = self.auth_token
        # gRPC metadata values are printable ASCII; a client can never send anything else.
        if token and (not all(" " <= c <= "~" for c in token) or token != token.strip()):
            problems.append("STELLAR_AUTH_TOKEN must be printable ASCII without surrounding spaces "
                            "(a newline, tab or other control character can never match a client's token)")
        return problems

    @classmethod
    def env_vars_by_field(cls) -> dict[str, str]:
        return {f.name: f.metadata["env"] for f in fields(cls)}


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may run on, and no more than its cgroup's CPU quota allows (a container's
    `--cpus`, rounded up): a container sees every CPU of its host in its affinity mask."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 file (cgroup v1, not Linux): the affinity mask alone
        pass
    return cpus


# Field -> (lowest, highest or None) accepted value.
_LIMITS = {
    "grpc_port": (0, 65535),
    "server_processes": (0, 64),
    "metrics_port": (-1, 65535),
    "poll_seconds": (0, None),
    "registry_timeout_seconds": (0.001, None),
    "registry_max_retries": (0, None),
    "max_message_bytes": (1024, 2**31 - 1),
    "max_batch_size": (1, None),
    "max_concurrent_streams": (1, None),
    "max_open_streams": (1, None),
    "max_watch_streams": (1, None),
    "stream_idle_seconds": (0.001, None),
    "first_message_seconds": (0.001, None),
    "max_workers": (1, None),
    "reload_timeout_seconds": (0.001, None),
    "max_client_id_chars": (1, None),
    "predict_threads": (0, None),
    "parallel_batch_min": (1, None),
    "compiled_max_rows": (1, None),
    "micro_batch_max_rows": (0, None),
    "max_concurrent_rpcs": (1, None),
    "shutdown_grace_seconds": (0, None),
}


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
