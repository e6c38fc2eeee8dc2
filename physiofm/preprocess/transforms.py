"""Pure signal transforms, vectorised over every leading axis (records, channels).

Every function takes arrays whose last axis is time and returns new arrays; none loops over
channels in Python.  Filter designs are cached, so calling these per batch costs only the
numerical work.

Two ways to resample and band-pass (a recipe's ``filter.method``):

* ``sosfiltfilt`` (recipe version 1): :func:`resample` (``resample_poly``), then :func:`bandpass`
  and :func:`notch` (``sosfiltfilt``), in float64;
* ``fft`` (default since recipe version 2): :func:`resample_filter`, one real FFT per record and
  channel that resamples and multiplies the spectrum by ``|H(f)|^2`` of the same Butterworth
  band-pass and notch (the magnitude ``sosfiltfilt`` applies, with zero phase), in float32, the
  record extended by odd reflection at both ends.  Away from the first and last second the two
  agree to about 1e-3 of the signal's rms (measured and tested in ``tests/test_transforms.py``);
  near the edges both are edge treatments of their own and differ more.

``scipy.signal`` (about a second to import) is imported only by the ``sosfiltfilt`` path.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def _ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def resample(x: np.ndarray, fs_in: float, fs_out: float = 200.0) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliasing FIR, Kaiser window).

    The signal is extended linearly past its edges (not with zeros), so a DC level such as
    Emotiv EEG's ~4,200 µV does not become a step that rings into the first and last seconds.
    """
    if fs_in == fs_out:
        return x
    from scipy import signal

    up, down = _ratio(float(fs_in), float(fs_out))
    return signal.resample_poly(x, up, down, axis=-1, padtype="line")


def resampled_length(n: int, fs_in: float, fs_out: float = 200.0) -> int:
    up, down = _ratio(float(fs_in), float(fs_out))
    return -(-n * up // down)


@lru_cache(maxsize=64)
def _bandpass_sos(fs: float, low: float, high: float, order: int) -> np.ndarray:
    from scipy import signal

    nyquist = fs / 2
    if high >= nyquist:
        return signal.butter(order, low, btype="highpass", fs=fs, output="sos")
    return signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")


def bandpass(x: np.ndarray, fs: float, low: float, high: float, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass along the last axis (high-pass if ``high`` ≥ Nyquist)."""
    from scipy import signal

    return signal.sosfiltfilt(_bandpass_sos(float(fs), float(low), float(high), int(order)), x, axis=-1)


@lru_cache(maxsize=16)
def _notch_sos(fs: float, freq: float, quality: float) -> np.ndarray:
    from scipy import signal

    b, a = signal.iirnotch(freq, quality, fs=fs)
    return signal.tf2sos(b, a)


def notch(x: np.ndarray, fs: float, freq: float, quality: float = 30.0) -> np.ndarray:
    """Zero-phase notch at ``freq`` Hz along the last axis."""
    from scipy import signal

    return signal.sosfiltfilt(_notch_sos(float(fs), float(freq), float(quality)), x, axis=-1)


def butter_power(freqs: np.ndarray, fs: float, low: float, high: float, order: int) -> np.ndarray:
    """``|H(f)|^2`` of :func:`bandpass`'s Butterworth filter at ``freqs`` Hz, in closed form.

    ``scipy.signal.butter`` designs the analog prototype at pre-warped edges and maps it by the
    bilinear transform, so at ``f`` the digital filter's magnitude is the prototype's at the warped
    frequency ``w = tan(pi f / fs)``: ``1 / (1 + ((w^2 - w1 w2) / ((w2 - w1) w))^(2 order))`` for the
    band-pass, ``1 / (1 + (w_low / w)^(2 order))`` for the high-pass (``high`` ≥ Nyquist).  This is
    the response of filtering forwards and backwards (tested against ``freqz_sos``).
    """
    w = np.tan(np.pi * np.minimum(np.asarray(freqs, dtype=np.float64), fs / 2) / fs)
    w1 = math.tan(math.pi * low / fs)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if high >= fs / 2:
            ratio = w1 / w
        else:
            w2 = math.tan(math.pi * high / fs)
            ratio = (w * w - w1 * w2) / ((w2 - w1) * w)
        power = 1.0 / (1.0 + ratio ** (2 * order))
    return np.nan_to_num(power, nan=0.0)


def notch_power(freqs: np.ndarray, fs: float, freq: float, quality: float = 30.0) -> np.ndarray:
    """``|H(f)|^2`` of :func:`notch`'s filter (``scipy.signal.iirnotch``, its formulas) at ``freqs`` Hz."""
    w0 = 2 * math.pi * freq / fs
    beta = math.tan(w0 / quality / 2)
    gain = 1 / (1 + beta)
    z = np.exp(-1j * 2 * np.pi * np.asarray(freqs, dtype=np.float64) / fs)
    b = gain * (1 - 2 * math.cos(w0) * z + z * z)
    a = 1 - 2 * gain * math.cos(w0) * z + (2 * gain - 1) * z * z
    return np.abs(b / a) ** 2


def poly_response(freqs: np.ndarray, fs_in: float, up: int, down: int) -> np.ndarray:
    """Amplitude response at ``freqs`` Hz of :func:`resample`'s anti-aliasing filter (``resample_poly``'s
    default: ``firwin(20 max(up, down) + 1, 1 / max(up, down), window=("kaiser", 5.0))`` at ``up x fs_in``;
    linear phase, its delay compensated, so the response is real)."""
    rate = max(up, down)
    half = 10 * rate
    m = np.arange(-half, half + 1, dtype=np.float64)
    taps = np.sinc(m / rate) / rate * np.kaiser(2 * half + 1, 5.0)
    taps /= taps.sum()
    omega = 2 * np.pi * np.asarray(freqs, dtype=np.float64) / (fs_in * up)
    # sum_k c_k cos(k omega) is a Chebyshev series in cos(omega): Clenshaw's recurrence, no cosine matrix
    coefficients = np.concatenate([taps[half : half + 1], 2 * taps[half + 1 :]])
    return np.polynomial.chebyshev.chebval(np.cos(omega), coefficients)


@lru_cache(maxsize=64)
def _response(n_out: int, fs_in: float, fs_out: float, filters: tuple) -> np.ndarray:
    """What :func:`resample_filter` multiplies the rfft bins of ``n_out`` output samples by: the
    band-pass's and notch's ``|H(f)|^2`` and the resampler's amplitude response."""
    low, high, order, notch, notch_q = filters
    freqs = np.arange(n_out // 2 + 1) * (fs_out / n_out)
    response = butter_power(freqs, fs_out, low, high, order)
    if notch:
        response = response * notch_power(freqs, fs_out, notch, notch_q)
    if fs_in != fs_out:
        up, down = _ratio(fs_in, fs_out)
        response = response * poly_response(freqs, fs_in, up, down)
    response.setflags(write=False)
    return response


_CHUNK_BYTES = 2**18  # resample_filter's work per step: a core's cache, not the batch


@lru_cache(maxsize=256)
def _fast_length(n: int) -> int:
    import scipy.fft

    return scipy.fft.next_fast_len(n, real=True)


def resample_filter(
    x: np.ndarray,
    fs_in: float,
    fs_out: float,
    low: float,
    high: float,
    order: int = 4,
    notch: float = 0.0,
    notch_q: float = 30.0,
    reflect_seconds: float = 1.0,
) -> np.ndarray:
    """Resample ``x`` (..., T) from ``fs_in`` to ``fs_out`` and apply the zero-phase band-pass (and
    notch) in one real FFT per row; float32 out, ``resampled_length(T)`` samples, sample ``k`` at
    ``k / fs_out`` s.

    The same result as ``notch(bandpass(resample(x)))`` away from the edges (the spectrum is cut at
    the output's Nyquist frequency, where the band-pass has long since stopped everything, and
    multiplied by ``|H(f)|^2``).  Edges: the record is extended at both ends by odd reflection
    (``2 x[0] - x[k]``, as ``sosfiltfilt`` pads) of ``reflect_seconds`` (at most the record, a whole
    number of the resampler's ``down`` blocks); the line through the extension's first and last
    samples is removed (the band-pass removes a line anyway, and the extension then wraps around
    without a step), and it is zero-padded to a fast FFT length.  ``low`` must be > 0.
    """
    import scipy.fft

    if not low > 0:
        raise ValueError("resample_filter needs a band-pass with a low edge above 0 Hz")
    up, down = (1, 1) if fs_in == fs_out else _ratio(float(fs_in), float(fs_out))
    *lead, length = x.shape
    pad = min(int(round(reflect_seconds * fs_in)), length - 1) // down * down
    extended = length + 2 * pad
    blocks = _fast_length(-(-extended // down))
    n_in, n_out = blocks * down, blocks * up
    bins = n_out // 2 + 1
    response = _response(
        n_out, float(fs_in), float(fs_out), (float(low), float(high), int(order), float(notch), float(notch_q))
    )
    gain = (response * (n_out / n_in)).astype(np.float32)
    start, size = pad * up // down, -(-length * up // down)
    rows = x.reshape(-1, length)
    out = np.empty((rows.shape[0], size), dtype=np.float32)
    # a few rows at a time (about 256 KB of work), each row's arithmetic exactly as for the whole
    # batch: the temporaries stay in the core's cache (0.50 -> 0.42 ms per 12-lead 10-s record)
    step = max(1, _CHUNK_BYTES // (4 * n_in))
    work = np.zeros((min(step, rows.shape[0]), n_in), dtype=np.float32)
    line = np.empty((work.shape[0], extended), dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, extended, dtype=np.float32)
    for first_row in range(0, rows.shape[0], step):
        part = rows[first_row : first_row + step]
        k = part.shape[0]
        w, trend = work[:k], line[:k]
        w[:, pad : pad + length] = part
        w[:, extended:] = 0.0
        if pad:
            edge = part[:, :1].astype(np.float32)
            w[:, :pad] = 2 * edge - w[:, 2 * pad : pad : -1]
            edge = part[:, -1:].astype(np.float32)
            w[:, pad + length : extended] = 2 * edge - w[:, pad + length - 2 : length - 2 : -1]
        first, last = w[:, :1].copy(), w[:, extended - 1 : extended].copy()
        np.multiply(last - first, ramp, out=trend)
        trend += first
        w[:, :extended] -= trend
        spectrum = scipy.fft.rfft(w, axis=-1)
        if n_out <= n_in:
            spectrum = spectrum[:, :bins]
        else:
            wider = np.zeros((k, bins), dtype=spectrum.dtype)
            wider[:, : spectrum.shape[-1]] = spectrum
            if n_in % 2 == 0:
                wider[:, n_in // 2] *= 0.5  # the input's Nyquist bin is split between +f and -f
            spectrum = wider
        spectrum *= gain
        out[first_row : first_row + k] = scipy.fft.irfft(spectrum, n=n_out, axis=-1, overwrite_x=True)[
            :, start : start + size
        ]
    return out.reshape(*lead, size)


def filter_section(x: np.ndarray, fs_in: float, fs_out: float, section: dict) -> np.ndarray:
    """Resample to ``fs_out``, band-pass and notch as a recipe section says (``bandpass``, ``order``,
    ``notch``, ``notch_q``, ``method``): ``fft`` (:func:`resample_filter`, float32) or ``sosfiltfilt``
    (:func:`resample` then :func:`bandpass` and :func:`notch`, float64; the default when a recipe does
    not name a method, as recipes before version 2 did not)."""
    low, high = section["bandpass"]
    notch_at = float(section.get("notch") or 0.0)
    method = section.get("method", "sosfiltfilt")
    if method == "fft":
        return resample_filter(x, fs_in, fs_out, low, high, section["order"], notch_at, section.get("notch_q", 30.0))
    if method != "sosfiltfilt":
        raise ValueError(f"unknown filter method {method!r} (fft or sosfiltfilt)")
    out = bandpass(resample(x, fs_in, fs_out), fs_out, low, high, order=section["order"])
    return notch(out, fs_out, notch_at, section["notch_q"]) if notch_at else out


def n_windows(n_samples: int, window: int, pad_min: int | None) -> int:
    """Whole windows in ``n_samples``, plus a padded last one if it holds ≥ ``pad_min`` samples."""
    full, rest = divmod(n_samples, window)
    return full + (1 if pad_min and rest >= pad_min else 0)


def to_windows(x: np.ndarray, window: int, patch: int, count: int) -> np.ndarray:
    """Cut ``x`` (..., C, T) into ``count`` windows of (C, window/patch, patch).

    Returns (..., count, C, N, patch); a last window that runs past T is zero-padded.
    """
    *lead, channels, length = x.shape
    need = count * window
    if length < need:
        pad = np.zeros((*lead, channels, need - length), dtype=x.dtype)
        x = np.concatenate([x, pad], axis=-1)
    x = x[..., :need].reshape(*lead, channels, count, window // patch, patch)
    return np.moveaxis(x, -3, -4)


def window_any(mask: np.ndarray, fs: float, window_s: float, count: int) -> np.ndarray:
    """Which windows of length ``window_s`` contain a True sample of ``mask`` (..., T) at ``fs``.

    Returns (..., count) bool.
    """
    return window_fraction(mask, fs, window_s, count) > 0


def window_fraction(mask: np.ndarray, fs: float, window_s: float, count: int) -> np.ndarray:
    """Fraction of samples per window where ``mask`` (..., T) is True, mapped by time."""
    length = mask.shape[-1]
    per = window_s * fs
    if float(per).is_integer():  # windows of whole samples: a reshape instead of a cumulative sum
        per = int(per)
        need = count * per
        if length < need:
            mask = np.concatenate([mask, np.zeros((*mask.shape[:-1], need - length), dtype=bool)], axis=-1)
        counts = mask[..., :need].reshape(*mask.shape[:-1], count, per).sum(axis=-1)
        return counts / per
    bounds = np.minimum(np.round(np.arange(count + 1) * per).astype(np.int64), length)
    csum = np.concatenate(
        [np.zeros((*mask.shape[:-1], 1), dtype=np.int64), np.cumsum(mask, axis=-1, dtype=np.int64)], axis=-1
    )
    counts = csum[..., bounds[1:]] - csum[..., bounds[:-1]]
    return counts / max(per, 1.0)
