"""`physiofm build emotion`: paired EEG+ECG windows from generated DREAMER, AMIGOS and MAHNOB layouts."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import scipy.io
import zarr
from scipy.signal import find_peaks

from physiofm.corpora.base import Record, Signal
from physiofm.preprocess import paired
from physiofm.preprocess.recipe import load_recipe
from physiofm.store.build import build
from physiofm.synth import emotion as synth

EVENT = (2, 3, 13.37)  # subject 2, clip 3, 13.37 s after the stimulus starts


def open_store(out):
    manifest = pl.read_parquet(out / "manifest.parquet")
    group = zarr.open_group(str(out / "zarr"), mode="r")
    return manifest, group["eeg"][:], group["ecg"][:]


def r_peak_mv(ecg: np.ndarray, fs: float = 200.0) -> np.ndarray:
    """Median R-peak height (mV) of the strongest lead of each stored window (W, C, N, P) -> (W,).

    The windows are band-passed already (baseline ~0), so a peak's value is its height; R waves
    may point down (a lead's polarity is that of its larger extreme percentile).
    """
    out = []
    for window in ecg.reshape(*ecg.shape[:2], -1).astype(np.float64):
        lead = window[np.argmax(np.ptp(window, axis=1))]
        lead = lead if np.percentile(lead, 99.5) >= -np.percentile(lead, 0.5) else -lead  # R's side
        _, found = find_peaks(lead, distance=int(0.33 * fs), height=0.5 * np.percentile(lead, 99))
        out.append(np.median(found["peak_heights"]))
    return np.array(out)


def assert_plausible_r_peaks(ecg: np.ndarray) -> None:
    """Physiology: R waves of a few tenths to a few mV (0.3-3 mV) in (nearly) every window."""
    heights = r_peak_mv(ecg)
    assert 0.3 < np.median(heights) < 3, np.percentile(heights, [0, 50, 100])
    assert np.mean((heights > 0.3) & (heights < 3)) > 0.9, np.percentile(heights, [0, 10, 50, 90, 100])


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


def test_dreamer_stored_ecg_has_physiological_r_peaks(dreamer):
    """The Shimmer counts -> mV conversion (docs/units.md) gives R waves of 0.3-3 mV in the store."""
    _, out, _ = dreamer
    manifest, _, ecg = open_store(out)
    assert manifest["ecg_unit"][0] == "mV"
    assert_plausible_r_peaks(ecg)


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
    assert json.loads((tmp_path / "subtract" / "build.json").read_text())["recipe"]["baseline"]["mode"] == "subtract"
    assert set(pl.read_parquet(tmp_path / "subtract" / "manifest.parquet")["segment"]) == {"stimulus"}


def test_subtract_removes_the_average_one_second_baseline_from_every_second(tmp_path):
    """``subtract`` = TorchEEG's baseline removal at 200 Hz: ignore - subtract is the tiled 1-s template.

    The template is computed here from an independent path: the baseline stored as 1-s windows
    by ``mode = "samples"``, averaged over its 61 seconds.
    """
    src = synth.synth_dreamer(tmp_path / "raw", subjects=1, seed=4, clip_seconds=(20.0, 22.0))
    builds = {
        "ignore": {},
        "subtract": {"baseline": {"mode": "subtract"}},
        "seconds": {"baseline": {"mode": "samples"}, "window": {"seconds": 1}},
    }
    stores = {}
    for name, overrides in builds.items():
        build(str(src), str(tmp_path / name), kind="emotion", jobs=1, recipe_overrides=overrides)
        stores[name] = open_store(tmp_path / name)
    seconds, eeg_1s, ecg_1s = stores["seconds"]
    base = seconds.filter(pl.col("segment") == "baseline")
    assert base.group_by("trial").len()["len"].to_list() == [61] * 18
    ignore, subtract = stores["ignore"], stores["subtract"]
    assert ignore[0]["key"].to_list() == subtract[0]["key"].to_list() and ignore[0].height > 18
    for t in range(1, 19):
        rows = base.filter(pl.col("trial") == t)["zarr_row"].to_numpy()
        for i, one_second in ((1, eeg_1s), (2, ecg_1s)):
            template = one_second[rows, :, 0, :].astype(np.float64).mean(axis=0)  # (C, 200)
            assert np.ptp(template, axis=-1).min() > (0.5 if i == 1 else 0.005)  # a waveform, not a constant
            stim = ignore[0].filter(pl.col("trial") == t)["zarr_row"].to_numpy()
            difference = ignore[i][stim].astype(np.float64) - subtract[i][stim].astype(np.float64)
            tiled = np.broadcast_to(template[:, None, :], difference.shape)  # every second of every window
            np.testing.assert_allclose(difference, tiled, atol=2e-3 if i == 1 else 2e-5)


def _record(record_id: str, segment: str, seconds: float, rng: np.random.Generator, nan_second: int | None = None):
    """A paired record whose EEG and ECG hold a 1-Hz-periodic waveform locked to their start, plus noise."""

    def locked(n: int, fs: float, amplitude: float) -> np.ndarray:
        t = np.arange(n) / fs
        return amplitude * (np.sin(2 * np.pi * 3 * t) + 0.6 * np.sin(2 * np.pi * 7 * t + 1.0))

    n_eeg, n_ecg = int(seconds * 128), int(seconds * 256)
    eeg = locked(n_eeg, 128.0, 30.0) + rng.normal(0, 5, (4, n_eeg))
    ecg = locked(n_ecg, 256.0, 0.5) + rng.normal(0, 0.05, (2, n_ecg))
    if nan_second is not None:
        eeg[:, nan_second * 128 : (nan_second + 1) * 128] = np.nan
    signals = {"eeg": Signal(eeg, 128.0, ["AF3", "F7", "F3", "FC5"], unit="uV"),
               "ecg": Signal(ecg, 256.0, ["ECG1", "ECG2"], unit="mV")}  # fmt: skip
    meta = {"trial": 1, "segment": segment, "valence": 4, "arousal": 2, "dominance": 4, "score_min": 1, "score_max": 5}
    return Record("dreamer", record_id, "DREAMER.mat", signals, subject_id="01", meta=meta)


def _locked_amplitude(windows: np.ndarray, hz: float = 3.0) -> float:
    """Amplitude of the ``hz`` component (on the 1-s grid from the stimulus start) in (W, C, N, P)."""
    x = windows.reshape(*windows.shape[:2], -1).transpose(1, 0, 2).reshape(windows.shape[1], -1)
    t = np.arange(x.shape[-1]) / 200.0
    return float(np.abs(2 * (x * np.exp(-2j * np.pi * hz * t)).mean(axis=-1)).mean())


def test_subtract_removes_activity_locked_to_the_one_second_grid():
    rng = np.random.default_rng(0)
    stimulus, baseline = _record("s01_t01", "stimulus", 20, rng), _record("s01_t01_baseline", "baseline", 30, rng)
    out = {}
    for mode in ("ignore", "subtract"):
        arrays, rows, rejects = paired.prepare(
            [stimulus, baseline], load_recipe("emotion", {"baseline": {"mode": mode}})
        )
        assert len(rows) == 2 and not rejects
        out[mode] = arrays
    for modality, amplitude in (("eeg", 30.0), ("ecg", 0.5)):
        assert _locked_amplitude(out["ignore"][modality]) > 0.8 * amplitude  # band-passed, still there
        assert _locked_amplitude(out["subtract"][modality]) < 0.05 * amplitude  # removed (the mean would not)
    # a second of the baseline with NaNs is left out of the template (not averaged in as zeros)
    nan_base = _record("s01_t01_baseline", "baseline", 30, np.random.default_rng(0), nan_second=4)
    arrays, _, _ = paired.prepare([stimulus, nan_base], load_recipe("emotion", {"baseline": {"mode": "subtract"}}))
    assert _locked_amplitude(arrays["eeg"]) < 0.05 * 30.0
    # without a usable baseline the trial is rejected, not stored unsubtracted
    recipe = load_recipe("emotion", {"baseline": {"mode": "subtract"}})
    for records, why in (([stimulus], "no baseline segment"),
                         ([stimulus, _record("s01_t01_baseline", "baseline", 0.5, rng)], "no whole NaN-free second")):  # fmt: skip
        arrays, rows, rejects = paired.prepare(records, recipe)
        assert not rows and [(r.stage, r.record_id) for r in rejects] == [("transform", "s01_t01")]
        assert why in rejects[0].reason


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
    # ECG Right/Left taken as mV (docs/units.md): the generator writes what the files are believed to hold
    assert manifest["ecg_channels"][0].to_list() == ["ECG Right", "ECG Left"] and manifest["ecg_unit"][0] == "mV"
    assert manifest["ecg_skipped"][0].to_list() == ["GSR (eda)"]
    assert_plausible_r_peaks(ecg)


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
    # bipolar leads from the CMS-referenced EXG1-3, the derivation beside them in the manifest
    assert manifest["ecg_channels"][0].to_list() == ["EXG2-EXG1", "EXG3-EXG1", "EXG3-EXG2"]
    derivation = manifest["ecg_derivation"][0].to_list()
    assert [d.split()[:2] for d in derivation] == [["EXG2-EXG1", "~lead"], ["EXG3-EXG1", "~lead"],
                                                   ["EXG3-EXG2", "~lead"]]  # fmt: skip
    assert [d.split()[2].rstrip(":") for d in derivation] == ["I", "II", "III"]
    skipped = manifest["ecg_skipped"][0].to_list()
    assert skipped[:5] == [f"EXG{i} (exg)" for i in range(4, 9)] and skipped[-1] == "Status (stim)"
    assert {"GSR1 (eda)", "Resp (resp)", "Temp (temp)", "Erg1 (aux)"} <= set(skipped)
    np.testing.assert_allclose(ecg[:, 1], ecg[:, 0] + ecg[:, 2], atol=1e-4)  # II = I + III
    assert_plausible_r_peaks(ecg)


def test_a_two_worker_dreamer_build_parses_the_file_once(tmp_path, monkeypatch):
    """The workers are forked after the listing parsed DREAMER.mat, so they use that parse, not their own."""
    import multiprocessing

    from physiofm.corpora import dreamer as dreamer_reader

    src = synth.synth_dreamer(tmp_path / "raw", subjects=2, seed=3, clip_seconds=(20.0, 24.0))
    parses = multiprocessing.get_context("fork").Value("i", 0)
    parse = dreamer_reader._parse

    def counted(mat):
        with parses.get_lock():
            parses.value += 1
        return parse(mat)

    monkeypatch.setattr(dreamer_reader, "_parse", counted)
    monkeypatch.setattr(dreamer_reader, "_CACHE", {})
    summary = build(str(src), str(tmp_path / "store"), kind="emotion", jobs=2, shard_size=8)
    assert summary["shards"] > 2  # units ran in both workers
    assert parses.value == 1
