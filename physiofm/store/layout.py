"""Every file name of a store, in one place, and a handle that reads a store's small files.

::

    STORE/
      build.json          written last: its presence marks a complete store; it records the size,
                          sha256, rows and columns (name, dtype, digest of the values) of every table
      manifest.parquet    one row per sample
      shards.parquet      one row per tar shard (name, samples, bytes, sha256, first_row)
      zarr.parquet        one row per Zarr object (name under zarr/, bytes, sha256; for an array's
                          shard object: its array, first_row and samples)
      rejects.parquet     what did not become samples, and why
      wds/shard-NNNNNN.tar
      zarr/               Zarr v3 group, one array per modality
      _build/             a build's state while it runs (plan, unit and Zarr markers); removed at the end

Hashing goes through the one hashing stream (:class:`physiofm.store.hashing.HashingStream`): tables
as they are written and read, Zarr objects as a Zarr task writes them (:class:`RecordingStore`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from physiofm.io import StorageOptions, full_url, join, url_to_fs
from physiofm.store.hashing import HashingStream

BUILD_INFO = "build.json"
WDS = "wds"
ZARR = "zarr"
STATE = "_build"
PLAN = "plan.json"
ZARR_PLAN = "zarr.json"
TABLES = {
    "manifest": "manifest.parquet",
    "shards": "shards.parquet",
    "rejects": "rejects.parquet",
    "zarr": "zarr.parquet",
}
UNPUBLISHED = ".*.tmp-*"  # what :func:`physiofm.io.atomic_write` names a file before it is complete
DIGEST_ROWS = 65_536  # values per JSON block of a column digest (part of the digest's definition)


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def unit_marker(index: int) -> str:
    return f"unit-{index:06d}.json"


def zarr_marker(index: int) -> str:
    return f"zarr-{index:06d}.json"


UNIT_MARKERS, ZARR_MARKERS = "unit-*.json", "zarr-*.json"


# ---- digests ---------------------------------------------------------------------------------------


class _Discard:
    def write(self, data) -> int:
        return len(data)


def digest(data: bytes) -> tuple[int, str]:
    """``(size, sha256)`` of bytes held in memory."""
    stream = HashingStream(_Discard(), "wb")
    stream.write(data)
    return stream.size, stream.hexdigest()


def column_digest(series: pl.Series) -> str:
    """sha256 of a column's values as canonical JSON (blocks of ``DIGEST_ROWS`` values, one per line).

    Defined by the values, not by how Parquet or polars lay them out: a table re-written with the
    same content has the same column digests and another file sha256.
    """
    stream = HashingStream(_Discard(), "wb")
    for start in range(0, max(series.len(), 1), DIGEST_ROWS):
        block = series.slice(start, DIGEST_ROWS).to_list()
        stream.write(json.dumps(block, separators=(",", ":"), default=str).encode() + b"\n")
    return stream.hexdigest()


def table_record(df: pl.DataFrame, size: int, sha256: str) -> dict[str, Any]:
    """What ``build.json`` records of a table it wrote (``tables``): enough to name any later edit."""
    return {
        "bytes": size,
        "sha256": sha256,
        "rows": df.height,
        "columns": [[name, str(dtype)] for name, dtype in df.schema.items()],
        "column_sha256": {name: column_digest(df[name]) for name in df.columns},
    }


def mtime(entry: dict) -> float | None:
    """Modification time (seconds since the epoch) of a listing entry, local or object storage."""
    value = entry.get("mtime", entry.get("LastModified"))
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, int | float) else None


# ---- a Zarr store that records what is written through it --------------------------------------------


def _recording_store(store, record: dict[str, dict | None]):
    """``store`` wrapped so that every object written through it is hashed on the way (no read-back).

    ``record[key]`` becomes ``{"bytes", "sha256"}`` of the last write of ``key``, or None when the
    key was deleted (Zarr deletes a shard object whose chunks are all fill value) or written in
    part (the caller then hashes the object as stored).
    """
    from zarr.storage import WrapperStore

    class RecordingStore(WrapperStore):
        def __init__(self, inner, into: dict) -> None:
            super().__init__(inner)
            self.record = into

        def _with_store(self, inner):
            return type(self)(inner, self.record)

        async def set(self, key, value) -> None:
            size, sha = digest(value.to_bytes())
            await self._store.set(key, value)
            self.record[key] = {"bytes": size, "sha256": sha}

        async def set_if_not_exists(self, key, value) -> None:
            await self._store.set_if_not_exists(key, value)
            self.record[key] = None

        async def set_partial_values(self, key_start_values) -> None:
            key_start_values = list(key_start_values)
            await self._store.set_partial_values(key_start_values)
            for key, _, _ in key_start_values:
                self.record[key] = None

        async def delete(self, key) -> None:
            await self._store.delete(key)
            self.record[key] = None

    return RecordingStore(store, record)


@dataclass
class Layout:
    """Where each part of the store at ``url`` lives, on its filesystem."""

    url: str
    storage_options: StorageOptions = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fs, self.root = url_to_fs(self.url, self.storage_options)

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    @property
    def build_info(self) -> str:
        return self.path(BUILD_INFO)

    def table(self, name: str) -> str:
        return self.path(TABLES[name])

    def shard(self, name: str) -> str:
        return self.path(WDS, name)

    def state(self, name: str = "") -> str:
        return self.path(STATE, name)

    @property
    def zarr(self) -> str:
        return self.path(ZARR)

    def zarr_object(self, name: str) -> str:
        """The path of a Zarr object named as in ``zarr.parquet`` (relative to ``zarr/``)."""
        return self.path(ZARR, name)

    @property
    def wds_url(self) -> str:
        """The shards' folder as a path or URL any process can open."""
        return full_url(self.fs, self.path(WDS))

    def read_json(self, path: str) -> Any | None:
        return json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else None

    def read_info(self) -> dict | None:
        """``build.json``, or None while the store is incomplete."""
        return self.read_json(self.build_info)

    def read_table(self, name: str, columns: list[str] | None = None) -> pl.DataFrame:
        with self.fs.open(self.table(name), "rb") as handle:
            return pl.read_parquet(handle, columns=columns)

    def table_columns(self, name: str) -> list[str]:
        """A table's column names, from its Parquet footer (no column is read)."""
        with self.fs.open(self.table(name), "rb") as handle:
            return list(pl.read_parquet_schema(handle))

    def read_hashed(self, path: str) -> tuple[bytes, int, str]:
        """The bytes of a (small) file, its size and its sha256, in one read."""
        with self.fs.open(path, "rb") as handle:
            stream = HashingStream(handle)
            data = stream.read()
        return data, stream.size, stream.hexdigest()

    def hash_file(self, path: str) -> tuple[int, str]:
        """Size and sha256 of a file of any size, streamed."""
        with self.fs.open(path, "rb") as handle:
            stream = HashingStream(handle)
            stream.drain()
        return stream.size, stream.hexdigest()

    def write_table(self, name: str, df: pl.DataFrame) -> dict[str, Any]:
        """Write a table atomically; return its :func:`table_record` (size and sha256 of the bytes written)."""
        from physiofm.io import atomic_write

        with atomic_write(self.fs, self.table(name)) as handle:
            stream = HashingStream(handle, "wb")
            df.write_parquet(stream)
        return table_record(df, stream.size, stream.hexdigest())

    def shard_sizes(self) -> dict[str, int]:
        """Published tar shards (one listing of ``wds/``): name -> bytes."""
        try:
            found = self.fs.ls(self.path(WDS), detail=True)
        except FileNotFoundError:
            return {}
        return {entry["name"].rstrip("/").rsplit("/", 1)[-1]: int(entry["size"]) for entry in found}

    def list_zarr(self) -> dict[str, dict]:
        """Every object under ``zarr/`` (one recursive listing): name relative to ``zarr/`` -> its entry."""
        prefix = self.zarr.rstrip("/") + "/"
        try:
            found = self.fs.find(self.zarr, detail=True)
        except FileNotFoundError:
            return {}
        return {
            name[len(prefix) :]: entry
            for name, entry in found.items()
            if entry.get("type", "file") == "file" and name.startswith(prefix)
        }

    def open_zarr(self, mode: str = "r", record: dict | None = None):
        """The Zarr group; with ``record``, every object written through it is hashed into ``record``."""
        from physiofm.store.zarr_arrays import open_zarr_group

        group = open_zarr_group(self.fs, self.zarr, mode=mode, storage_options=self.storage_options)
        if record is None:
            return group
        import zarr

        return zarr.open_group(_recording_store(group.store, record), mode="r+", zarr_format=3)
