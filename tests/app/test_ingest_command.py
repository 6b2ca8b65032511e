"""`stellar ingest` as a user runs it: the weeks the source covers by default, shrinking only on request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stellar_core.weeks import week_keys_for_mjds


def stellar_ingest(home: Path, csv: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STELLAR_HOME": str(home), "STELLAR_SDSS_CSV": str(csv), "STELLAR_SOURCE": "sdss_csv"}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([sys.executable, "-m", "stellar_app.cli", "ingest", *args], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def year_2012(sdss_sample_path, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    sample = pd.read_csv(sdss_sample_path)
    weeks = week_keys_for_mjds(sample["MJD"].to_numpy())
    rows = sample.loc[(weeks >= "2012-01-01") & (weeks <= "2012-03-25")]
    path = tmp_path_factory.mktemp("csv") / "q1_2012.csv"
    rows.to_csv(path, index=False)
    return path, rows


def test_ingest_defaults_to_the_weeks_the_source_covers_and_refuses_to_shrink(tmp_path, year_2012):
    csv, rows = year_2012
    weeks = sorted(set(week_keys_for_mjds(rows["MJD"].to_numpy())))
    done = stellar_ingest(tmp_path, csv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"The source covers {weeks[0]}..{weeks[-1]}" in done.stdout
    span = len(sorted(p for p in (tmp_path / "data" / "raw_observations").glob("*.parquet")))
    assert f"weeks: {span} new, 0 changed, 0 unchanged" in done.stdout
    stored = sorted(p.stem for p in (tmp_path / "data" / "raw_observations").glob("*.parquet"))
    assert stored[0] == weeks[0] and stored[-1] == weeks[-1]

    # The same rows again: nothing runs, so no week gets a new data version.
    again = stellar_ingest(tmp_path, csv)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{span} unchanged and complete, 0 run(s)" in again.stdout and "Nothing to run" in again.stdout

    # One value changed in one week: one run, for that week only.
    edited = rows.copy()
    edited.loc[edited.index[0], "u"] += 0.25
    changed_csv = tmp_path / "edited.csv"
    edited.to_csv(changed_csv, index=False)
    week = week_keys_for_mjds(edited["MJD"].to_numpy()[:1])[0]
    one = stellar_ingest(tmp_path, changed_csv, "--first-week", weeks[0], "--last-week", weeks[-1])
    assert one.returncode == 0, one.stdout + one.stderr
    assert f"{span - 1} unchanged and complete, 1 run(s)" in one.stdout
    assert "weeks: 0 new, 1 changed, 0 unchanged" in one.stdout and week in one.stdout + one.stderr

    smaller = tmp_path / "smaller.csv"
    rows.iloc[: len(rows) // 2].to_csv(smaller, index=False)
    first, last = weeks[0], weeks[-1]
    refused = stellar_ingest(tmp_path, smaller, "--first-week", first, "--last-week", last)
    assert refused.returncode == 1
    assert "would lose rows" in refused.stdout and "--allow-shrink" in refused.stdout

    allowed = stellar_ingest(tmp_path, smaller, "--first-week", first, "--last-week", last, "--allow-shrink")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "stored weeks may shrink" in allowed.stdout


def test_ingest_of_a_header_only_file_stops_before_running(tmp_path, year_2012):
    _, rows = year_2012
    header = tmp_path / "header.csv"
    rows.iloc[0:0].to_csv(header, index=False)
    result = stellar_ingest(tmp_path, header)
    assert result.returncode == 2
    assert "covers no survey week" in result.stdout
    assert not (tmp_path / "data" / "raw_observations").exists()
