"""The files a trained classifier travels as, between training and serving.

Every registered model version's MLflow run carries, besides the MLflow
`model/` (xgboost flavour, for `mlflow models serve`), a `serving/` folder:

    serving/model.ubj       the booster in XGBoost's native UBJSON format (no pickle)
    serving/contract.json   inputs, features (order), dtype, classes: stellar_core.contract
    serving/model_card.json name, training window, metrics, lineage

The prediction server loads only `serving/`, so it never unpickles anything and
a Triton FIL server could load the same model.ubj.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xgboost as xgb

from stellar_core.contract import CLASSES, DEFAULT_MODEL_NAME, MODEL_INPUTS, serving_contract  # noqa: F401 (re-exported)
from stellar_core.features import FEATURE_NAMES, derive_feature_matrix

BOOSTER_FILE = "model.ubj"
CONTRACT_FILE = "contract.json"
CARD_FILE = "model_card.json"


def booster_probabilities(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    """float [n, 13] features -> float32 [n, 3] class probabilities: the call the prediction server
    makes (inplace_predict on C-contiguous float32), shaped one row per object even for one object."""
    out = booster.inplace_predict(np.ascontiguousarray(features, dtype=np.float32))
    return np.asarray(out, dtype=np.float32).reshape(-1, len(CLASSES))


class ContractMismatch(ValueError):
    """A model's stored contract is not what this code serves."""


@dataclass
class ModelBundle:
    booster: xgb.Booster
    contract: dict
    card: dict = field(default_factory=dict)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(directory / BOOSTER_FILE)
        (directory / CONTRACT_FILE).write_text(json.dumps(self.contract, indent=2))
        (directory / CARD_FILE).write_text(json.dumps(self.card, indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ModelBundle":
        directory = Path(directory)
        missing = [f for f in (BOOSTER_FILE, CONTRACT_FILE) if not (directory / f).exists()]
        if missing:
            raise FileNotFoundError(f"model bundle {directory} lacks {', '.join(missing)}")
        booster = xgb.Booster()
        booster.load_model(directory / BOOSTER_FILE)
        contract = json.loads((directory / CONTRACT_FILE).read_text())
        card_path = directory / CARD_FILE
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        bundle = cls(booster=booster, contract=contract, card=card)
        bundle.check_contract()
        return bundle

    def contract_problems(self) -> list[str]:
        """Every way this model's contract differs from what the server expects."""
        expected = serving_contract(FEATURE_NAMES)
        problems = []
        for key in ("inputs", "features", "dtype", "classes"):
            if self.contract.get(key) != expected[key]:
                problems.append(f"{key}: model has {self.contract.get(key)!r}, server expects {expected[key]!r}")
        n_features = self.booster.num_features()
        if n_features != len(FEATURE_NAMES):
            problems.append(f"booster takes {n_features} features, contract says {len(FEATURE_NAMES)}")
        booster_names = self.booster.feature_names
        if booster_names is not None and list(booster_names) != list(FEATURE_NAMES):
            problems.append(f"booster feature names {booster_names} differ from {list(FEATURE_NAMES)}")
        return problems

    def check_contract(self) -> None:
        problems = self.contract_problems()
        if problems:
            raise ContractMismatch("; ".join(problems))

    def predict_proba_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """[n, len(MODEL_INPUTS)] raw inputs -> [n, len(CLASSES)] probabilities."""
        return self.predict_proba_features(derive_feature_matrix(inputs))

    def predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        return booster_probabilities(self.booster, features)


def new_contract() -> dict:
    return serving_contract(FEATURE_NAMES)


__all__ = [
    "BOOSTER_FILE", "CARD_FILE", "booster_probabilities", "CONTRACT_FILE", "ContractMismatch", "DEFAULT_MODEL_NAME", "MODEL_INPUTS",
    "ModelBundle", "new_contract",
]
