"""raw_observations' checks per week: a run over a range of weeks records one evaluation per week per
check, carrying its week and pointing at that week's materialization of the run (real Dagster runs on
an ephemeral instance, read back through the instance's check history)."""

from __future__ import annotations

import gzip
import warnings

import dagster as dg
import pandas as pd

from stellar_assets.ingestion import INGESTION_ASSETS
from stellar_assets.ingestion.assets import BATCH_FAILURE_NOTE, PLACEMENT_CHECK, QUALITY_CHECK, QUALITY_PARTS
from stellar_assets.resources.io_managers import LocalParquetIOManager
from stellar_assets.resources.sources import ObservationSource
from stellar_core.weeks import week_keys_for_mjds

warnings.filterwarnings("ignore", category=dg.BetaWarning)

RAW = dg.AssetKey("raw_observations")
WEEKS = ["2012-10-07", "2012-10-14", "2012-10-21"]  # 90, 86 and 12 spectra in the sample
CHECKS = [QUALITY_CHECK, PLACEMENT_CHECK]


def _ingest(csv_path, data_dir, instance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        INGESTION_ASSETS, instance=instance, raise_on_error=False,
        resources={"source": ObservationSource(kind="sdss_csv", csv_path=str(csv_path)),
                   "io_manager": LocalParquetIOManager(base_dir=str(data_dir))},
        tags={"dagster/asset_partition_range_start": WEEKS[0], "dagster/asset_partition_range_end": WEEKS[-1]})


def evaluations_of_run(instance, run_id: str, check: str) -> dict[str, object]:
    """The check's evaluations in run `run_id`, by week (asserting one per week, none left planned)."""
    records = [r for r in instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(RAW, check), limit=1000) if r.run_id == run_id]
    weeks = [r.partition for r in records]
    assert sorted(weeks, key=str) == WEEKS, f"{check}: evaluations for {weeks}, expected one per week of {WEEKS}"
    assert all(r.status.value in ("SUCCEEDED", "FAILED") for r in records), f"{check} left planned: {records}"
    return {r.partition: r.event.dagster_event.event_specific_data for r in records}


def part_verdicts(evaluation) -> dict[str, str]:
    """The suite check's verdict on each of its parts (metadata `parts`)."""
    return evaluation.metadata["parts"].value


def materializations_of_run(instance, run_id: str) -> dict[str, object]:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=RAW, asset_partitions=WEEKS),
                                              limit=100).records
    return {r.partition_key: r for r in records if r.run_id == run_id}


def test_ranged_run_checks_each_week_against_its_own_materialization(tmp_path, sdss_sample_path):
    instance = dg.DagsterInstance.ephemeral()
    first = _ingest(sdss_sample_path, tmp_path, instance)
    second = _ingest(sdss_sample_path, tmp_path, instance)  # a previous materialization to not point at
    assert first.success and second.success
    materialized = materializations_of_run(instance, second.run_id)
    assert sorted(materialized) == WEEKS
    for check in CHECKS:
        for week, evaluation in evaluations_of_run(instance, second.run_id, check).items():
            assert evaluation.partition == week and evaluation.passed, (check, week)
            target = evaluation.target_materialization_data
            assert target is not None, f"{check}[{week}] points at no materialization"
            assert (target.run_id, target.storage_id) == (second.run_id, materialized[week].storage_id), (check, week)
    suite = evaluations_of_run(instance, second.run_id, QUALITY_CHECK)
    assert [suite[w].metadata["rows"].value for w in WEEKS] == [90, 86, 12]
    assert all(part_verdicts(suite[w]) == {part: "passed" for part in QUALITY_PARTS} for w in WEEKS)


def _write_csv(path, frame: pd.DataFrame):
    path.write_bytes(gzip.compress(frame.to_csv(index=False).encode()))
    return path


def _weeks_of(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(week_keys_for_mjds(frame["MJD"].to_numpy()), index=frame.index)


def test_a_broken_week_fails_its_own_check_and_nothing_is_stored(tmp_path, sdss_sample):
    broken = sdss_sample.copy()
    broken.loc[_weeks_of(broken) == WEEKS[1], "u"] = 99.0  # every u of one week unphysical
    instance = dg.DagsterInstance.ephemeral()
    result = _ingest(_write_csv(tmp_path / "broken.csv.gz", broken), tmp_path / "store", instance)
    assert not result.success
    assert not instance.get_materialized_partitions(RAW)
    suite = evaluations_of_run(instance, result.run_id, QUALITY_CHECK)
    broken_week = suite[WEEKS[1]]
    assert not broken_week.passed and WEEKS[1] in broken_week.description
    assert broken_week.description.startswith("magnitude_range failed.")
    assert broken_week.metadata["failed_parts"].value == "magnitude_range"
    verdicts = part_verdicts(broken_week)
    assert verdicts["magnitude_range"].startswith("failed") and verdicts["redshift_range"] == "passed"
    assert suite[WEEKS[0]].passed and suite[WEEKS[2]].passed
    assert all(e.target_materialization_data is None for e in suite.values())  # nothing was stored


def test_a_batch_failure_no_week_explains_fails_every_week(tmp_path, sdss_sample):
    duplicated = sdss_sample.copy()
    weeks = _weeks_of(duplicated)
    first_row, last_row = duplicated.index[weeks == WEEKS[0]][0], duplicated.index[weeks == WEEKS[2]][0]
    duplicated.loc[last_row, "spec_obj_ID"] = duplicated.loc[first_row, "spec_obj_ID"]  # one ID in two weeks
    instance = dg.DagsterInstance.ephemeral()
    result = _ingest(_write_csv(tmp_path / "dup.csv.gz", duplicated), tmp_path / "store", instance)
    assert not result.success
    suite = evaluations_of_run(instance, result.run_id, QUALITY_CHECK)
    assert not any(e.passed for e in suite.values())
    assert all(BATCH_FAILURE_NOTE in e.description for e in suite.values())
    assert all("unique_spec_obj_id" in e.metadata["failed_parts"].value.split(", ") for e in suite.values())
