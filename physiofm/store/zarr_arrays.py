"""The Zarr v3 side of a store: one array per modality, row i = manifest row i, chunked and sharded by samples."""

from __future__ import annotations

import zarr
from zarr.codecs import ZstdCodec

from physiofm.io import full_url, is_local


def open_zarr_group(fs, path: str, mode: str = "r", storage_options: dict | None = None):
    """Open a Zarr v3 group on a local path or any fsspec filesystem."""
    if is_local(fs):
        return zarr.open_group(path, mode=mode, zarr_format=3)
    store = zarr.storage.FsspecStore.from_url(
        full_url(fs, path), storage_options=storage_options, read_only=mode == "r"
    )
    return zarr.open_group(store, mode=mode, zarr_format=3)


def create_zarr_array(
    group,
    name: str,
    rows: int,
    sample_shape: tuple[int, ...],
    dtype: str,
    chunk_rows: int,
    shard_rows: int,
    compression: str = "none",
):
    """Create (or replace) the array ``name``: ``rows`` samples, chunked and sharded along samples."""
    if shard_rows % chunk_rows:
        raise ValueError("zarr_shard_rows must be a multiple of zarr_chunk_rows")
    return group.create_array(
        name,
        shape=(rows, *sample_shape),
        dtype=dtype,
        chunks=(chunk_rows, *sample_shape),
        shards=(shard_rows, *sample_shape),
        compressors=ZstdCodec(level=1) if compression == "zstd" else None,
        fill_value=0,
        dimension_names=("sample",) + ("channel", "patch", "time")[-len(sample_shape) :],
        overwrite=True,
    )
