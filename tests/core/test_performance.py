"""stellar_core.performance on its own: a degraded champion is flagged, a stable one is not, weeks are pooled
backwards from the most recent, the reference's own sampling error is accounted for, bad input is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from stellar_core.performance import (
    DEGRADED,
    NOT_ENOUGH_DATA,
    STABLE,
    PerformanceInputError,
    WeekScore,
    degradation_evidence,
    one_sided_fisher_p,
)
from stellar_core.weeks import Week


def weeks_of(scores: list[tuple[int, int]], first: str = "2019-01-06") -> list[tuple[str, int, int]]:
    start = Week.of(first)
    return [((start + k).key, correct, total) for k, (correct, total) in enumerate(scores)]


def test_a_degraded_champion_is_flagged():
    evidence = degradation_evidence(weeks_of([(72, 80)] * 4), reference_correct=291, reference_total=300)
    assert evidence.degraded and evidence.status == DEGRADED
    assert (evidence.current_correct, evidence.current_total) == (288, 320)
    assert evidence.drop == pytest.approx(0.97 - 0.9)
    assert evidence.p_value < 0.001
    assert evidence.summary.startswith("degraded: champion right on 288 of 320 labelled rows over 4 weeks "
                                       "(2019-01-06 .. 2019-01-27), 90.0% vs 97.0%")
    assert evidence.summary.endswith("< 0.05: retrain")


def test_a_stable_champion_is_not_flagged():
    evidence = degradation_evidence(weeks_of([(78, 80)] * 4), reference_correct=291, reference_total=300)
    assert not evidence.degraded and evidence.status == STABLE and evidence.p_value > 0.5
    assert "no retraining on performance" in evidence.summary


def test_only_the_trailing_weeks_reaching_the_minimum_are_pooled():
    # A bad spell long ago, then recent good weeks: the recent ones alone reach 300 rows.
    history = weeks_of([(50, 100)] * 3 + [(97, 100)] * 2 + [(49, 50), (0, 0), (146, 150)])
    evidence = degradation_evidence(history, 291, 300, min_rows=300)
    assert evidence.weeks == ("2019-02-03", "2019-02-10", "2019-02-17", "2019-02-24")  # the empty week rides along
    assert (evidence.current_correct, evidence.current_total) == (292, 300)
    assert not evidence.degraded
    # With a larger minimum the bad spell is reached and the champion is flagged.
    assert degradation_evidence(history, 291, 300, min_rows=600).degraded


def test_too_few_labelled_rows_is_not_enough_data_never_an_alarm():
    evidence = degradation_evidence(weeks_of([(0, 40), (10, 60)]), 291, 300)
    assert evidence.status == NOT_ENOUGH_DATA and not evidence.degraded and evidence.p_value is None
    assert evidence.summary.startswith("not enough data: 100 labelled rows over 2 weeks")
    nothing = degradation_evidence([], 291, 300)
    assert nothing.current_accuracy is None and nothing.weeks == () and not nothing.degraded


def test_fisher_p_value_is_the_hypergeometric_tail():
    # Current 1 of 3 right, reference 3 of 3: of the 4 right rows, 3 draws hold at most 1 with P = C(4,1)C(2,2)/C(6,3).
    assert one_sided_fisher_p(1, 3, 3, 3) == pytest.approx(4 / 20)
    expected = stats.hypergeom.cdf(287, 600, 287 + 295, 300)
    assert one_sided_fisher_p(287, 300, 295, 300) == pytest.approx(expected, rel=1e-9)


def test_a_lucky_reference_is_not_taken_for_the_truth():
    # 96.3% now vs 98.7% on 300 reference rows: a binomial test against 98.7% as if exact says p=0.003.
    assert stats.binom.cdf(289, 300, 296 / 300) < 0.01
    evidence = degradation_evidence(weeks_of([(289, 300)]), 296, 300)
    assert not evidence.degraded and evidence.p_value == pytest.approx(0.0569, abs=1e-3)


def test_false_alarms_at_most_about_alpha_and_a_five_point_drop_is_caught():
    rng = np.random.default_rng(7)
    trials, stable_alarms, drops_caught = 300, 0, 0
    for _ in range(trials):
        reference = int(rng.binomial(300, 0.97))
        stable_alarms += degradation_evidence(weeks_of([(int(rng.binomial(300, 0.97)), 300)]), reference, 300).degraded
        drops_caught += degradation_evidence(weeks_of([(int(rng.binomial(300, 0.92)), 300)]), reference, 300).degraded
    assert stable_alarms <= 0.05 * trials + 6
    assert drops_caught >= 0.6 * trials


def test_metadata_is_plain_json():
    metadata = json.loads(json.dumps(degradation_evidence([WeekScore("2019-01-06", 280, 300)], 291, 300).metadata()))
    assert metadata["weeks_pooled"] == ["2019-01-06"] and metadata["test"] == "one-sided Fisher exact"
    assert metadata["current_correct"] == 280 and metadata["reference_total"] == 300 and metadata["alpha"] == 0.05


@pytest.mark.parametrize("weeks, reference, words", [
    ([("2019-01-06", 11, 10)], (291, 300), "11 correct of only 10"),
    ([("2019-01-13", 1, 1), ("2019-01-06", 1, 1)], (291, 300), "increasing order"),
    ([("2019-01-06", -1, 10)], (291, 300), "must be an integer >= 0"),
    ([("2019-01-06", 10)], (291, 300), "not a \\(week, correct, total\\) triple"),
    ([], (0, 0), "reference has no rows"),
    ([], (301, 300), "301 correct of only 300"),
])
def test_bad_input_is_refused_with_what_is_wrong(weeks, reference, words):
    with pytest.raises(PerformanceInputError, match=words):
        degradation_evidence(weeks, *reference)


def test_bad_settings_are_refused():
    with pytest.raises(PerformanceInputError, match="alpha"):
        degradation_evidence([], 291, 300, alpha=1.5)
    with pytest.raises(PerformanceInputError, match="min_rows"):
        degradation_evidence([], 291, 300, min_rows=0)
