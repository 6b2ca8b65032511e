"""The great-expectations suite on real and deliberately broken SDSS data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stellar_core.quality import PACKING_EXPECTATION, PRECISION_EXPECTATION, validate_observations, weekly_outcomes
from stellar_core.weeks import week_keys_for_mjds


def failed(report) -> dict[tuple[str, str], object]:
    return {(o.name, o.column): o for o in report.failures}


def weeks_of(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(week_keys_for_mjds(frame["MJD"].to_numpy()), index=frame.index)


def test_real_sample_passes(sdss_sample):
    report = validate_observations(sdss_sample)
    assert report.success, report.summary()


def test_real_data_passes_week_by_week(sdss_sample, excel_rounded_path):
    report = validate_observations(sdss_sample, weeks_of(sdss_sample))
    assert report.success, report.summary()
    # The rounded file's magnitudes, redshifts and classes are genuine: 30k more rows, no week may fail
    # a tolerance; its IDs are not, and every week with enough of them says so.
    genuine = pd.read_csv(excel_rounded_path)
    outcomes = weekly_outcomes(genuine, weeks_of(genuine))
    assert [o for o in outcomes if o.name != PRECISION_EXPECTATION] == []
    assert {o.column for o in outcomes} == {"obj_ID", "spec_obj_ID"}


def test_excel_rounded_ids_fail_uniqueness_with_the_reason(excel_rounded_path):
    report = validate_observations(pd.read_csv(excel_rounded_path))
    failures = failed(report)
    # Rounded IDs also lose their precision and their plate/fibre/MJD packing.
    assert set(failures) == {
        ("expect_column_values_to_be_unique", "spec_obj_ID"),
        (PRECISION_EXPECTATION, "obj_ID"), (PRECISION_EXPECTATION, "spec_obj_ID"),
        (PACKING_EXPECTATION, "spec_obj_ID"),
    }
    outcome = failures[("expect_column_values_to_be_unique", "spec_obj_ID")]
    assert outcome.unexpected_count > 1000
    assert "spreadsheet" in outcome.explanation and "6 significant digits" in outcome.explanation
    assert outcome.examples


def test_broken_rows_each_fail_their_expectation(sdss_sample):
    raw = sdss_sample.head(50).copy()
    raw.loc[4, "class"] = "PLANET"
    raw.loc[5:9, "u"] = 45.0  # 10% impossible magnitudes: a broken export
    raw["g"] = raw["g"].astype(object)
    raw.loc[6, "g"] = "n/a"
    raw = raw.drop(columns=["plate"])
    failures = failed(validate_observations(raw))
    assert ("expect_column_to_exist", "plate") in failures
    assert "missing" in failures[("expect_column_to_exist", "plate")].explanation
    assert ("expect_column_values_to_be_in_set", "class") in failures
    assert failures[("expect_column_values_to_be_in_set", "class")].examples == ["PLANET"]
    assert ("expect_column_values_to_be_in_type_list", "g") in failures
    assert ("expect_column_values_to_be_between", "u") in failures
    assert failures[("expect_column_values_to_be_between", "u")].unexpected_count == 5


def test_sentinel_rows_pass_on_and_are_counted(sdss_sample):
    raw = sdss_sample.head(20).copy()
    raw.loc[0, ["u", "g", "z"]] = -9999.0  # as in the full SDSS17 file
    report = validate_observations(raw)
    assert report.success, report.summary()
    assert report.sentinel_rows == 1


def test_null_share(sdss_sample):
    raw = sdss_sample.head(100).copy()
    raw.loc[:4, "redshift"] = np.nan
    assert ("expect_column_values_to_not_be_null", "redshift") in failed(validate_observations(raw))


def test_empty_week_passes(sdss_sample):
    assert validate_observations(sdss_sample.head(0)).success


def test_text_in_a_numeric_column_is_shown_by_its_tokens(sdss_sample):
    raw = sdss_sample.head(50).copy()
    raw["g"] = raw["g"].astype(object)
    raw.loc[6, "g"] = "n/a"
    raw.loc[9, "g"] = "12,5"
    outcome = failed(validate_observations(raw))[("expect_column_values_to_be_in_type_list", "g")]
    assert outcome.examples == ["n/a", "12,5"]
    assert outcome.unexpected_count == 2
    assert "'n/a' (row 6)" in outcome.explanation and "'12,5' (row 9)" in outcome.explanation


def test_every_row_needs_a_spec_obj_id(sdss_sample):
    raw = sdss_sample.head(200).copy()
    raw.loc[17, "spec_obj_ID"] = np.nan  # 0.5%: within the 1% other columns may miss
    outcome = failed(validate_observations(raw))[("expect_column_values_to_not_be_null", "spec_obj_ID")]
    assert outcome.unexpected_count == 1
    assert "1 row lacks a spec_obj_ID" in outcome.explanation


def test_a_week_of_unphysical_rows_fails_inside_a_large_batch(sdss_sample):
    weeks = weeks_of(sdss_sample)
    sizes = weeks.value_counts()
    week = sizes[sizes == 20].index[0]
    raw = sdss_sample.copy()
    raw.loc[weeks == week, "u"] = 45.0  # 0.1% of the batch, all of the week
    report = validate_observations(raw, weeks)
    assert validate_observations(raw).success  # the blind spot: the batch alone tolerates it
    assert [(o.name, o.column, o.week) for o in report.failures] == [
        ("expect_column_values_to_be_between", "u", week)]
    outcome = report.failures[0]
    assert outcome.explanation.startswith(f"week {week}: 20 of 20 rows outside the physical range [5, 40]")
    assert outcome.unexpected_count == 20 and outcome.examples == [45.0] * 5
    assert outcome.as_dict()["week"] == week
    batch_wide = [o for o in report.outcomes if o.column == "u" and o.name == outcome.name and o.week is None]
    assert len(batch_wide) == 1 and batch_wide[0].success


def test_a_week_missing_its_redshifts_fails(sdss_sample):
    weeks = weeks_of(sdss_sample)
    week = weeks.iloc[0]
    raw = sdss_sample.copy()
    raw.loc[weeks == week, "redshift"] = np.nan
    failures = validate_observations(raw, weeks).failures
    assert [(o.name, o.column, o.week) for o in failures] == [("expect_column_values_to_not_be_null", "redshift", week)]
    assert failures[0].examples == list(raw.index[weeks == week][:5])  # the rows' numbers
    assert f"week {week}: {(weeks == week).sum()} of {(weeks == week).sum()} rows lack 'redshift'" in failures[0].explanation


def test_week_rule_tolerates_one_odd_row_not_two_nor_a_lone_bad_row(sdss_sample):
    raw = sdss_sample.head(90).copy()
    weeks = pd.Series(["2010-01-03"] * 40 + ["2010-01-10"] * 40 + ["2010-01-17"] + ["2010-01-24"] * 9, index=raw.index)
    raw.loc[[0], "redshift"] = 12.0  # 1 of 40: noise
    raw.loc[[40, 41], "redshift"] = 12.0  # 2 of 40: more than 1% and at least 2 rows
    raw.loc[[80], "redshift"] = 12.0  # the week's only row
    raw.loc[[81], "redshift"] = 12.0  # 1 of 9
    report = validate_observations(raw, weeks)
    failing_weeks = [o.week for o in report.failures if o.week is not None]
    assert failing_weeks == ["2010-01-10", "2010-01-17"]


def test_sentinel_rows_are_not_bad_rows_of_their_week(sdss_sample):
    raw = sdss_sample.head(20).copy()
    raw.loc[0, ["u", "g", "z"]] = -9999.0
    weeks = pd.Series(["2010-01-03"] + ["2010-01-10"] * 19, index=raw.index)  # the sentinel row alone in its week
    assert validate_observations(raw, weeks).success


def test_weeks_must_match_the_frame(sdss_sample):
    raw = sdss_sample.head(10)
    with pytest.raises(ValueError, match="frame's index"):
        validate_observations(raw, weeks_of(raw).reset_index(drop=True).iloc[:5])
