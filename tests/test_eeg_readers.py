"""EEG readers: our EDF/BDF parser against pyedflib and MNE on real files, span reads, TUH paths and labels, BIDS."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import fsspec
import mne
import numpy as np
import pyedflib
import pytest

from physiofm.corpora import bids, edf, tuh
from physiofm.corpora.base import Record, Reject
from physiofm.synth import eeg as synth

LOCAL = fsspec.filesystem("file")


@pytest.fixture(scope="module")
def real(shared_data, tmp_path_factory) -> dict[str, Path]:
    """The real EDF+ and BDF files, copied out of shared/data."""
    out = tmp_path_factory.mktemp("real")
    edf_file = out / "eegmmidb" / "S001" / "S001R04.edf"
    edf_file.parent.mkdir(parents=True)
    shutil.copy(shared_data / "eegmmidb" / "S001" / "S001R04.edf", edf_file)
    bdf_file = out / "bdf" / "test_bdf_stim_channel.bdf"
    bdf_file.parent.mkdir(parents=True)
    shutil.copy(shared_data / "mne-python-test-data" / "test_bdf_stim_channel.bdf", bdf_file)
    return {"edf": edf_file, "bdf": bdf_file}


def pyedflib_signals(path: Path, names: list[str]) -> np.ndarray:
    with pyedflib.EdfReader(str(path)) as reader:
        labels = reader.getSignalLabels()
        return np.stack([reader.readSignal(labels.index(name)) for name in names])


# ---- the EDF/BDF format ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["edf", "bdf"])
def test_real_files_decode_as_pyedflib_and_mne_read_them(real, kind):
    opened = edf.open_recording(LOCAL, str(real[kind]))
    names = opened.signal.channels
    ours = np.asarray(opened.signal.data, dtype=np.float64)
    np.testing.assert_allclose(ours, pyedflib_signals(real[kind], names), rtol=0, atol=1e-9)
    read = mne.io.read_raw_bdf if kind == "bdf" else mne.io.read_raw_edf
    raw = read(real[kind], preload=True, verbose="error")
    np.testing.assert_allclose(ours, raw.get_data(picks=names) * 1e6, rtol=1e-6, atol=1e-6)
    if kind == "edf":
        assert opened.header.format == "EDF+C" and opened.signal.fs == 160 and len(names) == 64
        assert opened.skipped == ["EDF Annotations (annotation)"]
        assert opened.header.start == "2009-08-12T16:15:00"
    else:
        assert opened.header.format == "BDF" and opened.signal.fs == 500 and names == ["C3", "C4", "Cz"]
        assert opened.skipped == ["Status (status)"]


def test_edf_plus_annotations_are_those_pyedflib_reads(real):
    opened = edf.open_recording(LOCAL, str(real["edf"]))
    with pyedflib.EdfReader(str(real["edf"])) as reader:
        onsets, durations, texts = reader.readAnnotations()
    assert len(opened.events) == 30
    assert [(round(o, 6), round(d, 6), t) for o, d, t in opened.events] == sorted(
        (round(float(o), 6), round(float(d), 6), str(t)) for o, d, t in zip(onsets, durations, texts)
    )


def test_spans_decode_only_the_data_records_that_hold_them(real, monkeypatch):
    opened = edf.open_recording(LOCAL, str(real["edf"]))
    array = opened.signal.data
    whole = np.asarray(array, dtype=np.float64)
    requests: list[tuple[int, int]] = []
    cat_file = LOCAL.cat_file

    def spy(path, start=None, end=None, **kw):
        requests.append((start, end))
        return cat_file(path, start=start, end=end, **kw)

    monkeypatch.setattr(array.fs, "cat_file", spy)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = int(rng.integers(0, whole.shape[1] - 1))
        b = int(rng.integers(a + 1, min(whole.shape[1], a + 2000) + 1))
        rows = sorted(rng.choice(64, size=5, replace=False).tolist())
        np.testing.assert_allclose(array.read(rows, a, b), whole[rows, a:b], atol=1e-9)
        start, end = requests[-1]
        records = -(-b // 160) - a // 160
        assert end - start == records * opened.header.record_bytes  # whole records of the span, nothing more
    np.testing.assert_allclose(array[3, 10:20], whole[3, 10:20], atol=1e-4)
    assert array[:, 5].shape == (64,) and array[[1, 2], ::2].shape == (2, 10_000)


def test_memory_filesystem_reads_the_same_values(real):
    memory = fsspec.filesystem("memory")
    path = f"/eeg-{uuid.uuid4().hex[:8]}/S001R04.edf"
    memory.pipe(path, real["edf"].read_bytes())
    there = edf.open_recording(memory, path)
    here = edf.open_recording(LOCAL, str(real["edf"]))
    np.testing.assert_array_equal(np.asarray(there.signal.data), np.asarray(here.signal.data))
    assert there.events == here.events


def test_broken_headers_and_files_say_why(real, tmp_path):
    data = real["edf"].read_bytes()
    cases = {
        "truncated": (data[: len(data) // 3], "truncated file: the header declares 125 data records"),
        "garbage": (b"\x00garbage" * 64, "not an EDF/BDF file"),
        "tiny": (b"0       ", "shorter than the 256-byte header"),
        "discontinuous": (data[:192] + b"EDF+D".ljust(44) + data[236:], "EDF+D (discontinuous"),
    }
    for name, (payload, reason) in cases.items():
        path = tmp_path / f"{name}.edf"
        path.write_bytes(payload)
        with pytest.raises(edf.EdfError, match=reason.replace("(", r"\(").replace("+", r"\+")):
            edf.open_recording(LOCAL, str(path))
    # n_records = -1 (a recorder that did not finish the header): counted from the file's size
    path = tmp_path / "unknown.edf"
    path.write_bytes(data[:236] + b"-1".ljust(8) + data[244:])
    assert edf.open_recording(LOCAL, str(path)).header.n_records == 125


def test_non_voltage_and_other_rate_channels_are_left_out_with_reasons(tmp_path):
    start = synth.datetime(2020, 1, 1)
    channels = [synth.Channel("Fp1", 256), synth.Channel("Fp2", 256, dimension="Ohm"), synth.Channel("Cz", 128),
                synth.Channel("O1", 256), synth.Channel("ECG", 256, dimension="mV")]  # fmt: skip
    data = [np.zeros(2560), np.zeros(2560), np.zeros(1280), np.ones(2560), np.zeros(2560)]
    path = synth.write_edf(tmp_path / "mixed.edf", channels, data, start=start)
    opened = edf.open_recording(LOCAL, str(path))
    assert opened.signal.channels == ["Fp1", "O1"] and opened.signal.fs == 256
    assert opened.masked == [("Fp2", "physical dimension 'Ohm' is not a voltage")]
    assert set(opened.skipped) == {"ECG (ecg)", "Cz (eeg: 128 Hz, not the recording's 256 Hz)"}
    record = edf.to_record("edf", edf.part_items("mixed", "mixed.edf", path.stat().st_size)[0], opened, None, {})
    assert [(r.stage, r.reason) for r in record.issues] == [
        ("lead", "channel Fp2 left out: physical dimension 'Ohm' is not a voltage")
    ]


@pytest.mark.parametrize("bdf", [False, True])
def test_our_writer_is_read_back_by_pyedflib_and_mne(tmp_path, bdf):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 30, (3, 2500))
    physical = (-262144.0, 262143.0) if bdf else (-3276.8, 3276.7)
    channels = [synth.Channel(name, 250, "uV", physical) for name in ("Fp1", "Cz", "O2")]
    events = [(1.0, 0.5, "blink"), (7.25, 0.0, "T1")]
    path = synth.write_edf(tmp_path / f"w.{'bdf' if bdf else 'edf'}", channels, list(x),
                           start=synth.datetime(2021, 3, 4, 5, 6, 7), bdf=bdf, plus=True, annotations=events)  # fmt: skip
    resolution = (physical[1] - physical[0]) / (2 ** (24 if bdf else 16) - 1)
    np.testing.assert_allclose(pyedflib_signals(path, ["Fp1", "Cz", "O2"]), x, atol=resolution)
    ours = edf.open_recording(LOCAL, str(path))
    np.testing.assert_allclose(np.asarray(ours.signal.data, dtype=np.float64), x, atol=resolution)
    assert ours.events == events and ours.header.format == ("BDF+C" if bdf else "EDF+C")
    raw = (mne.io.read_raw_bdf if bdf else mne.io.read_raw_edf)(path, preload=True, verbose="error")
    np.testing.assert_allclose(raw.get_data(picks=["Fp1", "Cz", "O2"]) * 1e6, x, atol=resolution * 1.01)
    assert [a["description"] for a in raw.annotations] == ["blink", "T1"]


def test_a_long_file_is_listed_in_parts(tmp_path, monkeypatch):
    root = synth.synth_tuh_eeg(tmp_path / "tuh", n_records=1, seed=0, layout="tueg", minutes=(6.0, 6.0))
    size = next(root.rglob("*.edf")).stat().st_size
    monkeypatch.setattr(edf, "PART_BYTES", size // 3 + 1)
    items = tuh.list_items(str(root))
    assert [i.id.rsplit("/", 1)[-1] for i in items] == [
        "aaaaaaaa_s001_t000", "aaaaaaaa_s001_t000_part1", "aaaaaaaa_s001_t000_part2",
    ]  # fmt: skip
    records = list(tuh.read(str(root), items))
    assert {r.meta["_recording"] for r in records} == {items[0].id}
    assert [r.meta["_part"] for r in records] == [[0, 3], [1, 3], [2, 3]]


# ---- TUH ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "subject", "meta", "montage"),
    [
        ("edf/000/aaaaaaaa/s001_2015_12_30/01_tcp_ar/aaaaaaaa_s001_t000.edf", "aaaaaaaa",
         {"session": "s001", "token": "t000", "session_date": "2015-12-30"}, "01_tcp_ar"),
        ("edf/02_tcp_le/000/00000077/s003_2010_01_21/00000077_s003_t000.edf", "00000077",  # TUEG v1
         {"session": "s003", "token": "t000", "session_date": "2010-01-21"}, "02_tcp_le"),
        ("edf/eval/abnormal/01_tcp_ar/aaaaaaav_s004_t000.edf", "aaaaaaav",
         {"session": "s004", "token": "t000", "split": "eval", "label": "abnormal", "abnormal": True}, "01_tcp_ar"),
        ("edf/train/aaaaaaar/aaaaaaar_00000001.edf", "aaaaaaar", {"split": "train"}, None),  # TUEV
    ],
)  # fmt: skip
def test_tuh_ids_and_labels_come_from_the_path(path, subject, meta, montage):
    assert tuh.path_meta(path) == (subject, meta, montage)


def test_tuev_rec_and_lab_files_become_events():
    rec = "16,0.0000,1.0000,6\n3,10.5,11.5,1\n3,10.5,11.5,1\nbad line\n"
    assert tuh.parse_rec(rec) == [(0.0, 1.0, "bckg"), (10.5, 1.0, "spsw"), (10.5, 1.0, "spsw")]
    assert tuh.parse_lab("0 10000000 bckg\n10000000 25000000 eyem\n") == [(0.0, 1.0, "bckg"), (1.0, 1.5, "eyem")]


@pytest.mark.parametrize("layout", ["tuab", "tueg", "tuev"])
def test_generated_tuh_layouts_read_with_their_labels(tmp_path, layout):
    root = synth.synth_tuh_eeg(tmp_path / layout, n_records=4, seed=2, layout=layout, minutes=(5.5, 5.6))
    assert tuh.detect(str(root)) and not bids.detect(str(root))
    records = list(tuh.read(str(root), tuh.list_items(str(root))))
    assert all(isinstance(r, Record) for r in records) and len(records) == 4
    for record in records:
        signal = record.signals["eeg"]
        assert record.subject_id and record.meta["sex"] in "MF" and 18 <= record.meta["age"] < 90
        assert signal.fs in (250, 256, 400) and signal.unit == "uV"
        assert "IBI (derived)" in record.skipped and any("(ecg)" in s for s in record.skipped)
        montage = record.meta["_montage"]
        if layout == "tuab":
            assert record.meta["label"] in ("normal", "abnormal") and record.meta["split"] in ("train", "eval")
        if layout == "tuev":
            assert montage is None and record.meta["_events"] and record.meta["split"] in ("train", "eval")
            assert {e[2] for e in record.meta["_events"]} <= set(tuh.EVENT_CODES.values())
        else:
            assert "_events" not in record.meta
            suffix = "-LE" if montage == "02_tcp_le" else "-REF"
            assert all(name.endswith(suffix) for name in signal.channels)
            assert record.meta["_reference"] == tuh.REFERENCE[montage]
    if layout == "tueg":
        assert {r.meta["_montage"] for r in records} == {"01_tcp_ar", "02_tcp_le", "03_tcp_ar_a"}
    if layout == "tuab":  # subjects never on both sides of the split, one label per subject
        splits, labels = {}, {}
        for r in records:
            assert splits.setdefault(r.subject_id, r.meta["split"]) == r.meta["split"]
            assert labels.setdefault(r.subject_id, r.meta["label"]) == r.meta["label"]


# ---- BIDS ------------------------------------------------------------------------------------


def test_bids_sidecars_give_ids_labels_bad_channels_and_events(tmp_path):
    root = synth.synth_bids_eeg(tmp_path / "bids", subjects=3, seed=1, sessions=2, runs=2, minutes=(1.0, 1.2))
    assert bids.detect(str(root)) and not tuh.detect(str(root))
    items = bids.list_items(str(root))
    assert len(items) == 12 and items[0].id == "sub-01_ses-01_task-rest_run-1"
    records = list(bids.read(str(root), items))
    assert all(isinstance(r, Record) for r in records)
    by_id = {r.record_id: r for r in records}
    first = by_id["sub-01_ses-01_task-rest_run-2"]
    assert first.subject_id == "sub-01" and first.source.endswith("_eeg.edf")
    assert (first.meta["session"], first.meta["task"], first.meta["run"]) == ("01", "rest", "2")
    assert first.meta["group"] == "patient" and isinstance(first.meta["age"], int) and first.meta["sex"] == "F"
    assert by_id["sub-02_ses-01_task-rest_run-1"].meta["age"] is None  # n/a in participants.tsv
    assert first.meta["power_line_hz"] == 50.0 and first.meta["_reference"] == "average"
    assert "T8" not in first.signals["eeg"].channels  # status = bad
    assert [i.reason for i in first.issues] == ["channel T8 left out: marked bad in channels.tsv"]
    assert "VEOG (eog)" in first.skipped  # typed EOG in channels.tsv
    labels = {e[2] for e in first.meta["_events"]}
    assert labels == {"eyes_open", "eyes_closed"}
    assert by_id["sub-02_ses-01_task-rest_run-1"].source.endswith(".bdf")


def test_bids_brainvision_is_read_through_mne_locally_and_rejected_remotely(tmp_path):
    root = synth.synth_bids_eeg(tmp_path / "bids", subjects=1, seed=2, runs=1, minutes=(1.0, 1.0), formats=("vhdr",))
    items = bids.list_items(str(root))
    assert [i.path for i in items] == ["sub-01/eeg/sub-01_task-rest_run-1_eeg.vhdr"]
    (record,) = bids.read(str(root), items)
    signal = record.signals["eeg"]
    assert len(signal.channels) == 19 and signal.fs == 256 and "VEOG (eog)" in record.skipped
    x = np.asarray(signal.data, dtype=np.float64)
    assert 1 < np.percentile(np.abs(x), 99) < 500  # µV
    np.testing.assert_allclose(signal.data.read([0, 3], 100, 400), x[[0, 3], 100:400])
    memory = fsspec.filesystem("memory")
    base = f"/bids-{uuid.uuid4().hex[:8]}"
    for path in root.rglob("*"):
        if path.is_file():
            memory.pipe(f"{base}/{path.relative_to(root).as_posix()}", path.read_bytes())
    (remote,) = bids.read(f"memory://{base}", bids.list_items(f"memory://{base}"))
    assert isinstance(remote, Reject) and "local folders only" in remote.reason
