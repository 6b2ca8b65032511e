"""Resources of the code location, built from its settings (stellar_assets/settings.py).

Embedded default: Parquet under $STELLAR_HOME/data, source `auto`. Set
STELLAR_S3_BUCKET (and STELLAR_S3_ENDPOINT_URL for MinIO) to keep asset data
in S3 instead.
"""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource

from stellar_assets.resources.io_managers import LocalParquetIOManager, S3ParquetIOManager
from stellar_assets.resources.sources import ObservationSource, observation_source
from stellar_assets.settings import CodeLocationSettings


def parquet_io_manager(settings: CodeLocationSettings) -> dg.ConfigurableIOManager:
    if settings.s3_bucket:
        return S3ParquetIOManager(
            # No keys here: boto3 reads AWS_* itself, and keys given to S3Resource would be in snapshots.
            s3=S3Resource(endpoint_url=settings.s3_endpoint_url),
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
        )
    return LocalParquetIOManager(base_dir=str(settings.data_dir))


def ingestion_resources(settings: CodeLocationSettings) -> dict:
    return {"io_manager": parquet_io_manager(settings), "source": observation_source(settings)}


__all__ = ["LocalParquetIOManager", "ObservationSource", "S3ParquetIOManager", "ingestion_resources",
           "parquet_io_manager"]
