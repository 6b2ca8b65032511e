"""Champion/challenger training on weekly partitions.

    observation_features[W-n+1 .. W] -> train_test_split[W] -> challenger_model[W] -> champion_model[W]
                                                                 |- quality_floors   (blocking, ERROR)
                                                                 |- serving_contract (blocking, ERROR)
                                                                 |- latency_budget   (blocking, ERROR)
                                                                 '- beats_champion   (WARN, not blocking)

A broken challenger fails a blocking check: the run fails and champion_model is
skipped. A challenger that loses to the champion only fails the WARN check:
champion_model runs, records "retained", and the run succeeds.
"""


import time

import dagster as dg
from dagster_mlflow.resources import MlFlow
import numpy as np
import pandas as pd

from stellar_core.contract import CLASSES
from stellar_core.features import LABEL, feature_matrix, label_indices
from stellar_core.model_bundle import (
    TAG_DAGSTER_RUN,
    TAG_PARTITION,
    TAG_WINDOW_FIRST,
    TAG_WINDOW_LAST,
)
from stellar_core.model_selection import read_defaults
from stellar_core.registry import get_alias_version, mark_promoted, set_alias
from stellar_core.training import (
    Evaluation,
    TrainingInputError,
    XGBoostParams,
    class_mix,
    evaluate,
    feature_importance,
    floor_problems,
    latency_problems,
    measure_latency,
    predict_proba,
    split_parts,
    split_seed,
    stratified_split,
    train_booster,
)
from stellar_core.weeks import Week
from stellar_assets.partitions import observation_weeks
from stellar_assets.settings import CodeLocationSettings, load_settings
from stellar_assets.resources.io_managers import NOT_GUARDED, ROW_COUNT_FIELD
from stellar_assets.training.gate import compare_with_incumbent
from stellar_assets.training.mlflow_glue import (
    dagster_mlflow_run,
    log_evaluation_artifacts,
    contract_problems_of_version,
    log_model_and_bundle,
)
from stellar_assets.training.resources import ModelRegistry, PromotionGate, TrainingDefaults

DEFAULT_WINDOW_WEEKS = CodeLocationSettings.model_fields["training_window_weeks"].default
TAG_GATE = "gate_status"
TAG_DECISION = "promotion_decision"
CHECK_NAMES = ("quality_floors", "serving_contract", "latency_budget", "beats_champion")


def window_mapping(window_weeks: int | None) -> dg.TimeWindowPartitionMapping:
    """The trailing window ending at W (inclusive); 'all history' = every week up to W, never after."""
    if window_weeks is not None and window_weeks < 1:
        raise ValueError(f"window_weeks must be >= 1 or None (all history), got {window_weeks}")
    span = window_weeks if window_weeks is not None else len(observation_weeks.get_partition_keys())
    return dg.TimeWindowPartitionMapping(
        start_offset=-(span - 1), end_offset=0,
        # the first weeks of the survey have shorter windows instead of failing
        allow_nonexistent_upstream_partitions=True,
    )


def window_first_week(week: str, window_weeks: int | None) -> str:
    """The first week of the window ending at `week`, clipped to the first partition (as the mapping does)."""
    first_partition = observation_weeks.get_first_partition_key()
    if window_weeks is None:
        return first_partition
    start = (Week.of(week) - (window_weeks - 1)).key
    return max(start, first_partition)


class SplitConfig(dg.Config):
    test_fraction: float = 0.2
    min_rows: int = 50


class ChallengerConfig(dg.Config):
    """XGBoost hyperparameters. Unset values come from model selection's defaults file, then built-ins."""

    n_estimators: int | None = None
    max_depth: int | None = None
    learning_rate: float | None = None
    subsample: float | None = None
    colsample_bytree: float | None = None
    min_child_weight: float | None = None
    reg_lambda: float | None = None
    class_weighting: str | None = None
    seed: int | None = None
    nthread: int | None = None
    latency_single_row_repeats: int = 200


def _mix_table(mix: dict[str, dict[str, int]]) -> str:
    lines = ["| split | " + " | ".join(CLASSES) + " | total |", "|---" * (len(CLASSES) + 2) + "|"]
    for name, counts in mix.items():
        lines.append(f"| {name} | " + " | ".join(str(counts[c]) for c in CLASSES) + f" | {sum(counts.values())} |")
    return "\n".join(lines)


def _evaluation_markdown(evaluation: Evaluation) -> str:
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


def build_training_assets(window_weeks: int | None = DEFAULT_WINDOW_WEEKS) -> list[dg.AssetsDefinition]:
    """The three partitioned training assets for a trailing window of `window_weeks` (None: all history)."""
    mapping = window_mapping(window_weeks)
    window_label = "all history" if window_weeks is None else f"{window_weeks} weeks"

    @dg.asset(
        name="train_test_split",
        partitions_def=observation_weeks,
        ins={"observation_features": dg.AssetIn(partition_mapping=mapping)},
        # Its size follows the training window's setting; the weeks it reads are guarded themselves.
        metadata={ROW_COUNT_FIELD: NOT_GUARDED},
        group_name="training",
        kinds={"pandas"},
        description=f"Features of the trailing window ({window_label}) ending at week W, split stratified by "
        "class with a seed derived from W: a re-run gives the same split.",
    )
    def train_test_split(context: dg.AssetExecutionContext, config: SplitConfig,
                         observation_features: pd.DataFrame) -> dg.Output:
        week = context.partition_key
        window_keys = context.asset_partition_keys_for_input("observation_features")
        if len(observation_features) < config.min_rows:
            raise dg.Failure(
                description=f"the window {window_keys[0]}..{window_keys[-1]} holds {len(observation_features)} rows, "
                f"fewer than min_rows={config.min_rows}: materialize observation_features for these weeks "
                "or train at a later week",
            )
        seed = split_seed(week)
        try:
            table = stratified_split(observation_features, config.test_fraction, seed)
        except TrainingInputError as exc:
            raise dg.Failure(description=f"cannot split week {week}: {exc}") from exc
        train, test = split_parts(table)
        weeks_with_data = sorted(table["week"].unique())
        mix = {"train": class_mix(train), "test": class_mix(test)}
        return dg.Output(table, metadata={
            "rows_train": len(train),
            "rows_test": len(test),
            "class_mix": dg.MetadataValue.md(_mix_table(mix)),
            "class_mix_json": dg.MetadataValue.json(mix),
            "window_first_week": window_keys[0],
            "window_last_week": window_keys[-1],
            "window_weeks": len(window_keys),
            "weeks_with_data": len(weeks_with_data),
            "split_seed": seed,
            "test_fraction": config.test_fraction,
        })

    @dg.asset(
        name="challenger_model",
        partitions_def=observation_weeks,
        ins={"train_test_split": dg.AssetIn()},
        group_name="training",
        kinds={"xgboost", "mlflow"},
        check_specs=[
            dg.AssetCheckSpec("quality_floors", asset="challenger_model", blocking=True,
                              description="test accuracy and per-class recall at or above the configured floors"),
            dg.AssetCheckSpec("serving_contract", asset="challenger_model", blocking=True,
                              description="inputs, feature order, dtype and classes are what the prediction server expects"),
            dg.AssetCheckSpec("latency_budget", asset="challenger_model", blocking=True,
                              description="single-row p95 and batch inference latency within budget"),
            dg.AssetCheckSpec("beats_champion", asset="challenger_model", blocking=False,
                              description="beats or ties the champion on the same test rows (losing is normal: champion stays)"),
        ],
        description="XGBoost (hist) trained on the split's training rows, evaluated on its test rows, "
        "logged to MLflow and registered as a new version.",
    )
    def challenger_model(context: dg.AssetExecutionContext, config: ChallengerConfig, train_test_split: pd.DataFrame,
                         mlflow: dg.ResourceParam[MlFlow],
                         model_registry: ModelRegistry, promotion_gate: PromotionGate,
                         training_defaults: TrainingDefaults):
        week = context.partition_key
        tracking = mlflow  # dagster-mlflow's resource: the mlflow API bound to this Dagster run's MLflow run
        # Enter at once: whatever fails below must end the MLflow run the resource opened.
        with dagster_mlflow_run(tracking, f"challenger {week}", "challenger_model") as run:
            gate = promotion_gate.validated()
            train, test = split_parts(train_test_split)
            if len(test) == 0 or len(train) == 0:
                raise dg.Failure(description=f"split of {week} has {len(train)} training and {len(test)} test rows")
            window_first = window_first_week(week, window_weeks)
            overrides = {k: v for k, v in config.model_dump().items() if k in XGBoostParams.field_names()}
            try:
                selected = read_defaults(training_defaults.selection_defaults_path)
                params = XGBoostParams.from_layers(selected, overrides)
            except TrainingInputError as exc:
                raise dg.Failure(description=str(exc)) from exc
            sources = {k: ("config" if overrides.get(k) is not None else "model_selection" if k in (selected or {}) else "built-in")
                       for k in XGBoostParams.field_names()}

            started = time.perf_counter()
            booster = train_booster(train, params)
            train_seconds = time.perf_counter() - started
            probabilities = predict_proba(booster, test)
            evaluation = evaluate(probabilities, label_indices(test[LABEL]))
            latency = measure_latency(booster, feature_matrix(test), config.latency_single_row_repeats)
            importance = feature_importance(booster)

            client = model_registry.client()
            run_id = run.info.run_id
            experiment_id = run.info.experiment_id
            mlflow.set_tags({
                TAG_PARTITION: week, TAG_WINDOW_FIRST: window_first, TAG_WINDOW_LAST: week,
                "params_source": ",".join(sorted(set(sources.values()))),
            })
            mlflow.log_params({**params.as_dict(), "train_rows": len(train), "test_rows": len(test),
                               "window_first_week": window_first, "window_last_week": week})
            log_evaluation_artifacts(evaluation, probabilities, test, importance, train)
            card = {
                "name": model_registry.model_name,
                "training_window": {"first_week": window_first, "last_week": week},
                "metrics": evaluation.metrics(),
                "latency": latency,
                "params": params.as_dict(),
                "lineage": {"dagster_run_id": context.run_id, "dagster_partition": week, "mlflow_run_id": run_id},
            }
            model_id = log_model_and_bundle(booster, train, card)
            # After the model, with its id: logged once, and linked to it (see log_model_and_bundle).
            mlflow.log_metrics({**evaluation.metrics(), **{f"latency_{k}": v for k, v in latency.items()},
                                "train_seconds": train_seconds}, model_id=model_id)
            # The fluent API registers through the process-wide registry URI, which other code in
            # the same process may have pointed elsewhere: make it this resource's registry.
            mlflow.set_registry_uri(model_registry.tracking_uri)
            version = mlflow.register_model(
                f"runs:/{run_id}/model", model_registry.model_name,
                tags={TAG_WINDOW_FIRST: window_first, TAG_WINDOW_LAST: week,
                      TAG_PARTITION: week, TAG_DAGSTER_RUN: context.run_id},
            )
            # The gate, on what was stored: the registered version's artifacts and signature.
            floors = floor_problems(evaluation, gate.accuracy_floor, gate.recall_floors)
            contract = contract_problems_of_version(client, model_registry.model_name, version)
            slow = latency_problems(latency, gate.single_row_latency_budget_ms, gate.batch_latency_budget_ms_per_1000_rows)
            gate_problems = floors + contract + slow
            status = "passed" if not gate_problems else "failed: " + "; ".join(gate_problems)
            client.set_model_version_tag(model_registry.model_name, version.version, TAG_GATE, status[:5000])
            mlflow.set_tag(TAG_GATE, status[:5000])

        record = {
            "model_name": model_registry.model_name,
            "version": str(version.version),
            "run_id": run_id,
            "experiment_id": experiment_id,
            "partition": week,
            "window_first_week": window_first,
            "window_last_week": week,
            "params": params.as_dict(),
            "params_source": sources,
            "evaluation": evaluation.as_dict(),
            "latency": latency,
            "gate_problems": {"quality_floors": floors, "serving_contract": contract, "latency_budget": slow},
        }
        yield dg.Output(record, metadata={
            "model_version": dg.MetadataValue.text(str(version.version)),
            "mlflow_run": dg.MetadataValue.url(model_registry.run_url(experiment_id, run_id)),
            "mlflow_version": dg.MetadataValue.url(model_registry.version_url(version.version)),
            "mlflow_run_id": run_id,
            "accuracy": evaluation.accuracy,
            "macro_f1": evaluation.macro_f1,
            "qso_recall": evaluation.recall["QSO"],
            "roc_auc_ovr": evaluation.roc_auc_ovr if evaluation.roc_auc_ovr is not None else float("nan"),
            "per_class": dg.MetadataValue.md(_evaluation_markdown(evaluation)),
            "latency_single_row_ms_p95": latency["single_row_ms_p95"],
            "latency_batch_ms_per_1000_rows": latency["batch_ms_per_1000_rows"],
            "training_window": f"{window_first}..{week}",
            "train_rows": len(train),
            "params": dg.MetadataValue.json({"values": params.as_dict(), "source": sources}),
        })

        yield dg.AssetCheckResult(
            check_name="quality_floors", passed=not floors, severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(floors) or "all floors met",
            metadata={"accuracy": evaluation.accuracy, "accuracy_floor": gate.accuracy_floor,
                      **{f"recall_{c}": evaluation.recall[c] for c in CLASSES},
                      "recall_floors": dg.MetadataValue.json(gate.recall_floors), "test_rows": evaluation.rows},
        )
        yield dg.AssetCheckResult(
            check_name="serving_contract", passed=not contract, severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(contract) or "contract matches the prediction server",
            metadata={"problems": dg.MetadataValue.json(contract), "model_version": str(version.version)},
        )
        yield dg.AssetCheckResult(
            check_name="latency_budget", passed=not slow, severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(slow) or "within budget",
            metadata={"single_row_ms_p95": latency["single_row_ms_p95"],
                      "single_row_budget_ms": gate.single_row_latency_budget_ms,
                      "batch_ms_per_1000_rows": latency["batch_ms_per_1000_rows"],
                      "batch_budget_ms_per_1000_rows": gate.batch_latency_budget_ms_per_1000_rows},
        )
        outcome = compare_with_incumbent(client, model_registry.model_name, version, test, week,
                                         gate.comparison_metric, gate.tie_tolerance, gate.min_comparison_rows)
        yield dg.AssetCheckResult(
            check_name="beats_champion", passed=outcome.comparison.challenger_wins,
            severity=dg.AssetCheckSeverity.WARN, description=outcome.comparison.reason,
            metadata=_comparison_metadata(outcome),
        )

    @dg.asset(
        name="champion_model",
        partitions_def=observation_weeks,
        ins={"challenger_model": dg.AssetIn(), "train_test_split": dg.AssetIn()},
        group_name="training",
        kinds={"mlflow"},
        description="The promotion decision at W: the challenger becomes champion (MLflow alias) only if it "
        "passed every blocking check and beats or ties the champion on the same test rows.",
    )
    def champion_model(context: dg.AssetExecutionContext, challenger_model: dict, train_test_split: pd.DataFrame,
                       model_registry: ModelRegistry, promotion_gate: PromotionGate) -> dg.Output:
        gate = promotion_gate.validated()
        week = context.partition_key
        record = challenger_model
        blocking = {name: problems for name, problems in record["gate_problems"].items() if problems}
        if blocking:
            # Materialized on its own (not behind its checks in one run): refuse all the same.
            raise dg.Failure(description=f"challenger v{record['version']} failed the gate: {blocking}")
        client = model_registry.client()
        name = model_registry.model_name
        challenger = client.get_model_version(name, record["version"])
        _, test = split_parts(train_test_split)
        outcome = compare_with_incumbent(client, name, challenger, test, week, gate.comparison_metric,
                                         gate.tie_tolerance, gate.min_comparison_rows)
        previous_alias = get_alias_version(client, name)
        incumbent = outcome.incumbent
        alias_note = ""
        if outcome.comparison.challenger_wins:
            mark_promoted(client, name, challenger.version, week)
            newer = previous_alias is not None and (previous_alias.tags or {}).get(TAG_WINDOW_LAST, "") > week
            if newer:
                # A backfill over history: record the promotion at W, but never move production back in time.
                alias_note = (f"alias stays at v{previous_alias.version} (trained through "
                              f"{previous_alias.tags.get(TAG_WINDOW_LAST)}, later than {week})")
            else:
                set_alias(client, name, challenger.version)
            decision = "promoted"
            champion_version = str(challenger.version)
            summary = f"promoted v{challenger.version}: {outcome.comparison.reason}"
        else:
            decision = "retained"
            champion_version = str(incumbent.version) if incumbent else None
            summary = (f"retained v{champion_version}, challenger v{challenger.version} lost"
                       + (f" by {-outcome.comparison.delta:.4f} {outcome.comparison.metric}" if outcome.comparison.delta is not None else "")
                       + f": {outcome.comparison.reason}")
        if alias_note:
            summary += f"; {alias_note}"
        client.set_model_version_tag(name, challenger.version, TAG_DECISION, f"{decision} at {week}")
        client.set_tag(challenger.run_id, TAG_DECISION, decision)
        client.set_tag(challenger.run_id, "promotion_reason", summary[:5000])
        alias_now = get_alias_version(client, name)
        champion_run_url = None
        if champion_version is not None:
            champion_mv = client.get_model_version(name, champion_version)
            champion_run = client.get_run(champion_mv.run_id)
            champion_run_url = model_registry.run_url(champion_run.info.experiment_id, champion_mv.run_id)
        context.log.info(summary)
        metadata = {
            "decision": decision,
            "summary": summary,
            "champion_version": dg.MetadataValue.text(str(champion_version)),
            "alias_version": dg.MetadataValue.text(str(alias_now.version) if alias_now else "None"),
            "challenger_version": dg.MetadataValue.text(str(challenger.version)),
            "previous_champion_version": dg.MetadataValue.text(str(incumbent.version) if incumbent else "None"),
            "previous_alias_version": dg.MetadataValue.text(str(previous_alias.version) if previous_alias else "None"),
            "comparison": dg.MetadataValue.json(_jsonable(outcome.metadata())),
            "metric_deltas": dg.MetadataValue.json(_jsonable(outcome.comparison.deltas)),
            "challenger_run": dg.MetadataValue.url(model_registry.run_url(record["experiment_id"], record["run_id"])),
            "challenger_accuracy": record["evaluation"]["accuracy"],
            "challenger_qso_recall": record["evaluation"]["recall"]["QSO"],
        }
        if champion_run_url:
            metadata["champion_run"] = dg.MetadataValue.url(champion_run_url)
        if outcome.comparison.delta is not None:
            metadata["delta"] = outcome.comparison.delta
        return dg.Output({
            "decision": decision, "week": week, "champion_version": champion_version,
            "alias_version": str(alias_now.version) if alias_now else None,
            "challenger_version": str(challenger.version),
            "previous_champion_version": str(incumbent.version) if incumbent else None,
            "comparison": _jsonable(outcome.metadata()), "summary": summary,
        }, metadata=metadata)

    return [train_test_split, challenger_model, champion_model]


def _comparison_metadata(outcome) -> dict:
    c = outcome.comparison
    metadata = {
        "metric": c.metric,
        "challenger_score": c.challenger_score,
        "champion_version": dg.MetadataValue.text(str(outcome.incumbent.version) if outcome.incumbent else "None"),
        "rows_compared": outcome.rows_compared,
        "rows_excluded_seen_by_champion": outcome.rows_excluded_seen_by_champion,
        "deltas": dg.MetadataValue.json(_jsonable(c.deltas)),
    }
    if c.champion_score is not None:
        metadata["champion_score"] = c.champion_score
        metadata["delta"] = c.delta
    if outcome.note:
        metadata["note"] = outcome.note
    return metadata


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


TRAINING_ASSETS = build_training_assets(load_settings().training_window_weeks)
