"""Degradation evidence for the retraining trigger: has the champion got worse than its own reference?

Pure functions (numpy and scipy only; no Dagster, no MLflow), shared by the
retraining trigger, benchmarks/promotion_gate.py and the tests.

The champion's correct/total on the labelled weeks since it was trained is
pooled over the most recent weeks, backwards, until at least `min_rows`
labelled rows (default 300); fewer in all is "not enough data", never an alarm.
The pooled accuracy is tested one-sided against the champion's out-of-time
reference (its correct/total on the evaluation set the gate scored it on).

Why a two-sample test, and why Fisher's: the reference accuracy is itself
measured on a few hundred rows (at 97% on 300 rows its standard error is about
1 point), so an exact binomial test against it as if it were the true accuracy
false-alarms whenever the reference happened to be lucky. Both counts are
samples; the test compares them as such. Fisher's exact test (one-sided,
conditional on the total errors) keeps the false-alarm rate at or below alpha
at any size, including the handful of errors a 97%-accurate model makes on
300 rows, where the normal approximation of a two-proportion z-test is poor;
it is conservative there, which costs some power (measured in
benchmarks/promotion_gate.py). Unconditional exact tests (Barnard, Boschloo)
are a little more powerful but take about a second per call at these sizes,
too slow for a trigger evaluated every week over twenty years of replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from stellar_core.weeks import Week

DEFAULT_ALPHA = 0.05
DEFAULT_MIN_ROWS = 300

DEGRADED = "degraded"
STABLE = "stable"
NOT_ENOUGH_DATA = "not_enough_data"
TEST_NAME = "one-sided Fisher exact"


class PerformanceInputError(ValueError):
    """The inputs of the degradation test are unusable (names what is wrong)."""


@dataclass(frozen=True)
class WeekScore:
    """The champion's correct predictions among a week's labelled rows."""

    week: str
    correct: int
    total: int


@dataclass(frozen=True)
class DegradationEvidence:
    degraded: bool
    status: str  # degraded, stable or not_enough_data
    reference_correct: int
    reference_total: int
    reference_accuracy: float
    current_correct: int
    current_total: int
    current_accuracy: float | None  # None when no labelled rows
    p_value: float | None  # None when not enough data
    alpha: float
    min_rows: int
    weeks: tuple[str, ...]  # the weeks pooled, oldest first
    summary: str

    @property
    def drop(self) -> float | None:
        """Reference accuracy minus current accuracy (positive: worse now)."""
        return None if self.current_accuracy is None else self.reference_accuracy - self.current_accuracy

    def metadata(self) -> dict:
        """Plain JSON values for check and asset metadata."""
        return {
            "degraded": self.degraded,
            "status": self.status,
            "summary": self.summary,
            "test": TEST_NAME,
            "reference_correct": self.reference_correct,
            "reference_total": self.reference_total,
            "reference_accuracy": round(self.reference_accuracy, 6),
            "current_correct": self.current_correct,
            "current_total": self.current_total,
            "current_accuracy": None if self.current_accuracy is None else round(self.current_accuracy, 6),
            "drop": None if self.drop is None else round(self.drop, 6),
            "p_value": self.p_value,
            "alpha": self.alpha,
            "min_rows": self.min_rows,
            "weeks_pooled": list(self.weeks),
        }


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise PerformanceInputError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _week_scores(weeks: Sequence) -> list[WeekScore]:
    scores: list[WeekScore] = []
    for position, entry in enumerate(weeks):
        try:
            week, correct, total = (entry.week, entry.correct, entry.total) if isinstance(entry, WeekScore) else entry
            key = Week.of(week).key
        except (TypeError, ValueError) as exc:
            raise PerformanceInputError(
                f"labelled week {position} is not a (week, correct, total) triple: {entry!r} ({exc})") from exc
        correct, total = _count(correct, f"correct of week {key}"), _count(total, f"total of week {key}")
        if correct > total:
            raise PerformanceInputError(f"week {key} has {correct} correct of only {total} labelled rows")
        if scores and Week.of(key) <= Week.of(scores[-1].week):
            raise PerformanceInputError(f"labelled weeks must be in increasing order: {key} follows {scores[-1].week}")
        scores.append(WeekScore(key, correct, total))
    return scores


def pool_trailing_weeks(scores: Sequence[WeekScore], min_rows: int) -> list[WeekScore]:
    """The most recent weeks, backwards, until they hold `min_rows` labelled rows (all of them if fewer)."""
    pooled, rows = [], 0
    for score in reversed(scores):
        if rows >= min_rows:
            break
        pooled.append(score)
        rows += score.total
    return pooled[::-1]


def one_sided_fisher_p(current_correct: int, current_total: int, reference_correct: int, reference_total: int) -> float:
    """P-value of "the current accuracy is below the reference accuracy" (Fisher's exact test, one-sided)."""
    table = [[current_correct, current_total - current_correct],
             [reference_correct, reference_total - reference_correct]]
    return float(stats.fisher_exact(table, alternative="less").pvalue)


def degradation_evidence(labelled_weeks: Sequence, reference_correct: int, reference_total: int, *,
                         min_rows: int = DEFAULT_MIN_ROWS, alpha: float = DEFAULT_ALPHA) -> DegradationEvidence:
    """Is the champion's accuracy on its trailing labelled weeks below its out-of-time reference, on evidence?

    `labelled_weeks`: (week, correct, total) triples or WeekScore values, in increasing week
    order, of the weeks since the champion was trained; `reference_correct`/`reference_total`:
    the champion's score on its out-of-time evaluation set.
    """
    if not 0 < alpha < 1:
        raise PerformanceInputError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    if isinstance(min_rows, bool) or not isinstance(min_rows, (int, np.integer)) or min_rows < 1:
        raise PerformanceInputError(f"min_rows must be an integer >= 1, got {min_rows!r}")
    reference_correct = _count(reference_correct, "reference_correct")
    reference_total = _count(reference_total, "reference_total")
    if reference_total == 0:
        raise PerformanceInputError("the champion's reference has no rows: its out-of-time accuracy is unknown")
    if reference_correct > reference_total:
        raise PerformanceInputError(f"reference has {reference_correct} correct of only {reference_total} rows")
    pooled = pool_trailing_weeks(_week_scores(labelled_weeks), min_rows)
    correct, total = sum(s.correct for s in pooled), sum(s.total for s in pooled)
    reference_accuracy = reference_correct / reference_total
    accuracy = correct / total if total else None
    weeks = tuple(s.week for s in pooled)
    if total < min_rows:
        p_value, status = None, NOT_ENOUGH_DATA
    else:
        p_value = one_sided_fisher_p(correct, total, reference_correct, reference_total)
        status = DEGRADED if p_value < alpha else STABLE
    summary = _summary(status, correct, total, weeks, reference_correct, reference_total, p_value, alpha, min_rows)
    return DegradationEvidence(status == DEGRADED, status, reference_correct, reference_total, reference_accuracy,
                               correct, total, accuracy, p_value, alpha, int(min_rows), weeks, summary)


def _summary(status: str, correct: int, total: int, weeks: tuple[str, ...], reference_correct: int,
             reference_total: int, p_value: float | None, alpha: float, min_rows: int) -> str:
    reference = (f"{reference_correct / reference_total:.1%} on its out-of-time reference "
                 f"({reference_correct}/{reference_total})")
    span = f"{len(weeks)} week{'s' if len(weeks) != 1 else ''}" + (f" ({weeks[0]} .. {weeks[-1]})" if weeks else "")
    if status == NOT_ENOUGH_DATA:
        return (f"not enough data: {total} labelled rows over {span} since the champion was trained, "
                f"{min_rows} needed; no retraining on performance")
    current = f"champion right on {correct} of {total} labelled rows over {span}, {correct / total:.1%} vs {reference}"
    if status == DEGRADED:
        return f"degraded: {current}; {TEST_NAME} p={p_value:.2g} < {alpha:g}: retrain"
    return f"stable: {current}; {TEST_NAME} p={p_value:.2g} >= {alpha:g}: no retraining on performance"
