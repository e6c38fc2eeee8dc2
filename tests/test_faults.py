"""The fault boundary: a failure in any stage of one record makes it a reject; the rest is written as without it.

A generated Challenge archive of 12 records is built in one unit (one batch). For each stage
(read, lead mapping, transform, quality, write) a failure is injected for one record only; the
build must finish, reject that record with its stage and the exception, and write every other
sample exactly as a build of the archive without that record writes it.
"""

from __future__ import annotations

import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import physiofm.corpora.challenge as challenge
import physiofm.preprocess.ecg as ecg
import physiofm.store.tasks as tasks
from physiofm.store.build import BuildError, build
from physiofm.synth.ecg import synth_challenge

TARGET = 5  # the record (in item order) that fails
SENTINEL_MV = (
    8.0  # written into the target's first sample (below the 10-mV quality limit) so batch-wide steps can spot its data
)


def samples(store: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for path in sorted((store / "wds").glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                key, extension = member.name.split(".", 1)
                out.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return out


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """``(source, target record id, clean store of the archive without the target)``."""
    root = tmp_path_factory.mktemp("faults")
    src = synth_challenge(root / "raw", n_records=12, seed=8, subsets=("georgia",))
    headers = sorted(src.rglob("*.hea"))
    target = headers[TARGET]
    gain = float(target.read_text().splitlines()[1].split()[2].split("/")[0])
    mat = target.with_suffix(".mat")
    data = bytearray(mat.read_bytes())
    data[24:26] = struct.pack("<h", int(SENTINEL_MV * gain))  # lead I, sample 0 (MAT v4: column-major 12 x T)
    mat.write_bytes(bytes(data))
    without = root / "without"
    shutil.copytree(src, without)
    for path in (without / target.relative_to(src), without / mat.relative_to(src)):
        path.unlink()
    build(str(without), str(root / "clean"), jobs=1, shard_size=1000)
    return src, target.stem, root / "clean"


def _marked(x: np.ndarray) -> bool:
    """Whether a stack of raw signals (..., 12, T) in mV holds the target's data."""
    return bool(np.any(np.abs(x[..., 0, 0]) > SENTINEL_MV / 2))


def inject(stage: str, target: str, monkeypatch) -> None:
    def fail():
        raise RuntimeError(f"injected {stage} fault")

    if stage == "read":
        original = challenge.read

        def read(root, items):
            if any(item.id.endswith(target) for item in items):
                fail()
            return original(root, items)

        monkeypatch.setattr(challenge, "read", read)
    elif stage == "lead":
        original = ecg._map_leads
        monkeypatch.setattr(
            ecg, "_map_leads", lambda r, *a: fail() if r.record_id.endswith(target) else original(r, *a)
        )
    elif stage == "transform":
        original = ecg.T.filter_section
        monkeypatch.setattr(ecg.T, "filter_section", lambda x, *a, **k: fail() if _marked(x) else original(x, *a, **k))
    elif stage == "quality":
        original = ecg.window_flags
        monkeypatch.setattr(
            ecg, "window_flags", lambda raw, *a, **k: fail() if _marked(raw) else original(raw, *a, **k)
        )
    elif stage == "write":
        original = tasks.json_bytes

        def json_bytes(obj):
            if isinstance(obj, dict) and str(obj.get("record_id", "")).endswith(target):
                fail()
            return original(obj)

        monkeypatch.setattr(tasks, "json_bytes", json_bytes)


@pytest.mark.parametrize("stage", ["read", "lead", "transform", "quality", "write"])
def test_a_failure_in_one_record_rejects_it_and_writes_the_rest_unchanged(archive, stage, monkeypatch, tmp_path):
    src, target, clean = archive
    inject(stage, target, monkeypatch)
    summary = build(str(src), str(tmp_path / "store"), jobs=1, shard_size=1000)
    rejects = pl.read_parquet(tmp_path / "store" / "rejects.parquet")
    mine = rejects.filter(pl.col("record_id").str.ends_with(target))
    assert mine.height == 1, rejects
    assert mine["stage"][0] == stage and mine["reason"][0] == f"RuntimeError: injected {stage} fault"
    assert summary["records_rejected"] == 1
    assert samples(tmp_path / "store") == samples(clean)  # every other sample, byte for byte
    manifest = pl.read_parquet(tmp_path / "store" / "manifest.parquet").drop("source_path")
    assert manifest.equals(pl.read_parquet(clean / "manifest.parquet").drop("source_path"))


def test_a_store_fault_stops_the_build_and_it_resumes(archive, monkeypatch, tmp_path):
    """A failing write of the store itself is not a record's fault: the build stops, nothing half-written
    is visible, and the same command run again finishes the store."""
    src, _, _ = archive
    original = tasks.TarShardWriter.add

    def add(self, key, members):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tasks.TarShardWriter, "add", add)
    with pytest.raises(OSError, match="No space left"):
        build(str(src), str(tmp_path / "store"), jobs=1, shard_size=1000)
    assert not list((tmp_path / "store").rglob("*.tar")) and not (tmp_path / "store" / "build.json").exists()
    monkeypatch.setattr(tasks.TarShardWriter, "add", original)
    build(str(src), str(tmp_path / "store"), jobs=1, shard_size=1000)
    assert (tmp_path / "store" / "build.json").exists()


def test_an_archive_where_every_record_fails_names_the_reason(archive, monkeypatch, tmp_path):
    src, _, _ = archive
    monkeypatch.setattr(ecg, "_map_leads", lambda r, *a: (_ for _ in ()).throw(KeyError("V7")))
    with pytest.raises(BuildError, match="KeyError: 'V7'"):
        build(str(src), str(tmp_path / "store"), jobs=1, shard_size=1000)


def test_the_sentinel_reaches_the_transform(archive):
    """The injection above is only honest if the target's data really carries the sentinel."""
    src, target, _ = archive
    items = [i for i in challenge.list_items(str(src)) if i.id.endswith(target)]
    (record,) = challenge.read(str(src), items)
    assert record.signals["ecg"].data[0, 0] == pytest.approx(SENTINEL_MV, rel=1e-3)
