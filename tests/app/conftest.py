"""The application tests' project home (tests/dagster_support.py): a real MLflow SQLite store and
Parquet store; the replay ingests the weeks it needs itself."""

from __future__ import annotations

import pytest

from tests.dagster_support import ProjectHome, unique_model_name
from tests.monitoring.scenario import SMALL_MODEL


@pytest.fixture(scope="session")
def platform(tmp_path_factory, sdss_sample_path) -> ProjectHome:
    return ProjectHome(tmp_path_factory.mktemp("stellar-app"), sdss_sample_path, min_comparison_rows=10,
                       min_evaluation_rows=50,
                       challenger=SMALL_MODEL)


@pytest.fixture
def model_name(request) -> str:
    return unique_model_name(request, "app")
