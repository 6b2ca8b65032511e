"""Every environment variable the application reads, read once into one object.

The code location and the prediction server have their own settings; the app only
reads what it needs to place the project home and choose the replay's range, and
passes the home on to the code location and the processes it starts (stellar_app.home).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AppSettings(BaseSettings):
    """Names are the variables' names (STELLAR_HOME, ...), case-insensitive."""

    model_config = SettingsConfigDict(extra="ignore")

    stellar_home: Path = Field(Path(".stellar"), description="project home of the embedded set-up")
    dagster_home: Path | None = Field(None, description="folder of the instance's dagster.yaml; "
                                      "default <project home>/dagster")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow store; default the SQLite store "
                                            "in the project home")
    stellar_model_cache_dir: Path | None = Field(None, description="the prediction server's model cache; "
                                                 "default <project home>/model-cache")
    stellar_sdss_csv: str | None = Field(None, description="the SDSS17 CSV the code location reads (said in "
                                         "the demo's first lines); default: stellar_core.home.default_sdss_csv")
    stellar_replay_first_week: str | None = Field(None, description="first week `stellar demo` replays")
    stellar_replay_last_week: str | None = Field(None, description="last week `stellar demo` replays")

    @property
    def home(self) -> Path:
        return self.stellar_home.resolve()

    @property
    def dagster_dir(self) -> Path:
        return (self.dagster_home or self.home / "dagster").resolve()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def model_cache_dir(self) -> Path:
        return self.stellar_model_cache_dir or self.home / "model-cache"
