"""batch_predictions, drift_report and serving_report on real Dagster runs, a real MLflow SQLite store,
a real SQLite predictions database and a real gRPC prediction server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from stellar_assets.monitoring import PredictionServer, PredictionsDatabase
from stellar_assets.monitoring.sensors import reload_after_promotion, reload_prediction_server
from stellar_mlflow.names import TAG_WINDOW_LAST
from stellar_mlflow.registry import get_alias_version
from tests.dagster_support import metadata_of
from tests.monitoring.scenario import CHAMPION_WEEK, DRIFT_WEEK, EMPTY_WEEK, SMALL_WEEK, WEAK_MODEL
from tests.support import free_port

STABLE = "2008-05-04"  # first week after the champion's window: mixed galaxies and stars, no drift


def _db(platform, name: str) -> PredictionsDatabase:
    return PredictionsDatabase(url=f"sqlite:///{platform.root / name}.db")


def test_same_week_twice_stores_the_same_rows_once(platform, champion_name):
    first = platform.monitor(champion_name, DRIFT_WEEK, db_name="idempotent", selection=["batch_predictions"])
    stored_once = _db(platform, "idempotent").read_weeks()
    second = platform.monitor(champion_name, DRIFT_WEEK, db_name="idempotent", selection=["batch_predictions"])
    stored_twice = _db(platform, "idempotent").read_weeks()
    assert first.success and second.success
    assert len(stored_once) == metadata_of(first, "batch_predictions")["rows"] == 42
    week_accuracy = (stored_once["label"] == stored_once["predicted_class"]).mean()
    assert metadata_of(first, "batch_predictions")["accuracy"] == pytest.approx(week_accuracy)
    assert not stored_twice.duplicated(["object_id", "week"]).any()
    pd.testing.assert_frame_equal(stored_once.drop(columns="dagster_run_id"), stored_twice.drop(columns="dagster_run_id"))
    assert set(stored_twice["dagster_run_id"]) == {second.run_id}  # the week's rows were replaced
    # A range run over the same week replaces too, and covers the empty week without failing.
    ranged = platform.monitor(champion_name, EMPTY_WEEK, DRIFT_WEEK, db_name="idempotent",
                              selection=["batch_predictions"])
    assert ranged.success and metadata_of(ranged, "batch_predictions", EMPTY_WEEK)["rows"] == 0
    after = _db(platform, "idempotent").read_weeks([DRIFT_WEEK])
    assert len(after) == 42 and set(after["dagster_run_id"]) == {ranged.run_id}
    probabilities = after[["p_GALAXY", "p_QSO", "p_STAR"]].sum(axis=1)
    assert probabilities.between(0.999, 1.001).all()


def test_predictions_never_use_a_model_that_trained_on_the_week(platform, model_name):
    assert platform.train(model_name, CHAMPION_WEEK, WEAK_MODEL).success
    # The only champion trained through CHAMPION_WEEK: it must not predict that week.
    peek = platform.monitor(model_name, CHAMPION_WEEK, selection=["batch_predictions"])
    assert not peek.success
    failure = next(e for e in peek.all_events if e.is_step_failure)
    assert f"no champion as of {CHAMPION_WEEK}" in failure.step_failure_data.user_failure_data.description
    # A later champion (trained through 2008-06-01) is promoted; 2008-05-04 still gets the older one.
    assert platform.train(model_name, "2008-06-01").success
    client = MlflowClient(platform.tracking_uri)
    newest = get_alias_version(client, model_name)
    assert newest.tags[TAG_WINDOW_LAST] == "2008-06-01"
    result = platform.monitor(model_name, STABLE, DRIFT_WEEK, db_name=model_name, selection=["batch_predictions"])
    assert result.success
    stored = _db(platform, model_name).read_weeks()
    for week, versions in stored.groupby("week")["model_version"]:
        (version,) = set(versions)
        window_last = client.get_model_version(model_name, version).tags[TAG_WINDOW_LAST]
        assert window_last < week, f"{week} predicted by v{version}, which trained through {window_last}"
    assert set(stored.loc[stored["week"] == STABLE, "model_version"]) != {str(newest.version)}
    assert set(stored.loc[stored["week"] == DRIFT_WEEK, "model_version"]) == {str(newest.version)}


def test_drift_report_flags_the_segue_weeks_and_says_not_enough_data_for_small_ones(platform, champion_name):
    result = platform.monitor(champion_name, STABLE, SMALL_WEEK, db_name="drift")
    assert result.success
    stable, drift, small = (metadata_of(result, "drift_report", w) for w in (STABLE, DRIFT_WEEK, SMALL_WEEK))
    assert stable["status"] == "no_drift" and stable["failed_checks"] == []
    assert drift["status"] == "drift" and "prediction_drift" in drift["failed_checks"]
    assert drift["weeks_tested"] == [DRIFT_WEEK] and drift["window_note"] == f"week {DRIFT_WEEK} alone"
    assert small["status"] == "not_enough_data" and small["failed_checks"] == []
    assert small["rows_tested"] < 30 and len(small["weeks_tested"]) == 4
    assert "not enough data" in small["summary"]

    checks = {(c.check_name, c.partition): c for c in result.get_asset_check_evaluations()}  # one per week
    assert {name for name, _ in checks} == {"drift"}
    drifting = checks["drift", DRIFT_WEEK]
    assert not drifting.passed and drifting.severity == dg.AssetCheckSeverity.WARN
    assert DRIFT_WEEK in drifting.description and STABLE not in drifting.description
    assert set(drifting.metadata["flagged"].value) == set(drift["failed_checks"])
    details = drifting.metadata["details"].value
    assert "**prediction_drift** (flagged)" in details and ("outside [10%, 90%]" in details or "chi-square" in details)
    assert "**data_drift** (flagged)" in details and "(ks " in details and "p < 0.00077" in details
    assert " sd)" in details
    small_week = checks["drift", SMALL_WEEK]
    assert small_week.passed and small_week.metadata["status"].value == "not_enough_data"
    assert checks["drift", STABLE].passed and checks["drift", STABLE].metadata["flagged"].value == []

    # A run over several weeks logs an MLflow run for its latest week (and weeks where the champion
    # degraded); the others say why they have none. The JSON in MLflow is the report summarised here.
    assert drift["mlflow_run"].startswith("none: ") and "mlflow_runs" in drift["mlflow_run"]
    assert "distribution_plot" not in drift
    client = MlflowClient(platform.tracking_uri)
    run_id = small["mlflow_run"].rsplit("/", 1)[-1]
    local = client.download_artifacts(run_id, "drift/drift_report.json", str(platform.root / f"dl-{run_id}"))
    report = json.loads(Path(local).read_text())
    assert report["week"] == SMALL_WEEK and report["status"] == "not_enough_data"
    assert report["thresholds"]["min_rows"] == 30 and report["champion_version"] == small["champion_version"]


def test_drift_plots_are_logged_to_mlflow(platform, champion_name):
    resources = platform.resources(champion_name, db_name="plots", plots=True)
    from stellar_assets.ingestion import INGESTION_ASSETS
    from stellar_assets.monitoring import MONITORING_ASSETS

    result = dg.materialize([*INGESTION_ASSETS, *platform.training_assets, *MONITORING_ASSETS],
                            selection=["batch_predictions", "drift_report"], resources=resources,
                            partition_key=DRIFT_WEEK, instance=dg.DagsterInstance.ephemeral())
    metadata = metadata_of(result, "drift_report")
    assert metadata["distribution_plot_uri"].endswith("drift/distributions.png")
    run_id = metadata["mlflow_run"].rsplit("/", 1)[-1]
    files = {f.path for f in MlflowClient(platform.tracking_uri).list_artifacts(run_id, "drift")}
    assert files == {"drift/distributions.png", "drift/drift_report.json"}


def test_serving_report_reads_a_real_server_and_reload_follows_a_promotion(platform, model_name, tmp_path):
    from stellar_api.client import StellarClient
    from stellar_serving.config import ServingConfig
    from stellar_serving.server import StellarServer

    instance = dg.DagsterInstance.ephemeral()
    assert platform.train(model_name, CHAMPION_WEEK, WEAK_MODEL, instance=instance).success
    client = MlflowClient(platform.tracking_uri)
    first_version = str(get_alias_version(client, model_name).version)
    server = StellarServer(ServingConfig(
        grpc_host="127.0.0.1", grpc_port=0, metrics_host="127.0.0.1", metrics_port=0,
        tracking_uri=platform.tracking_uri, model_name=model_name, cache_dir=str(tmp_path / "cache"),
        poll_seconds=0.0, max_workers=4, shutdown_grace_seconds=0.5)).start()
    try:
        resource = PredictionServer(grpc_target=f"127.0.0.1:{server.port}",
                                    metrics_url=f"http://127.0.0.1:{server.metrics_port}/metrics")
        with StellarClient(f"127.0.0.1:{server.port}") as api:
            for k in range(5):
                api.classify(u=19.1, g=17.9, r=17.3, i=17.0, z=16.8, redshift=0.07 + k / 100, client_id=f"o{k}")
            with pytest.raises(Exception):
                api.classify(u=19.1, g=17.9, r=17.3, i=17.0, z=16.8)  # no redshift: an error the server counts
        result = platform.monitor(model_name, DRIFT_WEEK, db_name=model_name, server=resource,
                                  selection=["serving_report"])
        assert result.success
        report = metadata_of(result, "serving_report")
        assert report["status"] == "ok" and report["requests"] >= 6 and report["errors"] >= 1
        assert report["model_versions"] == [first_version] and report["latency_p95_ms"] > 0

        # A promotion, then the run-status sensor's action: the server swaps without a restart.
        promoted = platform.train(model_name, "2008-06-01", instance=instance)
        assert promoted.success and metadata_of(promoted, "champion_model")["decision"] == "promoted"
        success = instance.get_records_for_run(promoted.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS).records
        context = dg.build_run_status_sensor_context(
            sensor_name=reload_prediction_server.name, dagster_event=success[0].event_log_entry.dagster_event,
            dagster_instance=instance, dagster_run=instance.get_run_by_id(promoted.run_id),
            resources={"prediction_server": resource})
        skip = reload_prediction_server(context)
        new_version = str(get_alias_version(client, model_name).version)
        assert f"server reloaded v{first_version} -> v{new_version} (changed=True)" in skip.skip_message
        with StellarClient(f"127.0.0.1:{server.port}") as api:
            assert api.model_info().version == new_version
    finally:
        server.stop(grace=0.5)

    # The same server gone: a reported state, not a crash.
    port = free_port()  # nothing listens there
    down = PredictionServer(grpc_target=f"127.0.0.1:{port}", metrics_url=f"http://127.0.0.1:{port}/metrics",
                            timeout_seconds=2)
    unreachable = platform.monitor(model_name, DRIFT_WEEK, db_name=model_name, server=down,
                                   selection=["serving_report"])
    assert unreachable.success
    assert metadata_of(unreachable, "serving_report")["status"] == "server_not_reachable"
    assert "not reachable" in reload_after_promotion(instance, promoted.run_id, down)
