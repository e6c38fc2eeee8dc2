"""DREAMER, AMIGOS and MAHNOB-HCI readers on generated layouts (and one real BioSemi BDF).

Checks the reader contract (records, rejects, ids, shapes, units, meta), that both modalities
of a record start at the same instant (a planted pulse), that the planted relation between
scores and physiology survives reading, and that every bad input ends in a clear reject
while the rest is read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType

import fsspec
import mne
import numpy as np
import pytest
from scipy.io import loadmat, savemat
from scipy.signal import butter, find_peaks, resample_poly, sosfiltfilt, welch

from physiofm.corpora import amigos, dreamer, mahnob, matlab
from physiofm.corpora.base import Record, Reject, Signal
from physiofm.synth.emotion import synth_amigos, synth_dreamer, synth_mahnob

EVENTS = {"dreamer": (1, 2, 3.0), "amigos": (1, 4, 2.5), "mahnob": (1, 2, 1.5)}
EVENT_RECORDS = {"dreamer": "s01_t02", "amigos": "p01_t04", "mahnob": "sess0004"}


@pytest.fixture(scope="module")
def dreamer_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(synth_dreamer(tmp_path_factory.mktemp("dreamer"), subjects=2, clip_seconds=(10.0, 14.0),
                             event_at=EVENTS["dreamer"], nan_at=(2, 5, 1.0, 2.0)))  # fmt: skip


@pytest.fixture(scope="module")
def amigos_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(synth_amigos(tmp_path_factory.mktemp("amigos"), subjects=2, clip_seconds=(10.0, 14.0),
                            long_seconds=12.0, missing_long=(2,), event_at=EVENTS["amigos"],
                            nan_at=(1, 3, 1.0, 0.5)))  # fmt: skip


@pytest.fixture(scope="module")
def mahnob_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(synth_mahnob(tmp_path_factory.mktemp("mahnob"), subjects=2, trials=4, clip_seconds=(8.0, 10.0),
                            pre_seconds=2.0, post_seconds=2.0, event_at=EVENTS["mahnob"],
                            no_triggers=[(2, 4)], unrated=[(2, 3)]))  # fmt: skip


def _split(out: list[Record | Reject]) -> tuple[dict[str, Record], list[Reject]]:
    records = {r.record_id: r for r in out if isinstance(r, Record)}
    assert len(records) == sum(isinstance(r, Record) for r in out)  # record ids are unique
    return records, [r for r in out if isinstance(r, Reject)]


def _read_all(module: ModuleType, root: str, **kwargs: bool) -> tuple[dict[str, Record], list[Reject]]:
    return _split(list(module.read(root, module.list_items(root), **kwargs)))


def _check_record(record: Record, n_eeg: int, ecg_channels: list[str]) -> None:
    eeg, ecg = record.signals["eeg"], record.signals["ecg"]
    assert eeg.data.dtype == ecg.data.dtype == np.float32 and (eeg.unit, ecg.unit) == ("uV", "mV")
    assert eeg.data.shape[0] == n_eeg and ecg.channels == ecg_channels
    assert eeg.data.shape[1] / eeg.fs == pytest.approx(ecg.data.shape[1] / ecg.fs, abs=1e-9)  # same span
    centred = ecg.data - np.nanmedian(ecg.data, axis=1, keepdims=True)
    assert 0.4 < np.nanmax(np.abs(centred)) < 8  # R waves ~1 mV (planted pulses 4 mV)
    assert 5 < np.nanmean(np.nanstd(eeg.data, axis=1)) < 80  # tens of uV
    json.dumps(record.meta)
    assert record.meta["segment"] in {"stimulus", "baseline"}
    assert record.record_id.endswith("_baseline") == (record.meta["segment"] == "baseline")


# ---- planted relation ---------------------------------------------------------------------------


def _heart(signal: Signal) -> tuple[float, float]:
    """(heart rate bpm, RR sd / mean) from R peaks of the strongest lead."""
    x = np.nan_to_num(signal.data - np.nanmedian(signal.data, axis=1, keepdims=True))
    x = sosfiltfilt(butter(3, [5, 30], btype="band", fs=signal.fs, output="sos"), x, axis=1)
    lead = x[np.argmax(np.abs(x).max(axis=1))]
    lead = lead if lead.max() > -lead.min() else -lead
    peaks, _ = find_peaks(lead, distance=int(0.33 * signal.fs), height=0.4 * np.percentile(lead, 99.5))
    rr = np.diff(peaks) / signal.fs
    return 60 / rr.mean(), rr.std() / rr.mean()


def _band(signal: Signal, lo: float, hi: float) -> float:
    """Log mean EEG power in [lo, hi] Hz."""
    x = np.nan_to_num(signal.data - np.nanmean(signal.data, axis=1, keepdims=True))
    f, p = welch(x, fs=signal.fs, nperseg=int(2 * signal.fs), axis=1)
    return float(np.log(p[:, (f >= lo) & (f <= hi)].mean()))


def r_peak_mv(x: np.ndarray, fs: float) -> float:
    """Median R-peak height (mV) of the strongest lead of ``x`` (leads, samples), in the lead's polarity.

    Only a 0.5-Hz high-pass first (offsets and drift out, nothing else), so whatever else a
    channel carries (mains, say) counts as part of its "R peaks".
    """
    x = np.nan_to_num(x - np.nanmedian(x, axis=1, keepdims=True))
    x = sosfiltfilt(butter(2, 0.5, btype="highpass", fs=fs, output="sos"), x, axis=1)
    lead = x[np.argmax(np.ptp(x, axis=1))]
    lead = lead if np.percentile(lead, 99.5) >= -np.percentile(lead, 0.5) else -lead  # R's side
    _, found = find_peaks(lead, distance=int(0.33 * fs), height=0.5 * np.percentile(lead, 99))
    return float(np.median(found["peak_heights"]))


def _r2(features: np.ndarray, y: np.ndarray) -> float:
    x = np.column_stack([np.ones(len(y)), features])
    residual = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
    return 1 - residual.var() / y.var()


@pytest.mark.parametrize("name", ["dreamer", "amigos"])
def test_planted_relation(name: str, request: pytest.FixtureRequest) -> None:
    module = {"dreamer": dreamer, "amigos": amigos}[name]
    root = request.getfixturevalue(f"{name}_root")
    records, _ = _read_all(module, root, baseline=False)
    skip = {EVENT_RECORDS[name], "s02_t05", "p01_t03"}  # the planted pulse and NaN stretches
    rows = [(*_heart(r.signals["ecg"]), _band(r.signals["eeg"], 8, 12), _band(r.signals["eeg"], 15, 25),
             r.meta["valence"], r.meta["arousal"], r.meta["dominance"])
            for rid, r in records.items() if rid not in skip]  # fmt: skip
    hr, hrv, alpha, beta, valence, arousal, dominance = np.array(rows, dtype=float).T
    assert np.corrcoef(hr, arousal)[0, 1] > 0.8
    assert np.corrcoef(alpha, valence)[0, 1] < -0.8
    assert abs(np.corrcoef(hr, valence)[0, 1]) < 0.5 and abs(np.corrcoef(alpha, arousal)[0, 1]) < 0.5
    ecg_only = _r2(np.column_stack([hr, np.log(hrv)]), dominance)
    eeg_only = _r2(np.column_stack([alpha, beta]), dominance)
    both = _r2(np.column_stack([hr, np.log(hrv), alpha, beta]), dominance)
    assert 0.15 < ecg_only < 0.75 and 0.15 < eeg_only < 0.75 and both > max(ecg_only, eeg_only) + 0.15


# ---- time alignment of the two modalities -------------------------------------------------------


def _peak_time(signal: Signal, fs: float | None = None) -> float:
    """Time (s) of the largest common deflection, optionally after resampling to ``fs``."""
    x = signal.data.astype(np.float64)
    x = x - np.median(x, axis=1, keepdims=True)  # DC levels would ring at the resampling edges
    if fs is not None:
        x = resample_poly(x, int(fs), int(signal.fs), axis=1)
    return float(np.argmax(x.sum(axis=0)) / (fs or signal.fs))


@pytest.mark.parametrize("name", ["dreamer", "amigos", "mahnob"])
def test_planted_event_aligned(name: str, request: pytest.FixtureRequest) -> None:
    module = {"dreamer": dreamer, "amigos": amigos, "mahnob": mahnob}[name]
    root = request.getfixturevalue(f"{name}_root")
    item = next(i for i in module.list_items(root) if i.id == EVENT_RECORDS[name])
    record = next(r for r in module.read(root, [item], baseline=False) if isinstance(r, Record))
    at = EVENTS[name][2]
    eeg, ecg = record.signals["eeg"], record.signals["ecg"]
    assert _peak_time(eeg) == pytest.approx(at, abs=1 / eeg.fs)
    assert _peak_time(ecg) == pytest.approx(at, abs=1 / ecg.fs)
    assert _peak_time(eeg, 200) == pytest.approx(_peak_time(ecg, 200), abs=1 / 200)  # the pipeline's rate


# ---- DREAMER ------------------------------------------------------------------------------------


def test_dreamer_records(dreamer_root: str) -> None:
    assert dreamer.detect(dreamer_root) and not amigos.detect(dreamer_root) and not mahnob.detect(dreamer_root)
    items = dreamer.list_items(dreamer_root)
    assert [i.id for i in items] == [f"s{s:02d}_t{t:02d}" for s in (1, 2) for t in range(1, 19)]
    assert all(i.path == "DREAMER.mat" and i.est_windows >= 7 for i in items)
    records, rejects = _split(list(dreamer.read(dreamer_root, items)))
    assert len(records) == 72 and rejects == []
    file = loadmat(Path(dreamer_root) / "DREAMER.mat")["DREAMER"][0, 0]["Data"]
    for record in records.values():
        _check_record(record, 14, ["ECG1", "ECG2"])
        s, t = int(record.subject_id), record.meta["trial"]
        eeg, ecg = record.signals["eeg"], record.signals["ecg"]
        assert (eeg.fs, ecg.fs, eeg.channels[0], record.source) == (128.0, 256.0, "AF3", "DREAMER.mat")
        assert ecg.data.shape[1] == 2 * eeg.data.shape[1]
        if record.meta["segment"] == "baseline":
            assert eeg.data.shape == (14, 7808) and ecg.data.shape == (2, 15616)
        assert 3000 < np.nanmean(eeg.data) < 5500  # Emotiv DC level kept
        assert abs(np.nanmedian(ecg.data)) < 0.5  # Shimmer counts converted to mV
        p = file[0, s - 1]
        assert record.meta["valence"] == int(p["ScoreValence"][0, 0][t - 1, 0])
        assert record.meta["dominance"] == int(p["ScoreDominance"][0, 0][t - 1, 0])
        assert record.meta["age"] == int(p["Age"][0, 0][0]) and record.meta["gender"] == str(p["Gender"][0, 0][0])
        assert (record.meta["score_min"], record.meta["score_max"]) == (1, 5)
    nan = records["s02_t05"].signals["eeg"].data
    assert np.isnan(nan[:, 128:384]).all() and np.isfinite(nan[:, 400:]).all()  # NaN stretch kept
    stimuli_only, _ = _split(list(dreamer.read(dreamer_root, items[:3], baseline=False)))
    assert list(stimuli_only) == ["s01_t01", "s01_t02", "s01_t03"]


def test_dreamer_ecg_units_give_physiological_r_peaks(dreamer_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shimmer2 counts -> mV (docs/units.md): R waves of 0.3-3 mV; a wrong gain would not pass."""
    items = [i for i in dreamer.list_items(dreamer_root) if i.id in {"s01_t05", "s02_t09"}]
    records = [r for r in dreamer.read(dreamer_root, items) if isinstance(r, Record)]
    heights = [r_peak_mv(r.signals["ecg"].data, r.signals["ecg"].fs) for r in records]
    assert len(heights) == 4 and all(0.3 < h < 3 for h in heights), heights
    monkeypatch.setattr(dreamer, "SHIMMER_ECG_MV_PER_COUNT", 3000 / 4095)  # the amplifier gain (175) forgotten
    wrong = [r_peak_mv(r.signals["ecg"].data, 256.0) for r in dreamer.read(dreamer_root, items[:1])]
    assert all(h > 30 for h in wrong), wrong


def test_dreamer_file_loaded_once_per_process(dreamer_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = matlab.mat5.read
    monkeypatch.setattr(matlab.mat5, "read", lambda *a, **k: calls.append(1) or real(*a, **k))
    dreamer._CACHE.clear()
    items = dreamer.list_items(dreamer_root)
    first = [r.signals["eeg"].data for r in dreamer.read(dreamer_root, items[:2]) if isinstance(r, Record)]
    list(dreamer.read(dreamer_root, items[20:23]))
    list(dreamer.read(dreamer_root, items[:2]))
    assert len(calls) == 1
    dreamer._CACHE.clear()  # a fresh load gives the same data (deterministic)
    again = [r.signals["eeg"].data for r in dreamer.read(dreamer_root, items[:2]) if isinstance(r, Record)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True)) and len(calls) == 2


def test_dreamer_single_subject_through_fsspec(tmp_path: Path) -> None:
    local = synth_dreamer(tmp_path, subjects=1, clip_seconds=3.0) / "DREAMER.mat"
    fs = fsspec.filesystem("memory")
    fs.pipe("/dreamer1/DREAMER.mat", local.read_bytes())
    root = "memory://dreamer1"
    assert dreamer.detect(root)
    records, rejects = _read_all(dreamer, root)
    assert len(records) == 36 and not rejects and {r.subject_id for r in records.values()} == {"01"}
    assert records["s01_t18"].signals["eeg"].data.shape == (14, 384)


@pytest.mark.parametrize(("kind", "reason"), [("truncated", "truncated or corrupt MAT file"),
                                              ("v7.3", "MATLAB v7.3 (HDF5)"), ("v4", "MATLAB v4")])  # fmt: skip
def test_dreamer_bad_files(tmp_path: Path, kind: str, reason: str) -> None:
    root = str(synth_dreamer(tmp_path, subjects=1, corrupt=kind))
    assert dreamer.detect(root)
    items = dreamer.list_items(root)
    assert [i.id for i in items] == ["DREAMER"]
    (reject,) = dreamer.read(root, items)
    assert isinstance(reject, Reject) and reject.stage == "read" and reason in reject.reason


# ---- AMIGOS -------------------------------------------------------------------------------------


def test_amigos_records(amigos_root: str) -> None:
    assert amigos.detect(amigos_root) and not dreamer.detect(amigos_root) and not mahnob.detect(amigos_root)
    items = amigos.list_items(amigos_root)
    assert len(items) == 40 and items[0].id == "p01_t01" and items[-1].id == "p02_t20"
    assert items[0].path == "Data_Preprocessed_P01/Data_Preprocessed_P01.mat"
    records, rejects = _split(list(amigos.read(amigos_root, items)))
    assert len(records) == 2 * 36 and len(rejects) == 4
    assert {(r.record_id, r.reason, r.stage) for r in rejects} == {
        (f"p02_t{t}", "empty trial (0x0) in joined_data", "read") for t in (17, 18, 19, 20)
    }
    for record in records.values():
        _check_record(record, 14, ["ECG Right", "ECG Left"])
        assert record.signals["eeg"].fs == record.signals["ecg"].fs == 128.0
        assert (record.meta["score_min"], record.meta["score_max"]) == (1, 9)
        assert set(record.meta) >= {"valence", "arousal", "dominance", "liking", "familiarity", "video_id", "trial"}
    assert records["p01_t01_baseline"].signals["eeg"].data.shape == (14, 640)
    assert records["p01_t17"].signals["ecg"].data.shape == (2, 12 * 128) and records["p01_t17"].meta["video_id"] == "N1"
    file = loadmat(Path(amigos_root) / items[3].path)
    arousal, valence = file["labels_selfassessment"][0][3][0][:2]
    assert (records["p01_t04"].meta["arousal"], records["p01_t04"].meta["valence"]) == (arousal, valence)
    nan = records["p01_t03"].signals["ecg"].data
    assert np.isnan(nan[:, 128:192]).all() and np.isfinite(nan[:, 200:]).all()
    assert all(r.skipped == ["GSR (eda)"] for r in records.values())
    # ECG taken as mV (docs/units.md): R waves of 0.3-3 mV, negative-going in ECG Right (RA - LL)
    stimulus = [r.signals["ecg"] for rid, r in records.items() if not rid.endswith("_baseline")]
    heights = [r_peak_mv(e.data, e.fs) for e in stimulus]
    assert 0.3 < np.median(heights) < 3 and np.mean([0.3 < h < 3 for h in heights]) > 0.9, heights
    right = records["p01_t01"].signals["ecg"].data[0]
    assert -right.min() > right.max()


def test_amigos_ecg_in_adc_counts_is_rejected(tmp_path: Path) -> None:
    """A file whose ECG columns hold 12-bit counts (not the assumed mV) ends in a reject saying so."""
    root = synth_amigos(tmp_path, subjects=1, clip_seconds=6.0, long_seconds=6.0, layout="flat")
    path = root / "Data_Preprocessed_P01.mat"
    data = loadmat(path)
    trial = data["joined_data"][0, 1]
    trial[:, 14:16] = np.round(2060 + trial[:, 14:16] / (3000 / 4095 / 175))
    savemat(path, {k: v for k, v in data.items() if not k.startswith("__")})
    records, rejects = _read_all(amigos, str(root))
    assert [(r.record_id, r.stage) for r in rejects] == [("p01_t02", "read")]
    assert "is not mV (12-bit ADC counts" in rejects[0].reason and len(records) == 38


def test_amigos_flat_layout_and_bad_files(tmp_path: Path) -> None:
    root = synth_amigos(tmp_path, subjects=3, clip_seconds=6.0, long_seconds=6.0, layout="flat",
                        corrupt={2: "v7.3", 3: "truncated"}, nan_at=(1, 1, 0.0, 1000.0))  # fmt: skip
    items = amigos.list_items(str(root))
    assert len(items) == 60 and items[0].path == "Data_Preprocessed_P01.mat"
    records, rejects = _read_all(amigos, str(root))
    reasons = {}
    for r in rejects:
        reasons.setdefault(r.reason, []).append(r.record_id)
    assert reasons.pop("all samples are NaN in eeg") == ["p01_t01"]  # stimulus all NaN; its baseline is read
    assert len(reasons.pop("MATLAB v7.3 (HDF5) MAT-file; expected a level-5 (v5/v7) MAT-file")) == 20
    ((truncated, ids),) = reasons.items()
    assert truncated.startswith("truncated or corrupt MAT file") and len(ids) == 20
    assert len(records) == 39 and "p01_t01_baseline" in records
    nested = tmp_path / "nested" / "Data_Preprocessed_P01"
    nested.mkdir(parents=True)
    shutil.copy(root / "Data_Preprocessed_P01.mat", nested)
    assert [i.path for i in amigos.list_items(str(tmp_path / "nested"))][:1] == [
        "Data_Preprocessed_P01/Data_Preprocessed_P01.mat"
    ]


# ---- MAHNOB -------------------------------------------------------------------------------------


def test_mahnob_records(mahnob_root: str) -> None:
    assert mahnob.detect(mahnob_root) and mahnob.detect(f"{mahnob_root}/Sessions")
    assert not dreamer.detect(mahnob_root) and not amigos.detect(mahnob_root)
    items = mahnob.list_items(mahnob_root)
    assert [i.id for i in items] == [f"sess{s:04d}" for s in (1, 2, 4, 6, 8, 131, 132, 134, 136, 138)]
    assert items[1].path == "Sessions/2" and all(i.est_windows >= 1 for i in items)
    records, rejects = _split(list(mahnob.read(mahnob_root, items)))
    assert {(r.record_id, r.reason) for r in rejects} == {
        ("sess0001", "non-stimulus session (isStim=0)"),
        ("sess0131", "non-stimulus session (isStim=0)"),
        ("sess0136", "session.xml has no felt* ratings (feltVlnc, feltArsl, feltCtrl, feltPred missing)"),
        ("sess0138", "no stimulus triggers in Status channel"),
    }
    assert len(records) == 12
    for record in records.values():
        _check_record(record, 32, ["EXG2-EXG1", "EXG3-EXG1", "EXG3-EXG2"])
        eeg = record.signals["eeg"]
        assert eeg.fs == 256.0 and eeg.channels[:3] == ["Fp1", "AF3", "F3"] and eeg.channels[-1] == "O2"
        if record.meta["segment"] == "baseline":
            assert eeg.data.shape[1] == 512  # the 2 s before the first trigger
        else:
            assert eeg.data.shape[1] == round(record.meta["cut_len_sec"] * 256)
    stim = records["sess0134"]
    assert stim.source == "Sessions/134/Part_2_S_Trial2_emotion.bdf" and stim.subject_id == "02"
    assert stim.meta["trial"] == 2 and stim.meta["session"] == 134 and stim.meta["media_file"].endswith(".avi")
    assert all(1 <= stim.meta[k] <= 9 for k in ("valence", "arousal", "dominance", "predictability"))


def test_mahnob_bipolar_leads_remove_the_common_mode(mahnob_root: str) -> None:
    """EXG1-3 are CMS-referenced: alone they are mostly common mode; their differences are the ECG."""
    item = next(i for i in mahnob.list_items(mahnob_root) if i.id == "sess0002")
    record, _ = (r for r in mahnob.read(mahnob_root, [item]) if isinstance(r, Record))
    ecg = record.signals["ecg"]
    assert ecg.channels == ["EXG2-EXG1", "EXG3-EXG1", "EXG3-EXG2"] and ecg.unit == "mV"
    assert record.meta["ecg_derivation"] == [
        "EXG2-EXG1 ~lead I: EXG2 (upper left chest) - EXG1 (upper right chest)",
        "EXG3-EXG1 ~lead II: EXG3 (left abdomen) - EXG1 (upper right chest)",
        "EXG3-EXG2 ~lead III: EXG3 (left abdomen) - EXG2 (upper left chest)",
    ]
    assert record.skipped == [*(f"EXG{i} (exg)" for i in range(4, 9)), "GSR1 (eda)", "GSR2 (eda)", "Erg1 (aux)",
                              "Erg2 (aux)", "Resp (resp)", "Temp (temp)", "Status (stim)"]  # fmt: skip
    raw = mne.io.read_raw_bdf(Path(mahnob_root) / record.source, preload=True, verbose="error")
    start = int(mne.find_events(raw, stim_channel="Status", verbose="error")[0, 0])
    exg = raw.get_data(picks=["EXG1", "EXG2", "EXG3"], start=start, stop=start + ecg.data.shape[1]) * 1e3  # mV
    expected = np.stack([exg[1] - exg[0], exg[2] - exg[0], exg[2] - exg[1]])
    np.testing.assert_allclose(ecg.data, expected, atol=1e-4)
    referential = [r_peak_mv(exg[[k]], ecg.fs) for k in range(3)]
    assert min(referential) > 3, referential  # mains and drift shared by all three: not an ECG
    assert 0.3 < r_peak_mv(ecg.data, ecg.fs) < 3
    assert np.all(np.ptp(exg, axis=1) > 10) and np.all(np.ptp(ecg.data, axis=1) < 5)


def test_mahnob_through_fsspec(mahnob_root: str) -> None:
    fs = fsspec.filesystem("memory")
    for path in (Path(mahnob_root) / "Sessions" / "2").iterdir():
        fs.pipe(f"/mahnob/Sessions/2/{path.name}", path.read_bytes())
    records, rejects = _read_all(mahnob, "memory://mahnob")
    local, _ = _split(list(mahnob.read(mahnob_root, mahnob.list_items(mahnob_root)[1:2])))
    assert not rejects and records.keys() == local.keys() == {"sess0002", "sess0002_baseline"}
    assert np.array_equal(records["sess0002"].signals["eeg"].data, local["sess0002"].signals["eeg"].data)


def test_mahnob_real_biosemi_file(shared_data: Path, tmp_path: Path) -> None:
    real = shared_data / "mne-python-test-data" / "test_bdf_stim_channel.bdf"
    bdf = mahnob.load_bdf(str(real))
    assert bdf.raw.ch_names == ["C3", "C4", "Cz", "Status"] and bdf.raw.info["sfreq"] == 500
    assert len(bdf.events) == 9 and bdf.events[:3].tolist() == [[242, 0, 4], [310, 0, 2], [952, 0, 1]]
    assert bdf.stimulus_span == (242, 310)
    session = tmp_path / "Sessions" / "1"
    session.mkdir(parents=True)
    shutil.copy(real, session / "Part_1_S_Trial1_emotion.bdf")
    (session / "session.xml").write_text('<session cutLenSec="0.136" feltArsl="5" feltCtrl="5" feltEmo="4" '
                                         'feltPred="5" feltVlnc="7" isStim="1" mediaFile="1.avi">'
                                         '<subject id="1"/></session>')  # fmt: skip
    (reject,) = mahnob.read(str(tmp_path), mahnob.list_items(str(tmp_path)))
    assert isinstance(reject, Reject) and reject.reason == "no ECG channels (EXG1-3) in BDF"
    assert reject.source == "Sessions/1/Part_1_S_Trial1_emotion.bdf"


def test_dreamer_unit_decision_by_counting_is_nanmedians():
    """The counts-or-mV decision counts values over the limit instead of taking a median: same answer."""
    import warnings

    from physiofm.corpora.dreamer import _median_magnitude_above

    rng = np.random.default_rng(0)
    for _ in range(5000):
        n = int(rng.integers(1, 12))
        x = rng.integers(-80, 80, n).astype(float)
        if rng.random() < 0.3:
            x[rng.integers(0, n)] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN
            expected = bool(np.nanmedian(np.abs(x)) > 50)
            assert _median_magnitude_above(x, 50) == expected, x
