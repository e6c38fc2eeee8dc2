"""The emotion-dataset generators write the real layouts (shared/docs/datasets.md §1-3).

Each layout is read back with the access patterns public loaders use (TorchEEG's raw indexing,
``squeeze_me`` structs, MNE + ``find_events``, ``session.xml`` attributes).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import mne
import numpy as np
import pytest
from scipy.io import loadmat
from scipy.io.matlab import matfile_version

from physiofm.synth.emotion import (
    AMIGOS_VIDEO_IDS,
    EMOTIV_CHANNELS,
    MAHNOB_CHANNELS,
    synth_amigos,
    synth_dreamer,
    synth_mahnob,
)

DREAMER_FIELDS = ["Data", "EEG_SamplingRate", "ECG_SamplingRate", "EEG_Electrodes", "noOfSubjects",
                  "noOfVideoSequences", "Disclaimer", "Provider", "Version", "Acknowledgement"]  # fmt: skip
PARTICIPANT_FIELDS = ["Age", "Gender", "EEG", "ECG", "ScoreValence", "ScoreArousal", "ScoreDominance"]


@pytest.fixture(scope="module")
def dreamer_mat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_dreamer(tmp_path_factory.mktemp("dreamer"), subjects=2, clip_seconds=(4.0, 6.0)) / "DREAMER.mat"


@pytest.fixture(scope="module")
def amigos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_amigos(tmp_path_factory.mktemp("amigos"), subjects=2, clip_seconds=(6.0, 8.0), long_seconds=8.0,
                        missing_long=(2,), nan_at=(1, 3, 1.0, 0.5))  # fmt: skip


@pytest.fixture(scope="module")
def mahnob_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_mahnob(tmp_path_factory.mktemp("mahnob"), subjects=2, trials=2, clip_seconds=(6.0, 8.0),
                        pre_seconds=2.0, post_seconds=2.0, no_triggers=[(2, 2)], unrated=[(2, 1)])  # fmt: skip


def test_dreamer_raw_indexing(dreamer_mat: Path) -> None:
    m = loadmat(dreamer_mat, verify_compressed_data_integrity=False)  # as TorchEEG opens it
    assert matfile_version(str(dreamer_mat))[0] == 1  # level 5
    d = m["DREAMER"][0, 0]
    assert list(d.dtype.names) == DREAMER_FIELDS
    assert (int(d["EEG_SamplingRate"][0, 0]), int(d["ECG_SamplingRate"][0, 0])) == (128, 256)
    assert [str(e[0]) for e in d["EEG_Electrodes"][0]] == list(EMOTIV_CHANNELS)
    assert d["Data"].shape == (1, 2) and int(d["noOfSubjects"][0, 0]) == 2
    assert str(d["Version"][0]) == "1.0.2" and str(d["Provider"][0]) == "University of the West of Scotland"
    for s in range(2):
        p = d["Data"][0, s]
        assert list(p.dtype.names) == PARTICIPANT_FIELDS
        assert str(p["Age"][0, 0][0]).isdigit() and str(p["Gender"][0, 0][0]) in {"male", "female"}
        for modality, cols, rate in (("EEG", 14, 128), ("ECG", 2, 256)):
            stimuli = p[modality][0, 0]["stimuli"][0, 0]
            baseline = p[modality][0, 0]["baseline"][0, 0]
            assert stimuli.shape == baseline.shape == (18, 1)
            for t in range(18):
                assert baseline[t, 0].shape == (61 * rate, cols) and baseline[t, 0].dtype == np.float64
                assert stimuli[t, 0].shape[1] == cols and 4 * rate <= stimuli[t, 0].shape[0] <= 6 * rate + 8
        for t in range(18):  # ECG stimulus ~2x the EEG samples of the same clip
            n_eeg = p["EEG"][0, 0]["stimuli"][0, 0][t, 0].shape[0]
            assert 0 <= p["ECG"][0, 0]["stimuli"][0, 0][t, 0].shape[0] - 2 * n_eeg <= 9
        for field in ("ScoreValence", "ScoreArousal", "ScoreDominance"):
            scores = p[field][0, 0]
            assert scores.shape == (18, 1) and scores.dtype == np.uint8
            assert set(scores.ravel()) <= {1, 2, 4, 5} and (scores < 3).any() and (scores > 3).any()
    eeg = d["Data"][0, 0]["EEG"][0, 0]["stimuli"][0, 0][0, 0]
    assert 3000 < eeg.mean() < 5500 and 5 < eeg.std(axis=0).mean() < 60  # Emotiv DC level + tens of uV
    steps = np.diff(np.unique(eeg[:, 0]))
    assert np.allclose(steps / (1 / 1.95), np.round(steps / (1 / 1.95)))  # 0.51-uV ADC steps


def test_dreamer_squeezed_struct_and_single_subject(dreamer_mat: Path, tmp_path: Path) -> None:
    dr = loadmat(dreamer_mat, struct_as_record=False, squeeze_me=True)["DREAMER"]
    assert list(dr._fieldnames) == DREAMER_FIELDS and dr.noOfSubjects == 2
    assert list(dr.Data[1]._fieldnames) == PARTICIPANT_FIELDS
    assert dr.Data[1].EEG.stimuli[3].shape[1] == 14 and dr.Data[1].ScoreValence.shape == (18,)
    one = loadmat(synth_dreamer(tmp_path, subjects=1, clip_seconds=2.0) / "DREAMER.mat",
                  struct_as_record=False, squeeze_me=True)["DREAMER"]  # fmt: skip
    assert np.atleast_1d(one.Data).shape == (1,) and one.Data.ECG.baseline[0].shape == (15616, 2)


def test_amigos_layout(amigos_root: Path, tmp_path: Path) -> None:
    data = loadmat(amigos_root / "Data_Preprocessed_P01" / "Data_Preprocessed_P01.mat")
    variables = {"VideoIDs", "joined_data", "labels_ext_annotation", "labels_selfassessment"}
    assert {k for k in data if not k.startswith("__")} == variables
    assert all(data[k].shape == (1, 20) for k in variables)
    assert np.hstack(data["VideoIDs"][0]).tolist() == list(AMIGOS_VIDEO_IDS)
    for k in range(20):
        trial = data["joined_data"][0][k]
        assert trial.ndim == 2 and trial.shape[1] == 17 and trial.dtype == np.float64
        stimulus = trial.shape[0] - 640  # after the 5-s baseline
        assert stimulus == 8 * 128 if k >= 16 else 6 * 128 <= stimulus <= 8 * 128
        labels = data["labels_selfassessment"][0][k][0]
        assert labels.shape == (12,) and set(labels[5:]) <= {0.0, 1.0}
        ext = data["labels_ext_annotation"][0][k]
        assert ext.shape[1] == 3 and ext[:, 0].tolist() == list(range(1, len(ext) + 1))
        assert np.all(np.abs(ext[:, 1:]) <= 1)
    ecg = data["joined_data"][0][0][:, 14:16]  # ECG Right, ECG Left: believed Shimmer RA-LL, LA-LL in mV
    ecg = ecg - np.median(ecg, axis=0)
    assert 0.3 < -ecg[:, 0].min() < 3 and -ecg[:, 0].min() > ecg[:, 0].max()  # R waves ~1 mV, pointing down
    assert np.isnan(data["joined_data"][0][2]).any()  # the NaN stretch of (participant 1, trial 3)
    assert np.isnan(data["joined_data"][0][2][640 + 128 : 640 + 192]).all()
    scores = np.array([data["labels_selfassessment"][0][k][0][:3] for k in range(20)])  # arousal, valence, dominance
    assert ((scores < 5).any(axis=0) & (scores > 5).any(axis=0)).all() and not (scores == 5).any()
    missing = loadmat(amigos_root / "Data_Preprocessed_P02" / "Data_Preprocessed_P02.mat")
    assert [missing["joined_data"][0][k].shape for k in range(16, 20)] == [(0, 0)] * 4
    assert missing["labels_selfassessment"][0][19].shape == (0, 0)
    flat = synth_amigos(tmp_path, subjects=1, clip_seconds=6.0, long_seconds=6.0, layout="flat")
    assert [p.name for p in flat.iterdir()] == ["Data_Preprocessed_P01.mat"]


def test_mahnob_layout(mahnob_root: Path) -> None:
    sessions = mahnob_root / "Sessions"
    assert sorted(int(p.name) for p in sessions.iterdir()) == [1, 2, 4, 131, 132, 134]
    assert [p.name for p in (sessions / "134").iterdir() if p.suffix == ".bdf"] == ["Part_2_S_Trial2_emotion.bdf"]
    bdf = sessions / "2" / "Part_1_S_Trial1_emotion.bdf"
    assert bdf.read_bytes()[:8] == b"\xffBIOSEMI"
    raw = mne.io.read_raw_bdf(bdf, preload=True, verbose="error")
    assert raw.ch_names == list(MAHNOB_CHANNELS) and len(raw.ch_names) == 47 and raw.info["sfreq"] == 256
    events = mne.find_events(raw, stim_channel="Status", verbose="error")
    root = ET.parse(sessions / "2" / "session.xml").getroot()
    cut = float(root.get("cutLenSec"))
    assert events[:, 0].tolist() == [512, 512 + round(cut * 256)]  # 2 s before the clip
    assert 256 * 2 <= raw.n_times - events[1, 0] < 256 * 3  # ~2 s after it (whole 1-s records)
    assert root.tag == "session" and root.get("isStim") == "1" and root.get("mediaFile").endswith(".avi")
    assert all(1 <= int(root.get(k)) <= 9 for k in ("feltArsl", "feltVlnc", "feltCtrl", "feltPred"))
    assert root.find("subject").get("id") == "1" and 6 <= cut <= 8
    exg = raw.get_data(picks=["EXG1", "EXG2", "EXG3"]) * 1e3  # V -> mV, each against CMS
    assert (np.ptp(exg, axis=1) > 10).all() and np.corrcoef(exg).min() > 0.9  # mostly a shared common mode
    ecg = exg[[1, 2, 2]] - exg[[0, 0, 1]]  # EXG2-EXG1, EXG3-EXG1, EXG3-EXG2 ~ leads I, II, III
    centred = np.abs(ecg - np.median(ecg, axis=1, keepdims=True)).max(axis=1)
    assert 0.3 < centred.max() < 3 and (centred < 3).all()  # a clean ECG: R waves ~1 mV
    assert np.abs(raw.get_data(picks=["EXG1", "EXG2", "EXG3"])).max() < 0.262  # inside the BDF's physical range (V)
    neutral = ET.parse(sessions / "1" / "session.xml").getroot()
    assert neutral.get("isStim") == "0" and neutral.get("feltArsl") is None
    assert (sessions / "1" / "Part_1_N_Trial1_emotion.bdf").is_file()
    unrated = ET.parse(sessions / "132" / "session.xml").getroot()
    assert unrated.get("isStim") == "1" and unrated.get("feltVlnc") is None
    raw = mne.io.read_raw_bdf(sessions / "134" / "Part_2_S_Trial2_emotion.bdf", preload=True, verbose="error")
    assert not raw.get_data(picks="Status").any()


@pytest.mark.parametrize("kind", ["truncated", "v7.3", "v4"])
def test_broken_mat_files(tmp_path: Path, kind: str) -> None:
    path = synth_dreamer(tmp_path, subjects=1, corrupt=kind) / "DREAMER.mat"
    if kind == "v7.3":
        assert matfile_version(str(path))[0] == 2 and h5py.is_hdf5(path)
        with pytest.raises(NotImplementedError):
            loadmat(path)
    elif kind == "v4":
        assert matfile_version(str(path))[0] == 0
    else:
        with pytest.raises(OSError):
            loadmat(path)


def test_deterministic_per_seed_and_subject(tmp_path: Path) -> None:
    def joined(root: Path, p: int = 1) -> list[np.ndarray]:
        return list(loadmat(root / f"Data_Preprocessed_P{p:02d}.mat")["joined_data"][0])

    kwargs = {"clip_seconds": (6.0, 7.0), "long_seconds": 6.0, "layout": "flat"}
    a = joined(synth_amigos(tmp_path / "a", subjects=1, seed=5, **kwargs))
    b = joined(synth_amigos(tmp_path / "b", subjects=2, seed=5, **kwargs))  # subject 1 unchanged by subjects=2
    c = joined(synth_amigos(tmp_path / "c", subjects=1, seed=6, **kwargs))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][:640], c[0][:640])
