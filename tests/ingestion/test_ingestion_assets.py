"""The ingestion assets through real Dagster runs: backfills, quality gate, storage."""

from __future__ import annotations

import gzip
import warnings

import boto3
import dagster as dg
import pandas as pd
import pytest

from stellar_assets.ingestion import INGESTION_ASSETS
from stellar_assets.ingestion.assets import PLACEMENT_CHECK, QUALITY_CHECK
from stellar_assets.partitions import observation_weeks
from stellar_assets.resources.io_managers import LocalParquetIOManager, S3ParquetIOManager
from stellar_assets.resources.sources import ObservationSource
from tests.ingestion.servers import SkyServerStub, moto_s3_server

warnings.filterwarnings("ignore", category=dg.BetaWarning)

ALL_WEEKS = observation_weeks.get_partition_keys()
BUSY_WEEK = "2012-10-07"
EMPTY_WEEK = "2000-03-19"  # SDSS has no spectrum in the sample that week
FEATURES = dg.AssetKey("observation_features")
RAW = dg.AssetKey("raw_observations")


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def run(source: ObservationSource, io_manager, instance, first: str, last: str | None = None):
    return dg.materialize(
        INGESTION_ASSETS, instance=instance, resources={"source": source, "io_manager": io_manager},
        tags=range_tags(first, last or first), raise_on_error=False,
    )


def materializations(instance, key: dg.AssetKey, week: str) -> list:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[week]), limit=100)
    return records.records


def check_evaluations(result) -> dict[str, object]:
    return {e.event_specific_data.check_name: e.event_specific_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    data = failure.step_failure_data
    return (data.user_failure_data.description if data.user_failure_data else "") + (data.error.message if data.error else "")


def test_backfill_of_every_week_is_one_run(tmp_path, sdss_sample_path):
    assert observation_weeks.start.date().isoformat() == "2000-03-05" and len(ALL_WEEKS) == 1047
    instance = dg.DagsterInstance.ephemeral()
    source = ObservationSource(kind="sdss_csv", csv_path=str(sdss_sample_path))
    result = run(source, LocalParquetIOManager(base_dir=str(tmp_path)), instance, ALL_WEEKS[0], ALL_WEEKS[-1])
    assert result.success
    assert len(instance.get_run_records()) == 1
    assert len(instance.get_materialized_partitions(FEATURES)) == 1047
    rows = {}
    for event in result.get_asset_materialization_events():
        m = event.event_specific_data.materialization
        if m.asset_key == FEATURES:
            rows[m.partition] = m.metadata["rows"].value
    assert sum(rows.values()) == 20000
    assert sum(1 for n in rows.values() if n) == 643
    empty = pd.read_parquet(tmp_path / "observation_features" / f"{EMPTY_WEEK}.parquet")
    assert len(empty) == 0 and "u_g" in empty.columns
    busy = pd.read_parquet(tmp_path / "observation_features" / f"{BUSY_WEEK}.parquet")
    assert len(busy) == rows[BUSY_WEEK] > 0 and (busy["week"] == BUSY_WEEK).all()
    checks = check_evaluations(result)
    assert all(c.passed for c in checks.values()) and set(checks) == {QUALITY_CHECK, PLACEMENT_CHECK}


def test_preview_shows_ids_at_full_precision(tmp_path, sdss_sample_path):
    """A rounded-looking ID in the preview (1.23766e+18) would send a reader hunting for a spreadsheet."""
    instance = dg.DagsterInstance.ephemeral()
    source = ObservationSource(kind="sdss_csv", csv_path=str(sdss_sample_path))
    assert run(source, LocalParquetIOManager(base_dir=str(tmp_path)), instance, BUSY_WEEK).success
    (record,) = materializations(instance, RAW, BUSY_WEEK)
    preview = record.asset_materialization.metadata["preview"].value
    week = pd.read_parquet(tmp_path / "raw_observations" / f"{BUSY_WEEK}.parquet")
    assert all(str(value) in preview for value in week["spec_obj_ID"].head(5))


def test_empty_week_materializes_and_says_so(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    source = ObservationSource(kind="simulator", simulator_rows_per_week=0)
    result = run(source, LocalParquetIOManager(base_dir=str(tmp_path)), instance, EMPTY_WEEK)
    assert result.success
    (record,) = materializations(instance, RAW, EMPTY_WEEK)
    metadata = record.asset_materialization.metadata
    assert metadata["rows"].value == 0 and "no spectra observed" in metadata["note"].value


def _write_csv(path, frame: pd.DataFrame) -> str:
    path.write_bytes(gzip.compress(frame.to_csv(index=False).encode()))
    return str(path)


def test_bad_batch_fails_its_check_and_keeps_the_good_partition(tmp_path, sdss_sample):
    instance = dg.DagsterInstance.ephemeral()
    io = LocalParquetIOManager(base_dir=str(tmp_path / "store"))
    good = ObservationSource(kind="sdss_csv", csv_path=_write_csv(tmp_path / "good.csv.gz", sdss_sample))
    assert run(good, io, instance, BUSY_WEEK).success
    stored = tmp_path / "store" / "raw_observations" / f"{BUSY_WEEK}.parquet"
    before = stored.read_bytes()

    broken = sdss_sample.copy()
    in_week = broken.index[broken["MJD"].map(lambda m: m).between(56204, 56210)]
    broken.loc[in_week[1], "spec_obj_ID"] = broken.loc[in_week[0], "spec_obj_ID"]
    bad = ObservationSource(kind="sdss_csv", csv_path=_write_csv(tmp_path / "bad.csv.gz", broken))
    result = run(bad, io, instance, BUSY_WEEK)

    assert not result.success
    suite = check_evaluations(result)[QUALITY_CHECK]
    assert not suite.passed and "unique_spec_obj_id" in suite.metadata["failed_parts"].value
    assert "shared by 2 rows" in suite.metadata["failures"].value
    assert suite.metadata["parts"].value["schema"] == "passed"
    assert "nothing was stored" in failure_message(result)
    assert stored.read_bytes() == before
    assert len(materializations(instance, RAW, BUSY_WEEK)) == 1
    assert len(materializations(instance, FEATURES, BUSY_WEEK)) == 1


def test_excel_rounded_export_is_stopped_by_the_uniqueness_check(tmp_path, excel_rounded_path):
    instance = dg.DagsterInstance.ephemeral()
    source = ObservationSource(kind="sdss_csv", csv_path=str(excel_rounded_path))
    result = run(source, LocalParquetIOManager(base_dir=str(tmp_path)), instance, ALL_WEEKS[0], ALL_WEEKS[-1])
    assert not result.success
    check = check_evaluations(result)[QUALITY_CHECK]
    assert not check.passed and "unique_spec_obj_id" in check.metadata["failed_parts"].value
    assert "spreadsheet round trip" in check.metadata["failures"].value
    assert not instance.get_materialized_partitions(RAW)
    assert not list(tmp_path.rglob("*.parquet"))


@pytest.mark.parametrize("mangle, message", [
    (lambda data: b"", "is empty"),
    (lambda data: data[: len(data) // 3], "truncated or corrupt gzip"),
])
def test_unreadable_file_fails_clearly(tmp_path, sdss_sample_path, mangle, message):
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(mangle(sdss_sample_path.read_bytes()))
    result = run(ObservationSource(kind="sdss_csv", csv_path=str(path)),
                 LocalParquetIOManager(base_dir=str(tmp_path)), dg.DagsterInstance.ephemeral(), BUSY_WEEK)
    assert not result.success
    assert message in failure_message(result)


def test_sentinel_row_is_dropped_and_counted(tmp_path, sdss_sample):
    raw = sdss_sample.copy()
    row = raw.index[raw["MJD"].between(56204, 56210)][0]
    raw.loc[row, ["u", "g", "z"]] = -9999.0
    source = ObservationSource(kind="sdss_csv", csv_path=_write_csv(tmp_path / "s.csv.gz", raw))
    instance = dg.DagsterInstance.ephemeral()
    result = run(source, LocalParquetIOManager(base_dir=str(tmp_path)), instance, BUSY_WEEK)
    assert result.success
    (record,) = materializations(instance, FEATURES, BUSY_WEEK)
    metadata = record.asset_materialization.metadata
    assert metadata["dropped_rows"].value == 1
    assert metadata["dropped_by_reason"].value == {"sentinel_magnitude": 1}
    assert check_evaluations(result)[QUALITY_CHECK].metadata["sentinel_rows"].value == 1


def test_skyserver_source_through_dagster(tmp_path, sdss_sample):
    with SkyServerStub(sdss_sample) as stub:
        source = ObservationSource(kind="skyserver", skyserver_url=stub.url, skyserver_backoff_seconds=0.01)
        result = run(source, LocalParquetIOManager(base_dir=str(tmp_path)), dg.DagsterInstance.ephemeral(),
                     "2012-09-30", "2012-10-14")
        assert result.success
        assert len(stub.requests) == 3  # one query per week
    weeks = pd.concat(pd.read_parquet(p) for p in (tmp_path / "observation_features").glob("*.parquet"))
    expected = sdss_sample[sdss_sample["MJD"].between(56200, 56220)]
    assert len(weeks) == len(expected) > 0


def test_s3_io_manager_on_moto_server(monkeypatch, tmp_path, sdss_sample_path):
    from dagster_aws.s3 import S3Resource

    with moto_s3_server(monkeypatch) as endpoint:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="stellar-data")
        io = S3ParquetIOManager(s3=S3Resource(endpoint_url=endpoint), bucket="stellar-data", prefix="assets")
        source = ObservationSource(kind="sdss_csv", csv_path=str(sdss_sample_path))
        assert run(source, io, dg.DagsterInstance.ephemeral(), "2012-09-30", "2012-10-14").success
        keys = {o["Key"] for o in boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket="stellar-data")["Contents"]}
        assert "assets/observation_features/2012-10-07.parquet" in keys
        assert "assets/raw_observations/2012-09-30.parquet" in keys
