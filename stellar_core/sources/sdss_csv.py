"""SDSS17-format CSV files: local or s3://, plain or gzip."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import pandas as pd

from stellar_core.contract import MJD_COLUMN
from stellar_core.sources.errors import SourceError

GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(location: str, s3_endpoint_url: str | None = None) -> bytes:
    """The file's bytes from a local path or an s3:// URL."""
    if location.startswith("s3://"):
        import boto3  # only needed for S3 locations
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = location[len("s3://"):].partition("/")
        try:
            client = boto3.client("s3", endpoint_url=s3_endpoint_url)
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise SourceError(f"cannot read {location}: {exc.response.get('Error', {}).get('Message', exc)}") from exc
        except BotoCoreError as exc:
            raise SourceError(f"cannot reach S3 for {location}: {exc}") from exc
    path = Path(location).expanduser()
    if not path.exists():
        raise SourceError(f"SDSS CSV file not found: {path}")
    return path.read_bytes()


def parse_sdss_csv(data: bytes, location: str = "<bytes>") -> pd.DataFrame:
    """Parse SDSS17 CSV bytes (gzip detected by its magic number, not the file name)."""
    if not data:
        raise SourceError(f"{location} is empty (0 bytes): expected an SDSS17 CSV with a header row")
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise SourceError(
                f"{location} is a truncated or corrupt gzip file ({exc}); download it again"
            ) from exc
    _require_utf8(data, location)
    try:
        frame = pd.read_csv(io.BytesIO(data), low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise SourceError(f"{location} holds no CSV header or rows") from exc
    except pd.errors.ParserError as exc:
        raise SourceError(f"{location} is not a well-formed CSV: {exc}") from exc
    if MJD_COLUMN not in frame.columns:
        raise SourceError(
            f"{location} has no {MJD_COLUMN!r} column, so its rows cannot be placed in observation weeks; "
            f"columns found: {list(frame.columns)}"
        )
    # Numeric, whole, finite and inside the survey is for placement to judge and report row by
    # row (stellar_core.sources.placement): one blank MJD does not refuse the whole file.
    frame[MJD_COLUMN] = pd.to_numeric(frame[MJD_COLUMN], errors="coerce")
    return frame


def _require_utf8(data: bytes, location: str) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SourceError(
            f"{location} is not UTF-8 text: byte {data[exc.start:exc.start + 1]!r} at offset {exc.start} "
            f"(line {line}); save the file as UTF-8 CSV"
        ) from exc
