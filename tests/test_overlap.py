"""``physiofm overlap``: the same real recording found across stores, formats and sampling rates.

Three archives are made from the real recordings in ``../shared/data``:

* **A**, PTB-XL layout at 100 Hz (WFDB ``records100`` + ``ptbxl_database.csv``): ``00001_lr`` as
  published; ``00002_lr``, the real 500-Hz PTB-XL record HR06000 decimated to 100 Hz as PTB-XL's
  ``records100`` are; ``00003_lr`` (E07500 decimated), recorded from the **same patient** (15709)
  as the first two; ``00004_lr`` (JS20000 decimated), another patient.
* **B**, Challenge 2021 layout at 500 Hz (``.hea`` + MATLAB v4 ``.mat``): HR06000 and HR06001
  byte for byte, and ``Q00001``, PTB-XL's ``00001_lr`` brought to 500 Hz.
* **C**, Challenge layout again: HR06000 byte for byte, and ``X06001``, HR06001's samples written
  as a WFDB format-16 ``.dat`` (same signal, another format).

A and B share two recordings, each at another rate and in another format (near copies); B and C
share two exactly.  Records of the same patient that are different recordings are not flagged.
"""

from __future__ import annotations

import json
import shutil
import struct
import warnings

import numpy as np
import polars as pl
import pytest
import scipy.io
import wfdb
from scipy.signal import resample_poly
from typer.testing import CliRunner

from physiofm.cli import app
from physiofm.preprocess import fingerprint as F
from physiofm.preprocess.leads import STANDARD_LEADS
from physiofm.store import overlap as O
from physiofm.store.build import build

CHALLENGE = "physionet-challenge-2021"
PTBXL_LEADS = [lead.upper() for lead in STANDARD_LEADS]


def _adu(x: np.ndarray) -> np.ndarray:
    """(12, T) mV → (12, T) int16 at 1000 adu/mV."""
    return np.clip(np.rint(x * 1000), -32767, 32767).astype("<i2")


def _write_wfdb(stem, name: str, d: np.ndarray, fs: int, leads) -> None:
    """A format-16 WFDB record ``stem.{hea,dat}`` of ``d`` (12, T) int16 adu."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    d.T.tofile(f"{stem}.dat")
    lines = [f"{name} 12 {fs} {d.shape[1]}"]
    lines += [f"{name}.dat 16 1000/mV 16 0 {d[j, 0]} 0 0 {lead}" for j, lead in enumerate(leads)]
    stem.with_suffix(".hea").write_text("\n".join(lines) + "\n")


def _write_mat(folder, name: str, d: np.ndarray, fs: int) -> None:
    """A Challenge 2021 record: ``name.hea`` and a MATLAB v4 ``name.mat`` holding ``val`` (12, T) int16."""
    header = struct.pack("<5i", 30, d.shape[0], d.shape[1], 0, 4) + b"val\x00"
    (folder / f"{name}.mat").write_bytes(header + np.asfortranarray(d).tobytes(order="F"))
    lines = [f"{name} 12 {fs} {d.shape[1]}"]
    lines += [f"{name}.mat 16+24 1000/mV 16 0 {d[j, 0]} 0 0 {lead}" for j, lead in enumerate(STANDARD_LEADS)]
    lines += ["#Age: 56", "#Sex: Female", "#Dx: 426783006"]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")


def _challenge(shared_data, name: str) -> np.ndarray:
    return scipy.io.loadmat(shared_data / CHALLENGE / f"{name}.mat")["val"].astype(np.float64) / 1000  # mV, 500 Hz


def _copy(shared_data, folder, name: str) -> None:
    for suffix in (".hea", ".mat"):
        shutil.copy(shared_data / CHALLENGE / f"{name}{suffix}", folder / f"{name}{suffix}")


def make_archives(shared_data, root):
    ptbxl = root / "a"
    rows = []
    first = wfdb.rdrecord(str(shared_data / "ptb-xl/records100/00000/00001_lr")).p_signal.T  # (12, 1000) mV
    for suffix in (".hea", ".dat"):
        (ptbxl / "records100/00000").mkdir(parents=True, exist_ok=True)
        shutil.copy(
            shared_data / f"ptb-xl/records100/00000/00001_lr{suffix}", ptbxl / f"records100/00000/00001_lr{suffix}"
        )
    for ecg_id, (source, patient) in enumerate(
        [(None, 15709), ("HR06000", 15709), ("E07500", 15709), ("JS20000", 4242)], start=1
    ):
        lr, hr = f"records100/00000/{ecg_id:05d}_lr", f"records500/00000/{ecg_id:05d}_hr"
        if source is not None:  # PTB-XL's records100 are its 500-Hz records decimated
            _write_wfdb(
                ptbxl / lr,
                f"{ecg_id:05d}_lr",
                _adu(resample_poly(_challenge(shared_data, source), 1, 5, axis=-1)),
                100,
                PTBXL_LEADS,
            )
        rows.append({"ecg_id": ecg_id, "patient_id": f"{patient}.0", "age": "56.0", "sex": "1", "scp_codes": "{'NORM': 100.0}",
                     "strat_fold": "3", "filename_lr": lr, "filename_hr": hr})  # fmt: skip
    pl.DataFrame(rows).write_csv(ptbxl / "ptbxl_database.csv")

    challenge = root / "b"
    challenge.mkdir()
    _copy(shared_data, challenge, "HR06000")
    _copy(shared_data, challenge, "HR06001")
    _write_mat(challenge, "Q00001", _adu(resample_poly(first, 5, 1, axis=-1)), 500)

    other = root / "c"
    other.mkdir()
    _copy(shared_data, other, "HR06000")
    _write_wfdb(other / "X06001", "X06001", _adu(_challenge(shared_data, "HR06001")), 500, list(STANDARD_LEADS))
    return ptbxl, challenge, other


@pytest.fixture(scope="module")
def stores(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("overlap")
    a, b, c = make_archives(shared_data, root / "raw")
    out = {}
    for name, source, fmt in (("a", a, "ptbxl"), ("b", b, "challenge"), ("c", c, "challenge")):
        build(str(source), str(root / name), fmt=fmt, jobs=1)
        out[name] = str(root / name)
    return out


def _pairs(report) -> set[tuple[str, str, str]]:
    return {(r["a_record_id"], r["b_record_id"], r["kind"]) for r in report.pairs.iter_rows(named=True)}


def test_a_resampled_copy_in_another_format_is_found_and_the_same_patient_is_not(stores):
    report = O.overlap(stores["a"], stores["b"])
    assert _pairs(report) == {("00001_lr", "Q00001", "near"), ("00002_lr", "HR06000", "near")}
    assert (report.pairs["corr"] > 0.99).all()
    assert report.pairs["a_subject_id"].to_list() == ["15709", "15709"]
    s = report.summary
    assert (s["exact"], s["near"], s["records_a"], s["records_b"]) == (0, 2, 4, 3)
    assert s["fingerprints_a"] == s["fingerprints_b"] == "manifest"
    # patient 15709's other recordings are candidates of no one: the sketches of different recordings disagree
    a, b = O.load(stores["a"]), O.load(stores["b"])
    ra = a.ids["record_id"].to_list().index("00003_lr")
    rb = b.ids["record_id"].to_list().index("HR06000")
    corr, _, common = F.similarity(a.leads[[ra]], a.values[[ra]], b.leads[[rb]], b.values[[rb]])
    assert common[0] == 2 and corr[0] < 0.5


def test_exact_copies_same_bytes_and_same_signal_in_another_format(stores):
    report = O.overlap(stores["b"], stores["c"])
    assert _pairs(report) == {("HR06000", "HR06000", "exact"), ("HR06001", "X06001", "exact")}
    assert report.pairs["windows"].to_list() == [1, 1]  # the sketches agree too
    b = pl.read_parquet(f"{stores['b']}/manifest.parquet")
    c = pl.read_parquet(f"{stores['c']}/manifest.parquet")
    assert set(b["fp_signal"]) & set(c["fp_signal"]) and b["fp_signal"].n_unique() == 3


def test_a_store_without_fingerprint_columns_is_sketched_from_zarr(stores):
    stored = O.load(stores["a"])
    layout = O.Layout(stores["a"])
    redone = O._from_zarr(layout, layout.read_info(), stores["a"])
    np.testing.assert_array_equal(redone.leads, stored.leads)
    np.testing.assert_array_equal(redone.values, stored.values)
    report = O.compare(redone, O.load(stores["b"]))
    assert _pairs(report) == {("00001_lr", "Q00001", "near"), ("00002_lr", "HR06000", "near")}


def test_cli_writes_the_report(stores, tmp_path):
    done = CliRunner().invoke(app, ["overlap", stores["a"], stores["b"], "--out", str(tmp_path / "report")])
    assert done.exit_code == 0, done.output
    assert "2 record pairs" in done.output and "Q00001" in done.output
    pairs = pl.read_parquet(tmp_path / "report/overlap.parquet")
    assert sorted(pairs["b_record_id"]) == ["HR06000", "Q00001"]
    assert json.loads((tmp_path / "report/overlap.json").read_text())["near"] == 2


def test_exclude_drops_the_overlapping_records_and_their_subjects(stores):
    rows, summary = O.kept_rows(stores["a"], [stores["b"]])
    kept = pl.read_parquet(f"{stores['a']}/manifest.parquet")[rows.tolist()]["record_id"].to_list()
    assert kept == ["00004_lr"]  # 00003_lr is not a copy, but its patient's recordings are in B
    assert (summary["records_overlapping"], summary["subjects_dropped"], summary["records_dropped"]) == (2, 1, 3)
    # Challenge records carry no patient ids: only the copies themselves go
    rows, summary = O.kept_rows(stores["b"], [stores["a"]])
    assert pl.read_parquet(f"{stores['b']}/manifest.parquet")[rows.tolist()]["record_id"].to_list() == ["HR06001"]
    assert summary["subjects_dropped"] == 0


def test_pretrain_exclude_and_the_finetune_warning(stores, tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", stores["a"], "--out", str(run), "--exclude", stores["b"], "--max-steps", "1",
            "--batch-size", "2", "--layers", "1", "--device", "cpu"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert json.loads((run / "config.json").read_text())["exclude"] == [stores["b"]]
    assert json.loads((run / "exclusion.json").read_text())[0]["rows_kept"] == 1
    assert json.loads((run / "summary.json").read_text())["samples_per_rank"] == [1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        said = O.pretraining_overlap(stores["b"], [str(run / "encoder.pt")])  # B was excluded: nothing to say
        assert said == [] and not caught
        said = O.pretraining_overlap(stores["c"], [str(run)])  # C shares HR06000 with A, the run's store
    assert len(said) == 1 and "1 of its 2 records" in said[0] and len(caught) == 1


def test_sketches_of_a_real_record_agree_across_rate_filter_dtype_and_leads(shared_data):
    from physiofm.corpora.base import Record, Signal
    from physiofm.preprocess import ecg
    from physiofm.preprocess.recipe import load_recipe

    recipe = load_recipe("challenge")
    other = load_recipe(
        "challenge", {"filter": {"bandpass": [0.05, 70.0], "notch": 50.0}, "output": {"dtype": "float16"}}
    )
    x, y = _challenge(shared_data, "HR06000"), _challenge(shared_data, "HR06001")
    leads = list(STANDARD_LEADS)

    def prepared(name, data, fs, channels=leads, with_recipe=recipe):
        arrays, rows, rejects = ecg.prepare(
            [Record("t", name, name, {"ecg": Signal(data, fs, list(channels))})], with_recipe
        )
        assert len(rows) == 1 and not rejects
        return rows[0]

    original = prepared("hr", x, 500.0)
    shuffled = prepared("shuffled", x[::-1], 500.0, leads[::-1])  # the same signal, channels in another order
    assert shuffled["fp_signal"] == original["fp_signal"] != prepared("other", y, 500.0)["fp_signal"]
    copies = [
        prepared("lr", resample_poly(x, 1, 5, axis=-1), 100.0),
        prepared("filtered", x, 500.0, with_recipe=other),
        prepared("two-lead", resample_poly(x[[1, 10]], 1, 2, axis=-1), 250.0, ["II", "V5"]),
    ]
    rows = [original, *copies, prepared("other", y, 500.0)]
    sketch_leads, values = F.decode([row["fp_sketch"] for row in rows])
    assert sketch_leads[0].tolist() == [1, 7] and sketch_leads[3].tolist() == [1, 10]  # II and V2; II and V5
    n = len(rows) - 1
    corr, _, common = F.similarity(sketch_leads[[0] * n], values[[0] * n], sketch_leads[1:], values[1:])
    assert common.tolist() == [2, 2, 1, 2]
    assert (corr[:3] > 0.99).all() and corr[3] < 0.5, corr
    # the source signal is the same whatever the recipe; at another rate or with other leads it is not
    assert rows[2]["fp_signal"] == original["fp_signal"]
    assert len({row["fp_signal"] for row in rows}) == len(rows) - 1


def test_a_batch_hashes_each_record_as_signal_hash_does_whatever_its_range(shared_data):
    """``prepare`` hashes a batch's records one by one from extremes it computes once; each record's
    ``fp_signal`` must still be :func:`signal_hash` of that record alone: int16 values for one under
    32.767 mV, int32 for one over it (a lead scaled up), a NaN gap hashed as the zeros it becomes."""
    from physiofm.corpora.base import Record, Signal
    from physiofm.preprocess import ecg
    from physiofm.preprocess.recipe import load_recipe

    x = _challenge(shared_data, "HR06000")
    big = x.copy()
    big[4] *= 40.0 / np.abs(big[4]).max()  # a 40-mV peak, past 32.767 mV: the int32 case
    gap = x.copy()
    gap[2, 100:140] = np.nan
    signals = {"plain": x, "big": big, "gap": gap, "negative": -x}
    records = [
        Record("t", name, name, {"ecg": Signal(data, 500.0, list(STANDARD_LEADS))}) for name, data in signals.items()
    ]
    _, rows, rejects = ecg.prepare(records, load_recipe("challenge", {"quality": {"drop": []}}))
    assert not rejects and [row["q_amplitude"] for row in rows] == [False, True, False, False]
    assert [row["q_nan"] for row in rows] == [False, False, True, False]
    got = {row["record_id"]: row["fp_signal"] for row in rows}
    present = np.ones(12, dtype=bool)
    for name, data in signals.items():
        assert got[name] == F.signal_hash(np.nan_to_num(data).astype(np.float32), 500.0, present), name
    assert len(set(got.values())) == 4
    assert np.abs(big).max() * 1000 > 32767 >= np.abs(x).max() * 1000
