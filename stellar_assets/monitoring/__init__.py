"""Weekly batch predictions, drift checks and sensor-triggered retraining.

Merge into Definitions (training_resources(settings) supplies model_registry, ingestion_resources(settings) the io_manager):
    assets=[*MONITORING_ASSETS], asset_checks=[*MONITORING_CHECKS], jobs=[*MONITORING_JOBS],
    sensors=[*MONITORING_SENSORS], schedules=[*MONITORING_SCHEDULES], resources={**monitoring_resources(settings)}
MONITORING_CHECKS is empty: drift_report's checks are `check_specs` of the asset.
"""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)

from stellar_assets.monitoring.assets import batch_predictions, drift_report, serving_report  # noqa: E402
from stellar_assets.monitoring.resources import (  # noqa: E402
    DriftSettings,
    PredictionServer,
    PredictionsDatabase,
    monitoring_resources,
)
from stellar_assets.monitoring.sensors import build_retraining_sensor, reload_prediction_server  # noqa: E402

MONITORING_ASSETS = [batch_predictions, drift_report, serving_report]
MONITORING_CHECKS: list = []

# What the replay runs between retrainings: predictions and drift for a range of weeks, one run.
predict_and_check_job = dg.define_asset_job(
    "predict_and_check",
    selection=dg.AssetSelection.assets(batch_predictions, drift_report),
    description="Batch predictions with the champion of the time and the drift report, for a range of weeks.",
)

# The weekly schedule's job: the newest week from the source to the drift report and the serving figures.
weekly_monitoring_job = dg.define_asset_job(
    "weekly_monitoring",
    selection=dg.AssetSelection.assets("raw_observations", "observation_features", batch_predictions,
                                       drift_report, serving_report),
    description="Ingest, features, batch predictions, drift report and serving report for one week.",
)

# Mondays 06:00 UTC: the week that ended on Saturday night is complete.
weekly_monitoring_schedule = dg.build_schedule_from_partitioned_job(
    weekly_monitoring_job, name="weekly_monitoring_schedule", day_of_week=1, hour_of_day=6, minute_of_hour=0)

drift_retraining_sensor = build_retraining_sensor()

MONITORING_JOBS = [predict_and_check_job, weekly_monitoring_job]
MONITORING_SENSORS = [drift_retraining_sensor, reload_prediction_server]
MONITORING_SCHEDULES = [weekly_monitoring_schedule]

__all__ = [
    "DriftSettings", "MONITORING_ASSETS", "MONITORING_CHECKS", "MONITORING_JOBS", "MONITORING_SCHEDULES",
    "MONITORING_SENSORS", "PredictionServer", "PredictionsDatabase", "batch_predictions", "build_retraining_sensor",
    "drift_report", "drift_retraining_sensor", "monitoring_resources", "predict_and_check_job",
    "reload_prediction_server", "serving_report", "weekly_monitoring_job", "weekly_monitoring_schedule",
]
