"""The embedded (one-machine) set-up as the application prepares it.

stellar_core.home only says where things are; this module creates the project
home's Dagster instance folder and sets the environment that the code location
(imported in this process) and the processes the app starts read, so that
`stellar demo`, `stellar ingest` and `stellar ui` share one home and one instance.
"""

from __future__ import annotations

from stellar_app.settings import AppSettings, export_environment

# The embedded instance: SQLite storage in DAGSTER_HOME (Dagster's default), no telemetry.
# The repository root's dagster.yaml is the same instance for the default project home
# (.stellar/dagster, by relative paths); this one is written for any STELLAR_HOME.
EMBEDDED_INSTANCE_YAML = "telemetry:\n  enabled: false\n"


def prepare_home(settings: AppSettings) -> dict[str, str]:
    """Create the instance folder (and its dagster.yaml when missing); export STELLAR_HOME and
    DAGSTER_HOME for the code location and child processes. Returns what was exported."""
    dagster_dir = settings.dagster_dir
    dagster_dir.mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_dir / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text(EMBEDDED_INSTANCE_YAML)
    exported = {"STELLAR_HOME": str(settings.home), "DAGSTER_HOME": str(dagster_dir)}
    export_environment(exported)
    return exported


def serving_environment(settings: AppSettings) -> dict[str, str]:
    """What the prediction server needs to serve the embedded store's champion; explicit settings win."""
    return {"MLFLOW_TRACKING_URI": settings.tracking_uri, "STELLAR_MODEL_CACHE_DIR": str(settings.model_cache_dir)}


def export_serving_environment(settings: AppSettings) -> None:
    """For `stellar serve` and friends run in this process."""
    export_environment(serving_environment(settings))
