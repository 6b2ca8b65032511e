"""Backfill of every SDSS week through Dagster vs. Dagster's own floor and plain pandas.

    .venv/bin/python benchmarks/ingestion_backfill.py [--csv PATH] [--weeks N] [--in-memory]
    .venv/bin/python benchmarks/ingestion_backfill.py --smoke    # seconds: the first weeks only

Prints wall times, all measured in this run, and the backfill's ratio to each:
- backfill: raw_observations + observation_features for all 1,047 weeks as one
  Dagster run on a SQLite instance in a temporary folder (what `stellar ingest` and
  the replay do), quality suite, per-week Parquet files, metadata and check verdicts;
- Dagster's floor (the baseline): two no-op weekly assets in one run on the same kind
  of instance, emitting the same partitioned check evaluations (2 per week: the quality
  suite and row placement, through the same code) but doing no work: what the events
  alone cost;
- the floor with no checks, to show what each week's check verdicts cost in Dagster's
  event log;
- plain pandas: read the CSV and build the feature table (no Dagster, no storage);
- with --in-memory, the backfill on an in-memory instance (what the SQLite log costs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg
import pandas as pd

warnings.filterwarnings("ignore", category=dg.BetaWarning)

from stellar_assets.checks import WeekCheck, week_check_events, weekly_check_spec  # noqa: E402
from stellar_assets.ingestion import INGESTION_ASSETS  # noqa: E402
from stellar_assets.ingestion.assets import PLACEMENT_CHECK, QUALITY_CHECK  # noqa: E402
from stellar_assets.partitions import observation_weeks  # noqa: E402
from stellar_assets.resources.io_managers import LocalParquetIOManager  # noqa: E402
from stellar_assets.resources.sources import ObservationSource  # noqa: E402
from stellar_core.features import build_features  # noqa: E402

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss17_sample.csv.gz"
# --smoke: both Dagster runs cover only this many first weeks.
SMOKE_WEEKS = 3


def plain_pandas(csv: Path) -> tuple[float, int]:
    started = time.perf_counter()
    table, _ = build_features(pd.read_csv(csv))
    return time.perf_counter() - started, len(table)


def backfill(csv: Path, instance: dg.DagsterInstance, store: Path, keys: list[str]) -> float:
    resources = {"source": ObservationSource(kind="sdss_csv", csv_path=str(csv)),
                 "io_manager": LocalParquetIOManager(base_dir=str(store))}
    return timed_run(INGESTION_ASSETS, resources, instance, keys)


def timed_run(assets: list, resources: dict, instance: dg.DagsterInstance, keys: list[str]) -> float:
    started = time.perf_counter()
    result = dg.materialize(
        assets, instance=instance, resources=resources,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    elapsed = time.perf_counter() - started
    assert result.success
    return elapsed


def floor_assets(check_names: list[str]) -> list:
    """Two no-op weekly assets like the ingestion pair, the first emitting a passed evaluation of
    each check for each week, through the ingestion's own code (week_check_events)."""
    specs = [weekly_check_spec("floor_raw", name, "no-op", blocking=True) for name in check_names]

    @dg.asset(partitions_def=observation_weeks, backfill_policy=dg.BackfillPolicy.single_run(),
              check_specs=specs, io_manager_key="mem")
    def floor_raw(context):
        keys = list(context.partition_keys)
        yield dg.Output({key: None for key in keys})
        yield from week_check_events(context, [WeekCheck(name, key, passed=True, description="no-op")
                                               for name in check_names for key in keys], materialized=True)

    @dg.asset(partitions_def=observation_weeks, backfill_policy=dg.BackfillPolicy.single_run(), io_manager_key="mem",
              deps=[floor_raw])
    def floor_features(context):
        return {key: None for key in context.partition_keys}

    return [floor_raw, floor_features]


def floor(checks: list[str], keys: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return timed_run(floor_assets(checks), {"mem": dg.InMemoryIOManager()}, dg.DagsterInstance.local_temp(tmp), keys)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="SDSS17 CSV (default: the shared sample)")
    parser.add_argument("--weeks", type=int, default=None, help="backfill only the first N weeks (default: all)")
    parser.add_argument("--in-memory", action="store_true", help="also time the backfill on an in-memory instance")
    parser.add_argument("--smoke", action="store_true",
                        help=f"seconds, to check the script runs: the Dagster runs cover the first {SMOKE_WEEKS} weeks")
    args = parser.parse_args(argv)
    if not args.csv.exists():
        parser.error(f"{args.csv} does not exist (the shared sample lives in ../shared/data beside the checkout)")
    keys = observation_weeks.get_partition_keys()[:SMOKE_WEEKS if args.smoke else args.weeks]
    weeks = len(keys)
    checks = [QUALITY_CHECK, PLACEMENT_CHECK]
    pandas_seconds, rows = plain_pandas(args.csv)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_seconds = backfill(args.csv, dg.DagsterInstance.local_temp(tmp), Path(tmp) / "store", keys)
    floors = {n: floor(checks[:n], keys) for n in (len(checks), 0)}
    print(f"input: {args.csv} ({rows} rows, {weeks} weeks backfilled, {len(checks)} checks per week)")
    print(f"Dagster backfill, one run, SQLite:         {sqlite_seconds:8.2f} s   "
          f"x{sqlite_seconds / floors[len(checks)]:.2f} of the floor (baseline)")
    for n, seconds in floors.items():
        print(f"floor: 2 no-op assets, {n} checks per week: {seconds:8.2f} s" + ("   (baseline)" if n == len(checks) else ""))
    print(f"plain pandas read + featurize:             {pandas_seconds:8.2f} s   backfill x{sqlite_seconds / pandas_seconds:,.0f}")
    if args.in_memory:
        with tempfile.TemporaryDirectory() as tmp:
            memory_seconds = backfill(args.csv, dg.DagsterInstance.ephemeral(), Path(tmp) / "store", keys)
        print(f"Dagster backfill, one run, in-memory:      {memory_seconds:8.2f} s")
    print(f"per week (SQLite): {1000 * sqlite_seconds / weeks:.1f} ms for 2 assets x 1 partition, "
          f"floor {1000 * floors[len(checks)] / weeks:.1f} ms")


if __name__ == "__main__":
    main()
