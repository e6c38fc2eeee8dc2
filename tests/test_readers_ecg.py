"""Readers on the real sample files, checked against the field's own tools (wfdb, scipy)."""

import shutil

import numpy as np
import pytest
import scipy.io
import wfdb

from physiofm import corpora
from physiofm.corpora import challenge, ptbxl
from physiofm.corpora import wfdb_tree as wfdb_dir
from physiofm.corpora.base import Record, Reject
from physiofm.corpora.wfdb_format import HeaderError, parse_header


def read_all(module, root):
    return list(module.read(str(root), module.list_items(str(root))))


def test_challenge_headers_that_wfdb_rejects_are_read_with_labels(shared_data):
    root = shared_data / "physionet-challenge-2021"
    with pytest.raises(Exception):  # noqa: B017 - wfdb raises one of several types
        wfdb.rdrecord(str(root / "E07500"))  # the real Georgia header is not WFDB syntax
    records = {r.record_id: r for r in read_all(challenge, root)}
    assert sorted(records) == ["E07500", "HR06000", "HR06001", "JS20000"]
    georgia = records["E07500"]
    assert georgia.meta == {
        "dx": ["67741000119109", "426177001"],
        "age": 78.0,
        "sex": "male",
        "subset": "physionet-challenge-2021",
    }
    assert records["JS20000"].meta["dx"] == ["284470004", "427084000", "698252002", "55930002"]
    for record_id, record in records.items():
        val = scipy.io.loadmat(str(root / f"{record_id}.mat"))["val"]
        ecg = record.signals["ecg"]
        assert ecg.fs == 500 and ecg.channels[3] == "aVR" and ecg.data.shape == (12, 5000)
        np.testing.assert_allclose(ecg.data, val / 1000.0, rtol=1e-6)  # gain 1000 adu/mV, baseline 0


def test_wfdb_format16_fast_path_matches_wfdb(shared_data):
    root = shared_data / "ptb-xl"
    (record,) = read_all(ptbxl, root)
    reference = wfdb.rdrecord(str(root / "records100/00000/00001_lr"))
    assert record.signals["ecg"].channels == reference.sig_name
    np.testing.assert_allclose(record.signals["ecg"].data, reference.p_signal.T, rtol=1e-6, atol=1e-6)
    assert record.signals["ecg"].fs == 100


def test_format212_goes_through_wfdb(shared_data):
    root = shared_data / "wfdb-software-data"
    (record,) = read_all(wfdb_dir, root)
    reference = wfdb.rdrecord(str(root / "100s"))
    assert record.signals["ecg"].channels == ["MLII", "V5"] and record.signals["ecg"].fs == 360
    np.testing.assert_allclose(record.signals["ecg"].data, reference.p_signal.T, rtol=1e-6)


def test_format_detection_on_real_trees(shared_data):
    assert corpora.detect(str(shared_data / "physionet-challenge-2021")).name == "challenge"
    assert corpora.detect(str(shared_data / "ptb-xl")).name == "ptbxl"
    assert corpora.detect(str(shared_data / "wfdb-software-data")).name == "wfdb"
    with pytest.raises(ValueError, match="matches none"):
        corpora.detect(str(shared_data / "eegmmidb"))


def test_header_parser_accepts_real_quirks_and_names_garbage():
    header = parse_header(
        "E07500.mat 12 500 5000 05-May-2020 09:49:17\n"
        + "".join(
            f"E07500.mat 16+24 1000/mv 16 0 -3 2 0 {lead}\n"
            for lead in "I II III aVR aVL aVF V1 V2 V3 V4 V5 V6".split()
        )
        + "#Age: NaN\n# Sex: Male\n#Dx: 1,2\n"
    )
    assert header.fs == 500 and header.n_samples == 5000 and header.signals[0].offset == 24
    assert header.signals[0].units == "mv" and header.signals[0].gain == 1000
    assert header.comment_fields() == {"Age": "NaN", "Sex": "Male", "Dx": "1,2"}
    with pytest.raises(HeaderError, match="not an integer"):
        parse_header("rec twelve 500 5000\n")
    with pytest.raises(HeaderError, match="announces 2 signals, found 1"):
        parse_header("rec 2 500 5000\nrec.dat 16 200/mV 16 0 0 0 0 I\n")
    with pytest.raises(HeaderError, match="sampling rate"):
        parse_header("rec 1 abc 5000\nrec.dat 16 200/mV 16 0 0 0 0 I\n")


def test_read_errors_become_rejects_with_reasons(shared_data, tmp_path):
    src = shared_data / "physionet-challenge-2021"
    for name in ("HR06000", "HR06001", "JS20000", "E07500"):
        shutil.copy(src / f"{name}.hea", tmp_path)
        shutil.copy(src / f"{name}.mat", tmp_path)
    (tmp_path / "HR06001.mat").write_bytes((src / "HR06001.mat").read_bytes()[:50_000])  # truncated
    (tmp_path / "JS20000.hea").write_text("this is not a header\n")
    (tmp_path / "E07500.mat").unlink()  # missing signal file
    scipy.io.savemat(tmp_path / "X00001.mat", {"val": np.zeros((12, 10), np.int16)})  # no header; v5
    out = {r.record_id: r for r in read_all(challenge, tmp_path)}
    assert isinstance(out["HR06000"], Record)
    reasons = {k: v.reason for k, v in out.items() if isinstance(v, Reject)}
    assert reasons["HR06001"].startswith("truncated signal file HR06001.mat")
    assert reasons["JS20000"].startswith("garbage header")
    assert reasons["E07500"] == "missing signal file E07500.mat"
    assert reasons["X00001"] == "missing header X00001.hea"
