"""Pure logic: weeks, features, cleaning, the simulator, and the no-Dagster boundary."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from stellar_core.features import FEATURE_NAMES, build_features, derive_feature_matrix
from stellar_core.sources.simulator import Drift, simulate_week
from stellar_core.weeks import mjd_to_date, mjd_to_week_key, week_keys_for_mjds


def test_mjd_epoch_and_weeks_start_on_sunday():
    assert mjd_to_date(51544) == dt.date(2000, 1, 1)
    assert mjd_to_week_key(51608) == "2000-03-05"  # first DR17 spectrum: a Sunday
    assert mjd_to_week_key(58932) == "2020-03-22"  # last: Tuesday 2020-03-24
    mjds = np.arange(51544, 51544 + 400)
    vectorised = week_keys_for_mjds(mjds)
    assert list(vectorised) == [mjd_to_week_key(m) for m in mjds]
    assert {dt.date.fromisoformat(k).weekday() for k in vectorised} == {6}


def test_sample_covers_643_weeks(sdss_sample):
    table, report = build_features(sdss_sample)
    assert report.rows_out == len(sdss_sample) == 20000
    assert table["week"].nunique() == 643
    assert table["object_id"].is_unique


def test_features_are_colours_without_bookkeeping(sdss_sample):
    table, _ = build_features(sdss_sample.head(100))
    row = sdss_sample.iloc[0]
    assert table.loc[0, "u_g"] == pytest.approx(row["u"] - row["g"], abs=1e-4)
    assert table.loc[0, "r_z"] == pytest.approx(row["r"] - row["z"], abs=1e-4)
    for leaking in ("plate", "MJD", "fiber_ID", "spec_obj_ID", "obj_ID", "alpha", "delta", "run_ID"):
        assert leaking not in FEATURE_NAMES
    assert table["object_id"].iloc[0] == str(int(row["spec_obj_ID"]))


def test_cleaning_counts_every_dropped_row(sdss_sample):
    raw = sdss_sample.head(10).copy()
    raw.loc[0, ["u", "g", "z"]] = -9999.0  # the SDSS17 sentinel row
    raw.loc[1, "r"] = np.nan
    raw.loc[2, "redshift"] = 42.0
    raw.loc[3, "class"] = "PLANET"
    table, report = build_features(raw)
    assert len(table) == 6
    assert report.dropped == {"sentinel_magnitude": 1, "missing_or_non_numeric": 1,
                              "redshift_out_of_range": 1, "unknown_class": 1}


def test_derive_feature_matrix_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \[n, 6\]"):
        derive_feature_matrix(np.zeros((2, 5), dtype=np.float32))


def test_simulator_is_deterministic_and_drifts():
    a = simulate_week("2010-01-03")
    b = simulate_week("2010-01-03")
    pd.testing.assert_frame_equal(a, b)
    assert set(a["class"]) <= {"STAR", "GALAXY", "QSO"}
    assert a["MJD"].map(mjd_to_week_key).eq("2010-01-03").all()
    shifted = simulate_week("2010-01-03", drift=Drift("feature_shift", 1.0), rows_mean=400)
    base = simulate_week("2010-01-03", rows_mean=400)
    assert shifted["u"].median() > base["u"].median() + 0.8
    quasars = simulate_week("2010-01-03", drift=Drift("class_mix", 1.0), rows_mean=400)
    assert (quasars["class"] == "QSO").mean() > 0.5
    with pytest.raises(ValueError, match="unknown drift scenario"):
        Drift("earthquake", 0.5)


def test_pure_modules_import_neither_dagster_nor_mlflow():
    code = (
        "import sys, stellar_core.features, stellar_core.contract, stellar_core.weeks, stellar_core.quality, "
        "stellar_core.sources.simulator, stellar_core.sources.skyserver, stellar_core.sources.sdss_csv, "
        "stellar_core.model_bundle\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('dagster', 'mlflow')]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
