"""The replay's chunks (stellar_app.replay.chunk_end) keep every week to at most two predictions, whatever
the promotions, while retraining only on degradation lets a chunk span many weeks.

The replay loop is simulated with the rules the platform applies: a retraining at W needs the cool-down
since the last retraining and, on degradation, at least `min_rows` rows predicted by the champion since its
training window; a retraining promotes or not; a promotion at W restarts prediction at W+1. Promotions are
drawn at random wherever the rules allow them, as often as they allow."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from stellar_app.replay import chunk_end
from stellar_core.weeks import Week

FIRST, LAST = "2002-01-06", "2006-12-31"
WEEKS = [w.key for w in Week.range(FIRST, LAST)]


def simulate(rows: dict[str, int], cooldown: int, min_rows: int | None, rng: random.Random,
             promote_share: float) -> tuple[Counter, int, int]:
    """(predictions per week, runs, promotions) of one replay over WEEKS."""
    predicted: Counter = Counter()
    runs = promotions = 0
    last_retraining: Week | None = None
    trained_through = Week.of(FIRST) - 1  # the initial champion's window ends the week before
    start = FIRST
    while start <= LAST:
        end = chunk_end(start, LAST, max(cooldown, 1) + 1, rows, min_rows)
        runs += 1
        chunk = [w for w in WEEKS if start <= w <= end]
        predicted.update(chunk)
        promoted_at = None
        for week in chunk:
            here = Week.of(week)
            if last_retraining is not None and here < last_retraining + max(cooldown, 1):
                continue
            seen = sum(rows[w] for w in WEEKS if trained_through.key < w <= week)
            if min_rows is not None and seen < min_rows:
                continue  # not enough rows since training: the degradation test says not_enough_data
            if rng.random() < 0.8:  # the trigger fires as often as it may
                last_retraining = here
                if rng.random() < promote_share:
                    promoted_at, trained_through = here, here
                    promotions += 1
                    break
        start = (Week.of(promoted_at) + 1).key if promoted_at else (Week.of(end) + 1).key
    return predicted, runs, promotions


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("min_rows", [None, 300])
def test_no_week_is_predicted_more_than_twice_whatever_the_promotions(seed, min_rows):
    rng = random.Random(seed)
    rows = {w: rng.choice([0, 0, 3, 10, 25, 60]) for w in WEEKS}
    predicted, runs, promotions = simulate(rows, cooldown=4, min_rows=min_rows, rng=rng, promote_share=0.9)
    assert promotions >= 3, "the simulation must exercise several promotions"
    assert set(predicted) == set(WEEKS) and max(predicted.values()) <= 2, predicted.most_common(3)


def test_retraining_only_on_degradation_needs_fewer_runs_than_the_cool_down_alone():
    rng = random.Random(7)
    rows = {w: rng.choice([0, 5, 15, 30]) for w in WEEKS}
    _, by_cooldown, _ = simulate(rows, 4, None, random.Random(1), promote_share=0.0)
    _, by_evidence, _ = simulate(rows, 4, 300, random.Random(1), promote_share=0.0)
    assert by_cooldown == -(-len(WEEKS) // 5)  # chunks of cool-down + 1 weeks
    assert by_evidence * 2 < by_cooldown


def test_a_chunk_ends_where_a_champion_promoted_at_its_start_could_first_be_found_degraded():
    rows = {w: 100 for w in WEEKS}
    # 100 rows a week: 300 rows by the third week after the start, so the cool-down (4 weeks) is the bound.
    assert chunk_end(FIRST, LAST, 5, rows, 300) == (Week.of(FIRST) + 4).key
    sparse = {w: 10 for w in WEEKS}  # 300 rows take 30 weeks
    assert chunk_end(FIRST, LAST, 5, sparse, 300) == (Week.of(FIRST) + 30).key
    assert chunk_end(FIRST, LAST, 5, sparse, None) == (Week.of(FIRST) + 4).key
    assert chunk_end(LAST, LAST, 5, sparse, 300) == LAST
