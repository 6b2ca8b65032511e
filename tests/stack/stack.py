"""The compose stack (docker-compose.yml) as local processes on loopback ports.

Each process gets the environment its compose service declares, with compose's
service names and in-container paths rewritten to this machine (postgres:5432 ->
127.0.0.1:<port>, ...), so the stack test also proves the compose variables work.
The instance is docker/dagster/dagster.yaml (the production one), copied into a fresh DAGSTER_HOME.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.support import free_port

from .harness import Postgres, Proc, Relay, port_open, tail, wait_for

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# The test's .env: what an operator writes from .env.example.
DOTENV = {
    "POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": "stack-test-superuser",
    "DAGSTER_PG_DB": "dagster", "DAGSTER_PG_USER": "dagster", "DAGSTER_PG_PASSWORD": "stack-test-dagster",
    "PREDICTIONS_PG_DB": "stellar_predictions", "MLFLOW_PG_DB": "mlflow", "MLFLOW_PG_USER": "mlflow", "MLFLOW_PG_PASSWORD": "stack-test-mlflow",
    "MINIO_ROOT_USER": "stellar", "MINIO_ROOT_PASSWORD": "stack-test-minio",
    "STELLAR_S3_BUCKET": "stellar-data", "MLFLOW_ARTIFACT_BUCKET": "stellar-mlflow",
    "STELLAR_SOURCE": "sdss_csv", "STELLAR_SDSS_CSV": "s3://stellar-data/input/sdss.csv",
    "STELLAR_MODEL_NAME": "stellar-classifier", "STELLAR_AUTH_TOKEN": "stack-test-token",
}

# A busy stretch of the shared sample: 13 weeks, about 800 spectra (as the training tests).
FIRST_WEEK, LAST_WEEK = "2012-04-01", "2012-06-24"
WINDOW_WEEKS = 8


def load_compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def substitute(value: str, dotenv: dict[str, str]) -> str:
    def one(match: re.Match) -> str:
        name = match.group(1)
        if name not in dotenv:
            raise KeyError(f"docker-compose.yml uses ${{{name}}}, which the .env does not define")
        return dotenv[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", one, value)


def service_env(compose: dict, service: str, dotenv: dict[str, str], hosts: dict[str, str],
                ports: dict[str, str], urls: dict[str, str]) -> dict[str, str]:
    """The service's compose environment with ${VAR}s filled in and compose hosts, ports,
    URLs and in-container paths rewritten to this machine's."""
    raw = compose["services"][service].get("environment") or {}
    env = {}
    for key, value in raw.items():
        value = substitute(str(value), dotenv)
        if key.endswith("_HOST"):
            value = hosts.get(value, value)
        elif key.endswith("_PORT"):
            value = ports.get(value, value)
        else:
            for old, new in urls.items():
                value = value.replace(old, new)
        env[key] = value
    return env


class Stack:
    def __init__(self, root: Path, sample_csv: Path):
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sample_csv = sample_csv
        self.compose = load_compose()
        self.procs: dict[str, Proc] = {}
        self.pg: Postgres | None = None
        self.relay: Relay | None = None
        self.ports = {name: free_port() for name in ("moto", "mlflow", "code", "web", "grpc", "metrics")}
        self.dagster_home = root / "dagster_home"
        self.compute_logs = root / "compute_logs"
        self.model_cache = root / "model-cache"
        self.stellar_home = root / "stellar_home"
        self.timings: dict[str, float] = {}

    # ---- URLs
    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.relay.port}" if self.relay else "http://s3-not-started"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['web']}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def rewrite(self) -> tuple[dict, dict, dict]:
        hosts = {"postgres": "127.0.0.1", "0.0.0.0": "127.0.0.1"}
        ports = {"5432": str(self.pg.port), "50051": str(self.ports["grpc"]), "9464": str(self.ports["metrics"])}
        urls = {"@postgres:5432/": f"@127.0.0.1:{self.pg.port}/", "serving:50051": self.grpc_target,
                "http://serving:9464": f"http://127.0.0.1:{self.ports['metrics']}",
                "http://minio:9000": self.s3_url, "http://mlflow:5000": self.mlflow_url,
                "http://localhost:5000": self.mlflow_url,
                "/opt/dagster/compute_logs": str(self.compute_logs),
                "/opt/stellar/home": str(self.stellar_home),
                "/opt/stellar/model-cache": str(self.model_cache)}
        return hosts, ports, urls

    def env_for(self, service: str, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "STELLAR_", "MLFLOW_", "AWS_"))}
        base["PATH"] = f"{VENV_BIN}:{base.get('PATH', '/usr/bin:/bin')}"
        base.update({"GX_ANALYTICS_ENABLED": "False", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                     "PYTHONUNBUFFERED": "1", "HOME": str(self.root / "home")})
        return {**base, **service_env(self.compose, service, DOTENV, *self.rewrite()), **extra}

    def dagster_env(self, service: str) -> dict[str, str]:
        # What the dagster image sets in its Dockerfile (ENV), then the compose service's own variables.
        return self.env_for(service, DAGSTER_HOME=str(self.dagster_home))

    def code_env(self) -> dict[str, str]:
        """The code server's compose environment plus the test's small-data knobs."""
        return {**self.dagster_env("code-server"), **{
            "STELLAR_HOME": str(self.stellar_home),
            # Local, so that an S3 outage hits the write of the asset data, not the read of the source.
            "STELLAR_SDSS_CSV": str(self.root / "sdss.csv"),
            "STELLAR_FIRST_WEEK": FIRST_WEEK, "STELLAR_LAST_WEEK": LAST_WEEK,
            "STELLAR_TRAINING_WINDOW_WEEKS": str(WINDOW_WEEKS),
            "STELLAR_GATE_ACCURACY_FLOOR": "0.5",
            "STELLAR_GATE_SINGLE_ROW_BUDGET_MS": "1000", "STELLAR_GATE_BATCH_BUDGET_MS": "10000",
            "STELLAR_MODEL_DEFAULTS": str(self.root / "no-model-defaults.json"),
        }}

    # ---- lifecycle
    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 1)

    def start(self) -> None:
        t = time.monotonic()
        self._prepare_data()
        self.start_postgres()
        self._timed("postgres", t)
        t = time.monotonic()
        self.start_s3()
        self._timed("s3", t)
        # The slow starters (Python imports) in parallel: MLflow, then the code server.
        self.start_mlflow(wait=False)
        self.start_code_server()
        t = time.monotonic()
        self.wait_mlflow()
        self._timed("mlflow", t)
        self.wait_code_server()
        self._timed("code-server", t)
        self.start_dagster()
        self._timed("webserver+daemon", t)

    def _prepare_data(self) -> None:
        import pandas as pd

        from stellar_core.weeks import window_mjd_range

        first, last = window_mjd_range(FIRST_WEEK, LAST_WEEK)
        frame = pd.read_csv(self.sample_csv)
        frame = frame[(frame["MJD"] >= first) & (frame["MJD"] <= last)]
        frame.to_csv(self.root / "sdss.csv", index=False)
        self.rows = len(frame)
        for folder in (self.dagster_home, self.compute_logs, self.model_cache, self.stellar_home, self.root / "home"):
            folder.mkdir(parents=True, exist_ok=True)
        # The production instance config, unchanged.
        shutil.copy(REPO / "docker" / "dagster" / "dagster.yaml", self.dagster_home / "dagster.yaml")
        # docker/workspace.yaml with the code server's compose host:port replaced by the local one.
        workspace = yaml.safe_load((REPO / "docker" / "workspace.yaml").read_text())
        grpc = workspace["load_from"][0]["grpc_server"]
        grpc["host"], grpc["port"] = "127.0.0.1", self.ports["code"]
        self.workspace = self.root / "workspace.yaml"
        self.workspace.write_text(yaml.safe_dump(workspace))

    def start_postgres(self) -> None:
        self.pg = Postgres(self.logs, DOTENV["POSTGRES_PASSWORD"])
        self.pg.init()
        self.pg.start()
        # The compose init script, for real: one role and database per service.
        env = self.env_for("postgres", PGHOST="127.0.0.1", PGPORT=str(self.pg.port),
                           PGPASSWORD=DOTENV["POSTGRES_PASSWORD"])
        env["PATH"] = f"/usr/lib/postgresql/15/bin:{env['PATH']}"
        done = subprocess.run(["sh", str(REPO / "docker" / "postgres" / "create-databases.sh")], env=env,
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"docker/postgres/create-databases.sh failed:\n{done.stdout}{done.stderr}")

    def start_s3(self) -> None:
        moto = Proc("moto", [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.ports["moto"])],
                    self.env_for("minio"), self.logs)
        self.procs["moto"] = moto.start()
        wait_for(lambda: port_open(self.ports["moto"]), 60, "moto S3 server", procs=[moto])
        self.relay = Relay(self.ports["moto"])
        # What minio-init does (docker/minio/create-buckets.sh), with boto3 instead of mc.
        s3 = self.s3()
        for bucket in (DOTENV["STELLAR_S3_BUCKET"], DOTENV["MLFLOW_ARTIFACT_BUCKET"]):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=DOTENV["STELLAR_S3_BUCKET"], VersioningConfiguration={"Status": "Enabled"})

    def s3(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.s3_url, aws_access_key_id=DOTENV["MINIO_ROOT_USER"],
                            aws_secret_access_key=DOTENV["MINIO_ROOT_PASSWORD"], region_name="us-east-1",
                            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30))

    def start_mlflow(self, wait: bool = True) -> None:
        env = self.env_for("mlflow", MLFLOW_HOST="127.0.0.1", MLFLOW_PORT=str(self.ports["mlflow"]),
                           MLFLOW_WORKERS="1")
        proc = Proc("mlflow", ["sh", str(REPO / "docker" / "mlflow-entrypoint.sh")], env, self.logs, cwd=self.root)
        self.procs["mlflow"] = proc.start()
        if wait:
            self.wait_mlflow()

    def wait_mlflow(self) -> None:
        import requests

        wait_for(lambda: requests.get(f"{self.mlflow_url}/health", timeout=2).ok, 180, "MLflow server /health",
                 procs=[self.procs["mlflow"]])

    def stop_mlflow(self) -> None:
        self.procs["mlflow"].stop()
        wait_for(lambda: not port_open(self.ports["mlflow"]), 30, "MLflow port to close")

    def start_code_server(self) -> None:
        cmd = self.compose["services"]["code-server"]["command"]
        cmd = [c if c != "4000" else str(self.ports["code"]) for c in cmd]
        cmd = [c if c != "0.0.0.0" else "127.0.0.1" for c in cmd]
        proc = Proc("code-server", ["sh", str(REPO / "docker" / "entrypoint.sh"), *cmd], self.code_env(), self.logs,
                    cwd=self.root)
        self.procs["code-server"] = proc.start()

    def wait_code_server(self) -> None:
        env = self.code_env()
        check = [str(VENV_BIN / "dagster"), "api", "grpc-health-check", "-p", str(self.ports["code"]), "-h", "127.0.0.1"]
        wait_for(lambda: subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0, 240,
                 "Dagster code server", interval=2, procs=[self.procs["code-server"]])

    def start_dagster(self) -> None:
        for service, name in (("webserver", "webserver"), ("daemon", "daemon")):
            cmd = list(self.compose["services"][service]["command"])
            cmd = [str(self.workspace) if c == "/opt/dagster/workspace.yaml" else c for c in cmd]
            if service == "webserver":
                cmd = [{"0.0.0.0": "127.0.0.1", "3000": str(self.ports["web"])}.get(c, c) for c in cmd]
            proc = Proc(name, ["sh", str(REPO / "docker" / "entrypoint.sh"), *cmd], self.dagster_env(service),
                        self.logs, cwd=self.root)
            self.procs[name] = proc.start()
        import requests

        wait_for(lambda: requests.get(f"{self.web_url}/server_info", timeout=2).ok, 180, "dagster-webserver",
                 procs=[self.procs["webserver"], self.procs["daemon"]])

    def start_serving(self) -> None:
        env = self.env_for("serving", STELLAR_POLL_SECONDS="2", STELLAR_REGISTRY_TIMEOUT_SECONDS="2",
                           STELLAR_REGISTRY_MAX_RETRIES="0")
        cmd = self.compose["services"]["serving"]["command"]
        proc = Proc("serving", [str(VENV_BIN / cmd[0]), *cmd[1:]], env, self.logs, cwd=self.root)
        self.procs["serving"] = proc.start()

    def stop(self) -> None:
        # Reverse order of dependencies; every piece even if an earlier one fails to stop.
        for name in ("serving", "daemon", "webserver", "code-server", "mlflow", "moto"):
            if name in self.procs:
                try:
                    self.procs[name].stop()
                except Exception as exc:  # keep stopping the rest
                    print(f"stopping {name}: {exc}")
        if self.relay is not None:
            self.relay.close()
        if self.pg is not None:
            self.pg.destroy()

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        logs = sorted(self.logs.glob("*.log"))
        if self.pg is not None and self.pg.log.exists():
            logs.append(self.pg.log)
        for log in logs:
            parts.append(f"----- {log.name} (last {lines} lines)\n{tail(log, lines)}")
        return "\n".join(parts)
