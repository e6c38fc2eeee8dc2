"""Amplitude statistics of a store: are its signals in the unit the store says, on every channel?

A wrong unit does not break a build: a reader that takes mV for 0.1 mV, a header that says µV
for mV, or one lead written with the wrong gain gives a store of the right shapes and dtype,
ten or a thousand times off.  These statistics make such a store visible: per batch of
prepared windows the workers compute :func:`window_stats` (stored in the unit markers), the
build combines them with :func:`summarise` into ``build.json["amplitude"]``, and
``physiofm validate`` compares the result with physiological ranges.

Per window (sample) and channel:

* ``p99``: the 99th percentile of ``|x|``, a robust amplitude (a spike or two does not move it;
  on a band-passed ECG it sits a little below the R peaks).  ``None`` for an absent channel,
  one that is exactly zero everywhere in the window (a lead the source did not have).
* ECG only, ``r_peak``: the median height of the QRS peaks found on lead II (channel ``"II"``),
  ``None`` where the store has no lead II, where it is absent in the window, or where fewer
  than two peaks are found.  Heights are of ``|x|``, so a lead II whose QRS points down counts
  its S waves.

Zero-padded patches at the end of a window (short records kept as a last partial window) are
left out of both.  Values are those of the store: mV for ECG, µV for EEG.  Everything here is
pure NumPy/SciPy and JSON-able (missing values are ``None``, never NaN: the markers and
``build.json`` are written with ``allow_nan=False``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

UNITS = {"ecg": "mV", "eeg": "uV"}
"""The unit of each modality in a store (the preparers' output units)."""

R_LEAD = "II"
PEAK_DISTANCE_S = 0.3  # two QRS peaks are at least this far apart (200 bpm)
PEAK_PROMINENCE = 0.5  # × the lead's p99: a QRS stands out of the window; P and most T waves do not
PEAK_KEEP = 0.5  # peaks lower than this × the 90th percentile of the peaks found are not QRS
DIGITS = 6  # significant digits kept: statistics, not data


def _round(value: float) -> float | None:
    """``value`` to ``DIGITS`` significant digits; None for NaN or infinity (JSON without NaN)."""
    return float(f"{value:.{DIGITS}g}") if np.isfinite(value) else None


def percentile_99(magnitude: np.ndarray) -> np.ndarray:
    """``np.percentile(magnitude, 99, axis=-1)`` (linear interpolation), by partition: about twice as fast."""
    n = magnitude.shape[-1]
    position = 0.99 * (n - 1)
    low = int(position)
    high = min(low + 1, n - 1)
    part = np.partition(magnitude, [low, high], axis=-1)
    return part[..., low] + (position - low) * (part[..., high] - part[..., low])


def _valid_length(window: np.ndarray) -> int:
    """Samples of a (C, T) window before its trailing zero padding (all channels zero)."""
    nonzero = np.flatnonzero(np.any(window != 0, axis=0))
    return int(nonzero[-1]) + 1 if len(nonzero) else 0


def r_peak_height(x: np.ndarray, fs: float, reference: float | None = None) -> float | None:
    """Median height of the QRS peaks of ``|x|`` (one lead, one window), or None if fewer than two.

    ``reference`` is ``percentile_99(|x|)`` when the caller has it already (the same value)."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    if not len(a) or not a.any():
        return None
    reference = float(percentile_99(a)) if reference is None else float(reference)
    if reference <= 0:
        return None
    from scipy.signal import find_peaks  # ~1 s to import: only where an ECG lead II is measured

    peaks, _ = find_peaks(a, distance=max(1, round(PEAK_DISTANCE_S * fs)), prominence=PEAK_PROMINENCE * reference)
    heights = a[peaks]
    if len(heights):
        heights = heights[heights >= PEAK_KEEP * np.percentile(heights, 90)]
    return float(np.median(heights)) if len(heights) >= 2 else None


def window_stats(modality: str, windows: np.ndarray, channels: Sequence[str], fs: float) -> dict[str, list]:
    """Amplitude statistics of a batch of prepared windows ``(S, C, N, P)`` of ``modality``.

    Returns ``{"channels": [C names], "p99": [S lists of C values], "r_peak": [S values]}``
    (``r_peak`` for ECG only); values are floats or ``None`` (absent channel, no lead II).
    ``fs`` is the windows' sampling rate (the recipe's ``signal.fs``).
    """
    data = np.asarray(windows)
    if data.ndim != 4:
        raise ValueError(f"windows must be (samples, channels, patches, patch), not {data.shape}")
    samples, count = data.shape[0], data.shape[1]
    if len(channels) != count:
        raise ValueError(f"{len(channels)} channel names for {count} channels")
    flat = data.reshape(samples, count, data.shape[2] * data.shape[3])
    lead = list(channels).index(R_LEAD) if modality == "ecg" and R_LEAD in channels else None
    p99: list[list[float | None]] = []
    r_peak: list[float | None] = []
    for window in flat:
        window = window[:, : _valid_length(window)].astype(np.float64)
        magnitude = np.abs(window)
        present = magnitude.any(axis=1) if window.shape[1] else np.zeros(count, dtype=bool)
        values = percentile_99(magnitude) if window.shape[1] else np.zeros(count)
        p99.append([_round(v) if ok else None for v, ok in zip(values.tolist(), present.tolist())])
        if modality == "ecg":
            height = r_peak_height(window[lead], fs, values[lead]) if lead is not None and present[lead] else None
            r_peak.append(None if height is None else _round(height))
    out: dict[str, list] = {"channels": list(channels), "p99": p99}
    if modality == "ecg":
        out["r_peak"] = r_peak
    return out


def _figures(values: Iterable[float]) -> dict[str, float | int | None]:
    """Median, quartiles and count of ``values`` (None when there are none)."""
    array = np.asarray(list(values), dtype=np.float64)
    if not len(array):
        return {"median": None, "q1": None, "q3": None, "windows": 0}
    q1, median, q3 = np.percentile(array, [25, 50, 75]).tolist()
    return {"median": _round(median), "q1": _round(q1), "q3": _round(q3), "windows": int(len(array))}


def summarise(stats: Iterable[dict]) -> dict:
    """Combine per-batch results ``[{modality: window_stats(...)}, ...]`` of a store.

    Returns, per modality, ``{"unit", "windows", "channels": {name: figures of p99}}`` and for
    ECG ``"r_peak_ii"`` (figures of the lead II R peaks, over the windows that have one), where
    the figures are ``{"median", "q1", "q3", "windows"}`` (``windows``: those where the channel
    is present).  This is what ``build.json`` holds under ``"amplitude"``.
    """
    windows: dict[str, int] = {}
    p99: dict[str, dict[str, list[float]]] = {}
    peaks: dict[str, list[float]] = {}
    for batch in stats:
        for modality, section in batch.items():
            names = section["channels"]
            per_channel = p99.setdefault(modality, {})
            for name in names:
                per_channel.setdefault(name, [])
            windows[modality] = windows.get(modality, 0) + len(section["p99"])
            for row in section["p99"]:
                for name, value in zip(names, row):
                    if value is not None:
                        per_channel[name].append(value)
            if "r_peak" in section:
                peaks.setdefault(modality, []).extend(v for v in section["r_peak"] if v is not None)
    out: dict[str, dict] = {}
    for modality in sorted(windows):
        out[modality] = {
            "unit": UNITS.get(modality),
            "windows": windows[modality],
            "channels": {name: _figures(values) for name, values in p99[modality].items()},
        }
        if modality in peaks:
            out[modality]["r_peak_ii"] = _figures(peaks[modality])
    return out
