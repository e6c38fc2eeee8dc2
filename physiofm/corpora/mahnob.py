"""Reader for MAHNOB-HCI, emotion elicitation part (Soleymani et al., IEEE TAC 2012).

Layout (``shared/docs/datasets.md`` §3): ``Sessions/<id>/`` holds one BioSemi BDF
(``Part_<subject>_<N|S>_Trial<k>_emotion.bdf``) and ``session.xml`` whose root attributes carry
the self-assessment (``feltVlnc``, ``feltArsl``, ``feltCtrl``, ``feltPred``: 1-9; ``feltEmo``)
plus ``isStim``, ``mediaFile``, ``cutLenSec``, and a child ``<subject id="..."/>``.  ``root`` may
be the folder holding ``Sessions`` or ``Sessions`` itself.

The BDF is read with MNE; channel names and the sampling rate come from the file.  The
stimulus is the span between the first two Status-channel events (as TorchEEG does); the
recording before it (30 s in the real data) is the baseline record.  ECG = EXG1, EXG2, EXG3
(BioSemi active electrodes on the chest, as recorded: no lead derivation), converted to mV;
EEG = every channel outside the known non-EEG set, in uV.  Sessions that are not rated
stimuli (``isStim="0"`` or no felt* ratings) are rejected from their ``session.xml`` alone.
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
ECG_CHANNELS = ("EXG1", "EXG2", "EXG3")
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
    for segment, (a, b) in segments.items():
        data = raw.get_data(picks=eeg + ecg, start=a, stop=b)
        signals = {
            "eeg": Signal((data[: len(eeg)] * 1e6).astype(np.float32), fs_hz, [raw.ch_names[i] for i in eeg],
                          unit="uV"),
            "ecg": Signal((data[len(eeg) :] * 1e3).astype(np.float32), fs_hz, list(ECG_CHANNELS), unit="mV"),
        }  # fmt: skip
        record_id = item.id if segment == "stimulus" else f"{item.id}_baseline"
        yield Record(NAME, record_id, source, signals, subject_id=subject_id, meta=meta | {"segment": segment})


def read(root: str, items: list[Item], *, baseline: bool = True) -> Iterator[Record | Reject]:
    """Stimulus (and pre-stimulus baseline) records per rated session; rejects for the rest."""
    fs, base = url_to_fs(root)
    for item in items:
        yield from _read_session(fs, base, item, baseline)
