"""The promotion gate's statistics: is the challenger better than the champion, on evidence?

Pure functions (numpy and scipy only; no Dagster, no MLflow), shared by the
training assets, benchmarks/promotion_gate.py and the tests.

Both models are scored on the same rows, unseen by both: the out-of-time
evaluation set, the most recent weeks of the training window pooled backwards
until a minimum number of rows (`select_evaluation_weeks`). Each model gives a
boolean "correct" vector on those rows; the pair of vectors is a paired 2x2
table (`paired_table`), and only the discordant rows (one model right, the
other wrong) carry evidence about which is better.

Rules (`decide_promotion` for accuracy, `decide_promotion_on` for any gate metric):
- superiority: promote when a one-sided test says the challenger is better,
  p < alpha (default 0.05). For accuracy the test is the exact McNemar test on
  the discordant rows; for the other metrics (macro F1, balanced accuracy),
  which do not decompose into per-row wins and losses, it is the paired
  randomization test (`randomization_p`): under equal models, which of a row's
  two predictions is the challenger's is a coin toss;
- non-inferiority, only when the retraining was requested because the champion
  degraded: also promote when the challenger is ahead on the paired rows and
  the lower limit of the 95% interval of the difference lies above -margin
  (default 1 point): Tango's score interval for accuracy, the paired
  bootstrap's percentile interval for the other metrics (`paired_bootstrap`:
  the same rows resampled with replacement for both models);
- otherwise the champion stays. A tie (as many rows won as lost, identical
  models included) never promotes.
The false-alarm rates (A/A trials) and the power of each test are measured by
benchmarks/promotion_gate.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from scipy import optimize, stats

from stellar_core.weeks import Week

DEFAULT_ALPHA = 0.05
DEFAULT_MARGIN = 0.01
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_EVALUATION_ROWS = 300
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0

ACCURACY = "accuracy"
MACRO_F1 = "macro_f1"
BALANCED_ACCURACY = "balanced_accuracy"
GATE_METRICS = (ACCURACY, MACRO_F1, BALANCED_ACCURACY)
MCNEMAR = "exact McNemar"
RANDOMIZATION = "paired randomization test, paired bootstrap interval"

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
    metric: str = ACCURACY  # what `difference`, `interval` and the values are of
    test: str = MCNEMAR  # MCNEMAR, or RANDOMIZATION with `resamples` and `seed`
    champion_value: float | None = None  # the metric on the evaluation rows; None: accuracy above
    challenger_value: float | None = None
    resamples: int | None = None
    seed: int | None = None

    @property
    def decision(self) -> str:
        return PROMOTE if self.promote else KEEP_CHAMPION

    @property
    def test_key(self) -> str:
        """The test as a metadata key prefix: mcnemar or randomization."""
        return "mcnemar" if self.test == MCNEMAR else "randomization"

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
            "metric": self.metric,
            "test": self.test,
            **({"champion_value": round(self.champion_value, 6), "challenger_value": round(self.challenger_value, 6),
                "resamples": self.resamples, "seed": self.seed} if self.test == RANDOMIZATION else {}),
            "difference": round(self.difference, 6),
            f"{self.test_key}_p_value": self.p_value,
            "interval": [round(self.interval[0], 6), round(self.interval[1], 6)],
            "confidence": self.confidence,
            "margin": self.margin,
            "alpha": self.alpha,
            "degradation_retrain": self.degradation_retrain,
        }


def _points(value: float) -> str:
    return f"{value * 100:+.1f}"


def _check_rule_inputs(alpha: float, margin: float) -> None:
    if not 0 < alpha < 1:
        raise PromotionInputError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    if not 0 <= margin < 1:
        raise PromotionInputError(f"margin must lie in [0, 1) (a share of rows, 0.01 = 1 point), got {margin}")


def decide_promotion(champion_correct, challenger_correct, *, degradation_retrain: bool = False,
                     alpha: float = DEFAULT_ALPHA, margin: float = DEFAULT_MARGIN,
                     confidence: float = DEFAULT_CONFIDENCE) -> PromotionDecision:
    """Promote the challenger, or keep the champion, from both models' correctness on the same rows."""
    _check_rule_inputs(alpha, margin)
    table = paired_table(champion_correct, challenger_correct)
    p_value = mcnemar_exact_p(table.champion_only, table.challenger_only)
    interval = paired_difference_interval(table, confidence)
    ahead = _ahead(table.challenger_only, table.champion_only)
    superior, promote, rule = _apply_rules(p_value, interval, ahead, degradation_retrain, alpha, margin)
    test = f"exact McNemar p={p_value:.2g}"
    summary = _summary(table, ACCURACY, table.difference, test, p_value, interval, confidence, margin, alpha,
                       degradation_retrain, ahead, superior, promote)
    return PromotionDecision(
        table.both_right, table.champion_only, table.challenger_only, table.both_wrong, table.rows,
        table.champion_accuracy, table.challenger_accuracy, table.difference, p_value, interval,
        confidence, margin, alpha, degradation_retrain, rule, promote, summary,
    )


def _ahead(challenger: float, champion: float) -> str:
    return "ahead" if challenger > champion else ("tie" if challenger == champion else "behind")


def _apply_rules(p_value: float, interval: tuple[float, float], ahead: str, degradation_retrain: bool,
                 alpha: float, margin: float) -> tuple[bool, bool, str]:
    """(superior, promote, the rule that decided)."""
    superior = p_value < alpha
    # A tie never promotes, nor does a challenger behind on these rows: non-inferiority needs it ahead.
    non_inferior = degradation_retrain and ahead == "ahead" and interval[0] > -margin
    # The rule that decided: superiority, or non-inferiority when a degradation retrain falls back on it.
    rule = NON_INFERIORITY if degradation_retrain and not superior else SUPERIORITY
    return superior, superior or non_inferior, rule


def _summary(table: PairedTable, metric: str, difference: float, test: str, p_value: float,
             interval: tuple[float, float], confidence: float, margin: float, alpha: float,
             degradation_retrain: bool, ahead: str, superior: bool, promote: bool,
             interval_name: str = "interval") -> str:
    head = (f"{PROMOTE if promote else KEEP_CHAMPION}: challenger right on {table.challenger_only} rows the champion "
            f"missed, champion right on {table.champion_only} the challenger missed (n={table.rows}); "
            f"{test} {'<' if superior else '>='} {alpha:g}")
    if superior:
        return head + f": the challenger is better{'' if metric == ACCURACY else ' on ' + metric}"
    if not degradation_retrain:
        return head + "; not a degradation retrain, so non-inferiority does not apply"
    limits = (f"{metric} difference {_points(difference)} points, {confidence:.0%} {interval_name} "
              f"[{_points(interval[0])}, {_points(interval[1])}], margin {margin * 100:.1f} points")
    if ahead != "ahead":
        verdict = "a tie does not promote" if ahead == "tie" else "the challenger is behind"
        return head + f"; degradation retrain, {limits}: {verdict}"
    if promote:
        return head + f"; degradation retrain, {limits}: non-inferior"
    return head + f"; degradation retrain, {limits}: inferiority not ruled out"


# ---------------------------------------------------------------- other metrics: randomization and bootstrap


def _class_vector(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise PromotionInputError(f"{name} must be a one-dimensional vector of class indices, got shape {array.shape}")
    if array.size and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise PromotionInputError(f"{name} must hold class indices (integers >= 0), got values like "
                                  f"{array[:3].tolist()}")
    return array.astype(np.int64)


def _class_vectors(labels, champion_predicted, challenger_predicted) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and both models' predictions as class-index vectors over the same, non-empty rows."""
    labels = _class_vector(labels, "labels")
    champion = _class_vector(champion_predicted, "champion_predicted")
    challenger = _class_vector(challenger_predicted, "challenger_predicted")
    if not len(labels) == len(champion) == len(challenger):
        raise PromotionInputError(f"{len(labels)} labels, champion scored on {len(champion)} rows, challenger "
                                  f"on {len(challenger)}: not the same rows")
    if len(labels) == 0:
        raise PromotionInputError("no rows to compare champion and challenger on")
    return labels, champion, challenger


def _check_resampled_metric(metric: str) -> None:
    if metric not in (MACRO_F1, BALANCED_ACCURACY):
        raise PromotionInputError(f"the paired resampling tests score {MACRO_F1} or {BALANCED_ACCURACY}, "
                                  f"got {metric!r}")


def _check_resamples(resamples: int) -> None:
    if resamples < 100:
        raise PromotionInputError(f"resamples must be >= 100 for a usable test and interval, got {resamples}")


@dataclass(frozen=True)
class _Rows:
    """Per-row indicators [rows, classes] of the evaluation rows, over the classes in the labels."""

    actual: np.ndarray  # the row's label is the class
    champion_guess: np.ndarray  # the champion predicted the class
    challenger_guess: np.ndarray

    @classmethod
    def of(cls, labels: np.ndarray, champion: np.ndarray, challenger: np.ndarray) -> "_Rows":
        """From vectors already checked by `_class_vectors`."""
        classes = np.unique(labels)[None, :]
        return cls(*((values[:, None] == classes).astype(np.float64) for values in (labels, champion, challenger)))

    @property
    def rows(self) -> int:
        return len(self.actual)


def _checked_rows(metric: str, labels, champion_predicted, challenger_predicted, resamples: int) -> _Rows:
    """The public resampling tests' inputs, checked, as indicator rows."""
    _check_resampled_metric(metric)
    _check_resamples(resamples)
    return _Rows.of(*_class_vectors(labels, champion_predicted, challenger_predicted))


def _score(metric: str, hits: np.ndarray, actual: np.ndarray, guessed: np.ndarray) -> np.ndarray:
    """`metric` from per-class counts [draws, classes], averaged over the classes. A class a draw lacks
    (no row of it, nor predicted) scores 0 for both models alike."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = hits / actual if metric == BALANCED_ACCURACY else 2 * hits / (actual + guessed)
    return np.nan_to_num(per_class, nan=0.0).mean(axis=1)


def _draws(resamples: int, rows: int) -> Iterator[int]:
    """Sizes of the chunks of draws: a [draws, rows] matrix stays under ~16 MB."""
    chunk = max(1, 2_000_000 // rows)
    for start in range(0, resamples, chunk):
        yield min(chunk, resamples - start)


def paired_bootstrap(metric: str, labels, champion_predicted, challenger_predicted, *,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> tuple[float, float, np.ndarray]:
    """(champion's metric, challenger's metric, challenger minus champion on each resample).

    Each resample draws the evaluation rows with replacement, the same rows for both
    models (that is what makes it paired); seeded, so a decision can be replayed.
    """
    return _bootstrap(metric, _checked_rows(metric, labels, champion_predicted, challenger_predicted, resamples),
                      resamples, seed)


def _bootstrap(metric: str, rows: _Rows, resamples: int, seed: int) -> tuple[float, float, np.ndarray]:
    """`paired_bootstrap` on checked rows."""

    def scores(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        actual = weights @ rows.actual
        return tuple(_score(metric, weights @ (rows.actual * guess), actual, weights @ guess)
                     for guess in (rows.champion_guess, rows.challenger_guess))

    champion_value, challenger_value = (float(v[0]) for v in scores(np.ones((1, rows.rows))))
    rng = np.random.default_rng(seed)
    differences = []
    for size in _draws(resamples, rows.rows):
        weights = rng.multinomial(rows.rows, np.full(rows.rows, 1 / rows.rows), size=size).astype(np.float64)
        champion, challenger = scores(weights)
        differences.append(challenger - champion)
    return champion_value, challenger_value, np.concatenate(differences)


def randomization_p(metric: str, labels, champion_predicted, challenger_predicted, *,
                    resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> float:
    """One-sided p-value of the paired randomization test for "the challenger is better on `metric`".

    If both models were equally good, which of a row's two predictions is the
    challenger's would be a coin toss: each rearrangement swaps them on a random half
    of the rows. p = (1 + rearrangements where the challenger leads by at least the
    observed lead) / (1 + rearrangements). Its level holds by construction when the
    models are exchangeable, whatever the metric's distribution. The bootstrap's
    percentile rule (promote when fewer than alpha of the resamples put the
    challenger not ahead) holds it only approximately: on simulated A/A pairs of
    300 rows it promoted 4.4-8.5% at alpha 0.05 (benchmarks/promotion_gate.py (e)).
    Identical predictions give p = 1.
    """
    return _randomization_p(metric, _checked_rows(metric, labels, champion_predicted, challenger_predicted,
                                                  resamples), resamples, seed)


def _randomization_p(metric: str, rows: _Rows, resamples: int, seed: int) -> float:
    """`randomization_p` on checked rows."""
    champion_hits, challenger_hits = rows.actual * rows.champion_guess, rows.actual * rows.challenger_guess
    actual = rows.actual.sum(axis=0)[None, :]

    def lead(swapped: np.ndarray) -> np.ndarray:
        # A swapped row moves its counts from one model to the other: totals plus swapped @ (other - own).
        challenger = _score(metric, challenger_hits.sum(0) + swapped @ (champion_hits - challenger_hits), actual,
                            rows.challenger_guess.sum(0) + swapped @ (rows.champion_guess - rows.challenger_guess))
        champion = _score(metric, champion_hits.sum(0) + swapped @ (challenger_hits - champion_hits), actual,
                          rows.champion_guess.sum(0) + swapped @ (rows.challenger_guess - rows.champion_guess))
        return challenger - champion

    observed = float(lead(np.zeros((1, rows.rows)))[0])
    rng = np.random.default_rng(seed)
    at_least = 0
    for size in _draws(resamples, rows.rows):
        # A hair of tolerance: a rearrangement that reproduces the observed table counts as reaching it.
        at_least += int(np.sum(lead((rng.random((size, rows.rows)) < 0.5).astype(np.float64)) >= observed - 1e-12))
    return (1 + at_least) / (1 + resamples)


def decide_promotion_on(metric: str, labels, champion_predicted, challenger_predicted, *,
                        degradation_retrain: bool = False, alpha: float = DEFAULT_ALPHA,
                        margin: float = DEFAULT_MARGIN, confidence: float = DEFAULT_CONFIDENCE,
                        resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> PromotionDecision:
    """The gate on `metric` (one of GATE_METRICS) from class indices: labels and each model's predictions.

    Accuracy is decided by `decide_promotion` (exact McNemar, Tango's interval); the
    other metrics by the paired randomization test (superiority) and the paired
    bootstrap's percentile interval at `confidence` (non-inferiority), both seeded.
    """
    if metric not in GATE_METRICS:
        raise PromotionInputError(f"unknown gate metric {metric!r}; the gate decides on one of {list(GATE_METRICS)}")
    # Lengths are checked before comparing with the labels: numpy would broadcast a one-row vector silently.
    labels, champion, challenger = _class_vectors(labels, champion_predicted, challenger_predicted)
    if metric == ACCURACY:
        return decide_promotion(champion == labels, challenger == labels, degradation_retrain=degradation_retrain,
                                alpha=alpha, margin=margin, confidence=confidence)
    _check_rule_inputs(alpha, margin)
    if not 0 < confidence < 1:
        raise PromotionInputError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    _check_resamples(resamples)
    table = paired_table(champion == labels, challenger == labels)
    # One set of indicator rows for both tests; each draws from its own generator seeded with `seed`,
    # so the figures are those of calling paired_bootstrap and randomization_p directly.
    rows = _Rows.of(labels, champion, challenger)
    champion_value, challenger_value, differences = _bootstrap(metric, rows, resamples, seed)
    p_value = _randomization_p(metric, rows, resamples, seed)
    tail = (1 - confidence) / 2
    interval = (float(np.quantile(differences, tail)), float(np.quantile(differences, 1 - tail)))
    difference = challenger_value - champion_value
    ahead = _ahead(challenger_value, champion_value)
    superior, promote, rule = _apply_rules(p_value, interval, ahead, degradation_retrain, alpha, margin)
    test = f"paired randomization test of {metric} ({resamples} rearrangements, seed {seed}) p={p_value:.2g}"
    summary = _summary(table, metric, difference, test, p_value, interval, confidence, margin, alpha,
                       degradation_retrain, ahead, superior, promote, interval_name="bootstrap interval")
    return PromotionDecision(
        table.both_right, table.champion_only, table.challenger_only, table.both_wrong, table.rows,
        table.champion_accuracy, table.challenger_accuracy, difference, p_value, interval,
        confidence, margin, alpha, degradation_retrain, rule, promote, summary,
        metric, RANDOMIZATION, champion_value, challenger_value, resamples, seed,
    )


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
