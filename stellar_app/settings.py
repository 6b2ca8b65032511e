"""Every environment variable the application reads, read once into one object.

The code location and the prediction server have their own settings; the app only
reads what it needs to place the project home and choose the replay's range, and
passes the home on to the code location and the processes it starts (stellar_app.home,
through export_environment and child_environment: the app's only other touches of the
environment).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


SECRET_FIELDS = {"mlflow_tracking_uri"}


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

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value shown, what it is); the tracking URI may hold credentials: only set or not."""
        rows = []
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            shown = "(unset)" if value is None else "(set)" if name in SECRET_FIELDS else str(value)
            rows.append((name.upper(), shown, info.description or ""))
        return rows

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


def export_environment(values: dict[str, str]) -> None:
    """Set variables for the code location imported in this process and every process it starts."""
    os.environ.update(values)


def child_environment(values: dict[str, str]) -> dict[str, str]:
    """The environment of a process the app starts: this one's, with `values` on top."""
    return {**os.environ, **values}
