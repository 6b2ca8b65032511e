"""benchmarks/loop_value.py's policy replay on a short real range of the shared sample: who predicts each week,
what each policy retrains, and that its accuracy is what its weeks add up to."""

from __future__ import annotations

import pytest

from benchmarks.loop_value import (
    COOLDOWN_WEEKS,
    EVERY_13,
    EVERY_WEEK,
    MIN_EVALUATION_ROWS,
    NEVER,
    PLATFORM,
    SCHEDULE_WEEKS,
    SPLIT_MIN_ROWS,
    WINDOW_WEEKS,
    initial_champion,
    load_survey,
    main,
    replay_policy,
    train_challenger,
)
from stellar_core.features import LABEL, build_features, label_indices
from stellar_core.promotion import InsufficientEvaluationRows, select_evaluation_weeks
from stellar_core.training import predict_proba
from stellar_core.weeks import Week

REPLAYED_WEEKS = 30


@pytest.fixture(scope="module")
def replay(sdss_sample):
    survey = load_survey(sdss_sample)
    initial = initial_champion(survey)
    last = (Week.of(initial.week) + REPLAYED_WEEKS).key
    # The scheduled policies train their challengers two at a time, ahead of the replay, as the benchmark does.
    results = {policy: replay_policy(survey, policy, initial, last, drift=policy == PLATFORM, workers=2)
               for policy in (PLATFORM, NEVER, EVERY_WEEK, EVERY_13)}
    return sdss_sample, initial, last, results, survey


def test_each_week_is_predicted_by_a_champion_trained_only_on_earlier_weeks(replay):
    _, initial, last, results, _ = replay
    for result in results.values():
        weeks = [r.week for r in result.records]
        assert weeks == [w.key for w in Week.range(Week.of(initial.week) + 1, last)]
        assert all(r.champion_first_week <= r.champion_week < r.week for r in result.records)
    # A promotion at W changes the champion from W+1 on, to the model whose window ended at W.
    every_week = results[EVERY_WEEK].records
    assert every_week[0].champion_week == initial.week
    for before, after in zip(every_week, every_week[1:]):
        assert after.champion_week == (before.week if before.promoted else before.champion_week)


def test_never_retrain_keeps_the_first_champion_and_its_weekly_counts_are_its_own(replay):
    sample, initial, _, results, _ = replay
    never = results[NEVER]
    assert never.retrainings == 0 and never.promotions == 0
    assert {r.champion_week for r in never.records} == {initial.week}
    table, _ = build_features(sample)
    for record in never.records:
        rows = table[table["week"] == record.week]
        correct = predict_proba(initial.booster, rows).argmax(axis=1) == label_indices(rows[LABEL])
        assert (record.correct, record.total) == (int(correct.sum()), len(rows))


def test_every_week_retrains_at_each_week_whose_window_can_be_split(replay):
    sample, _, _, results, _ = replay
    counts = build_features(sample)[0]["week"].value_counts()
    splittable = []
    for record in results[EVERY_WEEK].records:
        window = [w.key for w in Week.range(Week.of(record.week) - (WINDOW_WEEKS - 1), record.week)]
        rows = [(k, int(counts.get(k, 0))) for k in window]
        total = sum(n for _, n in rows)
        try:
            chosen = select_evaluation_weeks(rows, MIN_EVALUATION_ROWS)
        except InsufficientEvaluationRows:
            continue
        if total >= SPLIT_MIN_ROWS and chosen.rows < total:
            splittable.append(record.week)
    assert splittable, "the range must hold weeks with enough data for this test to mean anything"
    assert [r.week for r in results[EVERY_WEEK].records if r.retrained] == splittable
    assert results[EVERY_WEEK].retrainings == len(splittable)


def test_every_13_weeks_retrains_on_its_schedule(replay):
    _, initial, _, results, _ = replay
    scheduled = [r.week for r in results[EVERY_13].records if r.retrained]
    assert scheduled == [r.week for r in results[EVERY_13].records
                         if (Week.of(r.week) - Week.of(initial.week)) % SCHEDULE_WEEKS == 0]
    assert len(scheduled) == REPLAYED_WEEKS // SCHEDULE_WEEKS


def test_the_platform_keeps_a_stable_champion(replay):
    platform = replay[3][PLATFORM]
    assert not any(r.degraded for r in platform.records)
    assert platform.retrainings == 0 and platform.promotions == 0


def test_a_degraded_champion_is_retrained_on_evidence_within_the_cool_down(replay):
    # A champion trained on SEGUE's star-heavy weeks meets BOSS's galaxies and quasars: its accuracy drops.
    survey = replay[4]
    champion = train_challenger(survey, "2009-08-30")
    platform = replay_policy(survey, PLATFORM, champion, "2010-03-28")
    degraded = [Week.of(r.week) for r in platform.records if r.degraded]
    expected = []
    for week in degraded:
        if not expected or week - expected[-1] >= COOLDOWN_WEEKS:
            expected.append(week)
    assert len(expected) >= 2, "the range must hold a degradation lasting past the cool-down"
    assert [Week.of(r.week) for r in platform.records if r.retrained] == expected


def test_row_weighted_accuracy_is_what_the_weeks_add_up_to(replay):
    sample, _, _, results, _ = replay
    table, _ = build_features(sample)
    weeks = {r.week for r in results[NEVER].records}
    for result in results.values():
        correct = sum(r.correct for r in result.records)
        total = sum(r.total for r in result.records)
        assert total == int(table["week"].isin(weeks).sum())  # every row of the range predicted, once
        assert result.accuracy == pytest.approx(correct / total)
        worst = result.worst_span()
        assert worst is not None and worst[0] <= result.accuracy


def test_the_platform_drift_flags_are_reported_for_weeks_with_enough_rows(replay):
    platform = replay[3][PLATFORM].records
    tested = [r for r in platform if r.drift_status != "not_enough_data"]
    assert tested and all(set(r.flags) == {"data_drift", "prediction_drift", "performance_drift", "rejected_rows"}
                          for r in tested)


def test_too_few_aa_trials_is_refused_with_the_reason(capsys):
    with pytest.raises(SystemExit):
        main(["--aa-trials", "50"])
    assert "--aa-trials must be at least 200" in capsys.readouterr().err
