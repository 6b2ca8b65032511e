"""Parquet storage of weekly asset partitions: a local folder by default, S3 (MinIO) for a team.

Layout: <root>/<asset key path>/<partition key>.parquet (or .json for small
non-table values, such as model summaries). A run over a range of weeks hands
the IO manager a dict {week: DataFrame}; loading a range gives one DataFrame
with the weeks concatenated in order. Writes are atomic per partition: a failed
run never leaves a half-written file in place of good data.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr


# The run tag with which a user says "this run may store fewer rows in a week than it holds".
ALLOW_SHRINK_TAG = "stellar/allow-shrink"
# Asset metadata naming the field of a JSON partition that counts its rows (for the shrink rule);
# NOT_GUARDED exempts a derived asset whose size follows its configuration, not lost data.
ROW_COUNT_FIELD = "stellar/row_count_field"
NOT_GUARDED = "none"

# A Parquet file ends with its metadata, the metadata's length (4 bytes) and PARQUET_MAGIC.
PARQUET_MAGIC = b"PAR1"
# The first read of a file's tail: a week's footer is a few kB, so one read holds it.
FOOTER_READ_BYTES = 64 * 1024


class StorageError(RuntimeError):
    pass


def shrink_allowed(run_tags: dict[str, str]) -> bool:
    return str(run_tags.get(ALLOW_SHRINK_TAG, "")).strip().lower() in ("1", "true", "yes")


def refuse_shrinking(what: str, shrinking: dict[str, tuple[int, int]], run_tags: dict[str, str], log) -> None:
    """The one rule for every weekly store: a week may lose rows only when the run opted in.

    `shrinking` maps week -> (rows stored, rows the run would store) for the weeks that would shrink."""
    if not shrinking:
        return
    if shrink_allowed(run_tags):
        log.warning("%s: %d stored week(s) replaced with fewer rows, as the run's %s tag allows: %s",
                    what, len(shrinking), ALLOW_SHRINK_TAG, _shrink_list(shrinking))
        return
    raise StorageError(
        f"{what}: refusing to replace {len(shrinking)} stored week(s) with fewer rows "
        f"({_shrink_list(shrinking)}); nothing was written. If the smaller data is right, run again "
        f"with the run tag {ALLOW_SHRINK_TAG}=true (stellar ingest --allow-shrink)."
    )


def _run_tags(context: dg.OutputContext) -> dict[str, str]:
    try:
        return dict(context.step_context.run_tags)
    except dg.DagsterInvariantViolationError:  # an output context built outside a run
        return {}


def _relpath(asset_key: dg.AssetKey, partition_key: str | None, suffix: str) -> str:
    key_path = "/".join(asset_key.path)
    return f"{key_path}/{partition_key}{suffix}" if partition_key else f"{key_path}{suffix}"


def _row_count(value: Any, field: str | None) -> int | None:
    if isinstance(value, pd.DataFrame):
        return len(value)
    if field and isinstance(value, dict) and isinstance(value.get(field), int):
        return value[field]
    return None


def _shrink_list(shrinking: dict[str, tuple[int, int]], limit: int = 10) -> str:
    items = [f"{key}: {stored} -> {new} rows" for key, (stored, new) in list(shrinking.items())[:limit]]
    more = f", and {len(shrinking) - limit} more" if len(shrinking) > limit else ""
    return ", ".join(items) + more


class _PartitionedStore:
    """What both backends share; a backend supplies _write, _read and _exists."""

    def _write(self, relpath: str, data: bytes) -> None:
        raise NotImplementedError

    def _read(self, relpath: str) -> bytes:
        raise NotImplementedError

    def _exists(self, relpath: str) -> bool:
        raise NotImplementedError

    def _read_tail(self, relpath: str, size: int) -> bytes | None:
        """The last `size` bytes (all of a shorter file), None when nothing is stored there."""
        raise NotImplementedError

    def _location(self, relpath: str) -> str:
        raise NotImplementedError

    @staticmethod
    def _relpath(context, partition_key: str | None, suffix: str) -> str:
        return _relpath(context.asset_key, partition_key, suffix)

    # ---- reading what is stored, outside a run's inputs (ingestion compares against it)
    def stored(self, asset_key: dg.AssetKey, partition_key: str | None = None, default: Any = None) -> Any:
        """The stored value of one partition (a DataFrame or a JSON value), `default` if never stored."""
        for suffix, decode in ((".parquet", _decode_parquet), (".json", _decode_json)):
            relpath = _relpath(asset_key, partition_key, suffix)
            if self._exists(relpath):
                return decode(self._read(relpath))
        return default

    def stored_table(self, asset_key: dg.AssetKey, partition_keys: list[str]) -> pd.DataFrame:
        """The stored table partitions among `partition_keys` as one DataFrame (weeks never stored are skipped)."""
        frames = [frame for key in partition_keys
                  if isinstance(frame := self.stored(asset_key, key), pd.DataFrame) and len(frame)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def stored_rows(self, asset_key: dg.AssetKey, partition_key: str) -> int | None:
        """Rows of a stored table partition, None when none is stored.

        Read from the Parquet footer alone: one ranged read of the file's tail
        (two if the footer is larger), never the whole week, for every week a
        backfill writes over."""
        relpath = _relpath(asset_key, partition_key, ".parquet")
        tail = self._read_tail(relpath, FOOTER_READ_BYTES)
        if tail is None:
            return None
        if len(tail) < 12 or tail[-4:] != PARQUET_MAGIC:
            raise StorageError(f"{self._location(relpath)} is not a Parquet file (it ends {tail[-4:]!r})")
        footer = int.from_bytes(tail[-8:-4], "little") + 8  # the metadata, its length and the magic
        if footer > len(tail):
            tail = self._read_tail(relpath, footer)
        return pq.read_metadata(io.BytesIO(tail[-footer:])).num_rows

    # ---- Dagster IO manager protocol
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            keys = list(context.asset_partition_keys)
            if not isinstance(obj, dict) or set(obj) != set(keys):
                raise StorageError(
                    f"{context.asset_key.to_user_string()}: a run over {len(keys)} partitions must return "
                    f"a dict keyed by exactly those partition keys"
                )
            self._refuse_shrinking(context, obj)
            # Serialise everything first, then write: a bad value fails before any file changes.
            encoded = {key: self._encode(obj[key]) for key in keys}
            for key in keys:
                suffix, data = encoded[key]
                self._write(self._relpath(context, key, suffix), data)
            context.add_output_metadata({"storage": dg.MetadataValue.text(self._location(self._relpath(context, None, "/")))})
            return
        key = context.asset_partition_key if context.has_asset_partitions else None
        if key is not None:
            self._refuse_shrinking(context, {key: obj})
        suffix, data = self._encode(obj)
        relpath = self._relpath(context, key, suffix)
        self._write(relpath, data)
        context.add_output_metadata({"storage": dg.MetadataValue.path(self._location(relpath))})

    def _refuse_shrinking(self, context: dg.OutputContext, values: dict[str, Any]) -> None:
        """Never replace a stored week with fewer rows, unless the run opted in.

        Tables count their rows; a JSON partition counts the field its asset names
        in the definition metadata ROW_COUNT_FIELD (e.g. a drift report's rows tested)."""
        field = (context.definition_metadata or {}).get(ROW_COUNT_FIELD)
        if field == NOT_GUARDED:
            return
        shrinking = {}
        for key, value in values.items():
            new = _row_count(value, field)
            if new is None:
                continue
            stored = self.stored_rows(context.asset_key, key) if isinstance(value, pd.DataFrame) \
                else _row_count(self.stored(context.asset_key, key), field)
            if stored is not None and new < stored:
                shrinking[key] = (stored, new)
        refuse_shrinking(context.asset_key.to_user_string(), shrinking, _run_tags(context), context.log)

    def load_input(self, context: dg.InputContext) -> Any:
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
            missing, frames = [], []
            for key in keys:
                value = self._load_one(context, key)
                if value is _MISSING:
                    missing.append(key)
                else:
                    frames.append(value)
            if missing:
                allow = (context.definition_metadata or {}).get("allow_missing_partitions", False)
                if not allow:
                    raise StorageError(
                        f"{context.asset_key.to_user_string()} has no stored data for {len(missing)} of "
                        f"{len(keys)} partitions (first: {missing[:5]}); materialize them first"
                    )
            if len(keys) == 1 and frames:
                return frames[0]
            tables = [f for f in frames if isinstance(f, pd.DataFrame)]
            if len(tables) != len(frames):
                return dict(zip([k for k in keys if k not in missing], frames))
            non_empty = [t for t in tables if len(t)]
            if non_empty:
                return pd.concat(non_empty, ignore_index=True)
            return tables[0].iloc[0:0] if tables else pd.DataFrame()
        value = self._load_one(context, None)
        if value is _MISSING:
            raise StorageError(f"{context.asset_key.to_user_string()} has not been materialized yet")
        return value

    def _load_one(self, context, partition_key: str | None):
        return self.stored(context.asset_key, partition_key, default=_MISSING)

    @staticmethod
    def _encode(obj: Any) -> tuple[str, bytes]:
        if isinstance(obj, pd.DataFrame):
            buffer = io.BytesIO()
            obj.to_parquet(buffer, index=False)
            return ".parquet", buffer.getvalue()
        try:
            return ".json", json.dumps(obj, indent=2, default=_json_default).encode()
        except TypeError as exc:
            raise StorageError(f"cannot store a {type(obj).__name__}: only DataFrames and JSON values") from exc


class LocalParquetIOManager(_PartitionedStore, dg.ConfigurableIOManager):
    """Partitions as Parquet files under a local folder (the embedded default)."""

    base_dir: str = Field(description="folder that holds one subfolder per asset")

    def _path(self, relpath: str) -> Path:
        return Path(self.base_dir) / relpath

    def _location(self, relpath: str) -> str:
        return str(self._path(relpath))

    def _write(self, relpath: str, data: bytes) -> None:
        target = self._path(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)  # atomic: readers see the old file or the new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self, relpath: str) -> bytes:
        return self._path(relpath).read_bytes()

    def _exists(self, relpath: str) -> bool:
        return self._path(relpath).exists()

    def _read_tail(self, relpath: str, size: int) -> bytes | None:
        try:
            with self._path(relpath).open("rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - size))
                return handle.read()
        except FileNotFoundError:
            return None


_NOT_FOUND = ("404", "NoSuchKey", "NotFound")  # S3 error codes of a missing object


class S3ParquetIOManager(_PartitionedStore, dg.ConfigurableIOManager):
    """Partitions as Parquet objects in an S3 bucket (MinIO works through S3Resource.endpoint_url)."""

    s3: S3Resource
    bucket: str
    prefix: str = "stellar"
    _s3_client: Any = PrivateAttr(default=None)

    def _key(self, relpath: str) -> str:
        return f"{self.prefix.strip('/')}/{relpath}" if self.prefix else relpath

    def _location(self, relpath: str) -> str:
        return f"s3://{self.bucket}/{self._key(relpath)}"

    def _client(self):
        # One client per IO manager: building one costs milliseconds, and a backfill asks thousands of times.
        if self._s3_client is None:
            self._s3_client = self.s3.get_client()
        return self._s3_client

    def _write(self, relpath: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().put_object(Bucket=self.bucket, Key=self._key(relpath), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not write {self._location(relpath)}: {exc}") from exc

    def _read(self, relpath: str) -> bytes:
        data = self._get(relpath)
        if data is None:
            raise StorageError(f"could not read {self._location(relpath)}: there is no such object")
        return data

    def _read_tail(self, relpath: str, size: int) -> bytes | None:
        return self._get(relpath, Range=f"bytes=-{size}")

    def _get(self, relpath: str, **options) -> bytes | None:
        """The object's bytes (a range of them with Range=...), None when there is no such object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client().get_object(Bucket=self.bucket, Key=self._key(relpath), **options)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise StorageError(f"could not read {self._location(relpath)}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"could not reach S3 for {self._location(relpath)}: {exc}") from exc

    def _exists(self, relpath: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().head_object(Bucket=self.bucket, Key=self._key(relpath))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return False
            raise StorageError(f"could not check {self._location(relpath)}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"could not reach S3 for {self._location(relpath)}: {exc}") from exc


class _Missing:
    pass


_MISSING = _Missing()


def _decode_parquet(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


def _decode_json(data: bytes) -> Any:
    return json.loads(data)


def _json_default(value: Any):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
