"""Fixtures of the serving tests: a real MLflow registry (SQLite + local artifacts)
holding two champions-to-be trained on the shared SDSS sample, and real servers
on 127.0.0.1.

Models are published through the training asset's own logging (tests/support.py
publish): an MLflow run with the xgboost `model/` (pyfunc, 13 feature columns) and
the `serving/` bundle, registered as versions of `stellar-classifier` from
runs:/<run>/model, with training-window tags; the alias `champion` picks the one to serve.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stellar_core.contract import MODEL_INPUTS
from stellar_core.features import FEATURE_NAMES, build_features, feature_matrix, label_indices
from stellar_mlflow.names import CHAMPION_ALIAS
from stellar_core.model_bundle import DEFAULT_MODEL_NAME, ModelBundle, new_contract
from tests.support import free_port, publish

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network here: do not try to phone home


# Two models whose probabilities differ for every object: the swap test tells
# them apart by their answers, not only by the version they claim.
MODEL_PARAMS = {
    "1": ({"max_depth": 4, "eta": 0.3, "seed": 1}, 100, ("2014-01-05", "2016-12-25")),
    "2": ({"max_depth": 2, "eta": 0.1, "seed": 2}, 60, ("2015-01-04", "2017-12-31")),
}


def train_booster(features: pd.DataFrame, params: dict, rounds: int):
    import xgboost as xgb

    matrix = xgb.DMatrix(feature_matrix(features), label=label_indices(features["label"]),
                         feature_names=list(FEATURE_NAMES))
    return xgb.train({"objective": "multi:softprob", "num_class": 3, "tree_method": "hist", "nthread": 2, **params},
                     matrix, rounds)


@dataclass
class Registry:
    root: Path
    tracking_uri: str
    bundles: dict[str, ModelBundle] = field(default_factory=dict)
    windows: dict[str, tuple[str, str]] = field(default_factory=dict)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)

    def set_champion(self, version: str) -> None:
        self.client().set_registered_model_alias(DEFAULT_MODEL_NAME, CHAMPION_ALIAS, version)

    def remove_champion(self) -> None:
        self.client().delete_registered_model_alias(DEFAULT_MODEL_NAME, CHAMPION_ALIAS)

    def expected(self, version: str, inputs: np.ndarray) -> np.ndarray:
        """The in-process prediction of `version` for float32 [n, 6] raw inputs."""
        return self.bundles[version].predict_proba_inputs(inputs)


@pytest.fixture(scope="session")
def sample(sdss_sample) -> pd.DataFrame:
    return sdss_sample  # tests/conftest.py reads it once per session


@pytest.fixture(scope="session")
def sample_inputs(sample) -> np.ndarray:
    """float32 [n, 6] raw inputs of the cleaned sample (the rows a model may see)."""
    table, _ = build_features(sample)
    return np.ascontiguousarray(table.loc[:, list(MODEL_INPUTS)].to_numpy(dtype=np.float32))


@pytest.fixture(scope="session")
def registry(tmp_path_factory, sample) -> Registry:
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment_id = client.create_experiment("stellar-serving-tests", artifact_location=(root / "artifacts").as_uri())
    client.create_registered_model(DEFAULT_MODEL_NAME)
    features, _ = build_features(sample)
    reg = Registry(root=root, tracking_uri=uri)
    for expected_version, (params, rounds, window) in MODEL_PARAMS.items():
        booster = train_booster(features, params, rounds)
        version = publish(uri, experiment_id, booster, window, {"accuracy": 0.9, "log_loss": 0.2}, features)
        assert version == expected_version
        reg.bundles[version] = ModelBundle(booster=booster, contract=new_contract())
        reg.windows[version] = window
    reg.set_champion("1")
    return reg


@pytest.fixture(scope="session", autouse=True)
def mlflow_http_server(registry, tmp_path_factory):
    """A real `mlflow server` on the test registry, started when the session starts so its
    slow start-up overlaps other tests; test_real_mlflow_server_then_stopped uses (and stops) it."""
    import subprocess
    import sys

    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    log_path = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [str(Path(bin_dir) / "mlflow"), "server", "--backend-store-uri", registry.tracking_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        # MLflow 3 also starts a job runner with several worker processes (one
        # import of MLflow each): not needed for a registry, and heavy on 2 cores.
        env={**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
             "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # its own group: stop takes the workers too
    server = {"process": process, "url": f"http://127.0.0.1:{port}", "log": log_path,
              "stop": lambda: _stop_group(process)}
    yield server
    _stop_group(process)
    log.close()


def _stop_group(process) -> None:
    import signal
    import subprocess

    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def make_server(registry, tmp_path):
    """Start servers on 127.0.0.1 (free ports) against the test registry; stopped at teardown."""
    from stellar_serving.config import ServingConfig
    from stellar_serving.server import StellarServer

    servers = []

    def start(**overrides):
        settings = dict(grpc_host="127.0.0.1", grpc_port=0, metrics_host="127.0.0.1", metrics_port=0,
                        tracking_uri=registry.tracking_uri, cache_dir=str(tmp_path / "model-cache"),
                        poll_seconds=0.0, max_workers=8, shutdown_grace_seconds=1.0,
                        # Bit-for-bit XGBoost answers and no background compiles unless a test asks
                        # for the compiled predictor (tests/serving/test_compiled_predictor.py does).
                        compiled_predictor="off")
        settings.update(overrides)
        server = StellarServer(ServingConfig(**settings)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace=0.5)
