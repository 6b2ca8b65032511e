"""Replay of survey history through the platform, in time linear in its length: the main job's core.

For a range of weeks, in order: predict with the champion of the time, check
drift, retrain when the retraining sensor says so, promote when the gate passes.

Runs, all on the given Dagster instance (the one `make demo` and `make ui` use), and from
`replay_main` runs of the code location workspace.yaml loads (stellar_app.location): the UI
lists them under the location and in its Overview timeline:
1. ingestion of the initial champion's training window and the whole range: ONE run;
2. the initial champion: train_and_promote at the week before the range, unless a
   champion as of that week exists already. A replay that starts at the survey's
   first week has no earlier week: the first champion trains on the opening weeks
   (the first ones whose training window holds `bootstrap_rows` rows) and the
   replay predicts from the week after; the timeline marks the weeks it trained on;
3. predict_and_check (batch_predictions + drift_report) in chunks (chunk_end), ONE
   run per chunk. After each, the retraining sensor itself
   (build_sensor_context against the real instance) reads the new drift reports
   in week order; each retraining it requests runs with the sensor's run key and
   tags, and `stellar/requested_by` (the daemon did not tick the sensor, so the run
   does not claim to be launched by it). A promotion at week W changes the champion from W+1
   on, so the next chunk starts at W+1: the rest of the chunk is predicted a
   second time, by the new champion. A chunk ends where a champion promoted at
   its first week could first be promoted over (the cool-down, and with the
   degradation trigger alone, the rows it must predict before it is tested), so
   no later promotion can fall before the end of those weeks: no week is
   predicted more than twice.
Empty weeks ride along inside the chunk runs: no run per empty week.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dagster as dg
import pandas as pd
from tqdm import tqdm

from stellar_assets.monitoring.sensors import (
    FLAGS_TAG,
    REASON_TAG,
    RETRAIN_WEEK_TAG,
    RUN_KEY_TAG,
    TRIGGER,
    TRIGGER_TAG,
    build_retraining_sensor,
    promotion_of_run,
)
from stellar_assets.settings import DEGRADATION_TRIGGER, load_settings
from stellar_app.location import CodeLocation
from stellar_app.runs import RANGE_END_TAG, RANGE_START_TAG, failure_text, materializations
from stellar_app.settings import AppSettings
from stellar_core.weeks import Week

REPLAY_TAG = "stellar/replay"
REQUESTED_BY_TAG = "stellar/requested_by"
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# A challenger blocked by the gate is a normal outcome: the replay prints the failed check in one line
# (the run's full log stays in the Dagster UI), not Dagster's stack trace.
SILENT_LOGS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

# Crosses the SDSS-II -> SEGUE change: galaxies give way to stars from May 2008.
DEFAULT_FIRST_WEEK = "2008-03-02"
DEFAULT_LAST_WEEK = "2008-12-28"
# Replay challengers are small: the replay must finish in minutes on 2 cores.
REPLAY_CHALLENGER = {"n_estimators": 80, "max_depth": 4, "learning_rate": 0.2, "latency_single_row_repeats": 50}
# Rows the first champion of a replay from the survey's first week needs in its window, when the code
# location's gate does not say: its out-of-time evaluation set and as many rows again to train on.
DEFAULT_BOOTSTRAP_ROWS = 600
FEATURES = dg.AssetKey("observation_features")
LOG_DEGRADATION_ONSETS = {"ops": {"drift_report": {"config": {"mlflow_runs": "degradation_onsets"}}}}


class ReplayError(RuntimeError):
    pass


@dataclass
class ReplayLog:
    runs: list[dict] = field(default_factory=list)
    weeks: dict[str, dict] = field(default_factory=dict)
    predicted: Counter = field(default_factory=Counter)  # week -> predict_and_check runs that predicted it
    retrainings: dict[str, dict] = field(default_factory=dict)
    sensor_notes: list[str] = field(default_factory=list)
    initial: dict = field(default_factory=dict)  # the first champion: version, training window


@dataclass(frozen=True)
class ReplayPlan:
    first_week: str
    last_week: str
    history_start: str  # first week ingested: the initial champion's window or the range
    initial_week: str | None  # where the initial champion trains; None: found after ingestion (bootstrap)
    chunk_weeks: int
    cooldown_weeks: int
    window_weeks: int

    @property
    def bootstrap(self) -> bool:
        return self.initial_week is None


def decision_line(week: str, flags: str | None, decision: str, version: str | None, summary: str,
                  width: int = 110) -> str:
    """The replay's one line for a retraining: the week, why, the decision and its reason, once.
    A champion_model summary already starts with the decision ("promoted v7: ...", "retained v3, ...")."""
    head = f"{decision} v{version}" if version else decision
    said = summary if summary.startswith(decision) else (f"{head}: {summary}" if summary else head)
    return f"{week}  retrained ({flags or 'requested'}): {said[:len(head) + 2 + width]}"


def _weeks(first: str, last: str) -> list[str]:
    return [w.key for w in Week.range(first, last)]


def plan_replay(first_week: str, last_week: str, window_weeks: int, cooldown_weeks: int) -> ReplayPlan:
    """Check the range against the observation weeks; where the initial champion trains and which
    weeks are ingested; the chunk size that keeps every week to at most two predictions."""
    from stellar_assets.partitions import observation_weeks

    keys = observation_weeks.get_partition_keys()
    for name, week in (("first_week", first_week), ("last_week", last_week)):
        if week not in keys:
            raise ReplayError(f"{name} {week} is not an observation week: weeks start on Sundays between "
                              f"{keys[0]} and {keys[-1]}")
    if last_week < first_week:
        raise ReplayError(f"last_week {last_week} is before first_week {first_week}")
    if window_weeks < 1 or cooldown_weeks < 0:
        raise ReplayError(f"the training window ({window_weeks}) must be >= 1 week and the cool-down "
                          f"({cooldown_weeks}) >= 0 weeks")
    # Two retrainings are at least max(cool-down, 1) weeks apart (one run key per week).
    chunk = max(cooldown_weeks, 1) + 1
    if first_week == keys[0]:
        if first_week == last_week:
            raise ReplayError(f"a replay from the survey's first week {first_week} needs later weeks to "
                              "predict: its first champion trains on the opening weeks")
        return ReplayPlan(first_week, last_week, first_week, None, chunk, cooldown_weeks, window_weeks)
    initial = (Week.of(first_week) - 1).key
    history_start = max(keys[0], (Week.of(initial) - (window_weeks - 1)).key)
    return ReplayPlan(first_week, last_week, history_start, initial, chunk, cooldown_weeks, window_weeks)


def feature_rows(instance: dg.DagsterInstance, weeks: list[str]) -> dict[str, int]:
    """Rows of each week's latest observation_features materialization (0: none), from the instance."""
    rows: dict[str, int] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=FEATURES, asset_partitions=weeks), limit=1000, cursor=cursor)
        for record in page.records:  # newest first: a week's first record is its latest
            materialization = record.asset_materialization
            if materialization.partition not in rows:
                value = materialization.metadata.get("rows")
                rows[materialization.partition] = int(value.value) if value is not None else 0
        if not page.has_more or len(rows) == len(weeks):
            break
        cursor = page.cursor
    return {week: rows.get(week, 0) for week in weeks}


def chunk_end(start: str, last: str, cooldown_chunk: int, rows: dict[str, int], evidence_rows: int | None) -> str:
    """The last week of the predict_and_check run that starts at `start`, such that no week is predicted more
    than twice. A promotion at W in [start, end] makes the weeks after W stale; the next run starts at W+1 and
    predicts them again. They are not predicted a third time if no promotion can fall before `end` in that
    run, i.e. if end <= W + cool-down (retrainings are at least the cool-down apart: `cooldown_chunk` = cool-down
    + 1 weeks) or, with `evidence_rows` (retraining only on degradation), if the weeks after W up to the one
    before `end` hold fewer than `evidence_rows` rows: the champion promoted at W is not tested before it has
    predicted that many (stellar_core.performance: not_enough_data). Both bounds are tightest at W = start."""
    end = Week.of(start) + (cooldown_chunk - 1)
    if evidence_rows is not None:
        seen, week = 0, Week.of(start) + 1
        while week.key <= last:
            seen += rows.get(week.key, 0)
            if seen >= evidence_rows:
                break  # a champion promoted at `start` could be found degraded here: end at this week
            week = week + 1
        end = max(end, week)
    return min(end.key, last)


def bootstrap_week(instance: dg.DagsterInstance, plan: ReplayPlan, min_rows: int) -> str:
    """The first week whose training window (within the replay) holds `min_rows` feature rows."""
    candidates = _weeks(plan.first_week, plan.last_week)[:-1]  # leave a week to predict
    rows = feature_rows(instance, candidates)
    counts = [rows[w] for w in candidates]
    for k, week in enumerate(candidates):
        if sum(counts[max(0, k - plan.window_weeks + 1): k + 1]) >= min_rows:
            return week
    raise ReplayError(
        f"no week from {plan.first_week} to {candidates[-1]} has {min_rows} rows in its {plan.window_weeks}-week "
        f"training window ({sum(counts)} rows in all): the first champion has nothing to train on; "
        "ingest the weeks first, or start later")


class _Replayer:
    """One replay's runs on one instance (see the module docstring)."""

    def __init__(self, instance, defs, plan: ReplayPlan, challenger: dict, say, progress: bool,
                 retrain_on: tuple[str, ...] | None = None, initial: dict | None = None,
                 location: CodeLocation | None = None):
        self.instance, self.defs, self.plan, self.say, self.location = instance, defs, plan, say, location
        self.train_config = {"ops": {"challenger_model": {"config": challenger}}}
        self.initial_config = {"ops": {"challenger_model": {"config": initial or challenger}}}
        self.log = ReplayLog()
        self.sensor = build_retraining_sensor(cooldown_weeks=plan.cooldown_weeks, triggers=retrain_on)
        registry = defs.resources.get("model_registry") if getattr(defs, "resources", None) else None
        if registry is None:
            raise ReplayError("the Definitions given to run_replay have no model_registry resource")
        self.registry, self.client = registry, registry.client()
        self.bar = tqdm(total=0, unit="week", desc="predict+drift", disable=not progress, leave=False)
        # Retraining only on the champion's degradation: a new champion cannot be found degraded before it has
        # predicted this many rows, which bounds where the next promotion can fall (chunk_end).
        triggers = retrain_on if retrain_on is not None else load_settings().retrain_on
        drift = defs.resources.get("drift_settings")
        self.evidence_rows = drift.degradation_min_rows if tuple(triggers) == (DEGRADATION_TRIGGER,) and drift else None
        self.furthest: str | None = None  # the latest week predicted so far

    def note(self, message: str) -> None:
        with tqdm.external_write_mode():
            self.say(message)

    def execute(self, job_name: str, tags: dict, partition_key: str | None = None, run_config: dict | None = None,
                what: str = ""):
        started = time.perf_counter()
        config = {**(SILENT_LOGS if job_name == "train_and_promote" else QUIET_LOGS), **(run_config or {})}
        tags = {REPLAY_TAG: "true", **tags}
        if self.location is not None:  # runs of the code location, as the UI shows them
            result = self.location.run(self.instance, job_name, config, tags, partition_key)
        else:  # Definitions built in this process (tests): runs without a code location
            result = self.defs.resolve_job_def(job_name).execute_in_process(
                instance=self.instance, run_config=config, raise_on_error=False, partition_key=partition_key,
                tags=tags)
        self.log.runs.append({"job": job_name, "run_id": result.run_id, "success": result.success,
                              "seconds": round(time.perf_counter() - started, 2), "what": what})
        return result

    def ingest(self, ingest: bool) -> None:
        first, last = self.plan.history_start, self.plan.last_week
        if not ingest:
            self.note(f"ingestion skipped: {first}..{last} must be ingested already")
            return
        result = self.execute("ingestion_job", {RANGE_START_TAG: first, RANGE_END_TAG: last}, what=f"{first}..{last}")
        if not result.success:
            raise ReplayError(f"ingestion failed: {failure_text(result)}")
        self.note(f"ingested {first}..{last} ({len(_weeks(first, last))} weeks) in one run "
                  f"({self.log.runs[-1]['seconds']:.0f} s)")

    def initial_champion(self, initial_week: str) -> None:
        """Train and promote the first champion at `initial_week`, unless one as of the week after exists."""
        from stellar_mlflow.registry import champion_as_of

        after = (Week.of(initial_week) + 1).key
        champion = champion_as_of(self.client, self.registry.model_name, after)
        if champion is None:
            result = self.execute("train_and_promote", {"stellar/step": "initial champion"},
                                  partition_key=initial_week, run_config=self.initial_config,
                                  what=f"initial champion at {initial_week}")
            champion = champion_as_of(self.client, self.registry.model_name, after)
            if not result.success or champion is None:
                raise ReplayError(f"the initial champion at {initial_week} was not promoted: {failure_text(result)}")
        self.log.initial = _training_window(champion, initial_week, self.plan.window_weeks)
        self.note(f"initial champion v{champion.version}, trained on {self.log.initial['first_week']}.."
                  f"{self.log.initial['last_week']}")

    def predict(self, start: str, end: str) -> None:
        # MLflow runs and plots where a person will look: the replay's last week, and where each stretch of
        # degraded weeks begins (the weeks after it are retrained on and, after a promotion, predicted again).
        reports = {} if end == self.plan.last_week else LOG_DEGRADATION_ONSETS
        result = self.execute("predict_and_check", {RANGE_START_TAG: start, RANGE_END_TAG: end},
                              run_config=reports, what=f"predict+drift {start}..{end}")
        if not result.success:
            raise ReplayError(f"predict_and_check {start}..{end} failed: {failure_text(result)}")
        for (asset, week), metadata in materializations(result).items():
            self.log.weeks.setdefault(week, {})[asset] = metadata
            if asset == "batch_predictions":
                self.log.predicted[week] += 1
        new = [w for w in _weeks(start, end) if self.furthest is None or w > self.furthest]
        self.furthest = max(end, self.furthest or end)
        self.bar.update(len(new))

    def decide(self, cursor: str | None) -> tuple[str | None, str | None]:
        """One sensor tick; run what it requests in week order until a promotion.
        Returns (the new cursor, the promotion week or None)."""
        context = dg.build_sensor_context(instance=self.instance, cursor=cursor, definitions=self.defs,
                                          sensor_name=self.sensor.name)
        tick = self.sensor(context)
        if not isinstance(tick, dg.SensorResult):
            return context.cursor, None
        if tick.skip_reason:
            self.log.sensor_notes.append(tick.skip_reason.skip_message)
        for request in sorted(tick.run_requests or [], key=lambda r: r.partition_key):
            if self.retrain(request) == "promoted":
                return tick.cursor or context.cursor, request.partition_key
        return tick.cursor or context.cursor, None

    def retrain(self, request: dg.RunRequest) -> str:
        week = request.partition_key
        # The sensor's own request (its run key and tags); not "launched by" the sensor: the daemon did not
        # tick it, the replay evaluated its rule (the sensor's page would say it never ran).
        tags = {**request.tags, RUN_KEY_TAG: request.run_key, REQUESTED_BY_TAG: f"{self.sensor.name}, evaluated by the replay"}
        result = self.execute("train_and_promote", tags, partition_key=week, run_config=self.train_config,
                              what=f"retrain at {week} ({request.tags.get(FLAGS_TAG)})")
        champion = materializations(result).get(("champion_model", week), {})
        decision = champion.get("decision") or ("blocked by the gate" if not result.success else "no decision")
        summary = champion.get("summary") or (failure_text(result) if not result.success else "")
        self.log.retrainings[week] = {"run_id": result.run_id, "decision": decision,
                                      "reason": request.tags.get(REASON_TAG), "summary": summary}
        version = champion.get("champion_version") if decision == "promoted" else None
        self.note(decision_line(week, request.tags.get(FLAGS_TAG), decision, version, summary))
        return decision

    def replay(self, start: str) -> None:
        """Chunks from `start` to the last week; after a promotion at W the next chunk starts at W+1."""
        last = self.plan.last_week
        self.bar.reset(total=len(_weeks(start, last)))
        rows = feature_rows(self.instance, _weeks(start, last)) if self.evidence_rows else {}
        # The sensor only reads drift reports made from here on.
        latest = self.instance.fetch_materializations(dg.AssetKey("drift_report"), limit=1)
        cursor = str(latest.records[0].storage_id) if latest.records else None
        while start <= last:
            end = chunk_end(start, last, self.plan.chunk_weeks, rows, self.evidence_rows)
            self.predict(start, end)
            cursor, promoted = self.decide(cursor)
            start = (Week.of(promoted if promoted else end) + 1).key
        self.bar.close()

    def earlier_retrainings(self) -> None:
        """A replay run again on the same instance: the sensor skips drift it already acted on (run keys);
        the timeline still shows those earlier retrainings and their outcome."""
        for run in self.instance.get_runs(filters=dg.RunsFilter(job_name="train_and_promote",
                                                                tags={TRIGGER_TAG: TRIGGER})):
            week = run.tags.get(RETRAIN_WEEK_TAG)
            if week and self.plan.first_week <= week <= self.plan.last_week and week not in self.log.retrainings:
                decision = (promotion_of_run(self.instance, run.run_id) or {}).get("decision") or (
                    "blocked by the gate" if run.status == dg.DagsterRunStatus.FAILURE else "no decision")
                self.log.retrainings[week] = {"run_id": run.run_id, "decision": f"{decision} (earlier run)",
                                              "reason": run.tags.get(REASON_TAG), "summary": ""}


def _training_window(champion, initial_week: str, window_weeks: int) -> dict:
    from stellar_mlflow.names import TAG_WINDOW_FIRST, TAG_WINDOW_LAST

    tags = champion.tags or {}
    last = tags.get(TAG_WINDOW_LAST) or initial_week
    first = tags.get(TAG_WINDOW_FIRST) or (Week.of(last) - (window_weeks - 1)).key
    return {"version": champion.version, "first_week": first, "last_week": last}


def _bootstrap_rows(defs: dg.Definitions) -> int:
    gate = (getattr(defs, "resources", None) or {}).get("promotion_gate")
    minimum = getattr(gate, "min_evaluation_rows", None)
    return 2 * int(minimum) if isinstance(minimum, int) else DEFAULT_BOOTSTRAP_ROWS


def run_replay(instance: dg.DagsterInstance, defs: dg.Definitions, first_week: str = DEFAULT_FIRST_WEEK,
               last_week: str = DEFAULT_LAST_WEEK, *, training_window_weeks: int | None = None,
               challenger_config: dict | None = None, cooldown_weeks: int | None = None,
               bootstrap_rows: int | None = None, retrain_on: tuple[str, ...] | None = None, ingest: bool = True,
               say: Callable[[str], None] = print, progress: bool = False,
               initial_config: dict | None = None, location: CodeLocation | None = None) -> pd.DataFrame:
    """Replay [first_week, last_week]; returns the per-week timeline (see module docstring).
    Prints one line per decision; `progress` shows a bar over the weeks on stderr. `bootstrap_rows`
    (a replay from the survey's first week): default twice the gate's minimum evaluation rows.
    `retrain_on`: the sensor's triggers; default the code location's (STELLAR_RETRAIN_ON).
    `initial_config`: the first champion's challenger config, default the retrainings' (`challenger_config`).
    `location`: the code location `defs` is loaded from; its runs are then runs of that location
    (stellar_app.location). None: `defs` was built in this process, its runs have no location."""
    from stellar_assets.training import DEFAULT_WINDOW_WEEKS

    settings = load_settings()
    window = training_window_weeks if training_window_weeks is not None else (
        settings.training_window_weeks or DEFAULT_WINDOW_WEEKS)
    cooldown = settings.retrain_cooldown_weeks if cooldown_weeks is None else cooldown_weeks
    plan = plan_replay(first_week, last_week, window, cooldown)
    challenger = {**REPLAY_CHALLENGER, **(challenger_config or {})}
    replayer = _Replayer(instance, defs, plan, challenger, say, progress, retrain_on,
                         {**challenger, **initial_config} if initial_config else None, location)
    replayer.ingest(ingest)
    initial_week = bootstrap_week(instance, plan, bootstrap_rows or _bootstrap_rows(defs)) if plan.bootstrap \
        else plan.initial_week
    replayer.initial_champion(initial_week)
    replayer.replay((Week.of(initial_week) + 1).key if plan.bootstrap else first_week)
    replayer.earlier_retrainings()
    timeline = build_timeline(_weeks(first_week, last_week), replayer.log)
    timeline.attrs.update(runs=replayer.log.runs, initial_champion=replayer.log.initial,
                          chunk_weeks=plan.chunk_weeks)
    return timeline


def build_timeline(weeks: list[str], log: ReplayLog) -> pd.DataFrame:
    """One row per week: what the champion of the time predicted, the drift report, the retraining;
    `initial_training` marks the weeks the first champion trained on, `times_predicted` the
    predict_and_check runs of this replay that predicted the week."""
    trained = (log.initial.get("first_week", ""), log.initial.get("last_week", ""))
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
            "initial_training": trained[0] <= week <= trained[1],
            "times_predicted": log.predicted.get(week, 0),
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


def run_summary(timeline: pd.DataFrame, first: str, last: str, elapsed: float) -> str:
    """Weeks, runs by job, and the cost per predicted week of the predict_and_check runs."""
    runs = timeline.attrs.get("runs", [])
    jobs = Counter(r["job"] for r in runs)
    predict_seconds = sum(r["seconds"] for r in runs if r["job"] == "predict_and_check")
    predictions = int(timeline["times_predicted"].sum())
    per_week = f", predict+drift {predict_seconds / predictions:.2f} s per week predicted" if predictions else ""
    return (f"\nReplay {first}..{last}: {len(timeline)} weeks in {elapsed:.0f} s, {len(runs)} Dagster runs "
            f"({', '.join(f'{n} {j}' for j, n in jobs.most_common())}); {predictions} week predictions "
            f"for {int((timeline['times_predicted'] > 0).sum())} weeks{per_week}")


def print_timeline(timeline: pd.DataFrame, say: Callable[[str], None] = print, max_rows: int = 80) -> None:
    """The weeks with predicted spectra or a retraining; beyond `max_rows` such weeks (a long replay),
    only the retraining weeks (timeline.csv holds every week)."""
    initial = timeline.attrs.get("initial_champion") or {}
    if initial:
        say(f"initial champion v{initial['version']} trained on {initial['first_week']}..{initial['last_week']}")
    shown = timeline[(timeline["rows"] > 0) | timeline["retrained"]]
    if len(shown) > max_rows:
        say(f"{len(shown)} weeks with spectra: only the {int(timeline['retrained'].sum())} retraining weeks "
            "shown (every week in timeline.csv)")
        shown = timeline[timeline["retrained"]]
    say(f"{'week':<11}{'rows':>5} {'model':>6} {'accuracy':>9}  {'drift':<16}{'flags':<40}{'retraining':<12}")
    for row in shown.itertuples():
        accuracy = "" if pd.isna(row.accuracy) else f"{row.accuracy:.3f}"
        say(f"{row.week:<11}{row.rows:>5} {('v' + str(row.model_version)) if row.model_version else '':>6} "
            f"{accuracy:>9}  {str(row.drift_status or ''):<16}{row.drift_flags:<40}{row.promotion:<12}")
    empty = int((timeline["rows"] == 0).sum())
    say(f"({empty} weeks without predicted spectra not shown: empty weeks, predicted and checked inside the "
        "same runs, and the first champion's training weeks)")


def replay_main(first_week: str | None = None, last_week: str | None = None, *, ingest: bool = True,
                say: Callable[[str], None] = print, settings: AppSettings | None = None,
                progress: bool = True) -> tuple[pd.DataFrame, Path, Path]:
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
    timeline = run_replay(instance, defs, first, last, ingest=ingest, say=say, progress=progress,
                          location=CodeLocation())
    say(run_summary(timeline, first, last, time.perf_counter() - started))
    print_timeline(timeline, say)
    csv_path, png_path = save_timeline(timeline, settings.home / "replay")
    say(f"Timeline saved: {csv_path} and {png_path}")
    return timeline, csv_path, png_path
