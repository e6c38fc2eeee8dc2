"""physiofm.io's listing: one walk of the tree, the same files as fsspec's glob, links followed once."""

from __future__ import annotations

import os

import fsspec
import pytest

from physiofm.corpora import challenge, wfdb_tree
from physiofm.io import find_files, read_head


def _tree(root):
    for name in ("x.hea", ".hidden.hea", "x.mat", "a/b/deep.hea", "a/b/deep.mat", "a/side.HEA", "c/c2/c3/c4.hea"):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    return root


def test_the_listing_is_fsspecs_glob_on_a_plain_tree(tmp_path):
    root = _tree(tmp_path / "t")
    fs = fsspec.filesystem("file")
    for maxdepth in (None, 1, 2, 3, 4):
        for suffix in (".hea", ".mat"):
            expected = sorted(fs.glob(f"{root}/**/*{suffix}", maxdepth=maxdepth))
            assert find_files(fs, str(root), suffix, maxdepth=maxdepth) == expected, (suffix, maxdepth)
    assert find_files(fs, f"{root}/", ".hea") == find_files(fs, str(root), ".hea")  # a trailing slash
    assert find_files(fs, str(root / "missing"), ".hea") == []


def test_the_listing_is_fsspecs_glob_on_the_real_archives(shared_data):
    fs = fsspec.filesystem("file")
    for suffix in (".hea", ".mat", ".dat", ".edf"):
        assert find_files(fs, str(shared_data), suffix) == sorted(fs.glob(f"{shared_data}/**/*{suffix}")), suffix


def test_other_filesystems_list_the_same_files(tmp_path):
    root = _tree(tmp_path / "t")
    memory = fsspec.filesystem("memory")
    for path in sorted(root.rglob("*")):
        if path.is_file():
            memory.pipe(f"/listing/{path.relative_to(root)}", path.read_bytes())
    local = [p[len(str(root)) :] for p in find_files(fsspec.filesystem("file"), str(root), ".hea")]
    assert [p[len("/listing") :] for p in find_files(memory, "/listing", ".hea")] == local


def test_linked_folders_are_followed_once_and_folders_are_not_files(tmp_path):
    root = _tree(tmp_path / "t")
    (root / "folder.hea").mkdir()  # a folder named like a header is not a record (fsspec's glob lists it)
    outside = _tree(tmp_path / "elsewhere")
    os.symlink(outside, root / "linked")  # a dataset folder linked in: its files are listed
    os.symlink(root, root / "a" / "up")  # a link back up: no endless walk, nothing listed twice
    fs = fsspec.filesystem("file")
    found = find_files(fs, str(root), ".hea")
    assert f"{root}/folder.hea" not in found
    assert f"{root}/linked/a/b/deep.hea" in found
    assert len(found) == len(set(found)) == 8  # 4 .hea here (not .HEA), 4 in the linked folder
    assert not any("/up/" in p for p in found)


def test_an_archive_behind_a_link_lists_the_same_records(shared_data, tmp_path):
    source = shared_data / "physionet-challenge-2021"
    os.symlink(source, tmp_path / "challenge")
    assert challenge.list_items(str(tmp_path / "challenge")) == challenge.list_items(str(source))
    assert challenge.detect(str(tmp_path / "challenge"))
    assert wfdb_tree.detect(str(tmp_path))  # a link one level down


@pytest.mark.parametrize("size", [0, 3, 10_000])
def test_read_head_reads_the_start(tmp_path, size):
    (tmp_path / "f").write_bytes(b"0123456789")
    memory = fsspec.filesystem("memory")
    memory.pipe("/head/f", b"0123456789")
    assert read_head(fsspec.filesystem("file"), str(tmp_path / "f"), size) == b"0123456789"[:size]
    assert read_head(memory, "/head/f", size) == b"0123456789"[:size]
