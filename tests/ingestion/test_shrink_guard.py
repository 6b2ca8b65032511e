"""The storage rule every weekly asset shares: a week never loses rows unless the run opted in."""


import dagster as dg
import pandas as pd
import pytest

from stellar_assets.resources.io_managers import ALLOW_SHRINK_TAG, ROW_COUNT_FIELD, LocalParquetIOManager

WEEKS = dg.WeeklyPartitionsDefinition(start_date="2012-01-01", end_date="2012-01-22", day_offset=0, fmt="%Y-%m-%d")


class Rows(dg.Config):
    rows: int


@dg.asset(partitions_def=WEEKS)
def weekly_table(config: Rows) -> pd.DataFrame:
    return pd.DataFrame({"object_id": [str(k) for k in range(config.rows)]})


@dg.asset(partitions_def=WEEKS, metadata={ROW_COUNT_FIELD: "rows_current"})
def weekly_report(config: Rows) -> dict:
    return {"rows_current": config.rows, "status": "ok"}


def run(asset, store, rows: int, tags: dict | None = None):
    return dg.materialize(
        [asset], partition_key="2012-01-08", instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        resources={"io_manager": LocalParquetIOManager(base_dir=str(store))}, tags=tags or {},
        run_config={"ops": {asset.op.name: {"config": {"rows": rows}}}},
    )


def error_text(result) -> str:
    event = next(e for e in result.all_events if e.is_step_failure)
    error, text = event.step_failure_data.error, ""
    while error is not None:  # the IO manager's error is the cause of Dagster's wrapper
        text, error = text + error.message, error.cause
    return text


@pytest.mark.parametrize("asset,suffix", [(weekly_table, ".parquet"), (weekly_report, ".json")])
def test_a_week_never_shrinks_without_the_opt_in(tmp_path, asset, suffix):
    path = tmp_path / asset.key.path[-1] / f"2012-01-08{suffix}"
    assert run(asset, tmp_path, rows=5).success
    stored = path.read_bytes()

    assert run(asset, tmp_path, rows=5).success  # the same size is fine
    assert run(asset, tmp_path, rows=7).success  # more is fine
    grown = path.read_bytes()

    refused = run(asset, tmp_path, rows=0)
    assert not refused.success
    message = error_text(refused)
    assert "refusing to replace 1 stored week(s) with fewer rows (2012-01-08: 7 -> 0 rows)" in message
    assert ALLOW_SHRINK_TAG in message
    assert path.read_bytes() == grown != stored

    assert run(asset, tmp_path, rows=2, tags={ALLOW_SHRINK_TAG: "true"}).success
    assert path.read_bytes() != grown


def test_json_without_a_row_count_field_is_not_judged(tmp_path):
    @dg.asset(partitions_def=WEEKS, name="free_form")
    def free_form(config: Rows) -> dict:
        return {"n": config.rows}

    assert run(free_form, tmp_path, rows=5).success
    assert run(free_form, tmp_path, rows=1).success
