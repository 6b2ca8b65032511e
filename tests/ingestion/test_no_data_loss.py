"""Nothing a source delivers may erase or quietly rewrite stored weeks.

Each test stores a year of real SDSS weeks, feeds the platform a bad or
partial source, and checks that every stored file is byte-identical after,
and that the run says clearly what was wrong.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from stellar_assets.ingestion import INGESTION_ASSETS
from stellar_assets.resources.io_managers import ALLOW_SHRINK_TAG, LocalParquetIOManager
from stellar_assets.resources.sources import ObservationSource
from stellar_core.weeks import week_keys_for_mjds

warnings.filterwarnings("ignore", category=dg.BetaWarning)

FIRST, LAST = "2012-01-01", "2012-12-30"  # 53 weeks, 1,000+ real rows
RAW = dg.AssetKey("raw_observations")


def ingest(csv: Path, store: Path, first: str = FIRST, last: str = LAST, tags: dict | None = None, **source):
    return dg.materialize(
        INGESTION_ASSETS, instance=dg.DagsterInstance.ephemeral(),
        resources={"source": ObservationSource(kind="sdss_csv", csv_path=str(csv), **source),
                   "io_manager": LocalParquetIOManager(base_dir=str(store))},
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last, **(tags or {})},
        raise_on_error=False,
    )


def files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*.parquet"))}


def failure(result) -> str:
    event = next(e for e in result.all_events if e.is_step_failure)
    data = event.step_failure_data
    return (data.user_failure_data.description if data.user_failure_data else "") + (data.error.message if data.error else "")


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def sample(sdss_sample_path) -> pd.DataFrame:
    return pd.read_csv(sdss_sample_path)


@pytest.fixture
def stored(tmp_path, sdss_sample_path) -> tuple[Path, dict[str, bytes]]:
    """A store holding 2012 from the real sample, and its files' bytes."""
    store = tmp_path / "store"
    result = ingest(sdss_sample_path, store)
    assert result.success, failure(result)
    before = files(store)
    assert len(before) == 2 * 53 and sum(len(pd.read_parquet(store / k)) for k in before if k.startswith("raw")) > 1000
    return store, before


def test_header_only_file_fails_and_keeps_every_week(stored, tmp_path, sample):
    store, before = stored
    result = ingest(write_csv(sample.iloc[0:0], tmp_path / "header.csv"), store)
    assert not result.success
    assert "covers no survey week" in failure(result)
    assert files(store) == before


def test_partial_file_would_shrink_stored_weeks_and_is_refused(stored, tmp_path, sample):
    store, before = stored
    result = ingest(write_csv(sample.head(200), tmp_path / "first200.csv"), store)
    assert not result.success
    message = failure(result)
    assert "would lose rows" in message and ALLOW_SHRINK_TAG in message
    assert files(store) == before


def test_file_for_a_later_span_does_not_cover_the_stored_weeks(stored, tmp_path, sample):
    store, before = stored
    later = sample.loc[sample["MJD"] >= 57000]  # from December 2014
    result = ingest(write_csv(later, tmp_path / "later.csv"), store)
    assert not result.success
    assert "covers only 2014-" in failure(result) and "53 of the 53 requested" in failure(result)
    assert files(store) == before


def test_shrinking_with_the_opt_in_tag_is_allowed_and_said(stored, tmp_path, sample):
    store, before = stored
    result = ingest(write_csv(sample.head(200), tmp_path / "first200.csv"), store, tags={ALLOW_SHRINK_TAG: "true"})
    assert result.success, failure(result)
    shrunk = [m for m in result.asset_materializations_for_node("raw_observations")
              if "shrink_allowed_by" in m.metadata]
    assert shrunk and all(m.metadata["rows_removed"].value > 0 for m in shrunk)
    assert files(store) != before


def test_rows_outside_the_survey_are_counted_and_named(stored, tmp_path, sample):
    store, before = stored
    bad = sample.head(4).copy()
    bad["MJD"] = [70000, -5, 0, 1e20]
    source = pd.concat([sample, bad], ignore_index=True)
    result = ingest(write_csv(source, tmp_path / "outside.csv"), store)
    assert result.success, failure(result)
    check = next(e.event_specific_data for e in result.all_events
                 if e.event_type_value == "ASSET_CHECK_EVALUATION"
                 and e.event_specific_data.check_name == "rows_in_survey_weeks")
    assert not check.passed and check.metadata["unplaceable_rows"].value == 4
    assert "after the survey's last week" in check.metadata["summary"].value
    assert str(int(bad["spec_obj_ID"].iloc[0])) in check.metadata["summary"].value
    assert files(store) == before  # the good rows of 2012 are the stored ones


def test_julian_dates_instead_of_mjds_are_refused(stored, tmp_path, sample):
    store, before = stored
    jd = sample.assign(MJD=sample["MJD"] + 2400000.5)
    result = ingest(write_csv(jd, tmp_path / "jd.csv"), store)
    assert not result.success
    assert "look like Julian Dates" in failure(result) and "100%" in failure(result)
    assert files(store) == before


def test_an_infinite_mjd_is_named_not_a_crash(stored, tmp_path, sample):
    store, before = stored
    text = (tmp_path / "base.csv")
    write_csv(sample, text)
    lines = text.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("MJD")] = "inf"
    (tmp_path / "inf.csv").write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    result = ingest(tmp_path / "inf.csv", store)
    assert result.success, failure(result)
    check = next(e.event_specific_data for e in result.all_events
                 if e.event_type_value == "ASSET_CHECK_EVALUATION"
                 and e.event_specific_data.check_name == "rows_in_survey_weeks")
    assert "no finite MJD" in check.metadata["summary"].value
    assert files(store) == before


def test_a_non_utf8_file_says_so(stored, tmp_path, sample):
    store, before = stored
    path = tmp_path / "latin1.csv"
    write_csv(sample, path)
    data = path.read_bytes().replace(b"GALAXY", "GALAXÿ".encode("latin-1"), 1)
    path.write_bytes(data)
    result = ingest(path, store)
    assert not result.success
    assert "is not UTF-8 text" in failure(result) and "line 2" in failure(result)
    assert files(store) == before


def test_ids_rounded_to_15_digits_never_replace_stored_ids(stored, tmp_path, sample):
    store, before = stored
    in_2012 = week_keys_for_mjds(sample["MJD"].to_numpy())
    week = sorted(k for k in set(in_2012) if FIRST <= k <= LAST)[10]
    rows = sample.loc[in_2012 == week].copy()
    rows["spec_obj_ID"] = rows["spec_obj_ID"].map(lambda v: float(f"{v:.14e}"))
    assert (rows["spec_obj_ID"] != sample.loc[in_2012 == week, "spec_obj_ID"]).any()
    result = ingest(write_csv(rows, tmp_path / "rounded.csv"), store, first=week, last=week)
    assert not result.success
    assert "rounded" in failure(result)
    assert files(store) == before


def test_changes_are_reported_per_week_and_versions_follow_content(stored, tmp_path, sample, sdss_sample_path):
    store, _ = stored
    weeks = week_keys_for_mjds(sample["MJD"].to_numpy())
    week = sorted(k for k in set(weeks) if FIRST <= k <= LAST)[5]

    def version_of(result) -> tuple[str, dict]:
        [m] = result.asset_materializations_for_node("raw_observations")
        event = next(e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
                     and e.event_specific_data.materialization.asset_key == RAW)
        return event.event_specific_data.materialization.tags["dagster/data_version"], m.metadata

    same_version, same = version_of(ingest(sdss_sample_path, store, first=week, last=week))
    assert same["change_status"].value == "unchanged"
    again_version, _ = version_of(ingest(sdss_sample_path, store, first=week, last=week))
    assert again_version == same_version  # identical rows: downstream stays fresh

    edited = sample.copy()
    target = edited.index[weeks == week][0]
    edited.loc[target, "u"] = edited.loc[target, "u"] + 0.5
    new_version, changed = version_of(ingest(write_csv(edited, tmp_path / "edited.csv"), store, first=week, last=week))
    assert changed["change_status"].value == "changed" and changed["rows_changed"].value == 1
    assert changed["rows_added"].value == 0 and changed["rows_removed"].value == 0
    assert new_version != same_version


def test_a_gzip_named_csv_and_declared_span(stored, tmp_path, sample):
    """A file may declare the span it covers: weeks inside it with no rows are really empty."""
    store, before = stored
    path = tmp_path / "later.csv"
    path.write_bytes(gzip.compress(sample.loc[sample["MJD"] >= 57000].to_csv(index=False).encode()))
    result = ingest(path, store, first="2015-01-04", last="2015-01-04", csv_first_week="2015-01-04")
    assert result.success, failure(result)
    assert files(store).items() >= before.items()
