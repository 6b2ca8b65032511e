"""What a challenger leaves in MLflow: params, metrics, plots, statistics, the model, the version.

The fluent calls go to the run dagster-mlflow's resource made active for this
Dagster run; registry calls go through an explicit MlflowClient.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xgboost as xgb  # noqa: E402
from mlflow.entities import RunStatus  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from sklearn.metrics import auc, precision_recall_curve, roc_curve  # noqa: E402

from stellar_core.contract import CLASSES  # noqa: E402
from stellar_core.features import FEATURE_NAMES, LABEL, feature_matrix, label_indices  # noqa: E402
from stellar_core.model_bundle import SERVING_ARTIFACT_DIR, ContractMismatch, ModelBundle, new_contract  # noqa: E402
from stellar_core.registry import download_bundle  # noqa: E402
from stellar_core.training import Evaluation, describe_training_data  # noqa: E402

TRAINING_IDS_ARTIFACT = "training/object_ids.txt"

# Requirements are given explicitly (no inference to warn about), and MLflow 3 registering
# `runs:/<id>/model` through the LoggedModel it created is expected: keep both quiet.
for _noisy in ("mlflow.utils.environment", "mlflow.utils.uv_utils", "mlflow.tracking._model_registry.fluent"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)


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
    if active is not None and mlflow.get_run(active.info.run_id).data.tags.get("stellar_asset"):
        # Another asset of this Dagster run already logged here (dagster-mlflow resumes the run
        # per step): give this asset a run of its own, so params of the two never collide.
        mlflow.end_run()
        active = None
    if active is None:
        active = mlflow.start_run(experiment_id=tracking.experiment.experiment_id,
                                  tags={"dagster_run_id": tracking.dagster_run_id})
    mlflow.set_tags({"mlflow.runName": run_name, "stellar_asset": asset_name})
    try:
        yield active
    except BaseException:
        mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        mlflow.end_run()


def confusion_figure(evaluation: Evaluation, title: str):
    matrix = np.asarray(evaluation.confusion)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    fig.tight_layout()
    return fig


def curve_figures(probabilities: np.ndarray, labels: np.ndarray):
    """One-vs-rest ROC and precision-recall curves, one line per class present in the test set."""
    roc_fig, roc_ax = plt.subplots(figsize=(5, 4))
    pr_fig, pr_ax = plt.subplots(figsize=(5, 4))
    for k, cls in enumerate(CLASSES):
        positives = labels == k
        if not 0 < positives.sum() < len(labels):
            continue
        fpr, tpr, _ = roc_curve(positives, probabilities[:, k])
        roc_ax.plot(fpr, tpr, label=f"{cls} (AUC {auc(fpr, tpr):.3f})")
        precision, recall, _ = precision_recall_curve(positives, probabilities[:, k])
        pr_ax.plot(recall, precision, label=cls)
    roc_ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, one vs rest")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall, one vs rest")
    roc_ax.legend(loc="lower right")
    pr_ax.legend(loc="lower left")
    roc_fig.tight_layout()
    pr_fig.tight_layout()
    return roc_fig, pr_fig


def importance_figure(importance: dict[str, float]):
    names = sorted(importance, key=importance.get)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.barh(names, [importance[n] for n in names])
    ax.set_xlabel("share of total gain")
    ax.set_title("feature importance")
    fig.tight_layout()
    return fig


def log_evaluation_artifacts(evaluation: Evaluation, probabilities: np.ndarray, test: pd.DataFrame,
                             importance: dict[str, float], train: pd.DataFrame) -> None:
    for name, fig in (
        ("plots/confusion_matrix.png", confusion_figure(evaluation, "test set")),
        *zip(("plots/roc_ovr.png", "plots/precision_recall_ovr.png"),
             curve_figures(probabilities, label_indices(test[LABEL]))),
        ("plots/feature_importance.png", importance_figure(importance)),
    ):
        mlflow.log_figure(fig, name)
        plt.close(fig)
    mlflow.log_dict(evaluation.as_dict(), "evaluation/test_evaluation.json")
    mlflow.log_dict(importance, "evaluation/feature_importance.json")
    mlflow.log_table(describe_training_data(train), "training/feature_statistics.json")
    # The ids a later champion comparison must leave out: rows this model has seen.
    mlflow.log_text("\n".join(sorted(train["object_id"].astype(str))), TRAINING_IDS_ARTIFACT)


def log_model_and_bundle(booster: xgb.Booster, train: pd.DataFrame, card: dict) -> str:
    """MLflow's xgboost flavour under `model/` and the pickle-free serving bundle under `serving/`.

    Returns the logged model's id. Log the run's metrics after this call, with that id: MLflow 3
    links metrics logged before a model to it by logging them again, which a PostgreSQL store
    refuses as duplicate keys (and the link is then lost)."""
    example = pd.DataFrame(feature_matrix(train.head(5)), columns=list(FEATURE_NAMES)).astype(np.float32)
    probabilities = booster.inplace_predict(example.to_numpy())
    output = pd.DataFrame(np.asarray(probabilities).reshape(-1, len(CLASSES)), columns=list(CLASSES))
    signature = infer_signature(example, output)
    # Explicit requirements: MLflow's inference imports half the environment (seconds per model).
    requirements = [f"xgboost=={xgb.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
    info = mlflow.xgboost.log_model(booster, name="model", signature=signature, input_example=example,
                                    model_format="ubj", pip_requirements=requirements)
    bundle = ModelBundle(booster=booster, contract=new_contract(), card=card)
    with tempfile.TemporaryDirectory(prefix="stellar-bundle-") as tmp:
        bundle.save(Path(tmp) / SERVING_ARTIFACT_DIR)
        mlflow.log_artifacts(str(Path(tmp) / SERVING_ARTIFACT_DIR), SERVING_ARTIFACT_DIR)
    return info.model_id


def training_ids(client: MlflowClient, run_id: str) -> set[str] | None:
    """The object ids a registered model trained on, or None when its run did not record them."""
    with tempfile.TemporaryDirectory(prefix="stellar-ids-") as tmp:
        try:
            path = client.download_artifacts(run_id, TRAINING_IDS_ARTIFACT, tmp)
        except Exception:  # noqa: BLE001 - an older run without the artifact: the caller says so in metadata
            return None
        text = Path(path).read_text()
    return set(text.split("\n")) if text else set()


def contract_problems_of_version(client: MlflowClient, model_name: str, version) -> list[str]:
    """What the prediction server would object to in a registered version: its `serving/` bundle
    (inputs, feature order, dtype, classes, booster features) and its MLflow signature."""
    with tempfile.TemporaryDirectory(prefix="stellar-contract-") as tmp:
        try:
            problems = ModelBundle.load(download_bundle(client, version, tmp)).contract_problems()
        except ContractMismatch as exc:  # load() refuses a mismatching bundle outright
            problems = [str(exc)]
        except FileNotFoundError as exc:
            problems = [f"serving bundle missing: {exc}"]
    return problems + signature_problems(client, model_name, version.version)


def signature_problems(client: MlflowClient, model_name: str, version: str) -> list[str]:
    """How the registered MLflow model's signature differs from the 13 float32 features."""
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="stellar-mlmodel-") as tmp:
        try:
            path = download_artifacts(artifact_uri=f"models:/{model_name}/{version}/MLmodel", dst_path=tmp,
                                      tracking_uri=client.tracking_uri, registry_uri=client._registry_uri)
        except Exception as exc:  # noqa: BLE001 - reported as a contract problem, with the cause
            return [f"the registered MLflow model has no readable MLmodel: {exc}"]
        signature = Model.load(path).signature
    if signature is None:
        return ["the registered MLflow model has no signature"]
    inputs = signature.inputs.to_dict()
    names = [spec.get("name") for spec in inputs]
    problems = []
    if names != list(FEATURE_NAMES):
        problems.append(f"MLflow signature inputs {names} differ from {list(FEATURE_NAMES)}")
    dtypes = sorted({spec.get("type") for spec in inputs})
    if dtypes != ["float"]:
        problems.append(f"MLflow signature input types {dtypes}, expected float32 ('float') only")
    return problems
