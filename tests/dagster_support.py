"""Helpers for tests that run real Dagster jobs (kept apart from tests/support.py so tests that only
need a port do not import Dagster)."""

from __future__ import annotations

import dagster as dg


def metadata_of(result: dg.ExecuteInProcessResult, asset: str, partition: str | None = None) -> dict:
    """The metadata of `asset`'s materialization in `result` (of `partition`, if given)."""
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == dg.AssetKey(asset) and (partition is None or materialization.partition == partition):
            return {k: v.value for k, v in materialization.metadata.items()}
    where = asset if partition is None else f"{asset}[{partition}]"
    raise AssertionError(f"{where} was not materialized in this run")


def check_of(result: dg.ExecuteInProcessResult, name: str):
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == name:
            return evaluation
    raise AssertionError(f"check {name} did not run")
