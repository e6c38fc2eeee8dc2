"""Amplitude statistics (:mod:`physiofm.store.amplitude`): per-window figures, their summary, build.json.

The cross-format test builds the same real Challenge 2021 records twice, as they are and rewritten
as a CODE-15% archive (400 Hz, mV, HDF5), and asks the two stores to agree: a reader that gets a
unit wrong makes one store ten times off the other.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from scipy.signal import resample_poly

from physiofm.preprocess.leads import STANDARD_LEADS
from physiofm.store import amplitude
from physiofm.store import build as build_module
from physiofm.store.build import build
from physiofm.store.validate import validate
from physiofm.synth.ecg import CODE15_COLUMNS, synth_challenge
from physiofm.synth.signals import ecg_12lead

LEADS = list(STANDARD_LEADS)
CHALLENGE_RECORDS = ("E07500", "HR06000", "HR06001", "JS20000")


def as_windows(x: np.ndarray, patch: int = 200) -> np.ndarray:
    """(S, C, T) → (S, C, T // patch, patch), the shape of prepared samples."""
    s, c, t = x.shape
    return x.reshape(s, c, t // patch, patch)


def pulses(fs: float, seconds: float, rate_bpm: float, height: float, width_s: float = 0.012) -> np.ndarray:
    """A train of Gaussian R waves of ``height`` at ``rate_bpm``, plus a T wave of a quarter of it."""
    t = np.arange(round(fs * seconds)) / fs
    x = np.zeros_like(t)
    for r in np.arange(0.4, seconds, 60 / rate_bpm):
        x += height * np.exp(-0.5 * ((t - r) / width_s) ** 2)
        x += 0.25 * height * np.exp(-0.5 * ((t - r - 0.25) / 0.04) ** 2)
    return x


# ---- window_stats -------------------------------------------------------------------------------


def test_r_peak_and_p99_of_a_pulse_train():
    fs = 200.0
    x = np.zeros((2, 12, 2000))
    x[0, 1] = pulses(fs, 10, 72, 1.2)
    x[1, 1] = -pulses(fs, 10, 120, 0.8)  # a lead II whose QRS points down: |x| counts the S waves
    x[:, 0] = 0.5 * x[:, 1]
    stats = amplitude.window_stats("ecg", as_windows(x.astype(np.float32)), LEADS, fs)
    assert stats["channels"] == LEADS
    assert stats["r_peak"][0] == pytest.approx(1.2, rel=0.02)
    assert stats["r_peak"][1] == pytest.approx(0.8, rel=0.02)
    assert 0.2 < stats["p99"][0][1] <= 1.2 and stats["p99"][0][0] == pytest.approx(0.5 * stats["p99"][0][1], rel=1e-3)
    assert stats["p99"][0][2:] == [None] * 10  # absent leads (exactly zero) have no amplitude
    json.dumps(stats, allow_nan=False)  # what a marker can hold


def test_stats_scale_with_the_signal_and_ignore_zero_padding():
    rng = np.random.default_rng(0)
    x = ecg_12lead(3, 200, 10, rng).astype(np.float32)
    base = amplitude.window_stats("ecg", as_windows(x), LEADS, 200.0)
    tenfold = amplitude.window_stats("ecg", as_windows(x * 10), LEADS, 200.0)
    for a, b in zip(base["p99"], tenfold["p99"]):
        np.testing.assert_allclose(b, np.asarray(a) * 10, rtol=1e-4)
    np.testing.assert_allclose(tenfold["r_peak"], np.asarray(base["r_peak"]) * 10, rtol=1e-4)
    assert all(0.3 < r < 3 for r in base["r_peak"])  # the generator's beats are physiological
    padded = x.copy()
    padded[:, :, 1400:] = 0  # a 7-s record kept as a last window, 3 patches of zeros
    short = amplitude.window_stats("ecg", as_windows(padded), LEADS, 200.0)
    alone = [np.percentile(np.abs(w[:, :1400]), 99, axis=1) for w in x.astype(np.float64)]
    np.testing.assert_allclose(short["p99"], alone, rtol=1e-5)


def find_peaks_heights(a: np.ndarray, fs: float, reference: float) -> float | None:
    """What ``r_peak_heights`` computes, for one row, with scipy.signal.find_peaks (the definition)."""
    from scipy.signal import find_peaks

    if reference <= 0:
        return None
    a = np.asarray(a, dtype=np.float64)  # as the build measures float32 windows
    peaks, _ = find_peaks(
        a, distance=round(amplitude.PEAK_DISTANCE_S * fs), prominence=amplitude.PEAK_PROMINENCE * reference
    )
    heights = a[peaks]
    if len(heights):
        heights = heights[heights >= amplitude.PEAK_KEEP * np.percentile(heights, 90)]
    return float(np.median(heights)) if len(heights) >= 2 else None


def assert_same_as_find_peaks(a: np.ndarray, fs: float = 200.0) -> None:
    reference = amplitude.percentile_99(a)
    ours = amplitude.r_peak_heights(a, fs, reference)
    theirs = [find_peaks_heights(row, fs, float(ref)) for row, ref in zip(a, reference)]
    differ = [i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y]
    assert not differ, (
        f"{len(differ)} of {len(a)} rows differ, e.g. row {differ[0]}: {ours[differ[0]]} vs {theirs[differ[0]]}"
    )
    assert sum(v is not None for v in theirs) > len(a) // 2  # most rows have peaks: the test compares something


def test_r_peaks_are_find_peaks_on_real_ecgs(shared_data):
    """Every lead of every 10-s window of the real Challenge records, as the build prepares them."""
    from physiofm.corpora import challenge
    from physiofm.preprocess import transforms as T
    from physiofm.preprocess.recipe import load_recipe

    source = str(shared_data / "physionet-challenge-2021")
    section = load_recipe("challenge")["filter"]
    rows = []
    for record in challenge.read(source, challenge.list_items(source)):
        signal = record.signals["ecg"]
        x = T.filter_section(signal.data[None].astype(np.float64), signal.fs, 200, section)[0]
        rows += [np.abs(x[:, w * 2000 : (w + 1) * 2000]) for w in range(x.shape[1] // 2000)]
    assert_same_as_find_peaks(np.concatenate(rows))


def test_r_peaks_are_find_peaks_on_generated_noisy_and_flat_topped_signals():
    rng = np.random.default_rng(5)
    clean = np.abs(ecg_12lead(40, 200, 10, rng)).reshape(-1, 2000)
    noisy = clean + np.abs(rng.normal(0, 0.05, clean.shape))  # many local maxima near each QRS
    held = clean.copy()  # plateaus (runs of equal samples) of distinct heights: find_peaks takes their middle
    for row in held:
        for start in rng.integers(0, 1990, 40):
            row[start : start + rng.integers(2, 9)] = row[start]
    for a in (clean, noisy, held):
        assert_same_as_find_peaks(a)
    assert_same_as_find_peaks(np.abs(rng.normal(size=(20, 2000))))  # no QRS: hundreds of candidates per row


@pytest.mark.parametrize("n", [1, 2, 3, 100, 101, 2000, 2560])
def test_percentile_99_is_numpys_exactly(n):
    rng = np.random.default_rng(n)
    for dtype in (np.float32, np.float64):
        x = np.abs(rng.normal(size=(3, 4, n))).astype(dtype)
        x[0, 0, : n // 2] = 1.0  # ties
        expected = np.percentile(x.astype(np.float64), 99, axis=-1)
        assert np.array_equal(amplitude.percentile_99(x), expected)


def test_no_lead_ii_and_eeg():
    rng = np.random.default_rng(1)
    x = ecg_12lead(2, 200, 10, rng)[:, :2].astype(np.float32)
    ecg = amplitude.window_stats("ecg", as_windows(x), ["ECG Right", "ECG Left"], 200.0)
    assert ecg["r_peak"] == [None, None] and all(v is not None for row in ecg["p99"] for v in row)
    eeg = amplitude.window_stats("eeg", as_windows(rng.normal(0, 20, (2, 3, 2000))), ["F3", "F4", "O1"], 200.0)
    assert "r_peak" not in eeg and all(40 < v < 70 for row in eeg["p99"] for v in row)  # 2.58 σ
    empty = amplitude.window_stats("ecg", np.zeros((0, 12, 10, 200), np.float32), LEADS, 200.0)
    assert empty == {"channels": LEADS, "p99": [], "r_peak": []}
    with pytest.raises(ValueError, match="channel names"):
        amplitude.window_stats("ecg", as_windows(x), LEADS, 200.0)


# ---- summarise ------------------------------------------------------------------------------------


def test_summarise_combines_batches_per_modality_and_channel():
    batches = [
        {
            "ecg": {"channels": ["I", "II", "V1"], "p99": [[1.0, 2.0, None], [3.0, 4.0, None]], "r_peak": [2.5, None]},
            "eeg": {"channels": ["F3"], "p99": [[10.0], [30.0]]},
        },
        {"ecg": {"channels": ["I", "II", "V1"], "p99": [[5.0, 6.0, None]], "r_peak": [3.5]}},
    ]
    summary = amplitude.summarise(batches)
    assert list(summary) == ["ecg", "eeg"]
    ecg = summary["ecg"]
    assert ecg["unit"] == "mV" and ecg["windows"] == 3
    assert ecg["channels"]["I"] == {"median": 3.0, "q1": 2.0, "q3": 4.0, "windows": 3}
    assert ecg["channels"]["II"]["median"] == 4.0
    assert ecg["channels"]["V1"] == {"median": None, "q1": None, "q3": None, "windows": 0}  # absent everywhere
    assert ecg["r_peak_ii"] == {"median": 3.0, "q1": 2.75, "q3": 3.25, "windows": 2}
    assert summary["eeg"] == {
        "unit": "uV",
        "windows": 2,
        "channels": {"F3": {"median": 20.0, "q1": 15.0, "q3": 25.0, "windows": 2}},
    }
    assert amplitude.summarise([]) == {}
    json.dumps(summary, allow_nan=False)


# ---- _finish: the markers' statistics go to build.json ------------------------------------------------


def test_finish_summarises_the_markers(tmp_path, monkeypatch):
    """build.json["amplitude"] is summarise() over every marker's batches, in unit order (markers simulated)."""
    src = synth_challenge(tmp_path / "raw", n_records=6, seed=3, subsets=("georgia",))
    run_unit = build_module.run_unit

    def fake(index: int) -> list[dict]:
        return [{"ecg": {"channels": LEADS, "p99": [[0.5 + index] * 12], "r_peak": [1.0 + index]}}]

    def with_stats(task):
        return {**run_unit(task), "amplitude": fake(task.index)}

    monkeypatch.setattr(build_module, "run_unit", with_stats)
    build(str(src), str(tmp_path / "store"), jobs=1, shard_size=2)
    info = json.loads((tmp_path / "store" / "build.json").read_text())
    assert info["amplitude"] == amplitude.summarise([batch for i in range(3) for batch in fake(i)])
    assert info["amplitude"]["ecg"]["r_peak_ii"]["median"] == 2.0

    def without_stats(task):
        marker = run_unit(task)
        marker.pop("amplitude", None)
        return marker

    monkeypatch.setattr(build_module, "run_unit", without_stats)
    build(str(src), str(tmp_path / "old"), jobs=1, shard_size=2)
    assert "amplitude" not in json.loads((tmp_path / "old" / "build.json").read_text())  # an older build
    report = validate(str(tmp_path / "old"))
    assert report.ok and not report.warnings
    assert "no amplitude statistics" in report.sections["checked"]["amplitude"]


# ---- the same real records through two formats ------------------------------------------------------


def read_challenge_mv(folder: Path, record: str) -> tuple[np.ndarray, float]:
    """(12, T) in mV and the rate of a Challenge record, read with SciPy and its header's gains."""
    lines = (folder / f"{record}.hea").read_text().splitlines()
    fs = float(lines[0].split()[2])
    gains, baselines = [], []
    for line in lines[1 : 1 + int(lines[0].split()[1])]:
        fields = line.split()
        gains.append(float(fields[2].split("/")[0].split("(")[0]))
        baselines.append(float(fields[4]))
    raw = scipy.io.loadmat(str(folder / f"{record}.mat"))["val"].astype(np.float64)
    return (raw - np.asarray(baselines)[:, None]) / np.asarray(gains)[:, None], fs


def write_code15(root: Path, tracings_mv: list[np.ndarray], exam_ids: list[int] | None = None) -> Path:
    """A CODE-15% archive of (12, T ≤ 4096) 400-Hz tracings in mV: exams.csv + exams_part0.hdf5.

    The layout of datasets.md §7: ``tracings`` float32 (N+1, 4096, 12), each exam centred with
    zeros on both sides, and a last all-zero row with ``exam_id`` 0.
    """
    root.mkdir(parents=True, exist_ok=True)
    ids = exam_ids or list(range(1001, 1001 + len(tracings_mv)))
    block = np.zeros((len(ids) + 1, 4096, 12), dtype=np.float32)
    for row, tracing in enumerate(tracings_mv):
        pad = (4096 - tracing.shape[1]) // 2
        block[row, pad : pad + tracing.shape[1]] = tracing.T
    with h5py.File(root / "exams_part0.hdf5", "w") as h5:
        h5.create_dataset("exam_id", data=np.array([*ids, 0], dtype=np.int64))
        h5.create_dataset("tracings", data=block)
    with (root / "exams.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CODE15_COLUMNS)
        for i, exam in enumerate(ids):
            values = {"exam_id": exam, "age": 60, "is_male": True, "nn_predicted_age": 61.5, "patient_id": 500 + i}
            values |= {"trace_file": "exams_part0.hdf5", "death": "", "timey": ""}
            writer.writerow([values.get(column, False) for column in CODE15_COLUMNS])
    return root


@pytest.fixture()
def real_records(shared_data, tmp_path) -> tuple[Path, list[np.ndarray]]:
    """The real Challenge records (copied) and the same signals at 400 Hz in mV."""
    folder = tmp_path / "challenge"
    folder.mkdir()
    for record in CHALLENGE_RECORDS:
        for suffix in (".hea", ".mat"):
            shutil.copy(shared_data / "physionet-challenge-2021" / f"{record}{suffix}", folder)
    signals = []
    for record in CHALLENGE_RECORDS:
        mv, fs = read_challenge_mv(folder, record)
        assert fs == 500 and mv.shape == (12, 5000)
        signals.append(resample_poly(mv, 4, 5, axis=-1))  # (12, 4000): 10 s at 400 Hz
    return folder, signals


def store_amplitude(store: Path) -> dict:
    info = json.loads((store / "build.json").read_text())
    assert "amplitude" in info, "build.json has no amplitude statistics: run_unit does not compute them yet"
    return info["amplitude"]["ecg"]


def test_same_records_as_challenge_and_as_code15_agree(real_records, tmp_path):
    folder, signals = real_records
    code15 = write_code15(tmp_path / "code15", signals)
    build(str(folder), str(tmp_path / "from-challenge"), fmt="challenge", jobs=1)
    build(str(code15), str(tmp_path / "from-code15"), fmt="code15", jobs=1)
    a, b = store_amplitude(tmp_path / "from-challenge"), store_amplitude(tmp_path / "from-code15")
    assert a["windows"] == b["windows"] == len(CHALLENGE_RECORDS)
    for lead in LEADS:
        assert b["channels"][lead]["median"] == pytest.approx(a["channels"][lead]["median"], rel=0.10), lead
    assert b["r_peak_ii"]["median"] == pytest.approx(a["r_peak_ii"]["median"], rel=0.10)
    assert 0.3 < a["r_peak_ii"]["median"] < 3
    for store in ("from-challenge", "from-code15"):
        report = validate(str(tmp_path / store))
        assert report.ok and report.warnings == [], report.warnings
