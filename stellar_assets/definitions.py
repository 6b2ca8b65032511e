"""The stellar code location: `dagster dev -w workspace.yaml` loads `defs` from here.

One module per domain (ingestion, training, ...) exports its assets, jobs and
resources; this file only puts them together.
"""

import warnings

import dagster as dg

# BackfillPolicy is marked beta; it is what makes a backfill of every week one run.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from stellar_assets.ingestion import INGESTION_ASSETS  # noqa: E402
from stellar_assets.monitoring import (  # noqa: E402
    MONITORING_ASSETS,
    MONITORING_CHECKS,
    MONITORING_JOBS,
    MONITORING_SCHEDULES,
    MONITORING_SENSORS,
    monitoring_resources,
)
from stellar_assets.resources import ingestion_resources  # noqa: E402
from stellar_assets.settings import load_settings  # noqa: E402
from stellar_assets.training import TRAINING_ASSETS, TRAINING_CHECKS, train_and_promote_job, training_resources  # noqa: E402

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.assets(*INGESTION_ASSETS),
    description="Raw observations (quality-gated) and features for a range of weeks, in one run.",
)

settings = load_settings()  # every environment variable the code location reads, read once

defs = dg.Definitions(
    assets=[*INGESTION_ASSETS, *TRAINING_ASSETS, *MONITORING_ASSETS],
    asset_checks=[*TRAINING_CHECKS, *MONITORING_CHECKS],
    jobs=[ingestion_job, train_and_promote_job, *MONITORING_JOBS],
    schedules=[*MONITORING_SCHEDULES],
    sensors=[*MONITORING_SENSORS],
    resources={**ingestion_resources(settings), **training_resources(settings), **monitoring_resources(settings)},
)
