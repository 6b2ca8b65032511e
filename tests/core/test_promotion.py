"""stellar_core.promotion on its own: the paired table, exact McNemar, the paired interval, the decision
rules (ties and identical models never promote), an A/A simulation, the paired bootstrap of the other
gate metrics, and the out-of-time evaluation set."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest

from sklearn.metrics import balanced_accuracy_score, f1_score

from stellar_core.promotion import (
    ACCURACY,
    BALANCED_ACCURACY,
    KEEP_CHAMPION,
    MACRO_F1,
    MCNEMAR,
    RANDOMIZATION,
    NON_INFERIORITY,
    PROMOTE,
    SUPERIORITY,
    InsufficientEvaluationRows,
    PairedTable,
    PromotionInputError,
    decide_promotion,
    decide_promotion_on,
    mcnemar_exact_p,
    paired_bootstrap,
    randomization_p,
    paired_difference_interval,
    paired_table,
    select_evaluation_weeks,
)
from stellar_core.weeks import Week

Z95 = 1.959963984540054


def vectors(both_right: int, champion_only: int, challenger_only: int, both_wrong: int):
    """Champion and challenger "correct" vectors with the given paired counts (rows shuffled)."""
    champion = [True] * both_right + [True] * champion_only + [False] * challenger_only + [False] * both_wrong
    challenger = [True] * both_right + [False] * champion_only + [True] * challenger_only + [False] * both_wrong
    order = np.random.default_rng(0).permutation(len(champion))
    return np.array(champion)[order], np.array(challenger)[order]


# ---------------------------------------------------------------- the paired table


def test_paired_table_counts_each_kind_of_row():
    table = paired_table([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert table == PairedTable(both_right=2, champion_only=1, challenger_only=1, both_wrong=1)
    assert table.rows == 5 and table.discordant == 2
    assert table.champion_accuracy == table.challenger_accuracy == 0.6 and table.difference == 0.0


@pytest.mark.parametrize("champion, challenger, words", [
    ([True, False], [True], "champion scored on 2 rows, challenger on 1"),
    ([], [], "no rows"),
    ([0, 2], [1, 1], "must hold booleans"),
    ([[True]], [[True]], "one-dimensional"),
])
def test_paired_table_refuses_vectors_that_are_not_the_same_rows(champion, challenger, words):
    with pytest.raises(PromotionInputError, match=words):
        paired_table(champion, challenger)


# ---------------------------------------------------------------- exact McNemar


@pytest.mark.parametrize("champion_only, challenger_only, expected", [
    (2, 10, (comb(12, 10) + comb(12, 11) + comb(12, 12)) / 2 ** 12),  # 79/4096
    (0, 5, 1 / 2 ** 5),
    (5, 5, sum(comb(10, k) for k in range(5, 11)) / 2 ** 10),  # 638/1024
    (3, 0, 1.0),
    (0, 0, 1.0),  # no discordant rows: no evidence
])
def test_mcnemar_p_is_the_binomial_tail_of_the_challengers_discordant_rows(champion_only, challenger_only, expected):
    assert mcnemar_exact_p(champion_only, challenger_only) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- the interval


def test_interval_with_every_row_concordant_is_the_closed_form_not_a_point():
    low, high = paired_difference_interval(PairedTable(290, 0, 0, 10))
    assert low == pytest.approx(-Z95 ** 2 / (300 + Z95 ** 2), abs=1e-8)
    assert high == pytest.approx(Z95 ** 2 / (300 + Z95 ** 2), abs=1e-8)


def test_interval_holds_the_estimate_and_narrows_with_rows():
    small, large = PairedTable(280, 5, 10, 5), PairedTable(2800, 50, 100, 50)
    for table in (small, large):
        low, high = paired_difference_interval(table)
        assert low < table.difference < high
    assert np.ptp(paired_difference_interval(large)) < np.ptp(paired_difference_interval(small)) / 2


def test_interval_keeps_its_coverage_with_few_discordant_rows():
    # 1% champion-only and 2% challenger-only rows on 300 rows: about 9 discordant rows per sample.
    rng, truth, trials = np.random.default_rng(11), 0.01, 1000
    below = covered = 0
    for counts in rng.multinomial(300, [0.96, 0.01, 0.02, 0.01], size=trials):
        low, high = paired_difference_interval(PairedTable(*map(int, counts)))
        below += low > truth
        covered += low <= truth <= high
    assert covered / trials >= 0.93
    assert below / trials <= 0.04  # the lower limit non-inferiority uses errs about 2.5% of the time


# ---------------------------------------------------------------- the decision


@pytest.mark.parametrize("degradation_retrain", [False, True])
def test_a_tie_does_not_promote(degradation_retrain):
    decision = decide_promotion(*vectors(388, 12, 12, 0), degradation_retrain=degradation_retrain)
    assert not decision.promote and decision.decision == KEEP_CHAMPION
    assert (decision.champion_only, decision.challenger_only, decision.rows) == (12, 12, 412)
    assert decision.p_value == pytest.approx(sum(comb(24, k) for k in range(12, 25)) / 2 ** 24)


@pytest.mark.parametrize("degradation_retrain", [False, True])
def test_identical_models_do_not_promote_even_on_many_rows(degradation_retrain):
    # On 5000 identical rows the interval is within +-0.08 points: "non-inferior" on its own, still a tie.
    correct = np.random.default_rng(3).random(5000) < 0.97
    decision = decide_promotion(correct, correct.copy(), degradation_retrain=degradation_retrain)
    assert decision.interval[0] > -decision.margin
    assert not decision.promote and decision.p_value == 1.0
    assert decision.champion_only == decision.challenger_only == 0


def test_a_clearly_better_challenger_on_enough_rows_is_promoted():
    decision = decide_promotion(*vectors(380, 2, 15, 3))
    assert decision.promote and decision.decision == PROMOTE and decision.rule == SUPERIORITY
    assert decision.p_value == pytest.approx(sum(comb(17, k) for k in range(15, 18)) / 2 ** 17)
    assert decision.summary.startswith("promote: challenger right on 15 rows the champion missed, champion right on 2")
    assert "the challenger is better" in decision.summary


def test_the_same_lead_on_few_rows_is_no_evidence():
    decision = decide_promotion(*vectors(27, 0, 2, 1))
    assert not decision.promote and decision.p_value == 0.25


def test_non_inferiority_promotes_only_on_a_degradation_retrain():
    # Ahead by 3 rows of 2000, p = 130/512: not better with significance, but within a 1-point margin.
    rows = vectors(1980, 3, 6, 11)
    ordinary = decide_promotion(*rows)
    degraded = decide_promotion(*rows, degradation_retrain=True)
    assert ordinary.p_value == pytest.approx(130 / 512) and not ordinary.promote and ordinary.rule == SUPERIORITY
    assert "non-inferiority does not apply" in ordinary.summary
    assert degraded.interval[0] > -0.01
    assert degraded.promote and degraded.rule == NON_INFERIORITY and degraded.summary.endswith("non-inferior")


def test_non_inferiority_needs_the_interval_within_the_margin():
    # Ahead by 2 rows of 300 with 22 discordant: the interval reaches far below -1 point.
    decision = decide_promotion(*vectors(270, 10, 12, 8), degradation_retrain=True)
    assert decision.interval[0] < -0.01 and decision.rule == NON_INFERIORITY
    assert not decision.promote and decision.summary.endswith("inferiority not ruled out")


def test_a_challenger_behind_is_not_promoted_on_a_degradation_retrain():
    decision = decide_promotion(*vectors(4980, 4, 3, 13), degradation_retrain=True)
    assert decision.interval[0] > -0.01  # within the margin, yet measured worse on these rows
    assert not decision.promote and "the challenger is behind" in decision.summary


def test_summary_reads_at_a_glance_and_metadata_is_plain_json():
    decision = decide_promotion(*vectors(380, 11, 12, 9))
    assert decision.summary == (
        "keep champion: challenger right on 12 rows the champion missed, champion right on 11 the challenger "
        "missed (n=412); exact McNemar p=0.5 >= 0.05; not a degradation retrain, so non-inferiority does not apply")
    metadata = json.loads(json.dumps(decision.metadata()))
    assert metadata["decision"] == KEEP_CHAMPION and metadata["rule"] == SUPERIORITY
    assert [metadata[k] for k in ("both_right", "champion_only", "challenger_only", "both_wrong")] == [380, 11, 12, 9]
    assert metadata["margin"] == 0.01 and metadata["alpha"] == 0.05 and len(metadata["interval"]) == 2


@pytest.mark.parametrize("options, words", [
    ({"alpha": 0}, "alpha must lie strictly between 0 and 1"),
    ({"margin": -0.01}, "margin must lie in"),
    ({"confidence": 1.0}, "confidence must lie strictly between 0 and 1"),
])
def test_decision_refuses_impossible_settings(options, words):
    with pytest.raises(PromotionInputError, match=words):
        decide_promotion([True, False], [True, True], **options)


def _noisy_classifier_pairs(rng, trials: int, rows: int):
    """Two equally good classifiers: shared hard rows (both usually wrong) plus their own noise."""
    for _ in range(trials):
        hard = rng.random(rows) < 0.025
        yield (~hard & (rng.random(rows) > 0.015)) | (hard & (rng.random(rows) < 0.2)), \
              (~hard & (rng.random(rows) > 0.015)) | (hard & (rng.random(rows) < 0.2))


def test_equally_good_classifiers_are_promoted_at_most_about_alpha_of_the_time():
    rng = np.random.default_rng(2026)
    promoted = old_rule = 0
    for champion, challenger in _noisy_classifier_pairs(rng, 200, 300):
        promoted += decide_promotion(champion, challenger).promote
        old_rule += challenger.sum() >= champion.sum()
    assert promoted <= 0.05 * 200 + 5  # 5% plus binomial slack over 200 trials
    assert old_rule >= 0.4 * 200  # the old rule (accuracy >= champion's) promotes about half of them


# ---------------------------------------------------------------- other metrics: randomization test, bootstrap

BOOTSTRAP_METRICS = [MACRO_F1, BALANCED_ACCURACY]


def _labels(rng, rows: int, qso_share: float = 0.1) -> np.ndarray:
    """Class indices GALAXY 0, QSO 1, STAR 2 in about the sample's proportions."""
    return rng.choice(3, rows, p=[0.6 - qso_share / 2, qso_share, 0.4 - qso_share / 2])


def _noisy(rng, labels: np.ndarray, error: float, class_error: dict[int, float] | None = None) -> np.ndarray:
    """A classifier's predictions: wrong on a random `error` of the rows (or per class), another class then."""
    rates = np.full(len(labels), error)
    for k, rate in (class_error or {}).items():
        rates[labels == k] = rate
    wrong = rng.random(len(labels)) < rates
    return np.where(wrong, (labels + rng.integers(1, 3, len(labels))) % 3, labels)


@pytest.mark.parametrize("metric, reference", [
    (MACRO_F1, lambda y, p: f1_score(y, p, average="macro")),
    (BALANCED_ACCURACY, balanced_accuracy_score),
])
def test_bootstrap_point_values_are_the_metrics_scikit_learn_computes(metric, reference):
    rng = np.random.default_rng(7)
    labels = _labels(rng, 400)
    champion, challenger = _noisy(rng, labels, 0.05), _noisy(rng, labels, 0.08)
    champion_value, challenger_value, differences = paired_bootstrap(metric, labels, champion, challenger,
                                                                     resamples=500)
    assert champion_value == pytest.approx(reference(labels, champion), abs=1e-12)
    assert challenger_value == pytest.approx(reference(labels, challenger), abs=1e-12)
    assert differences.shape == (500,)
    # The resamples scatter around the observed difference.
    assert abs(np.median(differences) - (challenger_value - champion_value)) < 0.01


@pytest.mark.parametrize("metric", BOOTSTRAP_METRICS)
@pytest.mark.parametrize("degradation_retrain", [False, True])
def test_identical_predictions_never_promote_on_a_bootstrap_metric(metric, degradation_retrain):
    rng = np.random.default_rng(1)
    labels = _labels(rng, 2000)
    predicted = _noisy(rng, labels, 0.04)
    decision = decide_promotion_on(metric, labels, predicted, predicted.copy(), degradation_retrain=degradation_retrain)
    assert not decision.promote and decision.decision == KEEP_CHAMPION
    assert decision.p_value == 1.0 and decision.difference == 0.0 and decision.interval == (0.0, 0.0)
    assert decision.test == RANDOMIZATION and decision.metric == metric


@pytest.mark.parametrize("metric", BOOTSTRAP_METRICS)
def test_a_clearly_better_challenger_on_a_bootstrap_metric_is_promoted_and_the_same_lead_on_few_rows_is_not(metric):
    rng = np.random.default_rng(3)
    labels = _labels(rng, 800)
    # The champion misses a quarter of the quasars; the challenger a twentieth.
    champion = _noisy(rng, labels, 0.02, {1: 0.25})
    challenger = _noisy(rng, labels, 0.02, {1: 0.05})
    decision = decide_promotion_on(metric, labels, champion, challenger)
    assert decision.promote and decision.rule == SUPERIORITY and decision.p_value < 0.05
    assert decision.interval[0] > 0 and decision.challenger_value > decision.champion_value
    few = decide_promotion_on(metric, labels[:40], champion[:40], challenger[:40])
    assert not few.promote and few.p_value >= 0.05


def test_balanced_accuracy_sees_a_rare_class_gain_the_accuracy_test_misses():
    """Why the gate can decide on another metric: better quasars, a few more galaxy slips."""
    rng = np.random.default_rng(11)
    labels = _labels(rng, 600, qso_share=0.06)
    champion = _noisy(rng, labels, 0.02, {1: 0.30})
    challenger = _noisy(rng, labels, 0.03, {1: 0.05})
    on_accuracy = decide_promotion_on(ACCURACY, labels, champion, challenger)
    on_balanced = decide_promotion_on(BALANCED_ACCURACY, labels, champion, challenger)
    assert on_accuracy.test == MCNEMAR and not on_accuracy.promote
    assert on_balanced.promote and on_balanced.p_value < 0.05


def test_bootstrap_non_inferiority_only_on_a_degradation_retrain_within_the_margin():
    rng = np.random.default_rng(5)
    labels = _labels(rng, 3000)
    champion = _noisy(rng, labels, 0.04)
    # A hair better: not significant, but ahead and well within a 1-point margin on 3,000 rows.
    challenger = np.where(rng.random(len(labels)) < 0.003, labels, champion)
    plain = decide_promotion_on(MACRO_F1, labels, champion, challenger)
    degraded = decide_promotion_on(MACRO_F1, labels, champion, challenger, degradation_retrain=True)
    assert not plain.promote and plain.rule == SUPERIORITY and plain.p_value >= 0.05
    assert degraded.promote and degraded.rule == NON_INFERIORITY and degraded.interval[0] > -0.01
    assert "non-inferior" in degraded.summary
    strict = decide_promotion_on(MACRO_F1, labels, champion, challenger, degradation_retrain=True, margin=0.0)
    assert not strict.promote and "inferiority not ruled out" in strict.summary


def test_a_bootstrap_decision_is_reproducible_and_its_metadata_names_the_test():
    rng = np.random.default_rng(9)
    labels = _labels(rng, 300)
    champion, challenger = _noisy(rng, labels, 0.05), _noisy(rng, labels, 0.05)
    first = decide_promotion_on(MACRO_F1, labels, champion, challenger, seed=4)
    again = decide_promotion_on(MACRO_F1, labels, champion, challenger, seed=4)
    assert first == again
    metadata = json.loads(json.dumps(first.metadata()))
    assert metadata["test"] == RANDOMIZATION and metadata["metric"] == MACRO_F1
    assert metadata["resamples"] == 2000 and metadata["seed"] == 4 and "randomization_p_value" in metadata
    assert metadata["both_right"] + metadata["champion_only"] + metadata["challenger_only"] + \
        metadata["both_wrong"] == 300  # the paired table's four counts are shown for every metric
    assert "paired randomization test of macro_f1 (2000 rearrangements, seed 4)" in first.summary


@pytest.mark.parametrize("metric", BOOTSTRAP_METRICS)
def test_a_bootstrap_decision_carries_the_figures_of_the_two_tests_called_directly(metric):
    rng = np.random.default_rng(13)
    labels = _labels(rng, 500)
    champion, challenger = _noisy(rng, labels, 0.05), _noisy(rng, labels, 0.045)  # close: p depends on the seed
    decision = decide_promotion_on(metric, labels, champion, challenger, resamples=600, seed=21,
                                   confidence=0.9)
    champion_value, challenger_value, differences = paired_bootstrap(metric, labels, champion, challenger,
                                                                     resamples=600, seed=21)
    assert (decision.champion_value, decision.challenger_value) == (champion_value, challenger_value)
    tail = (1 - 0.9) / 2  # the percentile interval's tails, as the gate computes them
    assert decision.interval == (float(np.quantile(differences, tail)), float(np.quantile(differences, 1 - tail)))
    assert decision.p_value == randomization_p(metric, labels, champion, challenger, resamples=600, seed=21)
    # Another seed gives other figures: the seed reaches both tests.
    other = decide_promotion_on(metric, labels, champion, challenger, resamples=600, seed=22, confidence=0.9)
    assert other.interval != decision.interval and other.p_value != decision.p_value


def test_randomization_p_of_a_single_discordant_row_is_its_exact_permutation_probability():
    # One row the challenger got right and the champion wrong: a rearrangement keeps the lead with
    # probability 1/2 (the row not swapped), so p is about 1/2 and never significant.
    labels = np.array([0, 1, 2] * 100)
    champion = labels.copy()
    champion[0] = 1
    p_value = randomization_p(MACRO_F1, labels, champion, labels, resamples=4000, seed=0)
    assert abs(p_value - 0.5) < 0.03
    assert randomization_p(MACRO_F1, labels, labels, champion, resamples=4000, seed=0) == 1.0


def test_accuracy_through_decide_promotion_on_is_the_mcnemar_decision():
    rng = np.random.default_rng(12)
    labels = _labels(rng, 500)
    champion, challenger = _noisy(rng, labels, 0.06), _noisy(rng, labels, 0.03)
    decision = decide_promotion_on(ACCURACY, labels, champion, challenger)
    assert decision == decide_promotion(champion == labels, challenger == labels)
    assert decision.test == MCNEMAR and "mcnemar_p_value" in decision.metadata()


@pytest.mark.parametrize("call, words", [
    (lambda: decide_promotion_on("f2", [0], [0], [0]), "unknown gate metric 'f2'"),
    (lambda: decide_promotion_on(MACRO_F1, [0, 1], [0], [0, 1]), "2 labels, champion scored on 1 rows"),
    # Checked before comparing with the labels: numpy broadcast a one-row vector against two labels.
    (lambda: decide_promotion_on(ACCURACY, [0, 1], [0], [0, 1]), "2 labels, champion scored on 1 rows"),
    (lambda: decide_promotion_on(MACRO_F1, [0, 1], [0, 1, 1], [0, 1]), "2 labels, champion scored on 3 rows"),
    (lambda: decide_promotion_on(MACRO_F1, [0, 1], [0, -1], [0, 1]), "class indices"),
    (lambda: decide_promotion_on(MACRO_F1, [0.5, 1], [0, 1], [0, 1]), "class indices"),
    (lambda: decide_promotion_on(MACRO_F1, [], [], []), "no rows"),
    (lambda: paired_bootstrap(ACCURACY, [0], [0], [0]), "score macro_f1 or balanced_accuracy"),
    (lambda: randomization_p("f1", [0], [0], [0]), "score macro_f1 or balanced_accuracy"),
    (lambda: decide_promotion_on(MACRO_F1, [0, 1], [0, 1], [0, 1], resamples=10), "resamples must be >= 100"),
    (lambda: decide_promotion_on(MACRO_F1, [0, 1], [0, 1], [0, 1], alpha=1.5), "alpha"),
])
def test_bootstrap_refuses_unusable_inputs_by_name(call, words):
    with pytest.raises(PromotionInputError, match=words):
        call()


@pytest.mark.parametrize("metric", BOOTSTRAP_METRICS)
def test_equally_good_classifiers_are_promoted_on_a_bootstrap_metric_at_most_about_alpha_of_the_time(metric):
    """A/A in a small seeded run: both classifiers drawn from the same error process. (The bootstrap's
    percentile rule, p = share of resamples where the challenger is not ahead, promoted 17 of these 200
    on balanced accuracy; benchmarks/promotion_gate.py (e) measures both rules on 1,000 pairs.)"""
    rng = np.random.default_rng(2027)
    promoted = 0
    for trial in range(200):
        labels = _labels(rng, 300)
        promoted += decide_promotion_on(metric, labels, _noisy(rng, labels, 0.04), _noisy(rng, labels, 0.04),
                                        resamples=400, seed=trial).promote
    assert promoted <= 0.05 * 200 + 5  # 5% plus binomial slack over 200 trials


# ---------------------------------------------------------------- the evaluation set


def _window(rows_per_week: list[int], first: str = "2019-01-06") -> list[tuple[str, int]]:
    start = Week.of(first)
    return [((start + k).key, rows) for k, rows in enumerate(rows_per_week)]


def test_evaluation_set_pools_the_most_recent_weeks_backwards_until_the_minimum():
    window = _window([200, 150, 120, 0, 90, 100])
    chosen = select_evaluation_weeks(window, min_rows=300)
    assert chosen.weeks == ("2019-01-20", "2019-01-27", "2019-02-03", "2019-02-10")  # the empty week rides along
    assert chosen.rows == 310 and chosen.weeks_left_for_training == 2
    assert "pooled backwards hold 310 rows" in chosen.reason and "2 earlier weeks remain" in chosen.reason
    assert json.loads(json.dumps(chosen.metadata()))["evaluation_weeks"] == list(chosen.weeks)


def test_evaluation_set_stops_at_the_first_week_reaching_the_minimum():
    chosen = select_evaluation_weeks([(Week.of("2019-01-06"), 100), (Week.of("2019-01-13"), 400)])
    assert chosen.weeks == ("2019-01-13",) and chosen.rows == 400 and chosen.min_rows == 300


def test_evaluation_set_errors_with_the_shortfall_when_the_window_is_too_small():
    with pytest.raises(InsufficientEvaluationRows, match=r"2019-01-06 \.\. 2019-01-20 \(3 weeks\) holds 250 rows, "
                                                         r"50 short of the 300-row minimum.*widen the training window"):
        select_evaluation_weeks(_window([100, 50, 100]))
    with pytest.raises(InsufficientEvaluationRows, match="holds 0 rows, 300 short"):
        select_evaluation_weeks([])


@pytest.mark.parametrize("window, words", [
    ([("2019-01-13", 10), ("2019-01-06", 10)], "increasing order"),
    ([("2019-01-06", 10), ("2019-01-06", 10)], "increasing order"),
    ([("2019-01-06", -1)], "row count is an integer >= 0"),
    ([("2019-01-06", 1.5)], "row count is an integer >= 0"),
    ([("not a week", 10)], "not a \\(week, rows\\) pair"),
    ([("2019-01-06",)], "not a \\(week, rows\\) pair"),
])
def test_evaluation_set_refuses_a_malformed_window(window, words):
    with pytest.raises(PromotionInputError, match=words):
        select_evaluation_weeks(window)
