"""Plain helpers shared by every test folder (no fixtures here: the conftests hold those)."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from stellar_core.features import FEATURE_NAMES
from stellar_core.model_bundle import DEFAULT_MODEL_NAME, ModelBundle, new_contract
from stellar_mlflow.names import TAG_WINDOW_FIRST, TAG_WINDOW_LAST, SERVING_ARTIFACT_DIR


def free_port() -> int:
    """A loopback TCP port nothing listens on once this returns (the probe socket is closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def publish(tracking_uri: str, experiment_id: str, booster, window: tuple[str, str], metrics: dict,
            features: pd.DataFrame) -> str:
    """One model version through the training asset's own logging (log_model_and_bundle: the xgboost
    `model/` and the `serving/` bundle, its example and signature from `features`), the metrics linked
    to the model, registered from runs:/<run>/model with the training-window tags; returns the version."""
    import mlflow

    from stellar_mlflow.runs import log_model_and_bundle

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    card = {"name": DEFAULT_MODEL_NAME, "training_window": {"first_week": window[0], "last_week": window[1]},
            "metrics": metrics}
    with mlflow.start_run(experiment_id=experiment_id) as run:
        model_id = log_model_and_bundle(booster, features, card)
        mlflow.log_metrics(metrics, model_id=model_id)
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", DEFAULT_MODEL_NAME,
                                    tags={TAG_WINDOW_FIRST: window[0], TAG_WINDOW_LAST: window[1]})
    return str(version.version)


def publish_by_hand(tracking_uri: str, experiment_id: str, booster, window: tuple[str, str], metrics: dict) -> str:
    """One model version laid out as the training assets lay it out, but without their checks: for a
    booster they would refuse to log (one that does not answer three classes); returns the version."""
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    example = pd.DataFrame(np.full((2, len(FEATURE_NAMES)), 18.0, dtype=np.float32), columns=list(FEATURE_NAMES))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metrics(metrics)
        mlflow.xgboost.log_model(
            booster, name="model", input_example=example,
            signature=infer_signature(example, np.full((2, 3), 1 / 3, dtype=np.float32)),
            pip_requirements=["xgboost"],  # skip requirement inference: it spawns a slow subprocess
        )
        card = {"name": DEFAULT_MODEL_NAME, "training_window": {"first_week": window[0], "last_week": window[1]},
                "metrics": metrics}
        with tempfile.TemporaryDirectory() as tmp:
            ModelBundle(booster=booster, contract=new_contract(), card=card).save(Path(tmp) / SERVING_ARTIFACT_DIR)
            mlflow.log_artifacts(str(Path(tmp) / SERVING_ARTIFACT_DIR), artifact_path=SERVING_ARTIFACT_DIR)
        run_id = run.info.run_id
    version = mlflow.register_model(f"runs:/{run_id}/model", DEFAULT_MODEL_NAME).version
    client = MlflowClient(tracking_uri)
    client.set_model_version_tag(DEFAULT_MODEL_NAME, str(version), TAG_WINDOW_FIRST, window[0])
    client.set_model_version_tag(DEFAULT_MODEL_NAME, str(version), TAG_WINDOW_LAST, window[1])
    return str(version)
