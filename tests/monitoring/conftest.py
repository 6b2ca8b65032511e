"""The monitoring tests' project home (tests/dagster_support.py): ingested SDSS weeks, a real MLflow
SQLite store, a real SQLite predictions database per test, real Dagster runs (the weeks they use are
in tests/monitoring/scenario.py)."""

from __future__ import annotations

import pytest

from tests.dagster_support import ProjectHome, unique_model_name
from tests.monitoring.scenario import CHAMPION_WEEK, FIRST_INGESTED, LAST_INGESTED, SMALL_MODEL


@pytest.fixture(scope="session")
def platform(tmp_path_factory, sdss_sample_path) -> ProjectHome:
    platform = ProjectHome(tmp_path_factory.mktemp("stellar-monitoring"), sdss_sample_path,
                           min_comparison_rows=10, challenger=SMALL_MODEL, min_evaluation_rows=50)
    platform.ingest(FIRST_INGESTED, LAST_INGESTED)
    return platform


@pytest.fixture(scope="session")
def champion_name(platform) -> str:
    """A model name whose champion was promoted at CHAMPION_WEEK (shared by read-only tests)."""
    name = "monitoring-shared"
    result = platform.train(name, CHAMPION_WEEK)
    assert result.success, "the shared champion could not be trained"
    return name


@pytest.fixture
def model_name(request) -> str:
    return unique_model_name(request, "mon")
