"""Training, the promotion gate and the model-selection experiment.

Merge into Definitions:
    assets=[*TRAINING_ASSETS], asset_checks=[*TRAINING_CHECKS], jobs=[train_and_promote_job],
    resources={**training_resources(settings)}
TRAINING_CHECKS is empty: the gate's checks are `check_specs` of challenger_model
(they travel with TRAINING_ASSETS).
"""

import warnings

import dagster as dg

# dagster-mlflow and allow_nonexistent_upstream_partitions are marked beta; we rely on both knowingly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from stellar_assets.training.assets import (
    CHECK_NAMES,
    DEFAULT_WINDOW_WEEKS,
    TRAINING_ASSETS as PARTITIONED_TRAINING_ASSETS,
    build_training_assets,
)
from stellar_assets.training.resources import (
    ModelRegistry,
    PromotionGate,
    TrainingDefaults,
    mlflow_tracking_resource,
    training_resources,
)
from stellar_assets.training.selection import model_selection
from stellar_assets.training.summary import describe_champion

TRAINING_ASSETS = [*PARTITIONED_TRAINING_ASSETS, model_selection]
TRAINING_CHECKS: list = []

train_and_promote_job = dg.define_asset_job(
    "train_and_promote",
    selection=dg.AssetSelection.assets("train_test_split", "challenger_model", "champion_model"),
    description="Split, train a challenger, run the gate and promote or retain the champion, for one week.",
    # dagster.yaml limits this tag to one run at a time: two promotions must never race for the alias.
    tags={"stellar/retraining": "true"},
)

__all__ = [
    "CHECK_NAMES", "DEFAULT_WINDOW_WEEKS", "ModelRegistry", "PromotionGate", "TRAINING_ASSETS", "TRAINING_CHECKS",
    "TrainingDefaults", "build_training_assets", "describe_champion", "mlflow_tracking_resource", "model_selection",
    "train_and_promote_job", "training_resources",
]
