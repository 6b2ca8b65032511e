"""The observation source as a Dagster resource, chosen by configuration."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from stellar_assets.settings import CodeLocationSettings
from stellar_core.sources import SourceError
from stellar_core.sources.placement import Placement, WeekSpan, place_rows, rows_in_weeks
from stellar_core.sources.sdss_csv import parse_sdss_csv, read_bytes
from stellar_core.sources.simulator import SCENARIOS, Drift, simulate_weeks
from stellar_core.sources.skyserver import DR17_SQL_SEARCH_URL, SkyServerClient
from stellar_core.weeks import week_keys_for_mjds, week_mjd_range

SourceKind = Literal["auto", "sdss_csv", "skyserver", "simulator"]


@dataclass(frozen=True)
class SourceBatch:
    """What a source delivered for some weeks, and which of those weeks it speaks for."""

    rows: pd.DataFrame  # raw rows of the requested weeks, as received
    weeks: pd.Series  # week key of each row (same index)
    covers: WeekSpan | None  # weeks the source vouches for: an empty week inside is really empty
    unplaceable: pd.DataFrame  # rows of the source that lie in no survey week, with a "reason"
    unplaceable_summary: str = ""

    def uncovered(self, week_keys: list[str]) -> list[str]:
        return [k for k in week_keys if self.covers is None or k not in self.covers]


class ObservationSource(dg.ConfigurableResource):
    """Where raw SDSS observations come from.

    `auto` reads the SDSS17 CSV when `csv_path` is set, otherwise the simulator.
    """

    kind: SourceKind = Field(default="auto", description="sdss_csv | skyserver | simulator | auto")
    csv_path: str | None = Field(default=None, description="SDSS17 CSV (plain or gzip), local path or s3:// URL")
    csv_first_week: str | None = Field(
        default=None, description="first week the CSV covers (a Sunday); default: the week of its earliest MJD")
    csv_last_week: str | None = Field(
        default=None, description="last week the CSV covers; default: the week of its latest MJD")
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

    @property
    def identity(self) -> str:
        """What kind of data a week holds: real SDSS rows (from any CSV export or SkyServer, which
        agree row for row) or simulated ones. Weeks never silently switch between the two."""
        return "simulator" if self.resolved_kind == "simulator" else "sdss"

    def describe(self) -> str:
        kind = self.resolved_kind
        if kind == "sdss_csv":
            return f"sdss_csv:{self.csv_path}"
        if kind == "skyserver":
            return f"skyserver:{self.skyserver_url}"
        return f"simulator(seed={self.simulator_seed}, scenario={self.simulator_scenario}, intensity={self.simulator_intensity})"

    def coverage(self, survey: WeekSpan) -> WeekSpan | None:
        """The weeks this source speaks for (None: none). SkyServer and the simulator answer
        for any week asked; a CSV file for the span it declares, or else that of its rows."""
        if self.resolved_kind != "sdss_csv":
            return survey
        return self._csv_coverage(self._csv_placement(survey))

    def fetch(self, week_keys: list[str], survey: WeekSpan, log: logging.Logger | None = None) -> SourceBatch:
        """Raw rows for the given consecutive weeks, as received, with the span the source covers."""
        log = log or logging.getLogger(__name__)
        kind = self.resolved_kind
        if kind == "sdss_csv":
            placement = self._csv_placement(survey)
            rows, weeks = rows_in_weeks(placement, week_keys)
            return SourceBatch(rows, weeks, self._csv_coverage(placement), placement.unplaceable,
                               placement.unplaceable_summary())
        if kind == "skyserver":
            frame = self._skyserver_rows(week_keys, log)
        else:
            drift = Drift(self.simulator_scenario, self.simulator_intensity)
            frame = simulate_weeks(week_keys, rows_mean=self.simulator_rows_per_week, drift=drift,
                                   seed=self.simulator_seed)
        # Both answer week by week: every row lies in the week it was asked for.
        placement = place_rows(frame, survey, self.describe())
        rows, weeks = rows_in_weeks(placement, week_keys)
        return SourceBatch(rows, weeks, WeekSpan(week_keys[0], week_keys[-1]), placement.unplaceable,
                           placement.unplaceable_summary())

    def _csv_placement(self, survey: WeekSpan) -> Placement:
        if not self.csv_path:
            raise SourceError("source kind sdss_csv needs csv_path (env STELLAR_SDSS_CSV)")
        return place_csv_once(self.csv_path, self.s3_endpoint_url, survey)

    def _csv_coverage(self, placement: Placement) -> WeekSpan | None:
        span = placement.span
        first = self.csv_first_week or (span.first if span else None)
        last = self.csv_last_week or (span.last if span else None)
        if first is None or last is None:
            return None
        for name, week in (("csv_first_week", first), ("csv_last_week", last)):
            if not _is_week_key(week):
                raise SourceError(f"{name}={week!r} is not a week key (a Sunday, YYYY-MM-DD)")
        if first > last:
            raise SourceError(f"csv_first_week={first} is after csv_last_week={last}")
        return WeekSpan(first, last)

    def _skyserver_rows(self, week_keys: list[str], log: logging.Logger) -> pd.DataFrame:
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


def _is_week_key(week: str) -> bool:
    try:
        return str(week_keys_for_mjds([week_mjd_range(week)[0]])[0]) == week
    except ValueError:
        return False


def place_csv_once(location: str, s3_endpoint_url: str | None, survey: WeekSpan) -> Placement:
    """The file parsed and placed in weeks, once per process for as long as it is unchanged on disk."""
    stamp = None
    if not location.startswith("s3://") and os.path.exists(location):
        stat = os.stat(location)
        stamp = (stat.st_size, stat.st_mtime_ns)
    return _placed_csv(location, s3_endpoint_url, stamp, survey)


@lru_cache(maxsize=2)
def _placed_csv(location: str, s3_endpoint_url: str | None, stamp, survey: WeekSpan) -> Placement:
    # Callers select rows into new frames (rows_in_weeks), so the cached frames are never mutated.
    return place_rows(parse_sdss_csv(read_bytes(location, s3_endpoint_url), location), survey, location)


def observation_source(settings: CodeLocationSettings) -> ObservationSource:
    """The source the code location uses.

    Without STELLAR_SDSS_CSV, `auto` and `sdss_csv` read the same default file as `stellar
    demo` / `stellar ui` (stellar_core.home.default_sdss_csv), so `dagster dev` or `dg dev`
    never silently switch a project holding real weeks to the simulator."""
    return ObservationSource(
        kind=settings.source,
        csv_path=settings.csv_location(),
        csv_first_week=settings.sdss_csv_first_week,
        csv_last_week=settings.sdss_csv_last_week,
        s3_endpoint_url=settings.s3_endpoint_url,
        skyserver_url=settings.skyserver_url,
    )
