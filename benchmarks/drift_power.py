"""Drift-detection power of stellar_core.drift, measured (not a timed test).

Simulator part: a champion trained on 104 no-drift weeks of the simulator is
the reference; each evaluated week W carries a known drift scenario at a known
intensity (the drift started 4 weeks before W, so a small week can borrow its
trailing window, exactly as the drift_report asset does). Detection rate =
share of drifted weeks flagged; false-alarm rate = share of no-drift weeks
flagged.

Real part: the shared SDSS17 sample, with a champion retrained on a fixed
schedule (every 26 weeks, on the trailing 104 weeks), as a platform without
drift-triggered retraining would have; reports which weeks get flagged and
whether the 2008/2009 (SEGUE) and 2014 (eBOSS) era changes are caught.

    .venv/bin/python benchmarks/drift_power.py            # both parts
    .venv/bin/python benchmarks/drift_power.py --weeks 100 --part simulator
    .venv/bin/python benchmarks/drift_power.py --smoke    # seconds: 2 weeks per cell, simulator only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stellar_core.contract import CLASSES  # noqa: E402
from stellar_core.drift import DriftThresholds, build_drift_report, choose_window  # noqa: E402
from stellar_core.features import FEATURE_NAMES, build_features, feature_matrix  # noqa: E402
from stellar_core.model_bundle import booster_probabilities  # noqa: E402
from stellar_core.sources.simulator import Drift, simulate_week  # noqa: E402
from stellar_core.training import XGBoostParams, evaluate_booster, stratified_split, split_parts, train_booster  # noqa: E402
from stellar_core.weeks import Week, week_keys_for_mjds  # noqa: E402

PARAMS = XGBoostParams(n_estimators=60, max_depth=4, learning_rate=0.2, nthread=1)
SCENARIOS = ("feature_shift", "missing_values", "class_mix", "combined")
INTENSITIES = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
# --smoke: every scenario and intensity still runs (the whole table prints), on tiny sizes.
SMOKE_WEEKS = 1
SMOKE_REFERENCE_WEEKS = 26


def weeks_from(start: str, count: int) -> list[str]:
    first = Week.of(start)
    return [(first + k).key for k in range(count)]


class Champion:
    """A trained model with what drift needs of it: reference features, predictions, test accuracy."""

    def __init__(self, reference_raw: pd.DataFrame):
        table, cleaning = build_features(reference_raw)
        split = stratified_split(table, 0.2, 17)
        train, test = split_parts(split)
        self.booster = train_booster(train, PARAMS)
        self.accuracy = evaluate_booster(self.booster, test).accuracy
        self.reference = table
        self.reference_predictions = self.predict(table)
        self.rows_in, self.rows_rejected = cleaning.rows_in, cleaning.rows_in - cleaning.rows_out

    def predict(self, table: pd.DataFrame) -> list[str]:
        if not len(table):
            return []
        proba = booster_probabilities(self.booster, feature_matrix(table))
        return [CLASSES[k] for k in proba.argmax(axis=1)]

    def report(self, raw: pd.DataFrame, thresholds: DriftThresholds) -> dict:
        table, cleaning = build_features(raw)
        predictions = self.predict(table)
        return build_drift_report(
            reference=self.reference, current=table, features=FEATURE_NAMES,
            current_predictions=predictions, reference_predictions=self.reference_predictions,
            labels=list(table["label"]), champion_accuracy=self.accuracy,
            rows_in=cleaning.rows_in, rows_rejected=cleaning.rows_in - cleaning.rows_out,
            reference_rows_in=self.rows_in, reference_rows_rejected=self.rows_rejected, thresholds=thresholds)


def windowed_raw(weeks: list[str], drift: Drift, seed: int, thresholds: DriftThresholds) -> tuple[pd.DataFrame, int]:
    """The last week with the trailing weeks the asset would borrow when it is small."""
    frames = {w: simulate_week(w, drift=drift, seed=seed) for w in weeks}
    rows = {w: len(build_features(f)[0]) for w, f in frames.items()}
    chosen = choose_window(rows, weeks[-1], thresholds)
    return pd.concat([frames[w] for w in chosen], ignore_index=True), len(chosen)


def simulator_power(n_weeks: int, thresholds: DriftThresholds, reference_weeks: int = 104) -> dict:
    started = time.perf_counter()
    reference = [simulate_week(w) for w in weeks_from("2010-01-03", reference_weeks)]
    champion = Champion(pd.concat(reference, ignore_index=True))
    evaluated = weeks_from("2012-01-01", n_weeks)
    results: dict = {"champion_test_accuracy": champion.accuracy, "weeks_per_cell": n_weeks, "cells": []}

    def rate(scenario: str, intensity: float, seed: int) -> dict:
        flagged, families, windows = 0, {}, []
        for week in evaluated:
            start = (Week.of(week) - (thresholds.trailing_weeks - 1)).key
            raw, used = windowed_raw(weeks_from(start, thresholds.trailing_weeks), Drift(scenario, intensity),
                                     seed, thresholds)
            report = champion.report(raw, thresholds)
            windows.append(used)
            flagged += report["drift_detected"]
            for family, hit in report["flags"].items():
                families[family] = families.get(family, 0) + int(hit)
        return {"scenario": scenario, "intensity": intensity, "weeks": len(evaluated), "flagged": flagged,
                "rate": flagged / len(evaluated), "by_family": families, "mean_weeks_in_window": float(np.mean(windows))}

    # No-drift weeks with two seeds that differ from the reference's: the false-alarm rate.
    none_cells = [rate("none", 0.0, seed) for seed in (101, 202)]
    results["false_alarm"] = {
        "weeks": sum(c["weeks"] for c in none_cells), "flagged": sum(c["flagged"] for c in none_cells),
        "by_family": {k: sum(c["by_family"].get(k, 0) for c in none_cells) for k in none_cells[0]["by_family"]},
    }
    results["false_alarm"]["rate"] = results["false_alarm"]["flagged"] / results["false_alarm"]["weeks"]
    for scenario in SCENARIOS:
        for intensity in INTENSITIES:
            results["cells"].append(rate(scenario, intensity, 101))
    results["seconds"] = time.perf_counter() - started
    return results


def real_sample(csv: Path, thresholds: DriftThresholds, retrain_every: int = 26, window: int = 104) -> dict:
    raw = pd.read_csv(csv)
    raw["week"] = week_keys_for_mjds(raw["MJD"].to_numpy())
    all_weeks = [w.key for w in Week.range("2000-03-05", "2020-03-22")]
    by_week = {w: g.drop(columns="week") for w, g in raw.groupby("week")}
    rows = {w: len(by_week.get(w, ())) for w in all_weeks}
    champion, trained_at = None, None
    flagged_weeks, tested, not_enough = [], 0, 0
    per_week = []
    for k, week in enumerate(all_weeks):
        if k < window:
            continue
        if champion is None or k - trained_at >= retrain_every:
            history = [by_week[w] for w in all_weeks[k - window:k] if w in by_week]
            champion, trained_at = Champion(pd.concat(history, ignore_index=True)), k
        if not rows[week]:
            continue
        chosen = choose_window(rows, week, thresholds)
        current = pd.concat([by_week[w] for w in chosen if w in by_week], ignore_index=True)
        report = champion.report(current, thresholds)
        if report["status"] == "not_enough_data":
            not_enough += 1
            continue
        tested += 1
        per_week.append({"week": week, "flags": [f for f, v in report["flags"].items() if v],
                         "drifted_features": report.get("drifted_features", [])})
        if report["drift_detected"]:
            flagged_weeks.append(week)

    def flagged_in(first: str, last: str) -> list[str]:
        return [w for w in flagged_weeks if first <= w <= last]

    stable = ("2010-07-01", "2013-12-31")
    stable_tested = sum(1 for p in per_week if stable[0] <= p["week"] <= stable[1])
    return {
        "policy": f"champion retrained every {retrain_every} weeks on the trailing {window} weeks (no drift-triggered retraining)",
        "weeks_tested": tested, "weeks_not_enough_data": not_enough, "weeks_flagged": len(flagged_weeks),
        "segue_2008_2009": flagged_in("2008-07-01", "2009-12-31"),
        "eboss_2014": flagged_in("2014-01-01", "2014-12-31"),
        "stable_2010_2013_flagged": len(flagged_in(*stable)), "stable_2010_2013_tested": stable_tested,
        "flagged_weeks": flagged_weeks,
        "flags_by_week": [p for p in per_week if p["flags"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weeks", type=int, default=200, help="evaluated weeks per scenario and intensity")
    parser.add_argument("--part", choices=("simulator", "real", "both"), default="both")
    parser.add_argument("--csv", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss17_sample.csv.gz"))
    parser.add_argument("--out", default="", help="write the JSON results here")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, to check the script runs: simulator part only, "
                             f"{SMOKE_WEEKS} weeks per cell, a {SMOKE_REFERENCE_WEEKS}-week reference")
    args = parser.parse_args(argv)
    if args.smoke:
        args.weeks, args.part = SMOKE_WEEKS, "simulator"
    thresholds = DriftThresholds()
    out: dict = {"thresholds": thresholds.as_dict()}
    if args.part in ("simulator", "both"):
        sim = simulator_power(args.weeks, thresholds, SMOKE_REFERENCE_WEEKS if args.smoke else 104)
        out["simulator"] = sim
        print(f"Simulator ({args.weeks} weeks per cell, ~30 rows/week, champion test accuracy {sim['champion_test_accuracy']:.3f}, "
              f"{sim['seconds']:.0f} s)")
        fa = sim["false_alarm"]
        print(f"  false alarms: {fa['flagged']}/{fa['weeks']} = {fa['rate']:.1%}  by family {fa['by_family']}")
        print("  detection rate by scenario and intensity:")
        print("  " + "scenario".ljust(16) + "".join(f"{i:>8}" for i in INTENSITIES))
        for scenario in SCENARIOS:
            cells = [c for c in sim["cells"] if c["scenario"] == scenario]
            print("  " + scenario.ljust(16) + "".join(f"{c['rate']:>8.0%}" for c in cells))
    if args.part in ("real", "both"):
        real = real_sample(Path(args.csv), thresholds)
        out["real"] = real
        print(f"\nReal sample: {real['policy']}")
        print(f"  weeks tested {real['weeks_tested']}, not enough data {real['weeks_not_enough_data']}, flagged {real['weeks_flagged']}")
        print(f"  SEGUE 2008-07..2009-12 flagged weeks ({len(real['segue_2008_2009'])}): {real['segue_2008_2009']}")
        print(f"  eBOSS 2014 flagged weeks ({len(real['eboss_2014'])}): {real['eboss_2014']}")
        print(f"  stable 2010-07..2013-12: {real['stable_2010_2013_flagged']} of {real['stable_2010_2013_tested']} tested weeks flagged")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
