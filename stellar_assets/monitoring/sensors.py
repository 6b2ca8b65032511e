"""Automation: retrain when the champion is shown to have degraded; hand the server a new champion.

`drift_retraining_sensor` reads the drift_report materializations recorded
since its cursor, in storage order, and asks `retraining_decision`
(stellar_core.drift) what to do with each. The trigger is performance evidence by
default (the report's `champion_degraded`: stellar_assets/monitoring/evidence.py);
drift checks become triggers only when listed in STELLAR_RETRAIN_ON, since SDSS
plates target one kind of object each and week-to-week drift is mostly harmless.
A request carries the run key
`drift-retrain-<week>` (Dagster never launches the same key twice for a sensor;
the sensor also skips keys that already have a run, so the replay, which
launches in process, is covered too) and tags that say why, visible on the run
in the UI. The cool-down is counted in observation weeks.

`reload_prediction_server` fires on each successful train_and_promote run; when
the run promoted, it calls the server's admin ReloadModel. A server that is
down is reported as a skip: it polls the alias itself when it comes back.
"""



import dagster as dg
from dagster._core.storage.dagster_run import RunsFilter

from stellar_assets.monitoring.resources import PredictionServer, ServerUnreachable
from stellar_assets.run_tags import DEGRADED, RETRAIN_BECAUSE_TAG
from stellar_assets.settings import DEGRADATION_TRIGGER, load_settings
from stellar_assets.training import train_and_promote_job
from stellar_core.drift import NOT_ENOUGH_DATA, retraining_decision, retraining_run_key

TRIGGER_TAG = "stellar/trigger"
RETRAIN_WEEK_TAG = "stellar/retrain_for_week"
REASON_TAG = "stellar/retrain_reason"
FLAGS_TAG = "stellar/drift_flags"
CHAMPION_TAG = "stellar/champion_at_drift"
TRIGGER = "drift_retraining_sensor"
RETRAIN_JOB = "train_and_promote"
SENSOR_NAME = "drift_retraining_sensor"
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"


def _runs_with(instance: dg.DagsterInstance, tags: dict, limit: int | None = None):
    return instance.get_runs(filters=RunsFilter(job_name=RETRAIN_JOB, tags=tags), limit=limit)


def _launched_keys(instance: dg.DagsterInstance, weeks: list[str | None]) -> set[str]:
    """The retraining run keys of these weeks that already have a run."""
    keys = sorted({retraining_run_key(week) for week in weeks if week})
    return {run.tags[RUN_KEY_TAG] for run in _runs_with(instance, {RUN_KEY_TAG: keys})} if keys else set()


def fired_triggers(metadata: dict, triggers: tuple[str, ...]) -> list[str]:
    """Which of the configured triggers a drift report's metadata fires."""
    fired = [DEGRADATION_TRIGGER] if DEGRADATION_TRIGGER in triggers and metadata.get(DEGRADATION_TRIGGER) else []
    return fired + [check for check in metadata.get("failed_checks") or [] if check in triggers]


def _status(metadata: dict, fired: list[str]) -> str:
    """not_enough_data only when neither the champion's record nor the week could be tested."""
    if fired or metadata.get("degradation_status") not in (None, NOT_ENOUGH_DATA):
        return "tested"
    return metadata["status"]


def build_retraining_sensor(cooldown_weeks: int | None = None, name: str = SENSOR_NAME,
                            minimum_interval_seconds: int = 60,
                            triggers: tuple[str, ...] | None = None) -> dg.SensorDefinition:
    cooldown = load_settings().retrain_cooldown_weeks if cooldown_weeks is None else cooldown_weeks
    triggers = load_settings().retrain_on if triggers is None else tuple(triggers)

    @dg.sensor(
        name=name, job_name=RETRAIN_JOB, minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Requests train_and_promote for week W when drift_report[W] fires a trigger "
        f"({', '.join(triggers)}); one run per week (run key), at most one per {cooldown} observation weeks "
        "(cool-down).",
    )
    def drift_retraining_sensor(context: dg.SensorEvaluationContext):
        after = int(context.cursor) if context.cursor else None
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("drift_report"), after_storage_id=after),
            limit=500, ascending=True)
        if not result.records:
            return dg.SkipReason("no new drift reports since the last tick")
        requests: list[dg.RunRequest] = []
        notes: list[str] = []
        # Read the retraining runs once per tick (sensor evaluations time out after 60 s), and the runs of
        # these reports' run keys in one query, not one per report.
        retrained = [run.tags.get(RETRAIN_WEEK_TAG) for run in _runs_with(context.instance, {TRIGGER_TAG: TRIGGER})]
        planned: list[str] = [w for w in retrained if w]  # plus weeks requested earlier in this tick
        launched = _launched_keys(context.instance, [r.asset_materialization.partition for r in result.records])
        for record in result.records:
            materialization = record.asset_materialization
            week = materialization.partition
            metadata = {k: v.value for k, v in materialization.metadata.items()}
            if week is None or "status" not in metadata:
                continue
            fired = fired_triggers(metadata, triggers)
            last = max([w for w in planned if w <= week], default=None)
            key = retraining_run_key(week)
            requested = key in launched or key in {r.run_key for r in requests}
            # The degradation sentence explains a decision about degradation, not a drift-check trigger.
            evidence = metadata.get("degradation_summary", "") if not fired or DEGRADATION_TRIGGER in fired else ""
            decision = retraining_decision(week, _status(metadata, fired), fired, last, cooldown, requested, evidence)
            notes.append(decision.reason)
            if decision.retrain:
                planned.append(week)
                requests.append(dg.RunRequest(
                    run_key=decision.run_key, partition_key=week,
                    tags={TRIGGER_TAG: TRIGGER, RETRAIN_WEEK_TAG: week, REASON_TAG: decision.reason[:500],
                          FLAGS_TAG: ",".join(fired), CHAMPION_TAG: str(metadata.get("champion_version", "")),
                          **({RETRAIN_BECAUSE_TAG: DEGRADED} if DEGRADATION_TRIGGER in fired else {})}))
        cursor = str(result.records[-1].storage_id)
        if requests:
            context.log.info("; ".join(notes))
            return dg.SensorResult(run_requests=requests, cursor=cursor)
        return dg.SensorResult(skip_reason=dg.SkipReason("; ".join(notes)[:1000] or "nothing to do"), cursor=cursor)

    return drift_retraining_sensor


def promotion_of_run(instance: dg.DagsterInstance, run_id: str) -> dict | None:
    """champion_model's decision metadata in a run, or None when the run did not materialize it."""
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is not None and materialization.asset_key == dg.AssetKey("champion_model"):
            return {k: v.value for k, v in materialization.metadata.items()}
    return None


def reload_after_promotion(instance: dg.DagsterInstance, run_id: str, server: PredictionServer) -> str:
    """Call ReloadModel when `run_id` promoted; say what happened (never raises for a server that is down)."""
    decision = promotion_of_run(instance, run_id)
    if not decision or decision.get("decision") != "promoted":
        return f"run {run_id[:8]} did not promote a champion ({(decision or {}).get('decision', 'no champion_model')})"
    try:
        answer = server.reload()
    except ServerUnreachable as exc:
        return f"promoted v{decision.get('champion_version')} but {exc}; the server picks it up by polling"
    return (f"promoted v{decision.get('champion_version')}: server reloaded "
            f"v{answer['previous_version']} -> v{answer['version']} (changed={answer['changed']})")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[train_and_promote_job],
    name="reload_prediction_server",
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="After a successful train_and_promote run that promoted, the prediction server reloads the "
    "champion (admin ReloadModel), without a restart.",
)
def reload_prediction_server(context: dg.RunStatusSensorContext, prediction_server: PredictionServer):
    message = reload_after_promotion(context.instance, context.dagster_run.run_id, prediction_server)
    context.log.info(message)
    return dg.SkipReason(message)
