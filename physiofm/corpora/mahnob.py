"""Reader for MAHNOB-HCI, emotion elicitation part (Soleymani et al., IEEE TAC 2012).

Layout (``shared/docs/datasets.md`` §3): ``Sessions/<id>/`` holds one BioSemi BDF
(``Part_<subject>_<N|S>_Trial<k>_emotion.bdf``) and ``session.xml`` whose root attributes carry
the self-assessment (``feltVlnc``, ``feltArsl``, ``feltCtrl``, ``feltPred``: 1-9; ``feltEmo``)
plus ``isStim``, ``mediaFile``, ``cutLenSec``, and a child ``<subject id="..."/>``.  ``root`` may
be the folder holding ``Sessions`` or ``Sessions`` itself.

The BDF is read with MNE; channel names and the sampling rate come from the file.  The
stimulus is the span between the first two Status-channel events (as TorchEEG does); the
recording before it (30 s in the real data) is the baseline record.  EEG = every channel
outside the known non-EEG set, in uV.  Sessions that are not rated stimuli (``isStim="0"`` or
no felt* ratings) are rejected from their ``session.xml`` alone.

ECG: bipolar leads derived from the referential EXG1-EXG3.  A BioSemi ActiveTwo records every
electrode against its common-mode sense electrode (CMS, driven by DRL), not against another
ECG electrode, so each EXG channel holds the electrode's cardiac potential *plus* a common
part shared by all channels (the cardiac potential at CMS, electrode offsets, drift and mains
pickup, easily tens of mV).  Stored as ECG they would be mostly that common part.  Their
differences cancel it; with the placement reported for MAHNOB (EXG1 upper right chest, EXG2
upper left chest, EXG3 left abdomen; ``shared/docs/datasets.md`` §3, **[reported]**, from a
third-party loader, not the dataset paper):

* ``EXG2-EXG1`` (left minus right upper chest) ~ lead I,
* ``EXG3-EXG1`` (left abdomen minus right upper chest) ~ lead II,
* ``EXG3-EXG2`` (left abdomen minus left upper chest) ~ lead III,

stored in mV (BDF physical values, uV in the header, converted by MNE to V, here to mV) under
those channel names, with the derivation in the ``ecg_derivation`` manifest column.  These
are torso leads (Mason-Likar-like), not limb leads: their axes and amplitudes only
approximate Einthoven's I/II/III, and if the placement report is wrong they are still valid
bipolar chest leads, just not these ones.  By construction ``EXG3-EXG1 = (EXG2-EXG1) +
(EXG3-EXG2)``: the three carry two independent signals.  ``docs/units.md`` has the evidence.

Every channel left out (EXG4-8, GSR, Erg, Resp, Temp, Status, Plet) is listed in
``Record.skipped`` with its type.
"""

from __future__ import annotations

import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mne
import numpy as np
from fsspec import AbstractFileSystem

from physiofm.corpora.base import Item, Record, Reject, Signal
from physiofm.io import is_local, join, url_to_fs

NAME = "mahnob"
ECG_CHANNELS = ("EXG1", "EXG2", "EXG3")  # the referential inputs of the bipolar leads
BIPOLAR = (  # (name, plus, minus, what it approximates): minus and plus index ECG_CHANNELS
    ("EXG2-EXG1", 1, 0, "~lead I: EXG2 (upper left chest) - EXG1 (upper right chest)"),
    ("EXG3-EXG1", 2, 0, "~lead II: EXG3 (left abdomen) - EXG1 (upper right chest)"),
    ("EXG3-EXG2", 2, 1, "~lead III: EXG3 (left abdomen) - EXG2 (upper left chest)"),
)
ECG_LEADS = tuple(name for name, *_ in BIPOLAR)
ECG_DERIVATION = [f"{name} {note}" for name, _, _, note in BIPOLAR]
_SKIPPED_TYPES = {"GSR1": "eda", "GSR2": "eda", "ERG1": "aux", "ERG2": "aux", "RESP": "resp", "TEMP": "temp",
                  "STATUS": "stim", "PLET": "ppg"}  # fmt: skip  # EXG4-8: "exg"
NON_EEG = frozenset(
    {*(f"EXG{i}" for i in range(1, 9)), "GSR1", "GSR2", "ERG1", "ERG2", "RESP", "TEMP", "STATUS", "PLET"}
)  # upper-cased names of the non-EEG channels (Plet in some files)
RATINGS = {"valence": "feltVlnc", "arousal": "feltArsl", "dominance": "feltCtrl", "predictability": "feltPred"}
SCORE_MIN, SCORE_MAX = 1, 9
_BYTES_PER_SECOND = 47 * 3 * 256  # for est_windows only: the real 47 channels x 24 bit x 256 Hz
_TRIAL = re.compile(r"Trial(\d+)")


@dataclass
class BdfRecording:
    """A BDF loaded by MNE and the events of its Status channel."""

    raw: mne.io.BaseRaw
    events: np.ndarray  # (n, 3) from mne.find_events on "Status"; (0, 3) without one

    @property
    def stimulus_span(self) -> tuple[int, int] | None:
        """[start, end) samples between the first two Status events, or None with fewer."""
        if len(self.events) < 2:
            return None
        return int(self.events[0, 0]), int(self.events[1, 0])


def load_bdf(path: str) -> BdfRecording:
    """Read a local BDF with MNE and find the trigger events of its ``Status`` channel."""
    raw = mne.io.read_raw_bdf(path, preload=True, verbose="error")
    status = [name for name in raw.ch_names if name.upper() == "STATUS"]
    if not status:
        return BdfRecording(raw, np.zeros((0, 3), dtype=np.int64))
    events = mne.find_events(raw, stim_channel=status[0], shortest_event=1, verbose="error")
    return BdfRecording(raw, events)


def _sessions(fs: AbstractFileSystem, base: str) -> tuple[str, str]:
    """(absolute sessions folder, its prefix relative to root): ``Sessions/`` or root itself."""
    sessions = join(base, "Sessions")
    return (sessions, "Sessions/") if fs.isdir(sessions) else (base.rstrip("/"), "")


@contextmanager
def _local_copy(fs: AbstractFileSystem, path: str) -> Iterator[str]:
    """A local path of ``path``: itself on a local filesystem, else a temporary copy."""
    if is_local(fs):
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, path.rsplit("/", 1)[-1])
        fs.get_file(path, local)
        yield local


def detect(root: str) -> bool:
    """A ``Sessions/<id>/session.xml`` (or ``<id>/session.xml`` inside ``Sessions``)."""
    fs, base = url_to_fs(root)
    folder, _ = _sessions(fs, base)
    return bool(fs.glob(join(folder, "*/session.xml")))


def list_items(root: str) -> list[Item]:
    """One item per session folder (``sess0002`` ...), in session-id order, from one listing."""
    fs, base = url_to_fs(root)
    folder, prefix = _sessions(fs, base)
    sizes: dict[str, int] = {}
    for path, info in fs.find(folder, maxdepth=2, detail=True).items():
        session, _, name = path[len(folder) + 1 :].partition("/")
        if session.isdigit() and (name == "session.xml" or name.lower().endswith(".bdf")):
            sizes[session] = max(sizes.get(session, 0), int(info.get("size") or 0))
    items = []
    for s, size in sorted(sizes.items(), key=lambda kv: int(kv[0])):
        windows = max(1, round(size / _BYTES_PER_SECOND / 10))
        items.append(Item(id=f"sess{int(s):04d}", path=f"{prefix}{s}", est_windows=windows, extra=(int(s),)))
    return items


def _meta(attrs: dict[str, str], trial: int | None, session: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"trial": trial, "session": session}
    meta |= {key: int(float(attrs[name])) for key, name in RATINGS.items()}
    emotion, cut = attrs.get("feltEmo"), attrs.get("cutLenSec")
    meta |= {"emotion": int(emotion) if emotion and emotion.isdigit() else emotion,
             "score_min": SCORE_MIN, "score_max": SCORE_MAX, "media_file": attrs.get("mediaFile"),
             "cut_len_sec": float(cut) if cut else None}  # fmt: skip
    return meta


def _unrated(attrs: dict[str, str]) -> str | None:
    """Why a session's ``session.xml`` rules it out (not a rated stimulus), else None."""
    if attrs.get("isStim") == "0":
        return "non-stimulus session (isStim=0)"
    missing = [name for name in RATINGS.values() if not attrs.get(name)]
    return f"session.xml has no felt* ratings ({', '.join(missing)} missing)" if missing else None


def bipolar(exg: np.ndarray) -> np.ndarray:
    """The ``BIPOLAR`` leads (3, T) from referential EXG1-EXG3 (3, T), in the same unit."""
    return np.stack([exg[plus] - exg[minus] for _, plus, minus, _ in BIPOLAR])


def _skipped(names: list[str], used: set[int]) -> list[str]:
    """``"GSR1 (eda)"`` for every channel not in ``used`` (indices), in file order."""
    out = []
    for i, name in enumerate(names):
        if i not in used:
            key = name.upper()
            out.append(f"{name} ({'exg' if key.startswith('EXG') else _SKIPPED_TYPES.get(key, 'misc')})")
    return out


def _unusable(bdf: BdfRecording, eeg: list[int]) -> str | None:
    """Why a BDF gives no paired record (no ECG, no EEG, no stimulus span), else None."""
    names = [name.upper() for name in bdf.raw.ch_names]
    if not all(name in names for name in ECG_CHANNELS):
        return "no ECG channels (EXG1-3) in BDF"
    if not eeg:
        return "no EEG channels in BDF"
    if len(bdf.events) == 0:
        return "no stimulus triggers in Status channel"
    if bdf.stimulus_span is None:
        return "only one trigger in Status channel; need stimulus start and end"
    return None


def _read_session(fs: AbstractFileSystem, base: str, item: Item, baseline: bool) -> Iterator[Record | Reject]:
    folder = join(base, item.path)
    source = f"{item.path}/session.xml"

    def reject(reason: str) -> Reject:
        return Reject(NAME, source, "read", reason, record_id=item.id)

    try:
        session = ET.fromstring(fs.cat_file(join(folder, "session.xml")))
    except FileNotFoundError:
        yield reject("no session.xml in session folder")
        return
    except ET.ParseError as exc:
        yield reject(f"unreadable session.xml ({exc})")
        return
    if reason := _unrated(session.attrib):
        yield reject(reason)
        return
    bdfs = sorted(fs.glob(join(folder, "*.bdf")))
    if not bdfs:
        yield reject("no BDF file in session folder")
        return
    source = f"{item.path}/{bdfs[0].rsplit('/', 1)[-1]}"
    try:
        with _local_copy(fs, bdfs[0]) as local:
            bdf = load_bdf(local)
    except (OSError, ValueError, RuntimeError) as exc:
        yield reject(f"unreadable BDF ({type(exc).__name__}: {exc})")
        return
    raw = bdf.raw
    types = raw.get_channel_types()
    eeg = [i for i, name in enumerate(raw.ch_names) if name.upper() not in NON_EEG and types[i] != "stim"]
    if reason := _unusable(bdf, eeg):
        yield reject(reason)
        return
    ecg = [[name.upper() for name in raw.ch_names].index(name) for name in ECG_CHANNELS]
    trial = _TRIAL.search(source.rsplit("/", 1)[-1])
    try:
        meta = _meta(session.attrib, int(trial.group(1)) if trial else None, item.extra[0] if item.extra else -1)
    except ValueError as exc:
        yield reject(f"invalid rating in session.xml ({exc})")
        return
    subject = session.find("subject")
    subject_id = subject.get("id") if subject is not None else None
    if subject_id and subject_id.isdigit():
        subject_id = f"{int(subject_id):02d}"
    fs_hz = float(raw.info["sfreq"])
    span = bdf.stimulus_span
    assert span is not None  # checked by _unusable
    start, stop = span
    segments = {"stimulus": (start, stop)}
    if baseline and start >= fs_hz:  # at least 1 s before the stimulus
        segments["baseline"] = (0, start)
    skipped = _skipped(raw.ch_names, set(eeg + ecg))
    meta["ecg_derivation"] = list(ECG_DERIVATION)
    for segment, (a, b) in segments.items():
        data = raw.get_data(picks=eeg + ecg, start=a, stop=b)
        signals = {
            "eeg": Signal((data[: len(eeg)] * 1e6).astype(np.float32), fs_hz, [raw.ch_names[i] for i in eeg],
                          unit="uV"),
            "ecg": Signal((bipolar(data[len(eeg) :]) * 1e3).astype(np.float32), fs_hz, list(ECG_LEADS), unit="mV"),
        }  # fmt: skip
        record_id = item.id if segment == "stimulus" else f"{item.id}_baseline"
        yield Record(NAME, record_id, source, signals, subject_id=subject_id, meta=meta | {"segment": segment},
                     skipped=list(skipped))  # fmt: skip


def read(root: str, items: list[Item], *, baseline: bool = True) -> Iterator[Record | Reject]:
    """Stimulus (and pre-stimulus baseline) records per rated session; rejects for the rest."""
    fs, base = url_to_fs(root)
    for item in items:
        yield from _read_session(fs, base, item, baseline)
