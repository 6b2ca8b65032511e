"""Backfill of every SDSS week through Dagster vs. the same work in plain pandas.

    .venv/bin/python benchmarks/ingestion_backfill.py [--csv PATH]

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


def plain_pandas(csv: Path) -> tuple[float, int]:
    started = time.perf_counter()
    table, _ = build_features(pd.read_csv(csv))
    return time.perf_counter() - started, len(table)


def backfill(csv: Path, instance: dg.DagsterInstance, store: Path) -> float:
    keys = observation_weeks.get_partition_keys()
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    args = parser.parse_args()
    weeks = len(observation_weeks.get_partition_keys())
    pandas_seconds, rows = plain_pandas(args.csv)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_seconds = backfill(args.csv, dg.DagsterInstance.local_temp(tmp), Path(tmp) / "store")
    with tempfile.TemporaryDirectory() as tmp:
        memory_seconds = backfill(args.csv, dg.DagsterInstance.ephemeral(), Path(tmp) / "store")
    print(f"input: {args.csv} ({rows} rows, {weeks} weeks)")
    print(f"plain pandas read + featurize:           {pandas_seconds:8.2f} s   (baseline)")
    print(f"Dagster backfill, one run, SQLite:       {sqlite_seconds:8.2f} s   x{sqlite_seconds / pandas_seconds:,.0f}")
    print(f"Dagster backfill, one run, in-memory:    {memory_seconds:8.2f} s   x{memory_seconds / pandas_seconds:,.0f}")
    print(f"per week (SQLite): {1000 * sqlite_seconds / weeks:.1f} ms for 2 assets x 1 partition")


if __name__ == "__main__":
    main()
