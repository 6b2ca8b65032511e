"""The training tests' project home (tests/dagster_support.py): a real MLflow SQLite store and real
ingested weeks in a temporary folder, shared by the session."""

from __future__ import annotations

import pytest

from tests.dagster_support import ProjectHome, unique_model_name
from tests.training.scenario import FIRST_INGESTED, LAST_INGESTED


@pytest.fixture(scope="session")
def store(tmp_path_factory, sdss_sample_path) -> ProjectHome:
    store = ProjectHome(tmp_path_factory.mktemp("stellar-training"), sdss_sample_path, min_comparison_rows=20)
    store.ingest(FIRST_INGESTED, LAST_INGESTED)
    return store


@pytest.fixture
def model_name(request) -> str:
    return unique_model_name(request, "test")
