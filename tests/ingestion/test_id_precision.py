"""IDs rounded in transit: by their precision (a batch property) and by spec_obj_ID's bit packing (per row)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stellar_core.contract import ID_COLUMNS
from stellar_core.quality import PACKING_EXPECTATION, PRECISION_EXPECTATION, id_outcomes, validate_observations
from stellar_core.sources.simulator import simulate_weeks
from stellar_core.weeks import week_keys_for_mjds


def failed(report) -> dict[tuple[str, str], object]:
    return {(o.name, o.column): o for o in report.failures}


def rounded(frame: pd.DataFrame, digits: int) -> pd.DataFrame:
    """IDs as a spreadsheet or a scientific-notation export writes them."""
    out = frame.copy()
    for column in ID_COLUMNS:
        out[column] = [float(f"{v:.{digits - 1}e}") for v in out[column]]
    return out


@pytest.mark.parametrize("digits", [10, 15])
def test_ids_rounded_below_the_source_precision_fail(sdss_sample, digits):
    raw = rounded(sdss_sample.head(500), digits)
    failures = failed(validate_observations(raw))
    for column in ID_COLUMNS:
        outcome = failures[(PRECISION_EXPECTATION, column)]
        assert f"IDs carry at most {digits} significant digits; the source format carries 16-17" in outcome.explanation
        assert "re-export IDs as text" in outcome.explanation
        assert outcome.unexpected_count == 500
        assert outcome.examples and set(outcome.examples) <= set(raw[column])


def test_genuine_ids_pass_in_every_week_alone(sdss_sample):
    weeks = week_keys_for_mjds(sdss_sample["MJD"].to_numpy())
    failures = [(week, o.name, o.column) for week, part in sdss_sample.groupby(weeks)
                for o in id_outcomes(part) if not o.success]
    assert failures == []


def test_a_few_ids_cannot_tell_rounding_from_chance(sdss_sample):
    # 11.5% of genuine spec_obj_IDs carry <= 15 digits: three such IDs happen 1.5e-3 of the time, four 1.7e-4.
    raw = rounded(sdss_sample.head(4), 15)
    assert all(o.success for o in id_outcomes(raw.head(3)) if o.column == "spec_obj_ID")
    assert not [o for o in id_outcomes(raw) if o.name == PRECISION_EXPECTATION and o.column == "spec_obj_ID"][0].success


def test_integer_ids_are_judged_without_trailing_zeros(sdss_sample):
    raw = sdss_sample.head(200).copy()
    raw["obj_ID"] = np.array([int(v) for v in raw["obj_ID"]], dtype=np.int64)
    raw["spec_obj_ID"] = np.array([int(v) for v in raw["spec_obj_ID"]], dtype=np.uint64)
    assert all(o.success for o in id_outcomes(raw))
    raw["obj_ID"] = np.array([int(float(f"{v:.9e}")) for v in raw["obj_ID"]], dtype=np.int64)
    outcome = [o for o in id_outcomes(raw) if o.column == "obj_ID"][0]
    assert not outcome.success
    assert "at most 10 significant digits; the source format carries 18-20" in outcome.explanation


@pytest.mark.parametrize(("column", "shift"), [("MJD", 123), ("plate", 1), ("fiber_ID", 7)])
def test_a_row_whose_id_encodes_another_spectrum_fails(sdss_sample, column, shift):
    raw = sdss_sample.head(50).copy()
    original = int(raw.loc[7, column])
    raw.loc[7, column] = original + shift  # e.g. a spectrum re-dated into another week
    failures = failed(validate_observations(raw))
    assert list(failures) == [(PACKING_EXPECTATION, "spec_obj_ID")]
    outcome = failures[(PACKING_EXPECTATION, "spec_obj_ID")]
    assert outcome.unexpected_count == 1
    assert outcome.examples == [
        f"spec_obj_ID {float(raw.loc[7, 'spec_obj_ID'])!r} (row 7): "
        f"{column} {original + shift} in the row, {original} in spec_obj_ID"]
    assert f"{column} 1" in outcome.explanation


@pytest.mark.parametrize("digits", [10, 12, 14])
def test_rounded_ids_fail_the_packing_row_by_row(sdss_sample, digits):
    raw = rounded(sdss_sample, digits)
    outcome = [o for o in id_outcomes(raw) if o.name == PACKING_EXPECTATION][0]
    assert not outcome.success
    # Measured on the sample: 97.6%, 46% and 5.4% of rows disagree at 10, 12 and 14 digits.
    share = {10: 0.97, 12: 0.45, 14: 0.05}[digits]
    assert outcome.unexpected_count > share * len(raw)


def test_rows_without_numbers_are_left_to_the_other_expectations(sdss_sample):
    raw = sdss_sample.head(50).copy()
    raw["MJD"] = raw["MJD"].astype(object)
    raw.loc[3, "MJD"] = "n/a"
    raw.loc[4, "spec_obj_ID"] = np.nan
    failures = failed(validate_observations(raw))
    assert ("expect_column_values_to_be_in_type_list", "MJD") in failures
    assert ("expect_column_values_to_not_be_null", "spec_obj_ID") in failures
    assert (PACKING_EXPECTATION, "spec_obj_ID") not in failures


def test_simulated_uint64_ids_decode_and_a_moved_one_fails():
    raw = simulate_weeks(["2010-01-03", "2010-01-10"], rows_mean=60)
    assert raw["spec_obj_ID"].dtype == np.uint64
    assert all(o.success for o in id_outcomes(raw))
    raw.loc[2, "MJD"] += 7
    packing = [o for o in id_outcomes(raw) if o.name == PACKING_EXPECTATION][0]
    assert not packing.success and packing.unexpected_count == 1


def test_rounded_ids_mixed_with_genuine_ones_still_fail(sdss_sample):
    """One genuine row used to be enough to pass a batch of 500 rounded IDs."""
    raw = pd.concat([sdss_sample.head(1), rounded(sdss_sample.iloc[1:501], 15)], ignore_index=True)
    outcome = failed(validate_observations(raw))[(PRECISION_EXPECTATION, "spec_obj_ID")]
    assert outcome.unexpected_count >= 500 and "of 501 IDs carry at most 15 significant digits" in outcome.explanation


def test_one_rounded_week_inside_a_genuine_batch_fails_as_that_week(sdss_sample):
    weeks = pd.Series(week_keys_for_mjds(sdss_sample["MJD"].to_numpy()), index=sdss_sample.index)
    busiest = weeks.value_counts().index[0]
    raw = sdss_sample.copy()
    in_week = weeks == busiest
    raw.loc[in_week, "spec_obj_ID"] = rounded(raw.loc[in_week], 15)["spec_obj_ID"].to_numpy()
    report = validate_observations(raw, weeks)
    assert [(o.name, o.column, o.week) for o in report.failures] == [(PRECISION_EXPECTATION, "spec_obj_ID", busiest)]


def test_genuine_ids_pass_in_every_year_and_era(sdss_sample):
    """The share of short genuine IDs moves with the era (5% to 21%): large genuine batches must still pass."""
    year = ((sdss_sample["MJD"] - 51544) // 365 + 2000).to_numpy()
    batches = [part for _, part in sdss_sample.groupby(year)]
    batches += [sdss_sample.loc[(year >= 2015) & (year <= 2017)], sdss_sample]
    assert [o for part in batches for o in id_outcomes(part) if not o.success] == []
