"""Synthetic ECG archives: layouts are exact and read back with each field's own tools."""

from __future__ import annotations

import ast
import csv
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import wfdb
from scipy.signal import find_peaks

import physiofm.synth.ecg as synth_ecg
from physiofm import corpora
from physiofm.synth import LEADS, ecg_12lead, synth_challenge, synth_code15, synth_mimic_iv_ecg, synth_ptbxl
from physiofm.synth.ecg import (
    CODE15_COLUMNS,
    MIMIC_LEADS,
    MIMIC_MEASUREMENTS,
    MIMIC_ROOT,
    PTBXL_COLUMNS,
    SNOMED,
    ptbxl_record_path,
)

REAL_CHALLENGE = "physionet-challenge-2021"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _header(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return next(csv.reader(f))


def _shape(line: str) -> list[str]:
    """Tokens of a header line with every integer replaced by 9 and record ids by ID."""
    return [re.sub(r"-?\d+", "9", re.sub(r"^[A-Z]+\d+", "ID", tok)) for tok in line.split(" ")]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _r_peaks(ecg: np.ndarray, fs: float) -> np.ndarray:
    """R peaks of one (12, T) ECG: maxima of the summed absolute slope of all leads."""
    slope = np.convolve(np.abs(np.diff(ecg, axis=1)).sum(axis=0), np.ones(int(0.04 * fs)), "same")
    floor = np.median(slope)
    return find_peaks(slope, height=floor + 0.4 * (slope.max() - floor), distance=int(0.3 * fs))[0]


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Record every signal block the writers generate (records in writing order, mV)."""
    blocks: list[np.ndarray] = []

    def spy(*args: object, **kwargs: object) -> np.ndarray:
        x = ecg_12lead(*args, **kwargs)
        blocks.append(x)
        return x

    monkeypatch.setattr(synth_ecg, "ecg_12lead", spy)
    return blocks


def _checksums(d: np.ndarray, signed: bool) -> list[int]:
    sums = d.astype(np.int64).sum(axis=0) % 65536
    return [int(s) - 65536 if signed and s > 32767 else int(s) for s in sums]


# --- waveform model ------------------------------------------------------------------------------


def test_ecg_12lead_relations_amplitudes_and_rates() -> None:
    rng = np.random.default_rng(1)
    x = ecg_12lead(40, 500, 10, rng)
    assert x.shape == (40, 12, 5000) and x.dtype == np.float64
    lead = {name: x[:, i] for i, name in enumerate(LEADS)}
    np.testing.assert_allclose(lead["III"], lead["II"] - lead["I"], atol=1e-12)
    np.testing.assert_allclose(lead["aVR"], -(lead["I"] + lead["II"]) / 2, atol=1e-12)
    np.testing.assert_allclose(lead["aVL"], lead["I"] - lead["II"] / 2, atol=1e-12)
    np.testing.assert_allclose(lead["aVF"], lead["II"] - lead["I"] / 2, atol=1e-12)
    r_v5 = np.median(x[:, LEADS.index("V5")].max(axis=1))
    assert 0.5 < r_v5 < 1.5 and 0.3 < np.median(x[:, 1].max(axis=1)) < 1.5
    assert np.abs(x).max() < 6

    rates = (45, 60, 90, 120)
    fixed = ecg_12lead(len(rates), 500, 10, rng, heart_rate=rates)
    assert all(abs(len(_r_peaks(ecg, 500)) - hr / 6) <= 1.5 for ecg, hr in zip(fixed, rates))


def test_ecg_12lead_conditions_shape_the_rhythm() -> None:
    rng = np.random.default_rng(2)
    x = ecg_12lead(20, 500, 10, rng, conditions=[{"AF"}] * 10 + [{"SR"}] * 10)
    rr = [np.diff(_r_peaks(ecg, 500)) for ecg in x]
    cv = [r.std() / r.mean() for r in rr]
    assert np.median(cv[:10]) > 3 * np.median(cv[10:])
    with pytest.raises(ValueError, match="unknown conditions"):
        ecg_12lead(1, 500, 1, rng, conditions=[{"XYZ"}])


def test_ecg_12lead_is_deterministic_per_seed() -> None:
    a = ecg_12lead(3, 250, 4, np.random.default_rng(7))
    b = ecg_12lead(3, 250, 4, np.random.default_rng(7))
    c = ecg_12lead(3, 250, 4, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# --- PTB-XL --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ptbxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_ptbxl(tmp_path_factory.mktemp("ptbxl"), n_records=12, seed=3)


def test_ptbxl_record_path_blocks_of_1000() -> None:
    assert ptbxl_record_path(1, 100) == "records100/00000/00001_lr"
    assert ptbxl_record_path(999, 500) == "records500/00000/00999_hr"
    assert ptbxl_record_path(1000, 100) == "records100/01000/01000_lr"
    assert ptbxl_record_path(21837, 100) == "records100/21000/21837_lr"


def test_ptbxl_csvs(ptbxl: Path) -> None:
    assert tuple(_header(ptbxl / "ptbxl_database.csv")) == PTBXL_COLUMNS
    rows = _rows(ptbxl / "ptbxl_database.csv")
    statements = {r[""]: r for r in _rows(ptbxl / "scp_statements.csv")}
    assert {
        "description",
        "diagnostic",
        "form",
        "rhythm",
        "diagnostic_class",
        "diagnostic_subclass",
        "Statement Category",
        "SCP-ECG Statement Description",
        "AHA code",
        "aECG REFID",
        "CDISC Code",
        "DICOM Code",
    } <= set(_header(ptbxl / "scp_statements.csv"))
    assert [int(r["ecg_id"]) for r in rows] == list(range(1, 13))
    for row in rows:
        codes = ast.literal_eval(row["scp_codes"])
        assert isinstance(codes, dict) and codes and set(codes) <= set(statements)
        assert all(isinstance(v, float) and 0 <= v <= 100 for v in codes.values())
        assert re.fullmatch(r"\d+\.0", row["patient_id"]) and float(row["age"]) >= 18
        assert 1 <= int(row["strat_fold"]) <= 10 and row["sex"] in ("0", "1")
        assert row["second_opinion"] in ("True", "False") and row["validated_by_human"] in ("True", "False")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row["recording_date"])
        ecg_id = int(row["ecg_id"])
        assert row["filename_lr"] == ptbxl_record_path(ecg_id, 100)
        assert row["filename_hr"] == ptbxl_record_path(ecg_id, 500)
    assert {statements[c]["diagnostic_class"] for r in rows for c in ast.literal_eval(r["scp_codes"])} - {""}
    by_patient: dict[str, set[str]] = {}
    for row in rows:
        by_patient.setdefault(row["patient_id"], set()).add(row["strat_fold"])
    assert all(len(folds) == 1 for folds in by_patient.values())


def test_ptbxl_header_matches_real_layout(ptbxl: Path, shared_data: Path) -> None:
    real = (shared_data / "ptb-xl/records100/00000/00001_lr.hea").read_text().splitlines()
    ours = (ptbxl / "records100/00000/00001_lr.hea").read_text().splitlines()
    assert ours[0] == "00001_lr 12 100 1000" == real[0]
    assert [_shape(line) for line in ours] == [_shape(line) for line in real]
    assert [line.split()[-1] for line in ours] == [line.split()[-1] for line in real]
    hr = (ptbxl / "records500/00000/00001_hr.hea").read_text().splitlines()
    assert hr[0] == "00001_hr 12 500 5000" and hr[1].startswith("00001_hr.dat 16 1000.0(0)/mV 16 0 ")


def test_ptbxl_records_read_back_with_wfdb(ptbxl: Path) -> None:
    for ecg_id in (1, 12):
        lr = wfdb.rdrecord(str(ptbxl / ptbxl_record_path(ecg_id, 100)))
        hr = wfdb.rdrecord(str(ptbxl / ptbxl_record_path(ecg_id, 500)))
        assert lr.sig_name == hr.sig_name == [lead.upper() for lead in LEADS]
        assert (lr.fs, lr.sig_len, hr.fs, hr.sig_len) == (100, 1000, 500, 5000)
        assert set(lr.units) == {"mV"} and lr.adc_gain == [1000.0] * 12 and lr.base_date is None
        for rec in (lr, hr):
            sig = rec.p_signal
            np.testing.assert_allclose(sig[:, 2], sig[:, 1] - sig[:, 0], atol=0.0025)  # III = II - I
            np.testing.assert_allclose(sig[:, 5], sig[:, 1] - sig[:, 0] / 2, atol=0.0025)  # AVF
            assert 0.2 < np.abs(sig).max() < 6
        # the 100 Hz twin is the decimated 500 Hz record
        assert np.corrcoef(lr.p_signal[:, 1], hr.p_signal[::5, 1])[0, 1] > 0.9
        stem = ptbxl / ptbxl_record_path(ecg_id, 100)
        d = np.fromfile(f"{stem}.dat", dtype="<i2").reshape(1000, 12)
        np.testing.assert_allclose(lr.p_signal, d / 1000.0)
        header = wfdb.rdheader(str(stem))
        assert header.checksum == _checksums(d, signed=False) and header.init_value == d[0].tolist()


def test_ptbxl_and_mimic_signals_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _capture(monkeypatch)
    ptbxl = synth_ptbxl(tmp_path / "ptbxl", n_records=3, seed=0, rates=(500,))
    truth = np.concatenate(blocks)
    for ecg_id in (1, 3):
        rec = wfdb.rdrecord(str(ptbxl / ptbxl_record_path(ecg_id, 500)))
        assert np.abs(rec.p_signal - truth[ecg_id - 1].T).max() <= 0.0005 + 1e-9  # 1 µV steps

    blocks.clear()
    mimic = synth_mimic_iv_ecg(tmp_path / "mimic", n_records=3, seed=0)
    truth = np.concatenate(blocks)
    for i, r in enumerate(_rows(mimic / "record_list.csv")):
        rec = wfdb.rdrecord(str(mimic / r["path"]))
        expected = truth[i, [LEADS.index(name) for name in MIMIC_LEADS]]
        assert np.abs(rec.p_signal - expected.T).max() <= 0.0025 + 1e-9  # 5 µV steps


def test_ptbxl_rates(tmp_path: Path) -> None:
    root = synth_ptbxl(tmp_path, n_records=2, rates=(500,))
    assert (root / "records500/00000/00002_hr.dat").stat().st_size == 5000 * 12 * 2
    assert not (root / "records100").exists()
    with pytest.raises(ValueError):
        synth_ptbxl(tmp_path, n_records=1, rates=(250,))


# --- Challenge 2021 ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def challenge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_challenge(tmp_path_factory.mktemp("challenge"), n_records=9, seed=4)


def test_challenge_layout_and_mat(challenge: Path) -> None:
    found = {p.relative_to(challenge).as_posix() for p in challenge.rglob("*.mat")}
    assert found == {
        "training/cpsc_2018/g1/A0001.mat",
        "training/cpsc_2018/g1/A0002.mat",
        "training/cpsc_2018/g1/A0003.mat",
        "training/georgia/g1/E00001.mat",
        "training/georgia/g1/E00002.mat",
        "training/ptb-xl/g1/HR00001.mat",
        "training/ptb-xl/g1/HR00002.mat",
        "training/chapman_shaoxing/g1/JS00001.mat",
        "training/chapman_shaoxing/g1/JS00002.mat",
    }
    mat_v4_header = b"\x1e\0\0\0\x0c\0\0\0\x88\x13\0\0\0\0\0\0\x04\0\0\0val\0"  # int16, 12 x 5000
    for name in found:
        path = challenge / name
        assert path.with_suffix(".hea").is_file()
        val = scipy.io.loadmat(path)["val"]
        assert val.shape == (12, 5000) and val.dtype == np.int16
        assert path.read_bytes()[:24] == mat_v4_header and path.stat().st_size == 24 + 12 * 5000 * 2
        lead = dict(zip(LEADS, val.astype(float)))
        assert np.abs(lead["III"] - (lead["II"] - lead["I"])).max() <= 2
        assert np.abs(lead["aVR"] + (lead["I"] + lead["II"]) / 2).max() <= 2


@pytest.mark.parametrize(
    "ours, real",
    [
        ("georgia/g1/E00001", "E07500"),
        ("ptb-xl/g1/HR00001", "HR06000"),
        ("chapman_shaoxing/g1/JS00001", "JS20000"),
    ],
)
def test_challenge_headers_match_real_ones(challenge: Path, shared_data: Path, ours: str, real: str) -> None:
    mine = (challenge / "training" / f"{ours}.hea").read_text()
    theirs = (shared_data / REAL_CHALLENGE / f"{real}.hea").read_text()
    assert mine.endswith("\n") and theirs.endswith("\n")
    mine_lines, real_lines = mine.splitlines(), theirs.splitlines()
    assert len(mine_lines) == len(real_lines)
    for a, b in zip(mine_lines[:13], real_lines[:13]):
        assert _shape(a) == _shape(b)
    assert [line.split(": ")[0] for line in mine_lines[13:]] == [line.split(": ")[0] for line in real_lines[13:]]
    comments = dict(line[1:].split(": ", 1) for line in mine_lines[13:])
    assert re.fullmatch(r"\d+|NaN", comments["Age"]) and comments["Sex"] in ("Male", "Female")
    assert set(comments["Dx"].split(",")) <= set(SNOMED.values())
    assert comments["Rx"] == comments["Hx"] == "Unknown"

    mat = (challenge / "training" / f"{ours}.mat").read_bytes()
    real_mat = (shared_data / REAL_CHALLENGE / f"{real}.mat").read_bytes()
    assert mat[:24] == real_mat[:24] and len(mat) == len(real_mat)
    val = scipy.io.loadmat(challenge / "training" / f"{ours}.mat")["val"]
    signal_lines = [line.split() for line in mine_lines[1:13]]
    assert [int(t[5]) for t in signal_lines] == val[:, 0].tolist()
    assert [int(t[6]) for t in signal_lines] == _checksums(val.T, signed=True)


def test_challenge_headers_trip_wfdb_like_real_ones(challenge: Path, shared_data: Path) -> None:
    real = shared_data / REAL_CHALLENGE
    errors = []
    for path in (real / "E07500", challenge / "training/georgia/g1/E00002"):
        with pytest.raises(Exception) as info:
            wfdb.rdrecord(str(path))
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]
    theirs, mine = wfdb.rdrecord(str(real / "HR06000")), wfdb.rdrecord(str(challenge / "training/ptb-xl/g1/HR00002"))
    assert mine.base_date is None and theirs.base_date is None and mine.units == theirs.units == ["mv"] * 12
    assert mine.sig_name == theirs.sig_name == list(LEADS)


def test_challenge_options(tmp_path: Path) -> None:
    root = synth_challenge(tmp_path, n_records=3, seed=0, subsets=("ningbo",), fs=257, seconds=2)
    header = (root / "training/ningbo/g1/JS10649.hea").read_text().splitlines()
    assert header[0].startswith("JS10649 12 257 514 26-Mar-2021 ")
    assert scipy.io.loadmat(root / "training/ningbo/g1/JS10649.mat")["val"].shape == (12, 514)
    with pytest.raises(ValueError):
        synth_challenge(tmp_path, n_records=1, subsets=("nope",))


# --- MIMIC-IV-ECG --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mimic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_mimic_iv_ecg(tmp_path_factory.mktemp("mimic"), n_records=10, seed=5, defects=True)


def test_mimic_csvs(mimic: Path) -> None:
    assert mimic.name == MIMIC_ROOT
    assert _header(mimic / "record_list.csv") == ["subject_id", "study_id", "file_name", "ecg_time", "path"]
    assert tuple(_header(mimic / "machine_measurements.csv")) == MIMIC_MEASUREMENTS
    records = _rows(mimic / "record_list.csv")
    assert len(records) == 10 and len({r["subject_id"] for r in records}) < 10
    for r in records:
        s, st = r["subject_id"], r["study_id"]
        assert r["path"] == f"files/p{s[:4]}/p{s}/s{st}/{st}" and r["file_name"] == st
        assert (mimic / f"{r['path']}.hea").is_file() and (mimic / f"{r['path']}.dat").is_file()
        assert re.fullmatch(r"2[12]\d\d-\d\d-\d\d \d\d:\d\d:00", r["ecg_time"])
    measurements = _rows(mimic / "machine_measurements.csv")
    assert [(m["subject_id"], m["study_id"]) for m in measurements] == [
        (r["subject_id"], r["study_id"]) for r in records
    ]
    assert all(m["report_0"] and not m["report_17"] for m in measurements)
    assert all(
        m["report_0"] in ("Sinus rhythm", "Sinus bradycardia", "Sinus tachycardia", "Atrial fibrillation")
        for m in measurements
    )


def test_mimic_records_read_back_with_wfdb(mimic: Path) -> None:
    records = _rows(mimic / "record_list.csv")
    for r in records[2:]:
        rec = wfdb.rdrecord(str(mimic / r["path"]))
        assert rec.sig_name == list(MIMIC_LEADS) and rec.sig_name.index("aVF") < rec.sig_name.index("aVL")
        assert (rec.fs, rec.sig_len, rec.units) == (500, 5000, ["mV"] * 12)
        assert rec.base_date.year >= 2100 and f"{rec.base_date} {rec.base_time}" == r["ecg_time"]
        assert rec.comments == [f"<subject_id>: {r['subject_id']}"]
        lead = dict(zip(rec.sig_name, rec.p_signal.T))
        # columns really are in the header's order: aVF (5th) and aVL (6th) satisfy their own relations
        assert np.abs(lead["aVF"] - (lead["II"] - lead["I"] / 2)).max() <= 0.0101
        assert np.abs(lead["aVL"] - (lead["I"] - lead["II"] / 2)).max() <= 0.0101
        assert not np.isnan(rec.p_signal).any() and (np.ptp(rec.p_signal, axis=0) > 0).all()
    header = (mimic / f"{records[2]['path']}.hea").read_text().splitlines()
    assert re.fullmatch(r"\d{8} 12 500 5000 \d\d:\d\d:\d\d \d\d/\d\d/2\d{3}", header[0])
    assert all(
        re.fullmatch(rf"\d{{8}}\.dat 16 200\.0\(0\)/mV 16 0 -?\d+ \d+ 0 {lead}", line)
        for line, lead in zip(header[1:13], MIMIC_LEADS)
    )


def test_mimic_defects(mimic: Path, tmp_path: Path) -> None:
    records = _rows(mimic / "record_list.csv")
    flat = wfdb.rdrecord(str(mimic / records[0]["path"])).p_signal
    assert np.ptp(flat[:, MIMIC_LEADS.index("V3")]) == 0 and not np.isnan(flat).any()
    holes = wfdb.rdrecord(str(mimic / records[1]["path"])).p_signal
    assert np.isnan(holes[-500:]).all() and not np.isnan(holes[:-500]).any()
    clean = synth_mimic_iv_ecg(tmp_path, n_records=2, seed=5)
    for r in _rows(clean / "record_list.csv"):
        sig = wfdb.rdrecord(str(clean / r["path"])).p_signal
        assert not np.isnan(sig).any() and (np.ptp(sig, axis=0) > 0).all()


# --- CODE-15% ------------------------------------------------------------------------------------


def test_code15_layout_padding_and_matching(tmp_path: Path) -> None:
    root = synth_code15(tmp_path, n_records=16, seed=6, n_parts=2, short_fraction=0.5)
    assert tuple(_header(root / "exams.csv")) == CODE15_COLUMNS
    rows = _rows(root / "exams.csv")
    assert {r["trace_file"] for r in rows} == {"exams_part0.hdf5", "exams_part1.hdf5"}
    for r in rows:
        for col in ("is_male", "1dAVb", "RBBB", "LBBB", "SB", "ST", "AF", "normal_ecg"):
            assert r[col] in ("True", "False")
        assert r["death"] in ("True", "False", "")
    lengths, csv_order, hdf_order = set(), [], []
    for part in (0, 1):
        with h5py.File(root / f"exams_part{part}.hdf5", "r") as f:
            ids, tracings = f["exam_id"][:], f["tracings"][:]
        assert ids.dtype == np.int64 and tracings.dtype == np.float32 and tracings.shape == (len(ids), 4096, 12)
        assert ids[-1] == 0 and not tracings[-1].any() and (ids[:-1] > 0).all()
        index = {int(e): i for i, e in enumerate(ids[:-1])}
        mine = [r for r in rows if r["trace_file"] == f"exams_part{part}.hdf5"]
        assert sorted(index) == sorted(int(r["exam_id"]) for r in mine)
        csv_order += [int(r["exam_id"]) for r in mine]
        hdf_order += [int(e) for e in ids[:-1]]
        for r in mine:
            t = tracings[index[int(r["exam_id"])]]
            nonzero = np.flatnonzero(np.abs(t).sum(axis=1))
            lead, trail = nonzero[0], 4095 - nonzero[-1]
            lengths.add(4096 - lead - trail)
            assert abs(lead - trail) <= 1
            mv = t[lead : 4096 - trail]  # CODE-15% values are mV
            assert 0.2 < np.abs(mv).max() < 6
            np.testing.assert_allclose(mv[:, 2], mv[:, 1] - mv[:, 0], atol=1e-5)
    assert lengths == {2800, 4000}
    assert csv_order != hdf_order


# --- determinism and registry ---------------------------------------------------------------------


@pytest.mark.parametrize("name", corpora.names("ecg"))
def test_generators_are_deterministic(tmp_path: Path, name: str) -> None:
    corpus = corpora.get(name)
    a = corpus.generate(tmp_path / "a", 4, seed=11)
    b = corpus.generate(tmp_path / "b", 4, seed=11)
    c = corpus.generate(tmp_path / "c", 4, seed=12)
    assert a.is_dir() and _files(a) == _files(b) and _files(a) != _files(c)
