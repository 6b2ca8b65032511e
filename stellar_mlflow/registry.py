"""The MLflow model registry as stellar uses it: publish, promote, find, download.

Not pure logic (it talks to MLflow), but free of Dagster so that the prediction
server shares it with the training assets. Conventions:

- one registered model (default `stellar-classifier`); the alias `champion` is
  what production serves (registry stages are deprecated);
- each version carries tags with its training window (first and last week),
  and, once promoted, the week partition it was promoted at;
- the champion "as of" week W is the most recently promoted version whose
  training window ended before W: it never saw W.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from stellar_core.features import FEATURE_NAMES
from stellar_core.model_bundle import ContractMismatch, ModelBundle
from stellar_mlflow.names import (
    CHAMPION_ALIAS,
    SERVING_ARTIFACT_DIR,
    TAG_PROMOTED_AT,
    TAG_WINDOW_LAST,
    TRAINING_IDS_ARTIFACT,
)


def get_alias_version(client: MlflowClient, model_name: str, alias: str = CHAMPION_ALIAS) -> ModelVersion | None:
    """The version behind `alias`, or None when the model or the alias does not exist yet."""
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if _is_not_found(exc):
            return None
        raise


def set_alias(client: MlflowClient, model_name: str, version: str | int, alias: str = CHAMPION_ALIAS) -> None:
    client.set_registered_model_alias(model_name, alias, str(version))


def mark_promoted(client: MlflowClient, model_name: str, version: str | int, week: str) -> None:
    client.set_model_version_tag(model_name, str(version), TAG_PROMOTED_AT, week)


def champion_as_of(client: MlflowClient, model_name: str, week: str) -> ModelVersion | None:
    """The champion to use for predicting week `week` (ISO date of its Sunday): see champion_among."""
    return champion_among(model_versions(client, model_name), week)


def champion_among(versions: list[ModelVersion], week: str) -> ModelVersion | None:
    """Among promoted versions whose training window ended strictly before `week`,
    the one promoted at the latest week. Works the same in a backfill over
    history, whatever order the promotions ran in."""
    best: ModelVersion | None = None
    for version in versions:
        tags = version.tags or {}
        promoted_at = tags.get(TAG_PROMOTED_AT)
        last_week = tags.get(TAG_WINDOW_LAST)
        if not promoted_at or not last_week or last_week >= week:
            continue
        if best is None or (promoted_at, int(version.version)) > (best.tags[TAG_PROMOTED_AT], int(best.version)):
            best = version
    return best


def download_bundle(client: MlflowClient, version: ModelVersion, destination: str | Path | None = None) -> Path:
    """Fetch a version's `serving/` artifacts (booster, contract, card) to a local folder."""
    destination = Path(destination or tempfile.mkdtemp(prefix=f"stellar-model-v{version.version}-"))
    destination.mkdir(parents=True, exist_ok=True)
    local = client.download_artifacts(version.run_id, SERVING_ARTIFACT_DIR, str(destination))
    return Path(local)


def load_bundle(client: MlflowClient, version: ModelVersion, destination: str | Path | None = None) -> ModelBundle:
    return ModelBundle.load(download_bundle(client, version, destination))


def model_versions(client: MlflowClient, model_name: str) -> list[ModelVersion]:
    """Every version of the model, all pages."""
    versions: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(f"name = '{model_name}'", max_results=1000, page_token=token)
        versions.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return versions


def _is_not_found(exc: MlflowException) -> bool:
    code = getattr(exc, "error_code", "") or ""
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE") or "not found" in str(exc).lower()


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
