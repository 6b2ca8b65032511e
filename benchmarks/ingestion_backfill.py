"""Backfill of every SDSS week through Dagster vs. the same work in plain pandas.

    .venv/bin/python benchmarks/ingestion_backfill.py [--csv PATH]
    .venv/bin/python benchmarks/ingestion_backfill.py --smoke    # seconds: the first weeks only

Prints wall times and their ratio, both measured in this run:
- baseline: read the CSV and build the feature table in plain pandas (no Dagster,
  no quality suite, no storage);
- backfill: raw_observations + observation_features for all 1,047 weeks as one
  Dagster run on a SQLite instance in a temporary folder (what `make demo` does),
  quality suite, per-week Parquet files and per-week metadata included;
- the same run on an in-memory instance, to show what the SQLite event log costs.
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

from stellar_assets.ingestion import INGESTION_ASSETS  # noqa: E402
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
    started = time.perf_counter()
    result = dg.materialize(
        INGESTION_ASSETS, instance=instance,
        resources={"source": ObservationSource(kind="sdss_csv", csv_path=str(csv)),
                   "io_manager": LocalParquetIOManager(base_dir=str(store))},
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    elapsed = time.perf_counter() - started
    assert result.success
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="SDSS17 CSV (default: the shared sample)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"seconds, to check the script runs: the Dagster runs cover the first {SMOKE_WEEKS} weeks")
    args = parser.parse_args(argv)
    if not args.csv.exists():
        parser.error(f"{args.csv} does not exist (the shared sample lives in ../shared/data beside the checkout)")
    keys = observation_weeks.get_partition_keys()
    if args.smoke:
        keys = keys[:SMOKE_WEEKS]
    weeks = len(keys)
    pandas_seconds, rows = plain_pandas(args.csv)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_seconds = backfill(args.csv, dg.DagsterInstance.local_temp(tmp), Path(tmp) / "store", keys)
    with tempfile.TemporaryDirectory() as tmp:
        memory_seconds = backfill(args.csv, dg.DagsterInstance.ephemeral(), Path(tmp) / "store", keys)
    print(f"input: {args.csv} ({rows} rows, {weeks} weeks backfilled)")
    print(f"plain pandas read + featurize:           {pandas_seconds:8.2f} s   (baseline)")
    print(f"Dagster backfill, one run, SQLite:       {sqlite_seconds:8.2f} s   x{sqlite_seconds / pandas_seconds:,.0f}")
    print(f"Dagster backfill, one run, in-memory:    {memory_seconds:8.2f} s   x{memory_seconds / pandas_seconds:,.0f}")
    print(f"per week (SQLite): {1000 * sqlite_seconds / weeks:.1f} ms for 2 assets x 1 partition")


if __name__ == "__main__":
    main()
