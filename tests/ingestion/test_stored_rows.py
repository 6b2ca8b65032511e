"""stored_rows reads a stored week's row count from its Parquet footer, on both backends,
without downloading the week (the shrink rule asks it for every week a backfill writes)."""

from __future__ import annotations

import uuid

import boto3
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from stellar_assets.resources import io_managers
from stellar_assets.resources.io_managers import LocalParquetIOManager, S3ParquetIOManager, StorageError
from tests.ingestion.servers import moto_s3_server

ASSET = dg.AssetKey("observation_features")
WEEK = "2012-10-07"


def week_table(rows: int, columns: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(rows)
    return pd.DataFrame(rng.random((rows, columns)), columns=[f"column_{k}" for k in range(columns)])


def store_week(store, frame: pd.DataFrame, week: str = WEEK) -> None:
    suffix, data = store._encode(frame)
    store._write(io_managers._relpath(ASSET, week, suffix), data)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        yield LocalParquetIOManager(base_dir=str(tmp_path))
        return
    from dagster_aws.s3 import S3Resource

    bucket = f"stellar-{uuid.uuid4().hex[:12]}"  # moto keeps buckets across servers in one process
    with moto_s3_server(monkeypatch) as endpoint:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield S3ParquetIOManager(s3=S3Resource(endpoint_url=endpoint), bucket=bucket, prefix="assets")


def test_rows_of_a_stored_week_and_none_for_a_week_never_stored(store):
    store_week(store, week_table(1234))
    assert store.stored_rows(ASSET, WEEK) == 1234
    assert store.stored_rows(ASSET, "2012-10-14") is None
    store_week(store, week_table(0), "2012-10-14")
    assert store.stored_rows(ASSET, "2012-10-14") == 0


def test_only_the_tail_is_read_and_a_large_footer_takes_a_second_read(store, monkeypatch):
    # A large week (several MB) and a wide one whose footer is larger than the first read.
    store_week(store, week_table(200_000))
    store_week(store, week_table(3, columns=400), "2012-10-14")
    read = []
    real_read_tail = type(store)._read_tail

    def counted(self, relpath, size):
        tail = real_read_tail(self, relpath, size)
        read.append((size, len(tail)))
        return tail

    monkeypatch.setattr(type(store), "_read_tail", counted)
    monkeypatch.setattr(type(store), "_read", lambda self, relpath: pytest.fail("stored_rows read a whole week"))
    monkeypatch.setattr(io_managers, "FOOTER_READ_BYTES", 4096)
    assert store.stored_rows(ASSET, WEEK) == 200_000
    assert read == [(4096, 4096)]
    read.clear()
    assert store.stored_rows(ASSET, "2012-10-14") == 3
    assert len(read) == 2 and read[1][0] > 4096 and read[1][1] == read[1][0]


def test_a_file_that_is_not_parquet_is_named(store):
    store._write(io_managers._relpath(ASSET, WEEK, ".parquet"), b"week,rows\n2012-10-07,3\n")
    with pytest.raises(StorageError, match=r"observation_features/2012-10-07\.parquet is not a Parquet file"):
        store.stored_rows(ASSET, WEEK)
