"""Resources of the code location, configured from the environment.

Embedded default: Parquet under $STELLAR_HOME/data, source `auto`. Set
STELLAR_S3_BUCKET (and STELLAR_S3_ENDPOINT_URL for MinIO) to keep asset data
in S3 instead.

Secrets (a password in a URL, a token) reach resources as `dg.EnvVar`s
(`env_var_or`): Dagster reads them when a run starts and keeps only
{"env": NAME} in snapshots and run config, so the UI never shows them.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_aws.s3 import S3Resource

from stellar_core.home import data_dir
from stellar_assets.resources.io_managers import LocalParquetIOManager, S3ParquetIOManager
from stellar_assets.resources.sources import ObservationSource, source_from_env


def env_var_or(var: dg.EnvVar, default: str | None) -> str | None:
    """`var` itself when its variable is set (a resource field resolves it at run time), else `default`."""
    return var if var.get_value() else default


def io_manager_from_env() -> dg.ConfigurableIOManager:
    bucket = os.environ.get("STELLAR_S3_BUCKET")
    if bucket:
        return S3ParquetIOManager(
            # No keys here: boto3 reads AWS_* itself, and keys given to S3Resource would be in snapshots.
            s3=S3Resource(endpoint_url=os.environ.get("STELLAR_S3_ENDPOINT_URL") or None),
            bucket=bucket,
            prefix=os.environ.get("STELLAR_S3_PREFIX", "stellar"),
        )
    return LocalParquetIOManager(base_dir=str(data_dir()))


def ingestion_resources() -> dict:
    return {"io_manager": io_manager_from_env(), "source": source_from_env()}


__all__ = ["LocalParquetIOManager", "ObservationSource", "S3ParquetIOManager", "env_var_or", "ingestion_resources",
           "io_manager_from_env"]
