"""What `stellar demo` shows is read through Dagster (instance metadata, the IO manager), so the
demo works when the asset store is S3 (here moto's S3 server) and there is no data folder."""

from __future__ import annotations

import io

import boto3
import dagster as dg
import pandas as pd

from stellar_app.demo import recent_objects, weeks_with_rows
from stellar_assets.ingestion import INGESTION_ASSETS
from stellar_assets.resources.io_managers import S3ParquetIOManager
from stellar_assets.resources.sources import ObservationSource
from tests.ingestion.servers import moto_s3_server

FIRST, LAST = "2012-09-30", "2012-10-14"


def test_recent_objects_come_from_the_s3_store_through_the_io_manager(monkeypatch, tmp_path, sdss_sample_path):
    from dagster_aws.s3 import S3Resource

    monkeypatch.chdir(tmp_path)  # no data folder where a Parquet reader would look
    with moto_s3_server(monkeypatch) as endpoint, dg.instance_for_test() as instance:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="stellar-data")
        resources = {"io_manager": S3ParquetIOManager(s3=S3Resource(endpoint_url=endpoint), bucket="stellar-data",
                                                      prefix="assets"),
                     "source": ObservationSource(kind="sdss_csv", csv_path=str(sdss_sample_path))}
        defs = dg.Definitions(assets=INGESTION_ASSETS, resources=resources)
        ingested = defs.resolve_job_def("__ASSET_JOB").execute_in_process(
            instance=instance, tags={"dagster/asset_partition_range_start": FIRST,
                                     "dagster/asset_partition_range_end": LAST})
        assert ingested.success
        weeks = weeks_with_rows(instance)
        sample = recent_objects(defs, instance, 6)
        stored = stored_features(boto3.client("s3", endpoint_url=endpoint))
    assert weeks and set(weeks) <= {"2012-09-30", "2012-10-07", "2012-10-14"} and weeks == sorted(weeks, reverse=True)
    assert sorted(sample["label"].value_counts().items()) == [("GALAXY", 2), ("QSO", 2), ("STAR", 2)]
    assert set(sample["object_id"]) <= set(stored["object_id"])
    assert not (tmp_path / "data").exists() and not (tmp_path / ".stellar").exists()


def stored_features(s3) -> pd.DataFrame:
    """Every week of observation_features in the bucket, read straight from S3."""
    listing = s3.list_objects_v2(Bucket="stellar-data", Prefix="assets/observation_features/")["Contents"]
    return pd.concat(pd.read_parquet(io.BytesIO(s3.get_object(Bucket="stellar-data", Key=o["Key"])["Body"].read()))
                     for o in listing)
