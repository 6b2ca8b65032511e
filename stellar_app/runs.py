"""What the application needs to start the code location's jobs and read their results."""

from __future__ import annotations

from typing import Callable

import dagster as dg

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def say(message: str = "") -> None:
    print(message, flush=True)


def materializations(result) -> dict[tuple[str, str], dict]:
    """(asset, partition) -> metadata values of a run's materializations."""
    out = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        out[(materialization.asset_key.to_user_string(), materialization.partition)] = {
            k: v.value for k, v in materialization.metadata.items()}
    return out


def failure_text(result) -> str:
    """One line: why a run failed (a blocking check's own words before the step's exception)."""
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            return f"{evaluation.check_name}: {evaluation.description}"
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return data.user_failure_data.description
            return data.error.message.strip().splitlines()[0] if data.error else event.message
    return "unknown failure"


def print_failures(result, say: Callable[[str], None] = say) -> None:
    """Every failed step and failed check of a run, with the check's metadata."""
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            detail = data.user_failure_data.description if data.user_failure_data else (
                data.error.message if data.error else "")
            say(f"  - {event.step_key}: {detail}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            evaluation = event.event_specific_data
            say(f"  - check {evaluation.check_name} did not pass: {evaluation.description or ''}")
            for key, value in evaluation.metadata.items():
                say(f"      {key}: {getattr(value, 'value', value)}")
