"""The serving-contract check against real registered versions: a wrong feature order is caught."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from stellar_mlflow.registry import contract_problems_of_version
from stellar_mlflow.runs import ensure_experiment
from stellar_core.features import FEATURE_NAMES, build_features, feature_matrix, label_indices
from stellar_mlflow.names import SERVING_ARTIFACT_DIR
from stellar_core.model_bundle import ModelBundle
from stellar_core.contract import serving_contract


def _register(client: MlflowClient, tracking_uri: str, model_name: str, names: list[str], artifact_root: str):
    """Log and register a small model whose features are named and ordered `names`."""
    table = build_features(pd.read_csv(Path(__file__).resolve().parents[3] / "shared" / "data"
                                       / "sdss17_sample.csv.gz", nrows=300))[0]
    X = pd.DataFrame(feature_matrix(table), columns=list(FEATURE_NAMES))[names]
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "nthread": 1, "max_depth": 2},
                        xgb.DMatrix(X.to_numpy(), label=label_indices(table["label"]), feature_names=names), 3)
    experiment_id = ensure_experiment(client, "contract-tests", artifact_root)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        example = X.head(3).astype(np.float32)
        mlflow.xgboost.log_model(booster, name="model", input_example=example, pip_requirements=["xgboost"],
                                 signature=infer_signature(example, booster.inplace_predict(example.to_numpy())))
        with tempfile.TemporaryDirectory() as tmp:
            ModelBundle(booster, serving_contract(tuple(names))).save(Path(tmp) / SERVING_ARTIFACT_DIR)
            mlflow.log_artifacts(str(Path(tmp) / SERVING_ARTIFACT_DIR), SERVING_ARTIFACT_DIR)
    return mlflow.register_model(f"runs:/{run.info.run_id}/model", model_name)


def test_contract_problems_name_what_differs(store, model_name):
    client = MlflowClient(store.tracking_uri)
    good = _register(client, store.tracking_uri, model_name, list(FEATURE_NAMES), store.artifact_root)
    assert contract_problems_of_version(client, model_name, good) == []

    swapped = list(FEATURE_NAMES)
    swapped[0], swapped[1] = swapped[1], swapped[0]  # u and g exchanged: silently wrong predictions if served
    bad = _register(client, store.tracking_uri, model_name, swapped, store.artifact_root)
    problems = contract_problems_of_version(client, model_name, bad)
    assert any(p.startswith("features: model has ['g', 'u'") for p in problems), problems
    assert any("MLflow signature inputs ['g', 'u'" in p for p in problems), problems
