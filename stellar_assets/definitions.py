"""The stellar code location: `dagster dev -w workspace.yaml` loads `defs` from here."""

from __future__ import annotations

import warnings

import dagster as dg

# BackfillPolicy is marked beta; it is what makes a backfill of every week one run.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from stellar_assets.ingestion import INGESTION_ASSETS
from stellar_assets.resources import ingestion_resources

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.assets(*INGESTION_ASSETS),
    description="Raw observations (quality-gated) and features for a range of weeks, in one run.",
)

defs = dg.Definitions(
    assets=[*INGESTION_ASSETS],
    jobs=[ingestion_job],
    resources={**ingestion_resources()},
)
