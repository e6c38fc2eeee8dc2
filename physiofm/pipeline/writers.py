"""Writers: deterministic WebDataset tar shards and a single-writer Zarr v3 appender.

Tar shards are byte-reproducible (fixed mtime, owner and mode; members in sample order),
hashed while written, and published atomically.  Zarr arrays are written by one process
only, a whole Zarr shard at a time, so no two writers ever touch the same object.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from physiofm.io import atomic_write, full_url, is_local


@lru_cache(maxsize=32)
def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """``np.save`` bytes of a C-contiguous array, without the per-call overhead."""
    array = np.ascontiguousarray(array)
    return _npy_header(array.shape, array.dtype.str) + array.tobytes()


def json_bytes(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


class _HashingWriter(io.RawIOBase):
    def __init__(self, handle) -> None:
        self.handle = handle
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.handle.write(data)
        return len(data)


@dataclass
class ShardInfo:
    shard: str
    samples: int
    bytes: int
    sha256: str


class TarShardWriter:
    """Write ``(key, {extension: bytes})`` samples into one tar, published atomically on close.

    The file is opened on the first sample, so a shard with no samples is never created.
    """

    def __init__(self, fs, path: str) -> None:
        self.fs, self.path = fs, path
        self.samples = 0
        self._context = self._hashing = self._tar = None

    def add(self, key: str, members: dict[str, bytes]) -> None:
        if self._tar is None:
            self._context = atomic_write(self.fs, self.path)
            self._hashing = _HashingWriter(self._context.__enter__())
            self._tar = tarfile.open(fileobj=self._hashing, mode="w", format=tarfile.USTAR_FORMAT)
        for extension in sorted(members):
            payload = members[extension]
            info = tarfile.TarInfo(f"{key}.{extension}")
            info.size = len(payload)
            info.mode = 0o644
            info.mtime = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(payload))
        self.samples += 1

    def close(self) -> ShardInfo | None:
        """Publish the shard; None if no sample was added."""
        if self._tar is None:
            return None
        self._tar.close()
        self._context.__exit__(None, None, None)
        return ShardInfo(self.path.rsplit("/", 1)[-1], self.samples, self._hashing.size, self._hashing.sha.hexdigest())

    def abort(self) -> None:
        """Drop a partly written shard (nothing becomes visible)."""
        if self._context is not None:
            error = RuntimeError("shard aborted")
            try:
                self._context.__exit__(type(error), error, None)
            except RuntimeError:
                pass
        self._tar = self._context = None


def open_zarr_group(fs, path: str, mode: str = "r", storage_options: dict | None = None):
    """Open a Zarr v3 group on a local path or any fsspec filesystem."""
    if is_local(fs):
        return zarr.open_group(path, mode=mode, zarr_format=3)
    store = zarr.storage.FsspecStore.from_url(
        full_url(fs, path), storage_options=storage_options, read_only=mode == "r"
    )
    return zarr.open_group(store, mode=mode, zarr_format=3)


def create_zarr_array(group, name: str, rows: int, sample_shape: tuple[int, ...], dtype: str,
                      chunk_rows: int, shard_rows: int, compression: str = "none"):
    """Create (or replace) the array ``name``: ``rows`` samples, chunked and sharded along samples."""
    if shard_rows % chunk_rows:
        raise ValueError("zarr_shard_rows must be a multiple of zarr_chunk_rows")
    return group.create_array(
        name, shape=(rows, *sample_shape), dtype=dtype, chunks=(chunk_rows, *sample_shape),
        shards=(shard_rows, *sample_shape), compressors=ZstdCodec(level=1) if compression == "zstd" else None,
        fill_value=0, dimension_names=("sample",) + ("channel", "patch", "time")[-len(sample_shape):],
        overwrite=True,
    )
