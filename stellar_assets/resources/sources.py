"""The observation source as a Dagster resource, chosen by configuration."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from stellar_core.sources import SourceError
from stellar_core.sources.sdss_csv import parse_sdss_csv, read_bytes, rows_in_mjd_range
from stellar_core.sources.simulator import SCENARIOS, Drift, simulate_weeks
from stellar_core.sources.skyserver import DR17_SQL_SEARCH_URL, SkyServerClient
from stellar_core.weeks import week_mjd_range, window_mjd_range

SourceKind = Literal["auto", "sdss_csv", "skyserver", "simulator"]


class ObservationSource(dg.ConfigurableResource):
    """Where raw SDSS observations come from.

    `auto` reads the SDSS17 CSV when `csv_path` is set, otherwise the simulator.
    """

    kind: SourceKind = Field(default="auto", description="sdss_csv | skyserver | simulator | auto")
    csv_path: str | None = Field(default=None, description="SDSS17 CSV (plain or gzip), local path or s3:// URL")
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint for s3:// CSVs (MinIO)")
    skyserver_url: str = DR17_SQL_SEARCH_URL
    skyserver_timeout_seconds: float = 60.0
    skyserver_max_attempts: int = 4
    skyserver_backoff_seconds: float = 2.0
    simulator_rows_per_week: float = 30.0
    simulator_scenario: str = Field(default="none", description=f"one of {SCENARIOS}")
    simulator_intensity: float = 0.0
    simulator_seed: int = 17

    @property
    def resolved_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        return "sdss_csv" if self.csv_path else "simulator"

    def describe(self) -> str:
        kind = self.resolved_kind
        if kind == "sdss_csv":
            return f"sdss_csv:{self.csv_path}"
        if kind == "skyserver":
            return f"skyserver:{self.skyserver_url}"
        return f"simulator(seed={self.simulator_seed}, scenario={self.simulator_scenario}, intensity={self.simulator_intensity})"

    def fetch(self, week_keys: list[str], log: logging.Logger | None = None) -> pd.DataFrame:
        """Raw rows for the given consecutive weeks, as received."""
        log = log or logging.getLogger(__name__)
        kind = self.resolved_kind
        if kind == "sdss_csv":
            if not self.csv_path:
                raise SourceError("source kind sdss_csv needs csv_path (env STELLAR_SDSS_CSV)")
            first, last = window_mjd_range(week_keys[0], week_keys[-1])
            return rows_in_mjd_range(load_csv_once(self.csv_path, self.s3_endpoint_url), first, last)
        if kind == "skyserver":
            client = SkyServerClient(
                url=self.skyserver_url, timeout_seconds=self.skyserver_timeout_seconds,
                max_attempts=self.skyserver_max_attempts, backoff_seconds=self.skyserver_backoff_seconds,
            )
            frames = []
            for n, week in enumerate(week_keys, 1):
                frames.append(client.week_rows(*week_mjd_range(week)))
                if n % 25 == 0 or n == len(week_keys):
                    log.info("SkyServer: %d/%d weeks fetched", n, len(week_keys))
            non_empty = [f for f in frames if len(f)]
            return pd.concat(non_empty, ignore_index=True) if non_empty else frames[0]
        drift = Drift(self.simulator_scenario, self.simulator_intensity)
        return simulate_weeks(week_keys, rows_mean=self.simulator_rows_per_week, drift=drift, seed=self.simulator_seed)


def load_csv_once(location: str, s3_endpoint_url: str | None = None) -> pd.DataFrame:
    """The parsed file, read once per process for as long as it is unchanged on disk."""
    stamp = None
    if not location.startswith("s3://") and os.path.exists(location):
        stat = os.stat(location)
        stamp = (stat.st_size, stat.st_mtime_ns)
    return _parsed_csv(location, s3_endpoint_url, stamp).copy()


@lru_cache(maxsize=2)
def _parsed_csv(location: str, s3_endpoint_url: str | None, stamp) -> pd.DataFrame:
    return parse_sdss_csv(read_bytes(location, s3_endpoint_url), location)


def source_from_env() -> ObservationSource:
    """The source the code location uses: configured by STELLAR_* environment variables."""
    return ObservationSource(
        kind=dg.EnvVar("STELLAR_SOURCE").get_value("auto"),
        csv_path=dg.EnvVar("STELLAR_SDSS_CSV").get_value() or None,
        s3_endpoint_url=dg.EnvVar("STELLAR_S3_ENDPOINT_URL").get_value() or None,
        skyserver_url=dg.EnvVar("STELLAR_SKYSERVER_URL").get_value(DR17_SQL_SEARCH_URL),
    )
