"""The steps of `challenger_model`, each small: parameters, training and measurement, MLflow
logging and registration, the gate's blocking problems, and what the UI shows."""

from __future__ import annotations

import time
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
import xgboost as xgb

from stellar_assets.training.resources import ModelRegistry, PromotionGate
from stellar_core.contract import CLASSES
from stellar_core.features import LABEL, feature_matrix, label_indices
from stellar_core.model_selection import read_defaults
from stellar_core.training import (
    Evaluation,
    TrainingInputError,
    XGBoostParams,
    evaluate,
    feature_importance,
    floor_problems,
    latency_problems,
    measure_latency,
    predict_proba,
    train_booster,
)
from stellar_mlflow.names import (
    TAG_DAGSTER_RUN,
    TAG_GATE,
    TAG_PARAMS_SOURCE,
    TAG_PARTITION,
    TAG_WINDOW_FIRST,
    TAG_WINDOW_LAST,
)
from stellar_mlflow.registry import contract_problems_of_version
from stellar_mlflow.runs import log_evaluation_artifacts, log_model_and_bundle

LATENCY_REPEATS_DEFAULT = 200


def _challenger_config_fields() -> dict:
    # One field per XGBoostParams field, unset by default: the run's config overrides model
    # selection's defaults, which override the built-ins (XGBoostParams.from_layers).
    hints = {"int": int, "float": float, "str": str}
    fields = {name: (hints[type(value).__name__] | None, None)
              for name, value in XGBoostParams().as_dict().items()}
    fields["latency_single_row_repeats"] = (int, LATENCY_REPEATS_DEFAULT)
    return fields


# The run config of challenger_model: XGBoostParams' fields, derived from it (never a hand-kept mirror).
_FIELDS = _challenger_config_fields()
ChallengerConfig = type("ChallengerConfig", (dg.Config,), {
    "__annotations__": {name: kind for name, (kind, _) in _FIELDS.items()},
    **{name: default for name, (_, default) in _FIELDS.items()},
    "__doc__": "XGBoost hyperparameters. Unset values come from model selection's defaults file, then built-ins.",
    "__module__": __name__,
})


def resolve_params(config: dg.Config, defaults_path: str) -> tuple[XGBoostParams, dict[str, str]]:
    """The parameters to train with and where each came from (config, model_selection, built-in)."""
    overrides = {k: v for k, v in config.model_dump().items() if k in XGBoostParams.field_names()}
    try:
        selected = read_defaults(defaults_path)
        params = XGBoostParams.from_layers(selected, overrides)
    except TrainingInputError as exc:
        raise dg.Failure(description=str(exc)) from exc
    sources = {k: ("config" if overrides.get(k) is not None else "model_selection" if k in (selected or {})
                   else "built-in") for k in XGBoostParams.field_names()}
    return params, sources


@dataclass
class TrainedChallenger:
    booster: xgb.Booster
    probabilities: np.ndarray
    evaluation: Evaluation
    latency: dict
    importance: dict[str, float]
    train_seconds: float


def train_and_measure(train: pd.DataFrame, test: pd.DataFrame, params: XGBoostParams,
                      latency_repeats: int) -> TrainedChallenger:
    started = time.perf_counter()
    booster = train_booster(train, params)
    train_seconds = time.perf_counter() - started
    probabilities = predict_proba(booster, test)
    return TrainedChallenger(
        booster=booster, probabilities=probabilities,
        evaluation=evaluate(probabilities, label_indices(test[LABEL])),
        latency=measure_latency(booster, feature_matrix(test), latency_repeats),
        importance=feature_importance(booster), train_seconds=train_seconds)


@dataclass(frozen=True)
class Lineage:
    week: str
    window_first: str
    dagster_run_id: str
    mlflow_run_id: str


def log_and_register(mlflow, registry: ModelRegistry, lineage: Lineage, params: XGBoostParams,
                     sources: dict[str, str], trained: TrainedChallenger, train: pd.DataFrame,
                     test: pd.DataFrame):
    """Params, metrics, plots, the model and its serving bundle into the active MLflow run; then a
    new registered version carrying its training window. Returns the ModelVersion."""
    week, first = lineage.week, lineage.window_first
    mlflow.set_tags({TAG_PARTITION: week, TAG_WINDOW_FIRST: first, TAG_WINDOW_LAST: week,
                     TAG_PARAMS_SOURCE: ",".join(sorted(set(sources.values())))})
    mlflow.log_params({**params.as_dict(), "train_rows": len(train), "test_rows": len(test),
                       "window_first_week": first, "window_last_week": week})
    log_evaluation_artifacts(trained.evaluation, trained.probabilities, test, trained.importance, train)
    card = {
        "name": registry.model_name,
        "training_window": {"first_week": first, "last_week": week},
        "metrics": trained.evaluation.metrics(),
        "latency": trained.latency,
        "params": params.as_dict(),
        "lineage": {"dagster_run_id": lineage.dagster_run_id, "dagster_partition": week,
                    "mlflow_run_id": lineage.mlflow_run_id},
    }
    model_id = log_model_and_bundle(trained.booster, train, card)
    # After the model, with its id: logged once, and linked to it (see log_model_and_bundle).
    mlflow.log_metrics({**trained.evaluation.metrics(), **{f"latency_{k}": v for k, v in trained.latency.items()},
                        "train_seconds": trained.train_seconds}, model_id=model_id)
    # The fluent API registers through the process-wide registry URI, which other code in
    # the same process may have pointed elsewhere: make it this resource's registry.
    mlflow.set_registry_uri(registry.resolved_tracking_uri())
    return mlflow.register_model(
        f"runs:/{lineage.mlflow_run_id}/model", registry.model_name,
        tags={TAG_WINDOW_FIRST: first, TAG_WINDOW_LAST: week, TAG_PARTITION: week,
              TAG_DAGSTER_RUN: lineage.dagster_run_id},
    )


def blocking_problems(gate: PromotionGate, registry: ModelRegistry, version, trained: TrainedChallenger,
                      mlflow) -> dict[str, list[str]]:
    """The gate's hard checks, on what was stored (the registered version's artifacts and signature);
    the verdict is tagged on the version and the run."""
    client = registry.client()
    problems = {
        "quality_floors": floor_problems(trained.evaluation, gate.accuracy_floor, gate.recall_floors),
        "serving_contract": contract_problems_of_version(client, registry.model_name, version),
        "latency_budget": latency_problems(trained.latency, gate.single_row_latency_budget_ms,
                                           gate.batch_latency_budget_ms_per_1000_rows),
    }
    found = [p for listed in problems.values() for p in listed]
    status = "passed" if not found else "failed: " + "; ".join(found)
    client.set_model_version_tag(registry.model_name, version.version, TAG_GATE, status[:5000])
    mlflow.set_tag(TAG_GATE, status[:5000])
    if found:
        # The run records the failed gate, not a green "Finished" (dagster_mlflow_run finds it ended).
        mlflow.end_run(status="FAILED")
    return problems


def evaluation_markdown(evaluation: Evaluation) -> str:
    lines = ["| class | precision | recall | ROC AUC | support |", "|---|---|---|---|---|"]
    for cls in CLASSES:
        auc = evaluation.roc_auc.get(cls)
        lines.append(f"| {cls} | {evaluation.precision[cls]:.4f} | {evaluation.recall[cls]:.4f} | "
                     f"{'n/a' if auc is None else f'{auc:.4f}'} | {evaluation.support[cls]} |")
    lines += ["", "confusion (rows true, columns predicted: " + ", ".join(CLASSES) + ")", ""]
    lines += ["| | " + " | ".join(CLASSES) + " |", "|---" * (len(CLASSES) + 1) + "|"]
    for cls, row in zip(CLASSES, evaluation.confusion):
        lines.append(f"| {cls} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def challenger_metadata(registry: ModelRegistry, version, lineage: Lineage, experiment_id: str,
                        params: XGBoostParams, sources: dict, trained: TrainedChallenger, train_rows: int) -> dict:
    evaluation, latency = trained.evaluation, trained.latency
    return {
        "model_version": dg.MetadataValue.text(str(version.version)),
        "mlflow_run": dg.MetadataValue.url(registry.run_url(experiment_id, lineage.mlflow_run_id)),
        "mlflow_version": dg.MetadataValue.url(registry.version_url(version.version)),
        "mlflow_run_id": lineage.mlflow_run_id,
        "accuracy": evaluation.accuracy,
        "macro_f1": evaluation.macro_f1,
        "qso_recall": evaluation.recall["QSO"],
        "roc_auc_ovr": evaluation.roc_auc_ovr if evaluation.roc_auc_ovr is not None else float("nan"),
        "per_class": dg.MetadataValue.md(evaluation_markdown(evaluation)),
        "latency_single_row_ms_p95": latency["single_row_ms_p95"],
        "latency_batch_ms_per_1000_rows": latency["batch_ms_per_1000_rows"],
        "training_window": f"{lineage.window_first}..{lineage.week}",
        "train_rows": train_rows,
        "params": dg.MetadataValue.json({"values": params.as_dict(), "source": sources}),
    }


def blocking_check_results(gate: PromotionGate, problems: dict[str, list[str]], trained: TrainedChallenger,
                           version) -> list[dg.AssetCheckResult]:
    evaluation, latency = trained.evaluation, trained.latency
    floors, contract, slow = problems["quality_floors"], problems["serving_contract"], problems["latency_budget"]
    return [
        dg.AssetCheckResult(
            check_name="quality_floors", passed=not floors, severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(floors) or "all floors met",
            metadata={"accuracy": evaluation.accuracy, "accuracy_floor": gate.accuracy_floor,
                      **{f"recall_{c}": evaluation.recall[c] for c in CLASSES},
                      "recall_floors": dg.MetadataValue.json(gate.recall_floors), "test_rows": evaluation.rows}),
        dg.AssetCheckResult(
            check_name="serving_contract", passed=not contract, severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(contract) or "contract matches the prediction server",
            metadata={"problems": dg.MetadataValue.json(contract), "model_version": str(version.version)}),
        dg.AssetCheckResult(
            check_name="latency_budget", passed=not slow, severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(slow) or "within budget",
            metadata={"single_row_ms_p95": latency["single_row_ms_p95"],
                      "single_row_budget_ms": gate.single_row_latency_budget_ms,
                      "batch_ms_per_1000_rows": latency["batch_ms_per_1000_rows"],
                      "batch_budget_ms_per_1000_rows": gate.batch_latency_budget_ms_per_1000_rows}),
    ]


GATE_BLOCKED = "blocked by the gate"


def blocked_decision(version: str, problems: dict[str, list[str]], champion_version: str | None) -> str:
    """The gate's decision on a challenger that failed a blocking check, as a person reads it."""
    reasons = "; ".join(f"{name}: {'; '.join(listed)}" for name, listed in problems.items() if listed)
    stays = f"champion v{champion_version} stays" if champion_version else "there is no champion yet"
    return f"challenger v{version} not promoted: {GATE_BLOCKED} — {reasons}; {stays}"


def gate_failure(record: dict, checks: list[dg.AssetCheckResult], beats_champion: dg.AssetCheckResult,
                 champion_version: str | None, run_url: str) -> dg.Failure:
    """The step failure of a challenger the gate blocked, raised once every check result is yielded: the
    step fails with the decision and its figures instead of Dagster's generic "blocking asset check failed"
    error. No retries: the same rows and parameters give the same verdict."""
    failed = {name: listed for name, listed in record["gate_problems"].items() if listed}
    metadata = {
        "decision": GATE_BLOCKED,
        "challenger_version": dg.MetadataValue.text(record["version"]),
        "champion_version": dg.MetadataValue.text(str(champion_version)),
        "failed_checks": dg.MetadataValue.json(failed),
        "mlflow_run": dg.MetadataValue.url(run_url),
    }
    for result in checks:
        if not result.passed:
            metadata.update({f"{result.check_name}.{key}": value for key, value in result.metadata.items()})
    # Not blocking, and evaluated all the same: the comparison a person would look for next.
    metadata["beats_champion"] = beats_champion.description
    return dg.Failure(description=blocked_decision(record["version"], failed, champion_version),
                      metadata=metadata, allow_retries=False)
