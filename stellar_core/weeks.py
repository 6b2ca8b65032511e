"""Observation weeks: the partition a spectrum belongs to, from its MJD.

A week starts on Sunday 00:00 UTC, as Dagster's WeeklyPartitionsDefinition
with day_offset=0 and timezone UTC cuts them. MJD 51544 is 2000-01-01.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

MJD_EPOCH_DATE = dt.date(2000, 1, 1)
MJD_EPOCH = 51544

# SDSS DR17 spectra: MJD 51608 (2000-03-05, a Sunday) to 58932 (2020-03-24).
DR17_FIRST_WEEK = dt.date(2000, 3, 5)
DR17_LAST_MJD = 58932


def mjd_to_date(mjd: int) -> dt.date:
    return MJD_EPOCH_DATE + dt.timedelta(days=int(mjd) - MJD_EPOCH)


def date_to_mjd(day: dt.date) -> int:
    return MJD_EPOCH + (day - MJD_EPOCH_DATE).days


def week_start(day: dt.date) -> dt.date:
    """The Sunday on or before `day`."""
    return day - dt.timedelta(days=(day.weekday() + 1) % 7)


def week_key(day: dt.date) -> str:
    return week_start(day).isoformat()


def mjd_to_week_key(mjd: int) -> str:
    return week_key(mjd_to_date(mjd))


def week_keys_for_mjds(mjds: np.ndarray) -> np.ndarray:
    """Vectorised mjd_to_week_key for a column of MJDs."""
    mjds = np.asarray(mjds, dtype=np.int64)
    days_since_epoch = mjds - MJD_EPOCH
    # 2000-01-01 was a Saturday: day 1 is the first Sunday.
    week_start_days = days_since_epoch - ((days_since_epoch - 1) % 7)
    starts = np.datetime64("2000-01-01") + week_start_days.astype("timedelta64[D]")
    return np.datetime_as_string(starts, unit="D")


def week_mjd_range(key: str) -> tuple[int, int]:
    """[first, last] MJD (inclusive) of the week starting at `key`."""
    start = date_to_mjd(dt.date.fromisoformat(key))
    return start, start + 6


def window_mjd_range(first_key: str, last_key: str) -> tuple[int, int]:
    return week_mjd_range(first_key)[0], week_mjd_range(last_key)[1]
