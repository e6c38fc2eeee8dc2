"""Level-5 MAT files read into one buffer per variable: every array is a view of it.

``scipy.io.loadmat`` inflates a compressed variable in small steps and copies every matrix out
of the stream.  DREAMER's one variable is a single zlib stream of ~900 MB, so that is most of an
emotion build's serial time.  Here the stream is inflated once into one buffer (with ISA-L's
inflate when ``isal`` is installed: about 1.5x zlib's speed, the same bytes), and the matrices
are NumPy views of it.

The result is what ``loadmat(file)`` returns with its defaults (not squeezed, structs as record
arrays, chars as strings, the saved dtypes): the same keys, types, dtypes, shapes and values
(``tests/test_mat5.py`` compares them).  Only little-endian files and numeric, char, cell and struct
arrays are read here; anything else (big-endian files, complex or sparse matrices, objects,
function handles) raises :class:`Unsupported`, and the caller reads the file with ``loadmat``.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import sys
import threading
import zlib
from typing import IO, Any

import numpy as np

try:  # the same inflate, faster; optional
    from isal import isal_zlib as _fast_zlib
except ImportError:  # pragma: no cover - isal is a dependency; this keeps the reader working without it
    _fast_zlib = None

MI_INT8, MI_UINT8, MI_INT32, MI_UINT32 = 1, 2, 5, 6
MI_MATRIX, MI_COMPRESSED = 14, 15
MI_UTF8, MI_UINT16, MI_UTF16, MI_UTF32 = 16, 4, 17, 18
NUMERIC = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 9: "<f8", 12: "<i8", 13: "<u8"}
CELL, STRUCT, CHAR = 1, 2, 4
NUMERIC_CLASSES = range(6, 16)  # double, single, int8 ... uint64
TEXT = {MI_UTF8: "utf-8", MI_UINT16: "utf-16-le", MI_UTF16: "utf-16-le", MI_UTF32: "utf-32-le",
        MI_UINT8: "latin-1", MI_INT8: "latin-1"}  # fmt: skip
CHUNK = 1 << 22  # compressed bytes read at a time
PREFAULT_MIN = 1 << 26  # an inflated buffer this large has its pages mapped ahead of the inflater (Prefault)
MADV_POPULATE_WRITE = 23  # Linux >= 5.14: map a range's pages writable, without writing to them
MADV_NOHUGEPAGE = 15  # Linux: no transparent huge pages for a range


class Unsupported(Exception):
    """A file or matrix this reader leaves to ``scipy.io.loadmat``."""


def is_level5_le(head: bytes) -> bool:
    """Whether a file's first 128 bytes are a little-endian level-5 MAT header."""
    return len(head) == 128 and head[126:128] == b"IM" and head[124:126] == b"\x00\x01"


def read(handle: IO[bytes], inflate=None) -> dict[str, Any]:
    """Every variable of the level-5 MAT file open in ``handle`` (at its start), as ``loadmat`` gives them.

    ``inflate``: a zlib-compatible module (``zlib``; default ISA-L's when installed).  Raises
    :class:`Unsupported` for what ``loadmat`` should read, ``ValueError`` for a truncated or corrupt file.
    """
    inflate = inflate or _fast_zlib or zlib
    head = handle.read(128)
    if not is_level5_le(head):
        raise Unsupported("not a little-endian level-5 MAT file")
    out: dict[str, Any] = {"__header__": head[:116].strip(b" \t\n\x00"), "__version__": "1.0", "__globals__": []}
    while True:
        tag = handle.read(8)
        if not tag:
            return out
        if len(tag) < 8:
            raise ValueError("the file ends inside a variable's tag")
        kind, size = struct.unpack("<II", tag)
        if kind == MI_COMPRESSED:
            buffer = _inflated(handle, size, inflate)
        elif kind == MI_MATRIX:
            buffer = np.empty(8 + size, dtype=np.uint8)
            buffer[:8] = np.frombuffer(tag, dtype=np.uint8)
            if handle.readinto(memoryview(buffer)[8:]) != size:
                raise ValueError("the file ends inside a variable")
        else:
            raise Unsupported(f"top-level element of type {kind}")
        name, value, is_global = _variable(buffer)
        if not name:
            raise Unsupported("a variable without a name (a MATLAB function workspace)")
        out[name] = value
        if is_global:
            out["__globals__"].append(name)


def _inflated(handle: IO[bytes], size: int, inflate) -> np.ndarray:
    """The ``size`` compressed bytes at ``handle``'s position, inflated into one buffer (a miMATRIX element)."""
    try:
        return _inflate(handle, size, inflate)
    except inflate.error as error:
        raise ValueError(f"the compressed variable does not inflate: {error}") from None


def _inflate(handle: IO[bytes], size: int, inflate) -> np.ndarray:
    prefault = Prefault()
    try:
        return _inflate_with(handle, size, inflate, prefault)
    finally:
        prefault.stop()


def _inflate_with(handle: IO[bytes], size: int, inflate, prefault: Prefault) -> np.ndarray:
    stream = inflate.decompressobj()
    left = size
    head = b""  # the inner element's tag, until the buffer for the whole element exists
    buffer: np.ndarray | None = None
    filled = 0
    pending = b""
    while True:
        if not pending and left:
            pending = handle.read(min(CHUNK, left))
            if not pending:
                raise ValueError("the file ends inside a compressed variable")
            left -= len(pending)
        if pending:
            piece = stream.decompress(pending, 1 << 24 if buffer is not None else 8 - len(head))
            pending = stream.unconsumed_tail
        else:
            piece = stream.flush()  # what the inflater still holds
        if buffer is None:
            head += piece
            if len(head) == 8:
                kind, inner = struct.unpack("<II", head)
                if kind != MI_MATRIX:
                    raise Unsupported(f"compressed element of type {kind}")
                buffer = np.empty(8 + inner, dtype=np.uint8)
                prefault.start(buffer)  # before the first write into it
                buffer[:8] = np.frombuffer(head, dtype=np.uint8)
                filled = 8
            elif not pending and not left:
                raise ValueError("a compressed variable holds no element")
        elif piece:
            if filled + len(piece) > len(buffer):
                raise ValueError("a compressed variable inflates to more than its element says")
            buffer[filled : filled + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            filled += len(piece)
        if buffer is not None and not pending and not left and not piece:
            break
    if filled < len(buffer):
        raise ValueError("a compressed variable inflates to less than its element says")
    return buffer


class Prefault:
    """Map a new buffer's pages in a thread, ahead of the inflater that fills it (Linux only).

    The first write to each page of new memory costs a page fault, and on a VM whose free memory
    goes back to the host that cost is large: writing 880 MB of fresh memory took 1.6 s of system
    time on the 2-core VM of ``bench/build_emotion.py``, as long as inflating it.  Two changes:

    * ``madvise(MADV_POPULATE_WRITE)`` maps the pages, 32 MB at a time from the start, on the other
      core while the inflater (which releases the GIL) writes behind it.  Populating changes no
      byte (only page tables), so it is safe wherever the inflater already is.
    * The buffer is marked ``MADV_NOHUGEPAGE`` first.  NumPy asks for transparent huge pages on
      every large array, and each 2-MB fault then zeroes (and may compact) a huge page: on that VM
      880 MB took 1.55-1.9 s to fault in as huge pages and 0.88-0.96 s as plain ones.  The buffer
      is written once and read once, front to back, so huge pages buy little here.

    A DREAMER-sized file read in 2.9-3.2 s before, 2.2-2.8 s with the thread (7 alternations, each
    run after 5 s idle) and 2.1-2.4 s with both (4 alternations: system time 1.55-1.86 -> 0.66-0.77 s).
    Elsewhere (other systems, kernels before 5.14, buffers under ``PREFAULT_MIN``) nothing is
    done and the pages fault in as they are written.
    """

    STEP = 1 << 25

    def __init__(self) -> None:
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, buffer: np.ndarray) -> None:
        if len(buffer) < PREFAULT_MIN or not sys.platform.startswith("linux"):
            return
        try:
            madvise = ctypes.CDLL(None, use_errno=True).madvise
        except (OSError, AttributeError):  # pragma: no cover - no C library to call
            return
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        page = mmap.PAGESIZE
        at = -(-buffer.ctypes.data // page) * page  # whole pages inside the buffer
        end = (buffer.ctypes.data + len(buffer)) // page * page
        if end <= at:
            return
        madvise(at, end - at, MADV_NOHUGEPAGE)  # before the first write; where refused, huge pages stay
        self._thread = threading.Thread(target=self._run, args=(buffer, madvise, at, end), name="mat5-prefault")
        self._thread.daemon = True
        self._thread.start()

    def _run(self, buffer: np.ndarray, madvise, at: int, end: int) -> None:  # holds the buffer meanwhile
        while at < end and not self._halt.is_set():
            if madvise(at, min(self.STEP, end - at), MADV_POPULATE_WRITE):
                return  # not supported here (EINVAL), or no memory left for it: the writes fault as usual
            at += self.STEP

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join()


def _tag(view: memoryview, at: int, end: int) -> tuple[int, int, int, int]:
    """``(type, bytes, data offset, next element offset)`` of the element at ``at``."""
    if at + 8 > end:
        raise ValueError("an element runs past its matrix")
    kind, size = struct.unpack_from("<II", view, at)
    if kind >> 16:  # small data element: two bytes of size, two of type, up to 4 bytes of data
        return kind & 0xFFFF, kind >> 16, at + 4, at + 8
    stop = at + 8 + size
    if stop > end:
        raise ValueError("an element runs past its matrix")
    return kind, size, at + 8, stop + (-size % 8)


def _variable(buffer: np.ndarray) -> tuple[str, Any, bool]:
    view = memoryview(buffer)
    kind, size, start, _ = _tag(view, 0, len(buffer))
    name, value, is_global = _matrix(buffer, view, start, start + size)
    return name, value, is_global


def _matrix(buffer: np.ndarray, view: memoryview, at: int, end: int) -> tuple[str, Any, bool]:
    """The miMATRIX whose subelements span ``[at, end)``: ``(name, value, global flag)``."""
    if at == end:  # an empty element (MATLAB writes one for an empty cell): loadmat's empty double
        return "", np.empty((0, 0), dtype=np.float64), False
    kind, size, data, at = _tag(view, at, end)
    if kind != MI_UINT32 or size < 8:
        raise ValueError("a matrix without array flags")
    word = struct.unpack_from("<I", view, data)[0]
    mclass, flags = word & 0xFF, (word >> 8) & 0xFF
    if flags & 0x08:
        raise Unsupported("complex matrix")
    kind, size, data, at = _tag(view, at, end)
    if kind != MI_INT32:
        raise ValueError("a matrix without dimensions")
    dims = tuple(int(d) for d in np.frombuffer(buffer, dtype="<i4", count=size // 4, offset=data))
    kind, size, data, at = _tag(view, at, end)
    name = bytes(view[data : data + size]).decode("latin-1")
    count = int(np.prod(dims, dtype=np.int64))
    if mclass in NUMERIC_CLASSES:
        value = _numeric(buffer, view, at, end, dims, count)
    elif mclass == CHAR:
        value = _char(buffer, view, at, end, dims, count)
    elif mclass == CELL:
        cells = np.empty(count, dtype=object)
        for i in range(count):
            kind, size, data, at = _tag(view, at, end)
            if kind != MI_MATRIX:
                raise ValueError("a cell element that is not a matrix")
            cells[i] = _matrix(buffer, view, data, data + size)[1]
        value = cells.reshape(dims, order="F")
    elif mclass == STRUCT:
        value = _struct(buffer, view, at, end, dims, count)
    else:
        raise Unsupported(f"matrix class {mclass}")
    return name, value, bool(flags & 0x04)


def _numeric(buffer: np.ndarray, view: memoryview, at: int, end: int, dims: tuple, count: int) -> np.ndarray:
    kind, size, data, _ = _tag(view, at, end)
    if kind not in NUMERIC:
        raise Unsupported(f"numeric data of type {kind}")
    dtype = np.dtype(NUMERIC[kind])
    if size != count * dtype.itemsize:
        raise ValueError(f"a matrix of {count} values holds {size} bytes of {dtype}")
    flat = np.frombuffer(buffer, dtype=dtype, count=count, offset=data) if data % dtype.alignment == 0 else None
    if flat is None:  # a small element's data (4 bytes after its tag) need not be aligned
        flat = np.frombuffer(bytes(view[data : data + size]), dtype=dtype).copy()
    return flat.reshape(dims, order="F")


def _char(buffer: np.ndarray, view: memoryview, at: int, end: int, dims: tuple, count: int) -> np.ndarray:
    kind, size, data, _ = _tag(view, at, end)
    if kind not in TEXT:
        raise Unsupported(f"char data of type {kind}")
    text = bytes(view[data : data + size]).decode(TEXT[kind])
    if len(text) != count:
        raise Unsupported("char data whose characters are not one per element")
    letters = np.array(list(text), dtype="U1").reshape(dims, order="F")
    width = dims[-1] if dims else 0
    if not width or not count:
        return np.empty(dims[:-1], dtype="U1")
    return np.ascontiguousarray(letters).view(f"<U{width}").reshape(dims[:-1])


def _struct(buffer: np.ndarray, view: memoryview, at: int, end: int, dims: tuple, count: int) -> np.ndarray:
    kind, size, data, at = _tag(view, at, end)
    if kind != MI_INT32 or size != 4:
        raise ValueError("a struct without its field name length")
    length = struct.unpack_from("<i", view, data)[0]
    kind, size, data, at = _tag(view, at, end)
    raw = bytes(view[data : data + size])
    names = (
        [raw[i : i + length].split(b"\x00", 1)[0].decode("latin-1") for i in range(0, size, length)] if length else []
    )
    if not names or len(set(names)) != len(names):
        raise Unsupported("a struct without fields, or with repeated field names")
    records = np.empty(count, dtype=[(n, object) for n in names])
    for i in range(count):
        for n in names:
            kind, size, data, at = _tag(view, at, end)
            if kind != MI_MATRIX:
                raise ValueError("a struct field that is not a matrix")
            records[i][n] = _matrix(buffer, view, data, data + size)[1]
    return records.reshape(dims, order="F")
