"""Placing source rows in observation weeks, and the span of weeks a source speaks for.

A row belongs to the week of its MJD. A row whose MJD is not a finite whole
number inside the survey's weeks cannot be placed: it is counted and named,
never dropped silently, and a file where most rows cannot be placed is
refused (a column of Julian Dates instead of MJDs looks exactly like that).

A source speaks only for the weeks it covers. An empty week inside that span
means "SDSS observed nothing"; a week outside it means "this source does not
know", and must never replace what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from stellar_core.contract import MJD_COLUMN, OBJECT_ID_COLUMN
from stellar_core.sources.errors import SourceError
from stellar_core.weeks import week_keys_for_mjds, week_mjd_range

# Refuse the file when more than this share of its rows lies outside the survey.
MAX_UNPLACEABLE_SHARE = 0.5
JD_OFFSET = 2_400_000.5  # JD = MJD + 2400000.5


@dataclass(frozen=True)
class WeekSpan:
    """An inclusive range of week keys (YYYY-MM-DD Sundays); ISO dates sort as strings."""

    first: str
    last: str

    def __contains__(self, week: str) -> bool:
        return self.first <= week <= self.last

    def __str__(self) -> str:
        return f"{self.first}..{self.last}"


@dataclass(frozen=True)
class Placement:
    placed: pd.DataFrame  # rows with an MJD inside the survey, MJD as int64
    weeks: pd.Series  # the week key of each placed row (same index as placed)
    unplaceable: pd.DataFrame  # the other rows, with a "reason" column
    rows_in: int

    @property
    def span(self) -> WeekSpan | None:
        """First and last week holding a placed row; None when no row could be placed."""
        if self.placed.empty:
            return None
        return WeekSpan(str(self.weeks.min()), str(self.weeks.max()))

    def unplaceable_summary(self, limit: int = 5) -> str:
        """One line naming how many rows could not be placed, why, and a few of them."""
        if self.unplaceable.empty:
            return "every row lies in a survey week"
        reasons = self.unplaceable["reason"].value_counts()
        examples = ", ".join(_row_label(row) for _, row in self.unplaceable.head(limit).iterrows())
        why = "; ".join(f"{count} {reason}" for reason, count in reasons.items())
        return f"{len(self.unplaceable)} of {self.rows_in} rows cannot be placed in a survey week ({why}); e.g. {examples}"


def place_rows(frame: pd.DataFrame, survey: WeekSpan, location: str = "the source") -> Placement:
    """Split rows into those inside the survey's weeks and those that cannot be placed.

    Raises SourceError when more than half of the rows cannot be placed.
    """
    mjd = pd.to_numeric(frame[MJD_COLUMN], errors="coerce").astype("float64")
    first_mjd, last_mjd = week_mjd_range(survey.first)[0], week_mjd_range(survey.last)[1]
    finite = np.isfinite(mjd)
    whole = finite & (mjd == np.floor(mjd.where(finite, 0.0)))
    inside = whole & (mjd >= first_mjd) & (mjd <= last_mjd)
    reason = pd.Series(pd.NA, index=frame.index, dtype=object)
    reason[~finite] = "with a missing, non-numeric or infinite MJD"
    reason[finite & ~whole] = "with a fractional MJD"
    reason[whole & (mjd < first_mjd)] = f"with an MJD before the survey's first week ({survey.first}, MJD {first_mjd})"
    reason[whole & (mjd > last_mjd)] = f"with an MJD after the survey's last week ({survey.last}, MJD {last_mjd})"
    unplaceable = frame.loc[~inside].assign(reason=reason[~inside])
    if len(frame) and len(unplaceable) > MAX_UNPLACEABLE_SHARE * len(frame):
        raise SourceError(_refusal(location, mjd, unplaceable, len(frame), survey, first_mjd, last_mjd))
    placed = frame.loc[inside].copy()
    placed[MJD_COLUMN] = mjd[inside].astype("int64")
    weeks = pd.Series(week_keys_for_mjds(placed[MJD_COLUMN].to_numpy()), index=placed.index, dtype=object)
    return Placement(placed=placed, weeks=weeks, unplaceable=unplaceable, rows_in=len(frame))


def _refusal(location, mjd, unplaceable, rows, survey, first_mjd, last_mjd) -> str:
    share = len(unplaceable) / rows
    message = (f"{location}: {len(unplaceable)} of {rows} rows ({share:.0%}) have an {MJD_COLUMN} outside the "
               f"survey's weeks {survey} (MJD {first_mjd}..{last_mjd}), so they cannot be placed in observation "
               f"weeks; nothing was stored. Examples: "
               + ", ".join(_row_label(row) for _, row in unplaceable.head(5).iterrows()))
    as_mjd = mjd[unplaceable.index] - JD_OFFSET
    if len(as_mjd) and ((as_mjd >= first_mjd) & (as_mjd <= last_mjd + 1)).mean() > 0.9:
        message += (f". These values look like Julian Dates (JD = MJD + {JD_OFFSET}): convert the column to "
                    f"MJD before ingesting")
    return message


def _row_label(row: pd.Series) -> str:
    row_id = row.get(OBJECT_ID_COLUMN)
    ident = f"{OBJECT_ID_COLUMN} {_plain_id(row_id)}" if row_id is not None and not pd.isna(row_id) else "a row without an ID"
    return f"{ident} (MJD {row.get(MJD_COLUMN)!r})"


def _plain_id(value) -> str:
    try:
        return str(int(float(value)))
    except (TypeError, ValueError, OverflowError):
        return str(value)[:40]


def rows_in_weeks(placement: Placement, weeks: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    """The placed rows of the given weeks, and their week keys, re-indexed from 0."""
    keep = placement.weeks.isin(weeks)
    return placement.placed.loc[keep].reset_index(drop=True), placement.weeks.loc[keep].reset_index(drop=True)
