"""Zarr shard objects written directly (uncompressed arrays) are byte for byte what Zarr writes."""

import numpy as np
import pytest
import zarr
from fsspec.implementations.local import LocalFileSystem

from physiofm.store.zarr_arrays import create_zarr_array, plain_shard_rows, shard_key, write_plain_shard


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_direct_shards_are_zarrs_bytes(tmp_path, dtype):
    rows, shape = 300, (3, 2, 20)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(rows, *shape)).astype(dtype)
    data[16:24] = 0  # a whole inner chunk of fill value: Zarr leaves it out
    data[24:32] = -0.0  # not fill value bit for bit: Zarr writes it
    data[40, 0, 0, 0] = np.nan
    theirs = zarr.open_group(str(tmp_path / "zarr"), mode="w", zarr_format=3)
    array = create_zarr_array(theirs, "ecg", rows, shape, dtype, 8, 256)
    array[0:256], array[256:300] = data[0:256], data[256:300]  # a whole shard and a partial last one
    assert plain_shard_rows(array) == (8, 256)
    fs = LocalFileSystem()
    for shard, (start, stop) in enumerate([(0, 256), (256, 300)]):
        key = shard_key("ecg", shard, 4)
        written = write_plain_shard(fs, str(tmp_path / "mine" / key), data[start:stop], 8, 256)
        mine, expected = (tmp_path / "mine" / key).read_bytes(), (tmp_path / "zarr" / key).read_bytes()
        assert mine == expected and written["bytes"] == len(expected)
        # the rows as separate arrays (a Zarr task's views of tar members, big-endian ones too): the same bytes
        rows = [
            np.array(row, dtype=row.dtype.newbyteorder(">")) if i % 3 == 0 else row
            for i, row in enumerate(data[start:stop])
        ]
        again = write_plain_shard(fs, str(tmp_path / "rows" / key), rows, 8, 256)
        assert (tmp_path / "rows" / key).read_bytes() == expected and again == written
    # what was written directly reads back through Zarr
    (tmp_path / "mine" / "ecg" / "zarr.json").write_bytes((tmp_path / "zarr" / "ecg" / "zarr.json").read_bytes())
    (tmp_path / "mine" / "zarr.json").write_bytes((tmp_path / "zarr" / "zarr.json").read_bytes())
    back = zarr.open_group(str(tmp_path / "mine"), mode="r", zarr_format=3)["ecg"][:]
    np.testing.assert_array_equal(back, data)


def test_an_all_fill_shard_is_no_object_and_compressed_arrays_go_through_zarr(tmp_path):
    fs = LocalFileSystem()
    path = tmp_path / "ecg" / "c" / "0" / "0"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stale")
    assert write_plain_shard(fs, str(path), np.zeros((10, 4), dtype="float32"), 8, 16) is None
    assert not path.exists()
    with pytest.raises(ValueError, match="differ in shape or dtype"):
        write_plain_shard(fs, str(path), [np.ones(4, "float32"), np.ones(5, "float32")], 8, 16)
    with pytest.raises(ValueError, match="differ in shape or dtype"):
        write_plain_shard(fs, str(path), [np.ones(4, "float32"), np.ones(4, "float64")], 8, 16)
    group = zarr.open_group(str(tmp_path / "z"), mode="w", zarr_format=3)
    assert plain_shard_rows(create_zarr_array(group, "a", 10, (4,), "float32", 8, 16, "zstd")) is None
    assert plain_shard_rows(create_zarr_array(group, "b", 10, (4,), "float32", 8, 16)) == (8, 16)
