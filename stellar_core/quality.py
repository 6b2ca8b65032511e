"""Data-quality gate for raw observations, as a great-expectations (GX Core 1.x) suite.

The suite states what an SDSS17 row must look like; `validate_observations`
runs it on a DataFrame and returns, per expectation, whether it held, how many
rows broke it and a few examples, in a form the Dagster check metadata shows.

Three families are computed in pandas beside the GX run and reported the same
way: the IDs' precision (a batch property), the spec_obj_ID bit packing (per
row) and, when the caller says which week each row belongs to, the tolerances
(null share, physical ranges) judged week by week.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats

from stellar_core.contract import (
    CLASSES,
    FLOAT_COLUMNS,
    ID_COLUMNS,
    INTEGER_COLUMNS,
    LABEL_COLUMN,
    MAGNITUDE_BANDS,
    MAGNITUDE_RANGE,
    MJD_COLUMN,
    OBJECT_ID_COLUMN,
    REDSHIFT_RANGE,
    SDSS17_COLUMNS,
    SENTINEL_THRESHOLD,
)

# Out-of-range values beyond 1% of a batch mean a broken export, not noise.
RANGE_MOSTLY = 0.99
MAX_NULL_SHARE = 0.01
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    **{band: MAGNITUDE_RANGE for band in MAGNITUDE_BANDS}, "redshift": REDSHIFT_RANGE,
}
NULL_TOLERANT_COLUMNS: tuple[str, ...] = (*MAGNITUDE_BANDS, "redshift", LABEL_COLUMN)

# A week fails a tolerance when more than its share of rows is bad AND either at
# least this many rows are bad or every row is: one odd row in a week of 30 is
# noise, every row of a week unphysical is a broken export hidden by a big batch.
MIN_BAD_ROWS_IN_WEEK = 2

NUMERIC_TYPES = ["int64", "int32", "uint64", "float64", "float32", "Int64", "Float64"]

PRECISION_EXPECTATION = "expect_column_values_to_carry_source_precision"
PACKING_EXPECTATION = "expect_spec_obj_id_to_encode_plate_fiber_mjd"

# Significant digits (of Python's shortest float repr) of genuine IDs, measured on
# the 20,000-row SDSS17 sample at full precision (IDs are floats, as in the Kaggle file).
GENUINE_ID_DIGITS: dict[str, dict[int, int]] = {
    "spec_obj_ID": {11: 1, 12: 25, 13: 157, 14: 417, 15: 1695, 16: 12715, 17: 4990},
    "obj_ID": {12: 21, 13: 194, 14: 57, 15: 631, 16: 5465, 17: 13632},
}
GENUINE_ID_ROWS = 20_000
# A batch is only judged rounded when all its IDs carry at most this many digits:
# 16-17 is what a float64 ID carries, so fewer is the only sign of rounding.
ROUNDED_MAX_DIGITS = 15
# Fail when a batch this "round" would occur by chance at full precision less often than this.
PRECISION_FALSE_ALARM = 1e-3
# The share of short IDs moves with the survey's era (spec_obj_ID: 5% in 2003, 21% in 2016;
# obj_ID: at most 7.3% in any year of the sample), and IDs of one plate share it. The test for
# "more short IDs than chance" (a rounded part mixed with genuine rows) therefore compares with
# an upper bound over the eras and asks for far stronger evidence.
ERA_MAX_SHORT_SHARE: dict[str, float] = {"spec_obj_ID": 0.25, "obj_ID": 0.10}
EXCESS_FALSE_ALARM = 1e-6
# spec_obj_ID bit layout (SDSS): plate << 50 | fiber << 38 | (MJD - 50000) << 24 | run2d << 10.
PACKED_FIELDS: tuple[tuple[str, int, int, int], ...] = (  # column, shift, mask, offset
    ("plate", 50, 0x3FFF, 0), ("fiber_ID", 38, 0xFFF, 0), (MJD_COLUMN, 24, 0x3FFF, 50000),
)


@dataclass
class ExpectationOutcome:
    name: str
    column: str | None
    success: bool
    unexpected_count: int = 0
    unexpected_percent: float = 0.0
    examples: list = field(default_factory=list)
    explanation: str = ""
    week: str | None = None  # set when the outcome judges one week of the batch

    def as_dict(self) -> dict:
        return {
            "expectation": self.name, "column": self.column, "success": self.success,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": round(self.unexpected_percent, 3),
            "examples": self.examples, "explanation": self.explanation, "week": self.week,
        }


@dataclass
class QualityReport:
    rows: int
    outcomes: list[ExpectationOutcome]
    sentinel_rows: int = 0  # rows with a -9999 magnitude: passed through, dropped by features

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> str:
        if self.success:
            return f"all {len(self.outcomes)} expectations hold on {self.rows} rows"
        parts = [
            f"{o.name}({o.column}): {o.unexpected_count} rows"
            + (f" - {o.explanation}" if o.explanation else "")
            for o in self.failures
        ]
        return f"{len(self.failures)} of {len(self.outcomes)} expectations failed on {self.rows} rows: " + "; ".join(parts)


def build_expectations() -> list:
    import great_expectations as gx

    E = gx.expectations
    exps: list = [E.ExpectColumnToExist(column=c) for c in SDSS17_COLUMNS]
    exps += [E.ExpectColumnValuesToBeInTypeList(column=c, type_list=NUMERIC_TYPES)
             for c in (*FLOAT_COLUMNS, *INTEGER_COLUMNS, *ID_COLUMNS)]
    exps.append(E.ExpectColumnValuesToBeInSet(column=LABEL_COLUMN, value_set=list(CLASSES)))
    for column, (low, high) in PHYSICAL_RANGES.items():
        # -9999 is SDSS's "no measurement", not a bad value: features drop and count those rows.
        sentinel = ({"row_condition": f"{column} > {SENTINEL_THRESHOLD}", "condition_parser": "pandas"}
                    if column in MAGNITUDE_BANDS else {})
        exps.append(E.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high,
                                                    mostly=RANGE_MOSTLY, **sentinel))
    exps.append(E.ExpectColumnValuesToBeUnique(column=OBJECT_ID_COLUMN))
    exps += [E.ExpectColumnValuesToNotBeNull(column=c, mostly=1 - MAX_NULL_SHARE) for c in NULL_TOLERANT_COLUMNS]
    # A row without its spectrum's ID would be stored under an empty ID.
    exps.append(E.ExpectColumnValuesToNotBeNull(column=OBJECT_ID_COLUMN))
    return exps


@lru_cache(maxsize=1)
def _validation_definition():
    """One ephemeral GX context per process: building it costs about a second."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # No usage analytics and no progress bars from a pipeline run; set on the context, not the process.
    config = DataContextConfig(analytics_enabled=False, store_backend_defaults=InMemoryStoreBackendDefaults(),
                               progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False))
    context = gx.get_context(mode="ephemeral", project_config=config)
    batch = (
        context.data_sources.add_pandas("stellar")
        .add_dataframe_asset("raw_observations")
        .add_batch_definition_whole_dataframe("batch")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="raw_observations", expectations=build_expectations()))
    return context.validation_definitions.add(gx.ValidationDefinition(name="raw_observations", data=batch, suite=suite))


def validate_observations(frame: pd.DataFrame, weeks: pd.Series | None = None) -> QualityReport:
    """Run the suite on `frame`; with `weeks` (a week key per row, on the frame's
    index) each week must also keep the tolerances the whole batch keeps."""
    if weeks is not None and not (isinstance(weeks, pd.Series) and weeks.index.equals(frame.index)):
        raise ValueError("weeks must be a pandas Series with the frame's index (one week key per row)")
    definition = _validation_definition()
    result = definition.run(batch_parameters={"dataframe": frame},
                            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5})
    outcomes = [_outcome(r, frame) for r in result.results]
    outcomes += id_outcomes(frame)
    if weeks is not None:
        outcomes += weekly_outcomes(frame, weeks)
    return QualityReport(rows=len(frame), outcomes=outcomes, sentinel_rows=_sentinel_rows(frame))


def _sentinel_rows(frame: pd.DataFrame) -> int:
    bands = [b for b in MAGNITUDE_BANDS if b in frame.columns and pd.api.types.is_numeric_dtype(frame[b])]
    if not bands or frame.empty:
        return 0
    return int((frame[bands] <= SENTINEL_THRESHOLD).any(axis=1).sum())


def _outcome(result, frame: pd.DataFrame) -> ExpectationOutcome:
    config = result.expectation_config
    column = config.kwargs.get("column")
    details = result.result or {}
    outcome = ExpectationOutcome(
        name=config.type, column=column, success=bool(result.success),
        unexpected_count=int(details.get("unexpected_count") or 0),
        unexpected_percent=float(details.get("unexpected_percent") or 0.0),
        examples=[_plain(v) for v in (details.get("partial_unexpected_list") or [])[:5]],
    )
    if not outcome.success:
        outcome.explanation = _explain(config.type, column, details, frame, result)
        if config.type == "expect_column_values_to_be_in_type_list" and column in frame:
            _show_text_values(outcome, frame[column])
    return outcome


def _explain(kind: str, column: str | None, details: dict, frame: pd.DataFrame, result) -> str:
    if column is not None and column not in frame.columns:
        return f"required column {column!r} is missing"
    if column is not None and kind != "expect_column_values_to_be_in_type_list" and not _is_numeric_or_label(frame, column):
        return f"column {column!r} is not numeric (dtype {frame[column].dtype}), so it cannot be tested"
    if kind == "expect_column_values_to_be_in_type_list":
        observed = details.get("observed_value") or (str(frame[column].dtype) if column in frame else "?")
        return f"column {column!r} holds {observed}, not numbers (a text value in a numeric column?)"
    if kind == "expect_column_values_to_be_unique" and column in frame:
        ids = frame[column]
        dup = ids[ids.duplicated(keep=False)]
        digits = rounded_digits(ids, column)
        hint = ""
        if digits is not None:
            hint = (f" - the IDs carry at most {digits} significant digits, as after a spreadsheet round trip: "
                    "distinct spectra collapsed onto one ID; re-export with IDs as text")
        return f"{dup.nunique()} {column} values are shared by {len(dup)} rows{hint}"
    if kind == "expect_column_values_to_be_in_set":
        return f"values outside {list(CLASSES)}"
    if kind == "expect_column_values_to_be_between":
        return f"{details.get('unexpected_count', 0)} values outside the physical range (more than {100 * (1 - RANGE_MOSTLY):.0f}% allowed)"
    if kind == "expect_column_values_to_not_be_null" and column == OBJECT_ID_COLUMN:
        missing = int(details.get("unexpected_count") or 0)
        rows = "1 row lacks" if missing == 1 else f"{missing} rows lack"
        return f"{rows} a {column}: every row must name its spectrum (it is the stored ID)"
    if kind == "expect_column_values_to_not_be_null":
        return f"more than {100 * MAX_NULL_SHARE:.0f}% of {column!r} is missing"
    return ""


def _show_text_values(outcome: ExpectationOutcome, values: pd.Series) -> None:
    """Point at the values that are not numbers, not at the valid ones GX lists."""
    text = values[values.notna() & pd.to_numeric(values, errors="coerce").isna()]
    if text.empty:
        return
    outcome.unexpected_count = len(text)
    outcome.unexpected_percent = 100.0 * len(text) / len(values)
    outcome.examples = [_plain(v) for v in text.head(5)]
    shown = ", ".join(f"{v!r} (row {row})" for row, v in text.head(5).items())
    outcome.explanation = f"column {outcome.column!r} holds {len(text)} value(s) that are not numbers: {shown}"


def _is_numeric_or_label(frame: pd.DataFrame, column: str) -> bool:
    return column == LABEL_COLUMN or pd.api.types.is_numeric_dtype(frame[column])


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


# --- IDs: the batch's precision and each row's bit packing ---------------------

def id_outcomes(frame: pd.DataFrame) -> list[ExpectationOutcome]:
    """The ID expectations GX has no built-in for, computed in pandas."""
    return [*(precision_outcome(frame, column) for column in ID_COLUMNS), packing_outcome(frame)]


def precision_outcome(frame: pd.DataFrame, column: str) -> ExpectationOutcome:
    """Fails when more of the batch's IDs are short than full precision explains."""
    outcome = ExpectationOutcome(name=PRECISION_EXPECTATION, column=column, success=True)
    if column not in frame.columns:
        return _missing_columns(outcome, [column])
    values = _numeric_ids(frame[column])
    rounding = id_rounding(values, column)
    if rounding is None:
        return outcome
    outcome.success = False
    outcome.unexpected_count = rounding.short
    outcome.unexpected_percent = 100.0 * rounding.short / len(values)
    outcome.examples = [_plain(v) for v in values[rounding.short_mask].drop_duplicates().head(5)]
    outcome.explanation = rounding.explain(values)
    return outcome


@dataclass(frozen=True)
class IdRounding:
    """How many IDs carry 15 significant digits or fewer, and how unlikely that is at full precision."""

    ids: int
    short: int
    most_digits: int  # the most digits among the short IDs
    chance: float  # P(at least `short` of `ids` this short | full precision): a binomial tail
    expected_share: float
    short_mask: np.ndarray

    def explain(self, values: pd.Series) -> str:
        full = "18-20" if pd.api.types.is_integer_dtype(values.dtype) else "16-17"
        odds = f"p = {self.chance:.1e}" if self.chance > 0 else "p < 1e-300"
        return (f"{self.short} of {self.ids} IDs carry at most {self.most_digits} significant digits; the source "
                f"format carries {full}, and at full precision at most {self.expected_share:.1%} are that short by "
                f"chance ({odds}): rounded by a spreadsheet or a scientific-notation export; re-export IDs as text")


def id_rounding(ids: pd.Series, column: str, false_alarm: float = PRECISION_FALSE_ALARM,
                excess_false_alarm: float = EXCESS_FALSE_ALARM) -> IdRounding | None:
    """The IDs' rounding, or None while full precision explains them.

    No single ID tells: 11.5% of genuine float spec_obj_IDs (4.5% of obj_IDs) carry 15
    digits or fewer by chance. Two one-sided tests: every ID short, with the measured
    share to the power of the batch size below `false_alarm` (a small rounded batch);
    or more short IDs than the most any era shows, with a binomial tail below
    `excess_false_alarm` (a rounded part hidden among genuine rows).
    """
    values = _numeric_ids(ids)
    if values.empty:
        return None
    short_mask = short_id_mask(values)
    short, n = int(short_mask.sum()), len(values)
    if not short:
        return None
    chance, share = _rounding_chance(column, short, n, false_alarm, excess_false_alarm)
    if chance is None:
        return None
    most = max(_digits_of(values)(v) for v in values[short_mask])
    return IdRounding(n, short, most, chance, share, short_mask)


def _rounding_chance(column: str, short, ids, false_alarm: float, excess_false_alarm: float):
    """(p-value, share it was tested against) of the test that fires, or (None, None)."""
    all_short = _short_share(column) ** ids if short == ids else 1.0
    if all_short < false_alarm:
        return all_short, _short_share(column)
    excess = float(stats.binom.sf(short - 1, ids, ERA_MAX_SHORT_SHARE[column]))
    if excess < excess_false_alarm:
        return excess, ERA_MAX_SHORT_SHARE[column]
    return None, None


def short_id_mask(values: pd.Series) -> np.ndarray:
    digits_of = _digits_of(values)
    return np.fromiter((digits_of(v) <= ROUNDED_MAX_DIGITS for v in values), dtype=bool, count=len(values))


def rounded_digits(ids: pd.Series, column: str) -> int | None:
    """The digit count of a rounded batch's short IDs, or None while they may carry full precision."""
    rounding = id_rounding(ids, column)
    return None if rounding is None else rounding.most_digits


def _digits_of(values: pd.Series):
    return _integer_digits if pd.api.types.is_integer_dtype(values.dtype) else _float_digits


def _integer_digits(value) -> int:
    return len(str(abs(int(value))).rstrip("0"))


def _float_digits(value) -> int:
    """Significant digits of the shortest repr, as a CSV writer prints the float."""
    mantissa = repr(float(value)).split("e")[0]
    return len(mantissa.replace("-", "").replace(".", "").strip("0"))


def _short_share(column: str) -> float:
    # Integer IDs carry 18-20 digits, so the float shares over-state their chance: a safe bound.
    seen = sum(n for d, n in GENUINE_ID_DIGITS[column].items() if d <= ROUNDED_MAX_DIGITS)
    return max(seen, 3) / GENUINE_ID_ROWS  # never seen in 20,000 rows: the rule-of-three bound, not 0


def _numeric_ids(ids: pd.Series) -> pd.Series:
    return pd.to_numeric(ids, errors="coerce").dropna()


def packing_outcome(frame: pd.DataFrame) -> ExpectationOutcome:
    """Every spec_obj_ID must decode to its own row's plate, fiber_ID and MJD.

    Rows with a missing or non-numeric value are left to the null and type expectations.
    """
    outcome = ExpectationOutcome(name=PACKING_EXPECTATION, column=OBJECT_ID_COLUMN, success=True)
    needed = [OBJECT_ID_COLUMN, *(column for column, *_ in PACKED_FIELDS)]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        return _missing_columns(outcome, missing)
    packed, present, decodable = _as_packed_ids(frame[OBJECT_ID_COLUMN])
    row_values = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                  for c, *_ in PACKED_FIELDS}
    checked = present & np.logical_and.reduce([np.isfinite(v) for v in row_values.values()])
    decoded = {c: ((packed >> np.uint64(shift)) & np.uint64(mask)).astype(np.int64) + offset
               for c, shift, mask, offset in PACKED_FIELDS}
    disagree = {c: checked & decodable & (decoded[c] != row_values[c]) for c in row_values}
    undecodable = checked & ~decodable
    bad = undecodable | np.logical_or.reduce(list(disagree.values()))
    if not bad.any():
        return outcome
    outcome.success = False
    outcome.unexpected_count = int(bad.sum())
    outcome.unexpected_percent = 100.0 * outcome.unexpected_count / int(checked.sum())
    outcome.examples = [_packing_example(frame, position, row_values, decoded, decodable)
                        for position in np.flatnonzero(bad)[:5]]
    counts = ", ".join(f"{c} {int(d.sum())}" for c, d in disagree.items())
    outcome.explanation = (
        f"{outcome.unexpected_count} of {int(checked.sum())} rows: spec_obj_ID does not encode the row's own "
        f"plate, fiber_ID and MJD (rows disagreeing on {counts}; {int(undecodable.sum())} not a 64-bit ID): "
        "IDs rounded in transit, or a spectrum moved to another plate, fibre or date (so another week)")
    return outcome


def _as_packed_ids(ids: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IDs as uint64 (int(float) for float IDs), with which rows hold a number and which fit 64 bits."""
    values = pd.to_numeric(ids, errors="coerce")
    present = values.notna().to_numpy()
    if pd.api.types.is_integer_dtype(values.dtype):
        decodable = present & (values.fillna(0) >= 0).to_numpy()
        return values.where(decodable, 0).to_numpy(dtype=np.uint64), present, decodable
    floats = values.to_numpy(dtype=float, na_value=np.nan)
    decodable = np.isfinite(floats) & (floats >= 0) & (floats < 2.0 ** 64)
    return np.where(decodable, floats, 0).astype(np.uint64), present, decodable


def _packing_example(frame, position, row_values, decoded, decodable) -> str:
    row = frame.index[position]
    head = f"spec_obj_ID {_plain(frame[OBJECT_ID_COLUMN].iloc[position])} (row {row})"
    if not decodable[position]:
        return f"{head}: not a 64-bit packed ID"
    parts = [f"{c} {_number(row_values[c][position])} in the row, {decoded[c][position]} in spec_obj_ID"
             for c in row_values if decoded[c][position] != row_values[c][position]]
    return f"{head}: " + "; ".join(parts)


def _number(value: float):
    return int(value) if float(value).is_integer() else value


def _missing_columns(outcome: ExpectationOutcome, columns: list[str]) -> ExpectationOutcome:
    outcome.success = False
    names = ", ".join(map(repr, columns))
    outcome.explanation = f"required column {names} is missing" if len(columns) == 1 else f"required columns {names} are missing"
    return outcome


# --- tolerances judged week by week ----------------------------------------------

def weekly_outcomes(frame: pd.DataFrame, weeks: pd.Series) -> list[ExpectationOutcome]:
    """A failing outcome per week that breaks a batch tolerance: a broken week must not hide in a big batch."""
    codes, keys = pd.factorize(weeks)  # once for all tolerances; rows without a week get -1
    by_week = _WeekCounter(codes, [str(k) for k in keys])
    outcomes = []
    for column, (low, high) in PHYSICAL_RANGES.items():
        if column not in frame.columns or not pd.api.types.is_numeric_dtype(frame[column]):
            continue  # the batch-wide expectation already fails and says why
        values = frame[column]
        measured = (values > SENTINEL_THRESHOLD if column in MAGNITUDE_BANDS else values.notna())
        measured = measured.to_numpy(dtype=bool, na_value=False)  # nullable dtypes compare to NA
        bad = measured & ~values.between(low, high).to_numpy(dtype=bool, na_value=False)
        outcomes += by_week.failing("expect_column_values_to_be_between", column, measured, bad, 1 - RANGE_MOSTLY,
                                    f"outside the physical range [{low:g}, {high:g}]", values.to_numpy())
    outcomes += _weekly_precision_outcomes(frame, by_week)
    for column in NULL_TOLERANT_COLUMNS:
        if column in frame.columns:
            every_row = np.ones(len(frame), dtype=bool)
            outcomes += by_week.failing("expect_column_values_to_not_be_null", column, every_row,
                                        frame[column].isna().to_numpy(), MAX_NULL_SHARE, f"lack {column!r}",
                                        frame.index.to_numpy())  # examples: the rows' numbers
    return outcomes


def _weekly_precision_outcomes(frame: pd.DataFrame, by_week: "_WeekCounter") -> list[ExpectationOutcome]:
    """The rounding tests per week, so a rounded week cannot hide among genuine ones. Each week
    is held to the batch's false-alarm rates divided by the number of weeks (Bonferroni)."""
    outcomes = []
    for column in ("obj_ID", "spec_obj_ID"):
        if column not in frame.columns:
            continue
        numeric = pd.to_numeric(frame[column], errors="coerce")
        counted = numeric.notna().to_numpy()
        values = numeric[counted]
        if values.empty:
            continue
        short = np.zeros(len(frame), dtype=bool)
        short[np.flatnonzero(counted)] = short_id_mask(values)
        ids, short_ids = by_week._per_week(counted), by_week._per_week(short)
        weeks = max(1, len(by_week.keys))
        tests = [(w, _rounding_chance(column, short_ids[w], ids[w], PRECISION_FALSE_ALARM / weeks,
                                      EXCESS_FALSE_ALARM / weeks)[0]) for w in np.flatnonzero(short_ids)]
        chance = dict(tests)
        for week in [w for w, p in tests if p is not None]:
            in_week = (by_week.codes == week) & short
            outcomes.append(ExpectationOutcome(
                name=PRECISION_EXPECTATION, column=column, success=False, week=by_week.keys[week],
                unexpected_count=int(short_ids[week]), unexpected_percent=float(100.0 * short_ids[week] / ids[week]),
                examples=[_plain(v) for v in frame.loc[in_week, column].head(5)],
                explanation=(f"week {by_week.keys[week]}: {short_ids[week]} of {ids[week]} IDs carry 15 significant "
                             f"digits or fewer (p = {chance[week]:.1e} at full precision, tested against "
                             f"{len(by_week.keys)} weeks): rounded IDs")))
    return outcomes


@dataclass
class _WeekCounter:
    codes: np.ndarray  # week number of each row, -1 without a week
    keys: list[str]

    def failing(self, name: str, column: str, counted: np.ndarray, bad: np.ndarray, max_share: float,
                what: str, shown: np.ndarray) -> list[ExpectationOutcome]:
        rows, bad_rows = (self._per_week(mask) for mask in (counted, bad))
        broken = np.flatnonzero((bad_rows > max_share * rows)
                                & ((bad_rows >= MIN_BAD_ROWS_IN_WEEK) | (bad_rows == rows)))
        if not broken.size:
            return []
        rule = (f"a week fails beyond {max_share:.0%} of its rows with at least {MIN_BAD_ROWS_IN_WEEK} "
                "such rows, or when every row is")
        bad_by_week = self._rows_by_week(bad)
        firsts = np.cumsum(bad_rows) - bad_rows  # where each week's bad rows start in bad_by_week
        return [ExpectationOutcome(
            name=name, column=column, success=False, week=self.keys[week],
            unexpected_count=int(bad_rows[week]), unexpected_percent=float(100.0 * bad_rows[week] / rows[week]),
            examples=[_plain(v) for v in shown[bad_by_week[firsts[week]:firsts[week] + min(5, bad_rows[week])]]],
            explanation=f"week {self.keys[week]}: {bad_rows[week]} of {rows[week]} rows {what} ({rule})",
        ) for week in broken]

    def _rows_by_week(self, mask: np.ndarray) -> np.ndarray:
        positions = np.flatnonzero(mask & (self.codes >= 0))
        return positions[np.argsort(self.codes[positions], kind="stable")]

    def _per_week(self, mask: np.ndarray) -> np.ndarray:
        with_week = mask & (self.codes >= 0)
        return np.bincount(self.codes[with_week], minlength=len(self.keys))
