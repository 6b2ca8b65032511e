"""Where the embedded (one-machine) set-up keeps its state.

Everything lives under one project home, `$STELLAR_HOME` (default `.stellar`
in the working directory): the Dagster instance, the Parquet asset store, the
MLflow SQLite store and artifacts, the predictions database. A team set-up
overrides each piece with its own variable (MLFLOW_TRACKING_URI, ...).
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
