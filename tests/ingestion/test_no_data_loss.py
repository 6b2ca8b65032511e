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
from stellar_assets.ingestion.assets import QUALITY_CHECK
from stellar_assets.resources.io_managers import ALLOW_SHRINK_TAG, LocalParquetIOManager
from stellar_assets.resources.sources import ObservationSource
from stellar_core.weeks import week_keys_for_mjds

warnings.filterwarnings("ignore", category=dg.BetaWarning)

FIRST, LAST = "2012-01-01", "2012-12-30"  # 53 weeks, 1,000+ real rows
RAW = dg.AssetKey("raw_observations")
FEATURES = dg.AssetKey("observation_features")


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


def test_infinite_blank_and_text_mjds_are_named_not_a_crash(stored, tmp_path, sample):
    store, before = stored
    text = (tmp_path / "base.csv")
    write_csv(sample, text)
    lines = text.read_text().splitlines()
    header = lines[0].split(",")
    weeks = week_keys_for_mjds(sample["MJD"].to_numpy())
    outside_2012 = [k for k in range(20) if not FIRST <= weeks[k] <= LAST][:3]  # rows of weeks not stored
    for k, token in zip(outside_2012, ("inf", "", "abc")):  # one blank or text MJD must not refuse the file
        row = lines[k + 1].split(",")
        row[header.index("MJD")] = token
        lines[k + 1] = ",".join(row)
    (tmp_path / "inf.csv").write_text("\n".join(lines) + "\n")
    result = ingest(tmp_path / "inf.csv", store)
    assert result.success, failure(result)
    check = next(e.event_specific_data for e in result.all_events
                 if e.event_type_value == "ASSET_CHECK_EVALUATION"
                 and e.event_specific_data.check_name == "rows_in_survey_weeks")
    assert "3 with a missing, non-numeric or infinite MJD" in check.metadata["summary"].value
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

    def version_of(result, asset: dg.AssetKey = RAW) -> tuple[str, dict]:
        event = next(e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
                     and e.event_specific_data.materialization.asset_key == asset)
        materialization = event.event_specific_data.materialization
        return materialization.tags["dagster/data_version"], materialization.metadata

    first_run = ingest(sdss_sample_path, store, first=week, last=week)
    same_version, same = version_of(first_run)
    assert same["change_status"].value == "unchanged"
    again = ingest(sdss_sample_path, store, first=week, last=week)
    assert version_of(again)[0] == same_version  # identical rows: downstream stays fresh
    assert version_of(again, FEATURES)[0] == version_of(first_run, FEATURES)[0]

    edited = sample.copy()
    target = edited.index[weeks == week][0]
    edited.loc[target, "u"] = edited.loc[target, "u"] + 0.5
    edited_run = ingest(write_csv(edited, tmp_path / "edited.csv"), store, first=week, last=week)
    new_version, changed = version_of(edited_run)
    assert changed["change_status"].value == "changed" and changed["rows_changed"].value == 1
    assert changed["rows_added"].value == 0 and changed["rows_removed"].value == 0
    assert new_version != same_version
    assert version_of(edited_run, FEATURES)[0] != version_of(first_run, FEATURES)[0]


def test_a_gzip_named_csv_and_declared_span(stored, tmp_path, sample):
    """A file may declare the span it covers: weeks inside it with no rows are really empty."""
    store, before = stored
    path = tmp_path / "later.csv"
    path.write_bytes(gzip.compress(sample.loc[sample["MJD"] >= 57000].to_csv(index=False).encode()))
    result = ingest(path, store, first="2015-01-04", last="2015-01-04", csv_first_week="2015-01-04")
    assert result.success, failure(result)
    assert files(store).items() >= before.items()


def failed_parts(result) -> dict[str, object]:
    """Each failed part of the quality suite -> a failed suite evaluation that names it."""
    parts = {}
    for event in result.all_events:
        data = event.event_specific_data
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and data.check_name == QUALITY_CHECK and not data.passed:
            parts.update({part: data for part in data.metadata["failed_parts"].value.split(", ")})
    return parts


def week_rows(sample: pd.DataFrame, index: int) -> tuple[str, pd.DataFrame]:
    weeks = week_keys_for_mjds(sample["MJD"].to_numpy())
    week = sorted(k for k in set(weeks) if FIRST <= k <= LAST and (weeks == k).sum() >= 10)[index]
    return week, sample.loc[weeks == week].copy()


@pytest.mark.parametrize("digits", [10, 15])
def test_ids_rounded_below_source_precision_fail_the_gate(stored, tmp_path, sample, digits):
    store, before = stored
    rounded = sample.copy()
    for column in ("obj_ID", "spec_obj_ID"):
        rounded[column] = rounded[column].map(lambda v: float(f"{v:.{digits - 1}e}"))
    result = ingest(write_csv(rounded, tmp_path / f"rounded{digits}.csv"), store)
    assert not result.success
    assert "id_precision" in failed_parts(result)
    assert files(store) == before


def test_a_row_without_an_id_is_refused(stored, tmp_path, sample):
    store, before = stored
    week, rows = week_rows(sample, 3)
    rows.iloc[0, rows.columns.get_loc("spec_obj_ID")] = None
    result = ingest(write_csv(rows, tmp_path / "no_id.csv"), store, first=week, last=week)
    assert not result.success
    assert "null_share" in failed_parts(result)
    assert files(store) == before


def test_a_stored_spectrum_arriving_in_another_week_is_refused(stored, tmp_path, sample):
    """The same spec_obj_ID with another MJD would land in a second week: its ID says where it belongs."""
    store, before = stored
    week, rows = week_rows(sample, 4)
    moved = rows.head(1).assign(MJD=rows["MJD"].iloc[0] + 14)
    result = ingest(write_csv(moved, tmp_path / "moved.csv"), store, csv_first_week=FIRST, csv_last_week=LAST)
    assert not result.success
    assert "id_precision" in failed_parts(result)
    assert files(store) == before


def test_a_week_of_unphysical_rows_fails_even_inside_a_good_batch(stored, tmp_path, sample):
    store, before = stored
    week, rows = week_rows(sample, 6)
    broken = sample.copy()
    broken.loc[rows.index, "u"] = 99.0  # every row of one week: well under 1% of the batch
    result = ingest(write_csv(broken, tmp_path / "broken_week.csv"), store)
    assert not result.success
    check = failed_parts(result)["magnitude_range"]
    assert week in str(check.metadata["failures"].value)
    assert files(store) == before


def test_another_source_never_changes_stored_weeks_silently(stored, tmp_path, sample):
    """The code location falls back to the simulator when no CSV is configured: it must not overwrite real weeks."""
    store, before = stored
    week, _ = week_rows(sample, 2)
    simulated = dg.materialize(
        INGESTION_ASSETS, instance=dg.DagsterInstance.ephemeral(), partition_key=week, raise_on_error=False,
        resources={"source": ObservationSource(kind="simulator", simulator_rows_per_week=500),
                   "io_manager": LocalParquetIOManager(base_dir=str(store))})
    assert not simulated.success
    message = failure(simulated)
    assert "hold sdss data and this run would change them with simulator data from simulator(" in message
    assert "stellar/allow-source-change=true" in message
    assert files(store) == before


def test_features_that_would_shrink_are_refused_before_raw_is_written(stored, tmp_path, sample):
    """A magnitude turned into the -9999 sentinel keeps the raw row count but drops a feature row:
    both are checked before either is written."""
    store, before = stored
    week, rows = week_rows(sample, 7)
    edited = sample.copy()
    edited.loc[rows.index[0], "u"] = -9999.0  # SDSS's "no measurement": passes the gate, dropped by features
    result = ingest(write_csv(edited, tmp_path / "one_unphysical.csv"), store, first=week, last=week)
    assert not result.success
    assert f"{week}: features {len(rows)} -> {len(rows) - 1} rows" in failure(result)
    assert files(store) == before
