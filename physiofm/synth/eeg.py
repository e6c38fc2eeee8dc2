"""Layout-exact synthetic EEG archives: TUH (TUEG, TUAB, TUEV), BIDS EEG, and plain EDF/BDF folders.

Files are real EDF (TUH: plain EDF, 1-s data records, ``EEG FP1-REF`` labels, ``uV``, physical
range about ±5 mV over int16), EDF+ with ``EDF Annotations`` TALs, BDF (BioSemi 24-bit) and
BrainVision, written by the small writers here (no pyedflib), so headers match what the real
archives hold: TUH's patient field ``<subject> M 01-JAN-1900 <subject> Age:38``, EEGMMIDB's
dot-padded labels (``Fp1.``), channels at another rate in the same file (TUH's ``IBI``, ``BURSTS``,
``SUPPR`` at one sample per record), and sampling rates mixed across files (250, 256, 400 Hz).

The signal: spatially mixed 1/f sources, a posterior alpha rhythm, eye blinks on the frontal
channels (about 150 µV, so CBraMod's 100-µV rule drops some windows), and a planted structure a
classifier can learn: *abnormal* recordings (TUAB's ``abnormal`` folder, BIDS ``group = patient``)
carry diffuse delta-theta slowing (1-6 Hz, ``SLOWING_UV``) and a weaker alpha rhythm, so the ratio
of slow-wave to alpha band power separates the classes.  BIDS ``eyes_closed`` blocks have a stronger
alpha rhythm than ``eyes_open`` ones.  Every file is drawn from its own random stream
``(seed, index)``, so file ``k`` is the same whatever the archive's size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

# ---- the signal ---------------------------------------------------------------------------------

# 10-20 sites with their rough position (x left-right, y posterior-anterior), for spatial weights.
SITES = {
    "FP1": (-0.3, 0.95), "FP2": (0.3, 0.95), "F7": (-0.8, 0.6), "F3": (-0.4, 0.55), "FZ": (0.0, 0.5),
    "F4": (0.4, 0.55), "F8": (0.8, 0.6), "T3": (-1.0, 0.0), "C3": (-0.5, 0.0), "CZ": (0.0, 0.0),
    "C4": (0.5, 0.0), "T4": (1.0, 0.0), "T5": (-0.8, -0.6), "P3": (-0.4, -0.55), "PZ": (0.0, -0.5),
    "P4": (0.4, -0.55), "T6": (0.8, -0.6), "O1": (-0.3, -0.95), "O2": (0.3, -0.95), "A1": (-1.1, -0.1),
    "A2": (1.1, -0.1), "T1": (-0.9, 0.3), "T2": (0.9, 0.3),
}  # fmt: skip
TEN_TEN = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
BACKGROUND_UV = 9.0  # rms of the 1/f background
ALPHA_UV = 14.0  # peak alpha amplitude at the occipital sites (normal)
SLOWING_UV = 16.0  # rms of the delta-theta slowing of abnormal recordings
BLINK_UV = 150.0
BLINKS_PER_MINUTE = 0.6


def _band_noise(rng: np.random.Generator, n: int, fs: float, low: float, high: float, count: int = 1) -> np.ndarray:
    """``count`` unit-rms noises band-limited to [low, high] Hz (FFT shaping)."""
    spectrum = rng.standard_normal((count, n // 2 + 1)) + 1j * rng.standard_normal((count, n // 2 + 1))
    f = np.fft.rfftfreq(n, 1 / fs)
    spectrum *= (f >= low) & (f <= high)
    x = np.fft.irfft(spectrum, n=n, axis=-1)
    return x / np.maximum(x.std(axis=-1, keepdims=True), 1e-12)


def _pink(rng: np.random.Generator, n: int, fs: float, count: int) -> np.ndarray:
    spectrum = rng.standard_normal((count, n // 2 + 1)) + 1j * rng.standard_normal((count, n // 2 + 1))
    f = np.fft.rfftfreq(n, 1 / fs)
    spectrum *= np.where(f > 0.5, 1 / np.sqrt(np.maximum(f, 0.5)), 0.0) * (f < 70)
    x = np.fft.irfft(spectrum, n=n, axis=-1)
    return x / np.maximum(x.std(axis=-1, keepdims=True), 1e-12)


def eeg(rng: np.random.Generator, sites: Sequence[str], seconds: float, fs: float, *, abnormal: bool = False,
        alpha: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Synthetic scalp EEG (len(sites), n) in µV; ``alpha`` (n,) optionally scales the alpha rhythm over time."""
    n = int(round(seconds * fs))
    xy = np.array([SITES.get(s, (0.0, 0.0)) for s in sites])
    sources = _pink(rng, n, fs, 6)
    mixing = rng.normal(0, 1, (len(sites), 6)) + np.exp(-((xy[:, :1] - rng.uniform(-1, 1, 6)) ** 2))
    mixing /= np.sqrt((mixing**2).sum(axis=1, keepdims=True))
    x = BACKGROUND_UV * (mixing @ sources) + 2.0 * _pink(rng, n, fs, len(sites))
    posterior = np.clip(-xy[:, 1], 0, None) ** 1.5 + 0.15
    rhythm = _band_noise(rng, n, fs, 8.5, 11.5)[0] * (0.35 if abnormal else 1.0) * ALPHA_UV / np.sqrt(2)
    if alpha is not None:
        rhythm = rhythm * alpha
    x += posterior[:, None] * rhythm[None, :]
    if abnormal:
        slow = _band_noise(rng, n, fs, 1.0, 6.0, 2)
        side = rng.uniform(-1, 1)
        weights = 0.7 + 0.3 * np.tanh(2 * side * xy[:, :1])
        x += SLOWING_UV * weights * (0.8 * slow[:1] + 0.6 * slow[1:2])
    frontal = np.clip(xy[:, 1], 0, None) ** 3
    blink = np.exp(-0.5 * (np.arange(-int(0.4 * fs), int(0.4 * fs) + 1) / (0.08 * fs)) ** 2)
    for at in rng.uniform(0, seconds, rng.poisson(BLINKS_PER_MINUTE * seconds / 60)):
        start = int(at * fs)
        span = blink[: max(0, min(len(blink), n - start))]
        x[:, start : start + len(span)] += BLINK_UV * frontal[:, None] * span[None, :]
    return x


# ---- EDF / EDF+ / BDF / BrainVision writers ---------------------------------------------------


@dataclass(frozen=True)
class Channel:
    label: str
    fs: float
    dimension: str = "uV"
    physical: tuple[float, float] = (-4999.84, 4999.84)
    transducer: str = ""
    prefilter: str = ""


def _field(value: object, width: int) -> bytes:
    return str(value).encode("latin-1")[:width].ljust(width, b" ")


def _number(value: float, width: int = 8) -> str:
    """``value`` in at most ``width`` characters (as many digits as fit)."""
    if float(value).is_integer() and len(str(int(value))) <= width:
        return str(int(value))
    for digits in range(width, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= width:
            return text
    raise ValueError(f"{value} does not fit in {width} characters")


def _tals(onset: float, annotations: list[tuple[float, float, str]]) -> bytes:
    out = f"+{onset:g}\x14\x14\x00".encode()
    for at, duration, text in annotations:
        out += f"+{at:g}\x15{duration:g}\x14{text}\x14\x00".encode()
    return out


def write_edf(path: str | Path, channels: Sequence[Channel], data: Sequence[np.ndarray], *, start: datetime,
              patient: str = "X X X X", recording: str | None = None, record_seconds: float = 1.0,
              bdf: bool = False, plus: bool = False,
              annotations: Sequence[tuple[float, float, str]] = ()) -> Path:  # fmt: skip
    """Write an EDF (``bdf``: BioSemi BDF; ``plus``: EDF+C/BDF+C with an annotations channel).

    ``data[i]`` is channel ``i`` in physical units, ``channels[i].fs * record_seconds`` samples per
    record; a last partial record is dropped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_bytes = 3 if bdf else 2
    dmin, dmax = (-8388608, 8388607) if bdf else (-32768, 32767)
    per_record = [int(round(c.fs * record_seconds)) for c in channels]
    n_records = min(len(x) // n for x, n in zip(data, per_record))
    labels = [c.label for c in channels]
    ranges = [c.physical for c in channels]
    dims = [c.dimension for c in channels]
    tal_records: list[bytes] = []
    if plus:
        by_record: list[list[tuple[float, float, str]]] = [[] for _ in range(n_records)]
        for at, duration, text in sorted(annotations):
            by_record[min(n_records - 1, max(0, int(at // record_seconds)))].append((at, duration, text))
        tal_records = [_tals(r * record_seconds, a) for r, a in enumerate(by_record)]
        width = max(len(t) for t in tal_records)
        tal_samples = -(-width // sample_bytes)
        labels.append("BDF Annotations" if bdf else "EDF Annotations")
        per_record.append(tal_samples)
        ranges.append((-1.0, 1.0))
        dims.append("")
    ns = len(labels)
    version = b"\xffBIOSEMI" if bdf else _field("0", 8)
    reserved = ("BDF+C" if bdf else "EDF+C") if plus else ("24BIT" if bdf else "")
    recording = recording or f"Startdate {start.strftime('%d-%b-%Y').upper()} X X X"
    header = b"".join([
        version, _field(patient, 80), _field(recording, 80), _field(start.strftime("%d.%m.%y"), 8),
        _field(start.strftime("%H.%M.%S"), 8), _field(256 * (ns + 1), 8), _field(reserved, 44),
        _field(n_records, 8), _field(f"{record_seconds:g}", 8), _field(ns, 4),
    ])  # fmt: skip
    transducers = [c.transducer for c in channels] + ([""] if plus else [])
    prefilters = [c.prefilter for c in channels] + ([""] if plus else [])
    header += b"".join(_field(x, 16) for x in labels)
    header += b"".join(_field(x, 80) for x in transducers)
    header += b"".join(_field(x, 8) for x in dims)
    header += b"".join(_field(_number(r[0]), 8) for r in ranges)
    header += b"".join(_field(_number(r[1]), 8) for r in ranges)
    header += b"".join(_field(dmin, 8) for _ in labels)
    header += b"".join(_field(dmax, 8) for _ in labels)
    header += b"".join(_field(x, 80) for x in prefilters)
    header += b"".join(_field(n, 8) for n in per_record)
    header += b"".join(_field("", 32) for _ in labels)
    record_bytes = sum(per_record) * sample_bytes
    with open(path, "wb") as handle:
        handle.write(header)
        block = max(1, (8 * 2**20) // record_bytes)
        for first in range(0, n_records, block):
            count = min(block, n_records - first)
            out = np.zeros((count, record_bytes), dtype=np.uint8)
            offset = 0
            for i, n in enumerate(per_record):
                width = n * sample_bytes
                if plus and i == ns - 1:
                    for r in range(count):
                        tal = tal_records[first + r]
                        out[r, offset : offset + len(tal)] = np.frombuffer(tal, np.uint8)
                    offset += width
                    continue
                low, high = ranges[i]
                x = np.asarray(data[i][first * n : (first + count) * n], dtype=np.float64)
                digital = np.clip(np.round((x - low) / (high - low) * (dmax - dmin) + dmin), dmin, dmax).astype("<i4")
                raw = digital.view(np.uint8).reshape(count * n, 4)[:, :sample_bytes]
                out[:, offset : offset + width] = raw.reshape(count, width)
                offset += width
            handle.write(out.tobytes())
    return path


def write_brainvision(path: str | Path, names: Sequence[str], data: np.ndarray, fs: float,
                      markers: Sequence[tuple[float, str]] = ()) -> Path:  # fmt: skip
    """Write ``path`` (``.vhdr``) with its ``.vmrk`` and ``.eeg`` (int16 multiplexed, 0.1 µV resolution)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.with_suffix("").name
    resolution = 0.1
    digital = np.clip(np.round(np.asarray(data) / resolution), -32768, 32767).astype("<i2")
    path.with_suffix(".eeg").write_bytes(digital.T.tobytes())
    lines = ["Brain Vision Data Exchange Header File Version 1.0", "", "[Common Infos]", "Codepage=UTF-8",
             f"DataFile={stem}.eeg", f"MarkerFile={stem}.vmrk", "DataFormat=BINARY",
             "DataOrientation=MULTIPLEXED", f"NumberOfChannels={len(names)}",
             f"SamplingInterval={1e6 / fs:g}", "", "[Binary Infos]", "BinaryFormat=INT_16", "",
             "[Channel Infos]"]  # fmt: skip
    lines += [f"Ch{i + 1}={name},,{resolution},µV" for i, name in enumerate(names)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    marks = ["Brain Vision Data Exchange Marker File, Version 1.0", "", "[Common Infos]", "Codepage=UTF-8",
             f"DataFile={stem}.eeg", "", "[Marker Infos]", "Mk1=New Segment,,1,1,0"]  # fmt: skip
    marks += [f"Mk{i + 2}=Stimulus,{text},{int(at * fs) + 1},1,0" for i, (at, text) in enumerate(markers)]
    path.with_suffix(".vmrk").write_text("\n".join(marks) + "\n", encoding="utf-8")
    return path


# ---- TUH --------------------------------------------------------------------------------------

TUH_EEG = ("FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T3", "T4", "T5", "T6",
           "A1", "A2", "FZ", "CZ", "PZ", "T1", "T2")  # fmt: skip
TUH_EXTRA = ("ROC", "LOC", "EKG1")  # recorded at the EEG rate: eye and heart leads
TUH_LOW_RATE = ("IBI", "BURSTS", "SUPPR")  # one sample per record (1 Hz)
MONTAGES = ("01_tcp_ar", "02_tcp_le", "03_tcp_ar_a")
TUH_RATES = (250.0, 256.0, 400.0)
TUEV_CODES = {1: "spsw", 2: "gped", 3: "pled", 4: "eyem", 5: "artf", 6: "bckg"}
LAYOUTS = ("tuab", "tueg", "tuev")


def tuh_subject(index: int) -> str:
    """TUH v2's anonymised subject names: ``aaaaaaaa``, ``aaaaaaab``, ... (8 letters, base 26)."""
    letters = []
    for _ in range(8):
        index, digit = divmod(index, 26)
        letters.append(chr(ord("a") + digit))
    return "".join(reversed(letters))


def _tuh_file(path: Path, rng: np.random.Generator, subject: str, montage: str, seconds: float, fs: float,
              abnormal: bool, start: datetime, session: str, token: str, age: int, sex: str) -> Path:  # fmt: skip
    sites = [s for s in TUH_EEG if not (montage == "03_tcp_ar_a" and s in ("A1", "A2"))]
    suffix = "LE" if montage == "02_tcp_le" else "REF"
    x = eeg(rng, sites, seconds, fs, abnormal=abnormal)
    n = x.shape[1]
    extra = [rng.normal(0, 20, n), rng.normal(0, 20, n), 300 * np.sin(2 * np.pi * 1.2 * np.arange(n) / fs)]
    channels = [Channel(f"EEG {s}-{suffix}", fs, "uV", (-4999.84, 4999.84), "Unknown", "HP:0.000 Hz LP:0.0 Hz N:0.0")
                for s in sites]  # fmt: skip
    channels += [Channel(f"EEG {s}-{suffix}", fs, "uV", (-4999.84, 4999.84), "Unknown") for s in TUH_EXTRA]
    channels += [Channel("PHOTIC-REF", fs, "uV", (-4999.84, 4999.84), "Unknown")]
    channels += [Channel(name, 1.0, "uV", (-4999.84, 4999.84), "Unknown") for name in TUH_LOW_RATE]
    seconds_whole = n // int(fs)
    data = [*x, *extra, np.zeros(n), *(np.zeros(seconds_whole) for _ in TUH_LOW_RATE)]
    patient = f"{subject} {sex} 01-JAN-1900 {subject} Age:{age}"
    recording = f"Startdate {start.strftime('%d-%b-%Y').upper()} {session}_{token} {montage} TUH"
    return write_edf(path, channels, data, start=start, patient=patient, recording=recording)


def synth_tuh_eeg(out: str | Path, n_records: int = 6, seed: int = 0, *, layout: str = "tuab",
                  minutes: tuple[float, float] = (5.5, 7.0), rates: Sequence[float] = TUH_RATES,
                  short: int = 0, events_per_minute: float = 6.0) -> Path:  # fmt: skip
    """Write a TUH-layout archive of ``n_records`` EDF files under ``out/edf/``; returns ``out``.

    ``layout``: ``tuab`` (``edf/{train,eval}/{normal,abnormal}/01_tcp_ar/<subj>_s<nnn>_t000.edf``;
    subjects are disjoint between train and eval, one label per subject), ``tueg``
    (``edf/<000>/<subj>/s<nnn>_<yyyy>_<mm>_<dd>/<montage>/<subj>_s<nnn>_t<nnn>.edf``, the three
    montages mixed) or ``tuev`` (``edf/{train,eval}/<subj>/<subj>_<nnnnnnnn>.edf`` with ``.rec``
    event files).  Durations are drawn from ``minutes``; the last ``short`` records last 3 min
    (under CBraMod's 5-min minimum).  Rates cycle through ``rates``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown TUH layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    root = Path(out)
    subjects = max(1, (n_records * 2 + 2) // 3)  # about 1.5 recordings per subject
    for k in range(n_records):
        rng = np.random.default_rng([seed, k])
        s = k % subjects
        subject = tuh_subject(s + 26 * seed)
        session = f"s{k // subjects + 1:03d}"
        start = datetime(2002, 1, 1) + timedelta(days=int(37 * s + 11 * k), hours=int(rng.integers(7, 18)))
        seconds = 180.0 if k >= n_records - short else float(rng.uniform(*minutes) * 60)
        fs = float(rates[k % len(rates)])
        abnormal = s % 2 == 1
        split = "eval" if s % 3 == 2 else "train"
        age, sex = int(np.random.default_rng([seed, 1000 + s]).integers(18, 90)), "MF"[s % 2]
        if layout == "tuab":
            montage = "01_tcp_ar"
            rel = f"edf/{split}/{'abnormal' if abnormal else 'normal'}/{montage}/{subject}_{session}_t000.edf"
        elif layout == "tueg":
            montage = MONTAGES[k % len(MONTAGES)]
            date = start.strftime("%Y_%m_%d")
            rel = f"edf/{s // 100:03d}/{subject}/{session}_{date}/{montage}/{subject}_{session}_t{k % 2:03d}.edf"
        else:
            montage = "01_tcp_ar"
            rel = f"edf/{split}/{subject}/{subject}_{k + 1:08d}.edf"
        path = _tuh_file(root / rel, rng, subject, montage, seconds, fs, abnormal, start, session,
                         "t000", age, sex)  # fmt: skip
        if layout == "tuev":
            count = max(1, int(rng.poisson(events_per_minute * seconds / 60)))
            lines = []
            for at in np.sort(rng.uniform(0, seconds - 1, count)):
                code = int(rng.choice([1, 2, 3, 4, 5, 6], p=[0.1, 0.1, 0.1, 0.2, 0.2, 0.3]))
                for channel in sorted(rng.choice(22, size=int(rng.integers(1, 4)), replace=False)):
                    lines.append(f"{int(channel)},{at:.4f},{at + 1:.4f},{code}")
            path.with_suffix(".rec").write_text("\n".join(lines) + "\n")
    return root


# ---- BIDS -------------------------------------------------------------------------------------

BIDS_SITES = ("FP1", "FP2", "F7", "F3", "FZ", "F4", "F8", "T3", "C3", "CZ", "C4", "T4", "T5", "P3", "PZ",
              "P4", "T6", "O1", "O2")  # fmt: skip


def _bids_name(site: str) -> str:
    site = TEN_TEN.get(site, site)
    return site[0] + site[1:].lower() if site not in ("FP1", "FP2") else "Fp" + site[2]


def synth_bids_eeg(out: str | Path, subjects: int = 3, seed: int = 0, *, sessions: int = 1, runs: int = 2,
                   minutes: tuple[float, float] = (2.0, 3.0), fs: float = 256.0,
                   formats: Sequence[str] = ("edf", "bdf"), line_hz: float = 50.0) -> Path:  # fmt: skip
    """Write a BIDS EEG dataset: ``participants.tsv``, ``sub-<nn>/[ses-<nn>/]eeg/*_eeg.{edf,bdf,vhdr}`` with
    ``_eeg.json``, ``_channels.tsv`` and ``_events.tsv``; returns ``out``.

    Subjects take ``formats`` in turn (EDF+ with annotations, BDF, BrainVision); channels use 10-10
    names (``Fp1``, ``T7``, ``P7``) plus ``VEOG`` (type EOG); the second run of every odd subject
    has ``T8`` marked bad.  Runs alternate ``eyes_open``/``eyes_closed`` blocks of 20 s
    (``_events.tsv`` and EDF+ annotations); closed eyes double the alpha rhythm.  Odd subjects are
    ``group = patient`` with the abnormal slowing.
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "physiofm synthetic EEG", "BIDSVersion": "1.8.0", "DatasetType": "raw"}, indent=2))  # fmt: skip
    people = ["participant_id\tage\tsex\tgroup"]
    for s in range(1, subjects + 1):
        prng = np.random.default_rng([seed, 10_000 + s])
        people.append(f"sub-{s:02d}\t{int(prng.integers(20, 80)) if s != 2 else 'n/a'}\t{'MF'[s % 2]}\t"
                      f"{'patient' if s % 2 else 'control'}")  # fmt: skip
    (root / "participants.tsv").write_text("\n".join(people) + "\n")
    names = [_bids_name(site) for site in BIDS_SITES]
    for s in range(1, subjects + 1):
        fmt = formats[(s - 1) % len(formats)]
        for ses in range(1, sessions + 1):
            for run in range(1, runs + 1):
                rng = np.random.default_rng([seed, s, ses, run])
                seconds = float(np.floor(rng.uniform(*minutes) * 60))
                n = int(seconds * fs)
                t = np.arange(n) / fs
                closed = (t // 20) % 2 == 1
                x = eeg(rng, BIDS_SITES, seconds, fs, abnormal=s % 2 == 1, alpha=np.where(closed, 2.0, 1.0))
                veog = 80 * _band_noise(rng, n, fs, 0.2, 3.0)[0]
                events = [(float(b), 20.0, "eyes_closed" if (b // 20) % 2 else "eyes_open")
                          for b in range(0, int(seconds) - 19, 20)]  # fmt: skip
                folder = root / f"sub-{s:02d}" / (f"ses-{ses:02d}" if sessions > 1 else "") / "eeg"
                stem = f"sub-{s:02d}" + (f"_ses-{ses:02d}" if sessions > 1 else "") + f"_task-rest_run-{run}"
                start = datetime(2021, 3, 1 + s, 9 + run, 0, 0)
                if fmt == "vhdr":
                    write_brainvision(folder / f"{stem}_eeg.vhdr", [*names, "VEOG"], np.vstack([x, veog]), fs,
                                      [(at, label) for at, _, label in events])  # fmt: skip
                else:
                    bdf = fmt == "bdf"
                    physical = (-262144.0, 262143.0) if bdf else (-3276.8, 3276.7)
                    channels = [Channel(name, fs, "uV", physical, "AgAgCl electrode") for name in [*names, "VEOG"]]
                    write_edf(folder / f"{stem}_eeg.{fmt}", channels, [*x, veog], start=start, bdf=bdf,
                              plus=not bdf, patient=f"sub-{s:02d} X X X", annotations=events)  # fmt: skip
                bad = "T8" if s % 2 == 1 and run == 2 else None
                rows = ["name\ttype\tunits\tstatus\tstatus_description"]
                rows += [f"{name}\tEEG\tuV\t{'bad' if name == bad else 'good'}\t{'flat' if name == bad else 'n/a'}"
                         for name in names]  # fmt: skip
                rows.append("VEOG\tEOG\tuV\tgood\tn/a")
                (folder / f"{stem}_channels.tsv").write_text("\n".join(rows) + "\n")
                (folder / f"{stem}_events.tsv").write_text(
                    "onset\tduration\ttrial_type\n" + "".join(f"{a:g}\t{d:g}\t{label}\n" for a, d, label in events)
                )
                (folder / f"{stem}_eeg.json").write_text(json.dumps({
                    "TaskName": "rest", "SamplingFrequency": fs, "PowerLineFrequency": line_hz,
                    "EEGReference": "average", "EEGChannelCount": len(names), "EOGChannelCount": 1,
                    "RecordingDuration": seconds}, indent=2))  # fmt: skip
    return root


# ---- any EDF/BDF folder ------------------------------------------------------------------------


def _padded(site: str) -> str:
    """EEGMMIDB's labels: 10-10 names padded with dots to four characters (``Fp1.``, ``Cz..``)."""
    return _bids_name(site).ljust(4, ".")


def synth_edf(out: str | Path, n_records: int = 6, seed: int = 0, *, seconds: tuple[float, float] = (60.0, 125.0),
              fs: float = 160.0) -> Path:  # fmt: skip
    """Write a folder of EDF+ and BDF files: ``S<nnn>/S<nnn>R<rr>.{edf,bdf}``; returns ``out``.

    Even records are EEGMMIDB-like EDF+ (dot-padded 10-10 labels, ``T0``/``T1``/``T2``
    annotations every 4 s); odd records are BioSemi BDF at twice the rate with plain 10-10 names,
    a ``Status`` channel and 24-bit samples.
    """
    root = Path(out)
    for k in range(n_records):
        rng = np.random.default_rng([seed, k])
        subject = k // 3 + 1
        duration = float(np.floor(rng.uniform(*seconds)))
        start = datetime(2009, 8, 12, 16, 15, 0) + timedelta(minutes=5 * k)
        if k % 2 == 0:
            x = eeg(rng, BIDS_SITES, duration, fs)
            channels = [Channel(_padded(site), fs, "uV", (-8092.0, 8092.0)) for site in BIDS_SITES]
            events = [(float(a), 4.1, f"T{int(rng.integers(0, 3))}") for a in np.arange(0, duration - 4, 4.2)]
            write_edf(root / f"S{subject:03d}" / f"S{subject:03d}R{k + 1:02d}.edf", channels, list(x), start=start,
                      plus=True, recording=f"Startdate {start.strftime('%d-%b-%Y').upper()} X X BCI2000",
                      annotations=events)  # fmt: skip
        else:
            rate = 2 * fs
            x = eeg(rng, BIDS_SITES, duration, rate)
            status = np.zeros(x.shape[1])
            status[:: int(rate)] = 1
            channels = [Channel(_bids_name(site), rate, "uV", (-262144.0, 262143.0), "Active Electrode")
                        for site in BIDS_SITES]  # fmt: skip
            channels.append(Channel("Status", rate, "Boolean", (-8388608.0, 8388607.0), "Triggers and Status"))
            write_edf(root / f"S{subject:03d}" / f"S{subject:03d}R{k + 1:02d}.bdf", channels, [*x, status],
                      start=start, bdf=True)  # fmt: skip
    return root
