"""The promotion gate's statistics: is the challenger better than the champion, on evidence?

Pure functions (numpy and scipy only; no Dagster, no MLflow), shared by the
training assets, benchmarks/promotion_gate.py and the tests.

Both models are scored on the same rows, unseen by both: the out-of-time
evaluation set, the most recent weeks of the training window pooled backwards
until a minimum number of rows (`select_evaluation_weeks`). Each model gives a
boolean "correct" vector on those rows; the pair of vectors is a paired 2x2
table (`paired_table`), and only the discordant rows (one model right, the
other wrong) carry evidence about which is better.

Rules (`decide_promotion`):
- superiority: promote when the exact one-sided McNemar test on the discordant
  rows says the challenger is better, p < alpha (default 0.05);
- non-inferiority, only when the retraining was requested because the champion
  degraded: also promote when the challenger is ahead on the paired rows and
  the lower limit of the 95% interval of the accuracy difference lies above
  -margin (default 1 point);
- otherwise the champion stays. A tie (as many rows won as lost, identical
  models included) never promotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import optimize, stats

from stellar_core.weeks import Week

DEFAULT_ALPHA = 0.05
DEFAULT_MARGIN = 0.01
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_EVALUATION_ROWS = 300

SUPERIORITY = "superiority"
NON_INFERIORITY = "non_inferiority"
PROMOTE = "promote"
KEEP_CHAMPION = "keep champion"


class PromotionInputError(ValueError):
    """The inputs of the promotion gate are unusable (names what is wrong)."""


class InsufficientEvaluationRows(PromotionInputError):
    """The training window holds fewer rows than the out-of-time evaluation set needs."""


# ---------------------------------------------------------------- the paired table


@dataclass(frozen=True)
class PairedTable:
    """Counts of rows by which model got them right."""

    both_right: int
    champion_only: int  # champion right, challenger wrong
    challenger_only: int  # challenger right, champion wrong
    both_wrong: int

    @property
    def rows(self) -> int:
        return self.both_right + self.champion_only + self.challenger_only + self.both_wrong

    @property
    def discordant(self) -> int:
        return self.champion_only + self.challenger_only

    @property
    def champion_accuracy(self) -> float:
        return (self.both_right + self.champion_only) / self.rows

    @property
    def challenger_accuracy(self) -> float:
        return (self.both_right + self.challenger_only) / self.rows

    @property
    def difference(self) -> float:
        """Challenger accuracy minus champion accuracy."""
        return (self.challenger_only - self.champion_only) / self.rows


def _correct_vector(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise PromotionInputError(f"{name} must be a one-dimensional vector, got shape {array.shape}")
    if array.dtype != bool:
        stray = array[~np.isin(array, (0, 1))]
        if stray.size:
            raise PromotionInputError(f"{name} must hold booleans (or 0/1), got values like {stray[:3].tolist()}")
        array = array.astype(bool)
    return array


def paired_table(champion_correct, challenger_correct) -> PairedTable:
    """The paired table of two "correct" vectors over the same rows, in the same order."""
    champion = _correct_vector(champion_correct, "champion_correct")
    challenger = _correct_vector(challenger_correct, "challenger_correct")
    if len(champion) != len(challenger):
        raise PromotionInputError(
            f"champion scored on {len(champion)} rows, challenger on {len(challenger)}: not the same rows")
    if len(champion) == 0:
        raise PromotionInputError("no rows to compare champion and challenger on")
    return PairedTable(
        both_right=int(np.sum(champion & challenger)),
        champion_only=int(np.sum(champion & ~challenger)),
        challenger_only=int(np.sum(~champion & challenger)),
        both_wrong=int(np.sum(~champion & ~challenger)),
    )


# ---------------------------------------------------------------- tests


def mcnemar_exact_p(champion_only: int, challenger_only: int) -> float:
    """One-sided exact McNemar p-value for "the challenger is better".

    Under equal accuracy each discordant row is a fair coin: P(X >= c) for
    X ~ Binomial(b + c, 1/2), b = champion_only, c = challenger_only.
    No discordant rows is no evidence: p = 1.
    """
    if champion_only < 0 or challenger_only < 0:
        raise PromotionInputError(f"discordant counts must be >= 0, got {champion_only} and {challenger_only}")
    discordant = champion_only + challenger_only
    if discordant == 0:
        return 1.0
    return float(stats.binom.sf(challenger_only - 1, discordant, 0.5))


def _restricted_champion_only_rate(table: PairedTable, difference: float) -> float:
    """Maximum-likelihood rate of champion-only rows given challenger minus champion accuracy = `difference`.

    The multinomial likelihood b log p + c log(p + d) + k log(1 - 2p - d) has its
    maximum at the positive root of 2n p^2 - B p - b d (1 - d) = 0, with
    B = (b + c)(1 - d) - 2 d (b + k), k the concordant rows.
    """
    n, b, c = table.rows, table.champion_only, table.challenger_only
    concordant = n - b - c
    linear = (b + c) * (1 - difference) - 2 * difference * (b + concordant)
    root = (linear + math.sqrt(max(linear * linear + 8 * n * b * difference * (1 - difference), 0.0))) / (4 * n)
    return min(max(root, max(0.0, -difference)), (1 - difference) / 2)


def _score_statistic(table: PairedTable, difference: float) -> float:
    """Tango's score statistic for H0: challenger minus champion accuracy = `difference`."""
    n = table.rows
    excess = table.challenger_only - table.champion_only - n * difference
    if excess == 0:
        return 0.0
    rate = _restricted_champion_only_rate(table, difference)
    variance = n * (2 * rate + difference - difference * difference)
    if variance <= 0:
        return math.copysign(math.inf, excess)
    return excess / math.sqrt(variance)


def paired_difference_interval(table: PairedTable, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Two-sided `confidence` interval of challenger minus champion accuracy (Tango's score interval).

    Why this interval: the gate sees a few discordant rows (about 1-3% of a few
    hundred), where the Wald interval is far too narrow and collapses to a single
    point when both models agree on every row; the exact conditional test on the
    discordant rows judges their ratio, which says nothing about a margin in
    accuracy points unless the random number of discordant rows is treated as
    fixed. Tango's score interval (inverting the score test of the paired
    difference with the restricted maximum-likelihood variance) keeps close to
    its nominal coverage with few discordant rows and stays informative when
    there are none: with n rows all concordant, it is [-z^2/(n+z^2), +z^2/(n+z^2)].
    Non-inferiority uses the lower limit of the two-sided 95% interval, the
    usual convention (a one-sided test at 2.5%).
    """
    if not 0 < confidence < 1:
        raise PromotionInputError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    estimate = table.difference
    # The statistic decreases in the hypothesised difference; the limits are where it crosses +z and -z.
    low = -1.0 if estimate <= -1 else optimize.brentq(
        lambda d: _score_statistic(table, d) - z, -1.0 + 1e-12, estimate, xtol=1e-10)
    high = 1.0 if estimate >= 1 else optimize.brentq(
        lambda d: _score_statistic(table, d) + z, estimate, 1.0 - 1e-12, xtol=1e-10)
    return float(low), float(high)


# ---------------------------------------------------------------- the decision


@dataclass(frozen=True)
class PromotionDecision:
    both_right: int
    champion_only: int
    challenger_only: int
    both_wrong: int
    rows: int
    champion_accuracy: float
    challenger_accuracy: float
    difference: float  # challenger minus champion accuracy
    p_value: float  # exact one-sided McNemar, challenger better
    interval: tuple[float, float]  # of the difference, at `confidence`
    confidence: float
    margin: float
    alpha: float
    degradation_retrain: bool
    rule: str  # the rule that decided: superiority, or non_inferiority on a degradation retrain without it
    promote: bool
    summary: str

    @property
    def decision(self) -> str:
        return PROMOTE if self.promote else KEEP_CHAMPION

    def metadata(self) -> dict:
        """Plain JSON values for check and asset metadata."""
        return {
            "decision": self.decision,
            "rule": self.rule,
            "summary": self.summary,
            "rows": self.rows,
            "both_right": self.both_right,
            "champion_only": self.champion_only,
            "challenger_only": self.challenger_only,
            "both_wrong": self.both_wrong,
            "champion_accuracy": round(self.champion_accuracy, 6),
            "challenger_accuracy": round(self.challenger_accuracy, 6),
            "difference": round(self.difference, 6),
            "mcnemar_p_value": self.p_value,
            "interval": [round(self.interval[0], 6), round(self.interval[1], 6)],
            "confidence": self.confidence,
            "margin": self.margin,
            "alpha": self.alpha,
            "degradation_retrain": self.degradation_retrain,
        }


def _points(value: float) -> str:
    return f"{value * 100:+.1f}"


def decide_promotion(champion_correct, challenger_correct, *, degradation_retrain: bool = False,
                     alpha: float = DEFAULT_ALPHA, margin: float = DEFAULT_MARGIN,
                     confidence: float = DEFAULT_CONFIDENCE) -> PromotionDecision:
    """Promote the challenger, or keep the champion, from both models' correctness on the same rows."""
    if not 0 < alpha < 1:
        raise PromotionInputError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    if not 0 <= margin < 1:
        raise PromotionInputError(f"margin must lie in [0, 1) (a share of rows, 0.01 = 1 point), got {margin}")
    table = paired_table(champion_correct, challenger_correct)
    p_value = mcnemar_exact_p(table.champion_only, table.challenger_only)
    interval = paired_difference_interval(table, confidence)
    superior = p_value < alpha
    # A tie never promotes, nor does a challenger behind on these rows: non-inferiority needs it ahead.
    non_inferior = (degradation_retrain and table.challenger_only > table.champion_only
                    and interval[0] > -margin)
    promote = superior or non_inferior
    # The rule that decided: superiority, or non-inferiority when a degradation retrain falls back on it.
    rule = NON_INFERIORITY if degradation_retrain and not superior else SUPERIORITY
    summary = _summary(table, p_value, interval, confidence, margin, alpha, degradation_retrain, superior, promote)
    return PromotionDecision(
        table.both_right, table.champion_only, table.challenger_only, table.both_wrong, table.rows,
        table.champion_accuracy, table.challenger_accuracy, table.difference, p_value, interval,
        confidence, margin, alpha, degradation_retrain, rule, promote, summary,
    )


def _summary(table: PairedTable, p_value: float, interval: tuple[float, float], confidence: float, margin: float,
             alpha: float, degradation_retrain: bool, superior: bool, promote: bool) -> str:
    head = (f"{PROMOTE if promote else KEEP_CHAMPION}: challenger right on {table.challenger_only} rows the champion "
            f"missed, champion right on {table.champion_only} the challenger missed (n={table.rows}); "
            f"exact McNemar p={p_value:.2g} {'<' if superior else '>='} {alpha:g}")
    if superior:
        return head + ": the challenger is better"
    if not degradation_retrain:
        return head + "; not a degradation retrain, so non-inferiority does not apply"
    limits = (f"accuracy difference {_points(table.difference)} points, {confidence:.0%} interval "
              f"[{_points(interval[0])}, {_points(interval[1])}], margin {margin * 100:.1f} points")
    if table.challenger_only <= table.champion_only:
        verdict = "a tie does not promote" if table.challenger_only == table.champion_only else "the challenger is behind"
        return head + f"; degradation retrain, {limits}: {verdict}"
    if promote:
        return head + f"; degradation retrain, {limits}: non-inferior"
    return head + f"; degradation retrain, {limits}: inferiority not ruled out"


# ---------------------------------------------------------------- the evaluation set


@dataclass(frozen=True)
class EvaluationWeeks:
    """The out-of-time evaluation set: the most recent weeks of the window, oldest first."""

    weeks: tuple[str, ...]
    rows: int
    min_rows: int
    weeks_left_for_training: int
    reason: str

    def metadata(self) -> dict:
        return {"evaluation_weeks": list(self.weeks), "evaluation_rows": self.rows,
                "min_evaluation_rows": self.min_rows, "weeks_left_for_training": self.weeks_left_for_training,
                "evaluation_reason": self.reason}


def _window_weeks(window: Sequence[tuple[Week | str, int]]) -> list[tuple[Week, int]]:
    weeks = []
    for position, pair in enumerate(window):
        try:
            week, rows = pair
            week = Week.of(week)
        except (TypeError, ValueError) as exc:
            raise PromotionInputError(f"window entry {position} is not a (week, rows) pair: {pair!r} ({exc})") from exc
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 0:
            raise PromotionInputError(f"week {week} has {rows!r} rows; a row count is an integer >= 0")
        if weeks and week <= weeks[-1][0]:
            raise PromotionInputError(f"the window's weeks must be in increasing order: {week} follows {weeks[-1][0]}")
        weeks.append((week, int(rows)))
    return weeks


def select_evaluation_weeks(window: Sequence[tuple[Week | str, int]],
                            min_rows: int = DEFAULT_MIN_EVALUATION_ROWS) -> EvaluationWeeks:
    """Pool the window's most recent weeks backwards until they hold at least `min_rows` rows.

    `window` is the training window's (week, rows) pairs in increasing week order;
    the weeks not chosen are the ones left to train the challenger on.
    """
    if min_rows < 1:
        raise PromotionInputError(f"min_rows must be >= 1, got {min_rows}")
    weeks = _window_weeks(window)
    total = sum(rows for _, rows in weeks)
    if total < min_rows:
        span = f"{weeks[0][0]} .. {weeks[-1][0]} ({len(weeks)} weeks)" if weeks else "is empty and"
        raise InsufficientEvaluationRows(
            f"the training window {span} holds {total} rows, {min_rows - total} short of the {min_rows}-row "
            f"minimum for an out-of-time evaluation set: widen the training window (more weeks) or lower "
            f"the minimum evaluation rows")
    pooled, start = 0, len(weeks)
    while pooled < min_rows:
        start -= 1
        pooled += weeks[start][1]
    chosen = tuple(week.key for week, _ in weeks[start:])
    reason = (f"the {len(chosen)} most recent week{'s' if len(chosen) > 1 else ''} of the window "
              f"({chosen[0]} .. {chosen[-1]}) pooled backwards hold {pooled} rows, the first to reach the "
              f"{min_rows}-row minimum; {start} earlier week{'s' if start != 1 else ''} remain for training")
    return EvaluationWeeks(chosen, pooled, min_rows, start, reason)
