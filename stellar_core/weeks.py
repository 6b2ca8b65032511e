"""Observation weeks: the partition a spectrum belongs to, from its MJD.

A week starts on Sunday 00:00 UTC, as Dagster's WeeklyPartitionsDefinition
with day_offset=0 and timezone UTC cuts them. MJD 51544 is 2000-01-01.
This module is the only place that does date arithmetic (tests/test_weeks.py
checks): elsewhere, weeks are Week values or their "YYYY-MM-DD" keys.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

MJD_EPOCH_DATE = dt.date(2000, 1, 1)
MJD_EPOCH = 51544

# SDSS DR17 spectra: MJD 51608 (2000-03-05, a Sunday) to 58932 (2020-03-24).
DR17_FIRST_WEEK = dt.date(2000, 3, 5)
DR17_LAST_MJD = 58932

# The simulator numbers weeks from the first Sunday of 2000 (its obj_IDs depend on it).
INDEX_BASE_WEEK_START = dt.date(2000, 1, 2)


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


@dataclass(frozen=True, order=True)
class Week:
    """A week, Sunday 00:00 UTC to the next Sunday; `start` is its Sunday."""

    start: dt.date

    def __post_init__(self):
        if type(self.start) is not dt.date or self.start.weekday() != 6:
            raise ValueError(f"a week starts on a Sunday (a datetime.date), got {self.start!r}")

    @classmethod
    def of(cls, day: Week | dt.date | str) -> Week:
        """The week holding `day`: a date or an ISO date string (a week key gives its own week)."""
        if isinstance(day, Week):
            return day
        if isinstance(day, str):
            day = dt.date.fromisoformat(day)
        if isinstance(day, dt.datetime):
            day = day.date()
        return cls(week_start(day))

    @classmethod
    def from_mjd(cls, mjd: int) -> Week:
        return cls(week_start(mjd_to_date(mjd)))

    @classmethod
    def range(cls, first: Week | dt.date | str, last: Week | dt.date | str) -> list[Week]:
        """The weeks from `first` to `last`, both included; empty when last is before first."""
        first, last = cls.of(first), cls.of(last)
        return [first + k for k in range(last - first + 1)]  # the builtin range: methods do not see class names

    @property
    def key(self) -> str:
        return self.start.isoformat()

    @property
    def mjd_range(self) -> tuple[int, int]:
        """[first, last] MJD (inclusive)."""
        first = date_to_mjd(self.start)
        return first, first + 6

    @property
    def index(self) -> int:
        """Weeks since the first Sunday of 2000."""
        return self - Week(INDEX_BASE_WEEK_START)

    @property
    def next(self) -> Week:
        return self + 1

    @property
    def prev(self) -> Week:
        return self - 1

    def __add__(self, weeks: int) -> Week:
        if not isinstance(weeks, int):
            return NotImplemented
        return Week(self.start + dt.timedelta(days=7 * weeks))

    __radd__ = __add__

    def __sub__(self, other: int | Week):
        """Week - n weeks is a Week; Week - Week is the number of weeks between them."""
        if isinstance(other, Week):
            return (self.start - other.start).days // 7
        if isinstance(other, int):
            return self + (-other)
        return NotImplemented

    def __str__(self) -> str:
        return self.key

