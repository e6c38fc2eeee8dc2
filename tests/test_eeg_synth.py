"""EEG generators: real EDF(+)/BDF files with TUH-style headers, layouts, determinism, and a learnable structure."""

from __future__ import annotations

import hashlib
from pathlib import Path

import mne
import numpy as np
import polars as pl
import pyedflib
import pytest
import zarr

from physiofm.store.build import build
from physiofm.synth import eeg as synth


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_tuh_files_have_tuh_headers_and_read_in_pyedflib_and_mne(tmp_path):
    root = synth.synth_tuh_eeg(tmp_path / "tueg", n_records=3, seed=0, layout="tueg", minutes=(5.5, 5.5))
    files = sorted(root.rglob("*.edf"))
    rates = set()
    for path in files:
        raw_header = path.read_bytes()[:256]
        assert raw_header[:8] == b"0       " and raw_header[192:236].strip() == b""  # plain EDF, as TUH's
        with pyedflib.EdfReader(str(path)) as reader:
            labels = reader.getSignalLabels()
            assert reader.datarecord_duration == 1.0
            rates.add(reader.getSampleFrequency(0))
            assert reader.getSampleFrequency(labels.index("IBI")) == 1.0  # a channel at another rate
            assert reader.getPhysicalDimension(0) == "uV"
        montage = path.parent.name
        suffix = "LE" if montage == "02_tcp_le" else "REF"
        assert labels[0] == f"EEG FP1-{suffix}" and ("EEG A1-REF" in labels) == (montage == "01_tcp_ar")
        subject, sex, birth, again, age = raw_header[8:88].decode().split()  # "aaaaaaaa M 01-JAN-1900 aaaaaaaa Age:38"
        assert subject == again == path.name.split("_")[0] and sex in "MF" and birth == "01-JAN-1900"
        assert age.startswith("Age:") and raw_header[88:168].decode().startswith("Startdate ")
        raw = mne.io.read_raw_edf(path, preload=False, verbose="error")
        assert raw.n_times / raw.info["sfreq"] == pytest.approx(5.5 * 60, abs=1)
    assert rates == {250.0, 256.0, 400.0}


def test_generators_are_deterministic_and_each_file_has_its_own_stream(tmp_path):
    a = synth.synth_tuh_eeg(tmp_path / "a", n_records=3, seed=7, minutes=(5.5, 5.6))
    b = synth.synth_tuh_eeg(tmp_path / "b", n_records=3, seed=7, minutes=(5.5, 5.6))
    assert digest(a) == digest(b)
    c = synth.synth_bids_eeg(tmp_path / "c", subjects=2, seed=1, runs=1, minutes=(1.0, 1.0))
    d = synth.synth_bids_eeg(tmp_path / "d", subjects=3, seed=1, runs=1, minutes=(1.0, 1.0))
    both = {k: v for k, v in digest(c).items() if k.startswith("sub-01")}
    assert both and both == {k: v for k, v in digest(d).items() if k.startswith("sub-01")}


def test_bids_layout_and_sidecars(tmp_path):
    root = synth.synth_bids_eeg(tmp_path / "bids", subjects=2, seed=0, sessions=2, runs=1, minutes=(1.0, 1.0))
    assert (root / "dataset_description.json").is_file()
    people = pl.read_csv(root / "participants.tsv", separator="\t")
    assert people.columns == ["participant_id", "age", "sex", "group"]
    folder = root / "sub-01" / "ses-02" / "eeg"
    stem = "sub-01_ses-02_task-rest_run-1"
    assert {p.name for p in folder.iterdir()} == {f"{stem}_{s}" for s in
                                                  ("eeg.edf", "eeg.json", "channels.tsv", "events.tsv")}  # fmt: skip
    raw = mne.io.read_raw_edf(folder / f"{stem}_eeg.edf", preload=False, verbose="error")
    assert "T7" in raw.ch_names and "VEOG" in raw.ch_names and len(raw.annotations) == 3
    bdf = root / "sub-02" / "ses-01" / "eeg" / "sub-02_ses-01_task-rest_run-1_eeg.bdf"
    assert bdf.read_bytes()[:8] == b"\xffBIOSEMI"


def test_edf_folder_has_eegmmidb_labels_and_biosemi_bdf(tmp_path):
    root = synth.synth_edf(tmp_path / "edf", n_records=2, seed=0)
    edf_file, bdf_file = sorted(root.rglob("*.edf"))[0], sorted(root.rglob("*.bdf"))[0]
    with pyedflib.EdfReader(str(edf_file)) as reader:
        assert reader.getSignalLabels()[:3] == ["Fp1.", "Fp2.", "F7.."] and reader.readAnnotations()[2][0] in (
            "T0", "T1", "T2")  # fmt: skip
    with pyedflib.EdfReader(str(bdf_file)) as reader:
        assert reader.getSignalLabels()[-1] == "Status" and reader.getSampleFrequency(0) == 320


def band_power(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Power in [low, high) Hz of samples (S, C, N, 200) at 200 Hz, summed over channels."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    spectrum = np.abs(np.fft.rfft(flat, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(flat.shape[-1], 1 / 200)
    return spectrum[..., (freqs >= low) & (freqs < high)].sum(axis=(-1, 1))


def auc(score: np.ndarray, label: np.ndarray) -> float:
    ranks = np.argsort(np.argsort(score)) + 1
    positives = label.sum()
    return float((ranks[label].sum() - positives * (positives + 1) / 2) / (positives * (~label).sum()))


def test_abnormal_recordings_differ_in_band_power_a_classifier_can_learn(tmp_path):
    src = synth.synth_tuh_eeg(tmp_path / "tuab", n_records=8, seed=3, minutes=(5.2, 5.5))
    build(str(src), str(tmp_path / "store"), kind="eeg", recipe="tuab", jobs=1)
    manifest = pl.read_parquet(tmp_path / "store" / "manifest.parquet")
    x = zarr.open_group(str(tmp_path / "store" / "zarr"), mode="r")["eeg"][:]
    label = manifest["abnormal"].to_numpy()
    slowing = np.log(band_power(x, 1, 6) / band_power(x, 8, 12))
    assert 0.3 < label.mean() < 0.7
    assert auc(slowing, label) > 0.95  # one band-power ratio separates normal from abnormal windows
