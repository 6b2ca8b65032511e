"""Weekly monitoring: batch predictions, drift report (with its checks), serving report.

    observation_features[W] -> batch_predictions[W] -> drift_report[W]  (checks: data_drift, prediction_drift,
    observation_features[W-3..W], raw_observations[W-3..W] -^             performance_drift, rejected_rows)
    prediction server /metrics -> serving_report[W]

batch_predictions and drift_report run a whole range of weeks in one run
(BackfillPolicy.single_run), like ingestion: the replay predicts and checks
consecutive weeks in as few runs as possible.
"""


import base64
import io
import json
import tempfile
import time

import dagster as dg
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from stellar_assets.checks import WeekCheck, percent, rounded, week_check_events, weekly_check_spec
from stellar_assets.monitoring.resources import PREDICTIONS_TABLE, ServerUnreachable
from stellar_assets.monitoring.serving_metrics import parse_metrics, week_figures
from stellar_assets.partitions import observation_weeks
from stellar_assets.resources.io_managers import ROW_COUNT_FIELD
from stellar_core.contract import CLASSES
from stellar_core.drift import (
    DRIFT_FAMILIES,
    NOT_ENOUGH_DATA,
    DriftThresholds,
    build_drift_report,
    choose_window,
    summary_markdown,
)
from stellar_core.features import FEATURE_NAMES, LABEL, feature_matrix
from stellar_core.model_bundle import ModelBundle
from stellar_core.plots import distribution_figure
from stellar_core.weeks import Week, week_keys_for_mjds
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
from stellar_mlflow.registry import champion_as_of, load_bundle
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


# ---------------------------------------------------------------- champions

class Champions:
    """Champion versions, bundles, test accuracy and reference data, loaded once per run."""

    def __init__(self, client: MlflowClient, model_name: str):
        self.client, self.model_name = client, model_name
        self._bundles: dict[str, ModelBundle] = {}
        self._references: dict[str, dict] = {}

    def as_of(self, week: str):
        version = champion_as_of(self.client, self.model_name, week)
        if version is None:
            raise dg.Failure(description=(
                f"no champion as of {week}: no promoted version of {self.model_name} trained only on weeks "
                f"before {week}. Run train_and_promote for an earlier week first."))
        last = (version.tags or {}).get(TAG_WINDOW_LAST, "")
        if not last or last >= week:  # no peeking: a model that saw W never predicts W
            raise dg.Failure(description=f"v{version.version} trained through {last!r}, not before {week}")
        return version

    def bundle(self, version) -> ModelBundle:
        key = str(version.version)
        if key not in self._bundles:
            with tempfile.TemporaryDirectory(prefix="stellar-monitoring-") as tmp:
                self._bundles[key] = load_bundle(self.client, version, tmp)
        return self._bundles[key]

    def test_accuracy(self, version) -> float | None:
        return self.client.get_run(version.run_id).data.metrics.get("accuracy")


def predict_table(bundle: ModelBundle, table: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    if not len(table):
        return np.empty((0, len(CLASSES)), dtype=np.float32), []
    proba = bundle.predict_proba_features(feature_matrix(table))
    return proba, [CLASSES[k] for k in proba.argmax(axis=1)]


def load_partitions(io_manager, asset: str, first: str, last: str) -> pd.DataFrame:
    """Stored partitions first..last of `asset` as one DataFrame (weeks never stored are skipped)."""
    context = dg.build_input_context(
        asset_key=dg.AssetKey(asset), asset_partitions_def=observation_weeks,
        asset_partition_key_range=dg.PartitionKeyRange(first, last),
        definition_metadata={"allow_missing_partitions": True},
    )
    value = io_manager.load_input(context)
    return value if isinstance(value, pd.DataFrame) else pd.DataFrame()


def _weeks_of_raw(raw: pd.DataFrame) -> pd.Series:
    if raw.empty or "MJD" not in raw.columns:
        return pd.Series([], dtype=str, index=raw.index)
    return pd.Series(week_keys_for_mjds(raw["MJD"].to_numpy()), index=raw.index)


def _mix(classes) -> dict[str, int]:
    counts = pd.Series(list(classes), dtype=object).value_counts()
    return {c: int(counts.get(c, 0)) for c in CLASSES}


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
            "class_mix": dg.MetadataValue.json(_mix(frame["predicted_class"])),
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


def _check_results(reports: dict[str, dict]) -> list[WeekCheck]:
    """One verdict per family and week: which features, by how much, which threshold (warnings only)."""
    return [_week_check(family, week, report) for week, report in reports.items() for family in DRIFT_FAMILIES]


def _week_check(family: str, week: str, report: dict) -> WeekCheck:
    words = family.replace("_", " ")
    window = f"weeks {report['window'][0]}..{report['window'][-1]}" if report.get("window") else "no weeks"
    flagged = bool(report["flags"].get(family))
    metadata = {"status": report["status"], "weeks_tested": dg.MetadataValue.json(report.get("window", []))}
    if report["status"] == NOT_ENOUGH_DATA:
        description = f"not enough data in {week} ({window}): nothing tested, no alarm"
    else:
        detail = _family_detail(family, report)
        metadata["details"] = dg.MetadataValue.md(detail)
        description = f"{words} in {week} ({window}): {detail}" if flagged else f"no {words} in {week} ({window})"
    return WeekCheck(family, week, passed=not flagged, description=description, metadata=metadata,
                     severity=dg.AssetCheckSeverity.WARN)


def _family_detail(family: str, report: dict) -> str:
    if family == "data_drift":
        drifted = [f for f in report.get("features", []) if f["drifted"]]
        return ", ".join(
            f"{f['feature']} ({f['test']} {rounded(f['statistic'])}, {f['threshold']}; "
            f"{rounded(f['wasserstein_sd'])} sd)" for f in drifted) or "no feature moved beyond its threshold"
    part = report.get(FAMILY_PARTS[family], {})
    return f"{part.get('reason')} (threshold: {part.get('threshold')})"


@dg.asset(
    partitions_def=observation_weeks,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="monitoring",
    kinds={"scipy", "mlflow"},
    ins={
        "batch_predictions": dg.AssetIn(),
        "observation_features": dg.AssetIn(partition_mapping=_window_mapping(),
                                           metadata={"allow_missing_partitions": True}),
        "raw_observations": dg.AssetIn(partition_mapping=_window_mapping(),
                                       metadata={"allow_missing_partitions": True}),
    },
    required_resource_keys={"model_registry", "drift_settings", "io_manager"},
    # A re-run never replaces a report with one on fewer of the week's own rows. (Not the rows
    # tested: a week that grows past min_rows is tested alone, on fewer rows, and rightly so.)
    metadata={ROW_COUNT_FIELD: "rows_week"},
    check_specs=[weekly_check_spec("drift_report", name, text, blocking=False)
                 for name, text in CHECK_DESCRIPTIONS.items()],
    description="Week W (or W and up to 3 earlier weeks when W alone has too few rows) against the champion's "
    "training data: per-feature data drift, prediction drift, performance drift and rejected rows. JSON report "
    "and plots in MLflow (experiment stellar-monitoring), summary here.",
)
def drift_report(context: dg.AssetExecutionContext, batch_predictions: pd.DataFrame,
                 observation_features: pd.DataFrame, raw_observations: pd.DataFrame):
    keys = list(context.partition_keys)
    settings = context.resources.drift_settings
    thresholds = settings.thresholds()
    if thresholds.trailing_weeks > MAX_TRAILING_WEEKS:
        raise dg.Failure(description=f"drift_settings.trailing_weeks={thresholds.trailing_weeks} exceeds the "
                         f"{MAX_TRAILING_WEEKS} weeks the asset loads")
    registry = context.resources.model_registry
    client = registry.client()
    champions = Champions(client, registry.model_name)
    experiment_id = ensure_experiment(client, settings.experiment_name, settings.artifact_root)

    features = observation_features if len(observation_features) else pd.DataFrame(columns=["week", *FEATURE_NAMES])
    raw_weeks = _weeks_of_raw(raw_observations)
    predictions = batch_predictions if len(batch_predictions) else pd.DataFrame(columns=["week", "model_version"])
    week_rows = features.groupby("week").size().to_dict()

    reports: dict[str, dict] = {}
    for week in keys:
        stored = predictions.loc[predictions["week"] == week, "model_version"].unique()
        version = champions.as_of(week)
        if len(stored) and str(stored[0]) != str(version.version):
            raise dg.Failure(description=f"batch_predictions[{week}] came from v{stored[0]} but the champion as of "
                             f"{week} is v{version.version}: re-materialize batch_predictions first")
        candidates = [k for k in observation_weeks.get_partition_keys_in_range(
            dg.PartitionKeyRange(_weeks_back(week, thresholds.trailing_weeks - 1), week))]
        window = choose_window({k: int(week_rows.get(k, 0)) for k in candidates}, week, thresholds)
        current = features.loc[features["week"].isin(window)].reset_index(drop=True)
        raw_in = int(raw_weeks.isin(window).sum())
        reference_key = str(version.version)
        if reference_key not in champions._references:
            first, last = (version.tags or {}).get(TAG_WINDOW_FIRST), version.tags[TAG_WINDOW_LAST]
            io_manager = context.resources.io_manager
            ref_features = load_partitions(io_manager, "observation_features", first, last)
            ref_raw = load_partitions(io_manager, "raw_observations", first, last)
            if ref_features.empty:
                raise dg.Failure(description=f"no stored observation_features for v{version.version}'s training "
                                 f"window {first}..{last}: ingest those weeks first")
            _, ref_predicted = predict_table(champions.bundle(version), ref_features)
            champions._references[reference_key] = {
                "features": ref_features, "predicted": ref_predicted, "rows_in": len(ref_raw),
                "rejected": max(0, len(ref_raw) - len(ref_features)), "window": [first, last],
                "accuracy": champions.test_accuracy(version)}
        reference = champions._references[reference_key]
        _, current_predicted = predict_table(champions.bundle(version), current)
        report = build_drift_report(
            reference=reference["features"], current=current, features=FEATURE_NAMES,
            current_predictions=current_predicted, reference_predictions=reference["predicted"],
            labels=list(current[LABEL]) if LABEL in current.columns else None,
            champion_accuracy=reference["accuracy"], rows_in=raw_in,
            rows_rejected=max(0, raw_in - len(current)), reference_rows_in=reference["rows_in"],
            reference_rows_rejected=reference["rejected"], thresholds=thresholds)
        report.update(week=week, window=window, rows_week=int(week_rows.get(week, 0)), window_note=(
            f"week {week} alone" if window == [week] else
            f"{week} had {int(week_rows.get(week, 0))} rows: tested with {len(window) - 1} earlier week(s)"),
            champion_version=str(version.version), reference_window=reference["window"])
        title = f"drift {week} vs champion v{version.version} (trained {reference['window'][0]}..{reference['window'][1]})"
        summary = summary_markdown(report, title)
        metadata = {
            "status": report["status"],
            "drift_detected": dg.MetadataValue.bool(report["drift_detected"]),
            "drift_flags": dg.MetadataValue.json(report["flags"]),
            "failed_checks": dg.MetadataValue.json([k for k, v in report["flags"].items() if v]),
            "drifted_features": dg.MetadataValue.json(report.get("drifted_features", [])),
            "reason": report["reason"],
            "weeks_tested": dg.MetadataValue.json(window),
            "window_note": report["window_note"],
            "rows_tested": dg.MetadataValue.int(len(current)),
            "champion_version": dg.MetadataValue.text(str(version.version)),
            "summary": dg.MetadataValue.md(summary),
        }
        accuracy = report.get("performance", {}).get("accuracy")
        if accuracy is not None:
            metadata["accuracy"] = dg.MetadataValue.float(rounded(float(accuracy)))  # the JSON keeps every digit
        if len(current):
            figures = {DRIFT_PLOT: distribution_figure(reference["features"], current, report, title)} \
                if settings.plots and report["features"] else {}
            plot = _plot_markdown(figures[DRIFT_PLOT], title) if figures else ""  # before MLflow closes the figure
            run_id, artifact_uri = log_report_run(
                client, experiment_id, f"drift {week}",
                tags={TAG_WEEK: week, TAG_ASSET: "drift_report", TAG_CHAMPION_VERSION: str(version.version),
                      TAG_DAGSTER_RUN: context.run_id, TAG_DRIFT_STATUS: report["status"]},
                metrics={"drift_detected": float(report["drift_detected"]), "rows_tested": float(len(current)),
                         "features_drifted": float(len(report.get("drifted_features", []))),
                         **({"accuracy": float(accuracy)} if accuracy is not None else {})},
                documents={DRIFT_REPORT_ARTIFACT: json.loads(json.dumps(report, default=_json_default))},
                figures=figures)
            metadata["mlflow_run"] = dg.MetadataValue.url(registry.run_url(experiment_id, run_id))
            metadata["report_json"] = dg.MetadataValue.text(f"{artifact_uri}/{DRIFT_REPORT_ARTIFACT}")
            if figures:
                run_url = registry.run_url(experiment_id, run_id)
                metadata["distribution_plot"] = dg.MetadataValue.md(f"{plot}\n\n[{DRIFT_PLOT} in MLflow]({run_url})")
                metadata["distribution_plot_uri"] = dg.MetadataValue.text(f"{artifact_uri}/{DRIFT_PLOT}")
            report["mlflow_run_id"] = run_id
        else:
            metadata["note"] = "no rows in the window: nothing to test or log"
        context.add_asset_metadata(metadata, partition_key=week)
        reports[week] = json.loads(json.dumps(report, default=_json_default))
    yield dg.Output(reports if len(keys) > 1 else reports[keys[0]])
    yield from week_check_events(context, _check_results(reports), materialized=True)  # each week's new one


def _plot_markdown(figure, title: str) -> str:
    """The figure inline, as a PNG data URI: the Dagster UI's markdown shows it (a file:// path it cannot)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72)
    return f"![{title}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


def _weeks_back(week: str, n: int) -> str:
    start = (Week.of(week) - n).key
    return max(start, observation_weeks.get_first_partition_key())


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
        metrics=metrics, documents={SERVING_REPORT_ARTIFACT: report}, figures={})
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
