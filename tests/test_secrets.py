"""No secret in what Dagster keeps or shows (issue 11).

The code location reads its configuration from the environment when it is
imported, so each check imports stellar_assets.definitions in a fresh Python
with recognisable secrets set: the predictions database URL (PostgreSQL with a
password), the serving admin token, an MLflow tracking URI with a password,
and S3 keys. The repository snapshot (what the UI reads) must name the secret
variables but hold none of their values; a real run on a real instance, against
a real PostgreSQL that needs the password, must work and leave none of them in
the run storage, event log or compute logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import serialize_value

from tests.stack.harness import PG_BIN, Postgres

REPO = Path(__file__).resolve().parents[1]
SECRET_VARS = ("STELLAR_PREDICTIONS_DB_URL", "STELLAR_AUTH_TOKEN", "MLFLOW_TRACKING_URI")
MARK = uuid.uuid4().hex[:10]
DB_PASSWORD = f"s3cr3t-pw-{MARK}"
TOKEN = f"tok-{MARK}"
MLFLOW_PASSWORD = f"mlflow-pw-{MARK}"
AWS_KEY_ID = f"akid-{MARK}"
AWS_SECRET = f"aws-secret-{MARK}"
# Not a secret: the snapshot must show it, or finding no secret in it would prove nothing.
SERVING_TARGET = "127.0.0.1:59123"

SNAPSHOT_SCRIPT = """
import json, sys
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from stellar_assets.definitions import defs

snapshot = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
registry = defs.resources["model_registry"]
with open(sys.argv[1], "w") as out:
    json.dump({"snapshot": snapshot,
               # what replay and the CLI use outside a run: the URI, not the variable's name
               "uri_outside_a_run_is_the_value": registry.client().tracking_uri == sys.argv[2]}, out)
"""

RUN_SCRIPT = """
import json
import dagster as dg
from stellar_assets.definitions import defs

names = ("predictions_db", "prediction_server", "model_registry", "mlflow")

@dg.asset(required_resource_keys=set(names))
def secret_probe(context) -> dg.MaterializeResult:
    predictions_db, prediction_server = context.resources.predictions_db, context.resources.prediction_server
    model_registry = context.resources.model_registry
    predictions_db.save_snapshot("2012-04-01", 1.0, json.dumps({"probe": True}))
    experiment = model_registry.client().get_experiment_by_name(model_registry.experiment_name)
    return dg.MaterializeResult(metadata={
        "snapshot_read_back": predictions_db.previous_snapshot("2012-04-08"),
        "mlflow_run_id": context.resources.mlflow.active_run().info.run_id,
        "experiment_found": experiment is not None,
        "token_is_a_value": isinstance(prediction_server.admin_token, str)
                            and not isinstance(prediction_server.admin_token, dg.EnvVar)
                            and prediction_server.admin_token.startswith("tok-"),
    })

result = dg.materialize([secret_probe], resources={n: defs.resources[n] for n in names},
                        instance=dg.DagsterInstance.get(), raise_on_error=False)
print(json.dumps({"run_id": result.run_id, "success": result.success}))
"""


def _secret_env(tmp_path: Path, db_url: str, tracking_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STELLAR_", "MLFLOW_", "AWS_", "DAGSTER_"))}
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {**env, "PYTHONPATH": str(REPO), "STELLAR_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(dagster_home),
            "STELLAR_SOURCE": "simulator", "STELLAR_SERVING_TARGET": SERVING_TARGET,
            "STELLAR_PREDICTIONS_DB_URL": db_url, "STELLAR_AUTH_TOKEN": TOKEN, "MLFLOW_TRACKING_URI": tracking_uri,
            "AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_DEFAULT_REGION": "us-east-1"}


def _python(script: str, env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    return done


def _leaks(text: str) -> list[str]:
    return [s for s in (DB_PASSWORD, TOKEN, MLFLOW_PASSWORD, AWS_KEY_ID, AWS_SECRET) if s in text]


def _env_references(node) -> set[str]:
    """Names in every {"env": NAME} of a serialized snapshot, JSON strings inside it included."""
    if isinstance(node, str) and node.startswith("{"):
        try:
            node = json.loads(node)
        except ValueError:
            return set()
    if isinstance(node, dict):
        found = {node["env"]} if set(node) == {"env"} and isinstance(node["env"], str) else set()
        return found.union(*(_env_references(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_env_references(v) for v in node))
    return set()


@pytest.mark.slow
def test_repository_snapshot_names_the_secret_variables_but_holds_no_value(tmp_path):
    tracking_uri = f"http://stellar:{MLFLOW_PASSWORD}@127.0.0.1:9"
    env = _secret_env(tmp_path, f"postgresql+psycopg2://stellar:{DB_PASSWORD}@127.0.0.1:9/stellar_predictions",
                      tracking_uri)
    env["STELLAR_S3_BUCKET"] = "stellar-data"  # the S3 io manager, whose keys boto3 must read itself
    out = tmp_path / "snapshot.json"
    _python(SNAPSHOT_SCRIPT, env, tmp_path, str(out), tracking_uri)
    written = json.loads(out.read_text())
    snapshot = written["snapshot"]

    assert SERVING_TARGET in snapshot, "the snapshot lacks the resources' configuration"
    assert _leaks(snapshot) == []
    assert set(SECRET_VARS) <= _env_references(json.loads(snapshot))
    assert written["uri_outside_a_run_is_the_value"]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    if not (PG_BIN / "pg_ctl").exists():
        pytest.fail(f"this test needs PostgreSQL 15 in {PG_BIN}: run `bash scripts/system-deps.sh` as root")
    server = Postgres(tmp_path_factory.mktemp("postgres-logs"), password=DB_PASSWORD)
    server.init()
    server.start()
    try:
        server.create_database("stellar_predictions")
        server.create_database("mlflow")
        yield server
    finally:
        server.destroy()


@pytest.mark.slow
def test_a_run_uses_the_secrets_and_stores_none_of_them(tmp_path, postgres):
    import dagster as dg
    from mlflow.tracking import MlflowClient

    # MLflow's store on the same PostgreSQL: a tracking URI whose password the run really needs.
    tracking_uri = postgres.url("mlflow", driver="postgresql+psycopg2")
    env = _secret_env(tmp_path, postgres.url("stellar_predictions", driver="postgresql+psycopg2"), tracking_uri)
    done = _python(RUN_SCRIPT, env, tmp_path)
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["success"], done.stderr[-5000:]

    # The secrets worked: the row is in PostgreSQL, the MLflow run in its PostgreSQL store.
    assert postgres.query("stellar_predictions", "SELECT week FROM serving_snapshots") == [("2012-04-01",)]
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"]))
    try:
        run = instance.get_run_by_id(outcome["run_id"])
        materialization = instance.get_latest_materialization_event(dg.AssetKey("secret_probe")).asset_materialization
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        assert metadata["snapshot_read_back"] == json.dumps({"probe": True})
        assert metadata["experiment_found"] is True and metadata["token_is_a_value"] is True
        assert MlflowClient(tracking_uri).get_run(metadata["mlflow_run_id"]).data.tags["dagster_run_id"] == run.run_id

        # Nothing Dagster keeps holds a secret: the run's config and job snapshot, its events, ...
        assert _leaks(json.dumps(run.run_config)) == []
        assert _leaks(serialize_value(instance.get_job_snapshot(run.job_snapshot_id))) == []
        events = instance.all_logs(run.run_id)
        assert events and _leaks(serialize_value(events)) == []
    finally:
        instance.dispose()
    # ... and no file of the instance (run and event databases, compute logs) holds one either.
    files = [p for p in Path(env["DAGSTER_HOME"]).rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    leaking = {str(p): _leaks(p.read_bytes().decode("latin-1")) for p in files}
    assert {path: found for path, found in leaking.items() if found} == {}


def test_an_unusable_database_url_is_named_without_its_password():
    from stellar_assets.monitoring.resources import PredictionsDatabase

    with pytest.raises(ValueError, match="not a usable SQLAlchemy URL") as unknown_driver:
        PredictionsDatabase(url=f"postgresql+nodriver://stellar:{DB_PASSWORD}@db:5432/predictions").engine()
    assert "postgresql+nodriver://stellar:***@db:5432/predictions" in str(unknown_driver.value)
    with pytest.raises(ValueError, match="not a usable SQLAlchemy URL") as unparsable:
        PredictionsDatabase(url=f"postgresql//stellar:{DB_PASSWORD}@db/predictions").engine()
    assert _leaks(str(unknown_driver.value) + str(unparsable.value)) == []
