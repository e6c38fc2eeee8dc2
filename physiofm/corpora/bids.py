"""BIDS EEG datasets: ``sub-<label>/[ses-<label>/]eeg/sub-<label>[_ses-<label>]_task-<label>[...]_eeg.<ext>``.

Data files: European Data Format (``.edf``) and BioSemi (``.bdf``) are read through fsspec by our
own EDF reader (:mod:`physiofm.corpora.edf`: only the channels and spans kept), from local folders
and ``s3://`` alike.  BrainVision (``.vhdr`` + ``.vmrk`` + ``.eeg``) and EEGLAB (``.set`` [+ ``.fdt``])
are optional in BIDS and read here through MNE without preloading (spans are read on demand), from
local folders only; a remote one is a reject that says so.  BrainVision is tested here, EEGLAB is
not (no writer of it is installed).

Sidecars beside each data file (BIDS inheritance from higher folders is not followed):

* ``participants.tsv`` (root): one row per ``participant_id``; its other columns (``age``, ``sex``,
  ``handedness``, ...) become manifest columns, ``n/a`` as null, numbers as numbers;
* ``*_channels.tsv``: ``type`` (only ``EEG`` channels are kept; the others are listed as skipped
  with their type) and ``status`` (``bad`` channels are left out with a ``lead`` reject, so the
  channel contract masks them and counts them as missing);
* ``*_events.tsv``: ``onset``, ``duration`` and ``trial_type`` (else ``value``) become the record's
  events: ``event_labels`` per recording and ``events`` (labels overlapping the window) per window;
* ``*_eeg.json``: ``PowerLineFrequency`` (``power_line_hz``: the ``bids-eeg`` recipe notches at it),
  ``EEGReference`` (``eeg_reference``), ``TaskName``.

Ids: ``subject_id`` is the ``participant_id`` (``sub-01``); ``session``, ``task``, ``acquisition``
and ``run`` come from the file name's entities.  The record id is the file name without ``_eeg``
and extension (unique in a BIDS dataset).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
from fsspec import AbstractFileSystem

from physiofm.corpora import edf
from physiofm.corpora.base import Item, Record, Reject, Signal
from physiofm.io import is_local, join, url_to_fs

NAME = "bids-eeg"
DATA = (".edf", ".bdf", ".vhdr", ".set")
MNE_FORMATS = (".vhdr", ".set")
ENTITIES = {"ses": "session", "task": "task", "acq": "acquisition", "run": "run"}
_PATH = re.compile(r"^(sub-[A-Za-z0-9]+)/(?:(ses-[A-Za-z0-9]+)/)?eeg/([^/]+)_eeg\.([A-Za-z]+)$")


def _data_files(fs: AbstractFileSystem, base: str) -> dict[str, int]:
    """``relative path -> size`` of every BIDS EEG data file below ``base``."""
    out = {}
    for path, info in fs.find(base, detail=True).items():
        rel = path[len(base.rstrip("/")) + 1 :]
        match = _PATH.match(rel)
        if match and f".{match.group(4).lower()}" in DATA:
            out[rel] = int(info.get("size") or 0)
    return dict(sorted(out.items()))


def detect(root: str) -> bool:
    fs, base = url_to_fs(root)
    if fs.isfile(base):
        return False
    return bool(_data_files(fs, base))


def list_items(root: str) -> list[Item]:
    fs, base = url_to_fs(root)
    items: list[Item] = []
    for path, size in _data_files(fs, base).items():
        stem = _PATH.match(path).group(3)  # type: ignore[union-attr]
        items.extend(edf.part_items(stem, path, size))
    return items


def _value(text: str) -> Any:
    return None if text.strip() in ("", "n/a", "N/A", "NaN", "nan") else text.strip()


def read_tsv(fs: AbstractFileSystem, path: str) -> list[dict[str, Any]]:
    """Rows of a BIDS TSV (``n/a`` as None); [] when the file is absent."""
    try:
        text = fs.cat_file(path).decode("utf-8-sig", "replace")
    except FileNotFoundError:
        return []
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    return [{key.strip(): _value(value or "") for key, value in row.items() if key} for row in reader]


def _typed(rows: list[dict[str, Any]], column: str) -> list[Any]:
    """A participants.tsv column with one type: int, float, or (when any value is not a number) str."""
    values = [row.get(column) for row in rows]
    present = [v for v in values if v is not None]
    try:
        numbers = [float(v) for v in present]
    except ValueError:
        return values
    if all(n.is_integer() for n in numbers):
        return [None if v is None else int(float(v)) for v in values]
    return [None if v is None else float(v) for v in values]


def participants(fs: AbstractFileSystem, base: str) -> dict[str, dict[str, Any]]:
    """``participant_id -> {column: value}`` from ``participants.tsv``."""
    rows = read_tsv(fs, join(base, "participants.tsv"))
    if not rows or "participant_id" not in rows[0]:
        return {}
    columns = [c for c in rows[0] if c != "participant_id"]
    typed = {c: _typed(rows, c) for c in columns}
    return {str(row["participant_id"]): {c: typed[c][i] for c in columns} for i, row in enumerate(rows)}


def _events(rows: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    events = []
    for row in rows:
        try:
            onset = float(row.get("onset"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        try:
            duration = float(row.get("duration") or 0)
        except ValueError:
            duration = 0.0
        label = row.get("trial_type") or row.get("value") or "event"
        events.append((onset, duration, str(label)))
    return sorted(set(events))


class MneArray(edf.LazyArray):
    """A BrainVision or EEGLAB recording opened by MNE without preloading; spans in µV on demand."""

    def __init__(self, raw, picks: list[int]) -> None:
        self.raw, self.picks = raw, list(picks)
        self.shape = (len(picks), int(raw.n_times))

    def read(self, rows, start: int, stop: int, dtype=np.float64) -> np.ndarray:
        start, stop = max(0, int(start)), min(self.shape[1], int(stop))
        picks = [self.picks[int(r)] for r in rows]
        if stop <= start or not picks:
            return np.zeros((len(picks), max(0, stop - start)), dtype=dtype)
        return (self.raw.get_data(picks=picks, start=start, stop=stop) * 1e6).astype(dtype, copy=False)


def _open_mne(fs: AbstractFileSystem, path: str, bad: frozenset[str], types: dict[str, str]) -> edf.Opened:
    """A BrainVision/EEGLAB file as :class:`physiofm.corpora.edf.Opened` (local files only)."""
    import mne

    if not is_local(fs):
        raise edf.EdfError(f"{path.rsplit('.', 1)[-1]} files are read from local folders only (through MNE)")
    try:
        if path.lower().endswith(".vhdr"):
            raw = mne.io.read_raw_brainvision(path, preload=False, verbose="error")
        else:
            raw = mne.io.read_raw_eeglab(path, preload=False, verbose="error")
    except FileNotFoundError as error:
        raise edf.EdfError(f"missing file of the recording ({error})") from None
    except Exception as error:  # noqa: BLE001 - MNE raises many types for a broken file
        raise edf.EdfError(f"unreadable by MNE ({type(error).__name__}: {error})") from None
    mne_types = raw.get_channel_types()
    keep, skipped, masked = [], [], []
    for i, name in enumerate(raw.ch_names):
        kind = types[name].lower() if name in types else ("eeg" if mne_types[i] == "eeg" else mne_types[i])
        if kind != "eeg":
            skipped.append(f"{name} ({kind})")
        elif name in bad:
            masked.append((name, "marked bad in channels.tsv"))
        else:
            keep.append(i)
    if not keep:
        raise edf.EdfError(f"no EEG channel among {', '.join(raw.ch_names)}")
    signal = Signal(MneArray(raw, keep), float(raw.info["sfreq"]), [raw.ch_names[i] for i in keep], unit="uV")  # type: ignore[arg-type]
    header = edf.EdfHeader(path.rsplit(".", 1)[-1].upper(), "", "", None, 0, 1, raw.n_times / raw.info["sfreq"], (), 2)
    return edf.Opened(header, signal, skipped, masked, None)


def read(root: str, items: list[Item]) -> Iterator[Record | Reject]:
    fs, base = url_to_fs(root)
    people: dict[str, dict[str, Any]] | None = None
    for item in items:
        match = _PATH.match(item.path)
        if match is None:
            yield edf.reject(NAME, item, "not a BIDS EEG data file name")
            continue
        if people is None:
            people = participants(fs, base)
        subject, folder, stem = match.group(1), item.path.rsplit("/", 1)[0], match.group(3)
        sidecar = join(base, folder, stem)
        channels = read_tsv(fs, f"{sidecar}_channels.tsv")
        bad = frozenset(str(r["name"]) for r in channels if r.get("name") and (r.get("status") or "").lower() == "bad")
        types = {str(r["name"]): str(r["type"]) for r in channels if r.get("name") and r.get("type")}
        try:
            described = json.loads(fs.cat_file(f"{sidecar}_eeg.json"))
        except FileNotFoundError:
            described = {}
        except (ValueError, UnicodeDecodeError) as error:
            yield edf.reject(NAME, item, f"unreadable {stem}_eeg.json ({error})")
            continue
        path = join(base, item.path)
        try:
            if item.path.lower().endswith(MNE_FORMATS):
                opened = _open_mne(fs, path, bad, types)
            else:
                opened = edf.open_recording(fs, path, events=False, bad=bad, types=types)
        except (edf.EdfError, OSError) as error:
            yield edf.reject(NAME, item, str(error))
            continue
        events_rows = read_tsv(fs, f"{sidecar}_events.tsv")
        opened.events = _events(events_rows) if events_rows else None
        meta: dict[str, Any] = {}
        for entity in stem.split("_")[1:]:
            key, _, value = entity.partition("-")
            if key in ENTITIES and value:
                meta[ENTITIES[key]] = value
        line = described.get("PowerLineFrequency")
        meta["power_line_hz"] = float(line) if isinstance(line, int | float) else None
        meta["recording_seconds"] = round(opened.signal.data.shape[1] / opened.signal.fs, 6)
        meta.update(people.get(subject, {}))
        reference = described.get("EEGReference")
        yield edf.to_record(NAME, item, opened, subject, meta, None, str(reference) if reference else None)
