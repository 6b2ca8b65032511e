"""Every environment variable stellar reads, in one place, with who reads it.

Pure data (no imports of Dagster, MLflow or the server), so that the compose
consistency test (tests/stack/test_compose_config.py), README.md, Operations and
`.env.example` can be checked against it. The test also scans the source for
`os.environ` / `dg.EnvVar` reads, so a variable the code starts reading must be
listed here; the prediction server's own list is stellar_serving.config.ServingConfig.
"""

from __future__ import annotations

from dataclasses import dataclass

# Who reads a variable:
CODE = "code"  # the Dagster code location (code server and the run workers it launches)
INSTANCE = "instance"  # the production docker/dagster/dagster.yaml (webserver, daemon, code server)
HOME = "home"  # the embedded one-machine set-up (stellar demo / stellar ui)
SERVING = "serving"  # the prediction server (the full list: ServingConfig.env_vars())


@dataclass(frozen=True)
class Setting:
    name: str
    readers: tuple[str, ...]
    default: str | None
    doc: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    # project home (stellar_core/home.py)
    Setting("STELLAR_HOME", (HOME, CODE), ".stellar", "project home of the embedded set-up (data, MLflow store)"),
    Setting("DAGSTER_HOME", (HOME, INSTANCE), ".stellar/dagster", "folder holding the instance's dagster.yaml"),
    Setting("MLFLOW_TRACKING_URI", (CODE, SERVING), "sqlite:///$STELLAR_HOME/mlflow/mlflow.db",
            "MLflow tracking and registry (http://mlflow:5000 in the stack); credentials belong in "
            "MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, not in the URI", secret=True),
    Setting("STELLAR_MLFLOW_ARTIFACT_ROOT", (CODE,), "file://$STELLAR_HOME/mlflow/artifacts",
            "artifact root of new experiments (mlflow-artifacts:/ behind an MLflow server)"),
    Setting("STELLAR_MLFLOW_UI_URL", (CODE,), "http://127.0.0.1:5000", "MLflow UI base URL for links in metadata"),
    # sources and storage (stellar_assets/resources)
    Setting("STELLAR_SOURCE", (CODE, HOME), "auto", "sdss_csv | skyserver | simulator | auto"),
    Setting("STELLAR_SDSS_CSV", (CODE, HOME), "data/star_classification.csv[.gz], else ../shared/data/sdss17_sample.csv.gz",
            "SDSS17 CSV: local path or s3:// URL"),
    Setting("STELLAR_SDSS_CSV_FIRST_WEEK", (CODE,), "week of the file's earliest MJD",
            "first week the CSV covers (an empty week inside the span is really empty)"),
    Setting("STELLAR_SDSS_CSV_LAST_WEEK", (CODE,), "week of the file's latest MJD", "last week the CSV covers"),
    Setting("STELLAR_SKYSERVER_URL", (CODE,), "DR17 SqlSearch", "SkyServer SQL search endpoint"),
    Setting("STELLAR_S3_BUCKET", (CODE,), None, "bucket of asset data (unset: local Parquet under STELLAR_HOME)"),
    Setting("STELLAR_S3_PREFIX", (CODE,), "stellar", "key prefix of asset data in the bucket"),
    Setting("STELLAR_S3_ENDPOINT_URL", (CODE,), None, "S3 endpoint (MinIO); unset: AWS"),
    Setting("STELLAR_FIRST_WEEK", (CODE,), "2000-03-05", "first weekly partition"),
    Setting("STELLAR_LAST_WEEK", (CODE,), "2020-03-22", "last weekly partition"),
    # training (stellar_assets/training)
    Setting("STELLAR_MODEL_NAME", (CODE, SERVING), "stellar-classifier", "registered model name"),
    Setting("STELLAR_TRAINING_WINDOW_WEEKS", (CODE,), "104", "trailing training window in weeks, or 'all'"),
    Setting("STELLAR_MODEL_DEFAULTS", (CODE,), "$STELLAR_HOME/training/model_defaults.json",
            "hyperparameters written by model selection"),
    Setting("STELLAR_GATE_ACCURACY_FLOOR", (CODE,), "0.93", "promotion gate: minimum test accuracy"),
    Setting("STELLAR_GATE_SINGLE_ROW_BUDGET_MS", (CODE,), "25", "promotion gate: p95 single-row latency"),
    Setting("STELLAR_GATE_BATCH_BUDGET_MS", (CODE,), "100", "promotion gate: ms per 1000-row batch"),
    # monitoring (stellar_assets/monitoring)
    Setting("STELLAR_PREDICTIONS_DB_URL", (CODE,), "sqlite:///$STELLAR_HOME/predictions.db",
            "predictions database (SQLAlchemy URL; postgresql+psycopg2://... in the stack)", secret=True),
    Setting("STELLAR_SERVING_TARGET", (CODE,), "127.0.0.1:50051", "prediction server the monitoring asks"),
    Setting("STELLAR_SERVING_METRICS_URL", (CODE,), "http://127.0.0.1:9464/metrics", "its Prometheus endpoint"),
    Setting("STELLAR_AUTH_TOKEN", (CODE, SERVING), None,
            "bearer token of the prediction server; the code location sends it with ReloadModel", secret=True),
    Setting("STELLAR_RETRAIN_COOLDOWN_WEEKS", (CODE,), "see stellar_assets/monitoring/sensors.py",
            "weeks between drift-triggered retrainings"),
    # replay (stellar_assets/replay.py): weeks replayed against the prediction server
    Setting("STELLAR_REPLAY_FIRST_WEEK", (HOME,), "see stellar_assets/replay.py", "first week replayed"),
    Setting("STELLAR_REPLAY_LAST_WEEK", (HOME,), "see stellar_assets/replay.py", "last week replayed"),
    # the production instance (dagster.yaml `env:` entries)
    Setting("DAGSTER_PG_HOST", (INSTANCE,), None, "PostgreSQL host of Dagster's storage"),
    Setting("DAGSTER_PG_PORT", (INSTANCE,), None, "its port"),
    Setting("DAGSTER_PG_DB", (INSTANCE,), None, "its database"),
    Setting("DAGSTER_PG_USER", (INSTANCE,), None, "its user"),
    Setting("DAGSTER_PG_PASSWORD", (INSTANCE,), None, "its password", secret=True),
    Setting("DAGSTER_COMPUTE_LOG_DIR", (INSTANCE,), None, "step stdout/stderr, shared by run workers and webserver"),
)


def names(reader: str | None = None) -> set[str]:
    """Variable names, all of them or those one reader reads."""
    return {s.name for s in SETTINGS if reader is None or reader in s.readers}
