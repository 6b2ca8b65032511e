"""The data contract shared by ingestion, training and serving.

One place says which columns an SDSS17 row has, which values are physical,
which inputs the classifier takes and which labels it answers with. It imports
neither Dagster nor MLflow, so the prediction server can use it as is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

# Columns of the Kaggle "Stellar Classification Dataset - SDSS17" export, in order.
SDSS17_COLUMNS: tuple[str, ...] = (
    "obj_ID", "alpha", "delta", "u", "g", "r", "i", "z",
    "run_ID", "rerun_ID", "cam_col", "field_ID", "spec_obj_ID",
    "class", "redshift", "plate", "MJD", "fiber_ID",
)
ID_COLUMNS: tuple[str, ...] = ("obj_ID", "spec_obj_ID")
INTEGER_COLUMNS: tuple[str, ...] = (
    "run_ID", "rerun_ID", "cam_col", "field_ID", "plate", "MJD", "fiber_ID",
)
FLOAT_COLUMNS: tuple[str, ...] = ("alpha", "delta", "u", "g", "r", "i", "z", "redshift")
LABEL_COLUMN = "class"
MJD_COLUMN = "MJD"
OBJECT_ID_COLUMN = "spec_obj_ID"  # one row per spectrum: the object a prediction is about

# Survey bookkeeping: IDs, plate, fibre and dates carry targeting, not physics.
# They must never reach a model (they leak how SDSS chose its targets).
BOOKKEEPING_COLUMNS: tuple[str, ...] = (
    "obj_ID", "spec_obj_ID", "run_ID", "rerun_ID", "cam_col", "field_ID",
    "plate", "MJD", "fiber_ID", "alpha", "delta",
)

CLASSES: tuple[str, ...] = ("GALAXY", "QSO", "STAR")  # model output index order
MAGNITUDE_BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z")

# Physical ranges. SDSS magnitudes of real detections lie well inside
# [5, 40] (the sample spans 11.8 to 30.2); -9999 is the pipeline's "no
# measurement" sentinel. Redshift: stars scatter a little below 0, the most
# distant known quasars sit near z = 7.6.
MAGNITUDE_RANGE: tuple[float, float] = (5.0, 40.0)
REDSHIFT_RANGE: tuple[float, float] = (-0.1, 10.0)
SENTINEL_THRESHOLD = -999.0  # SDSS writes -9999 where it has no measurement

# What a client sends per object, in the order the server packs them.
MODEL_INPUTS: tuple[str, ...] = ("u", "g", "r", "i", "z", "redshift")

INPUT_RANGES: dict[str, tuple[float, float]] = {
    **{band: MAGNITUDE_RANGE for band in MAGNITUDE_BANDS},
    "redshift": REDSHIFT_RANGE,
}

# The registered model's default name (the alias production serves: stellar_mlflow.names).
DEFAULT_MODEL_NAME = "stellar-classifier"

CONTRACT_VERSION = 1


def serving_contract(feature_names: tuple[str, ...] | list[str]) -> dict:
    """The JSON document stored beside every model and checked before promotion."""
    return {
        "contract_version": CONTRACT_VERSION,
        "inputs": list(MODEL_INPUTS),
        "input_ranges": {k: list(v) for k, v in INPUT_RANGES.items()},
        "features": list(feature_names),
        "dtype": "float32",
        "classes": list(CLASSES),
    }


def class_counts(labels: Iterable) -> dict[str, int]:
    """Rows per class, every class present (0 when absent); a label that is not a class is an error."""
    counted = Counter(str(label) for label in labels if label is not None and label == label)  # NaN != NaN
    unknown = sorted(set(counted) - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown classes {unknown}; classes are {list(CLASSES)}")
    return {c: counted.get(c, 0) for c in CLASSES}
