"""Model selection: candidate families, stratified k-fold cross-validation, a random search.

Pure (no Dagster, no MLflow). The model-selection asset drives it and tracks
every candidate in MLflow; the chosen XGBoost hyperparameters are written to a
JSON file that the challenger's config defaults read (explicit config wins).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from stellar_core.contract import CLASSES
from stellar_core.model_bundle import booster_probabilities
from stellar_core.training import TrainingInputError, XGBoostParams, train_booster_on

FAMILIES = ("xgboost", "random_forest", "logistic_regression")
DEFAULTS_FORMAT = 1

# Search spaces: each entry is a list of values sampled uniformly.
SEARCH_SPACES: dict[str, dict[str, list]] = {
    "xgboost": {
        "n_estimators": [300, 500, 800],
        "max_depth": [4, 5, 6, 8],
        "learning_rate": [0.03, 0.05, 0.1],
        "subsample": [0.7, 0.8, 1.0],
        "colsample_bytree": [0.7, 0.8, 1.0],
        "min_child_weight": [1.0, 3.0],
        "class_weighting": ["none", "sqrt_balanced", "balanced"],
    },
    "random_forest": {
        "n_estimators": [200, 400],
        "max_depth": [None, 16, 24],
        "min_samples_leaf": [1, 2, 4],
        "max_features": ["sqrt", 0.5],
        "class_weight": [None, "balanced"],
    },
    "logistic_regression": {
        "C": [0.1, 1.0, 10.0, 100.0],
        "class_weight": [None, "balanced"],
    },
}


@dataclass
class CVResult:
    family: str
    params: dict
    fold_accuracy: list[float]
    fold_macro_f1: list[float]
    fold_qso_recall: list[float]
    seconds: float

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.fold_accuracy))

    @property
    def accuracy_std(self) -> float:
        return float(np.std(self.fold_accuracy, ddof=1)) if len(self.fold_accuracy) > 1 else 0.0

    def summary(self) -> dict:
        return {
            "family": self.family,
            "params": self.params,
            "cv_accuracy_mean": self.accuracy_mean,
            "cv_accuracy_std": self.accuracy_std,
            "cv_macro_f1_mean": float(np.mean(self.fold_macro_f1)),
            "cv_qso_recall_mean": float(np.mean(self.fold_qso_recall)),
            "folds": len(self.fold_accuracy),
            "seconds": self.seconds,
        }


class _XGBoostEstimator:
    """Minimal sklearn-style wrapper over stellar_core.training's own XGBoost training,
    so cross-validation scores the exact model the challenger trains."""

    def __init__(self, params: XGBoostParams):
        self.params = params
        self.booster: xgb.Booster | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_XGBoostEstimator":
        self.booster = train_booster_on(X, y, self.params)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return booster_probabilities(self.booster, X).argmax(axis=1)


def make_estimator(family: str, params: dict, seed: int = 17, n_jobs: int = 2):
    if family == "xgboost":
        return _XGBoostEstimator(XGBoostParams.from_layers(params, {"seed": seed, "nthread": n_jobs}))
    if family == "random_forest":
        return RandomForestClassifier(random_state=seed, n_jobs=n_jobs, **params)
    if family == "logistic_regression":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, **params))
    raise TrainingInputError(f"unknown model family {family!r}; choose from {FAMILIES}")


def sample_candidates(family: str, n: int, seed: int, max_trees: int | None = None) -> list[dict]:
    """`n` distinct parameter sets drawn from the family's search space (fewer if it is smaller).
    `max_trees` caps n_estimators of the tree families, for quick searches."""
    if family not in SEARCH_SPACES:
        raise TrainingInputError(f"unknown model family {family!r}; choose from {FAMILIES}")
    if n < 1:
        raise TrainingInputError(f"candidates per family must be >= 1, got {n}")
    space = dict(SEARCH_SPACES[family])
    if max_trees is not None and "n_estimators" in space:
        if max_trees < 1:
            raise TrainingInputError(f"max_trees must be >= 1, got {max_trees}")
        space["n_estimators"] = [v for v in space["n_estimators"] if v <= max_trees] or [max_trees]
    rng = np.random.default_rng(seed)
    size = int(np.prod([len(v) for v in space.values()]))
    seen: list[dict] = []
    for _ in range(n * 20):
        if len(seen) >= min(n, size):
            break
        candidate = {name: _plain(values[rng.integers(len(values))]) for name, values in space.items()}
        if candidate not in seen:
            seen.append(candidate)
    return seen


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def cross_validate(family: str, params: dict, X: np.ndarray, y: np.ndarray, folds: int = 5,
                   seed: int = 17, n_jobs: int = 2) -> CVResult:
    """Stratified k-fold scores of one candidate; the same folds for every candidate with the same seed."""
    if folds < 2:
        raise TrainingInputError(f"folds must be >= 2, got {folds}")
    smallest = int(np.bincount(y, minlength=len(CLASSES))[np.bincount(y, minlength=len(CLASSES)) > 0].min())
    if smallest < folds:
        raise TrainingInputError(f"{folds}-fold cross-validation needs >= {folds} rows of every class; the smallest has {smallest}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    template = make_estimator(family, params, seed=seed, n_jobs=n_jobs)
    accuracy, macro_f1, qso_recall = [], [], []
    start = time.perf_counter()
    qso = CLASSES.index("QSO")
    for train_index, test_index in splitter.split(X, y):
        model = make_estimator(family, params, seed=seed, n_jobs=n_jobs) if family == "xgboost" else clone(template)
        model.fit(X[train_index], y[train_index])
        predicted = model.predict(X[test_index])
        accuracy.append(float(accuracy_score(y[test_index], predicted)))
        macro_f1.append(float(f1_score(y[test_index], predicted, average="macro")))
        qso_recall.append(float(recall_score(y[test_index] == qso, predicted == qso, zero_division=0)))
    return CVResult(family, dict(params), accuracy, macro_f1, qso_recall, time.perf_counter() - start)


def best(results: list[CVResult], family: str | None = None) -> CVResult:
    """Highest mean CV accuracy (ties: higher QSO recall), optionally within one family."""
    pool = [r for r in results if family is None or r.family == family]
    if not pool:
        raise TrainingInputError(f"no cross-validation results{' for ' + family if family else ''}")
    return max(pool, key=lambda r: (r.accuracy_mean, float(np.mean(r.fold_qso_recall))))


# ---------------------------------------------------------------- the defaults file


def write_defaults(path: str | Path, chosen: CVResult, overall_best: CVResult, context: dict | None = None) -> Path:
    """Write the chosen XGBoost hyperparameters atomically (a reader never sees half a file)."""
    if chosen.family != "xgboost":
        raise TrainingInputError("the challenger trains XGBoost: only XGBoost parameters can become its defaults")
    XGBoostParams.from_layers(chosen.params)  # refuse to write what training would reject
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": DEFAULTS_FORMAT,
        "family": "xgboost",
        "xgboost_params": chosen.params,
        "cv": chosen.summary(),
        "overall_best": overall_best.summary(),
        **(context or {}),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2)
    os.replace(tmp, path)
    return path


def read_defaults(path: str | Path) -> dict | None:
    """The XGBoost params chosen by model selection, or None when no selection has run yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
        params = document["xgboost_params"]
    except (ValueError, KeyError) as exc:
        raise TrainingInputError(f"model-selection defaults {path} are unreadable ({exc}); delete or re-create them") from exc
    XGBoostParams.from_layers(params)  # validate early, naming the file
    return dict(params)
