"""Any folder of EDF, EDF+, BDF or BDF+ files; and the EDF/BDF format itself, read without holding recordings.

Every ``*.edf`` / ``*.bdf`` below the folder (any case) is a recording.  Our own header parser
(European Data Format, Kemp et al. 1992; EDF+, Kemp & Olivan 2003; BioSemi's 24-bit BDF) reads the
first ``256 * (signals + 1)`` bytes through fsspec, so ``memory://`` and ``s3://`` sources work as
local ones do (pyedflib and MNE need a local path).  The signal stays on disk: a record's EEG is an
:class:`EdfArray`, which decodes only the channels and the span asked for, from the byte ranges of
the data records that hold them, vectorised (int16 for EDF, 24-bit little-endian for BDF), and
converts them to µV from each channel's physical range and dimension.  The preparer
(:mod:`physiofm.preprocess.eeg`) asks for the recipe's channels and its kept spans only, a few
minutes at a time, so a worker's memory does not grow with the recording.

A long file is listed as several items (*parts*, one per :data:`PART_BYTES` of file, from its
size alone): the first has the recording's id, the others ``<id>_part<k>``.  Each part's record is
the whole recording (lazily); the preparer writes only the part's share of the windows and only
the first part reports recording-wide rejects, so a worker holds at most one part's windows.

Channels: classified by name (:mod:`physiofm.corpora.eeg_channels`); ECG, EOG, EMG, respiration,
photic, status, annotation and TUH's derived ``IBI``/``BURSTS``/``SUPPR`` are skipped and listed
(``Record.skipped``, the manifest's ``eeg_skipped``); so are channels at another rate than most
of the EEG channels.  An EEG channel whose physical dimension is not a voltage is left out with a
``lead`` reject (the recording goes on without it; the channel contract then counts it missing).

EDF+ annotations (``EDF Annotations`` TALs; EEGMMIDB's ``T0``/``T1``/``T2``) become the record's
events: the manifest's ``event_labels`` per file and ``events`` per window.  EDF+D (discontinuous)
files are rejected: their data records are not one time axis.  Subject: the EDF+ patient code when
the file has one (not ``X``), else the name of the folder holding the file (EEGMMIDB: ``S001``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from fsspec import AbstractFileSystem

from physiofm.corpora import eeg_channels
from physiofm.corpora.base import Item, Record, Reject, Signal
from physiofm.io import join, url_to_fs
from physiofm.units import MICROVOLTS

NAME = "edf"
EXTENSIONS = (".edf", ".bdf")
PART_BYTES = 8 * 2**20
"""A file is listed as one item per this many bytes (a worker holds one part's windows at a time)."""
BYTES_PER_SECOND = 33 * 250 * 2  # for est_windows only: a TUH recording (33 channels, 250 Hz, int16)
ESTIMATE_WINDOW_S = 30.0


class EdfError(ValueError):
    """A file that is not a readable EDF/BDF; the message says why."""


@dataclass(frozen=True)
class EdfChannel:
    label: str
    transducer: str
    dimension: str
    physical_min: float
    physical_max: float
    digital_min: int
    digital_max: int
    prefilter: str
    samples: int  # per data record
    offset: int  # byte offset of its samples within a data record

    @property
    def gain(self) -> float:
        return (self.physical_max - self.physical_min) / (self.digital_max - self.digital_min)

    @property
    def microvolts(self) -> float | None:
        """µV per physical unit, or None when the dimension is not a voltage."""
        unit = self.dimension.strip().replace("μ", "u").replace("µ", "u")
        return MICROVOLTS.get(unit.lower())


@dataclass(frozen=True)
class EdfHeader:
    format: str  # "EDF", "EDF+C", "EDF+D", "BDF", "BDF+C", "BDF+D"
    patient: str
    recording: str
    start: str | None  # ISO date-time from the header, or None when unreadable
    header_bytes: int
    n_records: int
    record_seconds: float
    channels: tuple[EdfChannel, ...]
    sample_bytes: int  # 2 (EDF) or 3 (BDF)

    @property
    def record_bytes(self) -> int:
        return sum(c.samples for c in self.channels) * self.sample_bytes

    @property
    def plus(self) -> bool:
        return "+" in self.format

    def fs(self, index: int) -> float:
        return self.channels[index].samples / self.record_seconds

    @property
    def seconds(self) -> float:
        return self.n_records * self.record_seconds

    def annotation_channels(self) -> list[int]:
        return [
            i for i, c in enumerate(self.channels) if c.label.strip().upper() in ("EDF ANNOTATIONS", "BDF ANNOTATIONS")
        ]


def _text(raw: bytes) -> str:
    return raw.decode("latin-1").strip()


def _number(raw: bytes, what: str) -> float:
    text = _text(raw).replace(",", ".")
    try:
        return float(text)
    except ValueError:
        raise EdfError(f"garbage header: {what} is {text!r}, not a number") from None


def _start(date: str, time: str) -> str | None:
    """``dd.mm.yy`` + ``hh.mm.ss`` as ISO (years 85-99 are 19xx, as the EDF specification says)."""
    try:
        day, month, year = (int(x) for x in date.split("."))
        hour, minute, second = (int(x) for x in time.replace(":", ".").split("."))
        year += 1900 if year >= 85 else 2000
        return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    except ValueError:
        return None


def _version(fixed: bytes) -> tuple[int, str]:
    """``(bytes per sample, "EDF"|"BDF")`` from the version field."""
    version = fixed[:8]
    if version == b"\xffBIOSEMI":
        return 3, "BDF"
    if version.strip() == b"0":
        return 2, "EDF"
    raise EdfError(f"not an EDF/BDF file: version field {version!r}")


def parse_header(fixed: bytes, signals: bytes, size: int | None = None) -> EdfHeader:
    """An :class:`EdfHeader` from the fixed 256 bytes and the ``256 * ns`` signal bytes that follow.

    ``size`` (the file's bytes) resolves ``n_records = -1`` and finds truncated files.
    """
    if len(fixed) < 256:
        raise EdfError(f"not an EDF/BDF file: {len(fixed)} bytes, shorter than the 256-byte header")
    sample_bytes, base = _version(fixed)
    reserved = _text(fixed[192:236]).upper()
    kind = base
    for plus in ("EDF+C", "EDF+D", "BDF+C", "BDF+D"):
        if reserved.startswith(plus):
            kind = f"{base}+{plus[-1]}"
    header_bytes = int(_number(fixed[184:192], "header size"))
    n_records = int(_number(fixed[236:244], "number of data records"))
    record_seconds = _number(fixed[244:252], "data record duration")
    ns = int(_number(fixed[252:256], "number of signals"))
    if ns <= 0 or ns > 4096:
        raise EdfError(f"garbage header: {ns} signals")
    if header_bytes != 256 * (ns + 1):
        raise EdfError(f"garbage header: header size {header_bytes} for {ns} signals (expected {256 * (ns + 1)})")
    if len(signals) < 256 * ns:
        raise EdfError(f"truncated header: {len(signals) + 256} of {header_bytes} bytes")
    if not record_seconds > 0:
        raise EdfError(f"data record duration is {record_seconds:g} s: no signal (an annotation-only file?)")

    def fields(start: int, width: int) -> list[bytes]:
        begin = start * ns
        return [signals[begin + i * width : begin + (i + 1) * width] for i in range(ns)]

    offsets = np.cumsum([0, 16, 80, 8, 8, 8, 8, 8, 80, 8])
    widths = (16, 80, 8, 8, 8, 8, 8, 80, 8)
    columns = [fields(int(o), w) for o, w in zip(offsets[:-1], widths)]
    channels, offset = [], 0
    for i in range(ns):
        label = _text(columns[0][i])
        samples = int(_number(columns[8][i], f"samples per record of {label!r}"))
        dmin, dmax = int(_number(columns[5][i], "digital minimum")), int(_number(columns[6][i], "digital maximum"))
        if samples <= 0:
            raise EdfError(f"garbage header: {samples} samples per record in channel {label!r}")
        if dmax <= dmin:
            raise EdfError(f"garbage header: digital range {dmin}..{dmax} of channel {label!r}")
        channels.append(EdfChannel(label, _text(columns[1][i]), _text(columns[2][i]),
                                   _number(columns[3][i], "physical minimum"), _number(columns[4][i], "physical maximum"),
                                   dmin, dmax, _text(columns[7][i]), samples, offset))  # fmt: skip
        offset += samples * sample_bytes
    header = EdfHeader(kind, _text(fixed[8:88]), _text(fixed[88:168]), _start(_text(fixed[168:176]),
                       _text(fixed[176:184])), header_bytes, n_records, record_seconds, tuple(channels),
                       sample_bytes)  # fmt: skip
    if size is not None:
        available = (size - header_bytes) // header.record_bytes
        if n_records == -1:
            header = replace(header, n_records=int(available))
        elif n_records < 0:
            raise EdfError(f"garbage header: {n_records} data records")
        elif available < n_records:
            raise EdfError(
                f"truncated file: the header declares {n_records} data records of {header.record_bytes} bytes, "
                f"the file holds {max(available, 0)} ({size} bytes)"
            )
    if header.n_records <= 0:
        raise EdfError("no data records")
    return header


def read_header(fs: AbstractFileSystem, path: str) -> tuple[EdfHeader, int]:
    """The header of ``path`` (two ranged reads) and the file's size."""
    size = int(fs.size(path))
    fixed = fs.cat_file(path, start=0, end=256)
    if len(fixed) < 256:
        raise EdfError(f"not an EDF/BDF file: {size} bytes, shorter than the 256-byte header")
    _version(fixed)
    try:
        ns = int(float(_text(fixed[252:256]) or "0"))
    except ValueError:
        raise EdfError(f"not an EDF/BDF file: number of signals is {_text(fixed[252:256])!r}") from None
    if ns <= 0 or ns > 4096:
        raise EdfError(f"not an EDF/BDF file: {ns} signals")
    signals = fs.cat_file(path, start=256, end=256 * (ns + 1))
    return parse_header(fixed, signals, size), size


def decode(block: bytes | np.ndarray, header: EdfHeader, channels: list[int], dtype=np.int32) -> np.ndarray:
    """Digital values (len(channels), records * samples) of whole data records in ``block``, as ``dtype``.

    The channels must share one samples-per-record count; int16 (EDF) or 24-bit (BDF), vectorised:
    one gather of the channels' columns, one conversion while transposing to channel-major.
    """
    raw = np.frombuffer(block, dtype=np.uint8) if isinstance(block, bytes | bytearray) else block
    records = raw.size // header.record_bytes
    raw = raw[: records * header.record_bytes].reshape(records, header.record_bytes)
    samples = header.channels[channels[0]].samples
    starts = np.array([header.channels[c].offset for c in channels]) // header.sample_bytes
    columns = (starts[:, None] + np.arange(samples)[None, :]).ravel()  # (C * samples,) samples of the record
    out = np.empty((len(channels), records, samples), dtype=dtype)
    if header.sample_bytes == 2:
        values = np.take(raw.view("<i2"), columns, axis=1).reshape(records, len(channels), samples)
        out[...] = values.transpose(1, 0, 2)
    else:
        b = np.take(raw.reshape(records, header.record_bytes // 3, 3), columns, axis=1).astype(np.int32)
        values = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
        values = (values ^ 0x800000) - 0x800000
        out[...] = values.reshape(records, len(channels), samples).transpose(1, 0, 2)
    return out.reshape(len(channels), records * samples)


class LazyArray:
    """A ``(channels, samples)`` signal that stays on disk until a span is asked for.

    Subclasses give ``shape`` and ``read(rows, start, stop, dtype)``; indexing
    (``array[rows, start:stop]``) reads only that span, ``np.asarray(array)`` reads it all.
    """

    ndim = 2
    dtype = np.dtype(np.float32)
    shape: tuple[int, int]

    def read(self, rows, start: int, stop: int, dtype=np.float64) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        index = np.arange(self.shape[0])[rows]
        if isinstance(cols, int | np.integer):
            col = int(cols) + (self.shape[1] if cols < 0 else 0)
            out = self.read(np.atleast_1d(index), col, col + 1, np.float32)[:, 0]
        else:
            start, stop, step = cols.indices(self.shape[1])
            out = self.read(np.atleast_1d(index), start, max(start, stop), np.float32)
            if step != 1:
                out = out[:, ::step]
        return out[0] if np.ndim(index) == 0 else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.read(np.arange(self.shape[0]), 0, self.shape[1], dtype or np.float32)


class EdfArray(LazyArray):
    """The EEG channels of an EDF/BDF file as a lazy ``(channels, samples)`` array in µV.

    Indexing (``array[rows, start:stop]``) and :meth:`read` decode only the data records that hold
    the span, and only the channels asked for; ``np.asarray(array)`` reads it all (tests, plots).
    """

    def __init__(self, fs: AbstractFileSystem, path: str, header: EdfHeader, channels: list[int]) -> None:
        if not channels:
            raise ValueError("an EdfArray needs at least one channel")
        rates = {header.channels[c].samples for c in channels}
        if len(rates) != 1:
            raise ValueError(f"channels of one EdfArray must share a rate, not {sorted(rates)} samples per record")
        self.fs, self.path, self.header, self.channels = fs, path, header, list(channels)
        self.per_record = rates.pop()
        self.shape = (len(channels), header.n_records * self.per_record)
        chans = [header.channels[c] for c in channels]
        factor = np.array([c.microvolts or 1.0 for c in chans])
        self.gain = np.array([c.gain for c in chans]) * factor
        self.offset = (np.array([c.physical_min for c in chans]) - np.array([c.digital_min for c in chans]) *
                       np.array([c.gain for c in chans])) * factor  # fmt: skip
        self.physical_range = (np.array([c.physical_min for c in chans]) * factor,
                               np.array([c.physical_max for c in chans]) * factor)  # fmt: skip
        self.digital_range = (np.array([c.digital_min for c in chans]), np.array([c.digital_max for c in chans]))

    def __repr__(self) -> str:
        return f"EdfArray({self.path!r}, {self.shape[0]} channels x {self.shape[1]} samples)"

    def read_digital(self, rows: list[int] | np.ndarray, start: int, stop: int, dtype=np.int32) -> np.ndarray:
        """Digital values (len(rows), stop - start) of signal rows ``rows``, samples ``[start, stop)``."""
        start, stop = max(0, int(start)), min(self.shape[1], int(stop))
        rows = [int(r) for r in rows]
        if stop <= start or not rows:
            return np.zeros((len(rows), max(0, stop - start)), dtype=dtype)
        first, last = start // self.per_record, -(-stop // self.per_record)
        begin = self.header.header_bytes + first * self.header.record_bytes
        block = self.fs.cat_file(self.path, start=begin, end=begin + (last - first) * self.header.record_bytes)
        if len(block) < (last - first) * self.header.record_bytes:
            raise EdfError(f"{self.path}: file shorter than its header says (data records {first}-{last})")
        values = decode(block, self.header, [self.channels[r] for r in rows], dtype)
        skip = start - first * self.per_record
        return values[:, skip : skip + stop - start]

    def read(self, rows: list[int] | np.ndarray, start: int, stop: int, dtype=np.float64) -> np.ndarray:
        """µV (len(rows), stop - start) of signal rows ``rows``, samples ``[start, stop)``.

        ``float32`` is computed in float32 (exact for 16- and 24-bit samples, the gain in float32);
        anything else in float64.
        """
        rows = np.asarray(list(rows), dtype=np.intp)
        work = np.dtype(np.float32) if np.dtype(dtype) == np.float32 else np.dtype(np.float64)
        out = self.read_digital(rows, start, stop, work)
        out *= self.gain[rows, None].astype(work)
        out += self.offset[rows, None].astype(work)
        return out.astype(dtype, copy=False)


# ---- annotations (EDF+ TALs) ------------------------------------------------------------------


def parse_tals(data: bytes) -> list[tuple[float, float, str]]:
    """``(onset s, duration s, text)`` of every annotation in the TALs of ``data`` (timekeeping ones left out)."""
    events = []
    for tal in data.split(b"\x00"):
        if not tal.strip(b"\x00"):
            continue
        parts = tal.split(b"\x14")
        timing = parts[0].split(b"\x15")
        try:
            onset = float(timing[0].decode("latin-1"))
            duration = float(timing[1].decode("latin-1")) if len(timing) > 1 and timing[1] else 0.0
        except ValueError:
            continue
        for text in parts[1:]:
            label = text.decode("utf-8", "replace").strip()
            if label:
                events.append((onset, duration, label))
    return events


def read_annotations(fs: AbstractFileSystem, path: str, header: EdfHeader) -> list[tuple[float, float, str]]:
    """The annotations of an EDF+/BDF+ file: only the annotation channel's bytes are decoded."""
    channels = header.annotation_channels()
    if not channels or not header.plus:
        return []
    events: list[tuple[float, float, str]] = []
    per_block = max(1, (4 * 2**20) // header.record_bytes)
    for first in range(0, header.n_records, per_block):
        count = min(per_block, header.n_records - first)
        begin = header.header_bytes + first * header.record_bytes
        raw = np.frombuffer(fs.cat_file(path, start=begin, end=begin + count * header.record_bytes), np.uint8)
        raw = raw[: (raw.size // header.record_bytes) * header.record_bytes].reshape(-1, header.record_bytes)
        for c in channels:
            channel = header.channels[c]
            events.extend(
                parse_tals(raw[:, channel.offset : channel.offset + channel.samples * header.sample_bytes].tobytes())
            )
    return sorted(set(events))


# ---- one recording -> a Record ----------------------------------------------------------------


@dataclass
class Opened:
    """What :func:`open_recording` found in a file: its EEG as an :class:`EdfArray`, and what was left out."""

    header: EdfHeader
    signal: Signal
    skipped: list[str] = field(default_factory=list)
    masked: list[tuple[str, str]] = field(default_factory=list)  # (channel, why): lead rejects
    events: list[tuple[float, float, str]] | None = None  # None: the file has no annotations channel


def open_recording(fs: AbstractFileSystem, path: str, *, events: bool = True, bad: frozenset[str] = frozenset(),
                   types: dict[str, str] | None = None) -> Opened:  # fmt: skip
    """Read the header (and EDF+ annotations) of ``path``; classify its channels; raise ``EdfError`` why not.

    ``bad`` names channels to leave out whatever they are (BIDS ``status = bad``; listed as masked);
    ``types`` gives channel types that override the name (BIDS ``channels.tsv``: only ``EEG`` is kept).
    """
    try:
        header, _ = read_header(fs, path)
    except FileNotFoundError:
        raise EdfError("file not found") from None
    if header.format.endswith("+D"):
        raise EdfError(f"{header.format} (discontinuous data records) is not read: its records are not one time axis")
    candidates: list[int] = []
    skipped: list[str] = []
    masked: list[tuple[str, str]] = []
    for i, channel in enumerate(header.channels):
        name = channel.label
        kind = eeg_channels.kind(name)
        if types and name in types:
            kind = "eeg" if types[name].upper() == "EEG" else types[name].lower()
        if kind not in ("eeg", "other"):
            skipped.append(f"{name} ({kind})")
        elif name in bad:
            masked.append((name, "marked bad in channels.tsv"))
        elif channel.microvolts is None:
            masked.append((name, f"physical dimension {channel.dimension!r} is not a voltage"))
        else:
            candidates.append(i)
    if not candidates:
        described = ", ".join(f"{c.label} [{c.dimension}]" for c in header.channels)
        raise EdfError(f"no EEG channel among {described}")
    rates = Counter(header.channels[i].samples for i in candidates)
    main = max(rates, key=lambda n: (rates[n], -min(i for i in candidates if header.channels[i].samples == n)))
    keep = [i for i in candidates if header.channels[i].samples == main]
    fs_hz = main / header.record_seconds
    for i in candidates:
        if header.channels[i].samples != main:
            rate = header.channels[i].samples / header.record_seconds
            skipped.append(f"{header.channels[i].label} (eeg: {rate:g} Hz, not the recording's {fs_hz:g} Hz)")
    names = [header.channels[i].label for i in keep]
    if len(set(names)) != len(names):  # duplicate labels: keep the first of each
        seen: set[str] = set()
        unique = []
        for i, name in zip(keep, names):
            if name in seen:
                skipped.append(f"{name} (eeg: duplicate label)")
            else:
                seen.add(name)
                unique.append(i)
        keep, names = unique, [header.channels[i].label for i in unique]
    signal = Signal(EdfArray(fs, path, header, keep), fs_hz, names, unit="uV")  # type: ignore[arg-type]
    found = read_annotations(fs, path, header) if events and header.plus and header.annotation_channels() else None
    return Opened(header, signal, skipped, masked, found)


def patient_code(header: EdfHeader) -> str | None:
    """The EDF+ patient code (first subfield of the patient field), or None when absent (``X``)."""
    if not header.plus:
        return None
    code = header.patient.split(" ")[0] if header.patient else ""
    return code if code and code.upper() != "X" else None


def parts(size: int) -> int:
    """How many items a file of ``size`` bytes is listed as."""
    return max(1, math.ceil(size / PART_BYTES))


def part_items(item_id: str, path: str, size: int, extra: tuple = ()) -> list[Item]:
    """The items of one file: ``item_id`` and, for a long file, ``<item_id>_part<k>`` (``extra`` = (k, n, ...))."""
    n = parts(size)
    windows = max(1, round(size / n / BYTES_PER_SECOND / ESTIMATE_WINDOW_S))
    return [Item(item_id if k == 0 else f"{item_id}_part{k}", path, windows, (k, n, *extra)) for k in range(n)]


def to_record(dataset: str, item: Item, opened: Opened, subject: str | None, meta: dict,
              montage: str | None = None, reference: str | None = None) -> Record:  # fmt: skip
    """The :class:`Record` of one item of an opened recording.

    Private meta keys (read by the EEG preparer, not manifest columns): ``_recording`` (the
    recording's id), ``_part`` ([k, n]), ``_events`` ([[onset, duration, label], ...]),
    ``_montage``, ``_reference`` (``_events`` only when the file has an event source).
    """
    k, n = (item.extra[0], item.extra[1]) if len(item.extra) >= 2 else (0, 1)
    recording = item.id if k == 0 else item.id.rsplit("_part", 1)[0]
    private: dict[str, Any] = {"_recording": recording, "_part": [int(k), int(n)],
                               "_montage": montage, "_reference": reference}  # fmt: skip
    if opened.events is not None:
        private["_events"] = [list(e) for e in opened.events]
    issues = [
        Reject(dataset, item.path, "lead", f"channel {name} left out: {why}", recording) for name, why in opened.masked
    ] if k == 0 else []  # fmt: skip
    skipped = [*opened.skipped, *(f"{name} (eeg: {why})" for name, why in opened.masked)]
    return Record(dataset, item.id, item.path, {"eeg": opened.signal}, subject, {**meta, **private}, skipped, issues)


def reject(dataset: str, item: Item, reason: str) -> Reject:
    k = item.extra[0] if item.extra else 0
    recording = item.id if not k else item.id.rsplit("_part", 1)[0]
    return Reject(dataset, item.path, "read", reason, recording)


# ---- the folder reader ----------------------------------------------------------------------


def _relative(base: str, path: str) -> str:
    return path[len(base.rstrip("/")) + 1 :]


def find_files(fs: AbstractFileSystem, base: str, extensions: tuple[str, ...] = EXTENSIONS) -> dict[str, int]:
    """``relative path -> size`` of every file below ``base`` whose name ends with one of ``extensions`` (any case)."""
    found = fs.find(base, detail=True)
    return {
        _relative(base, path): int(info.get("size") or 0)
        for path, info in sorted(found.items())
        if path.lower().endswith(extensions) and info.get("type", "file") == "file"
    }


_EXT = re.compile(r"\.(edf|bdf)$", re.IGNORECASE)


def detect(root: str) -> bool:
    fs, base = url_to_fs(root)
    if fs.isfile(base):
        return False
    return bool(find_files(fs, base))


def list_items(root: str) -> list[Item]:
    fs, base = url_to_fs(root)
    items: list[Item] = []
    for path, size in find_files(fs, base).items():
        items.extend(part_items(_EXT.sub("", path), path, size))
    return items


def _meta(header: EdfHeader) -> dict:
    return {"edf_format": header.format, "start_time": header.start, "recording_seconds": round(header.seconds, 6)}


def read(root: str, items: list[Item]) -> Iterator[Record | Reject]:
    fs, base = url_to_fs(root)
    for item in items:
        try:
            opened = open_recording(fs, join(base, item.path))
        except (EdfError, OSError) as error:
            yield reject(NAME, item, str(error))
            continue
        folder = item.path.rsplit("/", 1)[0] if "/" in item.path else None
        subject = patient_code(opened.header) or (folder.rsplit("/", 1)[-1] if folder else None)
        yield to_record(NAME, item, opened, subject, _meta(opened.header))
