"""Every file name of a store, in one place, and a handle that reads a store's small files.

::

    STORE/
      build.json          written last: its presence marks a complete store
      manifest.parquet    one row per sample
      shards.parquet      one row per tar shard (name, samples, bytes, sha256, first_row)
      rejects.parquet     what did not become samples, and why
      wds/shard-NNNNNN.tar
      zarr/               Zarr v3 group, one array per modality
      _build/             a build's state while it runs (plan, unit and Zarr markers); removed at the end
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from physiofm.io import StorageOptions, full_url, join, url_to_fs

BUILD_INFO = "build.json"
WDS = "wds"
ZARR = "zarr"
STATE = "_build"
PLAN = "plan.json"
ZARR_PLAN = "zarr.json"
TABLES = {"manifest": "manifest.parquet", "shards": "shards.parquet", "rejects": "rejects.parquet"}
UNPUBLISHED = ".*.tmp-*"  # what :func:`physiofm.io.atomic_write` names a file before it is complete


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def unit_marker(index: int) -> str:
    return f"unit-{index:06d}.json"


def zarr_marker(index: int) -> str:
    return f"zarr-{index:06d}.json"


UNIT_MARKERS, ZARR_MARKERS = "unit-*.json", "zarr-*.json"


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

    def write_table(self, name: str, df: pl.DataFrame) -> None:
        from physiofm.io import atomic_write

        with atomic_write(self.fs, self.table(name)) as handle:
            df.write_parquet(handle)

    def open_zarr(self, mode: str = "r"):
        from physiofm.store.zarr_arrays import open_zarr_group

        return open_zarr_group(self.fs, self.zarr, mode=mode, storage_options=self.storage_options)
