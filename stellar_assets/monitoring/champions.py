"""The champion of each week's time, and what the drift report compares the week with: the
rows it trained on, as it predicts them. Loaded once per run and kept for its weeks."""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from stellar_assets.partitions import observation_weeks
from stellar_core.contract import CLASSES
from stellar_core.drift import ReferenceSample
from stellar_core.features import FEATURE_NAMES, feature_matrix
from stellar_core.model_bundle import ModelBundle
from stellar_mlflow.names import TAG_WINDOW_FIRST, TAG_WINDOW_LAST
from stellar_mlflow.registry import champion_among, load_bundle, model_versions


def predict_table(bundle: ModelBundle, table: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    if not len(table):
        return np.empty((0, len(CLASSES)), dtype=np.float32), []
    proba = bundle.predict_proba_features(feature_matrix(table))
    return proba, [CLASSES[k] for k in proba.argmax(axis=1)]


@dataclass(frozen=True)
class Reference:
    """A champion's training window as it predicts it: what its weeks are compared with."""

    features: pd.DataFrame
    sample: ReferenceSample  # the features cleaned and sorted once, for the weekly tests
    predicted: list[str]
    rows_in: int  # raw rows received in the window
    rejected: int  # of them, rows that did not become features
    window: tuple[str, str]
    accuracy: float | None  # on its out-of-time evaluation set


class _Recent(OrderedDict):
    """The few most recent entries: a process that runs many monitoring runs (the replay runs them in
    process) loads a champion's bundle and reference once, not once per run."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def keep(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


# By the champion's MLflow run id (unique across stores; a run's artifacts never change) and, for the
# reference, the asset store it was read from. A reference is the champion's training window as stored:
# re-ingesting those weeks in the same process is not expected while monitoring runs.
_BUNDLES = _Recent(4)
_REFERENCES = _Recent(4)


class Champions:
    """Champion versions and run metrics, loaded once per run (a run over many weeks lists the registry
    once: no promotion happens inside a monitoring run); bundles and references, once per process."""

    def __init__(self, client: MlflowClient, model_name: str):
        self.client, self.model_name = client, model_name
        self._versions: list[ModelVersion] | None = None
        self._metrics: dict[str, dict[str, float]] = {}

    def as_of(self, week: str) -> ModelVersion:
        """The champion that predicts `week` (registry.champion_among: it never saw the week)."""
        if self._versions is None:
            self._versions = model_versions(self.client, self.model_name)
        version = champion_among(self._versions, week)
        if version is None:
            raise dg.Failure(description=(
                f"no champion as of {week}: no promoted version of {self.model_name} trained only on weeks "
                f"before {week}. Run train_and_promote for an earlier week first."))
        return version

    def bundle(self, version: ModelVersion) -> ModelBundle:
        if version.run_id not in _BUNDLES:
            with tempfile.TemporaryDirectory(prefix="stellar-monitoring-") as tmp:
                bundle = load_bundle(self.client, version, tmp)
            # A week is tens to hundreds of rows: one thread. OpenMP's barrier across threads costs more
            # than the trees, and tens of milliseconds a call when another process holds the cores.
            bundle.booster.set_param({"nthread": 1})
            _BUNDLES.keep(version.run_id, bundle)
        return _BUNDLES[version.run_id]

    def run_metrics(self, version: ModelVersion) -> dict[str, float]:
        """The metrics of the MLflow run that trained `version` (its out-of-time evaluation)."""
        key = str(version.version)
        if key not in self._metrics:
            self._metrics[key] = dict(self.client.get_run(version.run_id).data.metrics)
        return self._metrics[key]

    def reference(self, version: ModelVersion, store) -> Reference:
        """The champion's training window from the asset store (the IO manager's stored partitions)."""
        key = (version.run_id, type(store).__name__, repr(store))
        if key not in _REFERENCES:
            first, last = (version.tags or {}).get(TAG_WINDOW_FIRST), version.tags[TAG_WINDOW_LAST]
            weeks = observation_weeks.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
            features = store.stored_table(dg.AssetKey("observation_features"), weeks)
            raw = store.stored_table(dg.AssetKey("raw_observations"), weeks)
            if features.empty:
                raise dg.Failure(description=f"no stored observation_features for v{version.version}'s training "
                                 f"window {first}..{last}: ingest those weeks first")
            _, predicted = predict_table(self.bundle(version), features)
            accuracy = self.run_metrics(version).get("accuracy")
            _REFERENCES.keep(key, Reference(features, ReferenceSample.of(features, FEATURE_NAMES), predicted,
                                            len(raw), max(0, len(raw) - len(features)), (first, last), accuracy))
        return _REFERENCES[key]
