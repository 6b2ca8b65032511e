"""What a new batch of rows would do to a stored week: rows added, removed, changed.

Rows are matched by spec_obj_ID (one row per spectrum). A week's content
version is a hash of its rows in ID order, so the same rows always give the
same version and Dagster's staleness follows real changes only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stellar_core.contract import FLOAT_COLUMNS, INTEGER_COLUMNS, MJD_COLUMN, OBJECT_ID_COLUMN

# The spectrum's own coordinates: an ID that changes while these stay is a re-keyed row.
SPECTRUM_KEY = ("plate", MJD_COLUMN, "fiber_ID")


@dataclass(frozen=True)
class WeekChange:
    week: str
    stored_rows: int | None  # None: the week was never stored
    new_rows: int
    added: int = 0
    removed: int = 0
    changed: int = 0
    rounded_ids: list[str] = field(default_factory=list)  # stored IDs the batch replaces by rounded ones

    @property
    def shrinks(self) -> bool:
        return self.stored_rows is not None and self.new_rows < self.stored_rows

    @property
    def status(self) -> str:
        if self.stored_rows is None:
            return "new"
        if self.added or self.removed or self.changed:
            return "changed"
        return "unchanged"

    def describe(self) -> str:
        if self.stored_rows is None:
            return f"new week: {self.new_rows} rows"
        if self.status == "unchanged":
            return f"unchanged: {self.new_rows} rows, identical to the stored ones"
        return (f"{self.added} rows added, {self.removed} removed, {self.changed} changed "
                f"({self.stored_rows} -> {self.new_rows} rows)")

    def as_dict(self) -> dict:
        return {"week": self.week, "status": self.status, "stored_rows": self.stored_rows,
                "new_rows": self.new_rows, "added": self.added, "removed": self.removed,
                "changed": self.changed}


def compare_week(week: str, stored: pd.DataFrame | None, new: pd.DataFrame) -> WeekChange:
    """How `new` differs from the `stored` rows of the same week (None: nothing stored)."""
    if stored is None:
        return WeekChange(week, None, len(new), added=len(new))
    if OBJECT_ID_COLUMN not in stored.columns or OBJECT_ID_COLUMN not in new.columns:
        same = content_version(stored) == content_version(new)
        return WeekChange(week, len(stored), len(new), changed=0 if same else len(new))
    old_rows, new_rows = _row_hashes(stored, new)
    old_ids, new_ids = set(old_rows), set(new_rows)
    changed = sum(1 for k in old_ids & new_ids if old_rows[k] != new_rows[k])
    return WeekChange(week, len(stored), len(new), added=len(new_ids - old_ids), removed=len(old_ids - new_ids),
                      changed=changed, rounded_ids=_rounded_replacements(stored, new, old_ids - new_ids))


EMPTY_VERSION = "empty"


def content_version(frame: pd.DataFrame) -> str:
    """A short hash of the rows, independent of their order."""
    if frame.empty:
        return EMPTY_VERSION
    ordered = frame.sort_values(OBJECT_ID_COLUMN, kind="stable") if OBJECT_ID_COLUMN in frame.columns else frame
    return _version_of(frame.columns, pd.util.hash_pandas_object(_by_value(ordered), index=False).to_numpy())


def content_versions_by_week(frame: pd.DataFrame, weeks: pd.Series, keys: list[str]) -> dict[str, str]:
    """content_version of each week's rows of `frame` (`weeks`: each row's week), the same strings as
    calling it on each week's part: the batch's row hashes are computed once (a call per week costs
    milliseconds, seconds over the survey), then each week hashes its rows' in its own ID order."""
    if frame.empty:
        return {key: EMPTY_VERSION for key in keys}
    row_hashes = pd.util.hash_pandas_object(_by_value(frame), index=False).to_numpy()
    positions = pd.Series(np.arange(len(frame))).groupby(np.asarray(weeks), sort=False).indices
    versions = {}
    for key in keys:
        rows = positions.get(key)
        if rows is None:
            versions[key] = EMPTY_VERSION
            continue
        if OBJECT_ID_COLUMN in frame.columns:  # content_version's order: a stable sort on the ID
            rows = rows[frame[OBJECT_ID_COLUMN].iloc[rows].reset_index(drop=True).sort_values(kind="stable").index]
        versions[key] = _version_of(frame.columns, row_hashes[rows])
    return versions


def _version_of(columns, row_hashes: np.ndarray) -> str:
    return hashlib.sha256(",".join(map(str, columns)).encode() + row_hashes.tobytes()).hexdigest()[:16]


def _row_hashes(stored: pd.DataFrame, new: pd.DataFrame) -> tuple[dict, dict]:
    columns = [c for c in new.columns if c in stored.columns]

    def by_id(frame: pd.DataFrame) -> dict:
        hashes = pd.util.hash_pandas_object(_by_value(frame[columns]), index=False).to_numpy()
        return dict(zip(frame[OBJECT_ID_COLUMN].tolist(), hashes.tolist()))

    return by_id(stored), by_id(new)


def _by_value(frame: pd.DataFrame) -> pd.DataFrame:
    """Measurement and bookkeeping columns as float64, so that a column read as float in one file
    (one blank cell makes pandas do that) and as int in another hashes the same for the same values."""
    numeric = [c for c in (*FLOAT_COLUMNS, *INTEGER_COLUMNS) if c in frame.columns
               and pd.api.types.is_numeric_dtype(frame[c])]
    return frame.astype({c: "float64" for c in numeric}) if numeric else frame


def _rounded_replacements(stored: pd.DataFrame, new: pd.DataFrame, removed_ids: set) -> list[str]:
    """Stored IDs whose spectrum (plate, MJD, fibre) arrives under a rounded version of the ID."""
    if not removed_ids or not all(c in stored.columns and c in new.columns for c in SPECTRUM_KEY):
        return []
    gone = stored.loc[stored[OBJECT_ID_COLUMN].isin(removed_ids), [*SPECTRUM_KEY, OBJECT_ID_COLUMN]]
    pairs = gone.merge(new[[*SPECTRUM_KEY, OBJECT_ID_COLUMN]], on=list(SPECTRUM_KEY), suffixes=("_stored", "_new"))
    rounded = [_as_int(old) for old, incoming in zip(pairs[f"{OBJECT_ID_COLUMN}_stored"], pairs[f"{OBJECT_ID_COLUMN}_new"])
               if is_rounding_of(incoming, old)]
    return rounded


def significant_digits(value) -> int:
    """Significant digits of a number as its shortest exact text writes it."""
    if isinstance(value, (int, np.integer)):
        return len(str(abs(int(value))).rstrip("0")) or 1
    mantissa = repr(float(value)).split("e")[0].replace("-", "").replace(".", "")
    return len(mantissa.lstrip("0").rstrip("0")) or 1


def is_rounding_of(candidate, original) -> bool:
    """True when `candidate` is `original` rounded to fewer significant digits."""
    try:
        digits = significant_digits(candidate)
        if digits >= significant_digits(original):
            return False
        return float(f"{float(original):.{digits - 1}e}") == float(candidate)
    except (TypeError, ValueError, OverflowError):
        return False


def _as_int(value) -> str:
    try:
        return str(int(float(value)))
    except (TypeError, ValueError, OverflowError):
        return str(value)
