"""Checks on a built store shared by the build tests."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import zarr


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, ext = member.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return out


def assert_store_consistent(store: Path) -> pl.DataFrame:
    """Every manifest row points at the same array in its shard and in the Zarr array."""
    manifest = pl.read_parquet(store / "manifest.parquet")
    shards = pl.read_parquet(store / "shards.parquet")
    ecg = zarr.open_group(str(store / "zarr"), mode="r")["ecg"]
    assert ecg.shape[0] == manifest.height == shards["samples"].sum()
    assert manifest["key"].n_unique() == manifest.height
    assert manifest["zarr_row"].to_list() == list(range(manifest.height))
    assert sorted(p.name for p in (store / "wds").iterdir()) == sorted(shards["shard"])
    for shard in shards.iter_rows(named=True):
        samples = tar_samples(store / "wds" / shard["shard"])
        assert len(samples) == shard["samples"]
        rows = manifest.filter(pl.col("shard") == shard["shard"]).sort("shard_pos")
        assert list(samples) == rows["key"].to_list()
        for row in rows.iter_rows(named=True):
            array = np.load(io.BytesIO(samples[row["key"]]["ecg.npy"]))
            assert array.shape == (12, 10, 200)
            np.testing.assert_array_equal(array, ecg[row["zarr_row"]])
            meta = json.loads(samples[row["key"]]["json"])
            assert meta["record_id"] == row["record_id"] and meta["window_index"] == row["window_index"]
    return manifest


def assert_same_batches(left: list[dict], right: list[dict]) -> None:
    """Two streams of batches are the same: keys, and every tensor bit for bit."""
    import torch

    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a.keys() == b.keys() and a["key"] == b["key"]
        for name, value in a.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(value, b[name], equal_nan=True, rtol=0, atol=0)
