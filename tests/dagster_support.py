"""The project home for tests that run real Dagster jobs, and helpers to read their results (kept apart
from tests/support.py so tests that only need a port or a model do not import Dagster)."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import dagster as dg

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



WINDOW_WEEKS = 8

_model_numbers = itertools.count()


class ProjectHome:
    """A temporary project home shared by a session: weeks of the shared sample ingested to local
    Parquet, a real MLflow SQLite store, and the resources of every asset.

    Each test registers under its own model name (and writes its own predictions database), so tests
    do not see each other's champions while the store (and its one-off schema migration) is shared.
    `min_comparison_rows` and `challenger` are the gate's floor and the model `train` fits by default;
    `min_evaluation_rows` sizes the out-of-time evaluation set to these short windows.
    """

    def __init__(self, root: Path, sample: Path, min_comparison_rows: int, challenger: dict | None = None,
                 min_evaluation_rows: int = 120):
        self.root = root
        self.tracking_uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
        self.artifact_root = (root / "mlflow" / "artifacts").as_uri()
        self.data_dir = root / "data"
        self.sample = sample
        self.training_assets = build_training_assets(WINDOW_WEEKS)
        self.min_comparison_rows = min_comparison_rows
        self.min_evaluation_rows = min_evaluation_rows
        self.challenger = challenger

    def ingest(self, first: str, last: str) -> None:
        """Ingest the weeks `first`..`last` of the sample, as one real Dagster run."""
        result = dg.materialize(
            INGESTION_ASSETS, resources=self.resources("unused"), instance=dg.DagsterInstance.ephemeral(),
            tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})
        assert result.success

    def resources(self, model_name: str, defaults_path: Path | None = None, db_name: str | None = None,
                  server: PredictionServer | None = None, plots: bool = False, **gate) -> dict:
        gate = {"accuracy_floor": 0.3, "recall_floors": {}, "single_row_latency_budget_ms": 1e6,
                "batch_latency_budget_ms_per_1000_rows": 1e6, "min_comparison_rows": self.min_comparison_rows,
                "min_evaluation_rows": self.min_evaluation_rows, **gate}
        return {
            "io_manager": LocalParquetIOManager(base_dir=str(self.data_dir)),
            "source": ObservationSource(kind="sdss_csv", csv_path=str(self.sample)),
            "mlflow": mlflow_tracking_resource(self.tracking_uri, "stellar-tests", self.artifact_root),
            "model_registry": self.registry(model_name),
            "promotion_gate": PromotionGate(**gate),
            "training_defaults": TrainingDefaults(
                selection_defaults_path=str(defaults_path or self.root / f"no-defaults-{model_name}.json")),
            "predictions_db": PredictionsDatabase(url=f"sqlite:///{self.root / (db_name or model_name)}.db"),
            "prediction_server": server or PredictionServer(grpc_target="127.0.0.1:1",
                                                            metrics_url="http://127.0.0.1:1/metrics",
                                                            timeout_seconds=2),
            "drift_settings": DriftSettings(artifact_root=self.artifact_root, plots=plots),
        }

    def registry(self, model_name: str) -> ModelRegistry:
        return ModelRegistry(tracking_uri=self.tracking_uri, model_name=model_name)

    def definitions(self, model_name: str, **kwargs) -> dg.Definitions:
        ingestion_job = dg.define_asset_job("ingestion_job", selection=dg.AssetSelection.assets(*INGESTION_ASSETS))
        return dg.Definitions(
            assets=[*INGESTION_ASSETS, *self.training_assets, *MONITORING_ASSETS],
            jobs=[ingestion_job, train_and_promote_job, predict_and_check_job],
            resources=self.resources(model_name, **kwargs),
        )

    def train(self, model_name: str, week: str, challenger: dict | None = None, defaults_path: Path | None = None,
              instance=None, **gate) -> dg.ExecuteInProcessResult:
        """One real Dagster run of split -> challenger (+ checks) -> champion for `week`."""
        return dg.materialize(
            [*INGESTION_ASSETS, *self.training_assets], selection=self.training_assets,
            resources=self.resources(model_name, defaults_path, **gate), partition_key=week,
            run_config={"ops": {"challenger_model": {"config": self.challenger if challenger is None else challenger}}},
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


def unique_model_name(request, prefix: str) -> str:
    """A registered-model name of its own for the test `request` runs."""
    return f"{prefix}-{request.node.name[:40]}-{next(_model_numbers)}".replace("[", "-").replace("]", "")


def metadata_of(result: dg.ExecuteInProcessResult, asset: str, partition: str | None = None) -> dict:
    """The metadata of `asset`'s materialization in `result` (of `partition`, if given)."""
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == dg.AssetKey(asset) and (partition is None or materialization.partition == partition):
            return {k: v.value for k, v in materialization.metadata.items()}
    where = asset if partition is None else f"{asset}[{partition}]"
    raise AssertionError(f"{where} was not materialized in this run")


def check_of(result: dg.ExecuteInProcessResult, name: str):
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == name:
            return evaluation
    raise AssertionError(f"check {name} did not run")
