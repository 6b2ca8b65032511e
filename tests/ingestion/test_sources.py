"""Sources against real files and real local servers (SkyServer stub over HTTP, moto's S3)."""

from __future__ import annotations

import gzip

import boto3
import pytest

from stellar_core.sources import SourceError
from stellar_core.sources.sdss_csv import parse_sdss_csv, read_bytes
from stellar_core.sources.skyserver import SkyServerClient
from stellar_core.weeks import week_mjd_range
from stellar_assets.partitions import survey_span
from stellar_assets.resources.sources import ObservationSource
from tests.ingestion.servers import SkyServerStub, moto_s3_server

BUSY_WEEK = "2012-10-07"  # holds rows in the shared sample


def test_csv_plain_and_gzip_read_the_same(tmp_path, sdss_sample_path):
    plain = tmp_path / "sdss.csv"
    plain.write_bytes(gzip.decompress(sdss_sample_path.read_bytes()))
    a = parse_sdss_csv(read_bytes(str(plain)))
    b = parse_sdss_csv(read_bytes(str(sdss_sample_path)))
    assert len(a) == len(b) == 20000
    assert a.equals(b)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\n\n", "no CSV header"),
        (b"obj_ID,u,g\n1,2,3\n", "no 'MJD' column"),
    ],
)
def test_csv_bad_files_get_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        parse_sdss_csv(read_bytes(str(path)), str(path))


def test_truncated_gzip_is_named(tmp_path, sdss_sample_path):
    data = sdss_sample_path.read_bytes()
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="truncated or corrupt gzip"):
        parse_sdss_csv(read_bytes(str(path)), str(path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        read_bytes(str(tmp_path / "nope.csv"))


def test_csv_from_s3_through_moto_server(monkeypatch, sdss_sample_path):
    with moto_s3_server(monkeypatch) as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="sky")
        s3.put_object(Bucket="sky", Key="in/sdss17.csv.gz", Body=sdss_sample_path.read_bytes())
        source = ObservationSource(kind="sdss_csv", csv_path="s3://sky/in/sdss17.csv.gz", s3_endpoint_url=endpoint)
        rows = source.fetch([BUSY_WEEK], survey_span()).rows
        first, last = week_mjd_range(BUSY_WEEK)
        assert len(rows) > 0 and rows["MJD"].between(first, last).all()
        with pytest.raises(SourceError, match="cannot read s3://sky/missing.csv"):
            ObservationSource(kind="sdss_csv", csv_path="s3://sky/missing.csv", s3_endpoint_url=endpoint).fetch([BUSY_WEEK], survey_span())


def test_skyserver_week_matches_the_csv(sdss_sample):
    with SkyServerStub(sdss_sample) as stub:
        client = SkyServerClient(url=stub.url, timeout_seconds=5, backoff_seconds=0.01)
        first, last = week_mjd_range(BUSY_WEEK)
        rows = client.week_rows(first, last)
        expected = sdss_sample[sdss_sample["MJD"].between(first, last)]
        assert len(rows) == len(expected) > 0
        assert sorted(rows["u"]) == sorted(expected["u"])
        assert "SpecObj AS s JOIN PhotoObj AS p" in stub.requests[0]
        assert f"BETWEEN {first} AND {last}" in stub.requests[0]


def test_skyserver_retries_server_errors_then_succeeds(sdss_sample):
    with SkyServerStub(sdss_sample) as stub:
        stub.faults = ["error500", "hang"]
        client = SkyServerClient(url=stub.url, timeout_seconds=0.5, max_attempts=3, backoff_seconds=0.01)
        rows = client.week_rows(*week_mjd_range(BUSY_WEEK))
        assert len(rows) > 0
        assert len(stub.requests) == 3


def test_skyserver_error_page_and_exhausted_retries_are_clear(sdss_sample):
    with SkyServerStub(sdss_sample) as stub:
        client = SkyServerClient(url=stub.url, timeout_seconds=5, max_attempts=2, backoff_seconds=0.01)
        stub.faults = ["error_page"]
        with pytest.raises(SourceError, match="error page instead of CSV: .*Incorrect syntax"):
            client.week_rows(*week_mjd_range(BUSY_WEEK))
        stub.faults = ["error500", "error500"]
        with pytest.raises(SourceError, match="failed 2 times; last: HTTP 500"):
            client.week_rows(*week_mjd_range(BUSY_WEEK))


def test_skyserver_unreachable_is_clear():
    client = SkyServerClient(url="http://127.0.0.1:9/SqlSearch", timeout_seconds=1, max_attempts=2, backoff_seconds=0.01)
    with pytest.raises(SourceError, match="connection failed"):
        client.week_rows(*week_mjd_range(BUSY_WEEK))
