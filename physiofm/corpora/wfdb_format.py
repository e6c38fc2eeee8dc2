"""WFDB headers and signal files, read fast and strictly.

The header parser is our own: it accepts what real archives write and ``wfdb`` refuses
(Challenge record lines such as ``E07500.mat 12 500 5000 05-May-2020 09:49:17``, lower-case
``mv`` units, unsigned checksums).  Format-16 signals (PTB-XL, MIMIC-IV-ECG, Challenge
``.mat`` files, whose MATLAB v4 body is the same interleaved int16 stream) are decoded with
one ``numpy.frombuffer`` per file; every other format (212, 80, multi-frequency…) goes
through ``wfdb.rdrecord``.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field

import numpy as np

from physiofm.io import is_local, join
from physiofm.units import unit_scale

_FMT = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN = re.compile(r"^([-+\d.eE]+)(?:\(([-+\d]+)\))?(?:/(\S+))?$")


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


def parse_header(text: str) -> Header:
    """Parse WFDB header text (record line, signal lines, ``#`` comments)."""
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n")]
    comments = [line[1:].strip() for line in lines if line.startswith("#")]
    body = [line for line in lines if line and not line.startswith("#")]
    if not body:
        raise HeaderError("no record line")
    tokens = body[0].split()
    if len(tokens) < 2:
        raise HeaderError(f"record line {body[0]!r} has no signal count")
    name = tokens[0]
    try:
        n_sig = int(tokens[1])
    except ValueError:
        raise HeaderError(f"signal count {tokens[1]!r} is not an integer in {body[0]!r}") from None
    fs = _number(re.split(r"[/(]", tokens[2])[0], "sampling rate", body[0]) if len(tokens) > 2 else 250.0
    n_samples = int(_number(tokens[3], "sample count", body[0])) if len(tokens) > 3 else None
    signals = []
    for line in body[1 : 1 + n_sig]:
        parts = line.split()
        if len(parts) < 2:
            raise HeaderError(f"signal line {line!r} has no format")
        match = _FMT.match(parts[1])
        if not match:
            raise HeaderError(f"signal format {parts[1]!r} not understood in {line!r}")
        fmt, spf, skew, offset = (int(g) if g else d for g, d in zip(match.groups(), (0, 1, 0, 0)))
        gain, baseline, units = 200.0, None, "mV"
        if len(parts) > 2:
            g = _GAIN.match(parts[2])
            if not g:
                raise HeaderError(f"gain {parts[2]!r} not understood in {line!r}")
            gain = _number(g.group(1), "gain", line) or 200.0
            baseline = int(g.group(2)) if g.group(2) else None
            units = g.group(3) or "mV"
        adczero = int(_number(parts[4], "ADC zero", line)) if len(parts) > 4 else 0
        description = " ".join(parts[8:]) if len(parts) > 8 else f"sig{len(signals)}"
        signals.append(
            SignalSpec(
                parts[0], fmt, spf, skew, offset, gain, adczero if baseline is None else baseline, units, description
            )
        )
    if len(signals) != n_sig:
        raise HeaderError(f"record line announces {n_sig} signals, found {len(signals)} signal lines")
    if fs <= 0:
        raise HeaderError(f"unknown sampling rate {tokens[2] if len(tokens) > 2 else ''!r}")
    return Header(name.split("/")[0], n_sig, fs, n_samples, signals, comments, multi_segment="/" in name)


def read_signals(fs, folder: str, header: Header, record_name: str) -> tuple[np.ndarray, list[str]]:
    """Physical signals (n_sig, n_samples) in mV, float64, NaN where the source marks invalid.

    ``record_name`` is the header file's name without ``.hea`` (real headers do not always
    repeat it correctly on their record line).
    """
    if header.n_sig == 0:
        raise ValueError("record has no signals")
    fast = not header.multi_segment and all(
        s.fmt == 16 and s.samples_per_frame == 1 and s.skew == 0 for s in header.signals
    )
    data = _read_format16(fs, folder, header) if fast else _read_with_wfdb(fs, folder, header, record_name)
    return data, [s.description for s in header.signals]


def _read_format16(fs, folder: str, header: Header) -> np.ndarray:
    groups: dict[str, list[int]] = {}
    for i, spec in enumerate(header.signals):
        groups.setdefault(spec.file, []).append(i)
    n = header.n_samples
    out = None
    for file, index in groups.items():
        path = join(folder, file)
        if not fs.exists(path):
            raise ValueError(f"missing signal file {file}")
        raw = fs.cat_file(path)
        start = header.signals[index[0]].offset
        if file.endswith(".mat"):
            _check_mat4(raw, file, len(index), n)
        frame = 2 * len(index)
        available = (len(raw) - start) // frame
        count = available if n is None else n
        if available < count:
            raise ValueError(f"truncated signal file {file}: {len(raw)} bytes, expected {start + count * frame}")
        digital = np.frombuffer(raw, dtype="<i2", count=count * len(index), offset=start).reshape(count, len(index))
        if out is None:
            out = np.empty((header.n_sig, count), dtype=np.float64)
        elif out.shape[1] != count:
            raise ValueError(f"signal files disagree on the sample count ({out.shape[1]} vs {count})")
        specs = [header.signals[i] for i in index]
        scale = np.array([unit_scale(s.units) / s.gain for s in specs])
        baseline = np.array([s.baseline for s in specs], dtype=np.float64)
        values = (digital - baseline) * scale  # (count, k) float64, one pass
        invalid = digital == -32768
        if invalid.any():
            values[invalid] = np.nan
        out[index] = values.T
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


def _read_with_wfdb(fs, folder: str, header: Header, record_name: str) -> np.ndarray:
    import wfdb

    tmp = None
    try:
        if is_local(fs):
            local = folder
        else:  # wfdb reads local files only: copy header and signal files
            tmp = local = tempfile.mkdtemp(prefix="physiofm-wfdb-")
            for name in {f"{record_name}.hea"} | {s.file for s in header.signals}:
                fs.get(join(folder, name), os.path.join(tmp, name))
        record = wfdb.rdrecord(os.path.join(local, record_name), physical=True)
    except (FileNotFoundError, OSError) as error:
        raise ValueError(f"missing or unreadable signal file: {error}") from None
    except Exception as error:  # wfdb raises many types for malformed files
        raise ValueError(f"wfdb could not read the record: {type(error).__name__}: {error}") from None
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    scale = np.array([unit_scale(u or "mV") for u in record.units])[:, None]
    return record.p_signal.T * scale
