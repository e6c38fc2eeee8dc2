"""`physiofm validate`: clean stores pass; each kind of corruption is named, locally and on S3.

Which check finds what (``sample`` is the number of samples the default check reads, as whole shards):

* truncated / deleted / stray shard: default (one listing of ``wds/`` against ``shards.parquet``);
* flipped byte (same size): the sha256 of a shard read: ``--deep`` always, the default when the
  shard is among those sampled;
* duplicate key, edited emotion label, subject leak, dropped column, missing build.json: default
  (indexes and manifest only);
* NaN written into a Zarr row: ``--deep`` always, the default when its shard is sampled.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zarr
from rich.console import Console

from physiofm.io import url_to_fs
from physiofm.store.build import build
from physiofm.store.validate import Report, print_report, validate
from physiofm.store.zarr_arrays import open_zarr_group
from physiofm.synth.ecg import synth_challenge, synth_ptbxl
from physiofm.synth.emotion import synth_dreamer


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("raw")
    return {
        "challenge": synth_challenge(root / "challenge", n_records=24, seed=1, subsets=("georgia", "cpsc_2018")),
        "ptbxl": synth_ptbxl(root / "ptbxl", n_records=24, seed=1, rates=(500,)),
        "dreamer": synth_dreamer(root / "dreamer", subjects=3),
    }


@pytest.fixture(scope="module")
def stores(raw, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    for name, source in raw.items():
        kind = "emotion" if name == "dreamer" else "ecg"
        build(str(source), str(root / name), kind=kind, jobs=1, shard_size=6)
    return {name: root / name for name in raw}


@pytest.fixture()
def copy(stores, tmp_path):
    """A fresh copy of a clean store, to corrupt."""

    def make(name: str) -> Path:
        return Path(shutil.copytree(stores[name], tmp_path / name))

    return make


def found(report: Report, code: str, *names: str) -> None:
    """``report`` fails, and has a ``code`` problem whose message names every one of ``names``."""
    assert not report.ok
    assert "check-failed" not in {p.code for p in report.problems}, report.problems
    messages = [p.message for p in report.problems if p.code == code]
    assert any(all(name in message for name in names) for message in messages), (code, names, report.problems)


def edit_manifest(store: Path, change) -> None:
    path = store / "manifest.parquet"
    change(pl.read_parquet(path)).write_parquet(path)


def flip_byte(data: bytearray, offset: int) -> None:
    data[offset] ^= 0xFF


def payload_offset(path: Path, member: int = 0) -> int:
    """A byte in the middle of the ``member``-th array payload of a shard."""
    with tarfile.open(path) as tar:
        arrays = [m for m in tar.getmembers() if m.name.endswith(".npy")]
    return arrays[member].offset_data + arrays[member].size // 2


# ---- clean stores ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["challenge", "ptbxl", "dreamer"])
def test_clean_store_passes(stores, name):
    report = validate(str(stores[name]))
    assert report.ok, report.problems
    assert validate(str(stores[name]), deep=True).ok
    body = json.loads(report.to_json())
    assert body["ok"] and body["problems"] == [] and body["sections"]["counts"]["samples"] > 0
    console = Console(file=io.StringIO(), width=200)
    print_report(report, console)
    assert "clean" in console.file.getvalue()


def test_summary_reports_splits_balance_and_sampling(stores):
    ptbxl = validate(str(stores["ptbxl"]), sample=6, seed=3)
    fold = ptbxl.sections["splits"]["fold"]
    assert fold["subject_wise"] and fold["leaked subjects"] == 0
    assert sum(v["samples"] for v in fold["values"].values()) == 24
    assert ptbxl.sections["balance"]["ptbxl_superclass"]["NORM"] > 0
    assert ptbxl.sections["checked"]["shards read"] == "1 / 4"
    assert ptbxl.sections["checked"]["samples compared with zarr"] == "6 / 24"
    assert validate(str(stores["ptbxl"]), sample=6, seed=3).sections == ptbxl.sections  # deterministic
    assert validate(str(stores["ptbxl"]), deep=True).sections["checked"]["shards read"] == "4 / 4"
    dreamer = validate(str(stores["dreamer"]))
    assert set(dreamer.sections["balance"]) == {"valence_high", "arousal_high", "dominance_high"}
    assert dreamer.sections["splits"] == {}


# ---- the nine corruptions, each on its own -------------------------------------------------------------


def test_truncated_shard_is_found_by_its_size(copy):
    store = copy("challenge")
    shard = store / "wds" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:100_000])
    found(validate(str(store), sample=0), "shard-size-mismatch", "shard-000001.tar")  # no shard read
    report = validate(str(store))
    found(report, "shard-size-mismatch", "shard-000001.tar")
    found(report, "shard-sha256-mismatch", "shard-000001.tar")


def test_flipped_byte_is_found_by_the_hash_of_a_read_shard(copy):
    store = copy("challenge")
    shard = store / "wds" / "shard-000002.tar"
    data = bytearray(shard.read_bytes())
    flip_byte(data, payload_offset(shard, member=1))
    shard.write_bytes(bytes(data))
    assert validate(str(store), sample=0).ok  # same size: the listing alone cannot see it
    for report in (validate(str(store)), validate(str(store), deep=True, sample=0)):
        found(report, "shard-sha256-mismatch", "shard-000002.tar")
        found(report, "zarr-shard-mismatch", "shard-000002.tar", "training-", "zarr row 13")


def test_deleted_shard(copy):
    store = copy("challenge")
    (store / "wds" / "shard-000003.tar").unlink()
    found(validate(str(store)), "shard-missing", "shard-000003.tar")


def test_stray_shard(copy):
    store = copy("challenge")
    shutil.copy(store / "wds" / "shard-000000.tar", store / "wds" / "shard-000099.tar")
    found(validate(str(store)), "shard-unlisted", "shard-000099.tar")


def test_duplicate_key(copy):
    store = copy("challenge")
    manifest = pl.read_parquet(store / "manifest.parquet")
    key = manifest["key"][6]
    edit_manifest(
        store,
        lambda m: m.with_columns(
            pl.when(pl.int_range(pl.len()) == 7).then(pl.lit(key)).otherwise(pl.col("key")).alias("key")
        ),
    )
    report = validate(str(store), sample=0)
    found(report, "duplicate-key", key)
    found(validate(str(store)), "shard-keys-mismatch", "shard-000001.tar", key)


def test_edited_emotion_labels(copy):
    store = copy("dreamer")
    manifest = pl.read_parquet(store / "manifest.parquet")
    flipped, raised = manifest["key"][3], manifest["key"][10]
    edit_manifest(
        store,
        lambda m: m.with_columns(
            pl.when(pl.col("key") == flipped).then(~pl.col("valence_high")).otherwise(pl.col("valence_high")),
            pl.when(pl.col("key") == raised)
            .then(pl.lit(9, dtype=pl.Int64))
            .otherwise(pl.col("arousal"))
            .alias("arousal"),
        ),
    )
    report = validate(str(store), sample=0)
    found(report, "label-inconsistent", "valence_high", flipped)
    found(report, "label-out-of-range", "arousal", raised)
    found(validate(str(store)), "manifest-shard-mismatch", flipped, "valence_high")


def test_edited_ecg_label_differs_from_the_shard(copy):
    store = copy("challenge")
    key = pl.read_parquet(store / "manifest.parquet")["key"][4]
    edit_manifest(
        store,
        lambda m: m.with_columns(
            pl.when(pl.col("key") == key).then(pl.lit(["164889003"])).otherwise(pl.col("dx")).alias("dx")
        ),
    )
    found(validate(str(store)), "manifest-shard-mismatch", "shard-000000.tar", key, "(dx)")


def test_subject_across_folds(raw, tmp_path):
    source = Path(shutil.copytree(raw["ptbxl"], tmp_path / "raw"))
    table = source / "ptbxl_database.csv"
    with table.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    patient, fold = header.index("patient_id"), header.index("strat_fold")
    other = next(r for r in body[1:] if r[fold] != body[0][fold])
    other[patient] = body[0][patient]  # the first record's patient, in another fold
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *body])
    store = tmp_path / "store"
    build(str(source), str(store), jobs=1, shard_size=6)
    report = validate(str(store))
    subject = str(int(float(body[0][patient])))
    found(report, "subject-leak", "fold", subject, f"fold {min(int(body[0][fold]), int(other[fold]))}")
    assert {p.code for p in report.problems} == {"subject-leak"}  # a consistent store with one leak
    # build.json may declare a split column not subject-wise: then it is reported, not an error
    info = json.loads((store / "build.json").read_text())
    (store / "build.json").write_text(json.dumps({**info, "splits": {"fold": {"subject_wise": False}}}))
    assert validate(str(store)).ok


def test_nan_in_zarr(copy):
    store = copy("challenge")
    key = pl.read_parquet(store / "manifest.parquet")["key"][9]
    zarr.open_group(str(store / "zarr"), mode="r+")["ecg"][9, 3, 4, 5] = np.nan
    for report in (validate(str(store), deep=True, sample=0), validate(str(store))):
        found(report, "non-finite", "shard-000001.tar", key, "zarr row 9")
        found(report, "zarr-shard-mismatch", key)


def test_dropped_manifest_column(copy):
    store = copy("challenge")
    edit_manifest(store, lambda m: m.drop("record_id", "shard_pos"))
    report = validate(str(store), deep=True)
    found(report, "schema-mismatch", "manifest", "'record_id'")
    found(report, "schema-mismatch", "manifest", "'shard_pos'")


def test_interrupted_build_is_incomplete(raw, tmp_path):
    def stop_after_first_unit(stage, done, total):
        if done:
            raise KeyboardInterrupt

    store = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        build(str(raw["challenge"]), str(store), jobs=1, shard_size=6, progress=stop_after_first_unit)
    report = validate(str(store))
    found(report, "store-incomplete", "build.json", "_build/")
    found(report, "table-missing", "manifest.parquet")
    found(validate(str(tmp_path / "nothing")), "store-missing", "nothing")


def test_every_problem_is_listed(copy):
    store = copy("challenge")
    (store / "wds" / "shard-000003.tar").unlink()
    shard = store / "wds" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:50_000])
    shutil.copy(store / "wds" / "shard-000000.tar", store / "wds" / "shard-000042.tar")
    zarr.open_group(str(store / "zarr"), mode="r+")["ecg"][2, 0, 0, 0] = np.inf
    edit_manifest(store, lambda m: m.drop("record_id"))
    (store / "build.json").unlink()
    report = validate(str(store))
    for code in (
        "store-incomplete",
        "schema-mismatch",
        "shard-missing",
        "shard-size-mismatch",
        "shard-unlisted",
        "non-finite",
    ):
        found(report, code)
    console = Console(file=io.StringIO(), width=200)
    print_report(report, console)
    text = console.file.getvalue()
    assert all(p.code in text for p in report.problems) and f"{len(report.problems)} problems" in text
    assert {p["code"] for p in json.loads(report.to_json())["problems"]} == {p.code for p in report.problems}


# ---- S3 --------------------------------------------------------------------------------------------


def test_validate_on_s3(raw, s3_bucket):
    url, options = s3_bucket
    store = f"{url}/store"
    build(str(raw["challenge"]), store, jobs=1, shard_size=6, storage_options=options)
    assert validate(store, storage_options=options).ok
    assert validate(store, deep=True, storage_options=options).ok
    fs, root = url_to_fs(store, options)
    data = fs.cat_file(f"{root}/wds/shard-000000.tar")
    fs.pipe_file(f"{root}/wds/shard-000000.tar", data[: len(data) - 10_240])  # truncated
    flipped = bytearray(fs.cat_file(f"{root}/wds/shard-000001.tar"))
    flip_byte(flipped, len(flipped) // 2)
    fs.pipe_file(f"{root}/wds/shard-000001.tar", bytes(flipped))
    fs.rm(f"{root}/wds/shard-000002.tar")
    fs.pipe_file(f"{root}/wds/shard-000077.tar", data)
    open_zarr_group(fs, f"{root}/zarr", mode="r+", storage_options=options)["ecg"][20, 0, 0, 0] = np.nan
    key = pl.read_parquet(fs.cat_file(f"{root}/manifest.parquet"))["key"][20]
    report = validate(store, deep=True, storage_options=options)
    found(report, "shard-size-mismatch", "shard-000000.tar")
    found(report, "shard-sha256-mismatch", "shard-000001.tar")
    found(report, "shard-missing", "shard-000002.tar")
    found(report, "shard-unlisted", "shard-000077.tar")
    found(report, "non-finite", key, "zarr row 20")
    fs.rm(f"{root}/build.json")
    found(validate(store, storage_options=options), "store-incomplete", "build.json")
