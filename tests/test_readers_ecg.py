"""Readers on the real sample files, checked against the field's own tools (wfdb, scipy)."""

import re
import shutil

import fsspec
import numpy as np
import pytest
import scipy.io
import wfdb

from physiofm import corpora
from physiofm.corpora import challenge, ptbxl
from physiofm.corpora import wfdb_tree as wfdb_dir
from physiofm.corpora.base import Record, Reject
from physiofm.corpora.wfdb_format import HeaderError, parse_header, read_signals


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
        corpora.detect(str(shared_data / "eegmmidb"), "ecg")  # an EEG tree is no ECG archive
    assert corpora.detect(str(shared_data / "eegmmidb")).name == "edf"


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


# ---- broken and absurd headers and signal files ----------------------------------------------------


def copy_record(shared, stem: str, suffix: str, dest) -> tuple:
    """Copy ``shared/stem.{hea,suffix}`` into ``dest``; return (header path, signal path)."""
    dest.mkdir(parents=True, exist_ok=True)
    name = stem.rsplit("/", 1)[-1]
    for ext in (".hea", suffix):
        shutil.copy(shared / f"{stem}{ext}", dest / f"{name}{ext}")
    return dest / f"{name}.hea", dest / f"{name}{suffix}"


def edit_header(path, old: str, new: str) -> None:
    text = path.read_bytes().decode("latin-1")
    assert old in text
    path.write_bytes(text.replace(old, new).encode("latin-1"))


def only(module, root):
    (result,) = read_all(module, root)
    return result


def test_truncated_format212_file_is_rejected_with_what_the_header_needs(shared_data, tmp_path):
    _, dat = copy_record(shared_data, "wfdb-software-data/100s", ".dat", tmp_path)
    dat.write_bytes(dat.read_bytes()[:1000])
    reject = only(wfdb_dir, tmp_path)
    assert isinstance(reject, Reject)
    assert reject.reason == "truncated signal file 100s.dat: 1000 bytes, the header needs 64800"  # 21600 × 2 × 1.5


@pytest.mark.parametrize(
    ("module", "stem", "suffix", "reason"),
    [
        (wfdb_dir, "wfdb-software-data/100s", ".dat", "truncated signal file 100s.dat: 64800 bytes, the header needs "),
        (ptbxl, "ptb-xl/records100/00000/00001_lr", ".dat", "truncated signal file 00001_lr.dat: 24000 bytes, the "),
        (challenge, "physionet-challenge-2021/HR06000", ".mat", "HR06000.mat holds a 12x5000 matrix, the header says "),
    ],
    ids=["format212-wfdb", "format16-dat", "format16-mat"],
)
def test_a_header_claiming_1e12_samples_is_rejected_fast_without_allocating(
    shared_data, tmp_path, module, stem, suffix, reason
):
    import time
    import tracemalloc

    folder = tmp_path / "records100" / "00000" if module is ptbxl else tmp_path
    header, _ = copy_record(shared_data, stem, suffix, folder)
    first = header.read_bytes().decode("latin-1").splitlines()[0]
    edit_header(header, first, " ".join(first.split()[:3] + ["1000000000000"] + first.split()[4:]))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        reject = only(module, tmp_path)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(reject, Reject) and reject.reason.startswith(reason), reject
    assert seconds < 2 and peak < 50 * 2**20, (seconds, peak)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("0", "unknown sampling rate '0'"),
        ("-1", "unknown sampling rate '-1'"),
        ("nan", "unknown sampling rate 'nan'"),
        ("inf", "unknown sampling rate 'inf'"),
        ("1e9", "unknown sampling rate '1e9'"),
        ("100001", "unknown sampling rate '100001'"),
        ("1e-9", "unknown sampling rate '1e-9'"),
    ],
)
def test_absurd_sampling_rates_are_header_errors(token, message):
    with pytest.raises(HeaderError, match=re.escape(message)):
        parse_header(f"rec 1 {token} 5000\nrec.dat 16 200/mV 16 0 0 0 0 I\n")


@pytest.mark.parametrize(
    ("record_line", "signal_line", "message"),
    [
        ("rec 1 500 inf", "", "sample count 'inf' is not an integer"),  # was an OverflowError
        ("rec 1 500 nan", "", "sample count 'nan' is not an integer"),
        ("rec 1 500 12.5", "", "sample count '12.5' is not an integer"),
        ("rec 1 500 -5", "", "sample count -5 is negative"),
        ("rec -1 500 5000", "", "signal count -1 is negative"),
        ("rec 1 500 5000", "rec.dat 16 200/mV 16 inf 0 0 0 I", "ADC zero 'inf' is not an integer"),
        ("rec 1 500 5000", "rec.dat 16 1e999/mV 16 0 0 0 0 I", "gain '1e999' is not a finite non-zero number"),
        ("rec 1 500 5000", "rec.dat 16 1e-320/mV 16 0 0 0 0 I", "gain '1e-320' is not a finite non-zero number"),
        ("rec 1 500 5000", "rec.dat 16 200(+-)/mV 16 0 0 0 0 I", "baseline '+-' is not a number"),
        ("rec 1 500 5000", "rec.dat 16x0 200/mV 16 0 0 0 0 I", "0 samples per frame"),
    ],
)
def test_absurd_counts_gains_and_fields_are_header_errors(record_line, signal_line, message):
    with pytest.raises(HeaderError, match=re.escape(message)):
        parse_header(f"{record_line}\n{signal_line or 'rec.dat 16 200/mV 16 0 0 0 0 I'}\n")


def test_gain_zero_means_200_and_a_negative_gain_inverts(shared_data):
    """WFDB: a gain of 0 is 200 adu per unit; a negative gain (an inverted amplifier) is kept: the
    physical values change sign, as ``wfdb`` computes them."""
    header = parse_header("rec 2 360 100\nrec.dat 212 0 11 1024 995 0 0 MLII\nrec.dat 212 -200(5)/uV 11 0 0 0 0 V5\n")
    assert [s.gain for s in header.signals] == [200.0, -200.0]
    assert [s.baseline for s in header.signals] == [1024, 5] and [s.units for s in header.signals] == ["mV", "uV"]
    assert parse_header("rec 1 360\nrec.dat 16 -0/mV 16 0 0 0 0 I\n").signals[0].gain == 200.0


@pytest.mark.parametrize(
    ("module", "stem", "suffix", "old", "new", "factor"),
    [
        (wfdb_dir, "wfdb-software-data/100s", ".dat", "212 200 11", "212 0 11", [1.0, 1.0]),  # gain 200 already
        (wfdb_dir, "wfdb-software-data/100s", ".dat", "212 200 11 1024 995", "212 -200 11 1024 995", [-1.0, 1.0]),
        (ptbxl, "ptb-xl/records100/00000/00001_lr", ".dat", " 1000.0(0)/mV", " 0(0)/mV", [5.0] * 12),
        (ptbxl, "ptb-xl/records100/00000/00001_lr", ".dat", " 1000.0(0)/mV", " -1000.0(0)/mV", [-1.0] * 12),
        (challenge, "physionet-challenge-2021/HR06000", ".mat", " 1000/mv", " -1000/mv", [-1.0] * 12),
    ],
    ids=["212-gain0", "212-negative", "16-gain0", "16-negative", "mat-negative"],
)
def test_zero_and_negative_gains_are_read_as_wfdb_defines_them(
    shared_data, tmp_path, module, stem, suffix, old, new, factor
):
    folder = tmp_path / "records100" / "00000" if module is ptbxl else tmp_path
    header, _ = copy_record(shared_data, stem, suffix, folder)
    clean = only(module, tmp_path).signals["ecg"].data
    edit_header(header, old, new)
    record = only(module, tmp_path)
    assert isinstance(record, Record), record
    expected = clean * np.array(factor)[:, None]
    if set(factor) <= {1.0, -1.0}:
        assert record.signals["ecg"].data.tobytes() == expected.tobytes()  # exact: only signs change
    else:
        np.testing.assert_allclose(record.signals["ecg"].data, expected, rtol=1e-12)
    if "-" in new and module is wfdb_dir:  # the same values as wfdb itself computes
        reference = wfdb.rdrecord(str(tmp_path / "100s"))
        np.testing.assert_array_equal(record.signals["ecg"].data, reference.p_signal.T)


def test_read_signals_returns_each_channel_in_its_own_unit(shared_data, tmp_path):
    """A channel in ``NU`` (PPG) or ``mmHg`` (ABP) is returned with its unit; nothing is converted or refused."""
    header, _ = copy_record(shared_data, "ptb-xl/records100/00000/00001_lr", ".dat", tmp_path / "a")
    text = header.read_text()
    lines = text.splitlines()
    lines[7] = lines[7].replace("/mV", "/NU")  # V1
    lines[8] = lines[8].replace("/mV", "/mmHg")  # V2
    lines[9] = lines[9].replace("/mV", "/uV")  # V3
    fs = fsspec.filesystem("file")
    clean, _, _ = read_signals(fs, str(tmp_path / "a"), parse_header(text), "00001_lr")
    data, channels, units = read_signals(fs, str(tmp_path / "a"), parse_header("\n".join(lines)), "00001_lr")
    assert units == ["mV"] * 6 + ["NU", "mmHg", "uV"] + ["mV"] * 3
    assert channels == ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert data.dtype == np.float64 and data.tobytes() == clean.tobytes()  # (digital - baseline) / gain, in each unit
    reference = wfdb.rdrecord(str(shared_data / "ptb-xl/records100/00000/00001_lr"))
    np.testing.assert_allclose(data, reference.p_signal.T, rtol=1e-12)

    # the wfdb path (format 212): the header's units, WFDB's default "mV" where it gives none
    header, _ = copy_record(shared_data, "wfdb-software-data/100s", ".dat", tmp_path / "b")
    text = header.read_text()
    data, channels, units = read_signals(fs, str(tmp_path / "b"), parse_header(text), "100s")
    assert units == ["mV", "mV"] and channels == ["MLII", "V5"]
    np.testing.assert_array_equal(data, wfdb.rdrecord(str(tmp_path / "b" / "100s")).p_signal.T)
    text = text.replace("212 200 11 1024 1011 -3962 0 V5", "212 200/NU 11 1024 1011 -3962 0 PLETH")
    assert "PLETH" in text
    pleth, channels, units = read_signals(fs, str(tmp_path / "b"), parse_header(text), "100s")
    assert units == ["mV", "NU"] and channels == ["MLII", "PLETH"] and pleth.tobytes() == data.tobytes()


def test_format16_baselines_are_subtracted_as_wfdb_does(shared_data, tmp_path):
    """A non-zero baseline on some leads of a format-16 record (the fast path skips the subtraction
    only where every baseline is zero): the values are wfdb's, and leads with baseline 0 are unchanged."""
    header, _ = copy_record(shared_data, "ptb-xl/records100/00000/00001_lr", ".dat", tmp_path / "a")
    fs = fsspec.filesystem("file")
    text = header.read_text()
    clean, _, _ = read_signals(fs, str(tmp_path / "a"), parse_header(text), "00001_lr")
    lines = text.splitlines()
    lines[1] = lines[1].replace("1000.0(0)/mV", "1000.0(25)/mV")  # I
    lines[8] = lines[8].replace("1000.0(0)/mV", "1000.0(-1200)/mV")  # V2
    header.write_text("\n".join(lines) + "\n")
    data, _, _ = read_signals(fs, str(tmp_path / "a"), parse_header(header.read_text()), "00001_lr")
    reference = wfdb.rdrecord(str(tmp_path / "a" / "00001_lr")).p_signal.T  # (d - b) / gain: ours * (1 / gain)
    np.testing.assert_allclose(data, reference, rtol=1e-12, atol=0)
    np.testing.assert_allclose(data[0], clean[0] - 0.025, atol=1e-12)
    np.testing.assert_allclose(data[7], clean[7] + 1.2, atol=1e-12)
    others = [i for i in range(12) if i not in (0, 7)]
    assert data[others].tobytes() == clean[others].tobytes()


def test_wfdb_reads_what_our_parser_read(shared_data, tmp_path):
    """The wfdb path hands ``wfdb`` the header as parsed here: quirks ``wfdb`` misreads or refuses
    (non-ASCII names, extra lines, ``1e3`` samples, a Challenge-style record line) read as they should."""
    header, _ = copy_record(shared_data, "wfdb-software-data/100s", ".dat", tmp_path)
    fs, folder = fsspec.filesystem("file"), str(tmp_path)
    text = header.read_bytes().decode("latin-1")
    clean, _, _ = read_signals(fs, folder, parse_header(text), "100s")
    quirky = (
        text.replace("100s 2 360 21600", "100s.dat 2 360 1e3 12:00:00 01/01/2000")  # wfdb reads 1e3 as 1
        .replace("0 MLII", "0 MLII\xa0Ableitung\xe9")  # latin-1, with an NBSP inside the name
        .replace("0 V5\r\n", "0 V5\r\n100s.dat 212 200 11 1024 995 21537 0 V5\r\n")  # an extra line
    )
    header.write_bytes(quirky.encode("latin-1"))
    data, channels, _ = read_signals(fs, folder, parse_header(quirky), "100s")
    assert channels == ["MLII\xa0Ableitung\xe9", "V5"]
    assert data.tobytes() == np.ascontiguousarray(clean[:, :1000]).tobytes()
    assert isinstance(only(wfdb_dir, tmp_path), Record)


def test_non_ascii_names_in_headers_do_not_crash(shared_data, tmp_path):
    header, _ = copy_record(shared_data, "physionet-challenge-2021/HR06000", ".mat", tmp_path)
    fs, folder = fsspec.filesystem("file"), str(tmp_path)
    clean, _, _ = read_signals(fs, folder, parse_header(header.read_bytes().decode("latin-1")), "HR06000")
    raw = header.read_bytes()
    header.write_bytes(raw.replace(b"HR06000 12", b"HR06\xe9\x85\xa0000 12").replace(b" 0 I\n", b" 0 I\xff\xfe\n"))
    record = only(challenge, tmp_path)  # never raises
    assert isinstance(record, Record), record
    assert record.signals["ecg"].data.shape[1] == clean.shape[1]
    data, channels, _ = read_signals(fs, folder, parse_header(header.read_bytes().decode("latin-1")), "HR06000")
    assert channels[0] == "I\xff\xfe" and data.tobytes() == clean.tobytes()


def test_header_fields_split_only_at_c_whitespace_whatever_else_a_line_holds():
    """``parse_header`` splits fields at space, tab, VT and FF only (C's ``isspace``, as WFDB does),
    on its fast path (``str.split`` when nothing else that Python calls a space is in the line) and
    off it: a channel description keeps its NBSP, NEL or file-separator characters, and is the
    same as when those characters are not there."""
    from physiofm.corpora.wfdb_format import parse_header

    for odd in ("", "\xa0", "\x85", "\x1c", "\u2003"):
        text = (
            f"rec 2 500 10\nrec.dat 16 1000/mV 16 0 0 0 0 MLII{odd}lead  x\nrec.dat 16\t200(5)/uV 16 0 0 0 0 V5\f\v\n"
        )
        header = parse_header(text)
        assert [s.description for s in header.signals] == [f"MLII{odd}lead x", "V5"]
        assert [(s.gain, s.baseline, s.units) for s in header.signals] == [(1000.0, 0, "mV"), (200.0, 5, "uV")]
