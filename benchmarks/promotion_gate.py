"""The promotion gate and the degradation trigger, measured on the shared SDSS sample (not a timed test).

    .venv/bin/python benchmarks/promotion_gate.py                 # about 4-5 minutes on 2 shared cores
    .venv/bin/python benchmarks/promotion_gate.py --trials 200 --sim-trials 2000

(a) A/A: each trial picks a 104-week training window ending at a random week
    of the survey; the out-of-time evaluation set is the window's most recent
    weeks pooled backwards to the default 300 rows (stellar_core.promotion);
    champion and challenger are trained on the remaining weeks of the window,
    the same rows, with different seeds (small XGBoost models: 60 trees of
    depth 4, learning rate 0.2, subsample and column sample 0.8, one thread).
    Share promoted by the gate (target <= 5%), with a Clopper-Pearson 95% CI.
(b) Power to promote a challenger 1 point better, two ways:
    - real pairs: the A/A pairs again, with the champion's predictions made
      wrong on a random 1 point of the evaluation rows (each row it got right
      turned wrong with probability 0.01 / its accuracy there);
    - simulated paired tables: multinomial rows with the discordance rate
      measured on the real A/A pairs (and 2% and 4%: models trained on other
      weeks disagree more than seed twins), split so the challenger leads by
      1 point, or not at all (a simulated A/A), at the default size and larger
      ones (to say what size a useful power needs).
(c) The old rule (promote when the challenger's accuracy >= the champion's) on
    the same A/A and 1-point pairs, for contrast.
(d) The degradation trigger (stellar_core.performance): one champion trained on
    a random 60% of the sample; its correctness on the other 40% is the pool.
    Each trial draws a 300-row reference and 300 disjoint current rows from the
    pool: stable as drawn, or degraded by turning right rows wrong (2 or 3
    points on expectation). False-alarm rate and power, for the Fisher test and,
    for contrast, an exact binomial against the reference taken as the truth and
    the drift report's performance rule (5-point drop, binomial p < 0.01); then
    the trigger alone at larger reference and current sizes.
    Also: how often the trigger fires on the real weeks right after each A/A
    champion's window (real drift included, so neither a false-alarm rate nor
    power: what the platform would see).
(e) The gate on the other metrics (STELLAR_GATE_METRIC=macro_f1 or
    balanced_accuracy) on the first --metric-trials A/A pairs: share promoted
    by the paired randomization test (ordinary retrain, target <= 5%) and with
    the bootstrap interval's non-inferiority (degradation retrain); for
    contrast, the bootstrap's percentile rule (promote when fewer than alpha of
    the resamples put the challenger not ahead); power on the same pairs with
    the champion made wrong on 1 point of rows. Seed twins disagree on few
    rows, so also simulated A/A pairs that disagree on about 8% of rows (two
    classifiers each wrong on an independent 4%, 300 rows, the sample's class
    mix), where the percentile rule's excess shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stellar_core.drift import DriftThresholds, performance_drift  # noqa: E402
from stellar_core.features import LABEL, build_features, label_indices  # noqa: E402
from stellar_core.performance import degradation_evidence  # noqa: E402
from stellar_core.promotion import (  # noqa: E402
    DEFAULT_MIN_EVALUATION_ROWS,
    InsufficientEvaluationRows,
    BALANCED_ACCURACY,
    DEFAULT_ALPHA,
    DEFAULT_RESAMPLES,
    MACRO_F1,
    PairedTable,
    decide_promotion,
    decide_promotion_on,
    paired_bootstrap,
    randomization_p,
    select_evaluation_weeks,
)
from stellar_core.training import XGBoostParams, predict_proba, train_booster  # noqa: E402
from stellar_core.weeks import Week  # noqa: E402

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss17_sample.csv.gz"
PARAMS = XGBoostParams(n_estimators=60, max_depth=4, learning_rate=0.2, nthread=1)
SIMULATED_SIZES = (300, 600, 1000, 2000)
SIMULATED_DISCORDANCE = (0.02, 0.04)  # beside the measured one: models trained on other data disagree more
DROPS = (0.0, 0.02, 0.03)
DEGRADATION_SIZES = ((300, 300), (300, 600), (600, 600), (1000, 1000))


def correct_of(booster, rows: pd.DataFrame) -> np.ndarray:
    return predict_proba(booster, rows).argmax(axis=1) == label_indices(rows[LABEL])


def predicted_of(booster, rows: pd.DataFrame) -> np.ndarray:
    return predict_proba(booster, rows).argmax(axis=1)


def rate(hits: int, trials: int) -> str:
    ci = stats.binomtest(int(hits), int(trials)).proportion_ci(method="exact")
    return f"{hits:>5}/{trials:<5} {hits / trials:6.1%}  [{ci.low:5.1%}, {ci.high:5.1%}]"


@dataclass
class Pair:
    """An A/A trial: both models' predictions on the out-of-time evaluation rows, and the champion."""

    end: str
    labels: np.ndarray
    champion_predicted: np.ndarray
    challenger_predicted: np.ndarray
    champion: object
    train_rows: int

    @property
    def champion_correct(self) -> np.ndarray:
        return self.champion_predicted == self.labels

    @property
    def challenger_correct(self) -> np.ndarray:
        return self.challenger_predicted == self.labels


def aa_pairs(table: pd.DataFrame, trials: int, window_weeks: int, min_rows: int, rng) -> list[Pair]:
    counts = table["week"].value_counts()
    first, last = Week.of(table["week"].min()), Week.of(table["week"].max())
    ends = Week.range(first + (window_weeks - 1), last - 26)  # leave weeks after the window for (d)
    pairs = []
    while len(pairs) < trials:
        end = ends[int(rng.integers(len(ends)))]
        window = Week.range(end - (window_weeks - 1), end)
        try:
            chosen = select_evaluation_weeks([(w.key, int(counts.get(w.key, 0))) for w in window], min_rows)
        except InsufficientEvaluationRows:
            continue  # a sparse stretch of the survey: the gate would refuse it too
        in_window = table["week"].between(window[0].key, end.key)
        evaluation = table[table["week"].isin(chosen.weeks)]
        train = table[in_window & ~table["week"].isin(chosen.weeks)]
        seeds = rng.choice(2 ** 31 - 1, size=2, replace=False)
        champion = train_booster(train, XGBoostParams(**{**PARAMS.as_dict(), "seed": int(seeds[0])}))
        challenger = train_booster(train, XGBoostParams(**{**PARAMS.as_dict(), "seed": int(seeds[1])}))
        pairs.append(Pair(end.key, label_indices(evaluation[LABEL]), predicted_of(champion, evaluation),
                          predicted_of(challenger, evaluation), champion, len(train)))
    return pairs


def degrade(correct: np.ndarray, points: float, rng) -> np.ndarray:
    """Turn right rows wrong so the accuracy drops by `points` (a share) on expectation."""
    accuracy = correct.mean()
    return correct & ~(rng.random(len(correct)) < points / accuracy)


def part_aa_and_power(pairs: list[Pair], rng) -> dict:
    gate = {"aa": 0, "aa_degradation": 0, "one_point": 0}
    old = {"aa": 0, "one_point": 0}
    discordant = rows = 0
    for pair in pairs:
        champion, challenger = pair.champion_correct, pair.challenger_correct
        gate["aa"] += decide_promotion(champion, challenger).promote
        gate["aa_degradation"] += decide_promotion(champion, challenger, degradation_retrain=True).promote
        old["aa"] += challenger.mean() >= champion.mean()
        worse = degrade(champion, 0.01, rng)
        gate["one_point"] += decide_promotion(worse, challenger).promote
        old["one_point"] += challenger.mean() >= worse.mean()
        table = PairedTable(*(int(np.sum(a & b)) for a, b in (
            (champion, challenger), (champion, ~challenger), (~champion, challenger), (~champion, ~challenger))))
        discordant, rows = discordant + table.discordant, rows + table.rows
    return {"gate": gate, "old": old, "discordance": discordant / rows, "rows": rows}


def part_other_metrics(pairs: list[Pair], resamples: int, rng) -> dict:
    """(e): the randomization test and the bootstrap on macro F1 and balanced accuracy, on real A/A pairs."""
    found = {}
    for metric in (MACRO_F1, BALANCED_ACCURACY):
        counts = {"aa": 0, "aa_degradation": 0, "percentile_rule": 0, "one_point": 0}
        for trial, pair in enumerate(pairs):
            labels, champion, challenger = pair.labels, pair.champion_predicted, pair.challenger_predicted
            # One call answers both retrains: superiority is p < alpha either way.
            decision = decide_promotion_on(metric, labels, champion, challenger, degradation_retrain=True,
                                           resamples=resamples, seed=trial)
            counts["aa"] += decision.p_value < DEFAULT_ALPHA
            counts["aa_degradation"] += decision.promote
            _, _, differences = paired_bootstrap(metric, labels, champion, challenger, resamples=resamples, seed=trial)
            counts["percentile_rule"] += np.mean(differences <= 0) < DEFAULT_ALPHA
            turned = pair.champion_correct & ~degrade(pair.champion_correct, 0.01, rng)
            worse = np.where(turned, (labels + 1) % 3, champion)  # a right row turned wrong: another class
            counts["one_point"] += decide_promotion_on(metric, labels, worse, challenger, resamples=resamples,
                                                       seed=trial).promote
        found[metric] = counts
    return found


def simulated_other_metrics(trials: int, rows: int, resamples: int, rng) -> dict:
    """(e) on simulated A/A pairs: two classifiers each wrong on an independent 4% of the rows."""
    found = {}
    for metric in (MACRO_F1, BALANCED_ACCURACY):
        randomization = percentile = 0
        for trial in range(trials):
            labels = rng.choice(3, rows, p=[0.59, 0.19, 0.22])  # GALAXY, QSO, STAR as in the sample
            champion, challenger = (np.where(rng.random(rows) < 0.04, (labels + rng.integers(1, 3, rows)) % 3, labels)
                                    for _ in range(2))
            randomization += randomization_p(metric, labels, champion, challenger, resamples=resamples,
                                             seed=trial) < DEFAULT_ALPHA
            _, _, differences = paired_bootstrap(metric, labels, champion, challenger, resamples=resamples, seed=trial)
            percentile += np.mean(differences <= 0) < DEFAULT_ALPHA
        found[metric] = {"randomization": randomization, "percentile_rule": percentile}
    return found


def simulated_rate(discordance: float, lead: float, n: int, trials: int, rng) -> float:
    """Share promoted when the challenger leads by `lead` with the given share of discordant rows."""
    challenger_only = max((discordance + lead) / 2, lead)
    champion_only = challenger_only - lead
    concordant = 1 - challenger_only - champion_only
    shares = [concordant * 0.97, champion_only, challenger_only, concordant * 0.03]  # the concordant split is moot
    promoted = 0
    for both_right, b, c, both_wrong in rng.multinomial(n, shares, size=trials):
        champion = np.r_[np.ones(both_right + b, bool), np.zeros(c + both_wrong, bool)]
        challenger = np.r_[np.ones(both_right, bool), np.zeros(b, bool), np.ones(c, bool), np.zeros(both_wrong, bool)]
        promoted += decide_promotion(champion, challenger).promote
    return promoted / trials


def draw_reference_and_current(pool: np.ndarray, reference_rows: int, current_rows: int, drop: float, rng):
    order = rng.permutation(len(pool))
    reference = pool[order[:reference_rows]]
    current = pool[order[reference_rows:reference_rows + current_rows]]
    return reference, (degrade(current, drop, rng) if drop else current)


def part_degradation(table: pd.DataFrame, trials: int, rng, min_rows: int) -> dict:
    holdout = rng.random(len(table)) < 0.4
    champion = train_booster(table[~holdout], PARAMS)
    pool = correct_of(champion, table[holdout])
    thresholds = DriftThresholds()
    contrast = {}
    for drop in DROPS:
        fisher = binomial = drift_rule = 0
        for _ in range(trials):
            reference, current = draw_reference_and_current(pool, min_rows, min_rows, drop, rng)
            ref_correct, cur_correct = int(reference.sum()), int(current.sum())
            fisher += degradation_evidence([("2019-01-06", cur_correct, min_rows)], ref_correct, min_rows).degraded
            binomial += stats.binom.cdf(cur_correct, min_rows, min(ref_correct / min_rows, 1 - 1e-9)) < 0.05
            drift_rule += performance_drift(current.astype(int), np.ones(min_rows, int), ref_correct / min_rows,
                                            thresholds)["drifted"]
        contrast[drop] = {"fisher": fisher, "binomial": binomial, "drift_rule": drift_rule}
    by_size = {}
    for reference_rows, current_rows in DEGRADATION_SIZES:
        for drop in DROPS:
            flagged = 0
            for _ in range(trials):
                reference, current = draw_reference_and_current(pool, reference_rows, current_rows, drop, rng)
                flagged += degradation_evidence([("2019-01-06", int(current.sum()), current_rows)], int(reference.sum()),
                                                reference_rows, min_rows=current_rows).degraded
            by_size[(reference_rows, current_rows, drop)] = flagged
    return {"pool_rows": int(len(pool)), "pool_accuracy": float(pool.mean()), "contrast": contrast, "by_size": by_size}


def part_forward(table: pd.DataFrame, pairs: list[Pair], min_rows: int) -> dict:
    """The trigger on the real weeks after each A/A champion's window, pooled forward to `min_rows`."""
    flagged, drops = 0, []
    for pair in pairs:
        after = table[table["week"] > pair.end]
        weekly = []
        for week, rows in after.groupby("week", sort=True):
            weekly.append((week, int(correct_of(pair.champion, rows).sum()), len(rows)))
            if sum(total for _, _, total in weekly) >= min_rows:
                break
        evidence = degradation_evidence(weekly, int(pair.champion_correct.sum()), len(pair.champion_correct),
                                        min_rows=min_rows)
        flagged += evidence.degraded
        if evidence.drop is not None:
            drops.append(evidence.drop)
    return {"flagged": flagged, "trials": len(pairs), "median_drop": float(np.median(drops)) if drops else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="SDSS17 CSV (default: the shared sample)")
    parser.add_argument("--trials", type=int, default=300, help="A/A trials on real models (at least 200)")
    parser.add_argument("--window-weeks", type=int, default=104)
    parser.add_argument("--min-rows", type=int, default=DEFAULT_MIN_EVALUATION_ROWS,
                        help="out-of-time evaluation rows, and the trigger's pooled rows")
    parser.add_argument("--sim-trials", type=int, default=2000, help="simulated paired tables per size")
    parser.add_argument("--degradation-trials", type=int, default=2000)
    parser.add_argument("--metric-trials", type=int, default=200,
                        help="A/A pairs (e) judges on macro F1 and balanced accuracy (at least 200)")
    parser.add_argument("--metric-resamples", type=int, default=DEFAULT_RESAMPLES,
                        help="rearrangements and bootstrap resamples in (e) (the gate's default)")
    parser.add_argument("--sim-metric-trials", type=int, default=1000,
                        help="simulated A/A pairs of (e)")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    if not args.csv.exists():
        parser.error(f"{args.csv} does not exist (the shared sample lives in ../shared/data beside the checkout)")
    if args.trials < 200 or not 200 <= args.metric_trials <= args.trials:
        parser.error(f"--trials and --metric-trials must be at least 200 for a rate near 5% to mean anything "
                     f"(and --metric-trials at most --trials), got {args.trials} and {args.metric_trials}")
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    table, _ = build_features(pd.read_csv(args.csv))
    print(f"data: {args.csv.name}, {len(table)} rows, weeks {table['week'].min()} .. {table['week'].max()}")
    print(f"models: XGBoost {PARAMS.n_estimators} trees, depth {PARAMS.max_depth}, learning rate "
          f"{PARAMS.learning_rate}, subsample {PARAMS.subsample}, column sample {PARAMS.colsample_bytree}, 1 thread")

    pairs = aa_pairs(table, args.trials, args.window_weeks, args.min_rows, rng)
    eval_rows = [len(p.champion_correct) for p in pairs]
    print(f"\n(a) A/A on real models: {len(pairs)} trials, {args.window_weeks}-week windows ending "
          f"{min(p.end for p in pairs)} .. {max(p.end for p in pairs)}; training rows median "
          f"{int(np.median([p.train_rows for p in pairs]))}; evaluation rows median {int(np.median(eval_rows))} "
          f"(min {min(eval_rows)}, max {max(eval_rows)}); champion accuracy there median "
          f"{np.median([p.champion_correct.mean() for p in pairs]):.3f}  [{time.perf_counter() - started:.0f} s]")
    found = part_aa_and_power(pairs, rng)
    n = len(pairs)
    print(f"    discordant rows between the two seeds: {found['discordance']:.2%} of {found['rows']} evaluation rows")
    print("    rule                                           promoted     share   95% CI")
    print(f"    gate, ordinary retrain (target <= 5%)       {rate(found['gate']['aa'], n)}")
    print(f"    gate, degradation retrain (non-inferiority) {rate(found['gate']['aa_degradation'], n)}")
    print(f"(c) old rule: accuracy >= champion's            {rate(found['old']['aa'], n)}")
    ratio = found["old"]["aa"] / max(found["gate"]["aa"], 1)
    print(f"    old rule promotes {ratio:.0f}x as many equal challengers as the gate"
          f"{' (gate promoted none: ratio against 1)' if not found['gate']['aa'] else ''}")

    print(f"\n(b) power to promote a 1-point better challenger at {args.min_rows} evaluation rows")
    print(f"    real pairs, champion made wrong on 1 point of rows: gate {rate(found['gate']['one_point'], n)}")
    print(f"                                              old rule {rate(found['old']['one_point'], n)}")
    print(f"    simulated paired tables ({args.sim_trials} per cell): share promoted at each evaluation size, for")
    print(f"    the discordance measured between seeds ({found['discordance']:.2%}) and larger ones")
    print("      discordance  lead      " + "".join(f"{size:>8}" for size in SIMULATED_SIZES))
    for discordance in (found["discordance"], *SIMULATED_DISCORDANCE):
        for lead, name in ((0.0, "A/A"), (0.01, "+1 pt")):
            shares = [simulated_rate(discordance, lead, size, args.sim_trials, rng) for size in SIMULATED_SIZES]
            print(f"      {discordance:10.2%}  {name:8}  " + "".join(f"{share:>8.1%}" for share in shares))
    print(f"    [{time.perf_counter() - started:.0f} s]")

    degradation = part_degradation(table, args.degradation_trials, rng, args.min_rows)
    t = args.degradation_trials
    print(f"\n(d) degradation trigger: pool of {degradation['pool_rows']} held-out rows, champion accuracy "
          f"{degradation['pool_accuracy']:.3f}; {args.min_rows} reference rows vs {args.min_rows} current rows, {t} trials")
    print("    accuracy drop   Fisher one-sided (the trigger)   binomial vs reference as exact   drift report rule")
    for drop, r in degradation["contrast"].items():
        label = "none (stable)" if not drop else f"{drop * 100:.0f} points"
        print(f"    {label:15} {rate(r['fisher'], t)}  {rate(r['binomial'], t)}  {rate(r['drift_rule'], t)}")
    print("    the trigger by size (reference rows / current rows): share flagged")
    print("      sizes        " + "".join(f"{('stable' if not d else f'-{d * 100:.0f} pts'):>10}" for d in DROPS))
    for reference_rows, current_rows in DEGRADATION_SIZES:
        cells = [degradation["by_size"][(reference_rows, current_rows, d)] / t for d in DROPS]
        print(f"      {reference_rows:>5}/{current_rows:<5} " + "".join(f"{c:>10.1%}" for c in cells))
    forward = part_forward(table, pairs, args.min_rows)
    print(f"    on the real weeks right after each A/A champion's window ({args.min_rows}+ rows pooled forward): "
          f"flagged {rate(forward['flagged'], forward['trials'])}; median drop "
          f"{forward['median_drop'] * 100:+.1f} points")
    m = args.metric_trials
    other = part_other_metrics(pairs[:m], args.metric_resamples, rng)
    print(f"\n(e) the gate on other metrics: the first {m} A/A pairs, {args.metric_resamples} rearrangements "
          f"and bootstrap resamples each")
    print("    metric             rule                                           promoted     share   95% CI")
    for metric, counts in other.items():
        print(f"    {metric:18} randomization test, ordinary (target <= 5%) {rate(counts['aa'], m)}")
        print(f"    {'':18} + bootstrap non-inferiority, degradation    {rate(counts['aa_degradation'], m)}")
        print(f"    {'':18} bootstrap percentile rule (contrast)        {rate(counts['percentile_rule'], m)}")
        print(f"    {'':18} power, champion 1 point worse               {rate(counts['one_point'], m)}")
    s = args.sim_metric_trials
    simulated = simulated_other_metrics(s, args.min_rows, 500, rng)
    print(f"    simulated A/A, {s} pairs of {args.min_rows} rows, each classifier wrong on an independent 4%, "
          f"500 resamples:")
    for metric, counts in simulated.items():
        print(f"    {metric:18} randomization test (target <= 5%)           {rate(counts['randomization'], s)}")
        print(f"    {'':18} bootstrap percentile rule (contrast)        {rate(counts['percentile_rule'], s)}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
