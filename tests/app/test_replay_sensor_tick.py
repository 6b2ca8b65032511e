"""The retraining sensor as the replay ticks it after every chunk: one tick reads the run storage a fixed
number of times however many drift reports it reads (it read it once per report), and decides the same."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from stellar_assets.monitoring.sensors import RUN_KEY_TAG, build_retraining_sensor
from stellar_core.weeks import Week


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def _report(instance, week: str, degraded: bool) -> None:
    """A drift report as drift_report records it: the sensor reads only its metadata."""
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="drift_report", partition=week, metadata={
            "status": "ok", "failed_checks": dg.MetadataValue.json([]),
            "champion_degraded": dg.MetadataValue.bool(degraded),
            "degradation_status": "degraded" if degraded else "stable", "champion_version": "2"}))


def _run_with_key(instance, job_name: str, week: str) -> None:
    instance.add_run(DagsterRun(job_name=job_name, run_id=make_new_run_id(),
                                tags={RUN_KEY_TAG: f"drift-retrain-{week}"}))


def _tick_counting_run_reads(instance, monkeypatch) -> tuple[dg.SensorResult, int]:
    reads = []
    real_get_runs = instance.get_runs

    def get_runs(*args, **kwargs):
        reads.append(kwargs.get("filters"))
        return real_get_runs(*args, **kwargs)

    monkeypatch.setattr(instance, "get_runs", get_runs)
    sensor = build_retraining_sensor(cooldown_weeks=2)
    result = sensor(dg.build_sensor_context(instance=instance, sensor_name=sensor.name))
    monkeypatch.undo()
    return result, len(reads)


@pytest.mark.parametrize("weeks", [3, 40])
def test_a_tick_reads_the_run_storage_twice_whatever_the_number_of_reports(instance, monkeypatch, weeks):
    keys = [w.key for w in Week.range("2008-01-06", (Week.of("2008-01-06") + (weeks - 1)).key)]
    for week in keys:
        _report(instance, week, degraded=True)
    _run_with_key(instance, "train_and_promote", keys[0])  # already requested: not again
    _run_with_key(instance, "predict_and_check", keys[1])  # a run key of another job does not count
    result, reads = _tick_counting_run_reads(instance, monkeypatch)
    assert reads == 2  # the sensor's retraining runs, and the runs of these reports' run keys
    # keys[0] already has its run; from keys[1] on, a degraded week is retrained every cool-down (2 weeks).
    assert [r.partition_key for r in result.run_requests] == keys[1::2]
