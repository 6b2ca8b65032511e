"""The model-selection experiment: one unpartitioned asset, materialized on demand.

Compares model families with stratified k-fold cross-validation and a random
hyperparameter search over every stored week. Each candidate is a nested MLflow
run under the Dagster run's MLflow run. The best XGBoost candidate's parameters
become the challenger's defaults (explicit challenger config still wins).
"""


import dagster as dg
from dagster_mlflow.resources import MlFlow
import numpy as np
import pandas as pd

from stellar_core.features import LABEL, feature_matrix, label_indices
from stellar_core.model_selection import FAMILIES, best, cross_validate, sample_candidates, write_defaults
from stellar_core.training import TrainingInputError
from stellar_mlflow.names import LEADERBOARD_ARTIFACT, TAG_ASSET, TAG_BEST_FAMILY, TAG_FAMILY
from stellar_mlflow.runs import dagster_mlflow_run
from stellar_assets.training.resources import TrainingDefaults


class ModelSelectionConfig(dg.Config):
    families: list[str] = list(FAMILIES)
    candidates_per_family: int = 4
    folds: int = 5
    seed: int = 17
    max_rows: int | None = None  # subsample (stratified by the seed) to bound the run time
    n_jobs: int = 2
    max_trees: int | None = None  # cap n_estimators of tree families, for quick searches
    write_defaults: bool = True


@dg.asset(
    group_name="training",
    kinds={"scikitlearn", "xgboost", "mlflow"},
    ins={"observation_features": dg.AssetIn(metadata={"allow_missing_partitions": True})},
    description="Model-selection experiment: families compared by stratified k-fold CV with a random search, "
    "tracked as nested MLflow runs; writes the challenger's default hyperparameters.",
)
def model_selection(context: dg.AssetExecutionContext, config: ModelSelectionConfig,
                    observation_features: pd.DataFrame, training_defaults: TrainingDefaults,
                    mlflow: dg.ResourceParam[MlFlow]) -> dg.Output:
    # Enter at once: whatever fails below must end the MLflow run dagster-mlflow's resource opened.
    with dagster_mlflow_run(mlflow, "model selection", "model_selection") as parent:
        _check_families(config)
        table = _selection_rows(observation_features, config)
        mlflow.log_params({"rows": len(table), "folds": config.folds, "families": ",".join(config.families),
                           "candidates_per_family": config.candidates_per_family, "seed": config.seed,
                           "max_trees": config.max_trees})
        results = [result for family in config.families for result in _search_family(context, mlflow, config,
                                                                                       family, table)]
        overall = best(results)
        chosen = best(results, "xgboost") if "xgboost" in config.families else None
        mlflow.log_metrics({"best_cv_accuracy_mean": overall.accuracy_mean, "best_cv_accuracy_std": overall.accuracy_std})
        mlflow.set_tags({TAG_BEST_FAMILY: overall.family})
        leaderboard = pd.DataFrame([r.summary() for r in results]).sort_values("cv_accuracy_mean", ascending=False)
        leaderboard["params"] = leaderboard["params"].map(str)
        mlflow.log_table(leaderboard, LEADERBOARD_ARTIFACT)
        parent_run_id = parent.info.run_id

    written = None
    if chosen is not None and config.write_defaults:
        written = write_defaults(training_defaults.selection_defaults_path, chosen, overall,
                                 {"mlflow_run_id": parent_run_id, "dagster_run_id": context.run_id, "rows": len(table)})
    return dg.Output(
        {"best": overall.summary(), "chosen_xgboost": chosen.summary() if chosen else None,
         "per_family": {family: best(results, family).summary() for family in config.families},
         "defaults_path": str(written) if written else None},
        metadata=_selection_metadata(leaderboard, overall, chosen, written, len(table), parent_run_id),
    )


def _check_families(config: ModelSelectionConfig) -> None:
    unknown = sorted(set(config.families) - set(FAMILIES))
    if unknown or not config.families:
        raise dg.Failure(description=f"families must be a non-empty subset of {list(FAMILIES)}; unknown: {unknown}")
    if "xgboost" not in config.families and config.write_defaults:
        raise dg.Failure(description="write_defaults needs 'xgboost' among the families: the challenger trains XGBoost")


def _selection_rows(features: pd.DataFrame, config: ModelSelectionConfig) -> pd.DataFrame:
    if len(features) == 0:
        raise dg.Failure(description="no observation_features stored: materialize some weeks first")
    table = features.sort_values("object_id", kind="mergesort").reset_index(drop=True)
    if config.max_rows is not None and len(table) > config.max_rows:
        table = table.sample(n=config.max_rows, random_state=config.seed).reset_index(drop=True)
    return table


def _search_family(context, mlflow, config: ModelSelectionConfig, family: str, table: pd.DataFrame) -> list:
    """Cross-validate the family's sampled candidates, each in a nested MLflow run."""
    X, y = feature_matrix(table), label_indices(table[LABEL])
    results = []
    for k, params in enumerate(sample_candidates(family, config.candidates_per_family, config.seed, config.max_trees)):
        with mlflow.start_run(run_name=f"{family} #{k + 1}", nested=True):
            mlflow.set_tags({TAG_FAMILY: family, TAG_ASSET: "model_selection"})
            mlflow.log_params({"family": family, **{n: str(v) for n, v in params.items()}})
            try:
                result = cross_validate(family, params, X, y, config.folds, config.seed, config.n_jobs)
            except TrainingInputError as exc:
                raise dg.Failure(description=f"cross-validation of {family} failed: {exc}") from exc
            summary = result.summary()
            mlflow.log_metrics({"cv_accuracy_mean": summary["cv_accuracy_mean"],
                                "cv_accuracy_std": summary["cv_accuracy_std"],
                                "cv_macro_f1_mean": summary["cv_macro_f1_mean"],
                                "cv_qso_recall_mean": summary["cv_qso_recall_mean"], "cv_seconds": summary["seconds"]})
            for fold, accuracy in enumerate(result.fold_accuracy):
                mlflow.log_metric("fold_accuracy", accuracy, step=fold)
            results.append(result)
        context.log.info("%s #%d: CV accuracy %.4f ± %.4f", family, k + 1, result.accuracy_mean, result.accuracy_std)
    return results


def _selection_metadata(leaderboard: pd.DataFrame, overall, chosen, written, rows: int, run_id: str) -> dict:
    lines = ["| family | CV accuracy | ± std | QSO recall | params |", "|---|---|---|---|---|"]
    for _, row in leaderboard.iterrows():
        lines.append(f"| {row.family} | {row.cv_accuracy_mean:.4f} | {row.cv_accuracy_std:.4f} | "
                     f"{row.cv_qso_recall_mean:.4f} | `{row.params}` |")
    return {
        "leaderboard": dg.MetadataValue.md("\n".join(lines)),
        "best_family": overall.family,
        "best_cv_accuracy": overall.accuracy_mean,
        "best_cv_accuracy_std": overall.accuracy_std,
        "chosen_xgboost_params": dg.MetadataValue.json(chosen.params if chosen else {}),
        "defaults_written_to": dg.MetadataValue.path(str(written)) if written else "not written",
        "rows": rows,
        "mlflow_run_id": run_id,
        "xgboost_gap_to_best": float(np.round(overall.accuracy_mean - chosen.accuracy_mean, 6)) if chosen else float("nan"),
    }
