"""Asset checks of weekly assets, one evaluation per week.

Dagster 1.13 gives an AssetCheckResult the step's partition only when the step has exactly one: in a run
over a range of weeks (BackfillPolicy.single_run) a result gets no partition, and a result yielded before
the asset's output points at the materialization before this run's. So the weekly assets emit an
AssetCheckEvaluation per week instead, carrying the week and, when yielded after the asset's output, that
week's materialization of this run. A batch refused before anything is stored has no materialization to
point at: its evaluations carry only the week.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluation,
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.events import DagsterEventType

from stellar_assets.partitions import observation_weeks

MAX_DESCRIPTION = 2000  # what the UI shows of a check's description without truncating


@dataclass(frozen=True)
class WeekCheck:
    """One check's verdict on one week."""

    name: str
    week: str
    passed: bool
    description: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR


def weekly_check_spec(asset: str, name: str, description: str, blocking: bool) -> dg.AssetCheckSpec:
    """A check judged week by week: partitioned like its asset, so the UI shows it per week."""
    with warnings.catch_warnings():  # partitioned checks are "preview" in 1.13: chosen knowingly, said once here
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, partitions_def=observation_weeks, blocking=blocking,
                                 description=description)


def week_check_events(context: dg.AssetExecutionContext, checks: Iterable[WeekCheck],
                      materialized: bool) -> Iterator[dg.Output | AssetCheckEvaluation]:
    """The events of `checks`: each check's output once (Dagster requires it of a selected check),
    then one evaluation per week. With `materialized`, yield these after the asset's output: each
    evaluation then points at its week's materialization of this run."""
    targets = run_materializations(context) if materialized else {}
    selected = context.selected_asset_check_keys
    emitted: set[str] = set()
    for check in checks:
        key = dg.AssetCheckKey(context.asset_key, check.name)
        if key not in selected:
            continue
        if check.name not in emitted:
            emitted.add(check.name)
            yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
        target = targets.get(check.week)
        if materialized and target is None:
            context.log.warning("check %s[%s]: no materialization of %s[%s] in this run to attach it to",
                                check.name, check.week, context.asset_key.to_user_string(), check.week)
        yield AssetCheckEvaluation(
            asset_key=context.asset_key, check_name=check.name, passed=check.passed, partition=check.week,
            target_materialization_data=target, severity=check.severity,
            description=check.description[:MAX_DESCRIPTION], metadata=dict(check.metadata),
            blocking=context.assets_def.get_spec_for_check_key(key).blocking)


def run_materializations(context: dg.AssetExecutionContext) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """This run's materialization of each week of the asset, by week (read once the output was yielded)."""
    records = context.instance.get_records_for_run(
        context.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    targets = {}
    for record in records:
        entry = record.event_log_entry
        materialization = entry.asset_materialization
        if materialization is not None and materialization.asset_key == context.asset_key:
            targets[materialization.partition] = AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=entry.run_id, timestamp=entry.timestamp)
    return targets


def markdown_table(frame) -> str:
    """A small DataFrame as a Markdown table for metadata, every value as Python prints it. (pandas'
    to_markdown goes through tabulate, which shows 6 significant digits: an SDSS ID 1237664879951151104
    would read 1.23766e+18, as if a spreadsheet had rounded it.)"""
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False, name=None)]
    return "\n".join(lines)


def percent(share: float) -> str:
    """A share as people write it: 0.99 -> '99%', 0.025 -> '2.5%'."""
    return f"{rounded(100 * share)}%"


def rounded(value: float | None, digits: int = 3) -> float | int | None:
    """`value` to `digits` significant digits, for people (0.123456 -> 0.123, 1234.5 -> 1230);
    integral results come back as int, so they print without '.0'."""
    if value is None or not math.isfinite(value) or value == 0:
        return value
    places = digits - 1 - math.floor(math.log10(abs(value)))
    result = round(value, places)
    return int(result) if float(result).is_integer() else result


def rounded_float(value: float, digits: int = 3) -> dg.FloatMetadataValue:
    """A float metadata value rounded for people: always a float (MetadataValue.float refuses the int
    that `rounded` gives whole values, e.g. an accuracy of exactly 1)."""
    return dg.MetadataValue.float(float(rounded(float(value), digits)))
