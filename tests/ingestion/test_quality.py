"""The great-expectations suite on real and deliberately broken SDSS data."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stellar_core.quality import validate_observations


def failed(report) -> dict[tuple[str, str], object]:
    return {(o.name, o.column): o for o in report.failures}


def test_real_sample_passes(sdss_sample):
    report = validate_observations(sdss_sample)
    assert report.success, report.summary()


def test_excel_rounded_ids_fail_uniqueness_with_the_reason(excel_rounded_path):
    report = validate_observations(pd.read_csv(excel_rounded_path))
    failures = failed(report)
    assert list(failures) == [("expect_column_values_to_be_unique", "spec_obj_ID")]
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
