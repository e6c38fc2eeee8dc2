"""`physiofm build emotion`: paired EEG+ECG windows from generated DREAMER, AMIGOS and MAHNOB layouts."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import scipy.io
import zarr

from physiofm.store.build import build
from physiofm.synth import emotion as synth

EVENT = (2, 3, 13.37)  # subject 2, clip 3, 13.37 s after the stimulus starts


def open_store(out):
    manifest = pl.read_parquet(out / "manifest.parquet")
    group = zarr.open_group(str(out / "zarr"), mode="r")
    return manifest, group["eeg"][:], group["ecg"][:]


@pytest.fixture(scope="module")
def dreamer(tmp_path_factory):
    src = synth.synth_dreamer(
        tmp_path_factory.mktemp("raw") / "dreamer", subjects=3, seed=7, clip_seconds=(20.0, 32.0), event_at=EVENT
    )
    out = tmp_path_factory.mktemp("store") / "dreamer"
    summary = build(str(src), str(out), kind="emotion", jobs=2, shard_size=16)
    return src, out, summary


def test_dreamer_counts_shapes_ids_and_labels(dreamer):
    src, out, summary = dreamer
    mat = scipy.io.loadmat(str(src / "DREAMER.mat"))["DREAMER"][0, 0]
    expected = 0
    for s in range(3):
        subject = mat["Data"][0, s]
        for t in range(18):
            eeg = subject["EEG"][0, 0]["stimuli"][0, 0][t, 0].shape[0] / 128
            ecg = subject["ECG"][0, 0]["stimuli"][0, 0][t, 0].shape[0] / 256
            expected += int(min(eeg, ecg) * 200) // 2000
    manifest, eeg, ecg = open_store(out)
    assert summary["dataset"] == "dreamer" and summary["records_read"] == 3 * 18 * 2
    assert manifest.height == expected == eeg.shape[0] == ecg.shape[0]
    assert eeg.shape[1:] == (14, 10, 200) and ecg.shape[1:] == (2, 10, 200)
    assert set(manifest["subject_id"]) == {"01", "02", "03"} and set(manifest["trial"]) <= set(range(1, 19))
    assert set(manifest["segment"]) == {"stimulus"}  # default recipe ignores baselines
    assert manifest["eeg_channels"][0].to_list()[:3] == ["AF3", "F7", "F3"]
    assert manifest["eeg_unit"][0] == "uV" and manifest["ecg_unit"][0] == "mV"
    for target in ("valence", "arousal", "dominance"):
        scores = manifest[target].to_numpy()
        assert set(scores) <= {1, 2, 3, 4, 5}
        assert (manifest[f"{target}_high"].to_numpy() == (scores > 3)).all()
        subject = mat["Data"][0, 1]
        raw = subject[f"Score{target.capitalize()}"][0, 0][:, 0]
        rows = manifest.filter(pl.col("subject_id") == "02")
        assert all(raw[t - 1] == v for t, v in zip(rows["trial"], rows[target]))
    assert (manifest["label_threshold"] == 3.0).all()
    # EEG in µV after band-pass: tens of µV, no DC level left; ECG R waves about 1 mV
    assert 2 < np.median(np.abs(eeg).max(axis=(2, 3))) < 200 and 0.3 < np.median(np.abs(ecg).max(axis=(1, 2, 3))) < 3


def test_a_planted_event_lands_in_the_same_window_and_patch_of_both_modalities(dreamer):
    _, out, _ = dreamer
    manifest, eeg, ecg = open_store(out)
    subject, trial, seconds = EVENT
    rows = manifest.filter((pl.col("subject_id") == f"{subject:02d}") & (pl.col("trial") == trial)).sort("window_index")
    window, patch, offset = int(seconds // 10), int(seconds % 10), round((seconds % 1) * 200)
    row = rows.filter(pl.col("window_index") == window).row(0, named=True)
    assert row["window_start_s"] == window * 10
    for data in (eeg[row["zarr_row"]], ecg[row["zarr_row"]]):
        flat = np.abs(data).mean(axis=0).ravel()  # mean over channels, time = patch * 200 + sample
        peak = int(np.argmax(flat))
        assert peak // 200 == patch and abs(peak % 200 - offset) <= 1


def test_dreamer_baseline_modes(dreamer, tmp_path):
    src, _, _ = dreamer
    build(
        str(src), str(tmp_path / "samples"), kind="emotion", jobs=1, recipe_overrides={"baseline": {"mode": "samples"}}
    )
    manifest = pl.read_parquet(tmp_path / "samples" / "manifest.parquet")
    baseline = manifest.filter(pl.col("segment") == "baseline")
    assert baseline.height == 3 * 18 * 6  # 61-s baselines: six 10-s windows each
    build(
        str(src),
        str(tmp_path / "subtract"),
        kind="emotion",
        jobs=1,
        recipe_overrides={"baseline": {"mode": "subtract"}},
    )
    build(str(src), str(tmp_path / "ignore"), kind="emotion", jobs=1)
    _, eeg_sub, _ = open_store(tmp_path / "subtract")
    _, eeg_ign, _ = open_store(tmp_path / "ignore")
    difference = eeg_ign - eeg_sub  # a per-channel constant (the baseline mean) per window
    assert np.allclose(difference, difference[..., :1, :1], atol=1e-3)
    assert json.loads((tmp_path / "subtract" / "build.json").read_text())["recipe"]["baseline"]["mode"] == "subtract"


def test_last_seconds_keeps_the_end_of_each_clip(dreamer, tmp_path):
    src, _, _ = dreamer
    build(str(src), str(tmp_path / "s"), kind="emotion", jobs=1, recipe_overrides={"window": {"last_seconds": 10}})
    manifest = pl.read_parquet(tmp_path / "s" / "manifest.parquet")
    assert manifest.height == 3 * 18 and set(manifest["window_index"]) == {0}
    assert (manifest["window_start_s"] > 0).all()


def test_amigos_empty_trials_nan_stretches_and_a_broken_file(tmp_path):
    src = synth.synth_amigos(
        tmp_path / "amigos",
        subjects=3,
        seed=2,
        clip_seconds=(12.0, 16.0),
        long_seconds=20.0,
        missing_long=(2,),
        nan_at=(1, 4, 3.0, 2.0),
        corrupt={3: "truncated"},
    )
    summary = build(str(src), str(tmp_path / "store"), kind="emotion", jobs=2)
    rejects = pl.read_parquet(tmp_path / "store" / "rejects.parquet")
    reasons = rejects.group_by("reason").len()
    text = " | ".join(f"{r['reason']} x{r['len']}" for r in reasons.iter_rows(named=True))
    assert rejects.filter(pl.col("reason").str.contains("empty trial")).height == 4, text
    assert rejects.filter(pl.col("reason") == "window flagged nan").height == 1, text
    assert rejects.filter(pl.col("source").str.contains("P03")).height >= 1, text
    manifest, eeg, ecg = open_store(tmp_path / "store")
    assert set(manifest["subject_id"]) == {"01", "02"} and eeg.shape[1:] == (14, 10, 200) and ecg.shape[1] == 2
    assert (manifest["label_threshold"] == 5.0).all() and manifest["liking"].null_count() == 0
    assert summary["samples"] == manifest.height > 0


def test_mahnob_sessions_with_missing_triggers_or_ratings_are_rejected(tmp_path):
    src = synth.synth_mahnob(
        tmp_path / "mahnob",
        subjects=2,
        seed=3,
        trials=3,
        clip_seconds=(12.0, 14.0),
        no_triggers=[(1, 2)],
        unrated=[(2, 3)],
    )
    build(str(src), str(tmp_path / "store"), kind="emotion", jobs=1)
    rejects = pl.read_parquet(tmp_path / "store" / "rejects.parquet")
    assert rejects.filter(pl.col("reason").str.contains("trigger")).height == 1
    assert rejects.filter(pl.col("reason").str.contains("rating")).height >= 1
    manifest, eeg, ecg = open_store(tmp_path / "store")
    assert manifest.height == 4 and eeg.shape[1:] == (32, 10, 200) and ecg.shape[1:] == (3, 10, 200)
    assert manifest["ecg_channels"][0].to_list() == ["EXG1", "EXG2", "EXG3"]
