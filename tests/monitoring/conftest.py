"""Real parts for the monitoring tests: ingested SDSS weeks in a temporary project home, a real
MLflow SQLite store, a real SQLite predictions database, real Dagster runs (the weeks they use are
in tests/monitoring/scenario.py).
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import dagster as dg
import pytest

warnings.filterwarnings("ignore", category=dg.BetaWarning)

from stellar_assets.ingestion import INGESTION_ASSETS  # noqa: E402
from stellar_assets.monitoring import (  # noqa: E402
    MONITORING_ASSETS,
    DriftSettings,
    PredictionServer,
    PredictionsDatabase,
    predict_and_check_job,
)
from stellar_assets.resources.io_managers import LocalParquetIOManager  # noqa: E402
from stellar_assets.resources.sources import ObservationSource  # noqa: E402
from stellar_assets.training import (  # noqa: E402
    ModelRegistry,
    PromotionGate,
    TrainingDefaults,
    build_training_assets,
    mlflow_tracking_resource,
    train_and_promote_job,
)
from tests.monitoring.scenario import CHAMPION_WEEK, FIRST_INGESTED, LAST_INGESTED, SMALL_MODEL  # noqa: E402

WINDOW_WEEKS = 8

_names = itertools.count()


class Platform:
    """One temporary project home; each test uses its own model name and predictions database."""

    def __init__(self, root: Path, sample: Path):
        self.root = root
        self.tracking_uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
        self.artifact_root = (root / "mlflow" / "artifacts").as_uri()
        self.data_dir = root / "data"
        self.sample = sample
        self.training_assets = build_training_assets(WINDOW_WEEKS)

    def resources(self, model_name: str, db_name: str | None = None, server: PredictionServer | None = None,
                  plots: bool = False) -> dict:
        return {
            "io_manager": LocalParquetIOManager(base_dir=str(self.data_dir)),
            "source": ObservationSource(kind="sdss_csv", csv_path=str(self.sample)),
            "mlflow": mlflow_tracking_resource(self.tracking_uri, "stellar-tests", self.artifact_root),
            "model_registry": ModelRegistry(tracking_uri=self.tracking_uri, model_name=model_name),
            "promotion_gate": PromotionGate(accuracy_floor=0.3, recall_floors={}, single_row_latency_budget_ms=1e6,
                                            batch_latency_budget_ms_per_1000_rows=1e6, min_comparison_rows=10),
            "training_defaults": TrainingDefaults(selection_defaults_path=str(self.root / "no-defaults.json")),
            "predictions_db": PredictionsDatabase(url=f"sqlite:///{self.root / (db_name or model_name)}.db"),
            "prediction_server": server or PredictionServer(grpc_target="127.0.0.1:1",
                                                            metrics_url="http://127.0.0.1:1/metrics",
                                                            timeout_seconds=2),
            "drift_settings": DriftSettings(artifact_root=self.artifact_root, plots=plots),
        }

    def definitions(self, model_name: str, **kwargs) -> dg.Definitions:
        ingestion_job = dg.define_asset_job("ingestion_job", selection=dg.AssetSelection.assets(*INGESTION_ASSETS))
        return dg.Definitions(
            assets=[*INGESTION_ASSETS, *self.training_assets, *MONITORING_ASSETS],
            jobs=[ingestion_job, train_and_promote_job, predict_and_check_job],
            resources=self.resources(model_name, **kwargs),
        )

    def train(self, model_name: str, week: str, instance=None) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [*INGESTION_ASSETS, *self.training_assets], selection=self.training_assets,
            resources=self.resources(model_name), partition_key=week,
            run_config={"ops": {"challenger_model": {"config": SMALL_MODEL}}},
            instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False)

    def monitor(self, model_name: str, first: str, last: str | None = None, instance=None,
                db_name: str | None = None, server: PredictionServer | None = None,
                selection=None) -> dg.ExecuteInProcessResult:
        """batch_predictions + drift_report (default) for one week or a range, as one run."""
        kwargs = {"partition_key": first} if last is None else {
            "tags": {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}}
        return dg.materialize(
            [*INGESTION_ASSETS, *self.training_assets, *MONITORING_ASSETS],
            selection=selection or ["batch_predictions", "drift_report"],
            resources=self.resources(model_name, db_name=db_name, server=server),
            instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False, **kwargs)


@pytest.fixture(scope="session")
def platform(tmp_path_factory, sdss_sample_path) -> Platform:
    platform = Platform(tmp_path_factory.mktemp("stellar-monitoring"), sdss_sample_path)
    result = dg.materialize(
        INGESTION_ASSETS, resources=platform.resources("unused"), instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": FIRST_INGESTED,
              "dagster/asset_partition_range_end": LAST_INGESTED})
    assert result.success
    return platform


@pytest.fixture(scope="session")
def champion_name(platform) -> str:
    """A model name whose champion was promoted at CHAMPION_WEEK (shared by read-only tests)."""
    name = "monitoring-shared"
    result = platform.train(name, CHAMPION_WEEK)
    assert result.success, "the shared champion could not be trained"
    return name


@pytest.fixture
def model_name(request) -> str:
    return f"mon-{request.node.name[:40]}-{next(_names)}".replace("[", "-").replace("]", "")
