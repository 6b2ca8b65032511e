"""Fixtures shared by every test folder: the real SDSS data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SDSS_SAMPLE = SHARED_DATA / "sdss17_sample.csv.gz"
EXCEL_ROUNDED = SHARED_DATA / "sdss17_first30k_excel_rounded.csv.gz"


@pytest.fixture(scope="session")
def sdss_sample_path() -> Path:
    if not SDSS_SAMPLE.exists():
        pytest.fail(f"the shared SDSS sample is missing: expected {SDSS_SAMPLE} (../shared/data beside the checkout)")
    return SDSS_SAMPLE


@pytest.fixture(scope="session")
def sdss_sample(sdss_sample_path) -> pd.DataFrame:
    return pd.read_csv(sdss_sample_path)


@pytest.fixture(scope="session")
def excel_rounded_path() -> Path:
    if not EXCEL_ROUNDED.exists():
        pytest.fail(f"the shared Excel-rounded export is missing: expected {EXCEL_ROUNDED}")
    return EXCEL_ROUNDED
