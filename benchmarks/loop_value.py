"""The value of the loop, measured: the whole survey replayed week by week under four policies (not a timed test).

    .venv/bin/python benchmarks/loop_value.py            # 2000-03-05 .. 2020-03-22, 200 A/A trials: minutes
    .venv/bin/python benchmarks/loop_value.py --smoke    # 20 weeks after the first champion, 6 A/A trials

This benchmark compares retraining policies with the platform's pure decision
rules (stellar_core: promotion, performance, training, drift, features, weeks);
no Dagster runs. The Dagster replay, `stellar demo --whole-survey`, runs the
same rules through the code location; here they run in one process so that
four policies over 1,047 weeks take minutes.

Every policy starts from the same first champion, bootstrapped as
stellar_app/replay.py does: trained at the first week whose training window
holds twice the gate's minimum evaluation rows. From the week after it, each
week is predicted by the champion of its time (trained only on earlier weeks);
a retraining at week W trains a challenger on the window ending at W (the
code location's default window, split out of time as the train_test_split
asset does) and, when promoted, predicts from W+1. Challengers are the
replay's size (stellar_app.replay.REPLAY_CHALLENGER), on one thread.

Policies:
1. platform: retrain when the champion's accuracy since its training is below
   its out-of-time reference on evidence (stellar_core.performance), never
   within the cool-down of the last retraining; promote when the floors pass
   and the paired gate says so on the evaluation rows the champion did not
   train on (degradation retrain: superiority or non-inferiority);
2. never retrain: the first champion for every week;
3. every week: retrain at every week whose window holds enough data, promote
   whenever the floors pass;
4. every 13 weeks: the same, every 13th week after the bootstrap.

Printed: per policy, the row-weighted accuracy over all weeks after the
bootstrap, the worst rolling 4-week accuracy, retrainings (challengers
trained), promotions and wall time; per survey era, the share of weeks each
drift test flags with the platform's champion of the time; the targets of
issue 13 section 4 (met or missed), with the A/A rate and the power of the gate
from benchmarks/promotion_gate.py's machinery. A timeline plot goes to --out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.promotion_gate import (  # noqa: E402
    SIMULATED_DISCORDANCE,
    aa_pairs,
    part_aa_and_power,
    rate,
    simulated_rate,
)
from stellar_app.replay import REPLAY_CHALLENGER  # noqa: E402
from stellar_assets.monitoring.resources import DriftSettings  # noqa: E402
from stellar_assets.settings import CodeLocationSettings  # noqa: E402
from stellar_assets.training.assets import SplitConfig  # noqa: E402
from stellar_assets.training.resources import PromotionGate  # noqa: E402
from stellar_core.contract import CLASSES, MJD_COLUMN  # noqa: E402
from stellar_core.drift import (  # noqa: E402
    DRIFT_FAMILIES,
    NOT_ENOUGH_DATA,
    DriftThresholds,
    build_drift_report,
    choose_window,
    retraining_decision,
)
from stellar_core.features import FEATURE_NAMES, LABEL, build_features, label_indices  # noqa: E402
from stellar_core.performance import degradation_evidence  # noqa: E402
from stellar_core.promotion import (  # noqa: E402
    InsufficientEvaluationRows,
    decide_promotion,
    select_evaluation_weeks,
)
from stellar_core.training import (  # noqa: E402
    Evaluation,
    XGBoostParams,
    evaluate,
    floor_problems,
    out_of_time_split,
    predict_proba,
    split_parts,
    train_booster,
)
from stellar_core.weeks import DR17_FIRST_WEEK, DR17_LAST_MJD, Week, week_keys_for_mjds  # noqa: E402

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sdss17_sample.csv.gz"
DEFAULT_OUT = Path(tempfile.gettempdir()) / "stellar-loop-value.png"
SURVEY_FIRST_WEEK = Week.of(DR17_FIRST_WEEK).key
SURVEY_LAST_WEEK = Week.from_mjd(DR17_LAST_MJD).key

# The code location's defaults, each read from where it is written once.
_SETTINGS = CodeLocationSettings.model_fields
_GATE = PromotionGate.model_fields
WINDOW_WEEKS = _SETTINGS["training_window_weeks"].default
COOLDOWN_WEEKS = _SETTINGS["retrain_cooldown_weeks"].default
MIN_EVALUATION_ROWS = _SETTINGS["gate_min_evaluation_rows"].default
GATE_ALPHA = _SETTINGS["gate_alpha"].default
GATE_MARGIN = _SETTINGS["gate_margin"].default
ACCURACY_FLOOR = _GATE["accuracy_floor"].default
RECALL_FLOORS = _GATE["recall_floors"].default
MIN_COMPARISON_ROWS = _GATE["min_comparison_rows"].default
SPLIT_MIN_ROWS = SplitConfig.model_fields["min_rows"].default
DEGRADATION_MIN_ROWS = DriftSettings.model_fields["degradation_min_rows"].default
DEGRADATION_ALPHA = DriftSettings.model_fields["degradation_alpha"].default
DEGRADATION_TRIGGER = "champion_degraded"
# As stellar_app.replay sizes the first champion's window: the evaluation set and as many rows to train on.
BOOTSTRAP_ROWS = 2 * MIN_EVALUATION_ROWS
CHALLENGER = XGBoostParams.from_layers(
    {k: v for k, v in REPLAY_CHALLENGER.items() if k in XGBoostParams.field_names()}, {"nthread": 1})
THRESHOLDS = DriftThresholds()
# A 4-week stretch with fewer rows than the drift report's minimum says nothing about accuracy.
WORST_SPAN_WEEKS, WORST_SPAN_MIN_ROWS = 4, THRESHOLDS.min_rows
SCHEDULE_WEEKS = 13

# Survey eras. ../shared/data/README.md only says "SDSS-I/II, SEGUE around 2009, BOSS, eBOSS from 2014";
# these starts are the SDSS survey history's (sdss.org, data release notes): SDSS-III, whose first
# optical programme was SEGUE-2, began in July 2008; BOSS's survey in December 2009; SDSS-IV (eBOSS) in
# July 2014. SEGUE-1 star plates of SDSS-II (2005-2008) fall in SDSS-I/II.
ERAS = (("SDSS-I/II", SURVEY_FIRST_WEEK), ("SEGUE", Week.of("2008-07-01").key),
        ("BOSS", Week.of("2009-12-01").key), ("eBOSS", Week.of("2014-07-01").key))

PLATFORM, NEVER, EVERY_WEEK, EVERY_13 = "platform", "never retrain", "every week", f"every {SCHEDULE_WEEKS} weeks"
POLICIES = (PLATFORM, NEVER, EVERY_WEEK, EVERY_13)
SMOKE_WEEKS, SMOKE_AA_TRIALS, SMOKE_SIM_TRIALS = 20, 6, 200
MIN_AA_TRIALS = 200


# ---------------------------------------------------------------- the survey


@dataclass
class Survey:
    """The feature table in week order, with each week's rows (clean and as received)."""

    table: pd.DataFrame
    first_week: str
    last_week: str
    rows: dict[str, int]
    raw_rows: dict[str, int]
    _start: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        position = 0
        for week in Week.range(self.first_week, self.last_week):
            self._start[week.key] = position
            position += self.rows[week.key]

    def rows_between(self, first: str, last: str) -> pd.DataFrame:
        """Rows of the weeks first..last (both included): a slice, the table being in week order."""
        end = self._start[last] + self.rows[last]
        return self.table.iloc[self._start[first]:end]

    def window_weeks(self, week: str) -> list[str]:
        """The training window ending at `week`, clipped to the first week (as the training assets do)."""
        first = max((Week.of(week) - (WINDOW_WEEKS - 1)).key, self.first_week)
        return [w.key for w in Week.range(first, week)]


def load_survey(raw: pd.DataFrame, first_week: str = SURVEY_FIRST_WEEK, last_week: str = SURVEY_LAST_WEEK) -> Survey:
    features, _ = build_features(raw)
    features = features[features["week"].between(first_week, last_week)]
    table = features.sort_values(["week", "object_id"], kind="mergesort").reset_index(drop=True)
    mjd = pd.to_numeric(raw[MJD_COLUMN], errors="coerce").dropna().astype("int64").to_numpy()
    received = pd.Series(week_keys_for_mjds(mjd)).value_counts()
    clean = table["week"].value_counts()
    keys = [w.key for w in Week.range(first_week, last_week)]
    return Survey(table, first_week, last_week, {k: int(clean.get(k, 0)) for k in keys},
                  {k: int(received.get(k, 0)) for k in keys})


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class Model:
    """A challenger trained on the window ending at `week`; as champion it predicts from the week after."""

    week: str
    first_week: str
    train_last_week: str  # the last week it trained on: later weeks of its window were its evaluation set
    booster: object
    evaluation: Evaluation
    test: pd.DataFrame  # its out-of-time evaluation rows
    test_correct: np.ndarray
    problems: tuple[str, ...]  # floors it misses
    seconds: float

    @property
    def reference(self) -> tuple[int, int]:
        """(correct, rows) on its out-of-time evaluation set: what the degradation test compares with."""
        return int(self.test_correct.sum()), len(self.test_correct)


def evaluation_weeks(survey: Survey, week: str):
    """The out-of-time evaluation weeks of the window ending at `week`; None when the window cannot be
    split (fewer rows than the split's minimum, than the evaluation set, or none left to train on)."""
    window = survey.window_weeks(week)
    total = sum(survey.rows[k] for k in window)
    if total < SPLIT_MIN_ROWS:
        return None
    try:
        chosen = select_evaluation_weeks([(k, survey.rows[k]) for k in window], MIN_EVALUATION_ROWS)
    except InsufficientEvaluationRows:
        return None
    return chosen if chosen.rows < total else None


def correct_of(booster, rows: pd.DataFrame) -> np.ndarray:
    return predict_proba(booster, rows).argmax(axis=1) == label_indices(rows[LABEL])


def train_challenger(survey: Survey, week: str, params: XGBoostParams = CHALLENGER) -> Model | None:
    """The challenger of week `week`, scored out of time and against the floors; None: not enough data."""
    chosen = evaluation_weeks(survey, week)
    if chosen is None:
        return None
    started = time.perf_counter()
    window = survey.window_weeks(week)
    train, test = split_parts(out_of_time_split(survey.rows_between(window[0], week), chosen.weeks))
    booster = train_booster(train, params)
    probabilities = predict_proba(booster, test)
    labels = label_indices(test[LABEL])
    evaluation = evaluate(probabilities, labels)
    problems = tuple(floor_problems(evaluation, ACCURACY_FLOOR, RECALL_FLOORS))
    return Model(week, window[0], (Week.of(chosen.weeks[0]) - 1).key, booster, evaluation, test,
                 probabilities.argmax(axis=1) == labels, problems, time.perf_counter() - started)


def bootstrap_week(survey: Survey, min_rows: int = BOOTSTRAP_ROWS) -> str:
    """The first week whose training window holds `min_rows` rows (stellar_app.replay.bootstrap_week's rule)."""
    for week in Week.range(survey.first_week, Week.of(survey.last_week) - 1):
        if sum(survey.rows[k] for k in survey.window_weeks(week.key)) >= min_rows:
            return week.key
    raise ValueError(f"no week from {survey.first_week} to {survey.last_week} has {min_rows} rows in its "
                     f"{WINDOW_WEEKS}-week training window: the first champion has nothing to train on")


def initial_champion(survey: Survey, params: XGBoostParams = CHALLENGER) -> Model:
    week = bootstrap_week(survey)
    model = train_challenger(survey, week, params)
    if model is None:
        raise ValueError(f"the first champion's window ending {week} cannot be split out of time")
    return model


# ---------------------------------------------------------------- the gate and the trigger


def platform_gate(champion: Model, challenger: Model) -> tuple[bool, str]:
    """Floors, then the paired test on the evaluation rows the champion did not train on (as
    stellar_assets/training/gate.py), as a degradation retrain: the platform retrains on nothing else."""
    if challenger.problems:
        return False, "floors: " + "; ".join(challenger.problems)
    weeks = challenger.test["week"]
    unseen = ((weeks < champion.first_week) | (weeks > champion.train_last_week)).to_numpy()
    if unseen.sum() < MIN_COMPARISON_ROWS:
        return False, f"only {int(unseen.sum())} evaluation rows unseen by the champion: champion stays"
    decision = decide_promotion(correct_of(champion.booster, challenger.test[unseen]), challenger.test_correct[unseen],
                                degradation_retrain=True, alpha=GATE_ALPHA, margin=GATE_MARGIN)
    return decision.promote, decision.summary


# ---------------------------------------------------------------- drift, with the platform's champion


class DriftReports:
    """The drift report of each week (stellar_core.drift.build_drift_report), as the drift_report asset
    computes it: the week (or trailing weeks to enough rows) against the champion's training window."""

    def __init__(self, survey: Survey):
        self.survey = survey
        self._references: dict[str, tuple[pd.DataFrame, list[str], int]] = {}

    def _reference(self, champion: Model):
        if champion.week not in self._references:
            rows = self.survey.rows_between(champion.first_week, champion.week)
            received = sum(self.survey.raw_rows[k] for k in self.survey.window_weeks(champion.week))
            # Only the current champion's reference is needed: a promotion never goes back.
            self._references = {champion.week: (rows, predicted_classes(champion.booster, rows), received)}
        return self._references[champion.week]

    def flags(self, champion: Model, week: str) -> tuple[str, dict[str, bool]]:
        survey = self.survey
        first = max((Week.of(week) - (THRESHOLDS.trailing_weeks - 1)).key, survey.first_week)
        window = choose_window({w.key: survey.rows[w.key] for w in Week.range(first, week)}, week, THRESHOLDS)
        current = survey.rows_between(window[0], week)
        received = sum(survey.raw_rows[k] for k in window)
        reference, reference_predicted, reference_received = self._reference(champion)
        report = build_drift_report(
            reference=reference, current=current, features=FEATURE_NAMES,
            current_predictions=predicted_classes(champion.booster, current), reference_predictions=reference_predicted,
            labels=list(current[LABEL]), champion_accuracy=champion.evaluation.accuracy,
            rows_in=received, rows_rejected=max(0, received - len(current)),
            reference_rows_in=reference_received, reference_rows_rejected=max(0, reference_received - len(reference)),
            thresholds=THRESHOLDS)
        return report["status"], report["flags"]


def predicted_classes(booster, rows: pd.DataFrame) -> list[str]:
    if not len(rows):
        return []
    return [CLASSES[k] for k in predict_proba(booster, rows).argmax(axis=1)]


# ---------------------------------------------------------------- one policy over the weeks


@dataclass
class WeekRecord:
    week: str
    champion_week: str  # last week of the predicting champion's training window
    champion_first_week: str
    correct: int
    total: int
    retrained: bool = False
    promoted: bool = False
    degraded: bool = False  # platform: the trigger fired (cool-down or not)
    drift_status: str | None = None  # platform with drift: the report's status
    flags: dict[str, bool] = field(default_factory=dict)


@dataclass
class PolicyResult:
    policy: str
    records: list[WeekRecord]
    seconds: float
    drift_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def retrainings(self) -> int:
        return sum(r.retrained for r in self.records)

    @property
    def promotions(self) -> int:
        return sum(r.promoted for r in self.records)

    @property
    def accuracy(self) -> float:
        return sum(r.correct for r in self.records) / sum(r.total for r in self.records)

    def worst_span(self, weeks: int = WORST_SPAN_WEEKS, min_rows: int = WORST_SPAN_MIN_ROWS):
        """(accuracy, first week, rows) of the worst run of `weeks` consecutive weeks holding `min_rows` rows."""
        correct = np.array([r.correct for r in self.records])
        total = np.array([r.total for r in self.records])
        worst = None
        for k in range(len(self.records) - weeks + 1):
            rows = int(total[k:k + weeks].sum())
            if rows >= min_rows:
                span = (correct[k:k + weeks].sum() / rows, self.records[k].week, rows)
                worst = span if worst is None or span[0] < worst[0] else worst
        return worst


def wants_retraining(policy: str, week: Week, start: Week) -> bool:
    """The scheduled policies' rule; the platform's is the trigger, in replay_policy."""
    if policy == EVERY_WEEK:
        return True
    if policy == EVERY_13:
        return (week - start) % SCHEDULE_WEEKS == 0
    return False


class Challengers:
    """The challengers a policy trains. A schedule known in advance is trained `workers` at a time, ahead
    of the replay (XGBoost releases the GIL; a challenger depends only on its week's window); the
    platform's, decided week by week, one at a time when asked."""

    def __init__(self, survey: Survey, params: XGBoostParams, scheduled: list[str], workers: int):
        self.survey, self.params = survey, params
        self._pool = ThreadPoolExecutor(workers) if scheduled and workers > 1 else None
        self._ahead = {week: self._pool.submit(self.train, week) for week in scheduled} if self._pool else {}

    def train(self, week: str) -> Model | None:
        return train_challenger(self.survey, week, self.params)

    def of(self, week: str) -> Model | None:
        ahead = self._ahead.pop(week, None)
        return ahead.result() if ahead is not None else self.train(week)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def replay_policy(survey: Survey, policy: str, initial: Model, last_week: str | None = None, *,
                  params: XGBoostParams = CHALLENGER, drift: bool = False, workers: int = 1) -> PolicyResult:
    """Weeks after `initial`'s up to `last_week`, each predicted by the policy's champion of its time."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
    started = time.perf_counter()
    start = Week.of(initial.week)
    weeks = Week.range(start + 1, last_week or survey.last_week)
    scheduled = [w.key for w in weeks if wants_retraining(policy, w, start)]
    challengers = Challengers(survey, params, scheduled, workers)
    try:
        records, notes, drift_seconds = _replay_weeks(survey, policy, initial, weeks, challengers,
                                                      DriftReports(survey) if drift else None)
    finally:
        challengers.close()
    return PolicyResult(policy, records, time.perf_counter() - started, drift_seconds, notes)


def _replay_weeks(survey: Survey, policy: str, initial: Model, weeks: list[Week], challengers: Challengers,
                  reports: DriftReports | None) -> tuple[list[WeekRecord], list[str], float]:
    champion, scores, last_retraining = initial, [], None
    records, notes, drift_seconds = [], [], 0.0
    for week in weeks:
        key = week.key
        rows = survey.rows_between(key, key)
        correct = correct_of(champion.booster, rows)
        record = WeekRecord(key, champion.week, champion.first_week, int(correct.sum()), len(rows))
        records.append(record)
        if len(rows):
            scores.append((key, record.correct, record.total))
        if reports is not None:
            clock = time.perf_counter()
            record.drift_status, record.flags = reports.flags(champion, key)
            drift_seconds += time.perf_counter() - clock
        if policy == PLATFORM:
            evidence = degradation_evidence(scores, *champion.reference, min_rows=DEGRADATION_MIN_ROWS,
                                            alpha=DEGRADATION_ALPHA)
            record.degraded = evidence.degraded
            fired = [DEGRADATION_TRIGGER] if evidence.degraded else []
            status = NOT_ENOUGH_DATA if evidence.status == NOT_ENOUGH_DATA else "tested"
            retrain = retraining_decision(key, status, fired, last_retraining, COOLDOWN_WEEKS, False).retrain
        else:
            retrain = wants_retraining(policy, week, Week.of(initial.week))
        if not retrain:
            continue
        last_retraining = key  # the cool-down runs from a requested retraining, trained or not (as the sensor)
        challenger = challengers.of(key)
        if challenger is None:
            notes.append(f"{key}: retraining requested, but the window cannot be split (not enough rows)")
            continue
        record.retrained = True
        if policy == PLATFORM:
            record.promoted, why = platform_gate(champion, challenger)
        else:
            record.promoted, why = not challenger.problems, "; ".join(challenger.problems)
        if record.promoted:
            champion, scores = challenger, []
        elif challenger.problems:
            notes.append(f"{key}: challenger blocked by the floors: {why}")
    return records, notes, drift_seconds


# ---------------------------------------------------------------- tables


def era_of(week: str) -> str:
    return [name for name, start in ERAS if start <= week][-1]


def print_policies(results: dict[str, PolicyResult]) -> None:
    print(f"\n{'policy':16} {'accuracy':>9}  {'worst 4 weeks (first week, rows)':34} {'retrainings':>11} "
          f"{'promotions':>10} {'wall time':>10}")
    for policy, result in results.items():
        worst = result.worst_span()
        shown = "n/a" if worst is None else f"{worst[0]:.4f} ({worst[1]}, {worst[2]} rows)"
        print(f"{policy:16} {result.accuracy:9.4f}  {shown:34} {result.retrainings:11} {result.promotions:10} "
              f"{result.seconds:9.1f}s")
    platform = results[PLATFORM]
    print(f"  rows predicted per policy: {sum(r.total for r in platform.records)} over {len(platform.records)} weeks "
          f"({platform.records[0].week} .. {platform.records[-1].week}); the platform's wall time includes its "
          f"weekly drift reports ({platform.drift_seconds:.1f} s); worst 4 weeks: consecutive weeks holding "
          f">= {WORST_SPAN_MIN_ROWS} rows")
    for policy, result in results.items():
        for note in result.notes[:3]:
            print(f"  {policy}: {note}")
        if len(result.notes) > 3:
            print(f"  {policy}: ... and {len(result.notes) - 3} more such notes")


def print_eras(platform: PolicyResult, survey: Survey) -> None:
    print("\nweeks flagged, with the platform's champion of the time, per survey era: flagged / weeks tested "
          "(weeks with enough rows for the drift report)")
    columns = (*DRIFT_FAMILIES, DEGRADATION_TRIGGER)
    print(f"{'era':10} {'from':10} {'weeks':>5} {'tested':>6} " + " ".join(f"{c:>18}" for c in columns)
          + f" {'retrainings':>11} {'promotions':>10}")
    for name, start in ERAS:
        records = [r for r in platform.records if era_of(r.week) == name]
        tested = [r for r in records if r.drift_status not in (None, NOT_ENOUGH_DATA)]
        cells = []
        for column in columns:
            flagged = sum(r.degraded if column == DEGRADATION_TRIGGER else r.flags.get(column, False) for r in tested)
            cells.append(f"{flagged:>4}/{len(tested):<4} {flagged / len(tested):6.1%}" if tested else "n/a")
        print(f"{name:10} {start:10} {len(records):5} {len(tested):6} " + " ".join(f"{c:>18}" for c in cells)
              + f" {sum(r.retrained for r in records):11} {sum(r.promoted for r in records):10}")
    rejected = sum(survey.raw_rows.values()) - len(survey.table)
    print(f"  rejected_rows is computed (rows received per week from the CSV's MJD, minus clean rows); the sample "
          f"has {rejected} rejected rows of {sum(survey.raw_rows.values())}, so it cannot fire here. "
          f"{DEGRADATION_TRIGGER}: the platform's trigger fired (whether or not the cool-down let it retrain)")


def aa_and_power(survey: Survey, trials: int, sim_trials: int, rng) -> dict:
    """benchmarks/promotion_gate.py's A/A pairs (seed twins on real windows) and the gate's power."""
    pairs = aa_pairs(survey.table, trials, WINDOW_WEEKS, MIN_EVALUATION_ROWS, rng)
    found = part_aa_and_power(pairs, rng)
    found["trials"] = len(pairs)
    found["evaluation_rows"] = int(np.median([len(p.champion_correct) for p in pairs]))
    found["simulated"] = {d: simulated_rate(d, 0.01, MIN_EVALUATION_ROWS, sim_trials, rng)
                          for d in (found["discordance"], *SIMULATED_DISCORDANCE)}
    return found


def verdict(met: bool | None) -> str:
    return "not judged" if met is None else ("met" if met else "MISSED")


def print_targets(results: dict[str, PolicyResult], aa: dict, sim_trials: int) -> None:
    platform, never, every = results[PLATFORM], results[NEVER], results[EVERY_WEEK]
    gain = every.accuracy - never.accuracy
    print("\ntargets (issue 13, section 4)")
    if gain > 0:
        kept = (platform.accuracy - never.accuracy) / gain
        print(f"  accuracy gain kept: (platform - never) / (every week - never) = ({platform.accuracy:.4f} - "
              f"{never.accuracy:.4f}) / ({every.accuracy:.4f} - {never.accuracy:.4f}) = {kept:.1%} "
              f"(target >= 90%): {verdict(kept >= 0.9)}")
    else:
        print(f"  accuracy gain kept: undefined, retraining every week gains nothing over never retraining "
              f"({every.accuracy:.4f} vs {never.accuracy:.4f}): {verdict(None)}")
    share = platform.retrainings / every.retrainings if every.retrainings else float("nan")
    print(f"  retrainings: platform {platform.retrainings} / every week {every.retrainings} = {share:.1%} "
          f"(target <= 15%): {verdict(share <= 0.15 if every.retrainings else None)}")
    n, aa_promoted = aa["trials"], aa["gate"]["aa"]
    judged = (aa_promoted / n <= 0.05) if n >= MIN_AA_TRIALS else None
    print(f"  A/A, gate on an ordinary retrain: {rate(aa_promoted, n)} promoted (target <= 5% over >= "
          f"{MIN_AA_TRIALS} trials): {verdict(judged)}")
    print(f"    (seed twins on 104-week windows, median {aa['evaluation_rows']} evaluation rows, discordant on "
          f"{aa['discordance']:.2%} of rows; the platform's degradation retrain adds non-inferiority, which "
          f"promotes an equal challenger by design: {rate(aa['gate']['aa_degradation'], n)})")
    print(f"  power to promote a 1-point better challenger at {MIN_EVALUATION_ROWS} evaluation rows (reported, no "
          f"target): real pairs {rate(aa['gate']['one_point'], n)}; simulated ({sim_trials} tables) at "
          + ", ".join(f"{d:.2%} discordance {p:.1%}" for d, p in aa["simulated"].items()))


# ---------------------------------------------------------------- the timeline plot


def block_accuracy(records: list[WeekRecord], weeks: int = WORST_SPAN_WEEKS):
    """Row-weighted accuracy per block of `weeks` weeks: (block start dates, accuracies; NaN when empty)."""
    starts, values = [], []
    for k in range(0, len(records), weeks):
        block = records[k:k + weeks]
        total = sum(r.total for r in block)
        starts.append(Week.of(block[0].week).start)
        values.append(sum(r.correct for r in block) / total if total else np.nan)
    return starts, np.array(values)


def plot_timeline(results: dict[str, PolicyResult], out: Path) -> None:
    """Top: accuracy per 4 weeks of each policy, the platform's decisions; bottom: the platform's weekly
    signals (drift tests and its trigger) and decisions; era boundaries on both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(15, 8), sharex=True, height_ratios=(3, 1.4))
    lowest = 1.0
    for policy, result in results.items():
        starts, values = block_accuracy(result.records)
        lowest = min(lowest, float(np.nanmin(values)))
        top.plot(starts, values, lw=1.6 if policy == PLATFORM else 0.9, label=f"{policy} ({result.accuracy:.4f})",
                 zorder=3 if policy == PLATFORM else 2)
    floor = max(0.0, lowest - 0.03)
    platform = results[PLATFORM].records
    promoted = [Week.of(r.week).start for r in platform if r.promoted]
    top.plot(promoted, [floor + 0.01] * len(promoted), "^", ms=7, color="black", label="platform: promoted")
    top.set_ylim(floor, 1.0)
    top.set_ylabel(f"accuracy per {WORST_SPAN_WEEKS} weeks (row-weighted)")
    top.set_title("Champion of the time, per retraining policy (shared SDSS17 sample)")
    top.legend(loc="lower left", fontsize=8, ncol=3)
    signals = (*DRIFT_FAMILIES, DEGRADATION_TRIGGER, "retrained", "promoted")
    for row, name in enumerate(signals):
        weeks = [Week.of(r.week).start for r in platform if _signal(r, name)]
        bottom.plot(weeks, [row] * len(weeks), "|", ms=9, color="black" if row >= len(DRIFT_FAMILIES) else "tab:red")
    bottom.set_yticks(range(len(signals)), [f"platform: {s}" for s in signals], fontsize=8)
    bottom.set_ylim(len(signals) - 0.5, -0.5)
    first, last = platform[0].week, platform[-1].week
    for name, start in ERAS:
        shown = max(start, first)
        if shown > last:
            continue
        for ax in (top, bottom):
            ax.axvline(Week.of(shown).start, color="tab:grey", ls="--", lw=0.8)
        top.text(Week.of(shown).start, 0.99, f" {name}", va="top", fontsize=9, transform=top.get_xaxis_transform())
    top.set_xlim(Week.of(first).start, Week.of(last).start)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _signal(record: WeekRecord, name: str) -> bool:
    if name == DEGRADATION_TRIGGER:
        return record.degraded
    if name in ("retrained", "promoted"):
        return getattr(record, name)
    return record.flags.get(name, False)


# ---------------------------------------------------------------- main


def replay_last_week(args, parser, survey: Survey, initial: Model) -> str:
    if args.last_week is None:
        return (Week.of(initial.week) + SMOKE_WEEKS).key if args.smoke else survey.last_week
    try:
        last = Week.of(args.last_week).key
    except ValueError as exc:
        parser.error(f"--last-week {args.last_week!r} is not a date: {exc}")
    if not initial.week < last <= survey.last_week:
        parser.error(f"--last-week {last} must come after the first champion's week {initial.week} and no later "
                     f"than the survey's last week {survey.last_week}")
    return last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="SDSS17 CSV (default: the shared sample)")
    parser.add_argument("--last-week", help="last week replayed (default: the survey's last, 2020-03-22)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE_WEEKS} weeks after the first champion, {SMOKE_AA_TRIALS} A/A trials: "
                        "the whole table in seconds after the imports (figures not meant to be read)")
    parser.add_argument("--aa-trials", type=int, default=MIN_AA_TRIALS, help="A/A trials on real models (>= 200)")
    parser.add_argument("--sim-trials", type=int, default=2000, help="simulated paired tables for the power")
    parser.add_argument("--workers", type=int, default=2,
                        help="threads training a scheduled policy's challengers ahead of its replay (default 2: the cores)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the A/A trials and simulations")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"timeline plot (PNG; default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if not args.csv.exists():
        parser.error(f"{args.csv} does not exist (the shared sample lives in ../shared/data beside the checkout)")
    if args.smoke:
        args.aa_trials, args.sim_trials = min(args.aa_trials, SMOKE_AA_TRIALS), min(args.sim_trials, SMOKE_SIM_TRIALS)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if not args.smoke and args.aa_trials < MIN_AA_TRIALS:
        parser.error(f"--aa-trials must be at least {MIN_AA_TRIALS} for a rate near 5% to mean anything, "
                     f"got {args.aa_trials}")
    started = time.perf_counter()
    survey = load_survey(pd.read_csv(args.csv))
    print(f"data: {args.csv.name}, {len(survey.table)} rows in {sum(1 for n in survey.rows.values() if n)} of "
          f"{len(survey.rows)} weeks {survey.first_week} .. {survey.last_week}")
    initial = initial_champion(survey)
    last_week = replay_last_week(args, parser, survey, initial)
    print(f"challengers: XGBoost {CHALLENGER.n_estimators} trees, depth {CHALLENGER.max_depth}, learning rate "
          f"{CHALLENGER.learning_rate}, 1 thread; window {WINDOW_WEEKS} weeks, evaluation set >= "
          f"{MIN_EVALUATION_ROWS} rows, floors accuracy {ACCURACY_FLOOR} and recall {RECALL_FLOORS}, cool-down "
          f"{COOLDOWN_WEEKS} weeks, trigger: {DEGRADATION_MIN_ROWS}+ rows, alpha {DEGRADATION_ALPHA}")
    print(f"first champion (all policies): window {initial.first_week} .. {initial.week}, evaluation accuracy "
          f"{initial.evaluation.accuracy:.4f} on {initial.evaluation.rows} rows"
          f"{'; misses floors: ' + '; '.join(initial.problems) if initial.problems else ''}; "
          f"trained in {initial.seconds:.1f} s; replay {(Week.of(initial.week) + 1).key} .. {last_week}")
    results = {}
    for policy in POLICIES:
        results[policy] = replay_policy(survey, policy, initial, last_week, drift=policy == PLATFORM,
                                        workers=args.workers)
        print(f"  {policy}: {results[policy].seconds:.1f} s", file=sys.stderr)
    print_policies(results)
    print_eras(results[PLATFORM], survey)
    clock = time.perf_counter()
    aa = aa_and_power(survey, args.aa_trials, args.sim_trials, np.random.default_rng(args.seed))
    print_targets(results, aa, args.sim_trials)
    print(f"  (A/A and power: {time.perf_counter() - clock:.0f} s)")
    plot_timeline(results, args.out)
    print(f"\ntimeline plot: {args.out}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
