"""Training, evaluation and comparison of the classifier: pure functions.

No Dagster and no MLflow here, so the assets, the benchmark and the tests all
run exactly the same code: a champion and a challenger are scored by the same
`evaluate` on the same rows, and `compare` decides between them.
"""

from __future__ import annotations

from collections.abc import Sequence

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from stellar_core.contract import CLASSES, class_counts
from stellar_core.features import FEATURE_NAMES, LABEL, feature_matrix, label_indices
from stellar_core.model_bundle import booster_probabilities

SPLIT_COLUMN = "split"
TRAIN, TEST = "train", "test"
CLASS_WEIGHTINGS = ("none", "balanced", "sqrt_balanced")
COMPARISON_METRICS = ("accuracy", "macro_f1", "qso_recall")


class TrainingInputError(ValueError):
    """The data or configuration handed to training cannot produce a model."""


# ---------------------------------------------------------------- split


def split_seed(partition_key: str) -> int:
    """A stable 31-bit seed from a partition key (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"stellar-split:{partition_key}".encode()).digest()[:4], "big") >> 1


def stratified_split(table: pd.DataFrame, test_fraction: float, seed: int) -> pd.DataFrame:
    """The feature table plus a `split` column ("train"/"test"), stratified by label.

    Rows are first put in object_id order, so the split does not depend on the
    order the weeks were loaded in: the same rows and seed give the same split.
    Every class with at least two rows gets at least one test row and one training row.
    """
    if not 0.0 < test_fraction < 1.0:
        raise TrainingInputError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    _check_feature_table(table, "object_id")
    ordered = table.sort_values(["object_id", "week"], kind="mergesort").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(ordered), dtype=bool)
    for cls in CLASSES:  # fixed class order keeps the random stream reproducible
        rows = np.flatnonzero(ordered[LABEL].to_numpy() == cls)
        if len(rows) < 2:
            continue
        n_test = min(max(1, int(round(test_fraction * len(rows)))), len(rows) - 1)
        is_test[rng.permutation(rows)[:n_test]] = True
    ordered[SPLIT_COLUMN] = np.where(is_test, TEST, TRAIN)
    return ordered


def _check_feature_table(table: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in (*columns, LABEL, *FEATURE_NAMES) if c not in table.columns]
    if missing:
        raise TrainingInputError(f"feature table lacks columns {missing}")
    unknown = sorted(set(table[LABEL].unique()) - set(CLASSES))
    if unknown:
        raise TrainingInputError(f"unknown class labels {unknown}; expected {list(CLASSES)}")


def out_of_time_split(table: pd.DataFrame, evaluation_weeks: Sequence[str]) -> pd.DataFrame:
    """The feature table plus a `split` column: rows of `evaluation_weeks` (the window's most recent
    weeks) are "test", every earlier row "train". Neither the challenger nor a champion trained
    before those weeks has seen them, so both are scored out of time on the same rows."""
    _check_feature_table(table, "object_id", "week")
    ordered = table.sort_values(["week", "object_id"], kind="mergesort").reset_index(drop=True)
    is_test = ordered["week"].astype(str).isin(set(evaluation_weeks)).to_numpy()
    ordered[SPLIT_COLUMN] = np.where(is_test, TEST, TRAIN)
    return ordered


def split_parts(split_table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if SPLIT_COLUMN not in split_table.columns:
        raise TrainingInputError(f"table has no '{SPLIT_COLUMN}' column: it is not a train/test split")
    train = split_table[split_table[SPLIT_COLUMN] == TRAIN].reset_index(drop=True)
    test = split_table[split_table[SPLIT_COLUMN] == TEST].reset_index(drop=True)
    return train, test


def class_mix(table: pd.DataFrame) -> dict[str, int]:
    return class_counts(table[LABEL])


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class XGBoostParams:
    """Hyperparameters of the challenger (XGBoost, hist). Defaults measured on the SDSS sample."""

    n_estimators: int = 300
    max_depth: int = 6
    learning_rate: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    class_weighting: str = "balanced"  # QSO is the minority and is confused with GALAXY
    seed: int = 17
    nthread: int = 2

    def __post_init__(self) -> None:
        problems = []
        if self.n_estimators < 1:
            problems.append(f"n_estimators must be >= 1, got {self.n_estimators}")
        if not 1 <= self.max_depth <= 32:
            problems.append(f"max_depth must be in [1, 32], got {self.max_depth}")
        if not 0 < self.learning_rate <= 1:
            problems.append(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        for name in ("subsample", "colsample_bytree"):
            if not 0 < getattr(self, name) <= 1:
                problems.append(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.min_child_weight < 0 or self.reg_lambda < 0:
            problems.append("min_child_weight and reg_lambda must be >= 0")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            problems.append(f"class_weighting must be one of {CLASS_WEIGHTINGS}, got {self.class_weighting!r}")
        if self.nthread < 1:
            problems.append(f"nthread must be >= 1, got {self.nthread}")
        if problems:
            raise TrainingInputError("invalid XGBoost parameters: " + "; ".join(problems))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_layers(cls, *layers: dict | None) -> "XGBoostParams":
        """Built-in defaults, overridden by each layer in turn (later wins); None values are skipped."""
        merged: dict = {}
        for layer in layers:
            for key, value in (layer or {}).items():
                if value is None:
                    continue
                if key not in cls.field_names():
                    raise TrainingInputError(f"unknown XGBoost parameter {key!r}; known: {list(cls.field_names())}")
                merged[key] = value
        return cls(**merged)

    def as_dict(self) -> dict:
        return asdict(self)

    def booster_params(self) -> dict:
        return {
            "objective": "multi:softprob",
            "num_class": len(CLASSES),
            "tree_method": "hist",
            "eval_metric": "mlogloss",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "seed": self.seed,
            "nthread": self.nthread,
        }


def class_weights(labels: np.ndarray, scheme: str) -> np.ndarray | None:
    """Per-row weights: 'balanced' gives each class equal total weight, 'sqrt_balanced' half-way."""
    if scheme == "none":
        return None
    if scheme not in CLASS_WEIGHTINGS:
        raise TrainingInputError(f"class_weighting must be one of {CLASS_WEIGHTINGS}, got {scheme!r}")
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(float)
    present = counts > 0
    per_class = np.zeros(len(CLASSES))
    per_class[present] = len(labels) / (present.sum() * counts[present])
    if scheme == "sqrt_balanced":
        per_class = np.sqrt(per_class)
    return per_class[labels]


def train_booster(train: pd.DataFrame, params: XGBoostParams) -> xgb.Booster:
    if len(train) == 0:
        raise TrainingInputError("the training set is empty")
    return train_booster_on(feature_matrix(train), label_indices(train[LABEL]), params)


def train_booster_on(features: np.ndarray, labels: np.ndarray, params: XGBoostParams) -> xgb.Booster:
    """The one XGBoost training call (the challenger's and model selection's cross-validation)."""
    dtrain = xgb.DMatrix(features, label=labels, weight=class_weights(labels, params.class_weighting),
                         feature_names=list(FEATURE_NAMES))
    return xgb.train(params.booster_params(), dtrain, num_boost_round=params.n_estimators)


def predict_proba(booster: xgb.Booster, table: pd.DataFrame) -> np.ndarray:
    """The same call the prediction server makes, on a feature table."""
    return booster_probabilities(booster, feature_matrix(table))


# ---------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    rows: int
    accuracy: float
    macro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    support: dict[str, int]
    roc_auc_ovr: float | None
    roc_auc: dict[str, float | None]
    confusion: list[list[int]]  # rows: true class, columns: predicted, in CLASSES order

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics (for MLflow and metadata); undefined AUCs are left out."""
        flat = {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "test_rows": float(self.rows)}
        for cls in CLASSES:
            flat[f"precision_{cls}"] = self.precision[cls]
            flat[f"recall_{cls}"] = self.recall[cls]
            if self.roc_auc.get(cls) is not None:
                flat[f"roc_auc_{cls}"] = self.roc_auc[cls]
        if self.roc_auc_ovr is not None:
            flat["roc_auc_ovr"] = self.roc_auc_ovr
        return flat

    def score(self, metric: str) -> float:
        if metric == "qso_recall":
            return self.recall["QSO"]
        if metric in ("accuracy", "macro_f1"):
            return getattr(self, metric)
        raise TrainingInputError(f"unknown comparison metric {metric!r}; choose one of {COMPARISON_METRICS}")

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate(probabilities: np.ndarray, labels: np.ndarray) -> Evaluation:
    """Scores of class probabilities against true label indices (CLASSES order)."""
    if len(labels) == 0:
        raise TrainingInputError("cannot evaluate on an empty test set")
    probabilities = np.asarray(probabilities, dtype=float)
    predicted = probabilities.argmax(axis=1)
    index = list(range(len(CLASSES)))
    precision, recall, _, support = precision_recall_fscore_support(
        labels, predicted, labels=index, zero_division=0
    )
    roc_auc: dict[str, float | None] = {}
    for k, cls in enumerate(CLASSES):
        positives = labels == k
        roc_auc[cls] = float(roc_auc_score(positives, probabilities[:, k])) if 0 < positives.sum() < len(labels) else None
    present = [k for k in index if (labels == k).any()]
    ovr = None
    if len(present) == len(CLASSES):
        ovr = float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro", labels=index))
    return Evaluation(
        rows=int(len(labels)),
        accuracy=float(accuracy_score(labels, predicted)),
        macro_f1=float(f1_score(labels, predicted, labels=present or index, average="macro", zero_division=0)),
        precision={cls: float(precision[k]) for k, cls in enumerate(CLASSES)},
        recall={cls: float(recall[k]) for k, cls in enumerate(CLASSES)},
        support={cls: int(support[k]) for k, cls in enumerate(CLASSES)},
        roc_auc_ovr=ovr,
        roc_auc=roc_auc,
        confusion=confusion_matrix(labels, predicted, labels=index).tolist(),
    )


def evaluate_booster(booster: xgb.Booster, test: pd.DataFrame) -> Evaluation:
    return evaluate(predict_proba(booster, test), label_indices(test[LABEL]))


def measure_latency(booster: xgb.Booster, features: np.ndarray, single_row_repeats: int = 200,
                    batch_repeats: int = 5, rounds: int = 3) -> dict[str, float]:
    """Milliseconds per single-row call (p50, p95) and per batch call (median) and per 1000 rows.

    Single-row timings are taken in `rounds` rounds and the quietest round is reported: the
    budget is about the model (tree count and depth), not about a neighbour's load on a shared
    machine. The noisiest round's p95 is reported too, for honesty.
    """
    if len(features) == 0:
        raise TrainingInputError("latency needs at least one row of features")
    features = np.ascontiguousarray(features, dtype=np.float32)
    # Measured single-threaded, as a serving worker predicts; a copy keeps the trained booster's settings.
    booster = booster.copy()
    booster.set_param({"nthread": 1})
    booster.inplace_predict(features[:1])  # warm-up: the first call builds caches
    per_round = []
    for _ in range(max(1, rounds)):
        singles = []
        for k in range(max(1, single_row_repeats)):
            row = features[k % len(features): k % len(features) + 1]
            start = time.perf_counter()
            booster.inplace_predict(row)
            singles.append((time.perf_counter() - start) * 1000.0)
        per_round.append((float(np.percentile(singles, 50)), float(np.percentile(singles, 95))))
    batches = []
    for _ in range(max(1, batch_repeats)):
        start = time.perf_counter()
        booster.inplace_predict(features)
        batches.append((time.perf_counter() - start) * 1000.0)
    batch_ms = float(np.min(batches))  # the least disturbed batch call, as for single rows
    return {
        "single_row_ms_p50": min(p50 for p50, _ in per_round),
        "single_row_ms_p95": min(p95 for _, p95 in per_round),
        "single_row_ms_p95_noisiest_round": max(p95 for _, p95 in per_round),
        "batch_ms": batch_ms,
        "batch_rows": float(len(features)),
        "batch_ms_per_1000_rows": batch_ms * 1000.0 / len(features),
    }


# ---------------------------------------------------------------- the gate's pure parts


def floor_problems(evaluation: Evaluation, accuracy_floor: float, recall_floors: dict[str, float]) -> list[str]:
    """Every floor the evaluation is below, with the numbers."""
    unknown = sorted(set(recall_floors) - set(CLASSES))
    if unknown:
        raise TrainingInputError(f"recall floors name unknown classes {unknown}; classes are {list(CLASSES)}")
    problems = []
    if evaluation.accuracy < accuracy_floor:
        problems.append(f"accuracy {evaluation.accuracy:.4f} < floor {accuracy_floor:.4f}")
    for cls, floor in recall_floors.items():
        if evaluation.support.get(cls, 0) == 0:
            problems.append(f"recall of {cls} cannot be measured: no {cls} rows in the test set")
        elif evaluation.recall[cls] < floor:
            problems.append(f"recall of {cls} {evaluation.recall[cls]:.4f} < floor {floor:.4f}")
    return problems


def latency_problems(latency: dict[str, float], single_row_budget_ms: float, batch_budget_ms_per_1000_rows: float) -> list[str]:
    problems = []
    if latency["single_row_ms_p95"] > single_row_budget_ms:
        problems.append(f"single-row p95 {latency['single_row_ms_p95']:.3f} ms > budget {single_row_budget_ms:.3f} ms")
    if latency["batch_ms_per_1000_rows"] > batch_budget_ms_per_1000_rows:
        problems.append(
            f"batch {latency['batch_ms_per_1000_rows']:.3f} ms per 1000 rows > budget {batch_budget_ms_per_1000_rows:.3f} ms"
        )
    return problems


@dataclass
class Comparison:
    metric: str
    challenger_wins: bool  # beats or ties the champion (within tolerance); True when there is no champion
    challenger_score: float
    champion_score: float | None
    delta: float | None  # challenger - champion on `metric`
    deltas: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def compare(challenger: Evaluation, champion: Evaluation | None, metric: str = "accuracy",
            tolerance: float = 0.0) -> Comparison:
    """Does the challenger beat or tie the champion? Both must be scored on the same rows."""
    if metric not in COMPARISON_METRICS:
        raise TrainingInputError(f"unknown comparison metric {metric!r}; choose one of {COMPARISON_METRICS}")
    if tolerance < 0:
        raise TrainingInputError(f"tolerance must be >= 0, got {tolerance}")
    score = challenger.score(metric)
    if champion is None:
        return Comparison(metric, True, score, None, None, rows=challenger.rows,
                          reason=f"no champion yet: challenger {metric} {score:.4f} wins by default")
    if champion.rows != challenger.rows:
        raise TrainingInputError(
            f"champion scored on {champion.rows} rows, challenger on {challenger.rows}: not the same test set"
        )
    champion_score = champion.score(metric)
    delta = score - champion_score
    challenger_metrics, champion_metrics = challenger.metrics(), champion.metrics()
    deltas = {
        name: challenger_metrics[name] - champion_metrics[name]
        for name in challenger_metrics
        if name in champion_metrics and name != "test_rows" and not math.isnan(champion_metrics[name])
    }
    wins = delta >= -tolerance
    verdict = "beats" if delta > 0 else ("ties" if wins else "loses to")
    reason = (
        f"challenger {verdict} champion on {metric}: {score:.4f} vs {champion_score:.4f} "
        f"(delta {delta:+.4f}, tolerance {tolerance:.4f}, {challenger.rows} rows)"
    )
    return Comparison(metric, wins, score, champion_score, delta, deltas, challenger.rows, reason)


# ---------------------------------------------------------------- descriptions


def describe_training_data(train: pd.DataFrame) -> pd.DataFrame:
    """Per-feature statistics of the training rows, overall and per class."""
    overall = train.loc[:, list(FEATURE_NAMES)].describe().T
    overall.insert(0, "class", "ALL")
    per_class = []
    for cls in CLASSES:
        part = train.loc[train[LABEL] == cls, list(FEATURE_NAMES)]
        if len(part):
            stats = part.describe().T
            stats.insert(0, "class", cls)
            per_class.append(stats)
    out = pd.concat([overall, *per_class])
    out.index.name = "feature"
    return out.reset_index()


def feature_importance(booster: xgb.Booster) -> dict[str, float]:
    """Total gain per feature, normalised to sum to 1 (features never used get 0)."""
    gains = booster.get_score(importance_type="total_gain")
    total = sum(gains.values()) or 1.0
    return {name: float(gains.get(name, 0.0) / total) for name in FEATURE_NAMES}
