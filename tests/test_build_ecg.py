"""`physiofm build ecg`: real files, generated layouts, determinism, resume, bad input, S3."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zarr
from storecheck import assert_store_consistent, tree_bytes

from physiofm.store.build import BuildError, build
from physiofm.synth import ecg as synth


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return synth.synth_challenge(
        tmp_path_factory.mktemp("raw") / "challenge", n_records=48, seed=1, subsets=("georgia", "cpsc_2018")
    )


@pytest.fixture(scope="module")
def reference(archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "store"
    build(str(archive), str(out), jobs=1, shard_size=6)
    return out


# ---- real files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "folder, dataset, windows",
    [("physionet-challenge-2021", "challenge", 4), ("ptb-xl", "ptbxl", 1), ("wfdb-software-data", "wfdb", 6)],
)
def test_real_archives_build(shared_data, tmp_path, folder, dataset, windows):
    summary = build(str(shared_data / folder), str(tmp_path / "store"), jobs=1)
    assert summary["dataset"] == dataset and summary["samples"] == windows and summary["rejects"] == 0
    manifest = assert_store_consistent(tmp_path / "store")
    build_info = json.loads((tmp_path / "store" / "build.json").read_text())
    assert build_info["counts"]["samples"] == windows and len(build_info["recipe_hash"]) == 64
    assert not (tmp_path / "store" / "_build").exists()
    if dataset == "wfdb":  # 2-lead MIT-BIH: MLII -> II, V5 -> V5, the rest absent and zero
        mask = manifest["ecg_lead_mask"][0].to_list()
        assert mask == [False, True, False, False, False, False, False, False, False, False, True, False]
        data = zarr.open_group(str(tmp_path / "store" / "zarr"), mode="r")["ecg"][:]
        assert not data[:, ~np.array(mask)].any() and np.abs(data[:, 1]).max() > 0.3  # R waves in mV
    if dataset == "challenge":
        assert manifest.filter(pl.col("record_id") == "E07500")["dx"].to_list() == [["67741000119109", "426177001"]]


# ---- determinism, no-op, resume --------------------------------------------------------------


def test_store_is_consistent_and_labelled(archive, reference):
    manifest = assert_store_consistent(reference)
    assert manifest.height == 48 and set(manifest["subset"]) == {"georgia", "cpsc_2018"}
    assert pl.read_parquet(reference / "shards.parquet").height == 8


def test_jobs_do_not_change_a_byte(archive, reference, tmp_path):
    build(str(archive), str(tmp_path / "store"), jobs=2, shard_size=6)
    assert tree_bytes(tmp_path / "store") == tree_bytes(reference)


def test_second_build_is_a_no_op(archive, tmp_path):
    out = tmp_path / "store"
    build(str(archive), str(out), jobs=1, shard_size=6)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    summary = build(str(archive), str(out), jobs=2, shard_size=6)
    assert summary["status"] == "up-to-date" and summary["samples"] == 48
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    with pytest.raises(BuildError, match="different build"):
        build(str(archive), str(out), jobs=1, shard_size=7)


def test_killed_build_resumes_to_the_same_bytes(archive, reference, tmp_path):
    out = tmp_path / "store"
    code = f"from physiofm.store.build import build; build({str(archive)!r}, {str(out)!r}, jobs=2, shard_size=6)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list((out / "_build").glob("unit-*.json")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "build.json").exists(), "the build finished before it could be killed"
    assert all(tarfile.is_tarfile(p) for p in (out / "wds").glob("shard-*.tar"))
    summary = build(str(archive), str(out), jobs=2, shard_size=6)
    assert summary["status"] == "built"
    assert tree_bytes(out) == tree_bytes(reference)


def build_killed_at(archive, out, stage: str, done: int, overrides: dict | None = None) -> None:
    """A one-process build of ``archive`` into ``out`` (shards of 6) that SIGKILLs itself once ``done``
    tasks of ``stage`` (``units`` or ``zarr``) are finished: tasks run in order, so which are done is known."""
    extra = f", recipe_overrides={overrides!r}" if overrides else ""
    code = (
        "import os, signal; from physiofm.store.build import build\n"
        "def progress(stage, done, total):\n"
        f"    if stage == {stage!r} and done == {done}: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"build({str(archive)!r}, {str(out)!r}, jobs=1, shard_size=6{extra}, progress=progress)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert not (out / "build.json").exists(), "the build finished before it could be killed"


def test_shards_left_short_by_a_machine_crash_are_written_again(archive, reference, tmp_path):
    """Shards are renamed into place without fsync: after a crash of the machine (not of the build) a
    finished unit's shard can be empty or short although its marker survived.  The resumed build
    finds that from the sizes and runs those units again."""
    out = tmp_path / "store"
    build_killed_at(archive, out, "units", 5)
    shards = sorted((out / "wds").glob("shard-*.tar"))
    assert len(shards) == 5 and len(list((out / "_build").glob("unit-*.json"))) == 5
    shards[1].write_bytes(b"")  # what ext4 can leave of a file whose data never reached the disk
    shards[3].write_bytes(shards[3].read_bytes()[:10_000])
    summary = build(str(archive), str(out), jobs=2, shard_size=6)
    assert summary["status"] == "built"
    assert tree_bytes(out) == tree_bytes(reference)


SMALL_ZARR = {"output": {"zarr_shard_rows": 8, "zarr_chunk_rows": 4}}  # several Zarr tasks for 48 rows


def test_build_killed_while_filling_zarr_resumes_to_the_same_bytes(archive, tmp_path):
    reference = tmp_path / "reference"
    build(str(archive), str(reference), jobs=1, shard_size=6, recipe_overrides=SMALL_ZARR)
    out = tmp_path / "store"
    build_killed_at(archive, out, "zarr", 2, SMALL_ZARR)  # once two Zarr tasks are done
    assert len(list((out / "_build").glob("unit-*.json"))) == 8  # every shard was written
    assert len(list((out / "_build").glob("zarr-*.json"))) == 2  # of 6 Zarr tasks
    summary = build(str(archive), str(out), jobs=2, shard_size=6, recipe_overrides=SMALL_ZARR)
    assert summary["status"] == "built"
    assert tree_bytes(out) == tree_bytes(reference)
    assert_store_consistent(out)


def test_markers_left_empty_or_cut_short_by_a_machine_crash_make_their_tasks_run_again(archive, tmp_path):
    """Task markers are renamed into place without fsync, like the shards: a crash of the machine can
    leave one empty (ext4 commits the rename before the data) or cut short.  The resumed build drops
    such markers, runs those unit and Zarr tasks again, and ends byte-identical to an uninterrupted one."""
    reference = tmp_path / "reference"
    build(str(archive), str(reference), jobs=1, shard_size=6, recipe_overrides=SMALL_ZARR)
    out = tmp_path / "store"
    build_killed_at(archive, out, "zarr", 3, SMALL_ZARR)
    units = sorted((out / "_build").glob("unit-*.json"))
    zarrs = sorted((out / "_build").glob("zarr-*.json"))
    assert len(units) == 8 and len(zarrs) == 3
    units[2].write_bytes(b"")
    units[5].write_bytes(units[5].read_bytes()[:200])
    zarrs[1].write_bytes(b"")
    zarrs[2].write_bytes(b"[1, 2]")  # JSON, but not a marker
    (out / "wds" / "shard-000002.tar").write_bytes(b"")  # its unit's marker is gone: replaced whatever it holds
    summary = build(str(archive), str(out), jobs=2, shard_size=6, recipe_overrides=SMALL_ZARR)
    assert summary["status"] == "built"
    assert tree_bytes(out) == tree_bytes(reference)
    assert_store_consistent(out)


# ---- bad input -------------------------------------------------------------------------------


def test_bad_records_are_rejected_with_reasons_and_the_build_goes_on(archive, tmp_path):
    src = tmp_path / "bad"
    shutil.copytree(archive, src)
    headers = sorted(src.rglob("*.hea"))
    truncated, garbage, missing, nans, no_rate = headers[:5]
    mat = truncated.with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:30_000])
    garbage.write_text("\x00\x01 garbage ###\n")
    missing.with_suffix(".mat").unlink()
    raw = bytearray(nans.with_suffix(".mat").read_bytes())
    raw[24 + 2 * 12 * 1000 : 24 + 2 * 12 * 1500] = b"\x00\x80" * 12 * 500  # -32768 = invalid sample
    nans.with_suffix(".mat").write_bytes(bytes(raw))
    lines = no_rate.read_text().splitlines()
    first = lines[0].split()
    first[2] = "0"
    no_rate.write_text("\n".join([" ".join(first)] + lines[1:]) + "\n")

    summary = build(str(src), str(tmp_path / "store"), jobs=2, shard_size=6)
    rejects = pl.read_parquet(tmp_path / "store" / "rejects.parquet")
    reason = {row["record_id"]: row["reason"] for row in rejects.iter_rows(named=True)}
    rid = lambda path: str(path.relative_to(src))[:-4]  # noqa: E731
    assert reason[rid(truncated)].startswith("truncated signal file")
    assert reason[rid(garbage)].startswith("garbage header")
    assert reason[rid(missing)].startswith("missing signal file")
    assert reason[rid(nans)] == "window flagged nan"
    assert reason[rid(no_rate)].startswith("garbage header: unknown sampling rate")
    assert summary["samples"] == 43 and summary["records_rejected"] == 4 and summary["windows_rejected"] == 1
    assert_store_consistent(tmp_path / "store")


def test_a_build_that_rejects_everything_fails_and_says_why(tmp_path):
    src = tmp_path / "junk"
    src.mkdir()
    for i in range(3):
        (src / f"r{i}.hea").write_text("r 1 500 5000\nr.dat 16 200/mV 16 0 0 0 0 I\n")
    result = subprocess.run(
        [sys.executable, "-m", "physiofm", "build", "ecg", str(src), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1
    assert "every record" in result.stderr and "missing signal file r.dat (3)" in result.stderr
    assert pl.read_parquet(tmp_path / "out" / "rejects.parquet").height == 3
    assert not (tmp_path / "out" / "build.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "physiofm", "build", "ecg", str(empty), str(tmp_path / "o2")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "matches none of the known layouts" in result.stderr


def test_cli_prints_a_summary(archive, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "physiofm",
            "build",
            "ecg",
            str(archive),
            str(tmp_path / "s"),
            "--jobs",
            "2",
            "--shard-size",
            "20",
            "--dtype",
            "float16",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "windows written" in result.stdout and "48" in result.stdout
    assert zarr.open_group(str(tmp_path / "s" / "zarr"), mode="r")["ecg"].dtype == np.float16


# ---- generated layouts -----------------------------------------------------------------------


def test_ptbxl_layout_round_trips_with_labels(tmp_path):
    src = synth.synth_ptbxl(tmp_path / "ptbxl", n_records=12, seed=3)
    summary = build(str(src), str(tmp_path / "store"), jobs=1)
    assert summary["dataset"] == "ptbxl" and summary["samples"] == 12
    manifest = assert_store_consistent(tmp_path / "store")
    database = pl.read_csv(src / "ptbxl_database.csv", infer_schema_length=0)
    first = manifest.row(0, named=True)
    row = database.row(0, named=True)
    assert first["fold"] == int(float(row["strat_fold"])) and first["subject_id"] == str(int(float(row["patient_id"])))
    assert first["ecg_fs"] == 500 and json.loads(first["scp_codes"]).keys() == eval(row["scp_codes"]).keys()
    assert manifest["ptbxl_superclass"].list.len().sum() > 0
    assert set(manifest["ptbxl_superclass"].explode().drop_nulls()) <= {"NORM", "MI", "STTC", "CD", "HYP"}


def test_mimic_layout_maps_avf_and_avl_by_name(tmp_path):
    src = synth.synth_mimic_iv_ecg(tmp_path / "mimic", n_records=6, seed=4)
    summary = build(str(src), str(tmp_path / "store"), jobs=1)
    assert summary["dataset"] == "mimic-iv-ecg" and summary["samples"] == 6
    manifest = assert_store_consistent(tmp_path / "store")
    assert manifest["subject_id"].null_count() == 0 and manifest["study_id"].n_unique() == 6
    data = zarr.open_group(str(tmp_path / "store" / "zarr"), mode="r")["ecg"][:].astype(np.float64)
    lead = lambda i: data[:, i].reshape(len(data), -1)  # noqa: E731
    # Linear preprocessing keeps Einthoven/Goldberger relations: they hold only if aVL/aVF land right.
    np.testing.assert_allclose(lead(4), lead(0) - lead(1) / 2, atol=0.02)
    np.testing.assert_allclose(lead(5), lead(1) - lead(0) / 2, atol=0.02)


def test_code15_layout_skips_padding_and_keeps_short_exams(tmp_path):
    src = synth.synth_code15(tmp_path / "code15", n_records=10, seed=5, n_parts=2, short_fraction=0.5)
    summary = build(str(src), str(tmp_path / "store"), jobs=1)
    assert summary["dataset"] == "code15" and summary["samples"] == 10
    manifest = assert_store_consistent(tmp_path / "store")
    exams = pl.read_csv(src / "exams.csv", infer_schema_length=0)
    assert sorted(manifest["record_id"]) == sorted(exams["exam_id"])
    assert set(manifest["n_patches"]) == {7, 10}  # 7-s exams: one window, 7 valid patches
    short = manifest.filter(pl.col("n_patches") == 7)["zarr_row"].to_list()
    data = zarr.open_group(str(tmp_path / "store" / "zarr"), mode="r")["ecg"]
    assert all(not data[r][:, 7:].any() and data[r][:, :7].any() for r in short)
    by_id = {row["exam_id"]: row for row in exams.iter_rows(named=True)}
    for row in manifest.iter_rows(named=True):
        assert row["AF"] == (by_id[row["record_id"]]["AF"] == "True")


# ---- object storage --------------------------------------------------------------------------


def test_build_to_s3_matches_the_local_build(archive, reference, s3_bucket):
    import s3fs

    url, options = s3_bucket
    build(str(archive), f"{url}/store", jobs=2, shard_size=6, storage_options=options)
    fs = s3fs.S3FileSystem(**options)
    remote = {path.split("/store/", 1)[1]: fs.cat_file(path) for path in fs.find(f"{url}/store")}
    local = tree_bytes(reference)
    assert sorted(remote) == sorted(local)
    assert all(remote[name] == local[name] for name in local)


def test_a_leftover_that_vanishes_while_being_cleared_is_not_an_error(archive, tmp_path, monkeypatch):
    """A resumed build clears temporary shards that killed workers left.  A task orphaned by a dead Dask
    client may still be running and publish (rename) its temporary file between the listing and the
    removal; the build must go on (seen in CI as a FileNotFoundError from ``fs.rm``)."""
    from fsspec.implementations.local import LocalFileSystem

    out = tmp_path / "store"
    (out / "wds").mkdir(parents=True)
    (out / "wds" / ".shard-000000.tar.tmp-1-aaaa").write_bytes(b"partial")
    real_glob = LocalFileSystem.glob

    def glob_then_publish(self, path, **kwargs):
        found = real_glob(self, path, **kwargs)
        if ".tmp-" in str(path):
            for name in found:  # the orphan renames its file as soon as it has been listed
                os.replace(name, name.replace(".shard-000000.tar.tmp-1-aaaa", "orphan-published.tar"))
        return found

    monkeypatch.setattr(LocalFileSystem, "glob", glob_then_publish)
    summary = build(str(archive), str(out), jobs=1, shard_size=6)
    assert summary["status"] == "built"
