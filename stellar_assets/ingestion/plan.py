"""Which weeks an ingestion needs to run, so that unchanged weeks keep their data versions.

Dagster 1.13 gives every partition of a multi-week run the same data version
(dagster-io/dagster#34013), so a run over weeks whose rows did not change would
still mark everything downstream of them stale. `stellar ingest` therefore
compares the source with the store first and runs only the contiguous ranges of
weeks that are new or changed.
"""

from __future__ import annotations

import dagster as dg

from stellar_core.sources.placement import WeekSpan
from stellar_core.week_changes import compare_week

RAW = dg.AssetKey("raw_observations")
FEATURES = dg.AssetKey("observation_features")


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
