"""drift_report's inputs by week: the stored predictions stand in for predicting a window again only when
they are exactly the window's rows, in order, from the week's champion."""

from __future__ import annotations

import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from stellar_assets.monitoring.assets import _WeekData

WEEKS = ["2008-06-01", "2008-06-08", "2008-06-15"]


def _features(rows: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame({"week": [w for w, n in rows.items() for _ in range(n)],
                         "object_id": [f"{w}-{k}" for w, n in rows.items() for k in range(n)]})


def _predictions(features: pd.DataFrame, version: str) -> pd.DataFrame:
    return features.assign(model_version=version, predicted_class=["STAR", "QSO"] * (len(features) // 2)
                           + ["GALAXY"] * (len(features) % 2))


def test_stored_predictions_are_used_only_for_the_runs_own_rows_from_the_same_champion():
    features = _features({WEEKS[0]: 3, WEEKS[1]: 0, WEEKS[2]: 4})
    stored = _predictions(features.loc[features["week"] != WEEKS[0]], "2")
    data = _WeekData(WEEKS[1:], features, stored, store=None)
    v2 = ModelVersion(name="m", version="2", creation_timestamp=0)
    window = features.loc[features["week"].isin(WEEKS[1:])].reset_index(drop=True)
    # The run's weeks (an empty one among them): the stored classes, in the rows' order.
    assert data.stored_predictions(WEEKS[1:], v2, window) == list(stored["predicted_class"])
    # A window reaching before the run's weeks, another champion, rows in another order: predicted again.
    assert data.stored_predictions(WEEKS, v2, features) is None
    assert data.stored_predictions(WEEKS[1:], ModelVersion(name="m", version="3", creation_timestamp=0),
                                   window) is None
    assert data.stored_predictions(WEEKS[1:], v2, window.iloc[::-1].reset_index(drop=True)) is None
