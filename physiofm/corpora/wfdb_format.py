"""WFDB headers and signal files, read fast and strictly.

The header parser is our own: it accepts what real archives write and ``wfdb`` refuses
(Challenge record lines such as ``E07500.mat 12 500 5000 05-May-2020 09:49:17``, lower-case
``mv`` units, unsigned checksums).  Format-16 signals (PTB-XL, MIMIC-IV-ECG, Challenge
``.mat`` files, whose MATLAB v4 body is the same interleaved int16 stream) are decoded with
one ``numpy.frombuffer`` per file; every other format (212, 80, multi-frequency…) goes
through ``wfdb.rdrecord``, after the signal files' sizes have been checked against what the
header needs (so a broken file is named with a reason a person can act on, and a header that
claims 10^12 samples is refused before anything is allocated).

What the parser refuses (``HeaderError``, a ``ValueError``): a sampling rate that is not a
finite number in [0.001 Hz, 100 kHz]; a sample count, baseline or ADC zero that is not an integer;
a negative sample count; zero samples per frame; a gain that is not finite.  What it accepts
as WFDB defines it: a gain of 0 means 200 adu per unit (as ``wfdb`` and the WFDB library
read it); a negative gain is an inverted amplifier, kept as it is (physical values
``(digital - baseline) / gain`` change sign, exactly as ``wfdb`` computes them).

Units are not converted here: :func:`read_signals` returns each channel in its own physical
unit, with the header's unit string, and never fails because of a unit.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from physiofm.io import is_local, join, read_bytes

_FMT = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN = re.compile(r"^([-+\d.eE]+)(?:\(([-+\d]+)\))?(?:/(\S+))?$")

MIN_RATE_HZ, MAX_RATE_HZ = 1e-3, 100_000.0
"""Sampling rates a header may state (one sample per 17 minutes to 100 kHz); anything outside is a
broken header, not a recording (and a rate of 1e-300 Hz would make resampling allocate without bound)."""

MAX_DECODED_BYTES = 2**34
"""Largest record (float64 samples of all channels) read at once: a 12-lead 24-hour Holter at 1 kHz
is half of it.  Only headers whose size cannot be checked against a file (FLAC without a sample
count, multi-segment records) can get near it."""

DEFAULT_GAIN = 200.0  # WFDB: a gain of 0 (or none) means 200 adu per physical unit

FLAC_FORMATS = (508, 516, 524)


def _format_bytes(fmt: int, n: int) -> int | None:
    """Bytes of a signal file of format ``fmt`` that hold ``n`` samples (as ``wfdb`` reads them).

    None for formats whose size does not follow from the sample count (FLAC) or that are unknown.
    """
    width = {8: 1, 80: 1, 16: 2, 61: 2, 160: 2, 24: 3, 32: 4}.get(fmt)
    if width is not None:
        return width * n
    if fmt == 212:  # 3 bytes per 2 samples
        return (3 * n + 1) // 2
    if fmt == 311 or (fmt == 310 and n % 3 != 2):  # 4 bytes per 3 samples
        return (4 * n + 2) // 3
    if fmt == 310:  # a last pair of samples still takes a whole 4-byte word
        return 4 * ((n + 2) // 3)
    return None


_SAMPLES_PER_BYTE = {
    8: Fraction(1), 80: Fraction(1), 16: Fraction(1, 2), 61: Fraction(1, 2), 160: Fraction(1, 2),
    24: Fraction(1, 3), 32: Fraction(1, 4), 212: Fraction(2, 3), 310: Fraction(3, 4), 311: Fraction(3, 4),
}  # fmt: skip

SUPPORTED_FORMATS = frozenset((8, 80, 16, 61, 160, 24, 32, 212, 310, 311, *FLAC_FORMATS))


class HeaderError(ValueError):
    """A header that cannot be parsed (the message says which line and why)."""


@dataclass
class SignalSpec:
    file: str
    fmt: int
    samples_per_frame: int
    skew: int
    offset: int
    gain: float
    baseline: int
    units: str
    description: str
    init_value: int = 0  # first sample (format 8 stores differences from it)


@dataclass
class Header:
    name: str
    n_sig: int
    fs: float
    n_samples: int | None
    signals: list[SignalSpec]
    comments: list[str] = field(default_factory=list)
    multi_segment: bool = False

    def comment_fields(self) -> dict[str, str]:
        """``#Age: 59`` / ``# Age: 59`` comments as ``{"Age": "59"}``."""
        out = {}
        for line in self.comments:
            key, sep, value = line.partition(":")
            if sep and key.strip() and " " not in key.strip():
                out.setdefault(key.strip(), value.strip())
        return out


def _number(token: str, what: str, line: str) -> float:
    try:
        return float(token)
    except ValueError:
        raise HeaderError(f"{what} {token!r} is not a number in line {line!r}") from None


def _integer(token: str, what: str, line: str) -> int:
    """An integer field; ``5000.0`` is accepted (some writers add the ``.0``), ``nan``/``inf``/``1.5`` are not."""
    try:
        return int(token)
    except ValueError:
        pass
    value = _number(token, what, line)
    if not math.isfinite(value) or value != int(value):
        raise HeaderError(f"{what} {token!r} is not an integer in line {line!r}")
    return int(value)


_BLANK = " \t\v\f"  # what separates header fields (C's isspace): not the NBSP or NEL of a latin-1 name


_SEPARATOR = re.compile(f"[{_BLANK}]+")
_OTHER_SPACE = re.compile("[\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def _fields(line: str) -> list[str]:
    if _OTHER_SPACE.search(line) is None:  # nearly always: then str.split splits exactly there (no \n, \r here)
        return line.split()
    return [token for token in _SEPARATOR.split(line) if token]


def parse_header(text: str) -> Header:
    """Parse WFDB header text (record line, signal lines, ``#`` comments)."""
    lines = [line.strip(_BLANK) for line in text.replace("\r", "\n").split("\n")]
    comments = [line[1:].strip() for line in lines if line.startswith("#")]
    body = [line for line in lines if line and not line.startswith("#")]
    if not body:
        raise HeaderError("no record line")
    tokens = _fields(body[0])
    if len(tokens) < 2:
        raise HeaderError(f"record line {body[0]!r} has no signal count")
    name = tokens[0]
    try:
        n_sig = int(tokens[1])
    except ValueError:
        raise HeaderError(f"signal count {tokens[1]!r} is not an integer in {body[0]!r}") from None
    if n_sig < 0:
        raise HeaderError(f"signal count {n_sig} is negative in {body[0]!r}")
    fs = _number(re.split(r"[/(]", tokens[2])[0], "sampling rate", body[0]) if len(tokens) > 2 else 250.0
    n_samples = _integer(tokens[3], "sample count", body[0]) if len(tokens) > 3 else None
    if n_samples is not None and n_samples < 0:
        raise HeaderError(f"sample count {n_samples} is negative in {body[0]!r}")
    signals = []
    for line in body[1 : 1 + n_sig]:
        parts = _fields(line)
        if len(parts) < 2:
            raise HeaderError(f"signal line {line!r} has no format")
        match = _FMT.match(parts[1])
        if not match:
            raise HeaderError(f"signal format {parts[1]!r} not understood in {line!r}")
        fmt_, spf_, skew_, offset_ = match.groups()
        fmt, spf = int(fmt_), int(spf_) if spf_ else 1
        skew, offset = int(skew_) if skew_ else 0, int(offset_) if offset_ else 0
        if spf < 1:
            raise HeaderError(f"{spf} samples per frame in {line!r}")
        gain, baseline, units = DEFAULT_GAIN, None, "mV"
        if len(parts) > 2:
            g = _GAIN.match(parts[2])
            if not g:
                raise HeaderError(f"gain {parts[2]!r} not understood in {line!r}")
            gain = _number(g.group(1), "gain", line) or DEFAULT_GAIN
            if not (math.isfinite(gain) and math.isfinite(1.0 / gain)):
                raise HeaderError(f"gain {g.group(1)!r} is not a finite non-zero number in {line!r}")
            baseline = _integer(g.group(2), "baseline", line) if g.group(2) else None
            units = g.group(3) or "mV"
        adczero = _integer(parts[4], "ADC zero", line) if len(parts) > 4 else 0
        try:  # only format 8 uses it; WFDB: the ADC zero when missing
            init_value = int(parts[5]) if len(parts) > 5 else adczero
        except ValueError:
            init_value = adczero
        description = " ".join(parts[8:]) if len(parts) > 8 else f"sig{len(signals)}"
        baseline = adczero if baseline is None else baseline
        signals.append(SignalSpec(parts[0], fmt, spf, skew, offset, gain, baseline, units, description, init_value))
    if len(signals) != n_sig:
        raise HeaderError(f"record line announces {n_sig} signals, found {len(signals)} signal lines")
    if not (MIN_RATE_HZ <= fs <= MAX_RATE_HZ):  # also false for NaN
        raise HeaderError(
            f"unknown sampling rate {tokens[2] if len(tokens) > 2 else ''!r} "
            f"(a rate is a number of Hz in [{MIN_RATE_HZ:g}, {MAX_RATE_HZ:g}])"
        )
    return Header(name.split("/")[0], n_sig, fs, n_samples, signals, comments, multi_segment="/" in name)


def read_signals(fs, folder: str, header: Header, record_name: str) -> tuple[np.ndarray, list[str], list[str]]:
    """``(data, channels, units)``: the record's physical signals, their names and their units.

    ``data`` is float64 (n_sig, n_samples), each channel in its own physical unit,
    ``(digital - baseline) / gain``, NaN where the source marks a sample invalid (-32768 in
    format 16, ``wfdb``'s NaN otherwise).  ``units`` are the header's unit strings as written
    (``"mV"``, ``"mv"``, ``"uV"``, ``"NU"``, ``"mmHg"``…; WFDB's default ``"mV"`` where a
    signal line gives none): converting them is the caller's business, and no unit makes
    this function fail.  A record that cannot be read raises ``ValueError`` with the reason.

    ``record_name`` is the header file's name without ``.hea`` (real headers do not always
    repeat it correctly on their record line).
    """
    if header.n_sig == 0:
        raise ValueError("record has no signals")
    if header.n_samples == 0:
        raise ValueError("record has no samples (the header says 0)")
    fast = not header.multi_segment and all(
        s.fmt == 16 and s.samples_per_frame == 1 and s.skew == 0 for s in header.signals
    )
    if fast:  # sizes checked against the file before anything is allocated
        data = _read_format16(fs, folder, header)
    else:
        if not header.multi_segment:
            frames = _check_signal_files(fs, folder, header)
            if header.n_samples is None and header.signals[0].fmt in FLAC_FORMATS:
                # wfdb cannot infer a FLAC record's length (it divides by zero): the stream states it
                first = frames[header.signals[0].file]
                if not first:
                    raise ValueError(
                        f"{header.signals[0].file}: neither the header nor the FLAC stream states a length"
                    )
                header = replace(header, n_samples=first)
        _check_decoded_size(header)
        data = _read_with_wfdb(fs, folder, header, record_name)
    return data, [s.description for s in header.signals], [s.units for s in header.signals]


def _check_decoded_size(header: Header) -> None:
    """Refuse a record whose decoded samples would exceed :data:`MAX_DECODED_BYTES`."""
    if header.n_samples is None:
        return
    values = header.n_samples * sum(s.samples_per_frame for s in header.signals)
    if values * 8 > MAX_DECODED_BYTES:
        raise ValueError(
            f"record too large: the header claims {header.n_samples} samples of {header.n_sig} signals, "
            f"{values * 8} bytes decoded (at most {MAX_DECODED_BYTES})"
        )


def _groups(header: Header) -> dict[str, list[int]]:
    """Signal indices by signal file, in header order."""
    groups: dict[str, list[int]] = {}
    for i, spec in enumerate(header.signals):
        groups.setdefault(spec.file, []).append(i)
    return groups


def _truncated(file: str, size: int, needed: int) -> ValueError:
    return ValueError(f"truncated signal file {file}: {size} bytes, the header needs {needed}")


def _read_format16(fs, folder: str, header: Header) -> np.ndarray:
    n = header.n_samples
    out = None
    for file, index in _groups(header).items():
        path = join(folder, file)
        try:
            raw = read_bytes(fs, path)
        except (FileNotFoundError, IsADirectoryError):
            raise ValueError(f"missing signal file {file}") from None
        start = header.signals[index[0]].offset
        if file.endswith(".mat"):
            _check_mat4(raw, file, len(index), n)
        frame = 2 * len(index)
        available = max(0, len(raw) - start) // frame
        count = available if n is None else n
        if len(raw) < start or available < count:  # checked before anything is allocated
            raise _truncated(file, len(raw), start + count * frame)
        digital = np.frombuffer(raw, dtype="<i2", count=count * len(index), offset=start).reshape(count, len(index))
        if out is None:
            out = np.empty((header.n_sig, count), dtype=np.float64)
        elif out.shape[1] != count:
            raise ValueError(f"signal files disagree on the sample count ({out.shape[1]} vs {count})")
        specs = [header.signals[i] for i in index]
        scale = np.array([1.0 / s.gain for s in specs])[:, None]
        baseline = np.array([s.baseline for s in specs], dtype=np.float64)[:, None]
        whole = len(index) == header.n_sig and index == list(range(header.n_sig))
        rows = out if whole else np.empty((len(index), count), dtype=np.float64)
        # (digital - baseline) * scale into the (k, count) rows: the int16 frames transposed first (a
        # small copy), then a plain int16 -> float64 cast (a mixed-type subtract runs a buffered loop at
        # half the speed), the subtraction (none for a zero baseline, most files: x - 0 is x) and the
        # scaling in place: the same float64 values throughout
        channels = np.ascontiguousarray(digital.T)
        rows[...] = channels
        if baseline.any():
            rows -= baseline
        rows *= scale
        if count and channels.min() == -32768:  # a reduction over int16: cheaper than a mask first
            rows[channels == -32768] = np.nan
        if not whole:
            out[index] = rows
    if out.shape[1] == 0:
        raise ValueError("record has no samples")
    return out


def _check_mat4(raw: bytes, file: str, rows: int, cols: int | None) -> None:
    """A Challenge ``.mat`` must be MATLAB v4, int16, (n_sig, n_samples), as its header says."""
    if len(raw) < 20:
        raise ValueError(f"truncated signal file {file}: {len(raw)} bytes")
    mtype, mrows, ncols, imagf, _ = struct.unpack("<5i", raw[:20])
    if mtype != 30 or imagf:
        raise ValueError(
            f"{file} is not a MATLAB v4 int16 matrix (type code {mtype}); MATLAB v5/v7.3 files are not Challenge format"
        )
    if mrows != rows or (cols is not None and ncols != cols):
        raise ValueError(f"{file} holds a {mrows}x{ncols} matrix, the header says {rows}x{cols}")


def _flac_samples(fs, path: str, file: str) -> int:
    """Samples per channel that a FLAC stream's STREAMINFO announces (0: not stated)."""
    with fs.open(path, "rb") as handle:
        head = handle.read(42)
    if head[:4] != b"fLaC" or len(head) < 42 or head[4] & 0x7F != 0:
        raise ValueError(f"{file} is not a FLAC file (formats 508, 516 and 524 are FLAC)")
    return int.from_bytes(head[21:26], "big") & 0xFFFFFFFFF  # the last 36 bits of bytes 21-25


def _check_signal_files(fs, folder: str, header: Header) -> dict[str, int]:
    """Refuse, with a reason, what ``wfdb`` would fail on obscurely or allocate without bound.

    Every signal file must exist and hold what the header needs: ``offset`` bytes, then
    ``n_samples`` frames of the file's signals (``samples_per_frame`` each) in the file's
    format.  A skew longer than the record would make ``wfdb`` pad without bound.  Returns the
    frames each file holds for the record (the header's count, or what the file's size gives).
    """
    held_frames = {}
    for file, index in _groups(header).items():
        specs = [header.signals[i] for i in index]
        formats = sorted({s.fmt for s in specs})
        if len(formats) > 1:
            raise ValueError(f"signals of {file} have different formats {formats}; WFDB needs one per file")
        fmt = formats[0]
        if fmt not in SUPPORTED_FORMATS:
            raise ValueError(f"unsupported signal format {fmt} in {file}")
        path = join(folder, file)
        if not fs.exists(path) or fs.isdir(path):
            raise ValueError(f"missing signal file {file}")
        size = fs.size(path)
        per_frame = sum(s.samples_per_frame for s in specs)
        offset = specs[0].offset
        n = header.n_samples
        if fmt in FLAC_FORMATS:
            held = _flac_samples(fs, path, file)
            if n is not None and held and held < offset + n * specs[0].samples_per_frame:
                raise ValueError(
                    f"truncated signal file {file}: its FLAC stream holds {held} samples per signal, "
                    f"the header needs {offset + n * specs[0].samples_per_frame}"
                )
            frames = n if n is not None else max(0, held - offset) // specs[0].samples_per_frame
        else:
            if n is not None:
                needed = offset + _format_bytes(fmt, n * per_frame)
                if size < needed:
                    raise _truncated(file, size, needed)
                frames = n
            else:
                if size < offset:
                    raise _truncated(file, size, offset)
                frames = ((size - offset) * _SAMPLES_PER_BYTE.get(fmt, Fraction(1))) // per_frame
        skew = max(s.skew for s in specs)
        if skew and skew > frames:
            raise ValueError(f"skew {skew} of a signal in {file} is longer than the record ({frames} samples)")
        held_frames[file] = int(frames)
    return held_frames


def _wfdb_header(header: Header, names: dict[str, str]) -> str:
    """The header as this module read it, in the plain syntax ``wfdb`` parses, for signal files ``names``.

    ``wfdb`` parses headers with loose regular expressions (``1e3`` samples is read as 1, a Challenge
    record line ``E07500.mat 12 …`` is refused, non-ASCII bytes are dropped, extra lines crash it):
    it is given this header instead of the original, so it reads exactly what :func:`parse_header`
    understood and :func:`_check_signal_files` checked.  Floats are written with ``repr`` (exact).
    """
    count = "" if header.n_samples is None else f" {header.n_samples}"
    lines = [f"record {header.n_sig} {header.fs!r}{count}"]
    for i, s in enumerate(header.signals):
        fmt = f"{s.fmt}x{s.samples_per_frame}:{s.skew}+{s.offset}"
        lines.append(f"{names[s.file]} {fmt} {s.gain!r}({s.baseline})/mV 0 0 {s.init_value} 0 0 s{i}")
    return "\n".join(lines) + "\n"


def _read_with_wfdb(fs, folder: str, header: Header, record_name: str) -> np.ndarray:
    import wfdb

    tmp = tempfile.mkdtemp(prefix="physiofm-wfdb-")
    try:
        if header.multi_segment:  # segments are other headers: wfdb reads the record's own
            if is_local(fs):
                target = os.path.join(folder, record_name)
            else:  # wfdb reads local files only: copy header and segment files
                for name in {f"{record_name}.hea"} | {s.file for s in header.signals}:
                    fs.get(join(folder, name), os.path.join(tmp, name))
                target = os.path.join(tmp, record_name)
        else:
            names = {file: f"signal{k}.dat" for k, file in enumerate(_groups(header))}
            for file, name in names.items():
                source, local = join(folder, file), os.path.join(tmp, name)
                if is_local(fs):
                    try:
                        os.symlink(os.path.abspath(source), local)
                    except OSError:  # no symlinks here (some Windows setups): copy
                        shutil.copyfile(source, local)
                else:
                    fs.get(source, local)
            with open(os.path.join(tmp, "record.hea"), "w", encoding="ascii") as handle:
                handle.write(_wfdb_header(header, names))
            target = os.path.join(tmp, "record")
        record = wfdb.rdrecord(target, physical=True)
    except (FileNotFoundError, OSError) as error:
        raise ValueError(f"missing or unreadable signal file: {error}") from None
    except Exception as error:  # wfdb raises many types for malformed files
        raise ValueError(f"wfdb could not read the record: {type(error).__name__}: {error}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    signal = getattr(record, "p_signal", None)
    if signal is None or signal.ndim != 2 or signal.shape[1] != header.n_sig:
        shape = None if signal is None else signal.shape
        raise ValueError(f"wfdb read signals of shape {shape}, the header announces {header.n_sig} signals")
    if signal.shape[0] == 0:
        raise ValueError("record has no samples")
    if header.n_samples is not None and signal.shape[0] != header.n_samples:
        raise ValueError(f"wfdb read {signal.shape[0]} samples per signal, the header says {header.n_samples}")
    return np.ascontiguousarray(signal.T, dtype=np.float64)
