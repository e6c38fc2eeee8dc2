"""``.npy`` members: written without ``np.save``'s per-call overhead, parsed with one cached header parser."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np


class NpyError(ValueError):
    """Bytes that are not a numeric version 1 or 2 ``.npy`` array."""


@lru_cache(maxsize=32)
def _header(shape: tuple[int, ...], dtype: str) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """``np.save`` bytes of an array (made C-contiguous)."""
    array = np.ascontiguousarray(array)
    if not array.size:
        return _header(array.shape, array.dtype.str)
    return b"".join((_header(array.shape, array.dtype.str), memoryview(array).cast("B")))  # one copy


@lru_cache(maxsize=256)
def npy_layout(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """``(shape, fortran_order, dtype)`` of a ``.npy`` header (None unless version 1 or 2).

    Cached: ``np.load`` parses every header with ``literal_eval``, which costs more than the copy.
    """
    stream = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(stream)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(stream)
    except ValueError:
        return None
    return None


def header_length(payload: bytes | memoryview) -> int:
    """Bytes of the magic and header at the start of ``payload`` (version 1 or 2 layout)."""
    if bytes(payload[6:7]) == b"\x01":
        return 10 + int.from_bytes(payload[8:10], "little")
    return 12 + int.from_bytes(payload[8:12], "little")


def decode(payload: bytes, where: str = "") -> np.ndarray:
    """The array held by ``.npy`` bytes (a view of them); :class:`NpyError` names ``where`` otherwise."""
    end = header_length(payload) if len(payload) >= 12 else len(payload)
    layout = npy_layout(bytes(payload[:end]))
    if layout is None or layout[2].hasobject:
        raise NpyError(f"{where} is not a numeric version 1 or 2 .npy member")
    shape, fortran, dtype = layout
    count = int(np.prod(shape, dtype=np.int64))
    if len(payload) - end != count * dtype.itemsize:
        raise NpyError(f"{where} holds {len(payload) - end} data bytes, its header says {count * dtype.itemsize}")
    return np.frombuffer(payload, dtype, count=count, offset=end).reshape(shape, order="F" if fortran else "C")
