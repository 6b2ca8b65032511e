"""The comparison both the `beats_champion` check and `champion_model` run, so they cannot disagree.

Which champion: the incumbent at partition W is the champion as of the week
after W, i.e. the most recently promoted version whose training window ended
at or before W. In normal forward operation that is the current `champion`
alias; in a backfill over history it is the champion of that time, never a
model trained on later weeks.

Which rows: the split's out-of-time evaluation rows (the window's most recent
weeks, which the challenger did not train on) that the incumbent did not train
on either (its run records its training object ids).

Which rule: a paired test on those rows (stellar_core.promotion), on the
gate's metric: the challenger replaces the champion when it is better by a
one-sided test (exact McNemar for accuracy, the default; a paired bootstrap for
macro F1 or balanced accuracy); after the champion degraded, also when it is
ahead and non-inferior within the margin. A tie never promotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from stellar_assets.training.resources import PromotionGate
from stellar_core.features import LABEL, feature_matrix, label_indices
from stellar_core.model_bundle import ContractMismatch, ModelBundle
from stellar_core.promotion import PromotionDecision, decide_promotion_on
from stellar_core.training import evaluate
from stellar_core.weeks import Week
from stellar_mlflow.registry import champion_as_of, load_bundle, training_ids


@dataclass
class IncumbentComparison:
    incumbent: ModelVersion | None
    promote: bool
    reason: str
    rows_compared: int
    rows_excluded_seen_by_champion: int
    decision: PromotionDecision | None = None  # None: no champion to test against, or too few rows
    challenger_accuracy: float | None = None
    deltas: dict[str, float] = field(default_factory=dict)  # other metrics, challenger minus champion
    note: str = ""

    def metadata(self) -> dict:
        return {
            "champion_version": self.incumbent.version if self.incumbent else None,
            "promote": self.promote,
            "reason": self.reason,
            "rows_compared": self.rows_compared,
            "rows_excluded_seen_by_champion": self.rows_excluded_seen_by_champion,
            "challenger_accuracy": self.challenger_accuracy,
            "paired_test": self.decision.metadata() if self.decision else None,
            "deltas": self.deltas,
            "note": self.note,
        }


def _correct(bundle: ModelBundle, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-row correctness and the probabilities, scored by the code the server runs."""
    probabilities = bundle.predict_proba_features(feature_matrix(rows))
    return probabilities.argmax(axis=1) == label_indices(rows[LABEL]), probabilities


def _without_champion(challenger: ModelBundle, rows: pd.DataFrame, why: str) -> IncumbentComparison:
    correct, _ = _correct(challenger, rows)
    accuracy = float(correct.mean()) if len(rows) else None
    shown = "n/a" if accuracy is None else f"{accuracy:.4f}"
    return IncumbentComparison(None, True, f"{why}: challenger (accuracy {shown} on {len(rows)} evaluation rows) "
                               "becomes champion", len(rows), 0, challenger_accuracy=accuracy, note=why)


def _unseen_rows(client: MlflowClient, incumbent: ModelVersion, test: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    seen = training_ids(client, incumbent.run_id)
    if seen is None:
        return test, f"champion v{incumbent.version} did not record its training rows; compared on every row"
    return test[~test["object_id"].astype(str).isin(seen)].reset_index(drop=True), ""


def compare_with_incumbent(client: MlflowClient, model_name: str, challenger: ModelVersion, test: pd.DataFrame,
                           partition_key: str, gate: PromotionGate,
                           degradation_retrain: bool = False) -> IncumbentComparison:
    """Score challenger and incumbent with the same code on the same unseen rows, then decide."""
    challenger_bundle = load_bundle(client, challenger)  # the artifacts the server would load
    incumbent = champion_as_of(client, model_name, Week.of(partition_key).next.key)
    if incumbent is not None and incumbent.version == challenger.version:
        incumbent = None
    if incumbent is None:
        return _without_champion(challenger_bundle, test, "no champion as of this week")
    try:
        incumbent_bundle = load_bundle(client, incumbent)
    except ContractMismatch as exc:
        # A champion the server can no longer load is no benchmark: the challenger may replace it.
        return _without_champion(challenger_bundle, test,
                                 f"champion v{incumbent.version} breaks the serving contract: {exc}")
    rows, note = _unseen_rows(client, incumbent, test)
    excluded = len(test) - len(rows)
    if len(rows) < gate.min_comparison_rows:
        reason = (f"only {len(rows)} evaluation rows unseen by champion v{incumbent.version} "
                  f"(minimum {gate.min_comparison_rows}): no evidence the challenger is better; champion stays")
        return IncumbentComparison(incumbent, False, reason, len(rows), excluded, note=note)
    _, challenger_proba = _correct(challenger_bundle, rows)
    _, champion_proba = _correct(incumbent_bundle, rows)
    labels = label_indices(rows[LABEL])
    decision = decide_promotion_on(gate.metric, labels, champion_proba.argmax(axis=1), challenger_proba.argmax(axis=1),
                                   degradation_retrain=degradation_retrain, alpha=gate.alpha,
                                   margin=gate.non_inferiority_margin, resamples=gate.bootstrap_resamples)
    ours, theirs = evaluate(challenger_proba, labels).metrics(), evaluate(champion_proba, labels).metrics()
    deltas = {name: ours[name] - theirs[name] for name in ours
              if name in theirs and name != "test_rows" and not np.isnan(theirs[name])}
    return IncumbentComparison(incumbent, decision.promote, decision.summary, len(rows), excluded, decision,
                               decision.challenger_accuracy, deltas, note)
