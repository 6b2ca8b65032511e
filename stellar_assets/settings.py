"""Every setting of the code location, read from the environment once, with its default written once.

`definitions.py` builds the resources from one `CodeLocationSettings`; `stellar
settings` prints this list. Secrets (a password in a URL, a token) are only
noted here as set or not: the resources receive them as `dg.EnvVar`s, which
Dagster resolves when a run starts and keeps as {"env": NAME} in snapshots, so
neither the UI nor run config ever shows them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import dagster as dg
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stellar_core.home import default_sdss_csv
from stellar_core.model_bundle import DEFAULT_MODEL_NAME
from stellar_core.sources.skyserver import DR17_SQL_SEARCH_URL
from stellar_core.weeks import DR17_FIRST_WEEK, DR17_LAST_MJD, Week


DEGRADATION_TRIGGER = "champion_degraded"
RETRAIN_TRIGGERS = (DEGRADATION_TRIGGER, "data_drift", "prediction_drift", "performance_drift", "rejected_rows")


def _env(name: str, doc: str, default=None, secret: bool = False):
    return Field(default, validation_alias=AliasChoices(name), description=doc,
                 json_schema_extra={"env": name, "secret": secret})


class CodeLocationSettings(BaseSettings):
    """The code location's settings: one field per environment variable."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=True)

    # where the embedded (one-machine) set-up keeps its state
    home: Path = _env("STELLAR_HOME", "project home of the embedded set-up (data, MLflow store)", Path(".stellar"))
    mlflow_tracking_uri: SecretStr | None = _env(
        "MLFLOW_TRACKING_URI", "MLflow tracking and registry (http://mlflow:5000 in the stack); unset: "
        "sqlite:///$STELLAR_HOME/mlflow/mlflow.db. Credentials belong in MLFLOW_TRACKING_USERNAME/"
        "PASSWORD/TOKEN, not in the URI", secret=True)
    mlflow_artifact_root: str | None = _env(
        "STELLAR_MLFLOW_ARTIFACT_ROOT", "artifact root of new experiments (mlflow-artifacts:/ behind an MLflow "
        "server); unset: file://$STELLAR_HOME/mlflow/artifacts")
    mlflow_ui_url: str = _env("STELLAR_MLFLOW_UI_URL", "MLflow UI base URL for links in metadata",
                              "http://127.0.0.1:5000")
    # sources and storage
    source: str = _env("STELLAR_SOURCE", "sdss_csv | skyserver | simulator | auto", "auto")
    sdss_csv: str | None = _env(
        "STELLAR_SDSS_CSV", "SDSS17 CSV, local path or s3:// URL; unset: data/star_classification.csv[.gz], "
        "else ../shared/data/sdss17_sample.csv.gz")
    sdss_csv_first_week: str | None = _env(
        "STELLAR_SDSS_CSV_FIRST_WEEK", "first week the CSV covers (an empty week inside the span is really "
        "empty); unset: the week of the file's earliest MJD")
    sdss_csv_last_week: str | None = _env(
        "STELLAR_SDSS_CSV_LAST_WEEK", "last week the CSV covers; unset: the week of its latest MJD")
    skyserver_url: str = _env("STELLAR_SKYSERVER_URL", "SkyServer SQL search endpoint", DR17_SQL_SEARCH_URL)
    s3_bucket: str | None = _env("STELLAR_S3_BUCKET", "bucket of asset data; unset: Parquet under STELLAR_HOME")
    s3_prefix: str = _env("STELLAR_S3_PREFIX", "key prefix of asset data in the bucket", "stellar")
    s3_endpoint_url: str | None = _env("STELLAR_S3_ENDPOINT_URL", "S3 endpoint (MinIO); unset: AWS")
    first_week: str = _env("STELLAR_FIRST_WEEK", "first weekly partition", DR17_FIRST_WEEK.isoformat())
    last_week: str = _env("STELLAR_LAST_WEEK", "last weekly partition", Week.from_mjd(DR17_LAST_MJD).key)
    # training
    model_name: str = _env("STELLAR_MODEL_NAME", "registered model name", DEFAULT_MODEL_NAME)
    training_window_weeks: int | None = _env(
        "STELLAR_TRAINING_WINDOW_WEEKS", "trailing training window in weeks, or 'all'", 104)
    model_defaults: Path | None = _env(
        "STELLAR_MODEL_DEFAULTS", "hyperparameters written by model selection; unset: "
        "$STELLAR_HOME/training/model_defaults.json")
    gate_accuracy_floor: float = _env("STELLAR_GATE_ACCURACY_FLOOR", "promotion gate: minimum test accuracy", 0.93)
    gate_single_row_budget_ms: float = _env(
        "STELLAR_GATE_SINGLE_ROW_BUDGET_MS", "promotion gate: p95 single-row latency budget (ms)", 25.0)
    gate_batch_budget_ms: float = _env(
        "STELLAR_GATE_BATCH_BUDGET_MS", "promotion gate: latency budget per 1000-row batch (ms)", 100.0)
    gate_min_evaluation_rows: int = _env(
        "STELLAR_GATE_MIN_EVALUATION_ROWS", "promotion gate: the out-of-time evaluation set pools the window's "
        "most recent weeks until it holds this many rows", 300)
    gate_metric: str = _env("STELLAR_GATE_METRIC", "promotion gate: the metric the paired comparison decides on: "
                            "accuracy (exact McNemar test), macro_f1 or balanced_accuracy (paired bootstrap)", "accuracy")
    gate_alpha: float = _env("STELLAR_GATE_ALPHA", "promotion gate: one-sided significance of the paired test "
                             "a challenger must pass to replace the champion", 0.05)
    gate_margin: float = _env("STELLAR_GATE_MARGIN", "promotion gate: non-inferiority margin (in the gate's metric, "
                              "0.01 = 1 point) for a retraining requested because the champion degraded", 0.01)
    # monitoring
    predictions_db_url: SecretStr | None = _env(
        "STELLAR_PREDICTIONS_DB_URL", "predictions database (SQLAlchemy URL; postgresql+psycopg2://... in the "
        "stack); unset: sqlite:///$STELLAR_HOME/predictions.db", secret=True)
    serving_target: str = _env("STELLAR_SERVING_TARGET", "prediction server the monitoring asks", "127.0.0.1:50051")
    serving_metrics_url: str = _env("STELLAR_SERVING_METRICS_URL", "its Prometheus endpoint",
                                    "http://127.0.0.1:9464/metrics")
    auth_token: SecretStr | None = _env(
        "STELLAR_AUTH_TOKEN", "bearer token of the prediction server; sent with ReloadModel", secret=True)
    retrain_on: Annotated[tuple[str, ...], NoDecode] = _env(
        "STELLAR_RETRAIN_ON", "what makes the sensor request a retraining, comma-separated: champion_degraded "
        "(its accuracy since training below its out-of-time reference, on evidence) and optionally drift "
        "checks (data_drift, prediction_drift, performance_drift, rejected_rows)", (DEGRADATION_TRIGGER,))
    retrain_cooldown_weeks: int = _env(
        "STELLAR_RETRAIN_COOLDOWN_WEEKS", "weeks between retrainings the sensor requests", 4)

    @field_validator("training_window_weeks", mode="before")
    @classmethod
    def _window(cls, raw):
        text = str(raw).strip().lower()
        if text in ("all", "all_history", "none"):
            return None
        try:
            weeks = int(text)
        except ValueError:
            raise ValueError(f"STELLAR_TRAINING_WINDOW_WEEKS must be a positive number of weeks or 'all', "
                             f"got {raw!r}") from None
        if weeks < 1:
            raise ValueError(f"STELLAR_TRAINING_WINDOW_WEEKS must be >= 1, got {weeks}")
        return weeks

    @field_validator("retrain_on", mode="before")
    @classmethod
    def _triggers(cls, raw):
        names = tuple(n.strip() for n in raw.split(",") if n.strip()) if isinstance(raw, str) else tuple(raw)
        unknown = sorted(set(names) - set(RETRAIN_TRIGGERS))
        if unknown or not names:
            raise ValueError(f"STELLAR_RETRAIN_ON names {unknown or 'nothing'}; choose from {', '.join(RETRAIN_TRIGGERS)}")
        return names

    @field_validator("retrain_cooldown_weeks", mode="before")
    @classmethod
    def _cooldown(cls, raw):
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ValueError(f"STELLAR_RETRAIN_COOLDOWN_WEEKS must be a whole number of weeks, got {raw!r}") from None
        if value < 0:
            raise ValueError(f"STELLAR_RETRAIN_COOLDOWN_WEEKS must be >= 0, got {value}")
        return value

    @field_validator("first_week", "last_week", "sdss_csv_first_week", "sdss_csv_last_week")
    @classmethod
    def _week(cls, value, info):
        if value is None or value == "":
            return None
        try:
            return Week.of(value).key
        except ValueError as exc:
            env = cls.model_fields[info.field_name].json_schema_extra["env"]
            raise ValueError(f"{env}: {exc}") from None

    # Derived values: one place computes each default that depends on the home.
    @property
    def project_home(self) -> Path:
        return self.home.resolve()

    @property
    def data_dir(self) -> Path:
        return self.project_home / "data"

    @property
    def default_tracking_uri(self) -> str:
        return f"sqlite:///{self.project_home / 'mlflow' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or (self.project_home / "mlflow" / "artifacts").as_uri()

    @property
    def model_defaults_path(self) -> Path:
        return self.model_defaults or self.project_home / "training" / "model_defaults.json"

    @property
    def default_predictions_url(self) -> str:
        return f"sqlite:///{self.project_home / 'predictions.db'}"

    def csv_location(self) -> str | None:
        """The CSV the sdss_csv/auto source reads: STELLAR_SDSS_CSV, else the default file (None: none found)."""
        if self.sdss_csv:
            return self.sdss_csv
        return default_sdss_csv()[0] if self.source in ("auto", "sdss_csv") else None

    def secret(self, field: str, default: str | None) -> str | dg.EnvVar | None:
        """A secret for a resource field: its `dg.EnvVar` when set (resolved at run time), else `default`."""
        if getattr(self, field) is None:
            return default
        return dg.EnvVar(self.env_name(field))

    @classmethod
    def env_name(cls, field: str) -> str:
        return cls.model_fields[field].json_schema_extra["env"]

    @classmethod
    def env_vars(cls) -> dict[str, str]:
        """Every variable the code location reads -> what it is."""
        return {info.json_schema_extra["env"]: info.description for info in cls.model_fields.values()}

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value shown, what it is) for every setting; secrets show only whether they are set."""
        rows = []
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if info.json_schema_extra["secret"]:
                shown = "(set)" if value is not None else "(unset)"
            else:
                shown = "(unset)" if value is None else str(value)
            rows.append((info.json_schema_extra["env"], shown, info.description))
        return rows


@functools.cache
def load_settings() -> CodeLocationSettings:
    """The code location's settings, read once per process (definitions.py and the partitions use it)."""
    return CodeLocationSettings()
