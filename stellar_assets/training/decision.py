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
    if outcome.promote:
        mark_promoted(client, name, challenger.version, week)
        later = (previous_alias.tags or {}).get(TAG_WINDOW_LAST, "") if previous_alias is not None else ""
        summary = f"promoted v{challenger.version}: {outcome.reason}"
        if later > week:
            # A backfill over history: record the promotion at W, but never move production back in time.
            summary += f"; alias stays at v{previous_alias.version} (trained through {later}, later than {week})"
        else:
            set_alias(client, name, challenger.version)
        decision, champion = "promoted", str(challenger.version)
    else:
        champion = str(outcome.incumbent.version) if outcome.incumbent else None
        summary = f"retained v{champion}, challenger v{challenger.version} not promoted: {outcome.reason}"
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
        "metric_deltas": dg.MetadataValue.json(jsonable(outcome.deltas)),
        "challenger_run": dg.MetadataValue.url(registry.run_url(record["experiment_id"], record["run_id"])),
        "challenger_accuracy": record["evaluation"]["accuracy"],
        "challenger_qso_recall": record["evaluation"]["recall"]["QSO"],
    }
    if decided.champion_version is not None:
        champion = client.get_model_version(name, decided.champion_version)
        metadata["champion_run"] = dg.MetadataValue.url(
            registry.run_url(client.get_run(champion.run_id).info.experiment_id, champion.run_id))
    if outcome.decision is not None:
        metadata.update(paired_test_metadata(outcome.decision))
    return dg.Output({
        "decision": decided.decision, "week": week, "champion_version": decided.champion_version,
        "alias_version": str(alias_now.version) if alias_now else None,
        "challenger_version": str(challenger.version),
        "previous_champion_version": str(incumbent.version) if incumbent else None,
        "comparison": jsonable(outcome.metadata()), "summary": decided.summary,
    }, metadata=metadata)


def paired_test_metadata(decision) -> dict:
    """The paired table, the test and the rule, as a person reads them in the UI."""
    table = ("| | challenger right | challenger wrong |\n|---|---|---|\n"
             f"| champion right | {decision.both_right} | {decision.champion_only} |\n"
             f"| champion wrong | {decision.challenger_only} | {decision.both_wrong} |")
    low, high = decision.interval
    metric = {}
    if decision.test_key == "randomization":  # accuracy's values are the table's; another metric's are shown beside
        metric = {f"champion_{decision.metric}": round(decision.champion_value, 4),
                  f"challenger_{decision.metric}": round(decision.challenger_value, 4),
                  "resamples": decision.resamples, "seed": decision.seed}
    return {
        "paired_table": dg.MetadataValue.md(table),
        "gate_metric": decision.metric,
        "rule": decision.rule,
        f"{decision.test_key}_p_value": round(decision.p_value, 4),
        "alpha": decision.alpha,
        **metric,
        f"{decision.metric}_difference_points": round(decision.difference * 100, 2),
        f"interval_{round(decision.confidence * 100)}_points": f"[{low * 100:+.2f}, {high * 100:+.2f}]",
        "margin_points": round(decision.margin * 100, 2),
        "degradation_retrain": decision.degradation_retrain,
        "delta": round(decision.difference, 6),
    }


def comparison_check_metadata(outcome: IncumbentComparison) -> dict:
    metadata = {
        "decision": "promote" if outcome.promote else "keep champion",
        "champion_version": dg.MetadataValue.text(str(outcome.incumbent.version) if outcome.incumbent else "None"),
        "rows_compared": outcome.rows_compared,
        "rows_excluded_seen_by_champion": outcome.rows_excluded_seen_by_champion,
        "deltas": dg.MetadataValue.json(jsonable(outcome.deltas)),
    }
    if outcome.challenger_accuracy is not None:
        metadata["challenger_accuracy"] = round(outcome.challenger_accuracy, 4)
    if outcome.decision is not None:
        metadata["champion_accuracy"] = round(outcome.decision.champion_accuracy, 4)
        metadata.update(paired_test_metadata(outcome.decision))
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
