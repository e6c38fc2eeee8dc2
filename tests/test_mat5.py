"""physiofm.corpora.mat5 gives what scipy.io.loadmat gives, for every file the emotion readers meet."""

from __future__ import annotations

import io
import struct
import sys
import zlib

import fsspec
import numpy as np
import pytest
import scipy.io
import scipy.sparse
from isal import isal_zlib

from physiofm.corpora import mat5
from physiofm.corpora.matlab import load_mat
from physiofm.synth.emotion import synth_amigos, synth_dreamer

INFLATERS = {"zlib": zlib, "isal": isal_zlib}


def same(a, b, where="") -> None:
    """Deep equality of two loadmat-style values: types, dtypes, shapes, field names and values."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, b.dtype, a.shape, b.shape)
        if a.dtype.names:
            for index in np.ndindex(a.shape):
                for name in a.dtype.names:
                    same(a[index][name], b[index][name], f"{where}{list(index)}.{name}")
        elif a.dtype == object:
            for index in np.ndindex(a.shape):
                same(a[index], b[index], f"{where}{list(index)}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def saved(variables: dict, compress: bool) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, do_compression=compress)
    return buffer.getvalue()


VARIABLES = {
    "doubles": np.arange(12.0).reshape(3, 4),
    "cube": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    "scalar": np.float32(2.5),
    "ints": {
        f"t{i}": np.array([1, 2, 100], dtype=t) for i, t in enumerate(("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8"))
    },
    "empty": np.zeros((0, 3)),
    "flags": np.array([True, False, True]),
    "text": "hello",
    "unicode": "héllo wörld ✓",
    "blank": "",
    "rows": np.array(["ab", "cd", "ef"]),
    "cells": np.array(
        [[1.0, "x", np.zeros(2)], [np.arange(3), "longer text", np.array([], dtype=float)]], dtype=object
    ),
    "nested": {"a": 1, "b": {"c": "deep", "d": np.eye(2)}, "e": np.array([{"f": 1}, {"f": 2}], dtype=object)},
    "records": np.array([(1.0, "one"), (2.0, "two")], dtype=[("value", object), ("name", object)]),
}


@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "plain"])
@pytest.mark.parametrize("inflater", INFLATERS)
def test_every_kind_of_matrix_reads_as_loadmat_reads_it(compress, inflater):
    data = saved(VARIABLES, compress)
    got = mat5.read(io.BytesIO(data), INFLATERS[inflater])
    same(got, scipy.io.loadmat(io.BytesIO(data)))
    assert all(not v.flags.owndata for v in (got["doubles"], got["cube"]))  # views of the one buffer


def _element(kind: int, payload: bytes) -> bytes:
    return struct.pack("<II", kind, len(payload)) + payload + bytes(-len(payload) % 8)


def test_doubles_stored_as_small_integers_keep_their_saved_type():
    """MATLAB stores a double array of small integers as uint8 (its own compression); loadmat keeps uint8."""
    flags = _element(6, struct.pack("<II", 6, 0))  # mxDOUBLE_CLASS
    dims = _element(5, struct.pack("<ii", 2, 3))
    name = struct.pack("<HH", 1, 1) + b"x\0\0\0"  # a small element: 1 byte of miINT8
    body = flags + dims + name + _element(2, bytes([1, 2, 3, 4, 5, 6]))
    head = b"MATLAB 5.0 MAT-file, hand made".ljust(116, b" ") + bytes(8) + b"\x00\x01IM"
    packed = zlib.compress(_element(14, body))
    for variable in (_element(14, body), struct.pack("<II", 15, len(packed)) + packed):  # compressed: no padding
        data = head + variable
        got = mat5.read(io.BytesIO(data))
        same(got, scipy.io.loadmat(io.BytesIO(data)))
        assert got["x"].dtype == np.uint8 and got["x"].tolist() == [[1, 3, 5], [2, 4, 6]]


@pytest.mark.parametrize("prefault", [False, True], ids=["pages-as-written", "pages-prefaulted"])
@pytest.mark.parametrize("inflater", INFLATERS)
def test_generated_dreamer_and_amigos_files_read_as_loadmat_reads_them(tmp_path, inflater, prefault, monkeypatch):
    if prefault:  # every buffer, however small, has its pages mapped by the thread while it is filled
        monkeypatch.setattr(mat5, "PREFAULT_MIN", 1)
        monkeypatch.setattr(mat5.Prefault, "STEP", mat5.mmap.PAGESIZE)
    dreamer = synth_dreamer(tmp_path / "dreamer", subjects=2, seed=1, clip_seconds=(20.0, 24.0)) / "DREAMER.mat"
    amigos = synth_amigos(tmp_path / "amigos", subjects=2, seed=1)
    files = [dreamer, *sorted(amigos.rglob("*.mat"))]
    assert len(files) >= 3
    for path in files:
        with open(path, "rb") as handle:
            same(mat5.read(handle, INFLATERS[inflater]), scipy.io.loadmat(str(path)), path.name)


def test_what_it_does_not_read_is_read_by_loadmat(tmp_path):
    fs = fsspec.filesystem("file")
    for name, value in {"complex": np.array([1 + 2j, 3j]), "sparse": scipy.sparse.eye(3, format="csc")}.items():
        path = tmp_path / f"{name}.mat"
        path.write_bytes(saved({"v": value, "w": np.ones(2)}, True))
        with pytest.raises(mat5.Unsupported), open(path, "rb") as handle:
            mat5.read(handle)
        expected = scipy.io.loadmat(str(path))
        got = load_mat(fs, str(path))
        assert got.keys() == expected.keys()
        np.testing.assert_array_equal(np.asarray(got["w"]), expected["w"])
        assert type(got["v"]) is type(expected["v"])


@pytest.mark.parametrize("inflater", INFLATERS)
def test_truncated_and_corrupt_files_are_named_as_such(tmp_path, inflater, monkeypatch):
    monkeypatch.setattr(mat5, "_fast_zlib", INFLATERS[inflater])
    fs = fsspec.filesystem("file")
    data = saved({"signal": np.random.default_rng(0).standard_normal((500, 14)), "label": "x"}, True)
    broken = bytearray(data)
    broken[400:420] = bytes(range(20))  # bytes inside the zlib stream replaced
    cases = {
        "cut short": data[: len(data) // 2],
        "cut inside a tag": data[:132],
        "stream edited": bytes(broken),
    }
    for what, content in cases.items():
        path = tmp_path / f"{what}.mat"
        path.write_bytes(content)
        with pytest.raises(ValueError, match="truncated or corrupt MAT file"):
            load_mat(fs, str(path))


def _resident_pages(buffer: np.ndarray) -> int:
    """Pages of ``buffer`` that are mapped (``mincore``)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    page = mat5.mmap.PAGESIZE
    start = -(-buffer.ctypes.data // page) * page
    length = (buffer.ctypes.data + len(buffer)) // page * page - start
    flags = ctypes.create_string_buffer(length // page)
    assert libc.mincore(start, length, flags) == 0, ctypes.get_errno()
    return sum(byte & 1 for byte in flags.raw)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_POPULATE_WRITE is Linux's")
def test_the_prefault_thread_maps_a_new_buffer_without_writing_to_it():
    mapped = mat5.mmap.mmap(-1, 96 << 20)  # fresh anonymous memory: no page mapped until touched
    buffer = np.frombuffer(mapped, dtype=np.uint8)
    buffer[: 1 << 20] = 7  # what the inflater has written already, at the start
    pages = len(buffer) // mat5.mmap.PAGESIZE
    assert _resident_pages(buffer) <= pages // 10
    prefault = mat5.Prefault()
    prefault.start(buffer)
    prefault._thread.join()  # let it run to the end (stop() would halt it)
    prefault.stop()
    assert _resident_pages(buffer) == pages  # every page mapped
    assert (buffer[: 1 << 20] == 7).all() and not buffer[1 << 20 :].any()  # and no byte changed
    assert "nh" in _vm_flags(buffer.ctypes.data)  # as plain pages, not transparent huge ones


def _vm_flags(address: int) -> list[str]:
    """The ``VmFlags`` of the mapping that holds ``address`` (``/proc/self/smaps``)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low <= address < high
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore, as above, is read on Linux")
def test_no_prefault_for_a_small_buffer_or_when_stopped_early():
    small = mat5.Prefault()
    small.start(np.empty(mat5.PREFAULT_MIN - 1, dtype=np.uint8))
    assert small._thread is None
    small.stop()
    halted = mat5.Prefault()
    halted._halt.set()  # stopped before it began: it maps nothing
    buffer = np.frombuffer(mat5.mmap.mmap(-1, 96 << 20), dtype=np.uint8)
    halted.start(buffer)
    halted.stop()
    assert _resident_pages(buffer) == 0
