"""Pure signal transforms, vectorised over every leading axis (records, channels).

Every function takes arrays whose last axis is time and returns new arrays; none loops over
channels in Python.  Filter designs are cached, so calling these per batch costs only the
numerical work.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal


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
    up, down = _ratio(float(fs_in), float(fs_out))
    return signal.resample_poly(x, up, down, axis=-1, padtype="line")


def resampled_length(n: int, fs_in: float, fs_out: float = 200.0) -> int:
    up, down = _ratio(float(fs_in), float(fs_out))
    return -(-n * up // down)


@lru_cache(maxsize=64)
def _bandpass_sos(fs: float, low: float, high: float, order: int) -> np.ndarray:
    nyquist = fs / 2
    if high >= nyquist:
        return signal.butter(order, low, btype="highpass", fs=fs, output="sos")
    return signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")


def bandpass(x: np.ndarray, fs: float, low: float, high: float, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass along the last axis (high-pass if ``high`` ≥ Nyquist)."""
    return signal.sosfiltfilt(_bandpass_sos(float(fs), float(low), float(high), int(order)), x, axis=-1)


@lru_cache(maxsize=16)
def _notch_sos(fs: float, freq: float, quality: float) -> np.ndarray:
    b, a = signal.iirnotch(freq, quality, fs=fs)
    return signal.tf2sos(b, a)


def notch(x: np.ndarray, fs: float, freq: float, quality: float = 30.0) -> np.ndarray:
    """Zero-phase notch at ``freq`` Hz along the last axis."""
    return signal.sosfiltfilt(_notch_sos(float(fs), float(freq), float(quality)), x, axis=-1)


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
