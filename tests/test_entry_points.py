"""Entry points a newcomer tries first (issue 12): `dg` and `dagster` commands from the
repository root, `stellar ui`, and the source the code location picks, whoever starts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import stellar_core.home as home
from stellar_app.home import EMBEDDED_INSTANCE_YAML
from stellar_assets.resources.sources import observation_source
from stellar_assets.settings import CodeLocationSettings
from tests.support import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def root_env(dagster_home: Path | None) -> dict[str, str]:
    """A newcomer's shell: no DAGSTER_PG_* (nor any other Dagster/stellar setting), the venv active."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DAGSTER_", "STELLAR_", "MLFLOW_"))}
    env["VIRTUAL_ENV"] = sys.prefix
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if dagster_home is not None:
        env["DAGSTER_HOME"] = str(dagster_home)
    return env


def run_from_root(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(params=["unset", "tmp"])
def dagster_home(request, tmp_path) -> Path | None:
    return None if request.param == "unset" else tmp_path


def test_dg_check_defs_from_the_root(dagster_home):
    done = run_from_root([str(BIN / "dg"), "check", "defs"], root_env(dagster_home))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_dagster_definitions_validate_with_the_workspace(dagster_home):
    done = run_from_root([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
                         root_env(dagster_home))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful for code location stellar" in done.stdout + done.stderr


def test_dagster_from_the_root_opens_the_sqlite_instance_without_postgres_settings():
    done = run_from_root([str(BIN / "dagster"), "instance", "info"], root_env(REPO))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run_storage: SqliteRunStorage" in done.stdout
    assert "DAGSTER_PG" not in done.stdout + done.stderr


# Prints where an instance keeps runs, events, schedules, artifacts and step logs.
INSTANCE_PATHS = """
import json, os, sys
import dagster as dg
from dagster._core.instance.ref import InstanceRef
ref = InstanceRef.from_dir(sys.argv[2], config_dir=sys.argv[1]) if len(sys.argv) > 2 else None
with (dg.DagsterInstance.from_ref(ref) if ref else dg.DagsterInstance.get()) as i:
    print(json.dumps({
        "runs": i.run_storage._conn_string, "schedules": i.schedule_storage._conn_string,
        "events": os.path.abspath(i.event_log_storage._base_dir),
        "artifacts": os.path.abspath(i._local_artifact_storage._base_dir),
        "step_logs": os.path.abspath(i.compute_log_manager._base_dir),
    }))
"""


def test_the_root_instance_is_the_one_stellar_opens_for_the_default_home(tmp_path):
    """`dagster dev` from the root and `stellar ui` (STELLAR_HOME unset) share one instance."""
    root = run_from_root([sys.executable, "-c", INSTANCE_PATHS], root_env(REPO))
    assert root.returncode == 0, root.stderr
    # What stellar_app.home.prepare_home() sets up for the default home: its instance file, in DAGSTER_HOME.
    (tmp_path / "dagster.yaml").write_text(EMBEDDED_INSTANCE_YAML)
    default_home = REPO / ".stellar" / "dagster"
    stellar = run_from_root([sys.executable, "-c", INSTANCE_PATHS, str(tmp_path), str(default_home)],
                            root_env(None))
    assert stellar.returncode == 0, stellar.stderr
    root_paths, stellar_paths = json.loads(root.stdout), json.loads(stellar.stdout)
    assert root_paths == stellar_paths
    assert root_paths["runs"] == f"sqlite:///{default_home}/history/runs.db"


@pytest.fixture
def default_csv(tmp_path, monkeypatch) -> Path:
    """A default SDSS CSV where stellar_core.home looks for one, and no setting in the environment."""
    csv = tmp_path / "sdss17_sample.csv.gz"
    csv.write_bytes(b"")
    monkeypatch.setattr(home, "KAGGLE_CSV_NAMES", ())
    monkeypatch.setattr(home, "SHARED_SAMPLE", csv)
    for name in ("STELLAR_SOURCE", "STELLAR_SDSS_CSV"):
        monkeypatch.delenv(name, raising=False)
    return csv


def test_the_code_location_reads_the_default_csv_without_stellar_setting_it(default_csv):
    source = observation_source(CodeLocationSettings())
    assert source.csv_path == str(default_csv) == home.default_sdss_csv()[0]
    assert source.resolved_kind == "sdss_csv"
    assert source.identity == "sdss"


def test_explicit_settings_still_win_over_the_default_csv(default_csv, monkeypatch, tmp_path):
    monkeypatch.setenv("STELLAR_SDSS_CSV", str(tmp_path / "mine.csv"))
    assert observation_source(CodeLocationSettings()).csv_path == str(tmp_path / "mine.csv")
    monkeypatch.delenv("STELLAR_SDSS_CSV")
    monkeypatch.setenv("STELLAR_SOURCE", "simulator")
    assert observation_source(CodeLocationSettings()).resolved_kind == "simulator"


def test_without_any_csv_the_code_location_uses_the_simulator(default_csv, monkeypatch, tmp_path):
    monkeypatch.setattr(home, "SHARED_SAMPLE", tmp_path / "absent.csv.gz")
    assert observation_source(CodeLocationSettings()).resolved_kind == "simulator"


def test_stellar_ui_help_shows_host_and_port_defaults():
    done = subprocess.run([str(BIN / "stellar"), "ui", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--port PORT" in done.stdout and "[default: 3000]" in done.stdout
    assert "--host TEXT" in done.stdout and "[default: 127.0.0.1]" in done.stdout


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_stellar_ui_names_a_bad_port(port):
    done = subprocess.run([str(BIN / "stellar"), "ui", "--port", port], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"Invalid value for '--port': '{port}' is not a TCP port (1-65535)" in done.stderr


@pytest.mark.slow
def test_stellar_ui_serves_on_the_port_asked(tmp_path):
    port = free_port()
    env = {**root_env(None), "STELLAR_HOME": str(tmp_path)}
    ui = subprocess.Popen([str(BIN / "stellar"), "ui", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        info = wait_for_json(f"http://127.0.0.1:{port}/server_info", ui, deadline=time.monotonic() + 180)
        assert "dagster_webserver_version" in info
        assert (tmp_path / "dagster" / "dagster.yaml").exists()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()


def wait_for_json(url: str, proc: subprocess.Popen, deadline: float) -> dict:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"stellar ui exited with {proc.returncode}: {proc.stdout.read().decode()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(1)
    pytest.fail(f"{url} did not answer")
