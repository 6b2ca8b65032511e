"""docker-compose.yml, .env.example, docker/dagster/dagster.yaml and the docker/ files agree with the code.

Docker cannot run here, so this is how a mistyped variable, port, command or volume
in the compose file is caught: every check below names what is wrong. The same
services run for real as local processes in test_stack.py (with these very
environment blocks).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from stellar_assets.settings import CodeLocationSettings
from stellar_serving.config import ServingConfig

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("stellar_core", "stellar_mlflow", "stellar_api", "stellar_assets", "stellar_app", "stellar_serving")
# One settings object per deployable: only these modules read the environment.
SETTINGS_MODULES = {"stellar_assets/settings.py", "stellar_app/settings.py", "stellar_serving/config.py"}

SERVICES = {"postgres", "minio", "minio-init", "mlflow", "code-server", "webserver", "daemon", "serving"}
DAGSTER_SERVICES = ("code-server", "webserver", "daemon")
# Variables of third-party images and libraries, by service (not read by stellar's code).
THIRD_PARTY = {
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",
                 # read by docker/postgres/create-databases.sh
                 "DAGSTER_PG_DB", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD",
                 "MLFLOW_PG_DB", "MLFLOW_PG_USER", "MLFLOW_PG_PASSWORD", "PREDICTIONS_PG_DB"},
    "minio": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"},
    "minio-init": {"MINIO_ENDPOINT", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "STELLAR_S3_BUCKET",
                   "MLFLOW_ARTIFACT_BUCKET"},
    # MLFLOW_PG_* and MLFLOW_ARTIFACTS_DESTINATION: docker/mlflow-entrypoint.sh; MLFLOW_S3_ENDPOINT_URL: MLflow
    "mlflow": {"MLFLOW_PG_HOST", "MLFLOW_PG_PORT", "MLFLOW_PG_DB", "MLFLOW_PG_USER", "MLFLOW_PG_PASSWORD",
               "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"},
    # boto3 (S3Resource, the s3:// source) reads the standard AWS variables
    "code-server": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"},
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _dotenv_names() -> set[str]:
    names = set()
    for line in (REPO / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(line.split("=", 1)[0])
    return names


def _instance_env_names() -> set[str]:
    """Every `env:` entry of the production dagster.yaml."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "env" and isinstance(value, str):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load((REPO / "docker" / "dagster" / "dagster.yaml").read_text()))
    return found


ENV_ACCESS = re.compile(r"""os\.environ|os\.getenv|EnvVar\(\s*["']""")


def _env_access_outside_settings() -> dict[str, list[int]]:
    """Source files (besides the settings modules) that touch os.environ or name a dg.EnvVar, with lines."""
    found: dict[str, list[int]] = {}
    for folder in SOURCE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            relative = path.relative_to(REPO).as_posix()
            if "_generated" in path.parts or relative in SETTINGS_MODULES:
                continue
            lines = [n for n, line in enumerate(path.read_text().splitlines(), 1) if ENV_ACCESS.search(line)]
            if lines:
                found[relative] = lines
    return found


def compose_problems(compose: dict, dotenv: set[str]) -> list[str]:
    """Everything in the compose file that disagrees with the code and the other config files."""
    problems: list[str] = []
    services = compose.get("services", {})
    if set(services) != SERVICES:
        problems.append(f"services are {sorted(services)}, expected {sorted(SERVICES)}")
    declared_volumes = set((compose.get("volumes") or {}).keys())
    code_names = set(CodeLocationSettings.env_vars())
    serving_names = set(ServingConfig.env_vars())
    instance_names = _instance_env_names()
    used_vars: set[str] = set()

    for name, service in services.items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            problems.append(f"{name}: environment must be a mapping")
            continue
        # Which variables this service may set: what its programs read.
        if name in DAGSTER_SERVICES:
            allowed = instance_names | (code_names if name == "code-server" else set())
        elif name == "serving":
            allowed = serving_names
        else:
            allowed = set()
        allowed |= THIRD_PARTY.get(name, set())
        for key, value in env.items():
            if key not in allowed:
                problems.append(f"{name}: environment variable {key} is read by nothing in this service")
            text = "" if value is None else str(value)
            refs = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}", text)
            used_vars.update(refs)
            if SECRET_NAME.search(key) and not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", text):
                problems.append(f"{name}: {key} must come from .env as ${{VAR}}, not be written in the file")
        # The instance's variables reach every Dagster process (runs, event log, compute logs).
        if name in DAGSTER_SERVICES:
            for missing in sorted(instance_names - set(env)):
                problems.append(f"{name}: dagster.yaml reads {missing}, which the service does not set")
        for check in ("healthcheck",):
            if name != "minio-init" and check not in service:
                problems.append(f"{name}: no {check}")
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if source.startswith((".", "/")):
                if not (REPO / source).exists():
                    problems.append(f"{name}: bind mount {source} does not exist in the repository")
            elif source not in declared_volumes:
                problems.append(f"{name}: volume {source} is not declared under top-level volumes")
        for dependency, spec in (service.get("depends_on") or {}).items():
            if dependency not in services:
                problems.append(f"{name}: depends on unknown service {dependency}")
            elif not isinstance(spec, dict) or "condition" not in spec:
                problems.append(f"{name}: depends_on {dependency} needs a condition (healthy / completed)")
            elif spec["condition"] == "service_healthy" and "healthcheck" not in services[dependency]:
                problems.append(f"{name}: waits for {dependency} to be healthy, but it has no healthcheck")
        for key in ("entrypoint", "command"):
            text = " ".join(map(str, service.get(key) or [])) if isinstance(service.get(key), list) else str(service.get(key) or "")
            used_vars.update(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))

    for unknown in sorted(used_vars - dotenv):
        problems.append(f"docker-compose.yml uses ${{{unknown}}}, which .env.example does not define")
    for unused in sorted(dotenv - used_vars):
        problems.append(f".env.example defines {unused}, which docker-compose.yml never uses")
    problems += _wiring_problems(services)
    return problems


def _port_of(service: dict, flag: str = "-p") -> str | None:
    command = [str(c) for c in service.get("command") or []]
    return command[command.index(flag) + 1] if flag in command else None


def _wiring_problems(services: dict) -> list[str]:
    """Hosts, ports and commands that must agree across services."""
    problems = []
    env = {name: (s.get("environment") or {}) for name, s in services.items()}
    published = {name: {str(p).rsplit(":", 1)[-1] for p in s.get("ports") or []} for name, s in services.items()}

    # The compose-side workspace points at the code-server service and its port.
    workspace = yaml.safe_load((REPO / "docker" / "workspace.yaml").read_text())
    grpc = workspace["load_from"][0]["grpc_server"]
    code = services.get("code-server", {})
    if grpc.get("host") != "code-server" or str(grpc.get("port")) != _port_of(code):
        problems.append(f"docker/workspace.yaml targets {grpc.get('host')}:{grpc.get('port')}, "
                        f"the code-server service serves on port {_port_of(code)}")
    local = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    command = [str(c) for c in code.get("command") or []]
    module = command[command.index("-m") + 1] if "-m" in command else None
    if module != local["module_name"]:
        problems.append(f"code-server serves module {module}, workspace.yaml loads {local['module_name']}")
    elif importlib.util.find_spec(module) is None:
        problems.append(f"code-server module {module} cannot be imported")
    location = command[command.index("--location-name") + 1] if "--location-name" in command else None
    if location != grpc.get("location_name") or location != local.get("location_name"):
        problems.append(f"location names disagree: code-server {location}, docker/workspace.yaml "
                        f"{grpc.get('location_name')}, workspace.yaml {local.get('location_name')}")
    for name in ("webserver", "daemon"):
        cmd = [str(c) for c in services.get(name, {}).get("command") or []]
        if "-w" not in cmd or cmd[cmd.index("-w") + 1] != "/opt/dagster/workspace.yaml":
            problems.append(f"{name}: must load -w /opt/dagster/workspace.yaml (where the Dockerfile copies it)")
    if _port_of(services.get("webserver", {})) not in published.get("webserver", set()):
        problems.append("webserver: its -p port is not the published one")

    # Dagster's PostgreSQL is the postgres service; MLflow is the mlflow service on its port.
    for name in DAGSTER_SERVICES:
        if env.get(name, {}).get("DAGSTER_PG_HOST") not in services:
            problems.append(f"{name}: DAGSTER_PG_HOST={env[name].get('DAGSTER_PG_HOST')} is not a service")
    for name in ("code-server", "serving"):
        uri = str(env.get(name, {}).get("MLFLOW_TRACKING_URI", ""))
        match = re.fullmatch(r"http://([a-z-]+):(\d+)", uri)
        if not match or match.group(1) not in services or match.group(2) not in published.get(match.group(1), set()):
            problems.append(f"{name}: MLFLOW_TRACKING_URI={uri!r} is not http://<service>:<its port>")
    s3 = str(env.get("code-server", {}).get("STELLAR_S3_ENDPOINT_URL", ""))
    if s3 != str(env.get("mlflow", {}).get("MLFLOW_S3_ENDPOINT_URL")) or s3 != str(env.get("minio-init", {}).get("MINIO_ENDPOINT")):
        problems.append(f"S3 endpoints disagree: code-server {s3}, mlflow {env.get('mlflow', {}).get('MLFLOW_S3_ENDPOINT_URL')}, "
                        f"minio-init {env.get('minio-init', {}).get('MINIO_ENDPOINT')}")

    # The prediction server listens where it is published and runs `stellar serve`.
    serving = services.get("serving", {})
    for var in ("STELLAR_GRPC_PORT", "STELLAR_METRICS_PORT"):
        port = str(env.get("serving", {}).get(var, ServingConfig.env_vars()[var][1]))
        if port not in published.get("serving", set()):
            problems.append(f"serving: {var}={port} is not a published port {sorted(published.get('serving', []))}")
    if [str(c) for c in serving.get("command") or []] != ["stellar", "serve"]:
        problems.append(f"serving: command {serving.get('command')} is not `stellar serve`")
    try:
        ServingConfig.from_env({k: str(v) for k, v in env.get("serving", {}).items() if "${" not in str(v)})
    except ValueError as exc:
        problems.append(f"serving: {exc}")

    # Builds: the Dockerfile has the targets compose asks for.
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, flags=re.M))
    for name, service in services.items():
        build = service.get("build")
        if build:
            if not (REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).exists():
                problems.append(f"{name}: Dockerfile {build.get('dockerfile')} not found")
            if build.get("target") not in targets:
                problems.append(f"{name}: build target {build.get('target')} is not in docker/Dockerfile ({sorted(targets)})")
    return problems


def test_compose_file_agrees_with_the_code():
    assert compose_problems(_compose(), _dotenv_names()) == []


@pytest.mark.parametrize("service,right,wrong", [
    ("code-server", "STELLAR_S3_BUCKET", "STELLAR_S3_BUKET"),
    ("serving", "STELLAR_GRPC_PORT", "STELLAR_GRPC_PROT"),
    ("webserver", "DAGSTER_PG_HOST", "DAGSTER_PG_HOSTNAME"),
    ("mlflow", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT"),
])
def test_a_mistyped_variable_name_fails(service, right, wrong):
    compose = _compose()
    env = compose["services"][service]["environment"]
    env[wrong] = env.pop(right)
    problems = compose_problems(compose, _dotenv_names())
    assert f"{service}: environment variable {wrong} is read by nothing in this service" in problems, problems


def test_other_mistakes_fail():
    compose = _compose()
    compose["services"]["serving"]["environment"]["STELLAR_GRPC_PORT"] = "50052"  # not the published port
    compose["services"]["code-server"]["environment"]["DAGSTER_PG_PASSWORD"] = "hunter2"  # a secret in the file
    compose["services"]["daemon"]["volumes"] = ["dagster-logs:/opt/dagster/compute_logs"]  # undeclared volume
    compose["services"]["webserver"]["environment"].pop("DAGSTER_PG_DB")  # dagster.yaml needs it
    compose["services"]["code-server"]["environment"]["MLFLOW_TRACKING_URI"] = "http://mlfow:5000"
    problems = "\n".join(compose_problems(compose, _dotenv_names() | {"UNUSED_ONE"}))
    for expected in ("serving: STELLAR_GRPC_PORT=50052 is not a published port",
                     "code-server: DAGSTER_PG_PASSWORD must come from .env",
                     "daemon: volume dagster-logs is not declared",
                     "webserver: dagster.yaml reads DAGSTER_PG_DB",
                     "code-server: MLFLOW_TRACKING_URI='http://mlfow:5000'",
                     ".env.example defines UNUSED_ONE"):
        assert expected in problems, problems


def test_only_the_settings_modules_read_the_environment():
    """Every variable has one reader, its deployable's settings object, where its default is written once."""
    assert _env_access_outside_settings() == {}


def test_every_instance_variable_is_documented():
    operations = (REPO / "docs" / "operations.md").read_text()
    assert {name for name in _instance_env_names() if name not in operations} == set()


def test_production_dagster_yaml_is_a_valid_instance_config(tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text((REPO / "docker" / "dagster" / "dagster.yaml").read_text())
    for name in _instance_env_names():
        monkeypatch.setenv(name, "5432" if name.endswith("PORT") else "x")
    config, _ = dagster_instance_config(str(tmp_path))
    assert "postgres" in config["storage"]
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = {limit["key"]: limit["limit"] for limit in config["run_coordinator"]["config"]["tag_concurrency_limits"]}
    assert limits["stellar/retraining"] == 1
    assert config["telemetry"]["enabled"] is False


def test_missing_instance_variable_is_named(tmp_path):
    """A Dagster container without a DAGSTER_PG_* variable stops with a message naming it."""
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path), "DAGSTER_PG_HOST": "postgres",
           "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster", "DAGSTER_PG_USER": "dagster",
           "DAGSTER_COMPUTE_LOG_DIR": str(tmp_path)}
    done = subprocess.run(["sh", str(REPO / "docker" / "entrypoint.sh"), "true"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 64
    assert "missing environment variables: DAGSTER_PG_PASSWORD" in done.stderr


def test_dockerfile_runs_as_non_root_with_healthchecks():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "python:3.11-slim" in text
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    for stage in stages:
        name = stage.split()[2] if " AS " in stage.splitlines()[0] else stage.split()[0]
        if name in ("dagster", "serving", "mlflow"):
            assert re.search(r"^USER stellar$", stage, flags=re.M), f"stage {name} runs as root"
            assert "HEALTHCHECK" in stage, f"stage {name} has no HEALTHCHECK"
    # Every package the build installs is copied into the image (the stubs are generated into stellar_api).
    for package in SOURCE_DIRS:
        assert f"COPY {package} ./{package}" in text, f"the image lacks {package}"
    assert "COPY docker/dagster/dagster.yaml /opt/dagster/dagster_home/dagster.yaml" in text
    assert "ENV DAGSTER_HOME=/opt/dagster/dagster_home" in text
