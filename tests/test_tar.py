"""The shard writer writes ustar itself: its bytes must be tarfile's, and tarfile must read them back."""

from __future__ import annotations

import io
import tarfile

import fsspec
import numpy as np
import pytest

from physiofm.store.tar import TarShardWriter, iter_samples, ustar_header


def tarfile_bytes(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """What the writer wrote before it wrote headers itself: tarfile, ustar, fixed fields."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for extension in sorted(members):
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mode, info.mtime = len(members[extension]), 0o644, 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(members[extension]))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name", ["a.npy", "HR06000__w0000.ecg.npy", "x" * 100, "d" * 60 + "/" + "y" * 60 + ".json", "s01_t01_é.eeg.npy"]
)
@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 96_128, 8**11 - 1])
def test_headers_are_tarfiles(name, size):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uname = info.gname = ""
    assert ustar_header(name, size) == info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")


@pytest.mark.parametrize("count", [1, 3, 40])  # the end padding to a 10-KiB record differs with the length
def test_shards_are_tarfiles_byte_for_byte(tmp_path, count):
    rng = np.random.default_rng(count)
    samples = [
        (
            f"rec{i:04d}__w{i % 7:04d}",
            {"ecg.npy": rng.bytes(int(rng.integers(0, 3000))), "json": b'{"i":%d}' % i},
        )
        for i in range(count)
    ]
    fs = fsspec.filesystem("file")
    writer = TarShardWriter(fs, str(tmp_path / "shard.tar"))
    for key, members in samples:
        writer.add(key, members)
    info = writer.close()
    data = (tmp_path / "shard.tar").read_bytes()
    assert data == tarfile_bytes(samples)
    assert info.bytes == len(data) and info.samples == count
    with tarfile.open(tmp_path / "shard.tar") as tar:  # and the standard reader agrees
        assert [m.name for m in tar.getmembers()] == [f"{k}.{e}" for k, m in samples for e in sorted(m)]
    with open(tmp_path / "shard.tar", "rb") as handle:
        assert list(iter_samples(handle, "shard.tar")) == samples
