"""`physiofm build eeg`: generated TUH and BIDS trees, the real EDF+/BDF files, determinism, resume, rejects,
validation, and pretraining on the result."""

from __future__ import annotations

import io
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
from storecheck import tar_samples, tree_bytes

from physiofm.corpora import edf
from physiofm.preprocess.recipe import load_recipe, merge
from physiofm.store.build import BuildError, build
from physiofm.store.validate import validate
from physiofm.synth import eeg as synth

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}


@pytest.fixture(scope="module")
def tuab(tmp_path_factory) -> Path:
    return synth.synth_tuh_eeg(tmp_path_factory.mktemp("raw") / "tuab", n_records=6, seed=1, minutes=(5.5, 6.5))


@pytest.fixture(scope="module")
def reference(tuab, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "store"
    build(str(tuab), str(out), kind="eeg", jobs=1, shard_size=8)
    return out


def check_store(store: Path) -> pl.DataFrame:
    """Every manifest row's sample is the same in its shard and in Zarr; shapes and masks hold."""
    manifest = pl.read_parquet(store / "manifest.parquet")
    array = zarr.open_group(str(store / "zarr"), mode="r")["eeg"]
    info = json.loads((store / "build.json").read_text())
    assert array.shape[0] == manifest.height and list(array.shape[1:]) == info["sample_shapes"]["eeg"]
    assert manifest["key"].n_unique() == manifest.height
    for shard in pl.read_parquet(store / "shards.parquet")["shard"]:
        samples = tar_samples(store / "wds" / shard)
        for row in manifest.filter(pl.col("shard") == shard).iter_rows(named=True):
            sample = np.load(io.BytesIO(samples[row["key"]]["eeg.npy"]))
            np.testing.assert_array_equal(sample, array[row["zarr_row"]])
            absent = ~np.array(row["eeg_channel_mask"])
            assert not sample[absent].any()
    return manifest


def test_tuab_store_is_consistent_labelled_and_valid(reference):
    manifest = check_store(reference)
    assert manifest.height > 25 and manifest["subject_id"].null_count() == 0
    assert set(manifest["split"]) == {"train", "eval"} and set(manifest["label"]) == {"normal", "abnormal"}
    assert manifest["abnormal"].dtype == pl.Boolean
    assert set(manifest["eeg_montage"]) == {"01_tcp_ar"} and set(manifest["eeg_reference"]) == {"AR"}
    assert set(manifest["eeg_fs"]) == {250.0, 256.0, 400.0}
    assert manifest["eeg_channels"][0].to_list() == list(load_recipe("tueg")["channels"]["targets"])
    assert all(manifest["eeg_channel_mask"].list.all())
    assert "EEG EKG1-REF (ecg)" in manifest["eeg_skipped"][0].to_list()
    # the leakage contract: subjects never on both sides of the split
    assert manifest.group_by("subject_id").agg(pl.col("split").n_unique())["split"].max() == 1
    info = json.loads((reference / "build.json").read_text())
    assert info["kind"] == "eeg" and info["sample_shapes"]["eeg"] == [19, 30, 200]
    assert info["recipe"]["name"] == "tuh-eeg" and info["recipe"]["filter"]["notch"] == 60.0
    report = validate(str(reference), deep=True)
    assert report.ok, report.problems
    assert not report.warnings, report.warnings


def test_jobs_do_not_change_a_byte(tuab, reference, tmp_path):
    build(str(tuab), str(tmp_path / "store"), kind="eeg", jobs=2, shard_size=8)
    assert tree_bytes(tmp_path / "store") == tree_bytes(reference)


def test_second_build_is_a_no_op(tuab, reference, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(reference, out)
    summary = build(str(tuab), str(out), kind="eeg", jobs=1, shard_size=8)
    assert summary["status"] == "up-to-date"
    with pytest.raises(BuildError, match="different build"):
        build(str(tuab), str(out), kind="eeg", jobs=1, shard_size=9)


def test_killed_build_resumes_to_the_same_bytes(tuab, reference, tmp_path):
    out = tmp_path / "store"
    code = (f"from physiofm.store.build import build; "
            f"build({str(tuab)!r}, {str(out)!r}, kind='eeg', jobs=2, shard_size=8)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((out / "_build").glob("unit-*.json")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "build.json").exists(), "the build finished before it could be killed"
    assert all(tarfile.is_tarfile(p) for p in (out / "wds").glob("shard-*.tar"))
    assert build(str(tuab), str(out), kind="eeg", jobs=2, shard_size=8)["status"] == "built"
    assert tree_bytes(out) == tree_bytes(reference)


def test_parts_of_long_files_give_the_same_samples(tuab, reference, tmp_path, monkeypatch):
    monkeypatch.setattr(edf, "PART_BYTES", 2 * 2**20)  # every file in 3-6 parts
    out = tmp_path / "store"
    summary = build(str(tuab), str(out), kind="eeg", jobs=1, shard_size=8)
    assert summary["items"] > 12
    ours, theirs = pl.read_parquet(out / "manifest.parquet"), pl.read_parquet(reference / "manifest.parquet")
    assert ours["key"].to_list() == theirs["key"].to_list()
    a, b = (zarr.open_group(str(s / "zarr"), mode="r")["eeg"][:] for s in (out, reference))
    np.testing.assert_array_equal(a, b)
    assert pl.read_parquet(out / "rejects.parquet").height == pl.read_parquet(reference / "rejects.parquet").height


def test_bad_recordings_are_rejected_with_reasons_and_the_build_goes_on(tmp_path):
    src = synth.synth_tuh_eeg(tmp_path / "raw", n_records=6, seed=4, layout="tueg", minutes=(5.5, 6.0), short=1)
    files = sorted(src.rglob("*.edf"))
    files[0].write_bytes(files[0].read_bytes()[:50_000])  # truncated
    (files[1].parent / "broken_s001_t009.edf").write_bytes(b"\x00garbage" * 64)
    few = synth.write_edf(files[2].parent / "aaaaaazz_s001_t000.edf",
                          [synth.Channel(f"EEG {n}-REF", 250) for n in ("FP1", "FP2", "CZ")],
                          [np.zeros(250 * 400)] * 3, start=synth.datetime(2010, 1, 1))  # fmt: skip
    summary = build(str(src), str(tmp_path / "store"), kind="eeg", jobs=2)
    rejects = pl.read_parquet(tmp_path / "store" / "rejects.parquet")
    reasons = {Path(r["source"]).name: (r["stage"], r["reason"]) for r in rejects.iter_rows(named=True)
               if r["window_index"] is None}  # fmt: skip
    assert reasons[files[0].name][0] == "read" and "truncated file" in reasons[files[0].name][1]
    assert reasons["broken_s001_t009.edf"] == ("read", "not an EDF/BDF file: version field b'\\x00garbage'")
    assert reasons[few.name] == ("lead", "missing 16 of 19 channels (the recipe allows 0): F3, F4, C3, C4, P3, "
                                         "P4, O1, O2, F7, F8, T3, T4, T5, T6, FZ, PZ")  # fmt: skip
    short = [v for v in reasons.values() if v[1].startswith("recording is 180.0 s")]
    assert short == [("transform", "recording is 180.0 s, shorter than the recipe's minimum 300 s")]
    assert summary["records_rejected"] == 4 and summary["samples"] > 20
    manifest = check_store(tmp_path / "store")
    assert set(manifest["eeg_montage"]) <= {"01_tcp_ar", "02_tcp_le", "03_tcp_ar_a"}
    assert set(manifest["eeg_reference"]) <= {"AR", "LE"} and manifest["session_date"].null_count() == 0
    assert validate(str(tmp_path / "store")).ok


def test_tuev_store_labels_each_window_with_its_events(tmp_path):
    src = synth.synth_tuh_eeg(tmp_path / "raw", n_records=3, seed=5, layout="tuev", minutes=(2.0, 2.5))
    build(str(src), str(tmp_path / "store"), kind="eeg", recipe="tuev", jobs=1)
    manifest = check_store(tmp_path / "store")
    assert json.loads((tmp_path / "store" / "build.json").read_text())["sample_shapes"]["eeg"] == [19, 5, 200]
    assert manifest["events"].dtype == pl.List(pl.String) and manifest["events"].list.len().sum() > 0
    assert set(manifest["events"].explode().drop_nulls()) <= {"spsw", "gped", "pled", "eyem", "artf", "bckg"}
    assert manifest["window_start_s"].min() == 0.0  # no trims for TUEV


def test_bids_store_masks_bad_channels_and_notches_at_the_line_frequency(tmp_path):
    src = synth.synth_bids_eeg(tmp_path / "bids", subjects=3, seed=6, runs=2, minutes=(1.5, 2.0))
    summary = build(str(src), str(tmp_path / "store"), kind="eeg", jobs=1)
    assert summary["dataset"] == "bids-eeg"
    manifest = check_store(tmp_path / "store")
    assert set(manifest["subject_id"]) == {"sub-01", "sub-02", "sub-03"}
    masked = manifest.filter(~pl.col("eeg_channel_mask").list.all())
    assert masked.height and set(masked["record_id"]) == {"sub-01_task-rest_run-2", "sub-03_task-rest_run-2"}
    assert masked["eeg_channel_mask"][0].to_list()[13] is False  # T4 = T8, marked bad
    assert set(manifest["eeg_reference"]) == {"average"} and set(manifest["power_line_hz"]) == {50.0}
    assert set(manifest["group"]) == {"patient", "control"} and "eyes_closed" in manifest["event_labels"][0]
    rejects = pl.read_parquet(tmp_path / "store" / "rejects.parquet")
    assert "channel T8 left out: marked bad in channels.tsv" in rejects["reason"].to_list()
    assert validate(str(tmp_path / "store")).ok


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "physiofm", *args], capture_output=True, text=True, env=ENV)


def test_real_edf_plus_builds_from_the_cli(shared_data, tmp_path):
    src = tmp_path / "eegmmidb"
    shutil.copytree(shared_data / "eegmmidb", src)
    result = run_cli("build", "eeg", str(src), str(tmp_path / "store"), "--jobs", "1")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr and "windows written" in result.stdout
    manifest = check_store(tmp_path / "store")
    assert manifest.height == 12 and set(manifest["dataset"]) == {"edf"} and set(manifest["subject_id"]) == {"S001"}
    assert set(manifest["eeg_fs"]) == {160.0} and manifest["events"].list.len().min() >= 1
    result = run_cli("validate", str(tmp_path / "store"))
    assert result.returncode == 0, result.stdout


def test_real_bdf_is_a_clear_reject_or_a_sample_by_the_recipe(shared_data, tmp_path):
    src = tmp_path / "mne"
    shutil.copytree(shared_data / "mne-python-test-data", src)
    result = run_cli("build", "eeg", str(src), str(tmp_path / "store"))
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "missing 16 of 19 channels (the recipe allows 0)" in result.stderr.replace("\n", "")
    recipe = merge(load_recipe("edf"), {"channels": {"max_missing": 16}})  # allow C3, C4, Cz alone
    build(str(src), str(tmp_path / "store3"), kind="eeg", recipe=recipe, jobs=1)
    manifest = check_store(tmp_path / "store3")
    assert manifest.height == 1 and manifest["eeg_channel_mask"][0].to_list().count(True) == 3
    assert manifest["eeg_skipped"][0].to_list() == ["Status (status)"]


def test_pretraining_runs_on_an_eeg_store(reference, tmp_path):
    from physiofm.models import load_pretrained
    from physiofm.train.pretrain import PretrainConfig, pretrain

    summary = pretrain(PretrainConfig(str(reference), str(tmp_path / "run"), modality="eeg", max_steps=4,
                                      batch_size=4, checkpoint_every=2, model={"n_layer": 1}, seed=1))  # fmt: skip
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])
    assert len(load_pretrained(tmp_path / "run" / "encoder.pt").encoder.layers) == 1


def test_eeg_only_classifier_on_a_tuab_store(tmp_path):
    """Normal/abnormal on a TUAB-layout store through `physiofm finetune`, under TUAB's own train/eval split: the
    test rows are exactly the eval folder's, and a linear probe of a random-initialised encoder finds the planted
    slowing."""
    src = synth.synth_tuh_eeg(tmp_path / "raw", n_records=12, seed=2, minutes=(5.2, 5.6))
    build(str(src), str(tmp_path / "store"), kind="eeg", jobs=1)
    manifest = pl.read_parquet(tmp_path / "store" / "manifest.parquet").with_row_index("row")
    assert set(manifest["label"]) == {"normal", "abnormal"} and set(manifest["split"]) == {"train", "eval"}
    result = run_cli("finetune", str(tmp_path / "store"), "--out", str(tmp_path / "run"), "--modalities", "eeg",
                     "--targets", "abnormal", "--protocol", "split", "--mode", "linear", "--baselines", "none",
                     "--batch-size", "8", "--eeg-layers", "1",
                     "--bootstrap", "100", "--device", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "abnormal" in result.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["targets"] == ["abnormal"] and results["protocol"] == "split"
    fold = json.loads((tmp_path / "run" / "folds" / "split.json").read_text())
    evaluated = manifest.filter(pl.col("row").is_in(fold["rows"]))
    assert set(evaluated["split"]) == {"eval"} and evaluated.height == (manifest["split"] == "eval").sum()
    assert not set(fold["subjects_test"]) & set(fold["subjects_val"])
    assert set(evaluated["label"]) == {"normal", "abnormal"}
    assert results["pooled"]["macro"]["roc_auc"] > 0.8, results["pooled"]
    assert results["encoder"] == "random" and results["mode"] == "linear"


def test_pretraining_cli_on_a_store_with_masked_channels(tmp_path):
    src = synth.synth_bids_eeg(tmp_path / "bids", subjects=2, seed=7, runs=2, minutes=(1.0, 1.5))
    build(str(src), str(tmp_path / "store"), kind="eeg", jobs=1)
    result = run_cli("pretrain", str(tmp_path / "store"), "--out", str(tmp_path / "run"), "--modality", "eeg",
                     "--max-steps", "3", "--batch-size", "4", "--layers", "1", "--device", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(np.isfinite(line["loss"]) for line in lines)


def test_a_source_on_s3_is_read_in_spans_and_builds_the_same_samples(tuab, reference, s3_bucket, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    import s3fs

    url, options = s3_bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])  # the source is opened without options
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", options["secret"])
    s3fs.S3FileSystem.clear_instance_cache()  # an instance cached by an earlier test may hold other settings
    fs = s3fs.S3FileSystem(**options)
    for path in sorted(p for p in tuab.rglob("*") if p.is_file()):
        fs.pipe(f"{url}/tuab/{path.relative_to(tuab).as_posix()}", path.read_bytes())
    summary = build(f"{url}/tuab", str(tmp_path / "store"), kind="eeg", jobs=1, shard_size=8)
    assert summary["dataset"] == "tuh-eeg"
    ours, theirs = (pl.read_parquet(s / "manifest.parquet") for s in (tmp_path / "store", reference))
    assert ours.equals(theirs)
    a, b = (zarr.open_group(str(s / "zarr"), mode="r")["eeg"][:] for s in (tmp_path / "store", reference))
    np.testing.assert_array_equal(a, b)
