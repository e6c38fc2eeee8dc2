"""The Zarr v3 side of a store: one array per modality, row i = manifest row i, chunked and sharded by samples.

Uncompressed arrays (the default) have their shard objects written here directly
(:func:`write_plain_shard`: the same bytes Zarr writes, without its per-chunk machinery); compressed
ones are written through Zarr.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
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


_BYTES = {"name": "bytes", "configuration": {"endian": "little"}}


def _plain(value):
    """A metadata value with tuples as lists (``to_dict`` gives either)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def plain_shard_rows(array) -> tuple[int, int] | None:
    """``(chunk_rows, shard_rows)`` when ``array`` is what :func:`create_zarr_array` makes without
    compression (sharded along samples, little-endian bytes, CRC32C index at the end, fill 0), so
    :func:`write_plain_shard` can write its shard objects directly; else None (Zarr writes them)."""
    meta = _plain(array.metadata.to_dict())
    shape = meta["shape"]
    try:
        (sharding,) = meta["codecs"]
        config = sharding["configuration"]
        shard_rows = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        chunk_rows = config["chunk_shape"][0]
        expected_grid = {"name": "regular", "configuration": {"chunk_shape": [shard_rows, *shape[1:]]}}
        expected = {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": [chunk_rows, *shape[1:]],
                "codecs": [_BYTES],
                "index_codecs": [_BYTES, {"name": "crc32c"}],
                "index_location": "end",
            },
        }
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    plain = (
        sharding == expected
        and meta["chunk_grid"] == expected_grid
        and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
        and meta["fill_value"] == 0
        and meta["data_type"] in ("float32", "float16", "float64")
        and not meta.get("storage_transformers")
        and shard_rows % chunk_rows == 0
    )
    return (int(chunk_rows), int(shard_rows)) if plain else None


def shard_key(name: str, shard: int, ndim: int) -> str:
    """The object name (under ``zarr/``) of shard ``shard`` (along samples) of array ``name``."""
    return "/".join([name, "c", str(shard), *["0"] * (ndim - 1)])


def _any_bit(row: np.ndarray) -> bool:
    """Whether any bit of ``row`` is set (-0.0 counts): a strided look first, which nearly always finds one."""
    bits = row.reshape(-1).view(f"<u{row.dtype.itemsize}")
    return bool(bits[:: 1 + len(bits) // 64].any()) or bool(bits.any())


def write_plain_shard(fs, path: str, rows, chunk_rows: int, shard_rows: int) -> dict | None:
    """Write one shard object of a :func:`plain_shard_rows` array: ``rows`` holds its rows (at most
    ``shard_rows``; fewer at the array's end), as one array or as a sequence of equal-shaped row arrays
    (a Zarr task passes the views of a tar shard's members: nothing is stacked).  The bytes are exactly
    Zarr's (tested): the inner chunks in order, a chunk whose values are all the fill value 0 left out
    (as Zarr leaves it out; -0.0 is kept), a last partial chunk padded with 0, then the index (offset,
    size per chunk, 2^64-1 for a missing one) and its CRC32C.  Returns ``{"bytes", "sha256"}``, or None
    when every chunk is fill value: the object is then removed, as Zarr removes it.
    """
    import google_crc32c

    rows = [np.ascontiguousarray(row, dtype=row.dtype.newbyteorder("<")) for row in rows]
    if rows and any(row.shape != rows[0].shape or row.dtype != rows[0].dtype for row in rows):
        raise ValueError("the rows of a Zarr shard differ in shape or dtype")
    row_bytes = rows[0].nbytes if rows else 0
    count = shard_rows // chunk_rows
    index = np.full((count, 2), 2**64 - 1, dtype="<u8")
    parts: list[memoryview] = []
    offset = 0
    for j in range(count):
        chunk = rows[j * chunk_rows : (j + 1) * chunk_rows]
        if not any(_any_bit(row) for row in chunk):  # no rows, or every bit zero
            continue
        views = [memoryview(row).cast("B") for row in chunk]
        if len(chunk) < chunk_rows:
            views.append(memoryview(bytes((chunk_rows - len(chunk)) * row_bytes)))
        index[j] = (offset, chunk_rows * row_bytes)
        parts.extend(views)
        offset += chunk_rows * row_bytes
    if not parts:
        if fs.exists(path):
            fs.rm(path)
        return None
    tail = index.tobytes()
    parts.append(memoryview(tail + int(google_crc32c.value(tail)).to_bytes(4, "little")))
    digest = hashlib.sha256()
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as handle:
        for part in parts:
            handle.write(part)
            digest.update(part)
    return {"bytes": offset + len(parts[-1]), "sha256": digest.hexdigest()}
