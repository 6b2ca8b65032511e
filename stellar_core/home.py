"""Where the embedded (one-machine) set-up keeps its state.

Everything lives under one project home, `$STELLAR_HOME` (default `.stellar`
in the working directory): the Dagster instance, the Parquet asset store, the
MLflow SQLite store and artifacts, the predictions database. A team set-up
overrides each piece with its own variable (MLFLOW_TRACKING_URI, ...).

Readers only: preparing the home (its dagster.yaml, the environment of the
processes the app starts) is the application's job (stellar_app.home).
"""

from __future__ import annotations

import os
from pathlib import Path


def project_home() -> Path:
    return Path(os.environ.get("STELLAR_HOME", ".stellar")).resolve()


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or project_home() / "dagster").resolve()


def data_dir() -> Path:
    return project_home() / "data"


def mlflow_dir() -> Path:
    return project_home() / "mlflow"


def default_mlflow_tracking_uri() -> str:
    return f"sqlite:///{mlflow_dir() / 'mlflow.db'}"


def mlflow_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_mlflow_tracking_uri()


def mlflow_artifact_root() -> str:
    return os.environ.get("STELLAR_MLFLOW_ARTIFACT_ROOT") or (mlflow_dir() / "artifacts").as_uri()


# The Kaggle download, where the README tells users to put it.
KAGGLE_CSV_NAMES = ("data/star_classification.csv", "data/star_classification.csv.gz")
# The repository's real test data, beside the checkout when present.
SHARED_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss17_sample.csv.gz"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def default_sdss_csv() -> tuple[str | None, str]:
    """The SDSS17 CSV the main job reads, and why that one (None: use the simulator)."""
    configured = os.environ.get("STELLAR_SDSS_CSV")
    if configured:
        return configured, "STELLAR_SDSS_CSV"
    for name in KAGGLE_CSV_NAMES:
        candidate = repo_root() / name
        if candidate.exists():
            return str(candidate), f"the Kaggle download at {name}"
    if SHARED_SAMPLE.exists():
        return str(SHARED_SAMPLE), "the shared SDSS17 sample beside the checkout (../shared/data)"
    return None, "no SDSS17 CSV configured or found"
