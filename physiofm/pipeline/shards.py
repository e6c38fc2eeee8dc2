"""Reading the tar shards physiofm writes: plain ustar members, ``.npy`` headers parsed once.

``tarfile``'s stream mode copies every byte about three times; these helpers let a reader
walk the headers, read only the members it wants (skipping the rest with ``seek``) and
decode ``.npy`` payloads without ``np.load``'s per-call header parsing.  No torch here:
build workers and the validator use them too.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import lru_cache

import numpy as np


class ShardError(RuntimeError):
    """A shard does not hold what it should (the message names the shard)."""


_ZERO_BLOCK = bytes(512)


def iter_members(stream, url: str) -> Iterator[tuple[str, int]]:
    """``(name, size)`` of each regular member of a ustar stream, left positioned at the member's data.

    The caller reads what it wants of the data; the next header is then found with ``seek``, so
    unread members are skipped without being read.  (``tarfile``'s stream mode copies every byte
    about three times: this keeps streaming close to the raw read rate.)
    """
    offset = stream.tell()
    while True:
        header = stream.read(512)
        if len(header) < 512 or header == _ZERO_BLOCK:
            if header and header != _ZERO_BLOCK:
                raise ShardError(f"{url}: truncated tar header at byte {offset}")
            return
        if header[257:262] != b"ustar":
            raise ShardError(f"{url}: no ustar header at byte {offset} (corrupt shard)")
        name = header[:100].split(b"\0", 1)[0].decode()
        if header[345]:  # ustar prefix
            name = header[345:500].split(b"\0", 1)[0].decode() + "/" + name
        size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        flag = header[156:157]
        if flag in (b"0", b"\0"):
            yield name, size
        elif flag != b"5":
            raise ShardError(f"{url}: unsupported tar member type {flag!r} ({name}); shards are plain ustar")
        offset += 512 + size + -size % 512
        stream.seek(offset)


@lru_cache(maxsize=256)
def npy_layout(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """``(shape, fortran_order, dtype)`` of a ``.npy`` header (None unless version 1 or 2).

    Cached: ``np.load`` parses every header with ``literal_eval``, which costs more than the copy.
    """
    stream = io.BytesIO(header)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    return None


def read_named_arrays(stream, url: str, extensions: tuple[str, ...]) -> dict[str, list[np.ndarray]]:
    """Every ``.<extension>`` array of a shard for each extension, in member order, in one pass."""
    out: dict[str, list[np.ndarray]] = {extension: [] for extension in extensions}
    for name, size in iter_members(stream, url):
        extension = next((e for e in extensions if name.endswith(f".{e}")), None)
        if extension is None:
            continue
        payload = stream.read(size)
        end = 10 + int.from_bytes(payload[8:10], "little") if payload[6:7] == b"\x01" else \
            12 + int.from_bytes(payload[8:12], "little")
        layout = npy_layout(payload[:end])
        if layout is None or layout[2].hasobject:
            raise ShardError(f"{url}: {name} is not a numeric version 1 or 2 .npy member")
        shape, fortran, dtype = layout
        out[extension].append(np.frombuffer(payload, dtype, offset=end).reshape(shape, order="F" if fortran else "C"))
    return out
