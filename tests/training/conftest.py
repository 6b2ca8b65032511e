"""A real MLflow SQLite store and real ingested weeks in a temporary folder, shared by the session.

Each test registers under its own model name, so tests do not see each
other's champions while the store (and its one-off schema migration) is shared.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import dagster as dg
import pytest

warnings.filterwarnings("ignore", category=dg.BetaWarning)

from stellar_assets.ingestion import INGESTION_ASSETS
from stellar_assets.resources.io_managers import LocalParquetIOManager
from stellar_assets.resources.sources import ObservationSource
from stellar_assets.training import (
    ModelRegistry,
    PromotionGate,
    TrainingDefaults,
    build_training_assets,
    mlflow_tracking_resource,
)
from tests.training.scenario import FIRST_INGESTED, LAST_INGESTED

WINDOW_WEEKS = 8

_names = itertools.count()


class Store:
    def __init__(self, root: Path, sample: Path):
        self.root = root
        self.tracking_uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
        self.artifact_root = (root / "mlflow" / "artifacts").as_uri()
        self.data_dir = root / "data"
        self.sample = sample
        self.training_assets = build_training_assets(WINDOW_WEEKS)

    def resources(self, model_name: str, defaults_path: Path | None = None, **gate) -> dict:
        gate = {"accuracy_floor": 0.3, "recall_floors": {}, "single_row_latency_budget_ms": 1e6,
                "batch_latency_budget_ms_per_1000_rows": 1e6, "min_comparison_rows": 20, **gate}
        return {
            "io_manager": LocalParquetIOManager(base_dir=str(self.data_dir)),
            "source": ObservationSource(kind="sdss_csv", csv_path=str(self.sample)),
            "mlflow": mlflow_tracking_resource(self.tracking_uri, "stellar-tests", self.artifact_root),
            "model_registry": ModelRegistry(tracking_uri=self.tracking_uri, model_name=model_name),
            "promotion_gate": PromotionGate(**gate),
            "training_defaults": TrainingDefaults(
                selection_defaults_path=str(defaults_path or self.root / f"no-defaults-{model_name}.json")),
        }

    def train(self, model_name: str, week: str, challenger: dict, defaults_path: Path | None = None,
              **gate) -> dg.ExecuteInProcessResult:
        """One real Dagster run of split -> challenger (+ checks) -> champion for `week`."""
        return dg.materialize(
            [*INGESTION_ASSETS, *self.training_assets],
            selection=self.training_assets,
            resources=self.resources(model_name, defaults_path, **gate),
            partition_key=week,
            run_config={"ops": {"challenger_model": {"config": challenger}}},
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )

    def registry(self, model_name: str) -> ModelRegistry:
        return ModelRegistry(tracking_uri=self.tracking_uri, model_name=model_name)


@pytest.fixture(scope="session")
def store(tmp_path_factory, sdss_sample_path) -> Store:
    store = Store(tmp_path_factory.mktemp("stellar-training"), sdss_sample_path)
    result = dg.materialize(
        INGESTION_ASSETS,
        resources=store.resources("unused"),
        instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": FIRST_INGESTED,
              "dagster/asset_partition_range_end": LAST_INGESTED},
    )
    assert result.success
    return store


@pytest.fixture
def model_name(request) -> str:
    return f"test-{request.node.name[:40]}-{next(_names)}".replace("[", "-").replace("]", "")
