"""Drift statistics: is this week's data, or the model's behaviour on it, unlike the champion's?

Pure functions on DataFrames and arrays (no Dagster, no MLflow), shared by the
`drift_report` asset, the retraining sensor's inputs and benchmarks/drift_power.py.

What is compared: the rows of week W (or of a trailing window of weeks ending
at W when W alone has fewer than `min_rows`) against the champion's reference,
the feature rows of the weeks it trained on. Four families of tests:

- data drift, per feature:
    * fewer than `large_sample_rows` current rows: two-sample Kolmogorov-Smirnov,
      drifted when p < ks_alpha / number of features (Bonferroni, so the whole
      family of 13 features false-alarms at most ks_alpha of the time);
    * from `large_sample_rows` on: the population stability index over 10
      reference-quantile bins, drifted when PSI >= psi_threshold (0.25, the
      usual "significant shift"): with thousands of rows KS calls any trivial
      difference significant, PSI measures how large the shift is.
    Every feature also gets the Wasserstein distance in reference standard
    deviations, the "by how much" a person reads.
- prediction drift (class mix of the predictions):
    * a class whose share crosses the bounds: its Wilson 95% interval lies
      wholly above 90% or wholly below 10% while its reference share was
      inside [10%, 90%] (a class that was already rare in the reference, such
      as quasars before 2009, is not an alarm);
    * or the mix differs from the champion's predictions on its reference:
      chi-square p < class_mix_alpha and total variation distance >= 0.15.
- performance drift: accuracy on the labelled rows is more than 5 percentage
  points below the champion's test accuracy and a one-sided binomial test
  against that accuracy gives p < performance_alpha (22 rows cannot tell a
  5-point drop from chance; the test keeps small weeks from false alarms).
- rejected rows: the share of rows dropped as unphysical or missing rose by
  more than 2 points over the reference share, binomial p < rejected_alpha.

Fewer than `min_rows` rows (after the trailing window) is "not enough data":
no test runs and nothing is flagged.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from stellar_core.contract import CLASSES, class_counts

NOT_ENOUGH_DATA = "not_enough_data"
DRIFT = "drift"
NO_DRIFT = "no_drift"

DRIFT_FAMILIES = ("data_drift", "prediction_drift", "performance_drift", "rejected_rows")


class DriftInputError(ValueError):
    """The inputs of a drift computation are unusable (names what is wrong)."""


@dataclass(frozen=True)
class DriftThresholds:
    min_rows: int = 30
    trailing_weeks: int = 4
    large_sample_rows: int = 1000
    ks_alpha: float = 0.01
    psi_threshold: float = 0.25
    psi_bins: int = 10
    class_share_high: float = 0.90
    class_share_low: float = 0.10
    class_mix_alpha: float = 0.01
    class_mix_min_distance: float = 0.15
    accuracy_drop: float = 0.05
    performance_alpha: float = 0.01
    rejected_rise: float = 0.02
    rejected_alpha: float = 0.01

    def __post_init__(self) -> None:
        problems = []
        if self.min_rows < 2:
            problems.append(f"min_rows must be >= 2, got {self.min_rows}")
        if self.trailing_weeks < 1:
            problems.append(f"trailing_weeks must be >= 1, got {self.trailing_weeks}")
        for name in ("ks_alpha", "class_mix_alpha", "performance_alpha", "rejected_alpha"):
            value = getattr(self, name)
            if not 0 < value < 1:
                problems.append(f"{name} must lie in (0, 1), got {value}")
        if not 0 <= self.class_share_low < self.class_share_high <= 1:
            problems.append("need 0 <= class_share_low < class_share_high <= 1")
        if self.accuracy_drop < 0 or self.rejected_rise < 0 or self.psi_threshold <= 0:
            problems.append("accuracy_drop and rejected_rise must be >= 0, psi_threshold > 0")
        if problems:
            raise DriftInputError("invalid drift thresholds: " + "; ".join(problems))

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- window choice

def choose_window(rows_per_week: Mapping[str, int], week: str, thresholds: DriftThresholds) -> list[str]:
    """The weeks to test for `week`: W alone when it has min_rows, else W and the weeks
    before it (up to trailing_weeks in all) until min_rows is reached. The caller
    checks the row count of the result: still short means "not enough data"."""
    if week not in rows_per_week:
        raise DriftInputError(f"week {week} is not among the weeks given ({sorted(rows_per_week)[:3]}...)")
    earlier = sorted(k for k in rows_per_week if k <= week)[-thresholds.trailing_weeks:]
    chosen: list[str] = []
    total = 0
    for key in reversed(earlier):
        chosen.insert(0, key)
        total += int(rows_per_week[key])
        if total >= thresholds.min_rows:
            break
    return chosen


# ---------------------------------------------------------------- data drift

def _clean(values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over reference-quantile bins (empty bins get a small floor)."""
    reference, current = _clean(reference), _clean(current)
    if len(reference) == 0 or len(current) == 0:
        raise DriftInputError("psi needs non-empty reference and current samples")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    cur_counts = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    floor = 1e-4
    p = np.maximum(ref_counts / ref_counts.sum(), floor)
    q = np.maximum(cur_counts / cur_counts.sum(), floor)
    return float(np.sum((q - p) * np.log(q / p)))


def _check_feature_columns(features: Sequence[str], **columns_of_rows: Iterable[str]) -> None:
    """Raise naming, for each kind of rows (keyword: its columns), the feature columns it lacks."""
    gaps = [f"{rows} rows: {missing}" for rows, columns in columns_of_rows.items()
            if (missing := [f for f in features if f not in columns])]
    if gaps:
        raise DriftInputError("feature columns missing from " + "; from ".join(gaps))


# scipy's ks_2samp without its per-call argument handling (axis, NaN policy, array-API dispatch), which costs
# three times the test itself on a week's rows; the samples given are already clean 1-D float arrays.
_KS_2SAMP = inspect.unwrap(stats.ks_2samp)


@dataclass(frozen=True)
class ReferenceSample:
    """A reference's feature columns, cleaned and sorted once: every week a champion predicts is compared
    with the same reference, so a run over many weeks prepares it once (ReferenceSample.of)."""

    sorted_values: Mapping[str, np.ndarray]  # finite values, ascending
    means: Mapping[str, float]
    scales: Mapping[str, float]  # standard deviation, 1.0 when the feature is constant
    rows: int

    @classmethod
    def of(cls, reference: pd.DataFrame, features: Sequence[str]) -> "ReferenceSample":
        _check_feature_columns(features, reference=reference.columns)
        clean = {name: _clean(reference[name]) for name in features}
        return cls({name: np.sort(values) for name, values in clean.items()},
                   {name: float(np.mean(values)) if len(values) else math.nan for name, values in clean.items()},
                   {name: (float(np.std(values)) or 1.0) if len(values) else 1.0 for name, values in clean.items()},
                   int(len(reference)))

    def __len__(self) -> int:
        return self.rows


def wasserstein_sorted(reference_sorted: np.ndarray, current: np.ndarray) -> float:
    """1-Wasserstein distance between two samples' empirical distributions, the reference already sorted:
    the area between the two step CDFs (what scipy.stats.wasserstein_distance computes)."""
    values = np.sort(np.concatenate((reference_sorted, current)), kind="mergesort")
    current_sorted = np.sort(current)
    at = values[:-1]
    gap = np.abs(np.searchsorted(reference_sorted, at, side="right") / len(reference_sorted)
                 - np.searchsorted(current_sorted, at, side="right") / len(current_sorted))
    return float(np.dot(gap, np.diff(values)))


def feature_drift(reference: pd.DataFrame | ReferenceSample, current: pd.DataFrame, features: Sequence[str],
                  thresholds: DriftThresholds) -> list[dict]:
    """One row per feature: the test suited to the sample size, its statistic, threshold and verdict."""
    # Both sides at once, so one error names all that is missing; a prepared sample holds only its features.
    _check_feature_columns(features, reference=(
        reference.sorted_values if isinstance(reference, ReferenceSample) else reference.columns),
        current=current.columns)
    sample = reference if isinstance(reference, ReferenceSample) else ReferenceSample.of(reference, features)
    alpha = thresholds.ks_alpha / max(1, len(features))
    return [_one_feature(name, sample, _clean(current[name]), alpha, thresholds) for name in features]


def _one_feature(name: str, sample: ReferenceSample, cur: np.ndarray, alpha: float,
                 thresholds: DriftThresholds) -> dict:
    ref = sample.sorted_values[name]
    row = {"feature": name, "n_reference": int(len(ref)), "n_current": int(len(cur))}
    if len(cur) < thresholds.min_rows or len(ref) < thresholds.min_rows:
        row.update(test="none", status=NOT_ENOUGH_DATA, drifted=False, statistic=None, p_value=None,
                   threshold=None, wasserstein_sd=None)
        return row
    scale = sample.scales[name]
    row["wasserstein_sd"] = wasserstein_sorted(ref, cur) / scale
    row["mean_shift_sd"] = float((np.mean(cur) - sample.means[name]) / scale)
    if len(cur) < thresholds.large_sample_rows:
        result = _KS_2SAMP(ref, cur)
        row.update(test="ks", statistic=float(result.statistic), p_value=float(result.pvalue),
                   threshold=f"p < {alpha:.2g}", drifted=bool(result.pvalue < alpha))
    else:
        value = psi(ref, cur, thresholds.psi_bins)
        row.update(test="psi", statistic=value, p_value=None,
                   threshold=f"PSI >= {thresholds.psi_threshold}", drifted=bool(value >= thresholds.psi_threshold))
    row["status"] = DRIFT if row["drifted"] else NO_DRIFT
    return row


# ---------------------------------------------------------------- prediction drift

def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _counts(labels: Iterable) -> dict[str, int]:
    try:
        return class_counts(labels)
    except ValueError as exc:
        raise DriftInputError(str(exc)) from None


def prediction_drift(current_predictions: Iterable, reference_predictions: Iterable,
                     thresholds: DriftThresholds) -> dict:
    cur, ref = _counts(current_predictions), _counts(reference_predictions)
    n, n_ref = sum(cur.values()), sum(ref.values())
    result: dict = {"current_mix": cur, "reference_mix": ref, "n_current": n, "n_reference": n_ref,
                    "bounds": [thresholds.class_share_low, thresholds.class_share_high]}
    if n < thresholds.min_rows or n_ref < thresholds.min_rows:
        result.update(status=NOT_ENOUGH_DATA, drifted=False, classes_out_of_bounds=[], reason=(
            f"{n} predictions (reference {n_ref}); at least {thresholds.min_rows} needed"))
        return result
    shares = {c: cur[c] / n for c in CLASSES}
    ref_shares = {c: ref[c] / n_ref for c in CLASSES}
    out_of_bounds = []
    for c in CLASSES:
        low, high = wilson_interval(cur[c], n)
        ref_inside = thresholds.class_share_low <= ref_shares[c] <= thresholds.class_share_high
        if ref_inside and (low > thresholds.class_share_high or high < thresholds.class_share_low):
            out_of_bounds.append({"class": c, "share": shares[c], "interval": [low, high],
                                  "reference_share": ref_shares[c]})
    # Chi-square of the current counts against the reference shares (a floor keeps empty classes testable).
    expected = np.array([max(ref_shares[c], 0.5 / n_ref) for c in CLASSES])
    expected = expected / expected.sum() * n
    chi2 = stats.chisquare([cur[c] for c in CLASSES], expected)
    distance = 0.5 * sum(abs(shares[c] - ref_shares[c]) for c in CLASSES)
    mix_moved = bool(chi2.pvalue < thresholds.class_mix_alpha and distance >= thresholds.class_mix_min_distance)
    drifted = bool(out_of_bounds) or mix_moved
    reasons = [f"{o['class']} at {o['share']:.0%} (95% CI {o['interval'][0]:.0%}-{o['interval'][1]:.0%}) "
               f"outside [{thresholds.class_share_low:.0%}, {thresholds.class_share_high:.0%}]" for o in out_of_bounds]
    if mix_moved:
        reasons.append(f"mix moved by {distance:.2f} (total variation) from the reference, chi-square p={chi2.pvalue:.2g}")
    result.update(status=DRIFT if drifted else NO_DRIFT, drifted=drifted, shares=shares, reference_shares=ref_shares,
                  classes_out_of_bounds=out_of_bounds, chi2_p_value=float(chi2.pvalue), total_variation=distance,
                  threshold=f"class share CI outside [{thresholds.class_share_low:.0%}, {thresholds.class_share_high:.0%}] "
                  f"or chi-square p < {thresholds.class_mix_alpha} with total variation >= {thresholds.class_mix_min_distance}",
                  reason="; ".join(reasons) or "class mix within bounds")
    return result


# ---------------------------------------------------------------- performance drift

def performance_drift(labels: Iterable, predictions: Iterable, champion_accuracy: float | None,
                      thresholds: DriftThresholds) -> dict:
    labels, predictions = list(labels), list(predictions)
    if len(labels) != len(predictions):
        raise DriftInputError(f"{len(labels)} labels but {len(predictions)} predictions")
    pairs = [(a, b) for a, b in zip(labels, predictions) if a is not None and not (isinstance(a, float) and math.isnan(a))]
    n = len(pairs)
    correct = sum(1 for a, b in pairs if a == b)
    result = {"n_labelled": n, "correct": correct, "accuracy": correct / n if n else None,
              "champion_accuracy": champion_accuracy, "max_drop": thresholds.accuracy_drop,
              "threshold": f"accuracy below champion's test accuracy by > {thresholds.accuracy_drop:.0%} "
                           f"and binomial p < {thresholds.performance_alpha}"}
    if champion_accuracy is None or not 0 < champion_accuracy <= 1:
        result.update(status=NOT_ENOUGH_DATA, drifted=False, reason="the champion's test accuracy is unknown")
        return result
    if n < thresholds.min_rows:
        result.update(status=NOT_ENOUGH_DATA, drifted=False,
                      reason=f"{n} labelled rows; at least {thresholds.min_rows} needed")
        return result
    accuracy = correct / n
    drop = champion_accuracy - accuracy
    # P(X <= correct) if the champion were as accurate as on its test set.
    p_value = float(stats.binom.cdf(correct, n, min(champion_accuracy, 1 - 1e-9)))
    drifted = bool(drop > thresholds.accuracy_drop and p_value < thresholds.performance_alpha)
    result.update(status=DRIFT if drifted else NO_DRIFT, drifted=drifted, drop=drop, p_value=p_value,
                  reason=f"accuracy {accuracy:.1%} vs champion {champion_accuracy:.1%} "
                         f"({-drop * 100:+.1f} points, p={p_value:.2g})")
    return result


# ---------------------------------------------------------------- rejected rows

def rejected_rows_drift(rows_in: int, rows_rejected: int, reference_rows_in: int, reference_rows_rejected: int,
                        thresholds: DriftThresholds) -> dict:
    for name, value in (("rows_in", rows_in), ("rows_rejected", rows_rejected),
                        ("reference_rows_in", reference_rows_in), ("reference_rows_rejected", reference_rows_rejected)):
        if value < 0:
            raise DriftInputError(f"{name} must be >= 0, got {value}")
    if rows_rejected > rows_in or reference_rows_rejected > reference_rows_in:
        raise DriftInputError("more rows rejected than received")
    ref_share = reference_rows_rejected / reference_rows_in if reference_rows_in else 0.0
    result = {"rows_in": rows_in, "rows_rejected": rows_rejected, "reference_share": ref_share,
              "threshold": f"rejected share above reference by > {thresholds.rejected_rise:.0%} "
                           f"and binomial p < {thresholds.rejected_alpha}"}
    if rows_in < thresholds.min_rows:
        result.update(status=NOT_ENOUGH_DATA, drifted=False, share=None,
                      reason=f"{rows_in} rows received; at least {thresholds.min_rows} needed")
        return result
    share = rows_rejected / rows_in
    p_value = float(stats.binom.sf(rows_rejected - 1, rows_in, max(ref_share, 1e-3)))
    drifted = bool(share - ref_share > thresholds.rejected_rise and p_value < thresholds.rejected_alpha)
    result.update(status=DRIFT if drifted else NO_DRIFT, drifted=drifted, share=share, p_value=p_value,
                  reason=f"{rows_rejected}/{rows_in} rows rejected ({share:.1%}) vs reference {ref_share:.1%}")
    return result


# ---------------------------------------------------------------- the report

def build_drift_report(*, reference: pd.DataFrame | ReferenceSample, current: pd.DataFrame, features: Sequence[str],
                       current_predictions: Sequence, reference_predictions: Sequence,
                       labels: Sequence | None, champion_accuracy: float | None,
                       rows_in: int, rows_rejected: int, reference_rows_in: int, reference_rows_rejected: int,
                       thresholds: DriftThresholds = DriftThresholds()) -> dict:
    """Every family of tests and the overall verdict; JSON-serialisable. `reference` may be prepared once
    (ReferenceSample.of) when many weeks are compared with it."""
    if len(current_predictions) != len(current):
        raise DriftInputError(f"{len(current)} current rows but {len(current_predictions)} predictions")
    report: dict = {"thresholds": thresholds.as_dict(), "rows_current": int(len(current)),
                    "rows_reference": int(len(reference))}
    # Each family decides on its own whether it has enough data: a week whose rows were
    # almost all rejected has too few clean rows for KS, yet plenty of evidence of rejection.
    rejected = rejected_rows_drift(rows_in, rows_rejected, reference_rows_in, reference_rows_rejected, thresholds)
    if len(current) < thresholds.min_rows:
        per_feature, drifted_features = [], []
        predictions = {"status": NOT_ENOUGH_DATA, "drifted": False, "classes_out_of_bounds": [],
                       "reason": f"{len(current)} clean rows; at least {thresholds.min_rows} needed"}
        performance = dict(predictions)
    else:
        per_feature = feature_drift(reference, current, features, thresholds)
        drifted_features = [f["feature"] for f in per_feature if f["drifted"]]
        predictions = prediction_drift(current_predictions, reference_predictions, thresholds)
        performance = performance_drift(labels if labels is not None else [None] * len(current),
                                        current_predictions, champion_accuracy, thresholds)
    flags = {
        "data_drift": bool(drifted_features),
        "prediction_drift": predictions["drifted"],
        "performance_drift": performance["drifted"],
        "rejected_rows": rejected["drifted"],
    }
    detected = any(flags.values())
    if detected:
        status, reason = DRIFT, ", ".join(k for k, v in flags.items() if v)
    elif len(current) < thresholds.min_rows and rejected["status"] == NOT_ENOUGH_DATA:
        status = NOT_ENOUGH_DATA
        reason = (f"not enough data: {len(current)} clean rows of {rows_in} received "
                  f"(< {thresholds.min_rows}); nothing tested")
    else:
        status, reason = NO_DRIFT, "no drift"
    report.update(status=status, drift_detected=detected, flags=flags,
                  features=per_feature, drifted_features=drifted_features, prediction=predictions,
                  performance=performance, rejected=rejected, reason=reason)
    return report


def summary_markdown(report: Mapping, title: str = "") -> str:
    """What a person reads in the Dagster UI: verdict, then each family with its threshold."""
    lines = [f"### {title}" if title else "", f"**{report['status'].replace('_', ' ')}**: {report.get('reason', '')}", ""]
    if report["status"] == NOT_ENOUGH_DATA:
        return "\n".join(lines)
    if not report["features"]:
        lines.append("features: not enough clean rows to test")
    lines += ["| feature | test | statistic | threshold | Wasserstein (sd) | drifted |", "|---|---|---|---|---|---|"]
    for f in report["features"]:
        stat = "n/a" if f.get("statistic") is None else f"{f['statistic']:.3f}" + (
            f" (p={f['p_value']:.2g})" if f.get("p_value") is not None else "")
        was = "n/a" if f.get("wasserstein_sd") is None else f"{f['wasserstein_sd']:.2f}"
        lines.append(f"| {f['feature']} | {f['test']} | {stat} | {f.get('threshold') or 'n/a'} | {was} | "
                     f"{'**yes**' if f['drifted'] else 'no'} |")
    for key, label in (("prediction", "prediction drift"), ("performance", "performance drift"),
                       ("rejected", "rejected rows")):
        part = report[key]
        lines.append(f"\n- {label}: **{part['status'].replace('_', ' ')}**: {part.get('reason', '')} "
                     f"(threshold: {part.get('threshold', 'n/a')})")
    return "\n".join(lines)


# ---------------------------------------------------------------- the retraining decision

@dataclass(frozen=True)
class RetrainingDecision:
    retrain: bool
    reason: str
    run_key: str | None = None


def retraining_run_key(week: str) -> str:
    """One retraining per drifted week, whatever re-evaluates it (the daemon's sensor or the replay)."""
    return f"drift-retrain-{week}"


def retraining_decision(week: str, status: str, triggers: Sequence[str], last_retraining_week: str | None,
                        cooldown_weeks: int, already_requested: bool, evidence: str = "") -> RetrainingDecision:
    """What the retraining sensor does with the drift report of `week` (ISO Sunday).

    Retrain when a trigger fired (by default the champion's own accuracy shown to have
    dropped; drift checks when configured as triggers), unless that week was already
    requested (same run key) or the last sensor-triggered retraining was fewer than
    `cooldown_weeks` observation weeks earlier. Cool-down counts partition weeks, not
    wall-clock time, so a replay of history and the live daemon agree. `evidence` is
    the sentence that says why (or why not), carried into the reason.
    """
    if cooldown_weeks < 0:
        raise DriftInputError(f"cooldown_weeks must be >= 0, got {cooldown_weeks}")
    because = f" ({evidence})" if evidence else ""
    if not triggers:
        if status == NOT_ENOUGH_DATA:
            return RetrainingDecision(False, f"{week}: not enough data to test, no retraining{because}")
        return RetrainingDecision(False, f"{week}: no trigger fired, no retraining{because}")
    key = retraining_run_key(week)
    fired = ", ".join(triggers)
    if already_requested:
        return RetrainingDecision(False, f"{week}: retraining for {fired} was already requested ({key})")
    if last_retraining_week is not None and last_retraining_week <= week:
        from stellar_core.weeks import Week

        gap = Week.of(week) - Week.of(last_retraining_week)
        if gap < cooldown_weeks:
            return RetrainingDecision(False, f"{week}: {fired} but in cool-down: retrained at "
                                             f"{last_retraining_week}, {gap} week(s) ago (< {cooldown_weeks})")
    return RetrainingDecision(True, f"{week}: retraining triggered by {fired}{because}", key)
