"""Feature computation: one implementation for training, batch and online serving.

The server calls `derive_feature_matrix` on a float32 array it packed straight
from a request; training and batch prediction call `build_features` on a
DataFrame, which goes through the same function, so the two cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stellar_core.contract import (
    CLASSES,
    INPUT_RANGES,
    LABEL_COLUMN,
    MAGNITUDE_BANDS,
    MJD_COLUMN,
    MODEL_INPUTS,
    OBJECT_ID_COLUMN,
    SENTINEL_THRESHOLD,
)
from stellar_core.weeks import week_keys_for_mjds

# Colour indices: differences of adjacent and wider bands. Stars, galaxies and
# quasars separate in colour-colour space far better than in raw magnitudes.
COLOURS: tuple[tuple[str, str], ...] = (
    ("u", "g"), ("g", "r"), ("r", "i"), ("i", "z"), ("u", "r"), ("g", "i"), ("r", "z"),
)
FEATURE_NAMES: tuple[str, ...] = MODEL_INPUTS + tuple(f"{a}_{b}" for a, b in COLOURS)
# Raise it whenever build_features computes something different for the same rows.
FEATURES_CODE_VERSION = "features-1"

_INPUT_INDEX = {name: k for k, name in enumerate(MODEL_INPUTS)}
_COLOUR_INDEX = np.array([[_INPUT_INDEX[a], _INPUT_INDEX[b]] for a, b in COLOURS])

LABEL = "label"



def derive_feature_matrix(inputs: np.ndarray) -> np.ndarray:
    """[n, len(MODEL_INPUTS)] float32 inputs -> [n, len(FEATURE_NAMES)] float32 features."""
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 2 or inputs.shape[1] != len(MODEL_INPUTS):
        raise ValueError(
            f"expected inputs of shape [n, {len(MODEL_INPUTS)}] ({', '.join(MODEL_INPUTS)}), "
            f"got {list(inputs.shape)}"
        )
    out = np.empty((inputs.shape[0], len(FEATURE_NAMES)), dtype=np.float32)
    out[:, : len(MODEL_INPUTS)] = inputs
    np.subtract(inputs[:, _COLOUR_INDEX[:, 0]], inputs[:, _COLOUR_INDEX[:, 1]], out=out[:, len(MODEL_INPUTS):])
    return out


@dataclass
class CleaningReport:
    """What cleaning removed, and why: nothing is dropped silently."""

    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    # Per input row (same index): why it was dropped, or None. Lets callers break the
    # counts down (by week, say) without computing the reasons again.
    row_reasons: pd.Series | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {"rows_in": self.rows_in, "rows_out": self.rows_out, "dropped": dict(self.dropped)}


def invalid_input_mask(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Boolean masks of rows that must not reach a model, by reason (reasons overlap)."""
    reasons: dict[str, np.ndarray] = {}
    numeric = {name: pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float) for name in MODEL_INPUTS}
    missing = np.zeros(len(frame), dtype=bool)
    for name in MODEL_INPUTS:
        missing |= ~np.isfinite(numeric[name])
    reasons["missing_or_non_numeric"] = missing
    sentinel = np.zeros(len(frame), dtype=bool)
    for band in MAGNITUDE_BANDS:
        sentinel |= numeric[band] <= SENTINEL_THRESHOLD
    reasons["sentinel_magnitude"] = sentinel
    for name, (low, high) in INPUT_RANGES.items():
        values = numeric[name]
        with np.errstate(invalid="ignore"):
            bad = np.isfinite(values) & ((values < low) | (values > high)) & ~sentinel
        reasons[f"{name}_out_of_range"] = bad
    if LABEL_COLUMN in frame.columns:
        reasons["unknown_class"] = ~frame[LABEL_COLUMN].isin(CLASSES).to_numpy()
    return reasons


def drop_reasons(frame: pd.DataFrame) -> pd.Series:
    """Per row, the first reason it must not reach a model, or None to keep it."""
    reasons = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    for reason, mask in invalid_input_mask(frame).items():
        reasons[mask & reasons.isna().to_numpy()] = reason
    return reasons


def clean_observations(raw: pd.DataFrame) -> tuple[pd.DataFrame, CleaningReport]:
    """Drop rows a model must not see; count each reason (a row counts under its first reason)."""
    reasons = drop_reasons(raw)
    counts = reasons.dropna().value_counts()
    cleaned = raw.loc[reasons.isna()]
    report = CleaningReport(rows_in=len(raw), rows_out=len(cleaned), dropped={str(k): int(v) for k, v in counts.items()},
                            row_reasons=reasons)
    return cleaned, report


def format_object_ids(ids: pd.Series) -> pd.Series:
    """SDSS IDs as decimal strings. They exceed int64 (up to ~1.4e19) and the Kaggle
    export stores them as floats, so they are kept as text, never as floats."""
    if pd.api.types.is_float_dtype(ids):
        return ids.map(lambda v: str(int(v)) if np.isfinite(v) else "")
    return ids.astype(str)


def build_features(raw: pd.DataFrame) -> tuple[pd.DataFrame, CleaningReport]:
    """Raw SDSS17 rows -> the feature table (keys, features, label) and a cleaning report."""
    cleaned, report = clean_observations(raw)
    inputs = np.column_stack(
        [pd.to_numeric(cleaned[name]).to_numpy(dtype=np.float32) for name in MODEL_INPUTS]
    ) if len(cleaned) else np.empty((0, len(MODEL_INPUTS)), dtype=np.float32)
    matrix = derive_feature_matrix(inputs)
    table = pd.DataFrame(matrix, columns=list(FEATURE_NAMES), index=cleaned.index)
    mjd = pd.to_numeric(cleaned[MJD_COLUMN]).astype("int64")
    table.insert(0, "object_id", format_object_ids(cleaned[OBJECT_ID_COLUMN]))
    table.insert(1, "week", week_keys_for_mjds(mjd.to_numpy()) if len(cleaned) else np.array([], dtype=str))
    table.insert(2, "mjd", mjd.to_numpy())
    if LABEL_COLUMN in cleaned.columns:
        table[LABEL] = cleaned[LABEL_COLUMN].astype(str).to_numpy()
    return table.reset_index(drop=True), report


def feature_matrix(table: pd.DataFrame) -> np.ndarray:
    """The float32 model input of a feature table, columns in FEATURE_NAMES order."""
    return table.loc[:, list(FEATURE_NAMES)].to_numpy(dtype=np.float32)


def label_indices(labels: pd.Series) -> np.ndarray:
    lookup = {name: k for k, name in enumerate(CLASSES)}
    return labels.map(lookup).to_numpy(dtype=np.int64)
