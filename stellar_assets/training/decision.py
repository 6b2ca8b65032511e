"""The steps of `champion_model`: apply the comparison's verdict to the registry, then describe it."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import numpy as np

from stellar_assets.training.gate import IncumbentComparison
from stellar_assets.training.resources import ModelRegistry
from stellar_mlflow.names import TAG_DECISION, TAG_PROMOTION_REASON, TAG_WINDOW_LAST
from stellar_mlflow.registry import get_alias_version, mark_promoted, set_alias


@dataclass(frozen=True)
class Decision:
    decision: str  # "promoted" or "retained"
    champion_version: str | None
    summary: str
    previous_alias: object | None  # the alias's ModelVersion before the decision


def apply_decision(client, name: str, challenger, outcome: IncumbentComparison, week: str) -> Decision:
    """Promote (mark at W, move the alias unless it holds a later model) or retain; tag the version and run."""
    previous_alias = get_alias_version(client, name)
    comparison = outcome.comparison
    if comparison.challenger_wins:
        mark_promoted(client, name, challenger.version, week)
        later = (previous_alias.tags or {}).get(TAG_WINDOW_LAST, "") if previous_alias is not None else ""
        summary = f"promoted v{challenger.version}: {comparison.reason}"
        if later > week:
            # A backfill over history: record the promotion at W, but never move production back in time.
            summary += f"; alias stays at v{previous_alias.version} (trained through {later}, later than {week})"
        else:
            set_alias(client, name, challenger.version)
        decision, champion = "promoted", str(challenger.version)
    else:
        champion = str(outcome.incumbent.version) if outcome.incumbent else None
        lost_by = f" by {-comparison.delta:.4f} {comparison.metric}" if comparison.delta is not None else ""
        summary = f"retained v{champion}, challenger v{challenger.version} lost{lost_by}: {comparison.reason}"
        decision = "retained"
    client.set_model_version_tag(name, challenger.version, TAG_DECISION, f"{decision} at {week}")
    client.set_tag(challenger.run_id, TAG_DECISION, decision)
    client.set_tag(challenger.run_id, TAG_PROMOTION_REASON, summary[:5000])
    return Decision(decision, champion, summary, previous_alias)


def decision_output(registry: ModelRegistry, client, challenger, record: dict, outcome: IncumbentComparison,
                    decided: Decision, week: str) -> dg.Output:
    """The champion_model output and the metadata a person reads in the UI."""
    name, incumbent = registry.model_name, outcome.incumbent
    alias_now = get_alias_version(client, name)
    metadata = {
        "decision": decided.decision,
        "summary": decided.summary,
        "champion_version": dg.MetadataValue.text(str(decided.champion_version)),
        "alias_version": dg.MetadataValue.text(str(alias_now.version) if alias_now else "None"),
        "challenger_version": dg.MetadataValue.text(str(challenger.version)),
        "previous_champion_version": dg.MetadataValue.text(str(incumbent.version) if incumbent else "None"),
        "previous_alias_version": dg.MetadataValue.text(
            str(decided.previous_alias.version) if decided.previous_alias else "None"),
        "comparison": dg.MetadataValue.json(jsonable(outcome.metadata())),
        "metric_deltas": dg.MetadataValue.json(jsonable(outcome.comparison.deltas)),
        "challenger_run": dg.MetadataValue.url(registry.run_url(record["experiment_id"], record["run_id"])),
        "challenger_accuracy": record["evaluation"]["accuracy"],
        "challenger_qso_recall": record["evaluation"]["recall"]["QSO"],
    }
    if decided.champion_version is not None:
        champion = client.get_model_version(name, decided.champion_version)
        metadata["champion_run"] = dg.MetadataValue.url(
            registry.run_url(client.get_run(champion.run_id).info.experiment_id, champion.run_id))
    if outcome.comparison.delta is not None:
        metadata["delta"] = outcome.comparison.delta
    return dg.Output({
        "decision": decided.decision, "week": week, "champion_version": decided.champion_version,
        "alias_version": str(alias_now.version) if alias_now else None,
        "challenger_version": str(challenger.version),
        "previous_champion_version": str(incumbent.version) if incumbent else None,
        "comparison": jsonable(outcome.metadata()), "summary": decided.summary,
    }, metadata=metadata)


def comparison_check_metadata(outcome: IncumbentComparison) -> dict:
    c = outcome.comparison
    metadata = {
        "metric": c.metric,
        "challenger_score": c.challenger_score,
        "champion_version": dg.MetadataValue.text(str(outcome.incumbent.version) if outcome.incumbent else "None"),
        "rows_compared": outcome.rows_compared,
        "rows_excluded_seen_by_champion": outcome.rows_excluded_seen_by_champion,
        "deltas": dg.MetadataValue.json(jsonable(c.deltas)),
    }
    if c.champion_score is not None:
        metadata["champion_score"] = c.champion_score
        metadata["delta"] = c.delta
    if outcome.note:
        metadata["note"] = outcome.note
    return metadata


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
