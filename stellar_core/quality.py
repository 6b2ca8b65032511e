"""Data-quality gate for raw observations, as a great-expectations (GX Core 1.x) suite.

The suite states what an SDSS17 row must look like; `validate_observations`
runs it on a DataFrame and returns, per expectation, whether it held, how many
rows broke it and a few examples, in a form the Dagster check metadata shows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache

import pandas as pd

from stellar_core.contract import (
    CLASSES,
    FLOAT_COLUMNS,
    ID_COLUMNS,
    INTEGER_COLUMNS,
    LABEL_COLUMN,
    MAGNITUDE_BANDS,
    MAGNITUDE_RANGE,
    OBJECT_ID_COLUMN,
    REDSHIFT_RANGE,
    SDSS17_COLUMNS,
    SENTINEL_THRESHOLD,
)

# No usage analytics from a pipeline run.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

# Out-of-range values beyond 1% of a batch mean a broken export, not noise.
RANGE_MOSTLY = 0.99
MAX_NULL_SHARE = 0.01

NUMERIC_TYPES = ["int64", "int32", "uint64", "float64", "float32", "Int64", "Float64"]


@dataclass
class ExpectationOutcome:
    name: str
    column: str | None
    success: bool
    unexpected_count: int = 0
    unexpected_percent: float = 0.0
    examples: list = field(default_factory=list)
    explanation: str = ""

    def as_dict(self) -> dict:
        return {
            "expectation": self.name, "column": self.column, "success": self.success,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": round(self.unexpected_percent, 3),
            "examples": self.examples, "explanation": self.explanation,
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
    # -9999 is SDSS's "no measurement", not a bad value: features drop and count those rows.
    exps += [E.ExpectColumnValuesToBeBetween(column=b, min_value=MAGNITUDE_RANGE[0], max_value=MAGNITUDE_RANGE[1],
                                             mostly=RANGE_MOSTLY, row_condition=f"{b} > {SENTINEL_THRESHOLD}",
                                             condition_parser="pandas") for b in MAGNITUDE_BANDS]
    exps.append(E.ExpectColumnValuesToBeBetween(column="redshift", min_value=REDSHIFT_RANGE[0],
                                                max_value=REDSHIFT_RANGE[1], mostly=RANGE_MOSTLY))
    exps.append(E.ExpectColumnValuesToBeUnique(column=OBJECT_ID_COLUMN))
    exps += [E.ExpectColumnValuesToNotBeNull(column=c, mostly=1 - MAX_NULL_SHARE)
             for c in (*MAGNITUDE_BANDS, "redshift", LABEL_COLUMN, OBJECT_ID_COLUMN)]
    return exps


@lru_cache(maxsize=1)
def _validation_definition():
    """One ephemeral GX context per process: building it costs about a second."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas("stellar")
        .add_dataframe_asset("raw_observations")
        .add_batch_definition_whole_dataframe("batch")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="raw_observations", expectations=build_expectations()))
    return context.validation_definitions.add(gx.ValidationDefinition(name="raw_observations", data=batch, suite=suite))


def validate_observations(frame: pd.DataFrame) -> QualityReport:
    definition = _validation_definition()
    result = definition.run(batch_parameters={"dataframe": frame},
                            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5})
    outcomes = [_outcome(r, frame) for r in result.results]
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
        hint = ""
        if _looks_rounded(ids):
            hint = (" - the IDs carry at most 6 significant digits, as after a spreadsheet round trip: "
                    "distinct spectra collapsed onto one ID; re-export with IDs as text")
        return f"{dup.nunique()} {column} values are shared by {len(dup)} rows{hint}"
    if kind == "expect_column_values_to_be_in_set":
        return f"values outside {list(CLASSES)}"
    if kind == "expect_column_values_to_be_between":
        return f"{details.get('unexpected_count', 0)} values outside the physical range (more than {100 * (1 - RANGE_MOSTLY):.0f}% allowed)"
    if kind == "expect_column_values_to_not_be_null":
        return f"more than {100 * MAX_NULL_SHARE:.0f}% of {column!r} is missing"
    return ""


def _is_numeric_or_label(frame: pd.DataFrame, column: str) -> bool:
    return column == LABEL_COLUMN or pd.api.types.is_numeric_dtype(frame[column])


def _looks_rounded(ids: pd.Series) -> bool:
    values = pd.to_numeric(ids, errors="coerce").dropna()
    if values.empty:
        return False
    sample = values.head(200)
    return bool(all(len(f"{v:.15e}".split("e")[0].replace(".", "").rstrip("0")) <= 6 for v in sample))


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
