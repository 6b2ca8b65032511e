"""Ingestion: raw weekly observations behind a great-expectations gate, then features.

Both assets run a whole range of weeks in one run (BackfillPolicy.single_run),
so a backfill of every SDSS week reads the source once. The quality suite runs
before anything is stored: a batch that fails it is never written, so a week
that was good before keeps its data.
"""


import hashlib
from collections import Counter

import dagster as dg
import pandas as pd

from stellar_core.contract import (
    LABEL_COLUMN,
    MAGNITUDE_BANDS,
    MAGNITUDE_RANGE,
    MJD_COLUMN,
    OBJECT_ID_COLUMN,
    REDSHIFT_RANGE,
    SENTINEL_THRESHOLD,
)
from stellar_core.features import FEATURE_NAMES, FEATURES_CODE_VERSION, build_features
from stellar_core.quality import (
    MAX_NULL_SHARE,
    PACKING_EXPECTATION,
    PRECISION_EXPECTATION,
    RANGE_MOSTLY,
    ExpectationOutcome,
    QualityReport,
    validate_observations,
)
from stellar_core.sources import SourceError
from stellar_core.week_changes import WeekChange, compare_week, content_versions_by_week
from stellar_core.weeks import week_keys_for_mjds
from stellar_assets.checks import WeekCheck, markdown_table, percent, week_check_events, weekly_check_spec
from stellar_assets.partitions import observation_weeks, survey_span
from stellar_assets.resources.io_managers import ALLOW_SHRINK_TAG, shrink_allowed
from stellar_assets.resources.sources import ObservationSource, SourceBatch

# The one GX suite is one Dagster check a week (one validation, one verdict); its expectations
# are grouped into the parts a reader names, and the check's metadata gives each part's verdict.
# (Seven checks a week, one per part, cost 90 s of Dagster event writes over the whole survey.)
QUALITY_CHECK = "quality_suite"
QUALITY_PARTS: dict[str, tuple[str, ...]] = {
    "schema": ("expect_column_to_exist", "expect_column_values_to_be_in_type_list"),
    "class_labels": ("expect_column_values_to_be_in_set",),
    "magnitude_range": ("expect_column_values_to_be_between:mag",),
    "redshift_range": ("expect_column_values_to_be_between:redshift",),
    "unique_spec_obj_id": ("expect_column_values_to_be_unique",),
    "null_share": ("expect_column_values_to_not_be_null",),
    "id_precision": (PRECISION_EXPECTATION, PACKING_EXPECTATION),
}
# The run tag that lets simulated rows change real weeks (or the reverse); the Parquet attr that
# remembers which kind a week holds.
ALLOW_SOURCE_CHANGE_TAG = "stellar/allow-source-change"
SOURCE_ATTR = "stellar_source"
PLACEMENT_CHECK = "rows_in_survey_weeks"
PLACEMENT_DESCRIPTION = ("Every row's MJD lies in a survey week. Rows that cannot be placed (they belong to no "
                         "week: the verdict is the batch's, on every week it delivered) are counted and named here "
                         "(warning); a source where most rows cannot be placed is refused.")
_MAGNITUDES = f"{', '.join(MAGNITUDE_BANDS)} lie in [{MAGNITUDE_RANGE[0]:g}, {MAGNITUDE_RANGE[1]:g}]"
PART_DESCRIPTIONS = {
    "schema": "All 18 SDSS17 columns are present and numeric where they must be.",
    "class_labels": "class is one of STAR, GALAXY, QSO.",
    "magnitude_range": f"{_MAGNITUDES} for at least {percent(RANGE_MOSTLY)} of measured rows, in the batch and in "
    f"every week ({SENTINEL_THRESHOLD:g} or below means no measurement: passed on, dropped and counted by features).",
    "redshift_range": f"redshift lies in [{REDSHIFT_RANGE[0]:g}, {REDSHIFT_RANGE[1]:g}] for at least "
    f"{percent(RANGE_MOSTLY)} of rows, in the batch and in every week.",
    "unique_spec_obj_id": "spec_obj_ID is unique: one row per spectrum (a spreadsheet round trip breaks this).",
    "null_share": f"At most {percent(MAX_NULL_SHARE)} missing values in magnitudes, redshift and class, in the batch "
    "and in every week; spec_obj_ID is never missing.",
    "id_precision": "obj_ID and spec_obj_ID carry the precision the source format carries (not rounded by a "
    "spreadsheet), and each spec_obj_ID encodes its row's plate, fibre and MJD as SDSS packs them.",
}
QUALITY_DESCRIPTION = ("The great-expectations suite on the week's rows and on the batch, one verdict "
                       "(metadata `parts`: each part's verdict). " +
                       " ".join(f"{part}: {text}" for part, text in PART_DESCRIPTIONS.items()))
BATCH_FAILURE_NOTE = ("failed on the whole batch, not on one week's rows (the batch is refused as a whole, "
                      "so every week of it carries the failure)")


_PART_OF_FAMILY = {family: part for part, families in QUALITY_PARTS.items() for family in families}


def _part(outcome: ExpectationOutcome) -> str:
    family = outcome.name
    if family == "expect_column_values_to_be_between":
        family += ":" + ("redshift" if outcome.column == "redshift" else "mag")
    return _PART_OF_FAMILY[family]


def quality_week_checks(report: QualityReport, weeks: pd.Series, keys: list[str],
                        sentinel_rows: dict[str, int]) -> list[WeekCheck]:
    """The suite's verdict on each week of the batch. A week fails on its own rows' failures, and on
    a failure of the whole batch that no week's own failure of the same expectation explains
    (duplicate IDs across weeks, a missing column)."""
    rows = weeks.value_counts().to_dict()
    wanted = set(keys)
    judged_weeks: dict[str, list[ExpectationOutcome]] = {}  # the outcomes judging one week's rows
    by_week: dict[str, list[ExpectationOutcome]] = {}  # and those of them that failed
    for outcome in report.outcomes:
        if outcome.week in wanted:
            judged_weeks.setdefault(outcome.week, []).append(outcome)
            if not outcome.success:
                by_week.setdefault(outcome.week, []).append(outcome)
    explained = {(o.name, o.column) for failed in by_week.values() for o in failed}
    unexplained = [o for o in report.failures if o.week is None and (o.name, o.column) not in explained]
    judged_batch = [o for o in report.outcomes if o.week is None]
    checks = []
    for week in keys:
        judged = judged_batch + judged_weeks.get(week, [])
        failed = by_week.get(week, []) + unexplained
        failed_parts = Counter(_part(o) for o in failed)  # in the order of their first failure
        metadata = _quality_metadata(judged, failed, failed_parts, int(rows.get(week, 0)), report)
        metadata["sentinel_rows"] = sentinel_rows.get(week, 0)  # dropped and counted by features
        checks.append(WeekCheck(QUALITY_CHECK, week, passed=not failed, metadata=metadata,
                                description=_quality_description(week, failed, failed_parts)))
    return checks


def _quality_metadata(judged: list[ExpectationOutcome], failed: list[ExpectationOutcome], failed_parts: Counter,
                      rows: int, report: QualityReport) -> dict:
    metadata = {
        "rows": rows,
        "batch_rows": report.rows,
        "expectations": len(judged),
        "failed_expectations": len(failed),
        "failed_parts": ", ".join(part for part in QUALITY_PARTS if failed_parts[part]) or "none",
        "parts": dg.MetadataValue.json({part: f"failed ({failed_parts[part]} expectation(s))" if failed_parts[part]
                                        else "passed" for part in QUALITY_PARTS}),
        "batch_verdict": "passed the quality suite" if report.success else
        f"refused: {len(report.failures)} failed expectation(s) in the batch; nothing was stored",
    }
    if failed:
        metadata["failures"] = dg.MetadataValue.md(_failures_markdown(failed))
        metadata["failure_details"] = dg.MetadataValue.json([o.as_dict() for o in failed])
    flagged = [o for o in judged if o.success and o.unexpected_count]
    if flagged:  # tolerated (mostly=...) but worth seeing: e.g. one -9999 sentinel row
        metadata["tolerated"] = dg.MetadataValue.json([o.as_dict() for o in flagged])
    return metadata


def _quality_description(week: str, failed: list[ExpectationOutcome], failed_parts: Counter) -> str:
    if not failed:
        return f"All {len(QUALITY_PARTS)} parts of the quality suite passed: {', '.join(QUALITY_PARTS)}."
    first = failed[0]
    where = f"week {week}" if first.week else BATCH_FAILURE_NOTE
    more = f" (and {len(failed) - 1} more failed expectation(s))" if len(failed) > 1 else ""
    return f"{', '.join(failed_parts)} failed. {first.name} on {first.column or 'the table'}, {where}: {first.explanation}{more}"


def _sentinel_rows_by_week(frame: pd.DataFrame, weeks: pd.Series) -> dict[str, int]:
    """Rows with a no-measurement magnitude (-9999), by week."""
    bands = [b for b in MAGNITUDE_BANDS if b in frame.columns and pd.api.types.is_numeric_dtype(frame[b])]
    if not bands or frame.empty:
        return {}
    sentinel = (frame[bands] <= SENTINEL_THRESHOLD).any(axis=1)
    return {str(k): int(v) for k, v in weeks[sentinel].value_counts().items()}


def _failures_markdown(failed) -> str:
    lines = ["| expectation | column | week | rows | examples | why |", "|---|---|---|---|---|---|"]
    for o in failed:
        examples = ", ".join(str(e) for e in o.examples[:5])
        lines.append(f"| {o.name} | {o.column} | {o.week or 'all'} | {o.unexpected_count} | {examples} | {o.explanation} |")
    return "\n".join(lines)


def _week_table(frame: pd.DataFrame) -> pd.Series:
    if MJD_COLUMN not in frame.columns or frame.empty:
        return pd.Series([], dtype=str, index=frame.index)
    return pd.Series(week_keys_for_mjds(frame[MJD_COLUMN].to_numpy()), index=frame.index)


def _class_mix(labels: pd.Series) -> dict:
    counts = labels.value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def _week_metadata(frame: pd.DataFrame, label_column: str, source: str, version: str) -> dict:
    """`version`: the week's content_version (computed for the whole batch at once)."""
    metadata = {
        "rows": dg.MetadataValue.int(len(frame)),
        "source": source,
        "data_hash": version,
    }
    if frame.empty:
        metadata["note"] = "no spectra observed this week (normal: SDSS did not observe every week)"
        return metadata
    if label_column in frame.columns:
        metadata["class_mix"] = dg.MetadataValue.json(_class_mix(frame[label_column]))
    metadata["preview"] = dg.MetadataValue.md(markdown_table(frame.head(5)))
    return metadata


def _split_by_week(frame: pd.DataFrame, weeks: pd.Series, keys: list[str]) -> dict[str, pd.DataFrame]:
    groups = {key: group for key, group in frame.groupby(weeks.to_numpy(), sort=False)} if len(frame) else {}
    empty = frame.iloc[0:0]
    return {key: groups.get(key, empty).reset_index(drop=True) for key in keys}


@dg.asset(
    partitions_def=observation_weeks,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"pandas", "parquet"},
    # The stored weeks are read to compare with (io_manager); the source is configured as a resource.
    required_resource_keys={"io_manager", "source"},
    check_specs=[
        weekly_check_spec("raw_observations", QUALITY_CHECK, QUALITY_DESCRIPTION, blocking=True),
        weekly_check_spec("raw_observations", PLACEMENT_CHECK, PLACEMENT_DESCRIPTION, blocking=False),
    ],
    description="SDSS spectra observed in the week, as received from the configured source. A week the "
    "source does not cover, or one that would hold fewer rows than stored, is refused before anything is written.",
)
def raw_observations(context: dg.AssetExecutionContext):
    keys = list(context.partition_keys)
    source: ObservationSource = context.resources.source
    batch = _fetch_covered(context, source, keys)
    context.log.info("%s: %d rows for %d week(s) %s..%s (the source covers %s)", source.describe(),
                     len(batch.rows), len(keys), keys[0], keys[-1], batch.covers)

    report = validate_observations(batch.rows, weeks=batch.weeks)
    checks = [*quality_week_checks(report, batch.weeks, keys, _sentinel_rows_by_week(batch.rows, batch.weeks)),
              *_placement_checks(batch, keys)]
    if not report.success:
        # Fail before the IO manager writes anything: stored weeks keep their good data.
        yield from week_check_events(context, checks, materialized=False)
        raise dg.Failure(
            description=f"raw observations from {source.describe()} failed the quality suite; nothing was stored. "
            + report.summary(),
            metadata={"failed_expectations": dg.MetadataValue.json([o.as_dict() for o in report.failures])},
        )

    per_week = _split_by_week(batch.rows, batch.weeks, keys)
    try:
        changes = _changes_against_store(context, per_week, source)
    except dg.Failure:  # refused for what is stored, not for quality: the verdicts still stand
        yield from week_check_events(context, checks, materialized=False)
        raise
    schema = dg.TableSchema(columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in batch.rows.dtypes.items()])
    versions = content_versions_by_week(batch.rows, batch.weeks, keys)
    for key, part in per_week.items():
        metadata = _week_metadata(part, LABEL_COLUMN, source.describe(), versions[key])
        metadata.update(_change_metadata(changes[key], versions[key]))
        metadata["dagster/column_schema"] = schema
        context.add_asset_metadata(metadata, partition_key=key)
    value = per_week if len(keys) > 1 else per_week[keys[0]]
    yield dg.Output(value, data_version=dg.DataVersion(_range_version(versions)))
    yield from week_check_events(context, checks, materialized=True)  # after the output: each week's new one


def _fetch_covered(context: dg.AssetExecutionContext, source: ObservationSource, keys: list[str]) -> SourceBatch:
    """The source's rows for `keys`, refused unless the source covers every one of them."""
    try:
        batch = source.fetch(keys, survey_span(), log=context.log)
    except SourceError as exc:
        raise dg.Failure(description=f"{source.describe()}: {exc}") from exc
    uncovered = batch.uncovered(keys)
    if uncovered:
        covers = f"covers only {batch.covers}" if batch.covers else "covers no survey week (it holds no placeable row)"
        raise dg.Failure(description=(
            f"{source.describe()} {covers}, so it cannot say what {len(uncovered)} of the {len(keys)} requested "
            f"week(s) hold (first: {', '.join(uncovered[:3])}); nothing was stored. Materialize weeks inside "
            f"the source's span, or declare the span the file covers (STELLAR_SDSS_CSV_FIRST_WEEK / _LAST_WEEK)."))
    if len(batch.unplaceable):
        context.log.warning("%s: %s", source.describe(), batch.unplaceable_summary)
    return batch


def _changes_against_store(context: dg.AssetExecutionContext, per_week: dict[str, pd.DataFrame],
                           source: ObservationSource) -> dict[str, WeekChange]:
    """Compare each week with what is stored, and refuse before anything is written when the batch
    would replace IDs by rounded ones, change weeks another source stored, or shrink a week."""
    store = context.resources.io_manager
    stored = {key: store.stored(context.asset_key, key) for key in per_week}
    changes = {key: compare_week(key, stored[key], part) for key, part in per_week.items()}
    tags = context.run.tags
    _refuse_rounded_ids(changes)
    _refuse_source_change(changes, stored, source, tags)
    _refuse_shrinking_weeks(context, changes, per_week, tags)
    for part in per_week.values():
        part.attrs[SOURCE_ATTR] = source.identity  # Parquet keeps a frame's attrs: each week knows its kind
    changed = [c for c in changes.values() if c.status == "changed"]
    for change in changed[:20]:
        context.log.warning("raw_observations %s changed: %s", change.week, change.describe())
    counts = {status: sum(c.status == status for c in changes.values()) for status in ("new", "changed", "unchanged")}
    context.log.info("raw_observations: %d new, %d changed, %d unchanged week(s)", counts["new"],
                     counts["changed"], counts["unchanged"])
    return changes


def _refuse_rounded_ids(changes: dict[str, WeekChange]) -> None:
    rounded = {key: c.rounded_ids for key, c in changes.items() if c.rounded_ids}
    if rounded:
        examples = "; ".join(f"{key}: {', '.join(ids[:3])}" for key, ids in list(rounded.items())[:5])
        raise dg.Failure(description=(
            f"the source would replace {sum(map(len, rounded.values()))} stored {OBJECT_ID_COLUMN} values of "
            f"{len(rounded)} week(s) by rounded versions of the same IDs (same plate, MJD and fibre): {examples}. "
            "Nothing was stored; re-export the IDs at full precision (as text)."))


def _refuse_source_change(changes: dict[str, WeekChange], stored: dict, source: ObservationSource, tags) -> None:
    """Real SDSS weeks are not changed by simulated rows (the fallback when no CSV is configured),
    nor the reverse, unless the run says so."""
    foreign = {key: stored[key].attrs[SOURCE_ATTR] for key, c in changes.items()
               if c.status == "changed" and stored[key] is not None
               and stored[key].attrs.get(SOURCE_ATTR, source.identity) != source.identity}
    if foreign and str(tags.get(ALLOW_SOURCE_CHANGE_TAG, "")).lower() not in ("1", "true", "yes"):
        first = next(iter(foreign))
        raise dg.Failure(description=(
            f"{len(foreign)} stored week(s) hold {foreign[first]} data and this run would change them with "
            f"{source.identity} data from {source.describe()} (first: {first}: {changes[first].describe()}). "
            f"Nothing was stored. If that is what you want, run again with the run tag "
            f"{ALLOW_SOURCE_CHANGE_TAG}=true."))


def _refuse_shrinking_weeks(context, changes: dict[str, WeekChange], per_week: dict[str, pd.DataFrame], tags) -> None:
    """Raw weeks and the feature weeks built from them, checked together before either is written."""
    shrinking = {c.week: (c.stored_rows, c.new_rows) for c in changes.values() if c.shrinks}
    store = context.resources.io_manager
    features, _ = build_features(pd.concat(per_week.values(), ignore_index=True))
    feature_rows = features.groupby("week").size()
    for key in per_week:
        stored = store.stored_rows(dg.AssetKey("observation_features"), key)
        if stored is not None and int(feature_rows.get(key, 0)) < stored and key not in shrinking:
            shrinking[key] = (stored, int(feature_rows.get(key, 0)))
    if shrinking and not shrink_allowed(tags):
        weeks = "; ".join(f"{key}: {changes[key].describe()}" if changes[key].shrinks else
                          f"{key}: features {old} -> {new} rows" for key, (old, new) in list(shrinking.items())[:10])
        raise dg.Failure(description=(
            f"{len(shrinking)} stored week(s) would lose rows: {weeks}. Nothing was stored. If the smaller data is "
            f"right, run again with the run tag {ALLOW_SHRINK_TAG}=true (stellar ingest --allow-shrink)."))


def _change_metadata(change: WeekChange, version: str) -> dict:
    metadata = {
        "change": change.describe(),
        "change_status": change.status,
        "rows_added": dg.MetadataValue.int(change.added),
        "rows_removed": dg.MetadataValue.int(change.removed),
        "rows_changed": dg.MetadataValue.int(change.changed),
        "content_version": version,
    }
    if change.shrinks:
        metadata["shrink_allowed_by"] = f"run tag {ALLOW_SHRINK_TAG}=true"
    return metadata


def _range_version(versions: dict[str, str]) -> str:
    """One week: its content version. Dagster 1.13 records one data version per output, so a run
    over several weeks gets a version of all of them (each week's own is in its metadata)."""
    if len(versions) == 1:
        return next(iter(versions.values()))
    joined = ",".join(f"{k}={v}" for k, v in sorted(versions.items()))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def _placement_checks(batch: SourceBatch, keys: list[str]) -> list[WeekCheck]:
    """Unplaceable rows belong to no week: each week of the batch carries the batch's verdict."""
    examples = batch.unplaceable.head(10)
    metadata = {"unplaceable_rows": dg.MetadataValue.int(len(batch.unplaceable)), "summary": batch.unplaceable_summary,
                "batch_weeks": f"{keys[0]}..{keys[-1]} ({len(keys)} week(s))"}
    if len(examples):
        columns = [c for c in (OBJECT_ID_COLUMN, MJD_COLUMN, "reason") if c in examples.columns]
        metadata["examples"] = dg.MetadataValue.md(markdown_table(examples[columns]))
    description = PLACEMENT_DESCRIPTION if batch.unplaceable.empty else \
        f"the batch holds {len(batch.unplaceable)} row(s) no survey week holds: {batch.unplaceable_summary}"
    return [WeekCheck(PLACEMENT_CHECK, week, passed=batch.unplaceable.empty, description=description,
                      metadata=metadata, severity=dg.AssetCheckSeverity.WARN) for week in keys]


@dg.asset(
    partitions_def=observation_weeks,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"pandas", "parquet"},
    # With a code version, a week's data version is derived from its raw week's content version:
    # re-ingesting identical rows leaves everything downstream fresh.
    code_version=FEATURES_CODE_VERSION,
    description="Cleaned rows with colour indices and redshift: the feature store for training, "
    "batch prediction and serving. Survey bookkeeping (IDs, plate, MJD, fibre, position) is not a feature.",
)
def observation_features(context: dg.AssetExecutionContext, raw_observations: pd.DataFrame):
    keys = list(context.partition_keys)
    table, report = build_features(raw_observations)
    if report.dropped:
        context.log.warning("dropped %d of %d rows: %s", report.rows_in - report.rows_out, report.rows_in, report.dropped)
    per_week = _split_by_week(table, table["week"], keys)
    schema = dg.TableSchema(columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in table.dtypes.items()])
    # Count every dropped row against its week, by reason: nothing disappears silently.
    dropped = pd.DataFrame({"week": _week_table(raw_observations), "reason": report.row_reasons}).dropna()
    dropped_by_week = {week: group["reason"].value_counts().to_dict() for week, group in dropped.groupby("week")}
    versions = content_versions_by_week(table, table["week"], keys)
    for key, part in per_week.items():
        metadata = _week_metadata(part, "label", "raw_observations", versions[key])
        metadata["dagster/column_schema"] = schema
        metadata["features"] = ", ".join(FEATURE_NAMES)
        week_dropped = {str(k): int(v) for k, v in dropped_by_week.get(key, {}).items()}
        metadata["dropped_rows"] = dg.MetadataValue.int(sum(week_dropped.values()))
        metadata["dropped_by_reason"] = dg.MetadataValue.json(week_dropped)
        context.add_asset_metadata(metadata, partition_key=key)
    return per_week if len(keys) > 1 else per_week[keys[0]]
