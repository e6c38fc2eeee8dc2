"""Fingerprints of records and windows, stored in the manifest, that find the same recording in two stores.

Two columns per manifest row (:func:`ecg_columns` makes them while a build prepares its samples):

* ``fp_signal``: a hash (SHA-256, first 128 bits, hex) of the record's whole source signal as the
  reader gave it, mapped to the 12 standard leads in µV (rounded to 1 µV), with its rate and lead
  mask.  Two copies of one recording at the same rate with the same samples have the same value,
  whatever file format held them (a Challenge ``.mat`` and a WFDB ``.dat`` of PTB-XL's 500 Hz
  record; the same bytes copied, of course).  Every window of a record carries it.
* ``fp_sketch``: a compact, rate-invariant picture of the window (base64 text of
  ``SLOTS × (1 + L)`` bytes): for each of the first :data:`SLOTS` present leads in
  :data:`ECG_PREFERENCE` order, its index, then the window's signal (already resampled to the
  recipe's 200 Hz and band-passed) limited to :data:`BAND_HZ` and resampled to
  :data:`SKETCH_HZ` by one real FFT, normalised to zero mean and unit variance and quantised to
  int8 (:data:`SCALE` per SD).  Copies of a recording at other sampling rates (PTB-XL's 100 Hz
  ``records100`` and its 500 Hz twin), in other formats or with another band-pass whose pass
  band holds 2.5-9.5 Hz give sketches that correlate above 0.99; different recordings, even of one
  person minutes apart, do not (their beats fall elsewhere in the window).

The comparison (:mod:`physiofm.store.overlap`) joins ``fp_signal`` for exact copies and indexes
sketches by locality-sensitive hashing (:func:`band_keys`: sign random projections in bands) to
find candidate pairs without comparing all of them, then verifies each candidate by
correlation (:func:`similarity`).
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

import numpy as np

SKETCH_HZ = 20.0  # sketch samples per second: a 10-s window is 200 values per lead
BAND_HZ = (3.0, 9.0)  # pass band of the sketch (QRS): inside ECG recipes' band-pass, under the 10-Hz Nyquist
TAPER_HZ = 0.5  # raised-cosine edges on both sides of the pass band
SLOTS = 2  # leads sketched per window
SCALE = 32.0  # int8 units per standard deviation (clipped at ±127, about 4 SD)
FLAT = 1e-4  # band-limited RMS (mV) under which a lead is not sketched
ECG_PREFERENCE = ("II", "V2", "I", "V5", "V1", "III", "aVF", "V3", "V4", "V6", "aVL", "aVR")
NO_LEAD = 255
FP_COLUMNS = ("fp_signal", "fp_sketch")

# locality-sensitive hashing of sketches: BANDS bands of BITS sign bits of random projections, per slot
BANDS = 12
BITS = 24
PROJECTION_SEED = 20260117


# ---- exact: the source signal -------------------------------------------------------------------


def _micro(data: np.ndarray) -> np.ndarray:
    """mV → integer µV, as float32 (exact to ±16.7 V)."""
    micro = np.multiply(data, 1000.0, dtype=np.float32, casting="same_kind")
    return np.rint(micro, out=micro)


def _hash(micro: np.ndarray, fs: float, present: np.ndarray, low: float, high: float) -> str:
    """:func:`signal_hash` of one record already in integer µV, whose extremes are ``low`` and ``high``."""
    if -32768 <= low and high <= 32767:
        dtype, values = "<i2", micro.astype("<i2")
    else:
        dtype, values = "<i4", np.clip(micro, -2147483648.0, 2147483647.0).astype("<i4")
    h = hashlib.sha256(f"{float(fs):.6g}|{micro.shape[0]}x{micro.shape[1]}|{dtype}|".encode())
    h.update(np.packbits(np.asarray(present, dtype=bool)).tobytes())
    h.update(np.ascontiguousarray(values))  # the buffer itself: no copy of it
    return h.hexdigest()[:32]


def signal_hash(data: np.ndarray, fs: float, present: np.ndarray) -> str:
    """Hex SHA-256 (first 128 bits) of one record's signal ``data`` (C, T) in mV at ``fs``, rounded to 1 µV.

    The values are hashed as int16 when they fit (nearly every ECG: ±32 mV), else as int32; the
    header says which, so the two can never collide.
    """
    micro = _micro(data)
    return _hash(micro, fs, present, *((micro.min(), micro.max()) if micro.size else (0.0, 0.0)))


# ---- near: sketches of windows ------------------------------------------------------------------


def sketch_length(seconds: float) -> int:
    return max(8, round(seconds * SKETCH_HZ))


@lru_cache(maxsize=32)
def _gain(n: int, fs: float, length: int) -> np.ndarray:
    """Spectral weights of the first ``length // 2 + 1`` bins of an ``n``-point real FFT at ``fs``."""
    f = np.arange(length // 2 + 1) * fs / n
    low, high = BAND_HZ
    gain = np.ones_like(f)
    rise = (f - (low - TAPER_HZ)) / TAPER_HZ
    fall = ((high + TAPER_HZ) - f) / TAPER_HZ
    gain = np.minimum(gain, np.clip(rise, 0, 1), out=gain)
    gain = np.minimum(gain, np.clip(fall, 0, 1), out=gain)
    return 0.5 - 0.5 * np.cos(np.pi * gain)


def band_limited(x: np.ndarray, fs: float) -> np.ndarray:
    """``x`` (..., T) at ``fs`` → (..., L) at :data:`SKETCH_HZ`, limited to :data:`BAND_HZ` (float64)."""
    n = x.shape[-1]
    length = sketch_length(n / fs)
    spectrum = np.fft.rfft(np.asarray(x, dtype=np.float64), axis=-1)
    keep = min(spectrum.shape[-1], length // 2 + 1)
    out = np.zeros((*x.shape[:-1], length // 2 + 1), dtype=np.complex128)
    out[..., :keep] = spectrum[..., :keep] * _gain(n, float(fs), length)[:keep]
    return np.fft.irfft(out, n=length, axis=-1) * (length / n)


def quantise(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Band-limited ``y`` (..., L) → (int8 z-scores (..., L), usable (...,): not flat)."""
    y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)  # a broken window sketches as flat, without warnings
    y = y - y.mean(axis=-1, keepdims=True)
    rms = np.sqrt((y * y).mean(axis=-1))
    usable = rms > FLAT
    z = y / np.where(usable, rms, 1.0)[..., None]
    q = np.clip(np.rint(z * SCALE), -127, 127).astype(np.int8)
    q[~usable] = 0
    return q, usable


def slots(present: np.ndarray, channels: list[str], preference: tuple[str, ...] = ECG_PREFERENCE) -> np.ndarray:
    """Per record (R, C present), the channel indices sketched: (R, SLOTS), -1 where fewer are present."""
    order = [channels.index(name) for name in preference if name in channels]
    order += [i for i in range(len(channels)) if i not in order]
    chosen = np.full((present.shape[0], SLOTS), -1, dtype=np.int64)
    for r in range(present.shape[0]):
        picked = [i for i in order if present[r, i]][:SLOTS]
        chosen[r, : len(picked)] = picked
    return chosen


def encode(leads: np.ndarray, values: np.ndarray) -> str:
    """One sketch: ``leads`` (SLOTS,) channel index or -1, ``values`` (SLOTS, L) int8 → base64 text."""
    head = np.where(leads < 0, NO_LEAD, leads).astype(np.uint8)
    return base64.b64encode(head.tobytes() + values.astype(np.int8).tobytes()).decode("ascii")


def decode(texts, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sketches → ``(leads (n, SLOTS) int16, -1 absent; values (n, SLOTS, L) int8)``; null or short ones absent.

    ``texts``: a sequence of base64 strings (or None), or a polars String Series.
    """
    import polars as pl

    series = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
    raw = series.str.decode("base64")
    sizes = raw.bin.size().fill_null(0).to_numpy()
    if length is None:
        common = np.bincount(sizes[sizes > SLOTS]).argmax() if (sizes > SLOTS).any() else SLOTS + SLOTS * 8
        length = (int(common) - SLOTS) // SLOTS
    width = SLOTS * (1 + length)
    ok = sizes == width
    n = len(series)
    buffer = np.zeros((n, width), dtype=np.uint8)
    if ok.any():
        picked = raw.filter(pl.Series(ok))
        joined = b"".join(picked.to_list())
        buffer[ok] = np.frombuffer(joined, dtype=np.uint8).reshape(-1, width)
    leads = buffer[:, :SLOTS].astype(np.int16)
    leads[(leads == NO_LEAD) | ~ok[:, None]] = -1
    values = buffer[:, SLOTS:].view(np.int8).reshape(n, SLOTS, length)
    return leads, values


def window_sketches(windows: np.ndarray, fs: float, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sketches of a record's windows ``windows`` (W, C, T) at ``fs``, of channels ``chosen`` (SLOTS,).

    Returns ``(leads (W, SLOTS), values (W, SLOTS, L) int8)``; a slot without a lead or whose lead
    is flat in a window has lead -1 there.
    """
    w = windows.shape[0]
    length = sketch_length(windows.shape[-1] / fs)
    values = np.zeros((w, SLOTS, length), dtype=np.int8)
    leads = np.tile(chosen, (w, 1))
    used = chosen >= 0
    if used.any() and w:
        q, usable = quantise(band_limited(windows[:, chosen[used]], fs))
        values[:, used] = q
        leads[:, used] = np.where(usable, chosen[used][None, :], -1)
    return leads, values


def ecg_columns(
    raw: np.ndarray,
    fs: float,
    present: np.ndarray,
    windows: np.ndarray,
    channels: list[str],
    window_fs: float,
    limits: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[list[dict[str, str]]]:
    """The fingerprint columns of a batch of records: per record, per window ``{fp_signal, fp_sketch}``.

    ``raw`` (R, C, T) mV at ``fs`` (the mapped source signal), ``present`` (R, C), ``windows``
    (R, W, C, N, P) as prepared at ``window_fs``; ``limits``: each channel's largest and smallest value
    of ``raw``, (R, C) each, when the caller has them.  Records that sketch the same leads are sketched
    together.
    """
    n, count = windows.shape[:2]
    if raw[0].size:
        top, bottom = (raw.max(axis=-1), raw.min(axis=-1)) if limits is None else limits
        # µV rounding is monotonic, so a record's extreme µV are its extreme values' µV: no pass over micro
        high, low = _micro(top.max(axis=1)), _micro(bottom.min(axis=1))
    else:
        low, high = np.zeros(n), np.zeros(n)
    # one record at a time: its µV values stay in the core's cache from rounding to hashing
    exact = [_hash(_micro(raw[r]), fs, present[r], low[r], high[r]) for r in range(n)]
    chosen = slots(present, channels)
    flat = windows.reshape(n, count, windows.shape[2], -1)
    length = sketch_length(flat.shape[-1] / window_fs)
    leads = np.full((n, count, SLOTS), -1, dtype=np.int64)
    values = np.zeros((n, count, SLOTS, length), dtype=np.int8)
    for pattern in np.unique(chosen, axis=0):
        rows = np.flatnonzero((chosen == pattern).all(axis=1))
        got_leads, got_values = window_sketches(flat[rows].reshape(-1, *flat.shape[2:]), window_fs, pattern)
        leads[rows] = got_leads.reshape(len(rows), count, SLOTS)
        values[rows] = got_values.reshape(len(rows), count, SLOTS, length)
    return [
        [{"fp_signal": exact[r], "fp_sketch": encode(leads[r, w], values[r, w])} for w in range(count)]
        for r in range(n)
    ]


# ---- index and verification ---------------------------------------------------------------------


@lru_cache(maxsize=8)
def _projections(length: int) -> np.ndarray:
    rng = np.random.default_rng(PROJECTION_SEED + length)
    return rng.standard_normal((BANDS * BITS, length)).astype(np.float32)


def band_keys(leads: np.ndarray, values: np.ndarray, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """LSH keys of sketches: ``(keys (n, SLOTS * BANDS) uint64, valid (n, SLOTS * BANDS) bool)``.

    A key packs the slot's lead, the band's number and its :data:`BITS` sign bits of random
    projections of the sketch, so two sketches share a key when one lead's sketch falls on the same
    side of all ``BITS`` hyperplanes of one band; near copies (correlation ρ) do so in a band with
    probability ``(1 - arccos(ρ)/π) ** BITS`` (0.33 at ρ = 0.99, 0.077 at 0.95: over the 24 bands of
    two leads at least one matches with probability 0.99993 and 0.86), unrelated windows with
    ``2 ** -BITS`` at ρ = 0 (6e-8; 4e-6 at ρ = 0.3).
    """
    n, slots_, length = values.shape
    planes = _projections(length).T  # (L, BANDS * BITS)
    shifts = np.arange(0, BITS, 8, dtype=np.uint64)  # each packed byte's place in the band's bits
    band = np.arange(BANDS, dtype=np.uint64) << np.uint64(32)
    keys = np.zeros((n, slots_, BANDS), dtype=np.uint64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        for s in range(slots_):
            z = values[start:stop, s].astype(np.float32)
            z -= z.mean(axis=1, keepdims=True)
            signs = (z @ planes) > 0  # (rows, BANDS * BITS)
            packed = np.packbits(signs.reshape(stop - start, BANDS, BITS), axis=2, bitorder="little")
            bits = (packed.astype(np.uint64) << shifts).sum(axis=2, dtype=np.uint64)
            lead = np.maximum(leads[start:stop, s], 0).astype(np.uint64) << np.uint64(40)
            keys[start:stop, s] = lead[:, None] | band[None, :] | bits
    valid = np.repeat(leads >= 0, BANDS, axis=1)
    return keys.reshape(n, slots_ * BANDS), valid


def similarity(
    leads_a: np.ndarray, values_a: np.ndarray, leads_b: np.ndarray, values_b: np.ndarray, max_lag: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlation of paired sketches (rows i of a and b): ``(corr (m,), lag (m,), leads compared (m,))``.

    Per pair, the leads both sketched are compared at lags ``-max_lag … max_lag`` sketch samples
    (b shifted against a); ``corr`` is the mean over those leads of Pearson's r, at the lag where
    that mean is highest (NaN when no lead is common).
    """
    m, _, length = values_a.shape
    width = length - 2 * max_lag
    total = np.zeros((2 * max_lag + 1, m))
    count = np.zeros(m, dtype=np.int64)
    for i in range(leads_a.shape[1]):
        for j in range(leads_b.shape[1]):
            same = (leads_a[:, i] >= 0) & (leads_a[:, i] == leads_b[:, j])
            if not same.any():
                continue
            count += same
            a = values_a[:, i, max_lag : length - max_lag].astype(np.float32)
            a -= a.mean(axis=1, keepdims=True)
            norm_a = np.sqrt(np.einsum("ml,ml->m", a, a))
            b = values_b[:, j].astype(np.float32)
            for k, lag in enumerate(range(-max_lag, max_lag + 1)):
                part = b[:, max_lag + lag : max_lag + lag + width]
                s1 = part.sum(axis=1, dtype=np.float64)
                s2 = np.einsum("ml,ml->m", part, part).astype(np.float64)
                norm_b = np.sqrt(np.maximum(s2 - s1 * s1 / width, 0.0))
                dot = np.einsum("ml,ml->m", a, part)  # a is centred: b's mean drops out
                r = dot / np.maximum(norm_a * norm_b, 1e-9)
                total[k] += np.where(same, r, 0.0)
    mean = total / np.where(count > 0, count, 1)[None, :]
    k = mean.argmax(axis=0)
    best = np.where(count > 0, mean[k, np.arange(m)], np.nan)
    return best, k - max_lag, count
