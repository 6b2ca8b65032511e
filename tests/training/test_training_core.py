"""The pure training code on real SDSS rows: split, evaluation, comparison, gate rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stellar_core.contract import CLASSES
from stellar_core.features import build_features
from stellar_core.training import (
    TrainingInputError,
    XGBoostParams,
    compare,
    evaluate,
    evaluate_booster,
    floor_problems,
    latency_problems,
    split_parts,
    split_seed,
    stratified_split,
    train_booster,
)


@pytest.fixture(scope="module")
def table(sdss_sample) -> pd.DataFrame:
    return build_features(sdss_sample.head(3000))[0]


def test_split_is_reproducible_and_independent_of_row_order(table):
    seed = split_seed("2012-05-20")
    first = stratified_split(table, 0.2, seed)
    shuffled = stratified_split(table.sample(frac=1.0, random_state=3), 0.2, seed)
    pd.testing.assert_frame_equal(first, shuffled)
    assert seed == split_seed("2012-05-20") and seed != split_seed("2012-05-27")
    other = stratified_split(table, 0.2, split_seed("2012-05-27"))
    assert not first["split"].equals(other["split"])


def test_split_is_stratified(table):
    train, test = split_parts(stratified_split(table, 0.2, 7))
    assert len(train) + len(test) == len(table)
    assert not set(train.object_id) & set(test.object_id)
    for cls in CLASSES:
        share = (test.label == cls).sum() / (table.label == cls).sum()
        assert share == pytest.approx(0.2, abs=0.01)


def test_bad_inputs_are_named(table):
    with pytest.raises(TrainingInputError, match="test_fraction"):
        stratified_split(table, 1.5, 1)
    with pytest.raises(TrainingInputError, match="unknown class labels"):
        stratified_split(table.assign(label="PLANET"), 0.2, 1)
    with pytest.raises(TrainingInputError, match="max_depth"):
        XGBoostParams(max_depth=0)
    with pytest.raises(TrainingInputError, match="unknown XGBoost parameter 'depth'"):
        XGBoostParams.from_layers({"depth": 3})


def test_layers_explicit_value_wins():
    params = XGBoostParams.from_layers({"max_depth": 5, "n_estimators": 50}, {"max_depth": 3, "n_estimators": None})
    assert (params.max_depth, params.n_estimators) == (3, 50)


def test_evaluate_and_compare_on_the_same_rows(table):
    train, test = split_parts(stratified_split(table, 0.2, 11))
    strong = train_booster(train, XGBoostParams(n_estimators=40, max_depth=4))
    weak = train_booster(train, XGBoostParams(n_estimators=1, max_depth=1, class_weighting="none"))
    strong_eval, weak_eval = evaluate_booster(strong, test), evaluate_booster(weak, test)
    assert strong_eval.accuracy > 0.9 and strong_eval.rows == len(test)
    assert sum(map(sum, strong_eval.confusion)) == len(test)
    assert compare(strong_eval, weak_eval).challenger_wins
    losing = compare(weak_eval, strong_eval)
    assert not losing.challenger_wins and losing.delta < 0
    assert "loses to" in losing.reason and f"{weak_eval.accuracy:.4f}" in losing.reason
    assert compare(weak_eval, strong_eval, tolerance=1.0).challenger_wins  # a tie within tolerance
    assert compare(weak_eval, None).challenger_wins
    subset = test.head(50)
    with pytest.raises(TrainingInputError, match="not the same test set"):
        compare(evaluate_booster(strong, subset), weak_eval)


def test_floor_and_latency_rules_report_numbers():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.eye(3)[[0, 0, 0, 1, 2, 2]]  # one QSO called GALAXY
    evaluation = evaluate(probabilities, labels)
    problems = floor_problems(evaluation, 0.9, {"QSO": 0.9, "STAR": 0.5})
    assert problems == ["accuracy 0.8333 < floor 0.9000", "recall of QSO 0.5000 < floor 0.9000"]
    assert floor_problems(evaluation, 0.5, {"STAR": 0.5}) == []
    with pytest.raises(TrainingInputError, match="unknown classes"):
        floor_problems(evaluation, 0.5, {"PLANET": 0.5})
    latency = {"single_row_ms_p95": 3.0, "batch_ms_per_1000_rows": 40.0}
    assert latency_problems(latency, 5.0, 50.0) == []
    assert latency_problems(latency, 1.0, 10.0) == [
        "single-row p95 3.000 ms > budget 1.000 ms", "batch 40.000 ms per 1000 rows > budget 10.000 ms"]


def test_training_window_ends_at_w_and_all_history_never_looks_ahead(monkeypatch):
    from stellar_assets.partitions import observation_weeks
    from stellar_assets.settings import CodeLocationSettings
    from stellar_assets.training.assets import window_first_week, window_mapping

    assert window_first_week("2012-05-20", 8) == "2012-04-01"
    assert window_first_week("2000-03-12", 104) == observation_weeks.get_first_partition_key()  # clipped
    assert window_first_week("2012-05-20", None) == observation_weeks.get_first_partition_key()
    for weeks in (8, None):
        mapping = window_mapping(weeks)
        assert mapping.end_offset == 0  # never a week after W
    assert window_mapping(8).start_offset == -7
    monkeypatch.setenv("STELLAR_TRAINING_WINDOW_WEEKS", "all")
    assert CodeLocationSettings().training_window_weeks is None
    monkeypatch.setenv("STELLAR_TRAINING_WINDOW_WEEKS", "two years")
    with pytest.raises(ValueError, match="STELLAR_TRAINING_WINDOW_WEEKS must be a positive number of weeks or 'all'"):
        CodeLocationSettings()
