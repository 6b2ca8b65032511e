"""Champion/challenger training on weekly partitions.

    observation_features[W-n+1 .. W] -> train_test_split[W] -> challenger_model[W] -> champion_model[W]
                                                                 |- quality_floors   (blocking, ERROR)
                                                                 |- serving_contract (blocking, ERROR)
                                                                 |- latency_budget   (blocking, ERROR)
                                                                 '- beats_champion   (WARN, not blocking)

A broken challenger fails a blocking check: the run fails and champion_model is
skipped. The step fails with a dg.Failure stating the gate's decision ("challenger vN
not promoted: blocked by the gate — <check>: <why>; champion vM stays"), the failed
checks' figures as its metadata. A challenger that loses to the champion only fails
the WARN check: champion_model runs, records "retained", and the run succeeds. Each
asset's steps live beside it: challenger.py, gate.py (the comparison), decision.py.
"""

import dagster as dg
import pandas as pd
from dagster_mlflow.resources import MlFlow

from stellar_assets.partitions import observation_weeks
from stellar_assets.resources.io_managers import NOT_GUARDED, ROW_COUNT_FIELD
from stellar_assets.settings import CodeLocationSettings, load_settings
from stellar_assets.training.challenger import (
    ChallengerConfig,
    Lineage,
    blocking_check_results,
    blocked_decision,
    blocking_problems,
    challenger_metadata,
    gate_failure,
    log_and_register,
    resolve_params,
    train_and_measure,
)
from stellar_assets.training.decision import apply_decision, comparison_check_metadata, decision_output
from stellar_assets.training.gate import compare_with_incumbent
from stellar_assets.training.resources import ModelRegistry, PromotionGate, TrainingDefaults
from stellar_core.contract import CLASSES
from stellar_assets.run_tags import is_degradation_retrain
from stellar_core.promotion import EvaluationWeeks, PromotionInputError, select_evaluation_weeks
from stellar_core.training import TrainingInputError, class_mix, out_of_time_split, split_parts
from stellar_core.weeks import Week
from stellar_mlflow.registry import get_alias_version
from stellar_mlflow.runs import dagster_mlflow_run

DEFAULT_WINDOW_WEEKS = CodeLocationSettings.model_fields["training_window_weeks"].default
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
    min_rows: int = 50  # fewest rows in the window worth training on


def _mix_table(mix: dict[str, dict[str, int]]) -> str:
    lines = ["| split | " + " | ".join(CLASSES) + " | total |", "|---" * (len(CLASSES) + 2) + "|"]
    for name, counts in mix.items():
        lines.append(f"| {name} | " + " | ".join(str(counts[c]) for c in CLASSES) + f" | {sum(counts.values())} |")
    return "\n".join(lines)


def _evaluation_weeks(features: pd.DataFrame, window_keys: list[str], min_rows: int) -> EvaluationWeeks:
    """The window's most recent weeks pooled back to `min_rows` rows; the earlier weeks must remain to train on."""
    counts = features["week"].astype(str).value_counts()
    try:
        evaluation = select_evaluation_weeks([(key, int(counts.get(key, 0))) for key in window_keys], min_rows)
    except PromotionInputError as exc:
        raise dg.Failure(description=str(exc)) from exc
    if evaluation.rows == len(features):
        raise dg.Failure(description=(
            f"the window {window_keys[0]}..{window_keys[-1]} holds {len(features)} rows: all of them are needed for "
            f"the {min_rows}-row out-of-time evaluation set and none are left to train on; widen the training "
            "window or lower the promotion gate's min_evaluation_rows"))
    return evaluation


def build_training_assets(window_weeks: int | None = DEFAULT_WINDOW_WEEKS) -> list[dg.AssetsDefinition]:
    """The three partitioned training assets for a trailing window of `window_weeks` (None: all history)."""
    return [_train_test_split_asset(window_weeks), _challenger_asset(window_weeks), _champion_asset()]


def _train_test_split_asset(window_weeks: int | None) -> dg.AssetsDefinition:
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
        description=f"Features of the trailing window ({window_label}) ending at week W, split out of time: the "
        "most recent weeks, pooled back to the gate's minimum evaluation rows, are the test set; earlier weeks train.",
    )
    def train_test_split(context: dg.AssetExecutionContext, config: SplitConfig, promotion_gate: PromotionGate,
                         observation_features: pd.DataFrame) -> dg.Output:
        week = context.partition_key
        window_keys = context.asset_partition_keys_for_input("observation_features")
        if len(observation_features) < config.min_rows:
            raise dg.Failure(
                description=f"the window {window_keys[0]}..{window_keys[-1]} holds {len(observation_features)} rows, "
                f"fewer than min_rows={config.min_rows}: materialize observation_features for these weeks "
                "or train at a later week",
            )
        evaluation = _evaluation_weeks(observation_features, window_keys, promotion_gate.min_evaluation_rows)
        try:
            table = out_of_time_split(observation_features, evaluation.weeks)
        except TrainingInputError as exc:
            raise dg.Failure(description=f"cannot split week {week}: {exc}") from exc
        train, test = split_parts(table)
        mix = {"train": class_mix(train), "test": class_mix(test)}
        return dg.Output(table, metadata={
            "rows_train": len(train),
            "rows_test": len(test),
            "class_mix": dg.MetadataValue.md(_mix_table(mix)),
            "class_mix_json": dg.MetadataValue.json(mix),
            "window_first_week": window_keys[0],
            "window_last_week": window_keys[-1],
            "window_weeks": len(window_keys),
            "weeks_with_data": int(table["week"].nunique()),
            "evaluation_first_week": evaluation.weeks[0],
            "evaluation_weeks": len(evaluation.weeks),
            "evaluation_reason": evaluation.reason,
        })

    return train_test_split


def _challenger_asset(window_weeks: int | None) -> dg.AssetsDefinition:
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
                              description="better than the champion on the same out-of-time rows by an exact one-sided McNemar "
                              "test (after a degradation: ahead and non-inferior within the margin); a tie or a "
                              "loss keeps the champion, a normal outcome"),
        ],
        description="XGBoost (hist) trained on the split's training rows, evaluated on its test rows, "
        "logged to MLflow and registered as a new version.",
    )
    def challenger_model(context: dg.AssetExecutionContext, config: ChallengerConfig, train_test_split: pd.DataFrame,
                         mlflow: dg.ResourceParam[MlFlow],
                         model_registry: ModelRegistry, promotion_gate: PromotionGate,
                         training_defaults: TrainingDefaults):
        week = context.partition_key
        # Enter at once: whatever fails below must end the MLflow run dagster-mlflow's resource opened.
        with dagster_mlflow_run(mlflow, f"challenger {week}", "challenger_model") as run:
            gate = promotion_gate.validated()
            train, test = split_parts(train_test_split)
            if len(test) == 0 or len(train) == 0:
                raise dg.Failure(description=f"split of {week} has {len(train)} training and {len(test)} test rows")
            lineage = Lineage(week, window_first_week(week, window_weeks), context.run_id, run.info.run_id)
            params, sources = resolve_params(config, training_defaults.selection_defaults_path)
            trained = train_and_measure(train, test, params, config.latency_single_row_repeats)
            version = log_and_register(mlflow, model_registry, lineage, params, sources, trained, train, test)
            problems = blocking_problems(gate, model_registry, version, trained, mlflow)
        record = {
            "model_name": model_registry.model_name, "version": str(version.version), "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id, "partition": week, "window_first_week": lineage.window_first,
            "window_last_week": week, "params": params.as_dict(), "params_source": sources,
            "evaluation": trained.evaluation.as_dict(), "latency": trained.latency, "gate_problems": problems,
        }
        yield dg.Output(record, metadata=challenger_metadata(model_registry, version, lineage, run.info.experiment_id,
                                                             params, sources, trained, len(train)))
        checks = blocking_check_results(gate, problems, trained, version)
        yield from checks
        outcome = compare_with_incumbent(model_registry.client(), model_registry.model_name, version, test, week,
                                         gate, is_degradation_retrain(context.run.tags))
        verdict = dg.AssetCheckResult(
            check_name="beats_champion", passed=outcome.promote,
            severity=dg.AssetCheckSeverity.WARN, description=outcome.reason,
            metadata=comparison_check_metadata(outcome),
        )
        yield verdict
        if any(problems.values()):
            # After every check result: the step's failure is the gate's decision, not Dagster's generic one.
            champion = str(outcome.incumbent.version) if outcome.incumbent else None
            raise gate_failure(record, checks, verdict, champion,
                               model_registry.run_url(run.info.experiment_id, run.info.run_id))

    return challenger_model


def _champion_asset() -> dg.AssetsDefinition:
    @dg.asset(
        name="champion_model",
        partitions_def=observation_weeks,
        ins={"challenger_model": dg.AssetIn(), "train_test_split": dg.AssetIn()},
        group_name="training",
        kinds={"mlflow"},
        description="The promotion decision at W: the challenger becomes champion (MLflow alias) only if it "
        "passed every blocking check and the paired test on the out-of-time evaluation rows (beats_champion).",
    )
    def champion_model(context: dg.AssetExecutionContext, challenger_model: dict, train_test_split: pd.DataFrame,
                       model_registry: ModelRegistry, promotion_gate: PromotionGate) -> dg.Output:
        gate = promotion_gate.validated()
        week = context.partition_key
        record = challenger_model
        blocking = {name: problems for name, problems in record["gate_problems"].items() if problems}
        client = model_registry.client()
        if blocking:
            # Materialized on its own (not behind its checks in one run): refuse all the same, in the
            # words of the run the checks blocked.
            alias = get_alias_version(client, model_registry.model_name)
            raise dg.Failure(description=blocked_decision(record["version"], blocking, alias and alias.version),
                             metadata={"failed_checks": dg.MetadataValue.json(blocking)}, allow_retries=False)
        challenger = client.get_model_version(model_registry.model_name, record["version"])
        _, test = split_parts(train_test_split)
        outcome = compare_with_incumbent(client, model_registry.model_name, challenger, test, week, gate,
                                         is_degradation_retrain(context.run.tags))
        decided = apply_decision(client, model_registry.model_name, challenger, outcome, week)
        context.log.info(decided.summary)
        return decision_output(model_registry, client, challenger, record, outcome, decided, week)

    return champion_model


TRAINING_ASSETS = build_training_assets(load_settings().training_window_weeks)
