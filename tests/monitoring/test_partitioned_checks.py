"""drift_report's checks per week: a run over a range of weeks records one evaluation per week per
check, carrying its week and pointing at that week's drift_report materialization of the run; a
drifting week fails its own check (real runs on the monitoring tests' project home)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
from mlflow.tracking import MlflowClient

from stellar_assets.monitoring.assets import DRIFT_CHECK
from stellar_mlflow.names import DRIFT_PLOT
from tests.dagster_support import metadata_of
from stellar_assets.partitions import observation_weeks
from tests.monitoring.scenario import DRIFT_WEEK

REPORT = dg.AssetKey("drift_report")
STABLE = "2008-05-04"  # no drift against the shared champion (test_monitoring_assets.py)
WEEKS = observation_weeks.get_partition_keys_in_range(dg.PartitionKeyRange(STABLE, DRIFT_WEEK))


def evaluations_of_run(instance, run_id: str, check: str) -> dict[str, object]:
    """The check's evaluations in run `run_id`, by week (asserting one per week, none left planned)."""
    records = [r for r in instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(REPORT, check), limit=1000) if r.run_id == run_id]
    weeks = [r.partition for r in records]
    assert sorted(weeks, key=str) == WEEKS, f"{check}: evaluations for {weeks}, expected one per week of {WEEKS}"
    assert all(r.status.value in ("SUCCEEDED", "FAILED") for r in records), f"{check} left planned: {records}"
    return {r.partition: r.event.dagster_event.event_specific_data for r in records}


def test_ranged_drift_report_checks_each_week_against_its_own_materialization(platform, champion_name):
    instance = dg.DagsterInstance.ephemeral()
    first = platform.monitor(champion_name, WEEKS[0], WEEKS[-1], instance=instance, db_name="partitioned")
    second = platform.monitor(champion_name, WEEKS[0], WEEKS[-1], instance=instance, db_name="partitioned")
    assert first.success and second.success
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=REPORT, asset_partitions=WEEKS),
                                              limit=100).records
    materialized = {r.partition_key: r for r in records if r.run_id == second.run_id}
    assert sorted(materialized) == WEEKS
    verdicts = {}
    for week, evaluation in evaluations_of_run(instance, second.run_id, DRIFT_CHECK).items():
        target = evaluation.target_materialization_data
        assert evaluation.partition == week and target is not None, week
        assert (target.run_id, target.storage_id) == (second.run_id, materialized[week].storage_id), week
        # The week's own verdict: the one its report gives.
        failed = metadata_of(second, "drift_report", week)["failed_checks"]
        assert evaluation.passed == (not failed), (week, failed)
        assert sorted(evaluation.metadata["flagged"].value) == sorted(failed), week
        assert evaluation.severity == dg.AssetCheckSeverity.WARN
        verdicts[week] = evaluation
    drifting = verdicts[DRIFT_WEEK]
    assert not drifting.passed and DRIFT_WEEK in drifting.description and "prediction drift" in drifting.description
    assert all(w == DRIFT_WEEK or w not in drifting.description for w in WEEKS)
    assert verdicts[STABLE].passed and STABLE in verdicts[STABLE].description


def test_drift_plot_is_inline_and_numbers_are_rounded(platform, champion_name):
    from stellar_assets.ingestion import INGESTION_ASSETS
    from stellar_assets.monitoring import MONITORING_ASSETS

    resources = platform.resources(champion_name, db_name="inline-plot", plots=True)
    result = dg.materialize([*INGESTION_ASSETS, *platform.training_assets, *MONITORING_ASSETS],
                            selection=["batch_predictions", "drift_report"], resources=resources,
                            partition_key=DRIFT_WEEK, instance=dg.DagsterInstance.ephemeral())
    metadata = metadata_of(result, "drift_report")
    plot = metadata["distribution_plot"]
    assert plot.startswith("![drift ") and "](data:image/png;base64,iVBORw0KGgo" in plot  # a PNG, shown in place
    assert "file://" not in plot and f"[{DRIFT_PLOT} in MLflow](" in plot
    assert metadata["distribution_plot_uri"].endswith(DRIFT_PLOT)
    accuracy = metadata["accuracy"]
    assert accuracy == float(f"{accuracy:.3g}")
    details = {e.check_name: e for e in result.get_asset_check_evaluations()}[DRIFT_CHECK].metadata["details"].value
    assert re.findall(r"\d+\.\d+", details) and all(
        _significant_digits(n) <= 3 for n in re.findall(r"\d+\.\d+", details)), details
    # The JSON in MLflow keeps full precision; the metadata is it, rounded.
    run_id = metadata["mlflow_run"].rsplit("/", 1)[-1]
    local = MlflowClient(platform.tracking_uri).download_artifacts(run_id, "drift/drift_report.json",
                                                                   str(platform.root / f"dl-inline-{run_id}"))
    report = json.loads(Path(local).read_text())
    assert float(f"{report['performance']['accuracy']:.3g}") == accuracy


def _significant_digits(number: str) -> int:
    return len(number.replace(".", "").lstrip("0"))
