"""The model-selection experiment: nested MLflow runs, and defaults the challenger picks up."""

from __future__ import annotations

import json

import dagster as dg
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from stellar_assets.ingestion import INGESTION_ASSETS
from stellar_assets.training import model_selection
from stellar_core.features import build_features, feature_matrix, label_indices
from stellar_core.model_selection import (
    FAMILIES,
    cross_validate,
    read_defaults,
    sample_candidates,
)
from stellar_core.training import TrainingInputError
from tests.dagster_support import metadata_of
from tests.training.scenario import EARLY_WEEK


def test_cross_validation_is_stratified_and_repeatable(sdss_sample):
    table = build_features(sdss_sample.head(600))[0]
    X, y = feature_matrix(table), label_indices(table["label"])
    params = sample_candidates("logistic_regression", 1, seed=3)[0]
    first = cross_validate("logistic_regression", params, X, y, folds=5, seed=3)
    again = cross_validate("logistic_regression", params, X, y, folds=5, seed=3)
    assert len(first.fold_accuracy) == 5 and first.fold_accuracy == again.fold_accuracy
    assert 0.5 < first.accuracy_mean <= 1.0 and first.accuracy_std >= 0.0
    with pytest.raises(TrainingInputError, match="unknown model family"):
        sample_candidates("svm", 1, seed=3)


def test_selection_tracks_nested_runs_and_writes_defaults_the_challenger_uses(store, model_name, tmp_path):
    defaults = tmp_path / "model_defaults.json"
    result = dg.materialize(
        [*INGESTION_ASSETS, model_selection],
        selection=[model_selection],
        resources=store.resources(model_name, defaults),
        run_config={"ops": {"model_selection": {"config": {
            "candidates_per_family": 1, "folds": 3, "max_rows": 400, "seed": 5, "max_trees": 50}}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    meta = metadata_of(result, "model_selection")
    assert meta["rows"] == 400 and meta["best_family"] in FAMILIES
    assert meta["chosen_xgboost_params"]["n_estimators"] <= 50

    client = MlflowClient(store.tracking_uri)
    parent = client.get_run(meta["mlflow_run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(run.data.tags["family"] for run in children) == sorted(FAMILIES)
    assert all(np.isfinite(run.data.metrics["cv_accuracy_mean"]) for run in children)
    assert parent.info.status == "FINISHED"

    document = json.loads(defaults.read_text())
    chosen = read_defaults(defaults)
    assert document["family"] == "xgboost" and chosen == meta["chosen_xgboost_params"]

    # The challenger takes the chosen values as defaults; values given in config still win.
    trained = store.train(model_name, EARLY_WEEK, {"n_estimators": 20, "latency_single_row_repeats": 10},
                          defaults_path=defaults)
    assert trained.success
    params = metadata_of(trained, "challenger_model")["params"]
    assert params["values"]["n_estimators"] == 20 and params["source"]["n_estimators"] == "config"
    assert params["values"]["max_depth"] == chosen["max_depth"]
    assert params["source"]["max_depth"] == "model_selection"


def test_unreadable_defaults_are_an_error_naming_the_file(store, model_name, tmp_path):
    broken = tmp_path / "model_defaults.json"
    broken.write_text("{not json")
    result = store.train(model_name, EARLY_WEEK, {"n_estimators": 5}, defaults_path=broken)
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert str(broken) in failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    # The MLflow run dagster-mlflow opened for the failed Dagster run is closed as FAILED, not left active.
    assert mlflow.active_run() is None
    runs = MlflowClient(store.tracking_uri).search_runs(
        [mlflow.get_experiment_by_name("stellar-tests").experiment_id],
        filter_string=f"tags.dagster_run_id = '{result.run_id}'")
    assert [run.info.status for run in runs] == ["FAILED"]


def test_two_tracked_assets_in_one_run_get_their_own_mlflow_runs(store, model_name, tmp_path):
    from tests.training.scenario import STRONG

    result = dg.materialize(
        [*INGESTION_ASSETS, *store.training_assets, model_selection],
        selection=[model_selection, *store.training_assets[:2]],  # the split and the challenger
        resources=store.resources(model_name, tmp_path / "defaults.json"),
        partition_key=EARLY_WEEK,
        run_config={"ops": {
            "challenger_model": {"config": STRONG},
            "model_selection": {"config": {"families": ["xgboost"], "candidates_per_family": 1, "folds": 2,
                                           "max_rows": 200, "max_trees": 20, "write_defaults": False}},
        }},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    client = MlflowClient(store.tracking_uri)
    runs = client.search_runs([mlflow.get_experiment_by_name("stellar-tests").experiment_id],
                              filter_string=f"tags.dagster_run_id = '{result.run_id}'")
    top_level = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.data.tags["stellar_asset"] for r in top_level) == ["challenger_model", "model_selection"]
    assert all(r.info.status == "FINISHED" for r in runs)
