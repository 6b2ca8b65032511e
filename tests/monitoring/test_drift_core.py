"""stellar_core.drift on its own: tests by sample size, thresholds, the small-sample rule, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import dagster as dg
import pytest

from stellar_core.drift import (
    NOT_ENOUGH_DATA,
    DriftInputError,
    DriftThresholds,
    build_drift_report,
    choose_window,
    feature_drift,
    performance_drift,
    prediction_drift,
    rejected_rows_drift,
    retraining_decision,
)
from stellar_core.features import FEATURE_NAMES, build_features
from stellar_core.sources.simulator import Drift, simulate_weeks
from stellar_assets.monitoring.serving_metrics import percentile_ms, week_figures

T = DriftThresholds()


def _normal(n: int, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(shift, 1.0, n)})


def test_small_samples_use_ks_and_large_ones_psi_with_stated_thresholds():
    reference = _normal(5000, seed=1)
    small_same, small_shifted = _normal(60, seed=2), _normal(60, shift=1.0, seed=3)
    large_same, large_shifted = _normal(3000, seed=4), _normal(3000, shift=0.8, seed=5)
    [same] = feature_drift(reference, small_same, ["x"], T)
    [shifted] = feature_drift(reference, small_shifted, ["x"], T)
    assert same["test"] == shifted["test"] == "ks" and same["threshold"] == "p < 0.01"
    assert not same["drifted"] and shifted["drifted"] and shifted["wasserstein_sd"] > 0.7
    [big_same] = feature_drift(reference, large_same, ["x"], T)
    [big_shifted] = feature_drift(reference, large_shifted, ["x"], T)
    assert big_same["test"] == big_shifted["test"] == "psi" and big_same["threshold"] == "PSI >= 0.25"
    assert big_same["statistic"] < 0.05 and not big_same["drifted"]
    assert big_shifted["statistic"] >= 0.25 and big_shifted["drifted"]


def test_ks_threshold_is_bonferroni_over_the_features():
    rows = feature_drift(_normal(500).assign(y=1.0), _normal(40).assign(y=1.0), ["x", "y"], T)
    assert {r["threshold"] for r in rows} == {"p < 0.005"}


def test_too_few_rows_is_not_enough_data_never_an_alarm():
    raw = simulate_weeks(["2012-01-01"], rows_mean=200, drift=Drift("feature_shift", 1.0), seed=3)
    table, _ = build_features(raw)
    reference, _ = build_features(simulate_weeks(["2011-01-02", "2011-01-09"], rows_mean=200))
    small = table.head(12)  # drifted as much as the simulator allows, but only 12 rows
    report = build_drift_report(
        reference=reference, current=small, features=FEATURE_NAMES, current_predictions=["STAR"] * 12,
        reference_predictions=list(reference["label"]), labels=["GALAXY"] * 12, champion_accuracy=0.97,
        rows_in=12, rows_rejected=0, reference_rows_in=len(reference), reference_rows_rejected=0)
    assert report["status"] == NOT_ENOUGH_DATA and not report["drift_detected"]
    assert not any(report["flags"].values()) and "not enough data" in report["reason"]
    # The same drift with enough rows is caught.
    full = build_drift_report(
        reference=reference, current=table, features=FEATURE_NAMES,
        current_predictions=list(table["label"]), reference_predictions=list(reference["label"]),
        labels=list(table["label"]), champion_accuracy=0.97, rows_in=len(table), rows_rejected=0,
        reference_rows_in=len(reference), reference_rows_rejected=0)
    assert full["status"] == "drift" and full["flags"]["data_drift"] and "u" in full["drifted_features"]


def test_class_share_bounds_use_a_confidence_interval_and_the_reference():
    reference = ["GALAXY"] * 50 + ["STAR"] * 40 + ["QSO"] * 10
    stars = prediction_drift(["STAR"] * 96 + ["GALAXY"] * 4, reference, T)
    # STAR above 90%, GALAXY (4%) and QSO (0%) below 10% while the reference had them inside
    assert stars["drifted"] and {o["class"] for o in stars["classes_out_of_bounds"]} == {"STAR", "GALAXY", "QSO"}
    # 27 of 30 is 90% but its interval reaches far below: not by itself out of bounds.
    borderline = prediction_drift(["STAR"] * 27 + ["GALAXY"] * 3, ["STAR"] * 80 + ["GALAXY"] * 20, T)
    assert borderline["classes_out_of_bounds"] == []
    # Quasars rare already in the reference (5%): rare now is no alarm.
    rare = ["GALAXY"] * 60 + ["STAR"] * 35 + ["QSO"] * 5
    assert not prediction_drift(["GALAXY"] * 62 + ["STAR"] * 38, rare, T)["drifted"]
    with pytest.raises(DriftInputError, match="unknown classes"):
        prediction_drift(["STAR", "PLANET"] * 20, reference, T)


def test_performance_drift_needs_a_real_drop_not_bad_luck():
    ok = performance_drift(["STAR"] * 22, ["STAR"] * 20 + ["GALAXY"] * 2, 0.97, T)  # 91%: small week, chance
    assert ok["status"] == NOT_ENOUGH_DATA  # 22 rows < 30
    chance = performance_drift(["STAR"] * 40, ["STAR"] * 37 + ["GALAXY"] * 3, 0.97, T)  # 92.5%
    assert not chance["drifted"] and chance["p_value"] > 0.01
    real = performance_drift(["STAR"] * 60, ["STAR"] * 48 + ["GALAXY"] * 12, 0.97, T)  # 80%
    assert real["drifted"] and real["drop"] == pytest.approx(0.17)
    with pytest.raises(DriftInputError, match="labels but"):
        performance_drift(["STAR"], [], 0.9, T)


def test_rejected_rows_rise_and_bad_counts():
    assert rejected_rows_drift(100, 15, 5000, 10, T)["drifted"]
    assert not rejected_rows_drift(100, 1, 5000, 10, T)["drifted"]
    with pytest.raises(DriftInputError, match="more rows rejected"):
        rejected_rows_drift(10, 11, 100, 0, T)


def test_window_grows_back_until_enough_rows():
    rows = {"2012-01-01": 25, "2012-01-08": 0, "2012-01-15": 10, "2012-01-22": 40}
    assert choose_window(rows, "2012-01-22", T) == ["2012-01-22"]
    assert choose_window(rows, "2012-01-15", T) == ["2012-01-01", "2012-01-08", "2012-01-15"]
    with pytest.raises(DriftInputError, match="not among"):
        choose_window(rows, "2013-01-06", T)
    with pytest.raises(DriftInputError, match="min_rows"):
        DriftThresholds(min_rows=1)


def test_retraining_decision_run_key_and_cool_down():
    go = retraining_decision("2012-03-04", "drift", ["data_drift"], None, 4, False)
    assert go.retrain and go.run_key == "drift-retrain-2012-03-04"
    assert not retraining_decision("2012-03-04", "drift", ["data_drift"], None, 4, True).retrain
    cooling = retraining_decision("2012-03-18", "drift", ["prediction_drift"], "2012-03-04", 4, False)
    assert not cooling.retrain and "cool-down" in cooling.reason and "2 week(s) ago" in cooling.reason
    assert retraining_decision("2012-04-01", "drift", ["prediction_drift"], "2012-03-04", 4, False).retrain
    assert "not enough data" in retraining_decision("2012-03-04", NOT_ENOUGH_DATA, [], None, 4, False).reason
    quiet = retraining_decision("2012-03-04", "tested", [], None, 4, False, "stable: champion right on 290 of 300")
    assert not quiet.retrain and "no trigger fired" in quiet.reason and "stable: champion right" in quiet.reason
    degraded = retraining_decision("2012-03-04", "tested", ["champion_degraded"], None, 4, False, "degraded: p=0.001")
    assert degraded.retrain and "triggered by champion_degraded (degraded: p=0.001)" in degraded.reason


def test_serving_figures_difference_counters_and_percentiles():
    previous = {"requests": 100.0, "errors": 1.0, "objects": 1000.0, "latency_count": 100.0,
                "buckets": {"0.001": 50.0, "0.01": 100.0, "+Inf": 100.0}, "model_versions": ["1"]}
    current = {"requests": 300.0, "errors": 5.0, "objects": 3000.0, "latency_count": 300.0,
               "buckets": {"0.001": 150.0, "0.01": 290.0, "+Inf": 300.0}, "model_versions": ["2"]}
    week = week_figures(current, previous)
    assert week["requests"] == 200 and week["errors"] == 4 and week["error_rate"] == pytest.approx(0.02)
    assert week["model_versions"] == ["1", "2"] and week["counting"] == "since the previous week's snapshot"
    assert week["latency_p50_ms"] == pytest.approx(1.0) and 1.0 < week["latency_p95_ms"] <= 10.0
    restarted = week_figures(previous, current)
    assert "restarted" in restarted["counting"] and restarted["requests"] == 100
    assert percentile_ms({"+Inf": 0.0}, 0.5) is None


def test_drift_report_config_names_a_wrong_mlflow_runs_value_and_picks_the_weeks_people_look_at():
    from stellar_assets.monitoring.assets import DriftReportConfig

    with pytest.raises(dg.Failure, match=r"mlflow_runs='sometimes': expected one of latest_and_degraded, degraded"):
        DriftReportConfig(mlflow_runs="sometimes").wants_mlflow_run(latest=True, degraded=False)
    default, degraded_only, every = (DriftReportConfig(mlflow_runs=v) for v in
                                     ("latest_and_degraded", "degraded", "every_week"))
    assert default.wants_mlflow_run(True, False) and default.wants_mlflow_run(False, True)
    assert not default.wants_mlflow_run(False, False)
    assert degraded_only.wants_mlflow_run(False, True) and not degraded_only.wants_mlflow_run(True, False)
    assert every.wants_mlflow_run(False, False)
    onsets = DriftReportConfig(mlflow_runs="degradation_onsets")
    assert onsets.wants_mlflow_run(False, True, degraded_before=False)
    assert not onsets.wants_mlflow_run(False, True, degraded_before=True)  # the stretch's onset was logged
    assert not onsets.wants_mlflow_run(True, False)


def test_feature_drift_with_a_prepared_reference_gives_scipys_statistics():
    """The prepared reference (sorted once per champion) and the unwrapped KS give what the public scipy
    functions give on the raw samples, ties and missing values included."""
    from scipy import stats

    from stellar_core.drift import ReferenceSample

    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 800), "y": rng.integers(0, 5, 800).astype(float)})
    reference.loc[::50, "x"] = np.nan
    current = pd.DataFrame({"x": rng.normal(0.3, 1.2, 70), "y": rng.integers(1, 6, 70).astype(float)})
    current.loc[::9, "y"] = np.inf
    prepared = ReferenceSample.of(reference, ["x", "y"])
    rows = feature_drift(prepared, current, ["x", "y"], T)
    assert rows == feature_drift(reference, current, ["x", "y"], T) and len(prepared) == 800
    for row in rows:
        ref = reference[row["feature"]].to_numpy()
        cur = current[row["feature"]].to_numpy()
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        expected = stats.ks_2samp(ref, cur)
        assert (row["statistic"], row["p_value"]) == (float(expected.statistic), float(expected.pvalue))
        assert row["wasserstein_sd"] == pytest.approx(stats.wasserstein_distance(ref, cur) / np.std(ref), rel=1e-12)
        assert row["mean_shift_sd"] == pytest.approx((cur.mean() - ref.mean()) / np.std(ref), rel=1e-12)
    assert rows[0]["test"] == "ks" and rows[0]["drifted"] and rows[0]["n_reference"] == 784


def test_a_prepared_reference_names_missing_feature_columns():
    from stellar_core.drift import ReferenceSample

    with pytest.raises(DriftInputError, match=r"missing from reference rows: \['z'\]"):
        ReferenceSample.of(_normal(50), ["x", "z"])


def test_feature_drift_names_which_rows_lack_which_feature_columns():
    from stellar_core.drift import ReferenceSample

    both = _normal(50).assign(y=1.0)
    with pytest.raises(DriftInputError, match=r"^feature columns missing from current rows: \['y'\]$"):
        feature_drift(both, _normal(50), ["x", "y"], T)
    with pytest.raises(DriftInputError, match=r"^feature columns missing from reference rows: \['y'\]$"):
        feature_drift(_normal(50), both, ["x", "y"], T)
    # A sample prepared for other features lacks this one, though its DataFrame had it.
    with pytest.raises(DriftInputError, match=r"^feature columns missing from reference rows: \['y'\]$"):
        feature_drift(ReferenceSample.of(both, ["x"]), both, ["x", "y"], T)
    with pytest.raises(DriftInputError, match=r"missing from reference rows: \['y'\]; from current rows: \['z'\]"):
        feature_drift(_normal(50).assign(z=1.0), both, ["x", "y", "z"], T)
