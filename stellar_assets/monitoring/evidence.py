"""The retraining trigger's evidence: has the champion of week W got worse than it was?

Its record since training (the predictions table: labelled rows of the weeks
after its window, up to W, that it predicted) is pooled back from W to enough
rows and tested against its own out-of-time evaluation (the run's `accuracy`
on `test_rows`, measured on weeks it never trained on), with
stellar_core.performance.degradation_evidence.
"""

from __future__ import annotations

from mlflow.entities.model_registry import ModelVersion

from stellar_assets.monitoring.champions import Champions
from stellar_assets.monitoring.resources import DriftSettings, PredictionsDatabase
from stellar_core.performance import DegradationEvidence, degradation_evidence
from stellar_mlflow.names import TAG_WINDOW_LAST


def out_of_time_reference(champions: Champions, version: ModelVersion) -> tuple[int, int] | None:
    """(correct, rows) of the champion on its out-of-time evaluation set; None when its run lacks them."""
    metrics = champions.run_metrics(version)
    accuracy, rows = metrics.get("accuracy"), metrics.get("test_rows")
    if accuracy is None or not rows:
        return None
    return int(round(accuracy * rows)), int(rows)


class ChampionRecords:
    """Each champion's labelled record since its training window, read from the predictions table once per
    run (through the run's last week, all of them stored by batch_predictions before the drift report
    runs) rather than once per week; a week's record is the part up to that week."""

    def __init__(self, predictions: PredictionsDatabase, through_week: str):
        self.predictions, self.through_week = predictions, through_week
        self._scores: dict[str, list[tuple[str, int, int]]] = {}

    def up_to(self, version: ModelVersion, week: str) -> list[tuple[str, int, int]]:
        """(week, correct, labelled) of `version`'s weeks after its training window, up to `week`."""
        if week > self.through_week:
            raise ValueError(f"week {week} is after {self.through_week}, the last week these records were read for")
        key = str(version.version)
        if key not in self._scores:
            trained_through = (version.tags or {}).get(TAG_WINDOW_LAST, "")
            self._scores[key] = self.predictions.labelled_scores(key, trained_through, self.through_week)
        return [score for score in self._scores[key] if score[0] <= week]

    def trailing(self, version: ModelVersion, week: str, min_rows: int) -> list[tuple[str, int, int]]:
        """The last of those weeks, back to the fewest that hold `min_rows` labelled rows (all when fewer):
        all the test pools (performance.pool_trailing_weeks), so a long reign costs no more per week."""
        scores = self.up_to(version, week)
        rows = 0
        for start in range(len(scores) - 1, -1, -1):
            rows += scores[start][2]
            if rows >= min_rows:
                return scores[start:]
        return scores


def champion_degradation(champions: Champions, records: ChampionRecords, version: ModelVersion, week: str,
                         settings: DriftSettings) -> DegradationEvidence | None:
    """The evidence at `week` for the champion `version`; None when it has no out-of-time reference."""
    reference = out_of_time_reference(champions, version)
    if reference is None:
        return None
    scores = records.trailing(version, week, settings.degradation_min_rows)
    return degradation_evidence(scores, *reference, min_rows=settings.degradation_min_rows,
                                alpha=settings.degradation_alpha)
