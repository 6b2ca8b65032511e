"""The production stack, for real, without Docker: PostgreSQL 15, an S3 server (moto),
`mlflow server` on both, the Dagster code server + webserver + daemon on the
production instance (docker/dagster/dagster.yaml), and the prediction server; driven as a user would,
through Dagster's GraphQL API, then broken on purpose.

The tests share one stack and run in file order (each builds on the previous one).
`pytest -m stack tests/stack` runs them alone; STELLAR_KEEP_STACK_LOGS=1 keeps the logs.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import subprocess
import time

import pandas as pd
import pytest

from stellar_assets.ingestion.assets import PLACEMENT_CHECK, QUALITY_CHECK
from stellar_mlflow.names import TAG_DAGSTER_RUN, TAG_WINDOW_LAST
from stellar_api.client import StellarClient

from .dagster_api import DagsterApi
from .harness import wait_for
from .stack import DOTENV, FIRST_WEEK, LAST_WEEK, Stack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

WEEKS = [(dt.date.fromisoformat(FIRST_WEEK) + dt.timedelta(days=7 * k)).isoformat() for k in range(13)]
assert WEEKS[-1] == LAST_WEEK
INGESTION = ["raw_observations", "observation_features"]
TRAINING = ["train_test_split", "challenger_model", "champion_model"]
BLOCKING_CHECKS = {"quality_floors", "serving_contract", "latency_budget"}
MODEL = DOTENV["STELLAR_MODEL_NAME"]
BUCKET = DOTENV["STELLAR_S3_BUCKET"]
PREFIX = "stellar"  # STELLAR_S3_PREFIX in docker-compose.yml
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}  # one process per run: 2 shared CPU cores
# Small models: the pipeline's quality bar is benchmarks/model_quality.py's job, not this test's.
TRAIN_CONFIG = {
    **IN_PROCESS,
    "ops": {"challenger_model": {"config": {"n_estimators": 40, "max_depth": 4, "latency_single_row_repeats": 20}}},
    "resources": {"promotion_gate": {"config": {"recall_floors": {}, "min_comparison_rows": 20,
                                                  "min_evaluation_rows": 120}}},
}
RETRAINING_TAG = {"stellar/retraining": "true"}  # limited to 1 run at a time by dagster.yaml


@pytest.fixture(scope="module")
def api(stack: Stack) -> DagsterApi:
    return DagsterApi("127.0.0.1", stack.ports["web"])


@pytest.fixture(scope="module")
def state() -> dict:
    """What one test leaves for the next (the champion's version, ...)."""
    return {}


# ---------------------------------------------------------------- helpers
def materializations(stack: Stack) -> dict[tuple[str, str], int]:
    rows = stack.pg.query("dagster", "SELECT asset_key, partition, count(*) FROM event_logs "
                          "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' GROUP BY 1, 2")
    return {(json.loads(key)[-1], partition): n for key, partition, n in rows}


def s3_objects(stack: Stack, asset: str) -> dict[str, dict]:
    """{partition: object} under the IO manager's prefix for `asset`."""
    answer = stack.s3().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{asset}/")
    return {o["Key"].rsplit("/", 1)[-1].rsplit(".", 1)[0]: o for o in answer.get("Contents", [])}


def assert_every_materialization_has_its_data(stack: Stack) -> None:
    """No partition is recorded as materialized in PostgreSQL without its object in S3."""
    recorded = materializations(stack)
    stored = {asset: s3_objects(stack, asset) for asset in {a for a, _ in recorded}}
    missing = [(asset, p) for (asset, p) in recorded if p not in stored[asset]]
    assert not missing, f"materialized in PostgreSQL but absent from S3: {missing}"


def sample_objects(stack: Stack, n: int = 20) -> list[dict]:
    frame = pd.read_csv(stack.root / "sdss.csv").head(n)
    return [{**row, "client_id": str(row["spec_obj_ID"])} for row in frame.to_dict("records")]


def mlflow_client(stack: Stack):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)


def serving_client(stack: Stack) -> StellarClient:
    return StellarClient(stack.grpc_target, token=DOTENV["STELLAR_AUTH_TOKEN"], timeout=10)


# ---------------------------------------------------------------- the user's path
def test_backfill_through_graphql_lands_in_postgres_and_s3(stack, api, state):
    started = time.monotonic()
    backfill_id = api.launch_backfill(INGESTION, WEEKS, run_config=IN_PROCESS)
    backfill = api.wait_backfill(backfill_id, timeout=420)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    # BackfillPolicy.single_run: 13 weeks, one run.
    assert [r["status"] for r in backfill["runs"]] == ["SUCCESS"], backfill["runs"]
    run_id = backfill["runs"][0]["runId"]
    stack.timings["backfill"] = round(time.monotonic() - started, 1)

    # Run record, materializations and check results: in PostgreSQL.
    assert stack.pg.query("dagster", "SELECT status FROM runs WHERE run_id = %s", (run_id,)) == [("SUCCESS",)]
    recorded = materializations(stack)
    for asset in INGESTION:
        assert {p for (a, p) in recorded if a == asset} == set(WEEKS), asset
    checks = stack.pg.query("dagster", "SELECT DISTINCT check_name FROM asset_check_executions "
                            "WHERE asset_key = %s AND execution_status = 'SUCCEEDED'", ('["raw_observations"]',))
    passed = {name for (name,) in checks}  # row placement only warns, and may not pass on every week
    assert QUALITY_CHECK in passed and passed <= {QUALITY_CHECK, PLACEMENT_CHECK}, \
        f"checks of raw_observations that passed, recorded in PostgreSQL: {checks}"

    # Data: one Parquet object per week and asset in S3, holding the week's rows.
    rows = 0
    for asset in INGESTION:
        objects = s3_objects(stack, asset)
        assert set(objects) == set(WEEKS), (asset, sorted(objects))
    for week in WEEKS:
        body = stack.s3().get_object(Bucket=BUCKET, Key=f"{PREFIX}/observation_features/{week}.parquet")["Body"].read()
        rows += len(pd.read_parquet(io.BytesIO(body)))
    assert 0.9 * stack.rows <= rows <= stack.rows, (rows, stack.rows)


def test_training_registers_a_champion_in_the_mlflow_server(stack, api, state):
    started = time.monotonic()
    run_id = api.submit_job("train_and_promote", run_config=TRAIN_CONFIG,
                            tags={"dagster/partition": LAST_WEEK, **RETRAINING_TAG})
    assert api.wait_run(run_id, timeout=420) == "SUCCESS", api.failure_messages(run_id)
    stack.timings["training"] = round(time.monotonic() - started, 1)

    recorded = materializations(stack)
    for asset in TRAINING:
        assert (asset, LAST_WEEK) in recorded, asset
    passed = {name for (name,) in stack.pg.query(
        "dagster", "SELECT DISTINCT check_name FROM asset_check_executions "
        "WHERE asset_key = %s AND execution_status = 'SUCCEEDED'", ('["challenger_model"]',))}
    assert BLOCKING_CHECKS <= passed, passed

    client = mlflow_client(stack)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    # The champion is the version this Dagster run registered (lineage tag on the version).
    assert champion.tags.get(TAG_DAGSTER_RUN) == run_id, champion.tags
    assert champion.tags.get(TAG_WINDOW_LAST) == LAST_WEEK, champion.tags
    # The registry lives in the MLflow server's PostgreSQL database, the model files in S3.
    assert stack.pg.query("mlflow", "SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                          (MODEL,)) == [("champion", int(champion.version))]
    artifacts = stack.s3().list_objects_v2(Bucket=DOTENV["MLFLOW_ARTIFACT_BUCKET"]).get("KeyCount", 0)
    assert artifacts > 0, "no model artifacts in the MLflow bucket"
    # The challenger's metrics reach PostgreSQL once, linked to its logged model: metrics
    # logged before the model made MLflow insert them a second time, which PostgreSQL refused.
    refused = [line for line in stack.pg.log.read_text(errors="replace").splitlines()
               if "duplicate key value violates unique constraint" in line]
    assert refused == [], refused[:3]
    experiment = client.get_run(champion.run_id).info.experiment_id
    models = client.search_logged_models(experiment_ids=[experiment],
                                         filter_string=f"source_run_id = '{champion.run_id}'")
    assert len(models) == 1, models
    linked = {m.key for m in models[0].metrics}
    assert {"accuracy", "macro_f1", "train_seconds"} <= linked, linked
    state["champion"] = champion.version


def test_prediction_server_serves_the_champion(stack, state):
    stack.start_serving()
    with serving_client(stack) as client:
        wait_for(lambda: client.health() == "SERVING", 180, "prediction server SERVING", procs=[stack.procs["serving"]])
        info = client.model_info()
        assert (info.name, info.version) == (MODEL, state["champion"])
        results = client.classify_batch(sample_objects(stack))
    assert {r.model_version for r in results} == {state["champion"]}
    assert {r.predicted_class for r in results} <= {"GALAXY", "QSO", "STAR"}


def test_dagster_ui_renders_the_asset_graph(stack):
    """The UI is a JS app: render it in headless Chromium and look for the asset nodes."""
    expected = {"ingestion": INGESTION, "training": [*TRAINING, "model_selection"]}
    for group, assets in expected.items():
        url = f"{stack.web_url}/locations/stellar/asset-groups/{group}/lineage"
        dom = _chromium(stack, url, "--dump-dom")
        for asset in assets:
            assert asset in dom, f"{asset} not rendered on {url}"
        assert f"{len(WEEKS)} partitions" in dom, f"asset nodes on {url} show no partition counts"
    _chromium(stack, f"{stack.web_url}/locations/stellar/asset-groups/training/lineage",
              f"--screenshot={stack.logs / 'asset-graph.png'}")
    assert (stack.logs / "asset-graph.png").stat().st_size > 10_000


def _chromium(stack: Stack, url: str, mode: str) -> str:
    profile = stack.root / f"chromium-{time.monotonic_ns()}"
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={profile}", "--window-size=1400,900", "--virtual-time-budget=30000", mode, url],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


# ---------------------------------------------------------------- faults
def test_s3_unreachable_during_a_materialization(stack, api):
    """A clear error naming the object; the partition's previous data and record stay."""
    week = LAST_WEEK
    key = f"{PREFIX}/raw_observations/{week}.parquet"
    s3 = stack.s3()
    before = s3.get_object(Bucket=BUCKET, Key=key)
    before_body, before_etag = before["Body"].read(), before["ETag"]
    recorded_before = materializations(stack)

    stack.relay.set_reachable(False)
    try:
        # dagster/max_retries=0: this run must show its own failure, not be retried by the daemon.
        run_id = api.submit_job("ingestion_job", run_config=IN_PROCESS,
                                tags={"dagster/partition": week, "dagster/max_retries": "0"})
        assert api.wait_run(run_id, timeout=300) == "FAILURE"
        messages = "\n".join(api.failure_messages(run_id))
    finally:
        stack.relay.set_reachable(True)
    # Ingestion compares with the stored week before writing, so S3 is found missing on that read.
    assert re.search(rf"could not (write|check|read|reach S3 for) s3://{BUCKET}/{key}", messages), messages

    after = s3.get_object(Bucket=BUCKET, Key=key)
    assert after["ETag"] == before_etag and after["Body"].read() == before_body
    assert materializations(stack) == recorded_before, "a failed write was recorded as a materialization"
    assert_every_materialization_has_its_data(stack)

    # With S3 back, re-executing from the failure completes and records the partition again.
    retry_id = api.reexecute_from_failure(run_id)
    assert api.wait_run(retry_id, timeout=300) == "SUCCESS", api.failure_messages(retry_id)
    assert materializations(stack)[("raw_observations", week)] == recorded_before[("raw_observations", week)] + 1
    assert_every_materialization_has_its_data(stack)


def test_postgres_restart_during_a_run_and_retrainings_never_overlap(stack, api, state):
    """Two retrainings submitted together run one after the other (tag limit); PostgreSQL
    restarts while the first runs: each run fails clearly (and is retried) or completes, a
    re-execution from failure completes, and nothing is recorded without its data."""
    weeks = ["2012-06-17", "2012-06-10"]
    run_ids = [api.submit_job("train_and_promote", run_config=TRAIN_CONFIG,
                              tags={"dagster/partition": w, **RETRAINING_TAG}) for w in weeks]
    seen: list[dict[str, str]] = []

    def poll() -> dict[str, str]:
        statuses = {}
        for run_id in run_ids:
            try:
                statuses[run_id] = api.status(run_id)
            except Exception:  # the webserver cannot reach PostgreSQL while it restarts
                statuses[run_id] = "UNKNOWN"
        seen.append(statuses)
        return statuses

    wait_for(lambda: "STARTED" in poll().values(), 300, "a retraining run to start")
    time.sleep(3)  # inside the run: steps are executing and writing events
    restarted_at = time.monotonic()
    stack.pg.stop("fast")
    # Longer than dagster-postgres's connection retries (~6 s of backoff): the run cannot
    # simply wait it out, it has to fail and be retried.
    # (No API polling meanwhile: the webserver itself waits out its own connection retries.)
    time.sleep(15)
    stack.pg.start()
    stack.timings["postgres_down"] = round(time.monotonic() - restarted_at, 1)

    def settled() -> bool:
        statuses = poll()
        return all(s in ("SUCCESS", "FAILURE", "CANCELED") for s in statuses.values())

    wait_for(settled, 600, "both retraining runs to finish", interval=1)
    both_running = [s for s in seen if list(s.values()).count("STARTED") > 1]
    assert not both_running, f"two retrainings ran at once: {both_running}"

    # Any run that failed says why, and is retried or re-executed from its failure to success.
    for run_id in run_ids:
        if api.status(run_id) != "SUCCESS":
            messages = api.failure_messages(run_id)
            assert messages, f"run {run_id} failed without an error message"
            retries = [r for r in api.runs(tags=[{"key": "dagster/parent_run_id", "value": run_id}])]
            retry_id = retries[0]["runId"] if retries else api.reexecute_from_failure(run_id)
            assert api.wait_run(retry_id, timeout=420) == "SUCCESS", api.failure_messages(retry_id)
            state.setdefault("postgres_fault", []).append({
                "failed": run_id, "error": messages[0][:160], "recovered_by": retry_id,
                "how": "daemon run retry (dagster.yaml run_retries)" if retries else "re-execution from failure"})
    recorded = materializations(stack)
    for week in weeks:
        for asset in TRAINING:
            assert (asset, week) in recorded, (asset, week)
    assert_every_materialization_has_its_data(stack)
    print(f"PostgreSQL restart: {state.get('postgres_fault', 'no run failed (writes retried)')}")


def test_mlflow_down_prediction_server_keeps_serving_and_recovers(stack, state):
    objects = sample_objects(stack)
    client = mlflow_client(stack)
    champion = state["champion"]
    stack.stop_mlflow()
    try:
        with serving_client(stack) as server:
            for _ in range(3):  # across several failed alias polls (every 2 s)
                assert server.health() == "SERVING"
                assert {r.model_version for r in server.classify_batch(objects)} == {champion}
                time.sleep(2.5)
            with pytest.raises(Exception):
                server.reload_model()  # the admin reload cannot reach the registry either
            assert server.model_info().version == champion
    finally:
        stack.start_mlflow()

    # MLflow is back: a new champion reaches the server through its alias polling.
    versions = sorted((int(v.version) for v in client.search_model_versions(f"name='{MODEL}'")), reverse=True)
    newer = next(str(v) for v in versions if str(v) != champion)
    client.set_registered_model_alias(MODEL, "champion", newer)
    with serving_client(stack) as server:
        wait_for(lambda: server.model_info().version == newer, 120, f"the server to follow champion v{newer}",
                 procs=[stack.procs["serving"]])
        assert {r.model_version for r in server.classify_batch(objects)} == {newer}
