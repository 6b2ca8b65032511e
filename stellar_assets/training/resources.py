"""Resources of the training assets: MLflow tracking (dagster-mlflow), the registry, the gate.

Embedded default: the SQLite tracking store and registry plus an artifact
folder under $STELLAR_HOME/mlflow (stellar_assets/settings.py); MLFLOW_TRACKING_URI
points everything at an MLflow server instead. That URI may carry user:password@,
so the resources hold it as dg.EnvVar, never its value; MLflow reads
MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN from the environment itself.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from dagster_mlflow.resources import MlFlow
from mlflow.tracking import MlflowClient
from pydantic import Field

from stellar_core.contract import CLASSES
from stellar_assets.settings import CodeLocationSettings
from stellar_core.model_bundle import DEFAULT_MODEL_NAME
from stellar_core.promotion import DEFAULT_RESAMPLES, GATE_METRICS
from stellar_mlflow.runs import ensure_experiment, ensure_store

DEFAULT_EXPERIMENT = "stellar-training"
_DEFAULTS = CodeLocationSettings.model_fields  # each default is written once, in the settings


@dg.resource(
    config_schema={
        **MLFLOW_CONFIG_SCHEMA,
        "artifact_root": dg.Field(dg.Noneable(dg.StringSource), default_value=None, is_required=False,
                                  description="where a new experiment keeps its artifacts"),
    },
    description="dagster-mlflow's mlflow_tracking, with the experiment created under the project's artifact root first.",
)
def stellar_mlflow_tracking(context):
    """dagster-mlflow's `mlflow_tracking` resource as the package means it to be used (one MLflow
    run per Dagster run, found by the `dagster_run_id` tag). Before handing over, it makes sure the
    SQLite folder and the experiment exist, because `mlflow.set_experiment` inside dagster-mlflow
    would otherwise put artifacts in ./mlruns of whatever directory Dagster runs in."""
    config = context.resource_config
    uri = config["mlflow_tracking_uri"]
    ensure_store(uri)
    ensure_experiment(MlflowClient(uri), config["experiment_name"], config.get("artifact_root"))
    tracking = MlFlow(context)
    yield tracking
    tracking.cleanup_on_error()


def as_config_value(value: str | dg.EnvVar) -> str | dict:
    """A string for function-style resource config; an EnvVar as {"env": NAME}, resolved at run time."""
    return {"env": value.env_var_name} if isinstance(value, dg.EnvVar) else value


def mlflow_tracking_resource(tracking_uri: str | dg.EnvVar, experiment_name: str,
                             artifact_root: str) -> dg.ResourceDefinition:
    return stellar_mlflow_tracking.configured({
        "experiment_name": experiment_name,
        # dagster-mlflow exports these for the run: no tqdm bars in Dagster's logs.
        "env": {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
        "mlflow_tracking_uri": as_config_value(tracking_uri),
        "artifact_root": artifact_root,
    })


class ModelRegistry(dg.ConfigurableResource):
    """The MLflow model registry (MlflowClient) and where its UI is, for links in metadata."""

    tracking_uri: str = Field(description="MLflow tracking/registry URI (sqlite:///... or http://...)")
    model_name: str = Field(default=DEFAULT_MODEL_NAME, description="the one registered model")
    experiment_name: str = Field(default=DEFAULT_EXPERIMENT)
    ui_url: str = Field(default=_DEFAULTS["mlflow_ui_url"].default, description="MLflow UI base URL for links")

    def client(self) -> MlflowClient:
        uri = self.resolved_tracking_uri()
        ensure_store(uri)
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def resolved_tracking_uri(self) -> str:
        """A run hands the resource over resolved; outside one (replay, the CLI) the field may still be
        the EnvVar, whose str() raises and whose characters are the variable's name, not the URI."""
        if isinstance(self.tracking_uri, dg.EnvVar):
            return self.process_config_and_initialize().tracking_uri
        return self.tracking_uri

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def version_url(self, version: str | int) -> str:
        return f"{self.ui_url.rstrip('/')}/#/models/{self.model_name}/versions/{version}"


class PromotionGate(dg.ConfigurableResource):
    """What a challenger must reach to become champion. Floors, contract and latency are hard
    (a miss is an error); the comparison with the champion is a paired test on the out-of-time
    evaluation set, and losing it is a normal outcome."""

    # Floors catch a broken model (wrong features, collapsed classes), not a slightly weaker one:
    # a two-year window of the sample (~1,000 spectra) gives ~0.965 accuracy, and losing to the
    # champion is the comparison's job.
    accuracy_floor: float = Field(default=_DEFAULTS["gate_accuracy_floor"].default)
    recall_floors: dict[str, float] = Field(
        # QSO's floor is lower: out of time, ~300 evaluation rows hold only 20-30 quasars, so one
        # missed quasar moves its recall 3-5 points (a sound model measured 0.80 on 2008-02-24's).
        default={"GALAXY": 0.90, "QSO": 0.75, "STAR": 0.90},
        description="minimum test recall per class",
    )
    single_row_latency_budget_ms: float = Field(default=_DEFAULTS["gate_single_row_budget_ms"].default,
                                                description="p95 of one-row predictions")
    batch_latency_budget_ms_per_1000_rows: float = Field(default=_DEFAULTS["gate_batch_budget_ms"].default)
    min_evaluation_rows: int = Field(
        default=_DEFAULTS["gate_min_evaluation_rows"].default,
        description="the evaluation set pools the window's most recent weeks until it holds this many rows")
    metric: str = Field(
        default=_DEFAULTS["gate_metric"].default,
        description=f"what the paired comparison decides on, one of {list(GATE_METRICS)}: accuracy by the exact "
        "McNemar test, the others by a paired bootstrap")
    alpha: float = Field(default=_DEFAULTS["gate_alpha"].default,
                         description="one-sided significance of the paired test")
    non_inferiority_margin: float = Field(
        default=_DEFAULTS["gate_margin"].default,
        description="how far (in the metric, 0.01 = 1 point) a challenger may trail after the champion degraded")
    bootstrap_resamples: int = Field(default=DEFAULT_RESAMPLES,
                                     description="resamples of the paired bootstrap (metrics other than accuracy)")
    min_comparison_rows: int = Field(
        default=30, description="fewest evaluation rows unseen by the champion for a meaningful comparison"
    )

    def validated(self) -> "PromotionGate":
        problems = []
        if not 0 <= self.accuracy_floor <= 1:
            problems.append(f"accuracy_floor must be in [0, 1], got {self.accuracy_floor}")
        unknown = sorted(set(self.recall_floors) - set(CLASSES))
        if unknown:
            problems.append(f"recall_floors names unknown classes {unknown}; classes are {list(CLASSES)}")
        if any(not 0 <= v <= 1 for v in self.recall_floors.values()):
            problems.append(f"recall floors must be in [0, 1], got {self.recall_floors}")
        if not 0 < self.alpha < 1 or not 0 <= self.non_inferiority_margin < 1:
            problems.append(f"alpha must be in (0, 1) and non_inferiority_margin in [0, 1), got {self.alpha} "
                            f"and {self.non_inferiority_margin}")
        if self.metric not in GATE_METRICS:
            problems.append(f"metric must be one of {list(GATE_METRICS)}, got {self.metric!r}")
        if self.bootstrap_resamples < 100:
            problems.append(f"bootstrap_resamples must be >= 100, got {self.bootstrap_resamples}")
        if self.min_comparison_rows < 1 or self.min_evaluation_rows < 1:
            problems.append("min_comparison_rows and min_evaluation_rows must be >= 1")
        if self.single_row_latency_budget_ms <= 0 or self.batch_latency_budget_ms_per_1000_rows <= 0:
            problems.append("latency budgets must be > 0")
        if problems:
            raise dg.Failure(description="invalid PromotionGate configuration: " + "; ".join(problems))
        return self


class TrainingDefaults(dg.ConfigurableResource):
    """Where model selection writes the XGBoost hyperparameters the challenger uses by default."""

    selection_defaults_path: str = Field(description="JSON written by the model_selection asset")


def training_resources(settings: CodeLocationSettings) -> dict:
    """The resources the training assets need (defaults: the project home)."""
    uri = settings.secret("mlflow_tracking_uri", settings.default_tracking_uri)
    return {
        "mlflow": mlflow_tracking_resource(uri, DEFAULT_EXPERIMENT, settings.artifact_root),
        "model_registry": ModelRegistry(tracking_uri=uri, model_name=settings.model_name,
                                        ui_url=settings.mlflow_ui_url),
        "promotion_gate": PromotionGate(
            accuracy_floor=settings.gate_accuracy_floor,
            single_row_latency_budget_ms=settings.gate_single_row_budget_ms,
            batch_latency_budget_ms_per_1000_rows=settings.gate_batch_budget_ms,
            min_evaluation_rows=settings.gate_min_evaluation_rows,
            metric=settings.gate_metric,
            alpha=settings.gate_alpha,
            non_inferiority_margin=settings.gate_margin,
        ),
        "training_defaults": TrainingDefaults(selection_defaults_path=str(settings.model_defaults_path)),
    }
