"""The predictions table on a real PostgreSQL 15 (a throw-away cluster on 127.0.0.1): the same upsert
semantics as SQLite, through the same SQLAlchemy code."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from stellar_assets.monitoring.resources import PredictionsDatabase
from stellar_assets.resources.io_managers import ALLOW_SHRINK_TAG, StorageError
from tests.support import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def postgres_url():
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 is not installed (make system-deps installs it)")
    root = Path(tempfile.mkdtemp(prefix="stellar-pg-"))
    data, port = root / "data", free_port()
    as_postgres = os.geteuid() == 0  # initdb and postgres refuse to run as root
    if as_postgres:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []

    def run(*cmd):
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _predictions(week: str, ids: list[str], cls: str, version: str) -> pd.DataFrame:
    return pd.DataFrame({"object_id": ids, "week": week, "mjd": 54600, "predicted_class": cls,
                         "p_GALAXY": 0.1, "p_QSO": 0.1, "p_STAR": 0.8, "model_version": version, "label": "STAR"})


def test_rematerializing_a_week_replaces_its_rows_on_postgres(postgres_url):
    database = PredictionsDatabase(url=postgres_url)
    database.replace_weeks(_predictions("2008-06-08", ["1", "2", "3"], "STAR", "1"), ["2008-06-08"], "run-a")
    database.replace_weeks(_predictions("2008-06-15", ["4"], "STAR", "1"), ["2008-06-15"], "run-b")
    # The same week again with one object fewer: refused, unless the run opted in to shrinking.
    with pytest.raises(StorageError, match=r"2008-06-08: 3 -> 2 rows"):
        database.replace_weeks(_predictions("2008-06-08", ["1", "2"], "GALAXY", "2"), ["2008-06-08"], "run-c")
    assert database.read_weeks().groupby("week").size().to_dict() == {"2008-06-08": 3, "2008-06-15": 1}
    # Opted in, with a new model: replaced, other weeks untouched.
    database.replace_weeks(_predictions("2008-06-08", ["1", "2"], "GALAXY", "2"), ["2008-06-08"], "run-c",
                           run_tags={ALLOW_SHRINK_TAG: "true"})
    stored = database.read_weeks()
    assert stored.groupby("week").size().to_dict() == {"2008-06-08": 2, "2008-06-15": 1}
    week = stored[stored["week"] == "2008-06-08"]
    assert set(week["model_version"]) == {"2"} and set(week["dagster_run_id"]) == {"run-c"}
    # Bad input is refused before anything changes.
    with pytest.raises(ValueError, match="duplicate"):
        database.replace_weeks(_predictions("2008-06-08", ["1", "1"], "STAR", "3"), ["2008-06-08"], "run-d")
    with pytest.raises(ValueError, match="outside the weeks"):
        database.replace_weeks(_predictions("2008-06-22", ["9"], "STAR", "3"), ["2008-06-08"], "run-e")
    assert len(database.read_weeks()) == 3


def test_a_bad_database_url_names_the_problem():
    with pytest.raises(ValueError, match="not a usable SQLAlchemy URL"):
        PredictionsDatabase(url="nonsense://x").engine()
