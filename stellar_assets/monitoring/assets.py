"""Weekly monitoring: batch predictions, drift report (with its checks), serving report.

    observation_features[W] -> batch_predictions[W] -> drift_report[W]  (check: drift, one per week, over
    observation_features[W-3..W], raw_observations[W-3..W] -^   data, prediction, performance, rejected rows;
                                                                  raw_observations: rows counted, not loaded)
    prediction server /metrics -> serving_report[W]

batch_predictions and drift_report run a whole range of weeks in one run
(BackfillPolicy.single_run), like ingestion: the replay predicts and checks
consecutive weeks in as few runs as possible.
"""


import base64
import io
import json
import time
from dataclasses import dataclass

import dagster as dg
import pandas as pd
from mlflow.tracking import MlflowClient
from pydantic import Field

from stellar_assets.checks import WeekCheck, percent, rounded, rounded_float, week_check_events, weekly_check_spec
from stellar_assets.monitoring.resources import PREDICTIONS_TABLE, DriftSettings, ServerUnreachable
from stellar_assets.monitoring.champions import Champions, Reference, predict_table
from stellar_assets.monitoring.evidence import ChampionRecords, champion_degradation
from stellar_assets.monitoring.serving_metrics import parse_metrics, week_figures
from stellar_assets.partitions import observation_weeks
from stellar_assets.resources.io_managers import ROW_COUNT_FIELD
from stellar_core.contract import CLASSES, class_counts
from stellar_core.drift import (
    DRIFT_FAMILIES,
    NOT_ENOUGH_DATA,
    DriftThresholds,
    build_drift_report,
    choose_window,
    summary_markdown,
)
from stellar_core.features import FEATURE_NAMES, LABEL
from stellar_core.plots import distribution_figure
from stellar_core.weeks import Week
from stellar_mlflow.names import (
    DRIFT_PLOT,
    DRIFT_REPORT_ARTIFACT,
    SERVING_REPORT_ARTIFACT,
    TAG_ASSET,
    TAG_CHAMPION_VERSION,
    TAG_DAGSTER_RUN,
    TAG_DRIFT_STATUS,
    TAG_WEEK,
    TAG_WINDOW_FIRST,
    TAG_WINDOW_LAST,
)
from stellar_mlflow.runs import ensure_experiment, log_report_run

MAX_TRAILING_WEEKS = 4  # the drift window mapping; DriftSettings.trailing_weeks may only lower it


def check_descriptions(t: DriftThresholds) -> dict[str, str]:
    """What each drift check tests, with the thresholds of `t` (the specs show the defaults)."""
    return {
        "data_drift": f"No feature's distribution moved beyond its test's threshold (drift: below "
        f"{t.large_sample_rows} rows Kolmogorov-Smirnov p < {t.ks_alpha} shared by all features (Bonferroni), "
        f"from {t.large_sample_rows} rows PSI >= {t.psi_threshold}).",
        "prediction_drift": f"Predicted class mix inside [{percent(t.class_share_low)}, {percent(t.class_share_high)}] "
        f"per class and close to the champion's reference mix (chi-square p >= {t.class_mix_alpha} or total "
        f"variation below {t.class_mix_min_distance}).",
        "performance_drift": f"Accuracy on the week's labels not below the champion's test accuracy by more than "
        f"{rounded(100 * t.accuracy_drop)} points (one-sided p < {t.performance_alpha}).",
        "rejected_rows": f"Share of rejected (missing or unphysical) rows not above the reference share by more "
        f"than {rounded(100 * t.rejected_rise)} points (one-sided p < {t.rejected_alpha}).",
    }


CHECK_DESCRIPTIONS = check_descriptions(DriftThresholds())


# ---------------------------------------------------------------- batch_predictions

@dg.asset(
    partitions_def=observation_weeks,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="monitoring",
    kinds={"pandas", "sql"},
    required_resource_keys={"model_registry", "predictions_db"},
    description="Every object of week W classified by the champion as of W (trained only on earlier weeks), "
    "with class probabilities and the model version; also upserted into the predictions table (a re-run "
    "replaces the week's rows).",
)
def batch_predictions(context: dg.AssetExecutionContext, observation_features: pd.DataFrame):
    keys = list(context.partition_keys)
    registry = context.resources.model_registry
    champions = Champions(registry.client(), registry.model_name)
    features = observation_features if len(observation_features) else pd.DataFrame(columns=["week"])
    per_week: dict[str, pd.DataFrame] = {}
    versions: dict[str, object] = {}
    for week in keys:
        rows = features.loc[features["week"] == week].reset_index(drop=True)
        version = champions.as_of(week)
        versions[week] = version
        proba, predicted = predict_table(champions.bundle(version), rows)
        frame = pd.DataFrame({
            "object_id": rows["object_id"].astype(str) if len(rows) else pd.Series([], dtype=str),
            "week": week,
            "mjd": rows["mjd"].astype("int64") if len(rows) else pd.Series([], dtype="int64"),
            "predicted_class": pd.Series(predicted, dtype=object),
            **{f"p_{c}": proba[:, k].astype(float) for k, c in enumerate(CLASSES)},
            "model_version": str(version.version),
            "label": rows[LABEL].astype(str) if LABEL in rows.columns and len(rows) else pd.Series([], dtype=object),
        })
        per_week[week] = frame
    everything = pd.concat(list(per_week.values()), ignore_index=True)
    stored = context.resources.predictions_db.replace_weeks(everything, keys, context.run_id,
                                                            run_tags=context.run.tags, log=context.log)
    context.log.info("%d predictions for %d week(s) stored in table %s (weeks replaced, not appended)",
                     stored, len(keys), PREDICTIONS_TABLE)
    for week, frame in per_week.items():
        version = versions[week]
        tags = version.tags or {}
        metadata = {}
        labelled = frame["label"].isin(CLASSES)
        if labelled.any():  # the week's own accuracy (the drift report's may span a trailing window)
            metadata["accuracy"] = dg.MetadataValue.float(
                float((frame.loc[labelled, "label"] == frame.loc[labelled, "predicted_class"]).mean()))
        context.add_asset_metadata({
            **metadata,
            "rows": dg.MetadataValue.int(len(frame)),
            "class_mix": dg.MetadataValue.json(class_counts(frame["predicted_class"])),
            "model_version": dg.MetadataValue.text(str(version.version)),
            "model_training_window": f"{tags.get(TAG_WINDOW_FIRST)}..{tags.get(TAG_WINDOW_LAST)}",
            "predictions_table": PREDICTIONS_TABLE,
        }, partition_key=week)
    return per_week if len(keys) > 1 else per_week[keys[0]]


# ---------------------------------------------------------------- drift_report

def _window_mapping() -> dg.TimeWindowPartitionMapping:
    return dg.TimeWindowPartitionMapping(start_offset=-(MAX_TRAILING_WEEKS - 1), end_offset=0,
                                         allow_nonexistent_upstream_partitions=True)


FAMILY_PARTS = {"prediction_drift": "prediction", "performance_drift": "performance", "rejected_rows": "rejected"}


DRIFT_CHECK = "drift"
DRIFT_CHECK_DESCRIPTION = (
    "The week's four drift tests, diagnostics (WARN; the retraining trigger is the champion's degradation): "
    + " ".join(f"**{name}**: {text}" for name, text in CHECK_DESCRIPTIONS.items())
    + " A failed check names the tests that flagged. One check for the four: each evaluation is an event "
    "in the instance's log, the main cost of a week in a backfill over years.")


def _check_results(reports: dict[str, dict]) -> list[WeekCheck]:
    """One verdict per week: which tests flagged, which features, by how much, which threshold."""
    return [_week_check(week, report) for week, report in reports.items()]


def _week_check(week: str, report: dict) -> WeekCheck:
    window = f"weeks {report['window'][0]}..{report['window'][-1]}" if report.get("window") else "no weeks"
    flagged = [family for family in DRIFT_FAMILIES if report["flags"].get(family)]
    metadata = {"status": report["status"], "weeks_tested": dg.MetadataValue.json(report.get("window", [])),
                "flagged": dg.MetadataValue.json(flagged)}
    if report["status"] == NOT_ENOUGH_DATA:
        description = f"not enough data in {week} ({window}): nothing tested, no alarm"
    else:
        lines = {family: _family_detail(family, report) for family in DRIFT_FAMILIES}
        metadata["details"] = dg.MetadataValue.md("\n".join(
            f"- **{family}** ({'flagged' if family in flagged else 'passed'}): {detail}"
            for family, detail in lines.items()))
        description = ("; ".join(f"{family.replace('_', ' ')}: {lines[family]}" for family in flagged)
                       + f" in {week} ({window})") if flagged else f"no drift in {week} ({window})"
    return WeekCheck(DRIFT_CHECK, week, passed=not flagged, description=description, metadata=metadata,
                     severity=dg.AssetCheckSeverity.WARN)


def _family_detail(family: str, report: dict) -> str:
    if family == "data_drift":
        drifted = [f for f in report.get("features", []) if f["drifted"]]
        return ", ".join(
            f"{f['feature']} ({f['test']} {rounded(f['statistic'])}, {f['threshold']}; "
            f"{rounded(f['wasserstein_sd'])} sd)" for f in drifted) or "no feature moved beyond its threshold"
    part = report.get(FAMILY_PARTS[family], {})
    return f"{part.get('reason')} (threshold: {part.get('threshold')})"


MLFLOW_RUN_CHOICES = ("latest_and_degraded", "degraded", "degradation_onsets", "every_week")


class DriftReportConfig(dg.Config):
    mlflow_runs: str = Field(
        default="latest_and_degraded", description="which weeks of the run get an MLflow run (report JSON, "
        "distribution plot, shown inline here): 'latest_and_degraded' (the run's latest week, i.e. a weekly "
        "run's only week, and weeks where the champion degraded), 'degraded', 'degradation_onsets' (the first "
        "degraded week of each stretch of degraded weeks in the run: what the replay logs, since the weeks after "
        "an onset are retrained on and predicted again), or 'every_week' (about 1.5 s a week). A backfill over "
        "years would otherwise spend most of its time on plots nobody opens; every week's report stays the "
        "asset's stored value, summarised in its metadata")

    def wants_mlflow_run(self, latest: bool, degraded: bool, degraded_before: bool = False) -> bool:
        """`degraded_before`: the run's previous week found the champion degraded too."""
        if self.mlflow_runs not in MLFLOW_RUN_CHOICES:
            raise dg.Failure(description=f"drift_report config mlflow_runs={self.mlflow_runs!r}: expected one of "
                             f"{', '.join(MLFLOW_RUN_CHOICES)}")
        if self.mlflow_runs == "degradation_onsets":
            return degraded and not degraded_before
        return self.mlflow_runs == "every_week" or degraded or (latest and self.mlflow_runs == "latest_and_degraded")


@dg.asset(
    partitions_def=observation_weeks,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="monitoring",
    kinds={"scipy", "mlflow"},
    ins={
        "batch_predictions": dg.AssetIn(),
        "observation_features": dg.AssetIn(partition_mapping=_window_mapping(),
                                           metadata={"allow_missing_partitions": True}),
    },
    # Only the rows each week received count (rejected rows): read from the stored partitions' footers
    # rather than loading every raw row of the windows.
    deps=[dg.AssetDep("raw_observations", partition_mapping=_window_mapping())],
    required_resource_keys={"model_registry", "drift_settings", "io_manager", "predictions_db"},
    # A re-run never replaces a report with one on fewer of the week's own rows. (Not the rows
    # tested: a week that grows past min_rows is tested alone, on fewer rows, and rightly so.)
    metadata={ROW_COUNT_FIELD: "rows_week"},
    check_specs=[weekly_check_spec("drift_report", DRIFT_CHECK, DRIFT_CHECK_DESCRIPTION, blocking=False)],
    description="Week W (or W and up to 3 earlier weeks when W alone has too few rows) against the champion's "
    "training data: per-feature data drift, prediction drift, performance drift and rejected rows. JSON report "
    "and plots in MLflow (experiment stellar-monitoring), summary here.",
)
def drift_report(context: dg.AssetExecutionContext, config: DriftReportConfig, batch_predictions: pd.DataFrame,
                 observation_features: pd.DataFrame):
    keys = list(context.partition_keys)
    run = _DriftRun.start(context)
    weeks = _WeekData(keys, observation_features, batch_predictions, context.resources.io_manager)
    records = ChampionRecords(context.resources.predictions_db, keys[-1])
    reports: dict[str, dict] = {}
    degraded_before = False
    for week in keys:
        version = run.champions.as_of(week)
        weeks.require_predictions_of(week, version)
        report, current, reference = _week_report(run, weeks, week, version)
        metadata = _report_metadata(report, current, version)
        evidence = champion_degradation(run.champions, records, version, week, run.settings)
        metadata.update(_degradation_metadata(report, evidence))
        degraded = evidence is not None and evidence.degraded
        if config.wants_mlflow_run(week == keys[-1], degraded, degraded_before):
            metadata.update(_log_week(run, week, version, report, current, reference))
        else:
            metadata["mlflow_run"] = (f"none: this run logs MLflow runs and plots for {config.mlflow_runs} weeks "
                                      "(run config mlflow_runs); this report is the asset's stored value")
        context.add_asset_metadata(metadata, partition_key=week)
        degraded_before = degraded
        reports[week] = json.loads(json.dumps(report, default=_json_default))
    yield dg.Output(reports if len(keys) > 1 else reports[keys[0]])
    yield from week_check_events(context, _check_results(reports), materialized=True)  # each week's new one


@dataclass
class _DriftRun:
    """What every week of one drift_report run shares: settings, registry, champions, experiment."""

    context: dg.AssetExecutionContext
    settings: DriftSettings
    thresholds: DriftThresholds
    client: MlflowClient
    champions: Champions
    experiment_id: str

    @classmethod
    def start(cls, context: dg.AssetExecutionContext) -> "_DriftRun":
        settings = context.resources.drift_settings
        thresholds = settings.thresholds()
        if thresholds.trailing_weeks > MAX_TRAILING_WEEKS:
            raise dg.Failure(description=f"drift_settings.trailing_weeks={thresholds.trailing_weeks} exceeds the "
                             f"{MAX_TRAILING_WEEKS} weeks the asset loads")
        registry = context.resources.model_registry
        client = registry.client()
        return cls(context, settings, thresholds, client, Champions(client, registry.model_name),
                   ensure_experiment(client, settings.experiment_name, settings.artifact_root))


class _WeekData:
    """The run's inputs, by week: features of the trailing windows, the predictions, raw rows received."""

    def __init__(self, keys: list[str], features: pd.DataFrame, predictions: pd.DataFrame, store):
        self.keys = set(keys)  # the weeks of the batch_predictions input (an empty week has no rows in it)
        self.features = features if len(features) else pd.DataFrame(columns=["week", *FEATURE_NAMES])
        self.predictions = predictions if len(predictions) else pd.DataFrame(
            columns=["object_id", "week", "model_version", "predicted_class"])
        self.rows = self.features.groupby("week").size().to_dict()
        self.versions = {week: versions.unique() for week, versions
                         in self.predictions.groupby("week")["model_version"]}
        self.store = store
        self._raw_rows: dict[str, int] = {}

    def require_predictions_of(self, week: str, version) -> None:
        stored = self.versions.get(week, [])
        if len(stored) and str(stored[0]) != str(version.version):
            raise dg.Failure(description=f"batch_predictions[{week}] came from v{stored[0]} but the champion as of "
                             f"{week} is v{version.version}: re-materialize batch_predictions first")

    def window(self, week: str, thresholds: DriftThresholds) -> list[str]:
        """W alone, or W and earlier weeks until enough rows (stellar_core.drift.choose_window)."""
        first = observation_weeks.get_first_partition_key()
        candidates = [key for back in range(thresholds.trailing_weeks - 1, -1, -1)
                      if (key := (Week.of(week) - back).key) >= first]
        return choose_window({k: int(self.rows.get(k, 0)) for k in candidates}, week, thresholds)

    def raw_rows(self, window: list[str]) -> int:
        """Raw rows received in the window's weeks (a raw partition holds the rows whose MJD falls in its week)."""
        for week in window:
            if week not in self._raw_rows:
                self._raw_rows[week] = self.store.stored_rows(dg.AssetKey("raw_observations"), week) or 0
        return sum(self._raw_rows[week] for week in window)

    def stored_predictions(self, window: list[str], version, current: pd.DataFrame) -> list[str] | None:
        """The classes batch_predictions stored for `current` (the window's rows, in order) when this run's
        input holds every one of them from `version`; None otherwise (the caller predicts them)."""
        if not self.keys.issuperset(window):
            return None
        stored = self.predictions.loc[self.predictions["week"].isin(window)]
        if len(stored) != len(current) or set(stored["model_version"].astype(str)) != {str(version.version)}:
            return None
        if not (stored["object_id"].astype(str).to_numpy() == current["object_id"].astype(str).to_numpy()).all():
            return None
        return list(stored["predicted_class"])


def _week_report(run: _DriftRun, weeks: _WeekData, week: str, version) -> tuple[dict, pd.DataFrame, Reference]:
    window = weeks.window(week, run.thresholds)
    current = weeks.features.loc[weeks.features["week"].isin(window)].reset_index(drop=True)
    raw_in = weeks.raw_rows(window)
    reference = run.champions.reference(version, run.context.resources.io_manager)
    current_predicted = weeks.stored_predictions(window, version, current)
    if current_predicted is None:  # a window reaching before this run's weeks: its champion predicts it
        _, current_predicted = predict_table(run.champions.bundle(version), current)
    report = build_drift_report(
        reference=reference.sample, current=current, features=FEATURE_NAMES,
        current_predictions=current_predicted, reference_predictions=reference.predicted,
        labels=list(current[LABEL]) if LABEL in current.columns else None,
        champion_accuracy=reference.accuracy, rows_in=raw_in, rows_rejected=max(0, raw_in - len(current)),
        reference_rows_in=reference.rows_in, reference_rows_rejected=reference.rejected, thresholds=run.thresholds)
    rows_week = int(weeks.rows.get(week, 0))
    report.update(week=week, window=window, rows_week=rows_week, champion_version=str(version.version),
                  reference_window=list(reference.window), window_note=(
                      f"week {week} alone" if window == [week] else
                      f"{week} had {rows_week} rows: tested with {len(window) - 1} earlier week(s)"))
    return report, current, reference


def _title(report: dict) -> str:
    first, last = report["reference_window"]
    return f"drift {report['week']} vs champion v{report['champion_version']} (trained {first}..{last})"


def _report_metadata(report: dict, current: pd.DataFrame, version) -> dict:
    metadata = {
        "status": report["status"],
        "drift_detected": dg.MetadataValue.bool(report["drift_detected"]),
        "drift_flags": dg.MetadataValue.json(report["flags"]),
        "failed_checks": dg.MetadataValue.json([k for k, v in report["flags"].items() if v]),
        "drifted_features": dg.MetadataValue.json(report.get("drifted_features", [])),
        "reason": report["reason"],
        "weeks_tested": dg.MetadataValue.json(report["window"]),
        "window_note": report["window_note"],
        "rows_tested": dg.MetadataValue.int(len(current)),
        "champion_version": dg.MetadataValue.text(str(version.version)),
        "summary": dg.MetadataValue.md(summary_markdown(report, _title(report))),
    }
    accuracy = report.get("performance", {}).get("accuracy")
    if accuracy is not None:
        metadata["accuracy"] = rounded_float(accuracy)  # the JSON keeps every digit
    return metadata


def _log_week(run: _DriftRun, week: str, version, report: dict, current: pd.DataFrame,
              reference: Reference) -> dict:
    """The week's MLflow run (report JSON, plot) and the metadata that shows and links them."""
    if not len(current):
        return {"note": "no rows in the window: nothing to test or log"}
    title = _title(report)
    png = _png(distribution_figure(reference.features, current, report, title)) \
        if run.settings.plots and report["features"] else None
    accuracy = report.get("performance", {}).get("accuracy")
    run_id, artifact_uri = log_report_run(
        run.client, run.experiment_id, f"drift {week}",
        tags={TAG_WEEK: week, TAG_ASSET: "drift_report", TAG_CHAMPION_VERSION: str(version.version),
              TAG_DAGSTER_RUN: run.context.run_id, TAG_DRIFT_STATUS: report["status"]},
        metrics={"drift_detected": float(report["drift_detected"]), "rows_tested": float(len(current)),
                 "features_drifted": float(len(report.get("drifted_features", []))),
                 **({"accuracy": float(accuracy)} if accuracy is not None else {})},
        documents={DRIFT_REPORT_ARTIFACT: json.loads(json.dumps(report, default=_json_default))},
        images={DRIFT_PLOT: png} if png else {})
    report["mlflow_run_id"] = run_id
    run_url = run.context.resources.model_registry.run_url(run.experiment_id, run_id)
    metadata = {"mlflow_run": dg.MetadataValue.url(run_url),
                "report_json": dg.MetadataValue.text(f"{artifact_uri}/{DRIFT_REPORT_ARTIFACT}")}
    if png:
        # Inline as a data URI: the Dagster UI's markdown shows it (a file:// path it cannot).
        inline = f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"
        metadata["distribution_plot"] = dg.MetadataValue.md(f"{inline}\n\n[{DRIFT_PLOT} in MLflow]({run_url})")
        metadata["distribution_plot_uri"] = dg.MetadataValue.text(f"{artifact_uri}/{DRIFT_PLOT}")
    return metadata


def _degradation_metadata(report: dict, evidence) -> dict:
    """The retraining trigger's evidence (the sensor reads `champion_degraded`); also kept in the report."""
    if evidence is None:
        report["degradation"] = None
        return {"champion_degraded": dg.MetadataValue.bool(False), "degradation_status": NOT_ENOUGH_DATA,
                "degradation_summary": "the champion's run has no out-of-time accuracy to compare with"}
    report["degradation"] = evidence.metadata()
    return {
        "champion_degraded": dg.MetadataValue.bool(evidence.degraded),
        "degradation_status": evidence.status,
        "degradation_summary": evidence.summary,
        "degradation": dg.MetadataValue.json(evidence.metadata()),
    }


def _png(figure) -> bytes:
    """The figure as PNG bytes, drawn once for both the Dagster UI and MLflow; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72)
    plt.close(figure)
    return buffer.getvalue()


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


# ---------------------------------------------------------------- serving_report

@dg.asset(
    partitions_def=observation_weeks,
    backfill_policy=dg.BackfillPolicy.single_run(),  # same policy as its job mates; see below for ranges
    group_name="monitoring",
    kinds={"prometheus", "mlflow"},
    required_resource_keys={"prediction_server", "predictions_db", "model_registry", "drift_settings"},
    description="The prediction server's figures for the week (requests, error rate, latency percentiles, model "
    "versions served), from its Prometheus endpoint; counters are differenced against the previous week's "
    "snapshot. 'server not reachable' is a reported state. In a run over several weeks only the last week "
    "is measured (a scrape cannot be split by past weeks); the others say so.",
)
def serving_report(context: dg.AssetExecutionContext):
    keys = list(context.partition_keys)
    reports = {week: {"week": week, "status": "not_measured",
                      "reason": f"scraped once for {keys[-1]}: past weeks cannot be measured afterwards"}
               for week in keys[:-1]}
    for week in keys[:-1]:
        context.add_asset_metadata({"status": "not_measured", "reason": reports[week]["reason"]}, partition_key=week)
    report, metadata = _serving_week(context, keys[-1])
    reports[keys[-1]] = report
    context.add_asset_metadata(metadata, partition_key=keys[-1])
    return reports if len(keys) > 1 else report


def _serving_week(context, week: str) -> tuple[dict, dict]:
    server = context.resources.prediction_server
    database = context.resources.predictions_db
    try:
        text = server.metrics_text()
    except ServerUnreachable as exc:
        report = {"week": week, "status": "server_not_reachable", "reason": str(exc), "metrics_url": server.metrics_url}
        context.log.warning(str(exc))
        return report, {"status": "server_not_reachable", "reason": str(exc),
                        "summary": dg.MetadataValue.md(f"**server not reachable**: {exc}")}
    snapshot = parse_metrics(text)
    taken_at = time.time()
    previous = database.previous_snapshot(week)
    figures = week_figures(snapshot, json.loads(previous) if previous else None)
    database.save_snapshot(week, taken_at, json.dumps(snapshot))
    report = {"week": week, "status": "ok", "metrics_url": server.metrics_url, "taken_at": taken_at, **figures}
    registry = context.resources.model_registry
    client = registry.client()
    settings = context.resources.drift_settings
    experiment_id = ensure_experiment(client, settings.experiment_name, settings.artifact_root)
    metrics = {k: figures[k] for k in ("requests", "errors", "error_rate", "latency_p50_ms", "latency_p95_ms",
                                       "latency_p99_ms", "objects_classified") if figures.get(k) is not None}
    run_id, artifact_uri = log_report_run(
        client, experiment_id, f"serving {week}",
        tags={TAG_WEEK: week, TAG_ASSET: "serving_report", TAG_DAGSTER_RUN: context.run_id},
        metrics=metrics, documents={SERVING_REPORT_ARTIFACT: report})
    rate = "n/a" if figures["error_rate"] is None else f"{figures['error_rate']:.2%}"
    lines = [f"**{figures['requests']} requests**, error rate {rate}",
             f"latency p50/p95/p99: {figures['latency_p50_ms']} / {figures['latency_p95_ms']} / "
             f"{figures['latency_p99_ms']} ms",
             f"model versions served: {', '.join(figures['model_versions']) or 'none'}",
             f"counting: {figures['counting']}"]
    return report, {
        "status": "ok", "mlflow_run": dg.MetadataValue.url(registry.run_url(experiment_id, run_id)),
        "report_json": f"{artifact_uri}/serving/serving_report.json",
        **{k: dg.MetadataValue.float(float(v)) for k, v in metrics.items()},
        "model_versions": dg.MetadataValue.json(figures["model_versions"]),
        "summary": dg.MetadataValue.md("\n\n".join(lines)),
    }
