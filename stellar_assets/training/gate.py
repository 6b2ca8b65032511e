"""The comparison both the `beats_champion` check and `champion_model` run, so they cannot disagree.

Which champion: the incumbent at partition W is the champion as of the week
after W, i.e. the most recently promoted version whose training window ended
at or before W. In normal forward operation that is the current `champion`
alias; in a backfill over history it is the champion of that time, never a
model trained on later weeks.

Which rows: W's test rows that the incumbent did not train on (its run records
its training object ids). The challenger never saw any of W's test rows; an
incumbent trained on an overlapping window saw some of them, and scoring it
there would flatter it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from stellar_core.features import LABEL, feature_matrix, label_indices
from stellar_core.model_bundle import ContractMismatch
from stellar_mlflow.registry import champion_as_of, load_bundle
from stellar_core.training import Comparison, Evaluation, compare, evaluate
from stellar_core.weeks import Week
from stellar_mlflow.registry import training_ids


def next_week(week: str) -> str:
    return Week.of(week).next.key


@dataclass
class IncumbentComparison:
    incumbent: ModelVersion | None
    comparison: Comparison
    rows_compared: int
    rows_excluded_seen_by_champion: int
    note: str = ""

    def metadata(self) -> dict:
        c = self.comparison
        return {
            "champion_version": self.incumbent.version if self.incumbent else None,
            "metric": c.metric,
            "challenger_score": c.challenger_score,
            "champion_score": c.champion_score,
            "delta": c.delta,
            "deltas": c.deltas,
            "rows_compared": self.rows_compared,
            "rows_excluded_seen_by_champion": self.rows_excluded_seen_by_champion,
            "reason": c.reason,
            "note": self.note,
        }


def _scored(bundle, rows: pd.DataFrame) -> Evaluation:
    return evaluate(bundle.predict_proba_features(feature_matrix(rows)), label_indices(rows[LABEL]))


def compare_with_incumbent(client: MlflowClient, model_name: str, challenger: ModelVersion, test: pd.DataFrame,
                           partition_key: str, metric: str, tolerance: float, min_rows: int) -> IncumbentComparison:
    """Score challenger and incumbent with the same code on the same unseen rows, then compare."""
    challenger_bundle = load_bundle(client, challenger)  # the artifacts the server would load
    incumbent = champion_as_of(client, model_name, next_week(partition_key))
    if incumbent is not None and incumbent.version == challenger.version:
        incumbent = None
    if incumbent is None:
        return IncumbentComparison(None, compare(_scored(challenger_bundle, test), None, metric, tolerance),
                                   len(test), 0, "no champion as of this week")
    try:
        incumbent_bundle = load_bundle(client, incumbent)
    except ContractMismatch as exc:
        # A champion the server can no longer load is no benchmark: the challenger may replace it.
        return IncumbentComparison(None, compare(_scored(challenger_bundle, test), None, metric, tolerance),
                                   len(test), 0, f"champion v{incumbent.version} breaks the serving contract: {exc}")
    seen = training_ids(client, incumbent.run_id)
    note = ""
    if seen is None:
        rows = test
        note = f"champion v{incumbent.version} did not record its training rows; compared on the whole test set"
    else:
        rows = test[~test["object_id"].astype(str).isin(seen)].reset_index(drop=True)
    excluded = len(test) - len(rows)
    if len(rows) < min_rows:
        score = _scored(challenger_bundle, rows).score(metric) if len(rows) else float("nan")
        comparison = Comparison(
            metric, False, score, None, None, rows=len(rows),
            reason=(f"only {len(rows)} test rows unseen by champion v{incumbent.version} "
                    f"(minimum {min_rows}): no evidence the challenger is better; champion stays"),
        )
        return IncumbentComparison(incumbent, comparison, len(rows), excluded, note)
    comparison = compare(_scored(challenger_bundle, rows), _scored(incumbent_bundle, rows), metric, tolerance)
    return IncumbentComparison(incumbent, comparison, len(rows), excluded, note)
