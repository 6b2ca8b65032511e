"""The champion's labelled record, read once per drift_report run: per week, exactly what a query for that
week alone returns (its weeks after the training window, up to the week, its own predictions only)."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

from stellar_assets.monitoring.evidence import ChampionRecords
from stellar_assets.monitoring.resources import PredictionsDatabase
from stellar_core.performance import degradation_evidence
from stellar_mlflow.names import TAG_WINDOW_LAST

WEEKS = ["2008-06-01", "2008-06-08", "2008-06-15", "2008-06-22", "2008-06-29"]


def _week(week: str, version: str, right: int, wrong: int, unlabelled: int) -> pd.DataFrame:
    n = right + wrong + unlabelled
    return pd.DataFrame({
        "object_id": [f"{week}-{k}" for k in range(n)], "week": week, "mjd": 54600, "predicted_class": "STAR",
        "p_GALAXY": 0.1, "p_QSO": 0.1, "p_STAR": 0.8, "model_version": version,
        "label": ["STAR"] * right + ["GALAXY"] * wrong + [None] * unlabelled})


class _CountingDatabase(PredictionsDatabase):
    def labelled_scores(self, model_version: str, after_week: str, through_week: str):
        self.__dict__.setdefault("queries", []).append((model_version, after_week, through_week))
        return super().labelled_scores(model_version, after_week, through_week)


def _version(number: str, trained_through: str) -> ModelVersion:
    return ModelVersion(name="records", version=number, creation_timestamp=0,
                        tags=[ModelVersionTag(TAG_WINDOW_LAST, trained_through)])


def test_one_query_per_champion_gives_each_weeks_own_record(tmp_path):
    database = _CountingDatabase(url=f"sqlite:///{tmp_path / 'predictions.db'}")
    frames = [_week(WEEKS[0], "1", 5, 1, 2), _week(WEEKS[1], "1", 3, 3, 0), _week(WEEKS[2], "2", 7, 0, 1),
              _week(WEEKS[3], "1", 4, 2, 1), _week(WEEKS[4], "1", 1, 1, 0)]
    database.replace_weeks(pd.concat(frames, ignore_index=True), WEEKS, "run-a")
    v1, v2 = _version("1", WEEKS[0]), _version("2", "2008-05-25")
    records = ChampionRecords(database, WEEKS[3])
    for week in WEEKS[:4]:
        for version in (v1, v2):
            expected = PredictionsDatabase(url=database.url).labelled_scores(
                version.version, version.tags[TAG_WINDOW_LAST], week)
            assert records.up_to(version, week) == expected
    assert records.up_to(v1, WEEKS[3]) == [(WEEKS[1], 3, 6), (WEEKS[3], 4, 6)]  # after its window, labelled only
    assert records.up_to(v2, WEEKS[3]) == [(WEEKS[2], 7, 7)]
    # What the degradation test reads: the last weeks that hold its minimum of rows, as it pools them.
    scores = records.up_to(v1, WEEKS[3])
    assert records.trailing(v1, WEEKS[3], 6) == [(WEEKS[3], 4, 6)]
    assert records.trailing(v1, WEEKS[3], 7) == records.trailing(v1, WEEKS[3], 300) == scores
    for min_rows in (1, 6, 7, 12, 13, 300):
        assert degradation_evidence(records.trailing(v1, WEEKS[3], min_rows), 90, 100, min_rows=min_rows) \
            == degradation_evidence(scores, 90, 100, min_rows=min_rows)
    assert database.queries == [("1", WEEKS[0], WEEKS[3]), ("2", "2008-05-25", WEEKS[3])]
    with pytest.raises(ValueError, match="week 2008-06-29 is after 2008-06-22, the last week these records"):
        records.up_to(v1, WEEKS[4])
