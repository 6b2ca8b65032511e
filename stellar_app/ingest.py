"""`stellar ingest`: raw observations and features for the weeks the source covers, or a range.

Dagster 1.13 gives every partition of a multi-week run the same data version
(dagster-io/dagster#34013), so a run over weeks whose rows did not change would
still mark everything downstream of them stale. The command therefore compares
the source with the store first and runs only the contiguous ranges of weeks
that are new or changed (usually one run).
"""

from __future__ import annotations

import time
from collections import Counter

import dagster as dg

from stellar_app.home import prepare_home
from stellar_app.location import CodeLocation
from stellar_app.runs import RANGE_END_TAG, RANGE_START_TAG, print_failures, say
from stellar_app.settings import AppSettings
from stellar_core.sources.placement import WeekSpan
from stellar_core.week_changes import compare_week

RAW = dg.AssetKey("raw_observations")
FEATURES = dg.AssetKey("observation_features")
# `stellar ingest` shows Dagster's INFO lines (the replay keeps to WARNING).
INGEST_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def ranges_to_ingest(source, store, weeks: list[str], survey: WeekSpan) -> tuple[list[tuple[str, str]], int]:
    """Contiguous (first, last) ranges of `weeks` whose raw rows are new or changed, or whose
    features are missing; and how many weeks are unchanged and complete."""
    batch = source.fetch(weeks, survey)
    by_week = dict(tuple(batch.rows.groupby(batch.weeks.to_numpy(), sort=False))) if len(batch.rows) else {}
    empty = batch.rows.iloc[0:0]
    needed = []
    for week in weeks:
        stored = store.stored(RAW, week)
        rows = by_week.get(week, empty).reset_index(drop=True)
        unchanged = stored is not None and compare_week(week, stored, rows).status == "unchanged"
        needed.append(not unchanged or store.stored_rows(FEATURES, week) is None)
    return _contiguous(weeks, needed), needed.count(False)


def _contiguous(weeks: list[str], needed: list[bool]) -> list[tuple[str, str]]:
    ranges: list[tuple[str, str]] = []
    start = None
    for k, (week, need) in enumerate(zip(weeks, needed)):
        if need and start is None:
            start = week
        if start is not None and (not need or k == len(weeks) - 1):
            ranges.append((start, week if need else weeks[k - 1]))
            start = None
    return ranges


def say_source(csv: str | None, why: str) -> None:
    if csv:
        say(f"Source: SDSS17 CSV {csv} ({why})")
    else:
        say("Source: the built-in simulator (no SDSS17 CSV configured: put the Kaggle download at "
            "data/star_classification.csv or set STELLAR_SDSS_CSV)")


def run_ingestion(first_week: str | None = None, last_week: str | None = None, allow_shrink: bool = False,
                  settings: AppSettings | None = None) -> int:
    """`stellar ingest`: one run per contiguous range of new or changed weeks; an exit code."""
    from stellar_core.home import default_sdss_csv

    settings = settings or AppSettings()
    csv, why = default_sdss_csv(settings.stellar_sdss_csv)
    prepare_home(settings)
    from stellar_assets.definitions import defs

    instance = dg.DagsterInstance.get()
    say(f"stellar ingest: project home {settings.home}")
    say_source(csv, why)
    planned = _plan_ingestion(defs, first_week, last_week)
    if isinstance(planned, int):
        return planned
    ranges, selected, unchanged = planned
    say(f"Ingestion: raw_observations + observation_features for {len(selected)} weeks ({selected[0]} .. "
        f"{selected[-1]}): {unchanged} unchanged and complete, {len(ranges)} run(s) for the rest "
        "(single-run backfill policy)" + ("; stored weeks may shrink (--allow-shrink)" if allow_shrink else ""))
    for first, last in ranges:
        if _ingest_range(instance, first, last, allow_shrink) != 0:
            return 1
    if not ranges:
        say("Nothing to run: every week already holds exactly these rows (their data versions stay).")
    say(f"\nOpen the Dagster UI on this instance:  make ui   (DAGSTER_HOME={instance.root_directory})")
    return 0


def _plan_ingestion(defs, first_week: str | None, last_week: str | None):
    """(ranges to run, weeks selected, unchanged weeks), or an exit code after saying what is wrong."""
    from stellar_assets.partitions import observation_weeks, survey_span
    from stellar_core.sources import SourceError

    keys = observation_weeks.get_partition_keys()
    source = defs.resources["source"]
    try:
        covers = source.coverage(survey_span())
    except SourceError as exc:
        say(f"error: {exc}")
        return 2
    if covers is None:
        say("error: the source covers no survey week (no row with an MJD inside the survey): nothing to ingest")
        return 2
    first = first_week or max(covers.first, keys[0])
    last = last_week or min(covers.last, keys[-1])
    for name, week in (("first", first), ("last", last)):
        if week not in keys:
            say(f"error: --{name}-week {week} is not an observation week: weeks start on Sundays between "
                f"{keys[0]} and {keys[-1]}")
            return 2
    if first > last:
        say(f"error: --first-week {first} is after --last-week {last} (the source covers {covers})")
        return 2
    selected = keys[keys.index(first): keys.index(last) + 1]
    say(f"The source covers {covers}.")
    if source.resolved_kind == "skyserver":  # one query per week: do not ask twice
        return [(first, last)], selected, 0
    try:
        ranges, unchanged = ranges_to_ingest(source, defs.resources["io_manager"], selected, survey_span())
    except SourceError as exc:
        say(f"error: {exc}")
        return 2
    return ranges, selected, unchanged


def _ingest_range(instance, first: str, last: str, allow_shrink: bool) -> int:
    from stellar_assets.resources.io_managers import ALLOW_SHRINK_TAG

    tags = {RANGE_START_TAG: first, RANGE_END_TAG: last, "stellar/step": "ingestion"}
    if allow_shrink:
        tags[ALLOW_SHRINK_TAG] = "true"
    started = time.perf_counter()
    result = CodeLocation().run(instance, "ingestion_job", INGEST_LOGS, tags)  # a run of the code location
    elapsed = time.perf_counter() - started
    if not result.success:
        say(f"Ingestion run {result.run_id} ({first} .. {last}) FAILED after {elapsed:.1f} s:")
        print_failures(result)
        return 1
    say(ingestion_summary(result, elapsed))
    return 0


def ingestion_summary(result, elapsed: float) -> str:
    rows: Counter = Counter()
    weeks_with_data: Counter = Counter()
    changes: Counter = Counter()
    classes: Counter = Counter()
    dropped = 0
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        asset = materialization.asset_key.to_user_string()
        metadata = materialization.metadata
        n = metadata["rows"].value if "rows" in metadata else 0
        rows[asset] += n
        weeks_with_data[asset] += bool(n)
        if asset == "raw_observations" and "change_status" in metadata:
            changes[metadata["change_status"].value] += 1
        if asset == "observation_features":
            dropped += metadata["dropped_rows"].value if "dropped_rows" in metadata else 0
            if "class_mix" in metadata:
                classes.update(metadata["class_mix"].value)
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    passed = sum(1 for c in checks if c.passed)
    mix = ", ".join(f"{k} {v} ({v / max(1, sum(classes.values())):.0%})" for k, v in sorted(classes.items()))
    return "\n".join([
        f"Run {result.run_id}: done in {elapsed:.1f} s",
        f"  raw_observations:     {rows['raw_observations']:>7} rows in {weeks_with_data['raw_observations']} weeks with data",
        f"  weeks: {changes['new']} new, {changes['changed']} changed, {changes['unchanged']} unchanged "
        "(each week's change and content version are in its metadata)",
        f"  observation_features: {rows['observation_features']:>7} rows ({dropped} dropped as unphysical, counted per week)",
        f"  class mix: {mix}",
        f"  quality checks: {passed}/{len(checks)} passed (great-expectations suite, blocking)",
    ])
