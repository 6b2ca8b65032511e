"""Replay of survey history through the platform: the main job's core.

For a range of weeks, in order: predict with the champion of the time, check
drift, retrain when the retraining sensor says so, promote when the gate passes.

Runs, all on the given Dagster instance (the one `make demo` and `make ui` use):
1. ingestion of the initial champion's training window and the whole range: ONE run;
2. train_and_promote at the week before the range (the initial champion), unless
   a champion as of the first week exists already;
3. predict_and_check (batch_predictions + drift_report) over the rest of the
   range: ONE run per segment. The retraining sensor itself (build_sensor_context
   against the real instance) then reads the new drift reports in week order;
   each retraining it requests runs as the daemon would launch it (same run key
   and tags). A retraining that promoted changes the champion from the next
   week on, so only then does a new segment start, at that next week.
Empty weeks ride along inside the segment runs: no run per empty week.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dagster as dg
import pandas as pd

from stellar_assets.monitoring.sensors import (
    FLAGS_TAG,
    REASON_TAG,
    RETRAIN_WEEK_TAG,
    RUN_KEY_TAG,
    SENSOR_NAME_TAG,
    TRIGGER,
    TRIGGER_TAG,
    build_retraining_sensor,
    promotion_of_run,
)
from stellar_app.runs import RANGE_END_TAG, RANGE_START_TAG, failure_text as _failure_text
from stellar_app.runs import materializations as _materializations
from stellar_app.settings import AppSettings
from stellar_core.weeks import Week

REPLAY_TAG = "stellar/replay"
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# A challenger blocked by the gate is a normal outcome: the replay prints the failed check in one line
# (the run's full log stays in the Dagster UI), not Dagster's stack trace.
SILENT_LOGS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

# Crosses the SDSS-II -> SEGUE change: galaxies give way to stars from May 2008.
DEFAULT_FIRST_WEEK = "2008-03-02"
DEFAULT_LAST_WEEK = "2008-12-28"
# Replay challengers are small: the replay must finish in minutes on 2 cores.
REPLAY_CHALLENGER = {"n_estimators": 80, "max_depth": 4, "learning_rate": 0.2, "latency_single_row_repeats": 50}


class ReplayError(RuntimeError):
    pass


@dataclass
class ReplayLog:
    runs: list[dict] = field(default_factory=list)
    weeks: dict[str, dict] = field(default_factory=dict)
    retrainings: dict[str, dict] = field(default_factory=dict)
    sensor_notes: list[str] = field(default_factory=list)


def _weeks(first: str, last: str) -> list[str]:
    return [w.key for w in Week.range(first, last)]


def _shift(week: str, weeks: int) -> str:
    return (Week.of(week) + weeks).key


def run_replay(instance: dg.DagsterInstance, defs: dg.Definitions, first_week: str = DEFAULT_FIRST_WEEK,
               last_week: str = DEFAULT_LAST_WEEK, *, training_window_weeks: int | None = None,
               challenger_config: dict | None = None, cooldown_weeks: int | None = None,
               ingest: bool = True, say: Callable[[str], None] = print) -> pd.DataFrame:
    """Replay [first_week, last_week]; returns the per-week timeline (see module docstring)."""

    from stellar_assets.partitions import observation_weeks
    from stellar_assets.settings import load_settings
    from stellar_assets.training import DEFAULT_WINDOW_WEEKS
    from stellar_mlflow.registry import champion_as_of

    keys = observation_weeks.get_partition_keys()
    for name, week in (("first_week", first_week), ("last_week", last_week)):
        if week not in keys:
            raise ReplayError(f"{name} {week} is not an observation week: weeks start on Sundays between "
                              f"{keys[0]} and {keys[-1]}")
    if last_week < first_week:
        raise ReplayError(f"last_week {last_week} is before first_week {first_week}")
    if first_week == keys[0]:
        raise ReplayError(f"first_week {first_week} is the first observation week: an initial champion needs "
                          "earlier weeks to train on")
    window = training_window_weeks if training_window_weeks is not None else (load_settings().training_window_weeks or DEFAULT_WINDOW_WEEKS)
    initial_week = _shift(first_week, -1)
    history_start = max(keys[0], _shift(initial_week, -(window - 1)))
    log = ReplayLog()
    sensor = build_retraining_sensor(cooldown_weeks=cooldown_weeks)
    registry = defs.resources["model_registry"] if hasattr(defs, "resources") and defs.resources else None
    if registry is None:
        raise ReplayError("the Definitions given to run_replay have no model_registry resource")
    client = registry.client()

    def execute(job_name: str, tags: dict, partition_key: str | None = None, run_config: dict | None = None,
                what: str = ""):
        started = time.perf_counter()
        config = {**(SILENT_LOGS if job_name == "train_and_promote" else QUIET_LOGS), **(run_config or {})}
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, run_config=config, raise_on_error=False, partition_key=partition_key,
            tags={REPLAY_TAG: "true", **tags})
        seconds = time.perf_counter() - started
        log.runs.append({"job": job_name, "run_id": result.run_id, "success": result.success,
                         "seconds": round(seconds, 1), "what": what})
        say(f"  run {result.run_id[:8]} {job_name:<18} {what:<40} {'ok' if result.success else 'FAILED'} "
            f"in {seconds:.1f} s")
        return result

    if ingest:
        say(f"[replay 1] ingestion of {history_start}..{last_week} "
            f"({len(_weeks(history_start, last_week))} weeks) in one run")
        ingestion = execute("ingestion_job", {RANGE_START_TAG: history_start, RANGE_END_TAG: last_week},
                            what=f"{history_start}..{last_week}")
        if not ingestion.success:
            raise ReplayError(f"ingestion failed: {_failure_text(ingestion)}")
    else:
        say(f"[replay 1] ingestion skipped: {history_start}..{last_week} must be ingested already")

    challenger = {**REPLAY_CHALLENGER, **(challenger_config or {})}
    train_config = {"ops": {"challenger_model": {"config": challenger}}}
    existing = champion_as_of(client, registry.model_name, first_week)
    if existing is None:
        say(f"[replay 2] initial champion: train_and_promote at {initial_week} "
            f"(window {history_start}..{initial_week})")
        initial = execute("train_and_promote", {"stellar/step": "initial champion"}, partition_key=initial_week,
                          run_config=train_config, what=f"initial champion at {initial_week}")
        if not initial.success or champion_as_of(client, registry.model_name, first_week) is None:
            raise ReplayError(f"the initial champion at {initial_week} was not promoted: {_failure_text(initial)}")
    else:
        say(f"[replay 2] champion as of {first_week} exists already: v{existing.version}")

    # The sensor only reads drift reports made from here on.
    latest = instance.fetch_materializations(dg.AssetKey("drift_report"), limit=1)
    cursor = str(latest.records[0].storage_id) if latest.records else None

    say(f"[replay 3] weeks {first_week}..{last_week}: predict + drift in segment runs, retraining sensor after each")
    start = first_week
    while start <= last_week:
        segment = execute("predict_and_check", {RANGE_START_TAG: start, RANGE_END_TAG: last_week},
                          what=f"predict+drift {start}..{last_week}")
        if not segment.success:
            raise ReplayError(f"predict_and_check {start}..{last_week} failed: {_failure_text(segment)}")
        for (asset, week), metadata in _materializations(segment).items():
            log.weeks.setdefault(week, {})[asset] = metadata
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                          sensor_name=sensor.name)
        tick = sensor(context)
        cursor = tick.cursor if isinstance(tick, dg.SensorResult) and tick.cursor else context.cursor
        requests = list(tick.run_requests or []) if isinstance(tick, dg.SensorResult) else []
        note = tick.skip_reason.skip_message if isinstance(tick, dg.SensorResult) and tick.skip_reason else ""
        if note:
            log.sensor_notes.append(note)
        next_start = None
        for request in sorted(requests, key=lambda r: r.partition_key):
            week = request.partition_key
            tags = {**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: sensor.name}
            result = execute("train_and_promote", tags, partition_key=week, run_config=train_config,
                             what=f"retrain at {week} ({request.tags.get(FLAGS_TAG)})")
            champion = _materializations(result).get(("champion_model", week), {})
            decision = champion.get("decision") or ("blocked by the gate" if not result.success else "no decision")
            log.retrainings[week] = {"run_id": result.run_id, "decision": decision,
                                     "reason": request.tags.get(REASON_TAG),
                                     "summary": champion.get("summary") or (
                                         _failure_text(result) if not result.success else "")}
            say(f"    retraining at {week}: {decision}: {log.retrainings[week]['summary'][:140]}")
            if decision == "promoted":
                # The champion changed from the next week on: weeks after W are predicted again.
                next_start = _shift(week, 1)
                break
        if next_start is None:
            break
        start = next_start
    # A replay run again on the same instance: the sensor skips drift it already acted on (run keys);
    # the timeline still shows those earlier retrainings and their outcome.
    for run in instance.get_runs(filters=dg.RunsFilter(job_name="train_and_promote",
                                                       tags={TRIGGER_TAG: TRIGGER})):
        week = run.tags.get(RETRAIN_WEEK_TAG)
        if week and first_week <= week <= last_week and week not in log.retrainings:
            decision = (promotion_of_run(instance, run.run_id) or {}).get("decision") or (
                "blocked by the gate" if run.status == dg.DagsterRunStatus.FAILURE else "no decision")
            log.retrainings[week] = {"run_id": run.run_id, "decision": f"{decision} (earlier run)",
                                     "reason": run.tags.get(REASON_TAG), "summary": ""}
    timeline = build_timeline(_weeks(first_week, last_week), log)
    timeline.attrs["runs"] = log.runs
    return timeline


def build_timeline(weeks: list[str], log: ReplayLog) -> pd.DataFrame:
    rows = []
    for week in weeks:
        entry = log.weeks.get(week, {})
        predictions, drift = entry.get("batch_predictions", {}), entry.get("drift_report", {})
        retraining = log.retrainings.get(week, {})
        mix = predictions.get("class_mix") or {}
        rows.append({
            "week": week,
            "rows": predictions.get("rows", 0),
            "model_version": predictions.get("model_version"),
            "accuracy": predictions.get("accuracy"),  # this week's rows only
            "window_accuracy": drift.get("accuracy"),  # the rows the drift report tested
            "drift_status": drift.get("status"),
            "drift_flags": ",".join(drift.get("failed_checks") or []),
            "weeks_tested": len(drift.get("weeks_tested") or []),
            "retrained": bool(retraining),
            "promotion": retraining.get("decision", ""),
            **{f"pred_{c}": mix.get(c, 0) for c in ("GALAXY", "QSO", "STAR")},
        })
    return pd.DataFrame(rows)


def save_timeline(timeline: pd.DataFrame, directory: Path) -> tuple[Path, Path]:
    """timeline.csv and timeline.png in `directory`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = directory / "timeline.csv", directory / "timeline.png"
    timeline.to_csv(csv_path, index=False)
    dates = pd.to_datetime(timeline["week"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    top.bar(dates, timeline["rows"], width=5, color="lightgrey", label="rows")
    top.set_ylabel("rows per week")
    acc = top.twinx()
    acc.plot(dates, timeline["accuracy"], "o-", color="tab:blue", markersize=3, label="accuracy (champion of the time)")
    acc.set_ylim(0, 1.05)
    acc.set_ylabel("accuracy")
    drifted = timeline["drift_status"] == "drift"
    acc.scatter(dates[drifted], [1.02] * int(drifted.sum()), marker="v", color="red", label="drift flagged", zorder=3)
    for date, promotion in zip(dates, timeline["promotion"]):
        if promotion:
            colour = "green" if promotion.startswith("promoted") else "orange"
            acc.axvline(date, color=colour, linestyle="--", linewidth=1)
            acc.text(date, 0.05, f" retrain: {promotion}", rotation=90, fontsize=7, color=colour)
    handles = [h for ax in (top, acc) for h in ax.get_legend_handles_labels()[0]]
    labels = [label for ax in (top, acc) for label in ax.get_legend_handles_labels()[1]]
    acc.legend(handles, labels, loc="lower left", fontsize=8)
    top.set_title("Replay: rows, accuracy of the champion of the time, drift flags, retrainings (green: promoted)")
    mix = timeline[["pred_GALAXY", "pred_QSO", "pred_STAR"]].to_numpy(dtype=float)
    totals = mix.sum(axis=1, keepdims=True)
    shares = (mix / (totals + (totals == 0))).T
    bottom.stackplot(dates, shares, labels=["GALAXY", "QSO", "STAR"], alpha=0.8)
    bottom.set_ylabel("predicted mix")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return csv_path, png_path


def print_timeline(timeline: pd.DataFrame, say: Callable[[str], None] = print) -> None:
    shown = timeline[(timeline["rows"] > 0) | timeline["retrained"]]
    say(f"{'week':<11}{'rows':>5} {'model':>6} {'accuracy':>9}  {'drift':<16}{'flags':<40}{'retraining':<12}")
    for row in shown.itertuples():
        accuracy = "" if pd.isna(row.accuracy) else f"{row.accuracy:.3f}"
        say(f"{row.week:<11}{row.rows:>5} {('v' + str(row.model_version)) if row.model_version else '':>6} "
            f"{accuracy:>9}  {str(row.drift_status or ''):<16}{row.drift_flags:<40}{row.promotion:<12}")
    empty = int((timeline["rows"] == 0).sum())
    say(f"({empty} weeks without spectra not shown; they were predicted and checked inside the same runs)")


def replay_main(first_week: str | None = None, last_week: str | None = None, *, ingest: bool = True,
                say: Callable[[str], None] = print,
                settings: AppSettings | None = None) -> tuple[pd.DataFrame, Path, Path]:
    """The main job's replay step on the project's own instance (the one `make ui` opens):
    run, print the timeline, save timeline.csv and timeline.png under <project home>/replay.
    Range: the arguments, else STELLAR_REPLAY_FIRST_WEEK / STELLAR_REPLAY_LAST_WEEK, else the default."""
    from stellar_app.home import prepare_home

    settings = settings or AppSettings()
    prepare_home(settings)
    from stellar_assets.definitions import defs

    instance = dg.DagsterInstance.get()
    first = first_week or settings.stellar_replay_first_week or DEFAULT_FIRST_WEEK
    last = last_week or settings.stellar_replay_last_week or DEFAULT_LAST_WEEK
    started = time.perf_counter()
    timeline = run_replay(instance, defs, first, last, ingest=ingest, say=say)
    elapsed = time.perf_counter() - started
    runs = timeline.attrs.get("runs", [])
    say(f"\nReplay {first}..{last}: {len(timeline)} weeks in {elapsed:.0f} s, {len(runs)} Dagster runs "
        f"({', '.join(f'{n} {j}' for j, n in pd.Series([r['job'] for r in runs]).value_counts().items())})")
    print_timeline(timeline, say)
    csv_path, png_path = save_timeline(timeline, settings.home / "replay")
    say(f"Timeline saved: {csv_path} and {png_path}")
    return timeline, csv_path, png_path
