"""Observation weeks as Dagster partitions.

A partition is the week (Sunday 00:00 UTC onwards) in which SDSS took a
spectrum; stellar_core.weeks maps MJDs to the same keys. The default range is
SDSS DR17's: 2000-03-05 to the week of MJD 58932 (2020-03-22). The simulator
and other sources can widen it with STELLAR_FIRST_WEEK / STELLAR_LAST_WEEK
(stellar_assets/settings.py).
"""

from __future__ import annotations

import dagster as dg

from stellar_assets.settings import load_settings
from stellar_core.sources.placement import WeekSpan
from stellar_core.weeks import Week

FIRST_WEEK = load_settings().first_week
LAST_WEEK = load_settings().last_week


def _end_date(last_week: str) -> str:
    # end_date is exclusive: the week after the last one.
    return Week.of(last_week).next.key


observation_weeks = dg.WeeklyPartitionsDefinition(
    start_date=FIRST_WEEK,
    end_date=_end_date(LAST_WEEK),
    day_offset=0,  # weeks start on Sunday, like stellar_core.weeks
    timezone="UTC",
    fmt="%Y-%m-%d",
)


def survey_span() -> WeekSpan:
    """The weeks of the partitions definition: rows outside them cannot be placed."""
    keys = observation_weeks.get_partition_keys()
    return WeekSpan(keys[0], keys[-1])
