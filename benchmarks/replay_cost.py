"""Per-week cost of predict+drift against Dagster's own floor, measured in the same run (issue 13 §3).

    .venv/bin/python benchmarks/replay_cost.py                  # 52 weeks of 2008, 3 rounds: a few minutes
    .venv/bin/python benchmarks/replay_cost.py --smoke          # 4 weeks, 1 round (the preparation dominates)
    .venv/bin/python benchmarks/replay_cost.py --rounds 1 --profile /tmp/platform.prof  # where a week's time goes

Both on one SQLite Dagster instance in a temporary project home (the embedded
set-up `make demo` uses), over the same range of weeks, in interleaved rounds:
- floor: two no-op weekly assets (the second depending on the first), one run
  over the whole range (BackfillPolicy.single_run), i.e. what Dagster itself
  spends per week: the run, its planned and materialization events;
- platform: `predict_and_check` (batch_predictions + drift_report with its
  weekly check) over the same range as one run, as the replay runs its chunks
  (MLflow runs and plots only for degraded weeks), with a champion trained
  (small replay model) on the weeks before the range;
- the same with drift_report's default config, which also logs the run's
  latest week to MLflow with its plot (what a weekly run does).
Prints seconds per week (median of the rounds, with min and max), the ratio
(target: at most 2x) and the events each run stored per week. With --profile,
one more platform run (not timed, after the rounds) under cProfile, its stats
dumped to the given path (read with `python -m pstats PATH`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss17_sample.csv.gz"
FIRST_WEEK = "2008-03-02"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def floor_definitions(partitions_def):
    import dagster as dg

    @dg.asset(partitions_def=partitions_def, backfill_policy=dg.BackfillPolicy.single_run())
    def floor_first(context) -> None:
        """Nothing: the floor is Dagster's own per-week work."""

    @dg.asset(partitions_def=partitions_def, backfill_policy=dg.BackfillPolicy.single_run(), deps=[floor_first])
    def floor_second(context) -> None:
        """Nothing, downstream of floor_first."""

    return dg.Definitions(assets=[floor_first, floor_second],
                          jobs=[dg.define_asset_job("floor", selection=[floor_first, floor_second])])


def timed_run(job, instance, tags: dict, weeks: int, run_config: dict | None = None) -> tuple[float, float]:
    """(seconds per week, events stored per week) of one run over the range."""
    started = time.perf_counter()
    result = job.execute_in_process(instance=instance, run_config={**QUIET, **(run_config or {})}, tags=tags,
                                    raise_on_error=True)
    seconds = time.perf_counter() - started
    return seconds / weeks, len(instance.all_logs(result.run_id)) / weeks


def profiled_run(job, instance, tags: dict, run_config: dict | None, path: Path) -> None:
    """One more run of `job` under cProfile; its stats dumped to `path`, the top of them printed."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.runcall(job.execute_in_process, instance=instance, run_config={**QUIET, **(run_config or {})},
                    tags=tags, raise_on_error=True)
    profile.dump_stats(str(path))
    print(f"\nprofile of one platform run in {path}; by cumulative time:")
    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(25)


def prepare(defs, instance, first: str, last: str) -> None:
    """Ingest the champion's window and the range; train and promote the champion at the week before."""
    from stellar_app.replay import REPLAY_CHALLENGER, plan_replay
    from stellar_app.runs import RANGE_END_TAG, RANGE_START_TAG
    from stellar_assets.settings import load_settings

    settings = load_settings()
    plan = plan_replay(first, last, settings.training_window_weeks or 104, settings.retrain_cooldown_weeks)
    ingestion = defs.resolve_job_def("ingestion_job").execute_in_process(
        instance=instance, run_config=QUIET, tags={RANGE_START_TAG: plan.history_start, RANGE_END_TAG: last},
        raise_on_error=False)
    if not ingestion.success:
        raise SystemExit(f"ingestion of {plan.history_start}..{last} failed")
    champion = defs.resolve_job_def("train_and_promote").execute_in_process(
        instance=instance, partition_key=plan.initial_week, raise_on_error=False,
        run_config={**QUIET, "ops": {"challenger_model": {"config": REPLAY_CHALLENGER}}})
    if not champion.success:
        raise SystemExit(f"the champion at {plan.initial_week} was not promoted")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weeks", type=int, default=52, help="weeks in the range, from %s" % FIRST_WEEK)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of floor and platform runs")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--smoke", action="store_true", help="4 weeks, 1 round: checks the script runs")
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="after the rounds, profile one platform run (as the replay runs it) into PATH")
    args = parser.parse_args(argv)
    if args.smoke:
        args.weeks, args.rounds = 4, 1

    home = Path(tempfile.mkdtemp(prefix="stellar-replay-cost-"))
    os.environ.update(STELLAR_HOME=str(home), STELLAR_SDSS_CSV=str(args.csv))
    from stellar_app.home import prepare_home
    from stellar_app.settings import AppSettings

    prepare_home(AppSettings())
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    from stellar_app.replay import LOG_DEGRADATION_ONSETS
    from stellar_app.runs import RANGE_END_TAG, RANGE_START_TAG
    from stellar_assets.definitions import defs
    from stellar_assets.partitions import observation_weeks
    from stellar_core.weeks import Week

    last = (Week.of(FIRST_WEEK) + (args.weeks - 1)).key
    tags = {RANGE_START_TAG: FIRST_WEEK, RANGE_END_TAG: last}
    instance = dg.DagsterInstance.get()
    print(f"project home {home}; range {FIRST_WEEK}..{last} ({args.weeks} weeks); preparing (ingestion, champion)")
    prepare(defs, instance, FIRST_WEEK, last)

    floor_job = floor_definitions(observation_weeks).resolve_job_def("floor")
    platform_job = defs.resolve_job_def("predict_and_check")
    # The replay's chunks log MLflow runs and plots for degraded weeks only; a weekly run also logs its week.
    runs = {"floor": (floor_job, None), "platform": (platform_job, LOG_DEGRADATION_ONSETS),
            "platform, latest week logged": (platform_job, None)}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for round_ in range(args.rounds):
        for name, (job, run_config) in runs.items():
            figures[name].append(timed_run(job, instance, tags, args.weeks, run_config))
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {f[-1][0]:.3f} s/week" for n, f in figures.items()), flush=True)

    print(f"\n{'run':<30}{'median s/week':>14}{'min':>8}{'max':>8}{'events/week':>13}")
    medians = {}
    for name, rows in figures.items():
        seconds = [s for s, _ in rows]
        medians[name] = statistics.median(seconds)
        print(f"{name:<30}{medians[name]:>14.3f}{min(seconds):>8.3f}{max(seconds):>8.3f}{rows[-1][1]:>13.1f}")
    ratio = medians["platform"] / medians["floor"]
    print(f"\npredict+drift per week vs Dagster's floor: {ratio:.2f}x as the replay runs it (target <= 2x: "
          f"{'met' if ratio <= 2 else 'missed'}); "
          f"{medians['platform, latest week logged'] / medians['floor']:.2f}x with the latest week's MLflow run and plot")
    last_run = instance.get_runs(filters=dg.RunsFilter(job_name="predict_and_check"), limit=1)[0]
    kinds = Counter(e.dagster_event.event_type_value for e in instance.all_logs(last_run.run_id) if e.dagster_event)
    print("platform events by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    if args.profile:
        profiled_run(platform_job, instance, tags, LOG_DEGRADATION_ONSETS, args.profile)


if __name__ == "__main__":
    main()
