"""`physiofm validate`: clean stores pass; each kind of corruption is named, locally and on S3.

Which check finds what (``sample`` is the number of samples the default check reads, as whole shards):

* a table edited in any way (a column dropped or added, a ``record_id`` or a label changed, the
  same content re-written with other bytes): default, from the size, sha256 and columns that
  ``build.json`` records of every table; the message says what differs (the column missing or
  added, the columns whose values changed, or only the bytes);
* truncated / deleted / stray shard or Zarr object: default (one listing of ``wds/`` against
  ``shards.parquet``, one of ``zarr/`` against ``zarr.parquet``);
* flipped byte in a shard, NaN written through zarr (same size): the sha256 of the object read.
  ``--deep`` reads everything; the default reads the seeded sample *and* the objects modified after
  ``build.json`` (so an edit made after the build is read whatever the draw); an object whose
  modification time was put back is found by the default only when drawn;
* duplicate key, edited emotion label, subject leak, missing build.json: default (indexes and manifest only).

The edits of ``test_user_edit_is_named`` are made as a user makes them (polars reads and writes a
table back, zarr writes a value, bytes of a file are changed), on a local store and on the
loopback S3 server.

Amplitudes far from physiological (check ``scale``: a CODE-15% store built with the old × 0.1,
one lead ten times off) are *warnings*: listed, in ``--json``, but the store stays ``ok``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest
import zarr
from rich.console import Console
from typer.testing import CliRunner

from physiofm.cli import app
from physiofm.io import url_to_fs
from physiofm.store.build import build
from physiofm.store.validate import Report, print_report, validate
from physiofm.store.zarr_arrays import open_zarr_group
from physiofm.synth.ecg import synth_challenge, synth_code15, synth_ptbxl
from physiofm.synth.emotion import synth_dreamer

SMALL_ZARR = {"output": {"zarr_shard_rows": 8, "zarr_chunk_rows": 4}}  # 24 rows: 3 Zarr shard objects


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
    build(str(raw["challenge"]), str(root / "small-zarr"), jobs=1, shard_size=6, recipe_overrides=SMALL_ZARR)
    return {name: root / name for name in (*raw, "small-zarr")}


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


def warned(report: Report, code: str, *names: str) -> None:
    """``report`` is ok but warns with ``code``, in a message naming every one of ``names``."""
    assert report.ok, report.problems
    messages = [w.message for w in report.warnings if w.code == code and w.check == "scale"]
    assert any(all(name in message for name in names) for message in messages), (code, names, report.warnings)


def edit_manifest(store: Path, change) -> None:
    path = store / "manifest.parquet"
    change(pl.read_parquet(path)).write_parquet(path)


def flip_byte(data: bytearray, offset: int) -> None:
    data[offset] ^= 0xFF


def payload_offset(data: bytes, member: int = 0) -> int:
    """A byte in the middle of the ``member``-th array payload of a shard's bytes."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        arrays = [m for m in tar.getmembers() if m.name.endswith(".npy")]
    return arrays[member].offset_data + arrays[member].size // 2


def backdate(path: Path, reference: Path) -> None:
    """Give ``path`` a modification time before ``reference``'s (as if it had not been touched since the build)."""
    before = reference.stat().st_mtime - 60
    os.utime(path, (before, before))


# ---- clean stores ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["challenge", "ptbxl", "dreamer", "small-zarr"])
def test_clean_store_passes(stores, name):
    report = validate(str(stores[name]))
    assert report.ok, report.problems
    for jobs, pool in ((1, None), (2, "process"), (2, "thread")):
        deep = validate(str(stores[name]), deep=True, jobs=jobs, pool=pool)
        assert deep.ok, (jobs, pool, deep.problems)
    body = json.loads(report.to_json())
    assert body["ok"] and body["problems"] == [] and body["sections"]["counts"]["samples"] > 0
    assert body["warnings"] == [], body["warnings"]
    assert body["read"].endswith("`--deep` reads everything")
    console = Console(file=io.StringIO(), width=200)
    print_report(report, console)
    assert "clean" in console.file.getvalue() and "default check sampled" in console.file.getvalue()


def test_build_records_every_table_and_zarr_object(stores):
    store = stores["small-zarr"]
    info = json.loads((store / "build.json").read_text())
    assert set(info["tables"]) == {"manifest.parquet", "shards.parquet", "rejects.parquet", "zarr.parquet"}
    for file, entry in info["tables"].items():
        data = (store / file).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
        df = pl.read_parquet(store / file)
        assert entry["columns"] == [[name, str(dtype)] for name, dtype in df.schema.items()]
        assert entry["rows"] == df.height and set(entry["column_sha256"]) == set(df.columns)
    assert "subset" in dict(info["tables"]["manifest.parquet"]["columns"])
    index = pl.read_parquet(store / "zarr.parquet")
    on_disk = sorted(str(p.relative_to(store / "zarr")) for p in (store / "zarr").rglob("*") if p.is_file())
    assert sorted(index["name"]) == on_disk
    for row in index.iter_rows(named=True):
        data = (store / "zarr" / row["name"]).read_bytes()
        assert row["bytes"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()
    shards = index.filter(pl.col("array").is_not_null())
    assert shards.select("first_row", "samples").rows() == [(0, 8), (8, 8), (16, 8)]


def test_summary_reports_splits_balance_and_sampling(stores):
    ptbxl = validate(str(stores["ptbxl"]), sample=6, seed=3)
    fold = ptbxl.sections["splits"]["fold"]
    assert fold["subject_wise"] and fold["leaked subjects"] == 0
    assert sum(v["samples"] for v in fold["values"].values()) == 24
    assert ptbxl.sections["balance"]["ptbxl_superclass"]["NORM"] > 0
    checked = ptbxl.sections["checked"]
    assert checked["shards read"] == "1 / 4"
    assert checked["samples compared with zarr"] == "6 / 24"
    assert checked["changed after build.json"] == {"shards": 0, "zarr objects": 0, "read": []}
    assert checked["read"].startswith("sampled 6 of 24 samples in 1 of 4 shards (seed 3)")
    assert checked["read"].endswith("`--deep` reads everything")
    assert validate(str(stores["ptbxl"]), sample=6, seed=3).sections == ptbxl.sections  # deterministic
    deep = validate(str(stores["ptbxl"]), deep=True, jobs=2).sections["checked"]
    assert deep["shards read"] == "4 / 4" and deep["zarr objects hashed"] == "3 / 3"
    assert deep["read"].startswith("read everything (2 jobs): 24 of 24 samples in 4 of 4 shards, 3 of 3 Zarr objects")
    dreamer = validate(str(stores["dreamer"]))
    assert set(dreamer.sections["balance"]) == {"valence_high", "arousal_high", "dominance_high"}
    assert dreamer.sections["splits"] == {}


def test_deep_progress_and_the_cli(stores, tmp_path):
    calls = []
    validate(str(stores["small-zarr"]), deep=True, jobs=2, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (9, 9)  # 4 tar shards, 5 Zarr objects (3 shards, 2 zarr.json)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["validate", str(stores["small-zarr"]), "--deep", "-j", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    body = json.loads(out.read_text())
    assert body["ok"] and body["read"].startswith("read everything (2 jobs)")
    assert body["sections"]["checked"]["jobs"] == "2 (processes)"


def test_a_store_built_before_the_table_records_still_validates(copy):
    store = copy("challenge")
    info = json.loads((store / "build.json").read_text())
    del info["tables"]
    (store / "build.json").write_text(json.dumps(info))
    (store / "zarr.parquet").unlink()
    report = validate(str(store))
    assert report.ok, report.problems
    assert report.sections["checked"]["tables"].startswith("not checked against build.json")
    assert report.sections["checked"]["zarr objects"].startswith("not checked: the store has no zarr.parquet")
    assert validate(str(store), deep=True).ok


# ---- corruptions of the data, each on its own ------------------------------------------------------


def test_truncated_shard_is_found_by_its_size(copy):
    store = copy("challenge")
    shard = store / "wds" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:100_000])
    backdate(shard, store / "build.json")  # not read as changed: the listing alone sees it
    found(validate(str(store), sample=0), "shard-size-mismatch", "shard-000001.tar")  # no shard read
    report = validate(str(store))
    found(report, "shard-size-mismatch", "shard-000001.tar")
    found(report, "shard-sha256-mismatch", "shard-000001.tar")


def test_flipped_byte_is_found_by_the_hash_of_a_read_shard(copy):
    store = copy("challenge")
    shard = store / "wds" / "shard-000002.tar"
    data = bytearray(shard.read_bytes())
    flip_byte(data, payload_offset(bytes(data), member=1))
    shard.write_bytes(bytes(data))
    # changed after build.json: read by the default check whatever the draw
    report = validate(str(store), sample=0)
    found(report, "shard-sha256-mismatch", "shard-000002.tar")
    assert report.sections["checked"]["changed after build.json"]["read"] == ["shard-000002.tar"]
    assert "read 1 of 1 shard changed after build.json" in report.read
    backdate(shard, store / "build.json")
    assert validate(str(store), sample=0).ok  # same size, old time: the listing alone cannot see it
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
    found(report, "table-column-edited", "manifest.parquet", "'key'")
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
    found(report, "table-column-edited", "manifest.parquet", "'valence_high'", "'arousal'")
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
    found(validate(str(store), sample=0), "table-column-edited", "manifest.parquet", "'dx'")
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
    for report in (validate(str(store), deep=True, sample=0), validate(str(store)), validate(str(store), sample=0)):
        found(report, "zarr-sha256-mismatch", "zarr/ecg/c/0/0/0/0", "ecg rows 0–23")
        found(report, "non-finite", "shard-000001.tar", key, "zarr row 9")
        found(report, "zarr-shard-mismatch", key)


def test_nan_in_a_zarr_object_the_draw_misses(copy):
    """Among several Zarr objects, the one edited is read because it changed after the build (not drawn)."""
    store = copy("small-zarr")
    key = pl.read_parquet(store / "manifest.parquet")["key"][21]
    zarr.open_group(str(store / "zarr"), mode="r+")["ecg"][21, 0, 1, 2] = np.nan
    report = validate(str(store), sample=0)
    found(report, "zarr-sha256-mismatch", "zarr/ecg/c/2/0/0/0", "ecg rows 16–23")
    found(report, "non-finite", "shard-000003.tar", key, "zarr row 21")  # the shard holding its rows, read
    assert "read 1 of 1 Zarr object changed after build.json" in report.read
    assert "read 2 more shards holding the rows of a changed Zarr object" in report.read
    backdate(store / "zarr" / "ecg" / "c" / "2" / "0" / "0" / "0", store / "build.json")
    assert validate(str(store), sample=0).ok  # same size, old time: only reading it sees it
    found(validate(str(store), deep=True), "zarr-sha256-mismatch", "zarr/ecg/c/2/0/0/0")


def test_dropped_manifest_column(copy):
    store = copy("challenge")
    edit_manifest(store, lambda m: m.drop("record_id", "shard_pos"))
    report = validate(str(store), deep=True)
    found(report, "schema-mismatch", "manifest", "'record_id'")
    found(report, "schema-mismatch", "manifest", "'shard_pos'")
    found(report, "table-column-missing", "manifest.parquet", "'record_id'", "build.json lists it")


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


def test_deep_reports_the_same_whatever_the_jobs(copy):
    store = copy("small-zarr")
    zarr.open_group(str(store / "zarr"), mode="r+")["ecg"][3, 0, 0, 0] = np.nan
    shard = store / "wds" / "shard-000002.tar"
    data = bytearray(shard.read_bytes())
    flip_byte(data, payload_offset(bytes(data)))
    shard.write_bytes(bytes(data))
    one = validate(str(store), deep=True, jobs=1)
    assert not one.ok
    for pool in ("process", "thread"):
        assert validate(str(store), deep=True, jobs=2, pool=pool).problems == one.problems


# ---- the edits a user makes, named by the check that should catch them, locally and on S3 ----------


class Store:
    """A copy of the clean ``small-zarr`` store, local or on the loopback S3 server, and the ways a user edits one."""

    def __init__(self, url: str, options: dict) -> None:
        self.url, self.options = url, options
        self.fs, self.root = url_to_fs(url, options)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def read_table(self, name: str) -> pl.DataFrame:
        with self.fs.open(self.path(name), "rb") as handle:
            return pl.read_parquet(handle)

    def write_table(self, name: str, df: pl.DataFrame, **options) -> None:
        with self.fs.open(self.path(name), "wb") as handle:
            df.write_parquet(handle, **options)

    def edit_table(self, name: str, change) -> None:
        self.write_table(name, change(self.read_table(name)))

    def array(self, modality: str = "ecg"):
        group = open_zarr_group(self.fs, self.path("zarr"), mode="r+", storage_options=self.options)
        return group[modality]

    def edit_bytes(self, name: str, change) -> None:
        self.fs.pipe_file(self.path(name), change(self.fs.cat_file(self.path(name))))

    def validate(self, **options) -> Report:
        return validate(self.url, storage_options=self.options, **options)


@pytest.fixture(scope="module")
def s3_clean(s3_server, raw):
    """The clean ``small-zarr`` store, built once on the loopback S3 server."""
    import s3fs

    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("validate-edits")
    build(str(raw["challenge"]), "s3://validate-edits/clean", jobs=1, shard_size=6, recipe_overrides=SMALL_ZARR,
          storage_options=options)  # fmt: skip
    yield "s3://validate-edits", options
    fs.rm("validate-edits", recursive=True)


@pytest.fixture(params=["local", "s3"])
def user_store(request, stores, tmp_path):
    if request.param == "local":
        return Store(str(shutil.copytree(stores["small-zarr"], tmp_path / "store")), {})
    bucket, options = request.getfixturevalue("s3_clean")
    url = f"{bucket}/{request.node.name.replace('[', '-').rstrip(']')}"
    fs, _ = url_to_fs(bucket, options)
    fs.copy(f"{bucket}/clean", url, recursive=True)
    fs.invalidate_cache()
    return Store(url, options)


def _set(column: str, row: int, value):
    def change(m: pl.DataFrame) -> pl.DataFrame:
        return m.with_columns(
            pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
        )

    return change


def test_clean_copy_passes(user_store):
    assert user_store.validate().ok
    for jobs in (1, 2):
        report = user_store.validate(deep=True, jobs=jobs)
        assert report.ok, report.problems
        assert report.sections["checked"]["zarr objects hashed"] == "5 / 5"


def test_dropped_label_column(user_store):
    user_store.edit_table("manifest.parquet", lambda m: m.drop("subset"))
    for report in (user_store.validate(sample=0), user_store.validate(deep=True)):
        found(report, "table-column-missing", "manifest.parquet: column 'subset' is missing (build.json lists it)")
        found(report, "table-sha256-mismatch", "manifest.parquet: sha256 differs from build.json", "edited after")


def test_added_column(user_store):
    user_store.edit_table("manifest.parquet", lambda m: m.with_columns(pl.lit(1).alias("my_label")))
    report = user_store.validate(sample=0)
    found(report, "table-column-added", "manifest.parquet", "'my_label'", "added after the build")
    assert {p.code for p in report.problems} == {"table-column-added", "table-sha256-mismatch"}


def test_edited_record_id(user_store):
    key = user_store.read_table("manifest.parquet")["key"][5]
    user_store.edit_table("manifest.parquet", _set("record_id", 5, "E99999"))
    report = user_store.validate(sample=0)
    found(report, "table-sha256-mismatch", "manifest.parquet", "the table was edited after the build")
    found(report, "table-column-edited", "manifest.parquet", "column 'record_id'", "--deep")
    # nothing else, but the shards read (on S3 a copy is new: its newest shards are read too) may see the row
    assert {p.code for p in report.problems} - {"manifest-shard-mismatch"} == {
        "table-column-edited",
        "table-sha256-mismatch",
    }
    found(user_store.validate(deep=True, jobs=2), "manifest-shard-mismatch", "shard-000000.tar", key, "(record_id)")


def test_edited_label_value(user_store):
    manifest = user_store.read_table("manifest.parquet")
    key, age = manifest["key"][14], manifest["age"][14]
    user_store.edit_table("manifest.parquet", _set("age", 14, (age or 40) + 1.0))
    found(user_store.validate(sample=0), "table-column-edited", "manifest.parquet", "column 'age'")
    found(user_store.validate(deep=True), "manifest-shard-mismatch", "shard-000002.tar", key, "(age)")


@pytest.mark.parametrize("table", ["manifest.parquet", "shards.parquet", "zarr.parquet"])
def test_rewritten_table(user_store, table):
    before = user_store.fs.cat_file(user_store.path(table))
    user_store.write_table(table, user_store.read_table(table), compression="gzip", statistics=False)
    assert user_store.fs.cat_file(user_store.path(table)) != before
    report = user_store.validate(sample=0)
    found(report, "table-sha256-mismatch", f"{table}: sha256 differs", "re-written (same content, different bytes)")
    assert [p.code for p in report.problems] == ["table-sha256-mismatch"]


def test_nan_in_a_zarr_chunk(user_store):
    key = user_store.read_table("manifest.parquet")["key"][10]
    user_store.array()[10, 2, 3, 4] = np.nan
    for report in (user_store.validate(), user_store.validate(sample=0)):  # the default check
        found(report, "zarr-sha256-mismatch", "zarr/ecg/c/1/0/0/0", "ecg rows 8–15", "changed after the build")
        found(report, "non-finite", key, "zarr row 10")
        found(report, "zarr-shard-mismatch", key)
    report = user_store.validate(deep=True, jobs=2)
    found(report, "zarr-sha256-mismatch", "zarr/ecg/c/1/0/0/0")
    found(report, "non-finite", key, "zarr row 10")


def test_truncated_zarr_object(user_store):
    user_store.edit_bytes("zarr/ecg/c/1/0/0/0", lambda data: data[: len(data) // 2])
    for report in (user_store.validate(sample=0), user_store.validate(), user_store.validate(deep=True)):
        found(report, "zarr-size-mismatch", "zarr/ecg/c/1/0/0/0", "zarr.parquet says 768036")
    found(user_store.validate(deep=True), "zarr-unreadable", "shard-000002.tar", "zarr ecg rows 12–17")


def test_changed_byte_in_a_tar_shard(user_store):
    def change(data: bytes) -> bytes:
        edited = bytearray(data)
        flip_byte(edited, payload_offset(data, member=2))  # the shard's third sample
        return bytes(edited)

    user_store.edit_bytes("wds/shard-000003.tar", change)
    key = user_store.read_table("manifest.parquet")["key"][20]
    for report in (user_store.validate(sample=0), user_store.validate(deep=True, jobs=2)):
        found(report, "shard-sha256-mismatch", "shard-000003.tar")
        found(report, "zarr-shard-mismatch", "shard-000003.tar", key)


# ---- scale: amplitudes against physiological ranges (warnings) -----------------------------------


def amplitude_of(store: Path) -> dict:
    info = json.loads((store / "build.json").read_text())
    assert "amplitude" in info, "build.json has no amplitude statistics: run_unit does not compute them yet"
    return info["amplitude"]


def set_amplitude(store: Path, amplitude: dict | None) -> None:
    """Replace build.json's amplitude statistics (None: remove them, as in a store of an older build)."""
    info = json.loads((store / "build.json").read_text())
    info.pop("amplitude", None)
    if amplitude is not None:
        info["amplitude"] = amplitude
    (store / "build.json").write_text(json.dumps(info))


def figures(median: float, windows: int = 24) -> dict:
    return {"median": median, "q1": median * 0.8, "q3": median * 1.2, "windows": windows}


def ecg_amplitude(leads: dict[str, float], r_peak: float | None) -> dict:
    section = {"unit": "mV", "windows": 24, "channels": {name: figures(v) for name, v in leads.items()}}
    if r_peak is not None:
        section["r_peak_ii"] = figures(r_peak)
    return section


TYPICAL = dict(zip(("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),
                   (0.5, 0.6, 0.35, 0.5, 0.35, 0.3, 0.5, 0.9, 0.95, 0.95, 1.2, 1.1)))  # fmt: skip


@pytest.mark.parametrize("name", ["challenge", "ptbxl", "dreamer"])
def test_clean_stores_have_plausible_amplitudes(stores, name):
    amplitude = amplitude_of(stores[name])
    report = validate(str(stores[name]))
    assert report.ok and report.warnings == [], report.warnings
    assert report.sections["amplitude"] == amplitude
    assert set(amplitude) == ({"eeg", "ecg"} if name == "dreamer" else {"ecg"})
    if name != "dreamer":
        assert 0.3 < amplitude["ecg"]["r_peak_ii"]["median"] < 3


def test_scale_warnings_read_build_json(copy):
    store = copy("challenge")
    set_amplitude(store, {"ecg": ecg_amplitude(TYPICAL, 0.9)})
    report = validate(str(store), sample=0)
    assert report.ok and report.warnings == [] and "ecg (24 windows)" in report.sections["checked"]["amplitude"]

    set_amplitude(store, {"ecg": ecg_amplitude({k: v * 0.1 for k, v in TYPICAL.items()}, 0.09)})
    report = validate(str(store), sample=0)
    warned(report, "ecg-amplitude-implausible", "lead II", "0.09 mV", "0.3–3 mV", "CODE-15% values are mV")
    assert {w.code for w in report.warnings} == {"ecg-amplitude-implausible"}  # no lead is off the others

    set_amplitude(store, {"ecg": ecg_amplitude({**TYPICAL, "V5": 12.0}, 0.9)})
    report = validate(str(store), sample=0)
    warned(report, "lead-scale-outlier", "lead V5", "12 mV", "the median of the 12 leads")
    assert len(report.warnings) == 1
    set_amplitude(store, {"ecg": ecg_amplitude({**TYPICAL, "III": 0.03}, 0.9)})
    warned(validate(str(store), sample=0), "lead-scale-outlier", "lead III", "0.03 mV")

    # no lead II (a paired store's ECG): every lead far outside the range
    set_amplitude(store, {"ecg": ecg_amplitude({"ECG1": 600.0, "ECG2": 400.0}, None)})
    warned(validate(str(store), sample=0), "ecg-amplitude-implausible", "every lead", "from 4e+02 to 6e+02 mV")

    eeg = {"unit": "uV", "windows": 24, "channels": {c: figures(0.02) for c in ("F3", "F4", "O1")}}
    set_amplitude(store, {"eeg": eeg, "ecg": ecg_amplitude(TYPICAL, 0.9)})
    report = validate(str(store), sample=0)
    warned(report, "eeg-amplitude-implausible", "0.02 µV", "1–1000 µV", "3 channels")
    body = json.loads(report.to_json())
    assert body["ok"] and body["problems"] == []
    assert [w["code"] for w in body["warnings"]] == ["eeg-amplitude-implausible"]
    console = Console(file=io.StringIO(), width=200)
    print_report(report, console)
    text = console.file.getvalue()
    assert "1 warning" in text and "eeg-amplitude-implausible" in text and "clean" in text
    assert "R peak, lead II" in text  # the amplitude table

    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["validate", str(store), "--sample", "0", "--json", str(store.parent / "r.json")])
    assert result.exit_code == 0, result.output  # warnings do not fail
    assert json.loads((store.parent / "r.json").read_text())["warnings"][0]["check"] == "scale"

    set_amplitude(store, None)  # an older store: a note, no warning, no failure
    report = validate(str(store), sample=0)
    assert report.ok and report.warnings == []
    assert report.sections["checked"]["amplitude"].startswith("not checked: build.json has no amplitude")


def test_code15_built_with_the_old_factor_warns(tmp_path):
    source = synth_code15(tmp_path / "code15", n_records=12, seed=7)
    build(str(source), str(tmp_path / "mv"), jobs=1)
    clean = validate(str(tmp_path / "mv"))
    assert clean.ok and clean.warnings == [], clean.warnings
    assert 0.3 < amplitude_of(tmp_path / "mv")["ecg"]["r_peak_ii"]["median"] < 3
    # the README's "1e-4 V" reading, through the recipe knob: ten times too small
    build(str(source), str(tmp_path / "old"), jobs=1, recipe_overrides={"source": {"scale": 0.1}})
    old = amplitude_of(tmp_path / "old")["ecg"]["r_peak_ii"]["median"]
    assert old == pytest.approx(amplitude_of(tmp_path / "mv")["ecg"]["r_peak_ii"]["median"] * 0.1, rel=0.02)
    warned(validate(str(tmp_path / "old")), "ecg-amplitude-implausible", "lead II", "[source] scale", "0.1")


def test_one_lead_ten_times_off_warns(tmp_path):
    source = synth_code15(tmp_path / "code15", n_records=12, seed=8)
    with h5py.File(source / "exams_part0.hdf5", "r") as h5:
        p99 = np.percentile(np.abs(h5["tracings"][:-1]), 99, axis=(0, 1))
    lead = int(np.argmax(p99))  # the largest lead: ten times it is ten times the median
    for part in sorted(source.glob("exams_part*.hdf5")):
        with h5py.File(part, "r+") as h5:
            tracings = h5["tracings"][:]
            tracings[:, :, lead] *= 10  # one lead written with the wrong gain
            h5["tracings"][...] = tracings
    names = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    # keep the windows above 10 mV (flagged q_amplitude) so that the store has the bad lead to see
    build(str(source), str(tmp_path / "store"), jobs=1, recipe_overrides={"quality": {"drop": ["nan"]}})
    report = validate(str(tmp_path / "store"))
    warned(report, "lead-scale-outlier", f"lead {names[lead]}:")
    assert [w.code for w in report.warnings] == ["lead-scale-outlier"]


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
