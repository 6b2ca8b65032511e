"""The retraining sensor ticked with build_sensor_context against a real instance holding real drift reports."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from stellar_assets.monitoring.sensors import (
    REASON_TAG,
    RETRAIN_WEEK_TAG,
    RUN_KEY_TAG,
    TRIGGER,
    TRIGGER_TAG,
    build_retraining_sensor,
)
from stellar_assets.run_tags import DEGRADED, RETRAIN_BECAUSE_TAG
from tests.monitoring.scenario import DRIFT_WEEK, SMALL_WEEK

STABLE = "2008-05-04"
# The drift checks as triggers (STELLAR_RETRAIN_ON): by default only the champion's degradation triggers.
DRIFT_TRIGGERS = ("champion_degraded", "data_drift", "prediction_drift", "performance_drift", "rejected_rows")


def _tick(sensor, instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, sensor_name=sensor.name)
    result = sensor(context)
    assert isinstance(result, (dg.SensorResult, dg.SkipReason))
    return result


def _retraining_run(instance, week: str) -> None:
    """What the daemon leaves behind after launching a request: a run with the sensor's tags."""
    instance.add_run(DagsterRun(job_name="train_and_promote", run_id=make_new_run_id(), tags={
        TRIGGER_TAG: TRIGGER, RETRAIN_WEEK_TAG: week, RUN_KEY_TAG: f"drift-retrain-{week}"}))


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_drift_requests_one_retraining_then_never_again(platform, champion_name, instance):
    assert platform.monitor(champion_name, DRIFT_WEEK, instance=instance, db_name="sensor").success
    sensor = build_retraining_sensor(cooldown_weeks=4, triggers=DRIFT_TRIGGERS)
    first = _tick(sensor, instance)
    [request] = first.run_requests
    assert request.run_key == f"drift-retrain-{DRIFT_WEEK}" and request.partition_key == DRIFT_WEEK
    assert request.tags[RETRAIN_WEEK_TAG] == DRIFT_WEEK
    assert "retraining triggered by " in request.tags[REASON_TAG] and "prediction_drift" in request.tags[REASON_TAG]
    # The same tick again (cursor advanced): nothing new.
    again = _tick(sensor, instance, first.cursor)
    assert isinstance(again, dg.SkipReason) and "no new drift reports" in again.skip_message
    # The daemon launched it; then the week is re-checked: the same drift does not trigger twice.
    _retraining_run(instance, DRIFT_WEEK)
    assert platform.monitor(champion_name, DRIFT_WEEK, instance=instance, db_name="sensor").success
    rechecked = _tick(sensor, instance, first.cursor)
    assert rechecked.run_requests == [] and "already requested" in rechecked.skip_reason.skip_message


def test_no_drift_and_not_enough_data_skip_with_reasons(platform, champion_name, instance):
    assert platform.monitor(champion_name, STABLE, instance=instance, db_name="sensor-quiet").success
    assert platform.monitor(champion_name, SMALL_WEEK, instance=instance, db_name="sensor-quiet").success
    result = _tick(build_retraining_sensor(cooldown_weeks=4, triggers=DRIFT_TRIGGERS), instance)
    assert result.run_requests == []
    message = result.skip_reason.skip_message
    assert f"{STABLE}: no trigger fired" in message and f"{SMALL_WEEK}: not enough data" in message


def test_cool_down_is_honoured_in_observation_weeks(platform, champion_name, instance):
    _retraining_run(instance, "2008-05-25")  # a drift-triggered retraining two weeks before DRIFT_WEEK
    assert platform.monitor(champion_name, DRIFT_WEEK, instance=instance, db_name="sensor-cool").success
    cooling = _tick(build_retraining_sensor(cooldown_weeks=4, triggers=DRIFT_TRIGGERS), instance)
    assert cooling.run_requests == []
    assert "in cool-down: retrained at 2008-05-25, 2 week(s) ago (< 4)" in cooling.skip_reason.skip_message
    # With a two-week cool-down the same report does trigger.
    shorter = _tick(build_retraining_sensor(cooldown_weeks=2, triggers=DRIFT_TRIGGERS), instance)
    assert [r.partition_key for r in shorter.run_requests] == [DRIFT_WEEK]


def test_weekly_schedule_runs_the_newest_complete_week(platform):
    import datetime as dt

    from stellar_assets.ingestion import INGESTION_ASSETS
    from stellar_assets.monitoring import MONITORING_ASSETS, weekly_monitoring_job, weekly_monitoring_schedule

    defs = dg.Definitions(assets=[*INGESTION_ASSETS, *MONITORING_ASSETS], jobs=[weekly_monitoring_job],
                          schedules=[weekly_monitoring_schedule], resources=platform.resources("schedule"))
    schedule = defs.get_schedule_def("weekly_monitoring_schedule")
    monday = dt.datetime(2012, 5, 14, 6, 0, tzinfo=dt.timezone.utc)
    result = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=monday))
    [request] = result.run_requests
    assert request.partition_key == "2012-05-06"  # the week Sunday 6th .. Saturday 12th May
    assert schedule.job_name == weekly_monitoring_job.name and schedule.cron_schedule == "0 6 * * 1"


def _report(instance, week: str, degraded: bool, drift: list[str], status: str = "drift") -> None:
    """A drift report as drift_report records it: the sensor reads only its metadata."""
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="drift_report", partition=week, metadata={
            "status": status, "failed_checks": dg.MetadataValue.json(drift),
            "champion_degraded": dg.MetadataValue.bool(degraded),
            "degradation_status": "degraded" if degraded else "stable",
            "degradation_summary": ("degraded: champion right on 255 of 300 labelled rows" if degraded
                                    else "stable: champion right on 291 of 300 labelled rows"),
            "champion_version": "3"}))


def test_by_default_a_degraded_champion_triggers_retraining_and_drift_alone_does_not(instance):
    _report(instance, "2008-05-04", degraded=False, drift=["data_drift", "prediction_drift"])
    _report(instance, "2008-06-08", degraded=True, drift=[])
    result = _tick(build_retraining_sensor(cooldown_weeks=4), instance)
    [request] = result.run_requests
    assert request.partition_key == "2008-06-08" and request.tags[RETRAIN_BECAUSE_TAG] == DEGRADED
    assert "triggered by champion_degraded (degraded: champion right on 255 of 300" in request.tags[REASON_TAG]


def test_a_stable_champion_is_not_retrained_whatever_drifts(instance):
    for week in ("2008-05-04", "2008-05-11", "2008-05-18"):
        _report(instance, week, degraded=False, drift=["data_drift", "prediction_drift"])
    result = _tick(build_retraining_sensor(cooldown_weeks=0), instance)
    assert result.run_requests == []
    assert "2008-05-18: no trigger fired, no retraining (stable: champion right on 291" in result.skip_reason.skip_message
