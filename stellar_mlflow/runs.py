"""MLflow runs as stellar writes them: the store and experiment, one run per asset of a Dagster
run, a challenger's model, bundle and evaluation, a report run (drift, serving).

The fluent calls go to the run dagster-mlflow's resource made active for the
Dagster run; registry calls go through an explicit MlflowClient.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.entities import RunStatus
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from stellar_core.contract import CLASSES
from stellar_core.features import FEATURE_NAMES, LABEL, feature_matrix, label_indices
from stellar_core.model_bundle import ModelBundle, booster_probabilities, new_contract
from stellar_core.plots import confusion_figure, curve_figures, importance_figure
from stellar_core.training import Evaluation, describe_training_data
from stellar_mlflow.names import (
    CONFUSION_PLOT,
    IMPORTANCE_ARTIFACT,
    IMPORTANCE_PLOT,
    MODEL_ARTIFACT,
    PRECISION_RECALL_PLOT,
    ROC_PLOT,
    SERVING_ARTIFACT_DIR,
    TAG_ASSET,
    TAG_DAGSTER_RUN,
    TAG_RUN_NAME,
    TEST_EVALUATION_ARTIFACT,
    TRAINING_IDS_ARTIFACT,
    TRAINING_STATISTICS_ARTIFACT,
)

# Requirements are given explicitly (no inference to warn about), and MLflow 3 registering
# `runs:/<id>/model` through the LoggedModel it created is expected: keep both quiet.
for _noisy in ("mlflow.utils.environment", "mlflow.utils.uv_utils", "mlflow.tracking._model_registry.fluent"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)


def ensure_store(tracking_uri: str) -> None:
    """A SQLite store needs its folder to exist before MLflow opens it."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """The experiment id, creating it with artifacts under `artifact_root` (not ./mlruns in the cwd)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
    return client.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def dagster_mlflow_run(tracking, run_name: str, asset_name: str):
    """The MLflow run of this Dagster run for one asset, ended when the asset is done.

    Works around dagster-mlflow keeping its fluent run open after success: the
    package ends it only through the `end_mlflow_on_run_finished` hook, which
    asset jobs and `materialize()` cannot attach, and which reacts to every
    step's events rather than the run's end (dagster issue 21872). Left open,
    the run stays RUNNING forever, and the next Dagster run in the same process
    finds it "already active" and logs into it, overwriting its dagster_run_id tag.
    """
    active = mlflow.active_run()
    if active is not None and mlflow.get_run(active.info.run_id).data.tags.get(TAG_ASSET):
        # Another asset of this Dagster run already logged here (dagster-mlflow resumes the run
        # per step): give this asset a run of its own, so params of the two never collide.
        mlflow.end_run()
        active = None
    if active is None:
        active = mlflow.start_run(experiment_id=tracking.experiment.experiment_id,
                                  tags={TAG_DAGSTER_RUN: tracking.dagster_run_id})
    mlflow.set_tags({TAG_RUN_NAME: run_name, TAG_ASSET: asset_name})
    try:
        yield active
    except BaseException:
        mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        mlflow.end_run()


def log_evaluation_artifacts(evaluation: Evaluation, probabilities: np.ndarray, test: pd.DataFrame,
                             importance: dict[str, float], train: pd.DataFrame) -> None:
    for name, fig in (
        (CONFUSION_PLOT, confusion_figure(evaluation, "test set")),
        *zip((ROC_PLOT, PRECISION_RECALL_PLOT),
             curve_figures(probabilities, label_indices(test[LABEL]))),
        (IMPORTANCE_PLOT, importance_figure(importance)),
    ):
        mlflow.log_figure(fig, name)
        plt.close(fig)
    mlflow.log_dict(evaluation.as_dict(), TEST_EVALUATION_ARTIFACT)
    mlflow.log_dict(importance, IMPORTANCE_ARTIFACT)
    mlflow.log_table(describe_training_data(train), TRAINING_STATISTICS_ARTIFACT)
    # The ids a later champion comparison must leave out: rows this model has seen.
    mlflow.log_text("\n".join(sorted(train["object_id"].astype(str))), TRAINING_IDS_ARTIFACT)


def log_model_and_bundle(booster: xgb.Booster, train: pd.DataFrame, card: dict) -> str:
    """MLflow's xgboost flavour under `model/` and the pickle-free serving bundle under `serving/`.

    Returns the logged model's id. Log the run's metrics after this call, with that id: MLflow 3
    links metrics logged before a model to it by logging them again, which a PostgreSQL store
    refuses as duplicate keys (and the link is then lost)."""
    example = pd.DataFrame(feature_matrix(train.head(5)), columns=list(FEATURE_NAMES)).astype(np.float32)
    output = pd.DataFrame(booster_probabilities(booster, example.to_numpy()), columns=list(CLASSES))
    signature = infer_signature(example, output)
    # Explicit requirements: MLflow's inference imports half the environment (seconds per model).
    requirements = [f"xgboost=={xgb.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
    info = mlflow.xgboost.log_model(booster, name=MODEL_ARTIFACT, signature=signature, input_example=example,
                                    model_format="ubj", pip_requirements=requirements)
    bundle = ModelBundle(booster=booster, contract=new_contract(), card=card)
    with tempfile.TemporaryDirectory(prefix="stellar-bundle-") as tmp:
        bundle.save(Path(tmp) / SERVING_ARTIFACT_DIR)
        mlflow.log_artifacts(str(Path(tmp) / SERVING_ARTIFACT_DIR), SERVING_ARTIFACT_DIR)
    return info.model_id


def log_report_run(client: MlflowClient, experiment_id: str, run_name: str, tags: dict, metrics: dict,
                   documents: dict[str, dict], images: dict[str, bytes] | None = None) -> tuple[str, str]:
    """One MLflow run holding the report (JSON documents, PNG images given as bytes); returns
    (run_id, artifact_uri)."""
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    try:
        for key, value in metrics.items():
            if value is not None and np.isfinite(value):
                client.log_metric(run_id, key, float(value))
        for path, document in documents.items():
            client.log_dict(run_id, document, path)
        for path, image in (images or {}).items():
            with tempfile.TemporaryDirectory(prefix="stellar-plot-") as tmp:
                target = Path(tmp) / Path(path).name
                target.write_bytes(image)
                parent = str(Path(path).parent)
                client.log_artifact(run_id, str(target), None if parent == "." else parent)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return run_id, run.info.artifact_uri
