"""The EEG preparer: CBraMod's arithmetic, chunked filtering against whole-recording filtering, the channel
policy, quality flags, parts of long files, and memory that does not grow with the recording."""

from __future__ import annotations

import tracemalloc
from datetime import datetime

import fsspec
import numpy as np
import pytest

from physiofm.corpora import edf, eeg_channels
from physiofm.corpora.base import Record
from physiofm.preprocess import eeg
from physiofm.preprocess import transforms as T
from physiofm.preprocess.recipe import load_recipe, merge
from physiofm.synth import eeg as synth

LOCAL = fsspec.filesystem("file")
TUEG = load_recipe("tueg")
KEEP_ALL = {"quality": {"drop": []}}


def write(tmp_path, seconds: float, fs: float = 250.0, *, names=eeg_channels.CBRAMOD_19, seed: int = 0,
          data: np.ndarray | None = None, name: str = "rec") -> tuple[str, Record]:  # fmt: skip
    """An EDF of ``names`` (TUH labels) and its record as the generic reader gives it."""
    rng = np.random.default_rng(seed)
    x = synth.eeg(rng, [n.upper() for n in names], seconds, fs) if data is None else data
    channels = [synth.Channel(f"EEG {n}-REF", fs) for n in names]
    path = synth.write_edf(tmp_path / f"{name}.edf", channels, list(x), start=datetime(2015, 1, 1))
    items = edf.part_items(name, path.name, path.stat().st_size)
    (record,) = edf.read(str(tmp_path), items[:1])
    return str(path), record


def reference(record: Record, recipe: dict) -> np.ndarray:
    """CBraMod's steps on the whole recording (resample, band-pass, notch with sosfiltfilt), cut as its script cuts."""
    signal = record.signals["eeg"]
    found = eeg_channels.match(tuple(signal.channels))
    x = signal.data.read(list(found.source), 0, signal.data.shape[1])
    y = T.notch(T.bandpass(T.resample(x, signal.fs, 200), 200, 0.3, 75.0, 4), 200, 60.0, 30.0)
    points = y.shape[1]
    y = y[:, 60 * 200 : points - (points % 6000 + 60 * 200)]
    return y.reshape(19, -1, 6000).transpose(1, 0, 2).reshape(-1, 19, 30, 200)


@pytest.mark.parametrize("fs", [250.0, 256.0, 400.0])
def test_cbramod_samples_match_whole_recording_filtering(tmp_path, fs):
    _, record = write(tmp_path, 7 * 60 + 13, fs)
    expected = reference(record, TUEG)
    arrays, rows, rejects = eeg.prepare([record], merge(TUEG, KEEP_ALL))
    got = arrays["eeg"]
    assert got.shape == expected.shape == (len(rows), 19, 30, 200) and not rejects
    assert [r["window_start_s"] for r in rows] == [60.0 + 30 * w for w in range(len(rows))]
    assert len(rows) == (7 * 60 + 13) * 200 // 6000 - 4  # CBraMod: floor(points / 6000) - 4
    error = np.sqrt(np.mean((got - expected) ** 2) / np.mean(expected**2))
    assert error < 3e-3, error  # the FFT path: Butterworth |H|^2 applied per chunk
    time_domain, _, _ = eeg.prepare([record], merge(TUEG, {**KEEP_ALL, "filter": {"method": "sosfiltfilt"}}))
    error = np.sqrt(np.mean((time_domain["eeg"] - expected) ** 2) / np.mean(expected**2))
    assert error < 1e-4, error  # the same filters per chunk: only the margins' edge effects differ


def test_fft_filter_passes_the_band_notches_mains_and_keeps_the_time_grid():
    fs_in = 256.0
    t = np.arange(int(120 * fs_in)) / fs_in
    x = np.stack([np.sin(2 * np.pi * 10 * t + 0.3), np.sin(2 * np.pi * 60 * t), np.sin(2 * np.pi * 0.05 * t)])
    y = eeg.fft_resample_filter(x, fs_in, 200.0, (0.3, 75.0), 4, 60.0, 30.0)
    assert y.shape == (3, int(120 * 200))
    mid = slice(20 * 200, 100 * 200)
    k = np.arange(y.shape[1])[mid] / 200
    np.testing.assert_allclose(y[0, mid], np.sin(2 * np.pi * 10 * k + 0.3), atol=2e-3)  # gain 1, zero phase
    assert np.abs(y[1, mid]).max() < 1e-3 and np.abs(y[2, mid]).max() < 1e-3


def test_short_recordings_and_trims_follow_the_recipe(tmp_path):
    _, record = write(tmp_path, 4 * 60)
    _, rows, rejects = eeg.prepare([record], TUEG)
    assert rows == [] and [(r.stage, r.reason) for r in rejects] == [
        ("transform", "recording is 240.0 s, shorter than the recipe's minimum 300 s")
    ]
    short = load_recipe("edf")  # no minimum, no trims, 10-s windows
    arrays, rows, _ = eeg.prepare([record], short)
    assert arrays["eeg"].shape == (24, 19, 10, 200) and rows[0]["window_start_s"] == 0.0


def test_missing_channels_are_a_reject_or_masked_by_the_policy(tmp_path):
    names = [n for n in eeg_channels.CBRAMOD_19 if n not in ("T4", "PZ")]
    _, record = write(tmp_path, 6 * 60, names=names)
    _, rows, rejects = eeg.prepare([record], TUEG)
    assert rows == [] and [(r.stage, r.reason) for r in rejects] == [
        ("lead", "missing 2 of 19 channels (the recipe allows 0): T4, PZ")
    ]
    arrays, rows, _ = eeg.prepare([record], merge(TUEG, {"channels": {"max_missing": 2}, **KEEP_ALL}))
    mask = rows[0]["eeg_channel_mask"]
    assert mask.count(False) == 2 and not mask[13] and not mask[18]
    assert not arrays["eeg"][:, [13, 18]].any() and arrays["eeg"][:, 0].any()  # absent: exactly zero
    assert rows[0]["eeg_reference"] == "REF" and rows[0]["eeg_channels"] == list(eeg_channels.CBRAMOD_19)


def test_other_channel_sets_come_from_the_recipe(tmp_path):
    _, record = write(tmp_path, 6 * 60)
    recipe = merge(TUEG, {"channels": {"targets": ["O2", "O1", "CZ"]}, "window": {"seconds": 10}, **KEEP_ALL})
    arrays, rows, _ = eeg.prepare([record], recipe)
    assert arrays["eeg"].shape == (24, 3, 10, 200) and rows[0]["eeg_channels"] == ["O2", "O1", "CZ"]
    assert "EEG FP1-REF (eeg: not in the channel set)" in rows[0]["eeg_skipped"]


def test_amplitude_and_clipping_flags(tmp_path):
    rng = np.random.default_rng(3)
    fs, seconds = 250.0, 6 * 60
    x = synth.eeg(rng, list(eeg_channels.CBRAMOD_19), seconds, fs)
    x = np.clip(x, -60, 60)  # keep every window under 100 µV
    t0 = int(125 * fs)  # window 2 (120-150 s): a 150-µV burst on CZ
    x[17, t0 : t0 + 250] += 150 * np.hanning(250)
    t1 = int(185 * fs)  # window 4 (180-210 s): O1 saturates at the physical maximum
    x[8, t1 : t1 + 1000] = 4999.84
    _, record = write(tmp_path, seconds, fs, data=x)
    arrays, rows, rejects = eeg.prepare([record], merge(TUEG, KEEP_ALL))
    flags = {r["window_index"]: (r["q_amplitude"], r["q_clip"]) for r in rows}
    assert flags[2] == (True, False) and flags[4][1] is True
    assert not any(a for w, (a, _) in flags.items() if w not in (2, 4))
    _, rows, rejects = eeg.prepare([record], TUEG)  # CBraMod drops max |x| >= 100 µV
    assert {r.window_index for r in rejects} == {2, 4} and rejects[0].reason == "window flagged amplitude"
    assert rejects[0].stage == "quality" and 2 not in [r["window_index"] for r in rows]


def test_parts_of_a_long_file_give_the_windows_of_the_whole(tmp_path, monkeypatch):
    path, whole = write(tmp_path, 11 * 60, 256.0)
    arrays, rows, _ = eeg.prepare([whole], merge(TUEG, KEEP_ALL))
    monkeypatch.setattr(edf, "PART_BYTES", (tmp_path / "rec.edf").stat().st_size // 4 + 1)
    items = edf.part_items("rec", "rec.edf", (tmp_path / "rec.edf").stat().st_size)
    assert len(items) == 4
    parts = [eeg.prepare([r], merge(TUEG, KEEP_ALL)) for r in edf.read(str(tmp_path), items)]
    assert [row["key"] for p in parts for row in p[1]] == [row["key"] for row in rows]
    assert {row["record_id"] for p in parts for row in p[1]} == {"rec"}
    np.testing.assert_array_equal(np.concatenate([p[0]["eeg"] for p in parts]), arrays["eeg"])


def test_memory_does_not_grow_with_the_recording(tmp_path, monkeypatch):
    """Peak traced memory of preparing a 60-min recording, part by part, is that of a 20-min one.

    A worker holds one chunk of source signal and one part's windows: parts of about 10 minutes here
    (edf.PART_BYTES), so both recordings are prepared in parts of two 5-min chunks.
    """
    for minutes in (10, 20, 60):
        (tmp_path / f"m{minutes}").mkdir()
        write(tmp_path / f"m{minutes}", minutes * 60, 256.0, name=f"r{minutes}")
    monkeypatch.setattr(edf, "PART_BYTES", (tmp_path / "m10" / "r10.edf").stat().st_size)
    peaks = {}
    for minutes in (20, 60):
        folder = tmp_path / f"m{minutes}"
        items = edf.part_items(f"r{minutes}", f"r{minutes}.edf", (folder / f"r{minutes}.edf").stat().st_size)
        assert len(items) == minutes // 10
        peak = 0
        for record in edf.read(str(folder), items):
            tracemalloc.start()
            eeg.prepare([record], TUEG)
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        peaks[minutes] = peak
    whole = 60 * 60 * 256 * 19 * 8  # what holding the 60-min recording in float64 would take
    assert peaks[60] < 1.05 * peaks[20] and peaks[60] < whole / 3, (peaks, whole)


def test_events_label_the_windows_they_overlap(shared_data):
    (record,) = edf.read(str(shared_data / "eegmmidb"), edf.list_items(str(shared_data / "eegmmidb")))
    arrays, rows, _ = eeg.prepare([record], load_recipe("edf"))
    assert arrays["eeg"].shape == (12, 19, 10, 200) and rows[0]["subject_id"] == "S001"
    events = record.meta["_events"]
    for row in rows:
        start = row["window_start_s"]
        assert row["events"] == sorted({e[2] for e in events if e[0] < start + 10 and e[0] + e[1] > start})
    assert rows[0]["event_labels"] == ["T0", "T1", "T2"]
    again, rows_again, _ = eeg.prepare([record], load_recipe("edf"))
    np.testing.assert_array_equal(again["eeg"], arrays["eeg"])  # deterministic
