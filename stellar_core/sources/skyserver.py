"""SDSS DR17 SkyServer SQL search: one query per observation week.

SkyServer answers CSV whose first lines are comments ('#Table1'); a failed
query may come back as a non-200 status or as a 200 page of error text, so the
header is checked before anything is trusted.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

import pandas as pd
import requests

from stellar_core.contract import SDSS17_COLUMNS
from stellar_core.sources.errors import SourceError

log = logging.getLogger(__name__)

DR17_SQL_SEARCH_URL = "https://skyserver.sdss.org/dr17/SkyServerWS/SearchTools/SqlSearch"

# SpecObj.z is the redshift, PhotoObj.z the z-band magnitude: alias both explicitly.
WEEK_QUERY = """\
SELECT p.objID AS obj_ID, p.ra AS alpha, p.dec AS delta,
       p.u AS u, p.g AS g, p.r AS r, p.i AS i, p.z AS z,
       p.run AS run_ID, p.rerun AS rerun_ID, p.camcol AS cam_col, p.field AS field_ID,
       s.specObjID AS spec_obj_ID, s.class AS class, s.z AS redshift,
       s.plate AS plate, s.mjd AS MJD, s.fiberID AS fiber_ID
FROM SpecObj AS s JOIN PhotoObj AS p ON s.bestObjID = p.objID
WHERE s.mjd BETWEEN {first_mjd} AND {last_mjd}"""

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class SkyServerClient:
    url: str = DR17_SQL_SEARCH_URL
    timeout_seconds: float = 60.0
    max_attempts: int = 4
    backoff_seconds: float = 2.0

    def query_csv(self, sql: str) -> pd.DataFrame:
        """Run one SQL query; retries timeouts, connection errors and 5xx/429 with backoff."""
        last_problem = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = requests.get(
                    self.url, params={"cmd": sql, "format": "csv"}, timeout=self.timeout_seconds
                )
            except requests.Timeout:
                last_problem = f"no answer within {self.timeout_seconds:g} s"
            except requests.ConnectionError as exc:
                last_problem = f"connection failed: {exc}"
            else:
                if response.status_code == 200:
                    return self._parse(response.text)
                snippet = _snippet(response.text)
                if response.status_code not in RETRYABLE_STATUS:
                    raise SourceError(f"SkyServer rejected the query (HTTP {response.status_code}): {snippet}")
                last_problem = f"HTTP {response.status_code}: {snippet}"
            if attempt < self.max_attempts:
                delay = self.backoff_seconds * 2 ** (attempt - 1)
                log.warning("SkyServer attempt %d/%d failed (%s); retrying in %.1f s",
                            attempt, self.max_attempts, last_problem, delay)
                time.sleep(delay)
        raise SourceError(f"SkyServer at {self.url} failed {self.max_attempts} times; last: {last_problem}")

    def week_rows(self, first_mjd: int, last_mjd: int) -> pd.DataFrame:
        return self.query_csv(WEEK_QUERY.format(first_mjd=int(first_mjd), last_mjd=int(last_mjd)))

    @staticmethod
    def _parse(text: str) -> pd.DataFrame:
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not lines:
            raise SourceError("SkyServer answered with no CSV header at all")
        header = [name.strip() for name in lines[0].split(",")]
        missing = [c for c in SDSS17_COLUMNS if c not in header]
        if missing:
            # SkyServer reports SQL errors as a text/HTML page with status 200.
            raise SourceError(f"SkyServer answered with an error page instead of CSV: {_snippet(text)}")
        frame = pd.read_csv(io.StringIO("\n".join(lines)))
        return frame.loc[:, list(SDSS17_COLUMNS)]


def _snippet(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat[:limit] + ("..." if len(flat) > limit else "")
