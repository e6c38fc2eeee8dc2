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
pure NumPy (no SciPy: its ``signal`` module takes about 2 s to import) and JSON-able (missing values are ``None``, never NaN: the markers and
``build.json`` are written with ``allow_nan=False``).
"""

from __future__ import annotations

import math
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
    return float(f"{value:.{DIGITS}g}") if math.isfinite(value) else None


def percentile_99(magnitude: np.ndarray) -> np.ndarray:
    """``np.percentile(magnitude, 99, axis=-1)`` (linear interpolation, float64), exactly, about 8x faster.

    One partition at the lower order statistic; the next one is the least of the values the partition
    put after it (a second ``kth`` would partition again).  Float32 input is partitioned as it is (the
    same order statistics) and interpolated in float64.
    """
    n = magnitude.shape[-1]
    position = 0.99 * (n - 1)
    low = int(position)
    part = np.partition(magnitude, low, axis=-1)
    below = part[..., low].astype(np.float64)
    above = part[..., low + 1 :].min(axis=-1).astype(np.float64) if low + 1 < n else below
    fraction = position - low
    if fraction >= 0.5:  # numpy's lerp, to the last bit: from the upper value when nearer to it
        return above - (above - below) * (1 - fraction)
    return below + (above - below) * fraction


def _valid_lengths(flat: np.ndarray) -> np.ndarray:
    """Samples of each (C, T) window of ``flat`` (S, C, T) before its trailing zero padding (all channels zero)."""
    nonzero = np.any(flat != 0, axis=1)  # (S, T)
    lengths = flat.shape[-1] - np.argmax(nonzero[:, ::-1], axis=1)
    lengths[~nonzero.any(axis=1)] = 0
    return lengths


def _row_percentile(ordered: np.ndarray, start: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    """``np.percentile(row[start:start + count], q)`` of each row of ``ordered`` (rows sorted; count >= 1)."""
    position = start + q / 100 * (count - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, start + count - 1)
    rows = np.arange(len(ordered))
    return ordered[rows, low] + (position - low) * (ordered[rows, high] - ordered[rows, low])


def _local_maxima(a: np.ndarray, least: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(row, position)`` of every local maximum at least ``least`` (S,) high of each row of ``a`` (S, T).

    As ``scipy.signal.find_peaks``: a rise, then equal values (a plateau, maybe none), then a fall;
    the position is the plateau's middle (rounded down); the first and last samples never count.
    Results are in row-major order.
    """
    inner = a[:, 1:-1]
    rise = (inner > a[:, :-2]) & (inner >= least[:, None])
    rows, cols = np.nonzero(rise & (inner > a[:, 2:]))
    cols = cols + 1
    level = rise & (inner == a[:, 2:])
    if level.any():  # plateaus (clipped or quantised signals): where the level run ends in a fall
        step = np.sign(np.diff(a, axis=1)).astype(np.int8)
        p_rows, p_cols = np.nonzero(step)
        signs = step[p_rows, p_cols]
        pair = (signs[:-1] == 1) & (signs[1:] == -1) & (p_rows[:-1] == p_rows[1:])
        first = np.flatnonzero(pair & (p_cols[1:] > p_cols[:-1] + 1))  # a rise, a level run, then a fall
        mid_rows, mid_cols = p_rows[first], (p_cols[first] + 1 + p_cols[first + 1]) // 2
        tall = a[mid_rows, mid_cols] >= least[mid_rows]
        rows = np.concatenate([rows, mid_rows[tall]])
        cols = np.concatenate([cols, mid_cols[tall]])
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
    return rows, cols


def _sparse_table(values: np.ndarray, reduce: np.ufunc, identity: float) -> list[np.ndarray]:
    """Level ``l`` holds ``reduce(values[:, i : i + 2**l])`` at column ``i`` (the identity past the end)."""
    levels = [values]
    span = 1
    while span * 2 <= values.shape[1]:
        last = levels[-1]
        shifted = np.full_like(last, identity)
        shifted[:, :-span] = last[:, span:]
        levels.append(reduce(last, shifted))
        span *= 2
    return levels


def _gather(level: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``level[s, columns[s, k]]`` for every ``[s, k]``."""
    return level[np.arange(len(level))[:, None], columns]


def _range(levels: list[np.ndarray], low: np.ndarray, high: np.ndarray, reduce: np.ufunc, identity: float):
    """``reduce(values[s, low:high + 1])`` for every ``[s, k]`` (the identity where ``high < low``)."""
    length = high - low + 1
    level = np.floor(np.log2(np.maximum(length, 1))).astype(np.int64)
    width = levels[0].shape[1]
    out = np.full(low.shape, identity)
    left = np.clip(low, 0, width - 1)
    for index in np.unique(level).tolist():
        span = 1 << index
        pick = (level == index) & (length >= 1)
        right = np.clip(high - span + 1, 0, width - 1)
        value = reduce(_gather(levels[index], left), _gather(levels[index], right))
        out = np.where(pick, value, out)
    return out


def _shifted(mask: np.ndarray, shift: int) -> np.ndarray:
    """``out[:, k] = mask[:, k + shift]`` (False past the ends)."""
    out = np.zeros_like(mask)
    if shift > 0:
        out[:, :-shift] = mask[:, shift:]
    else:
        out[:, -shift:] = mask[:, :shift]
    return out


def r_peak_heights(a: np.ndarray, fs: float, reference: np.ndarray) -> list[float | None]:
    """Median QRS peak height of each row of ``a`` (``|x|`` of one lead, (S, T)); None where fewer than two.

    ``reference`` (S,) is each row's :func:`percentile_99`.  The peaks are exactly those of
    ``scipy.signal.find_peaks(row, distance=PEAK_DISTANCE_S * fs, prominence=PEAK_PROMINENCE * reference)``
    (tests/test_amplitude.py compares them), found for all rows at once without SciPy (whose
    ``signal`` module takes about 2 s to import) and without a per-window call:

    * local maxima at least ``PEAK_PROMINENCE × reference`` high (a prominence is never more than
      the height, since ``a >= 0``; lower maxima cannot remove higher ones by distance);
    * by distance, higher peaks first: a peak closer than the distance to a higher kept peak goes;
    * a peak's prominence is its height above the higher of its two bases, a base being the lowest
      point between the peak and the nearest higher point on that side (or the row's end).  The
      nearest higher point lies on the slope of a higher local maximum, one of the candidates, so
      the bases are minima over runs of the segments between candidates.

    Peaks lower than ``PEAK_KEEP`` × the 90th percentile of a row's peaks are not QRS.
    """
    a = np.asarray(a, dtype=np.float64)
    samples, n = a.shape
    out: list[float | None] = [None] * samples
    reference = np.asarray(reference, dtype=np.float64)
    if not samples or n < 3:
        return out
    distance = max(1, round(PEAK_DISTANCE_S * fs))
    least = PEAK_PROMINENCE * reference
    rows, cols = _local_maxima(a, np.where(reference > 0, least, np.inf))
    heights = a[rows, cols]
    if not len(rows):
        return out
    # candidates as (S, K) matrices, padded; slot k of row s is its k-th candidate from the left
    counts = np.bincount(rows, minlength=samples)
    width = int(counts.max())
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    valid = np.zeros((samples, width), dtype=bool)
    valid[rows, slot] = True
    where = np.zeros((samples, width), dtype=np.int64)
    where[rows, slot] = cols
    height = np.full((samples, width), -np.inf)
    height[rows, slot] = heights
    # minima of the segments [row start, c0), [c0, c1), ..., [c_last, row end): (S, K + 1)
    flat = a.ravel()
    bounds = np.concatenate([np.arange(samples) * n, rows * n + cols])
    order = np.argsort(bounds, kind="stable")
    bounds = bounds[order]
    minima = np.minimum.reduceat(flat, bounds)
    segment = np.full((samples, width + 1), np.inf)
    seg_rows = np.concatenate([np.arange(samples), rows])[order]
    seg_slot = np.concatenate([np.zeros(samples, dtype=np.int64), slot + 1])[order]
    segment[seg_rows, seg_slot] = minima
    counts_col = counts[:, None]
    k = np.broadcast_to(np.arange(width), (samples, width))
    # the nearest higher candidate on each side (binary lifting over a sparse table of maxima)
    tallest = _sparse_table(height, np.maximum, -np.inf)
    left_wall, right_wall = k.copy(), k.copy()  # [left_wall, k) and (k, right_wall] hold nothing higher
    for level in range(len(tallest) - 1, -1, -1):
        span = 1 << level
        start_ = left_wall - span
        fits = start_ >= 0
        ok = fits & (_gather(tallest[level], np.maximum(start_, 0)) <= height)
        left_wall = np.where(ok, start_, left_wall)
        stop_ = right_wall + span
        fits = stop_ <= width - 1
        ok = fits & (_gather(tallest[level], np.minimum(right_wall + 1, width - 1)) <= height)
        right_wall = np.where(ok, stop_, right_wall)
    left_wall -= 1  # the higher candidate, or -1
    right_wall = np.minimum(right_wall + 1, counts_col)  # the higher candidate, or the row's count (none)
    lowest = _sparse_table(segment, np.minimum, np.inf)
    left_base = np.minimum(_range(lowest, left_wall + 1, k, np.minimum, np.inf), height)
    right_base = _range(lowest, k + 1, right_wall, np.minimum, np.inf)
    prominence = height - np.maximum(left_base, right_base)
    # distance, higher first (ties: the later one first, as find_peaks' argsort leaves them)
    rivals: list[tuple[int, np.ndarray]] = []  # (offset, [s, k]: the candidate at k + offset beats k)
    offset = 1
    while offset < width:
        ahead = valid[:, offset:] & valid[:, :-offset] & (where[:, offset:] - where[:, :-offset] < distance)
        if not ahead.any():
            break
        later, earlier = height[:, offset:], height[:, :-offset]
        beats_earlier = np.zeros((samples, width), dtype=bool)
        beats_earlier[:, :-offset] = ahead & (later >= earlier)
        beats_later = np.zeros((samples, width), dtype=bool)
        beats_later[:, offset:] = ahead & (earlier > later)
        rivals += [(offset, beats_earlier), (-offset, beats_later)]
        offset += 1
    alive = np.zeros_like(valid)
    decided = ~valid
    while not decided.all():
        rival_alive = np.zeros_like(valid)
        rival_open = np.zeros_like(valid)
        for shift, beats in rivals:
            rival_alive |= beats & _shifted(alive, shift)
            rival_open |= beats & ~_shifted(decided, shift)
        dead = ~decided & rival_alive
        born = ~decided & ~rival_alive & ~rival_open
        alive |= born
        decided |= dead | born
    kept = alive & (prominence >= least[:, None])
    peaks = np.where(kept, height, np.inf)
    peaks.sort(axis=1)  # each row's peaks first, ascending
    count = kept.sum(axis=1)
    some = np.flatnonzero(count >= 1)
    if not len(some):
        return out
    ordered, count = peaks[some], count[some]
    p90 = _row_percentile(ordered, np.zeros_like(count), count, 90)
    low = (ordered < PEAK_KEEP * p90[:, None]).sum(axis=1)  # the low ones come first: drop them
    left = count - low
    enough = left >= 2
    median = _row_percentile(ordered[enough], low[enough], left[enough], 50)
    for row, value in zip(some[enough].tolist(), median.tolist()):
        out[row] = value
    return out


def window_stats(modality: str, windows: np.ndarray, channels: Sequence[str], fs: float) -> dict[str, list]:
    """Amplitude statistics of a batch of prepared windows ``(S, C, N, P)`` of ``modality``.

    Returns ``{"channels": [C names], "p99": [S lists of C values], "r_peak": [S values]}``
    (``r_peak`` for ECG only); values are floats or ``None`` (absent channel, no lead II).
    ``fs`` is the windows' sampling rate (the recipe's ``signal.fs``).  Windows of one valid length
    (almost all of them: only a zero-padded last window is shorter) are measured together.
    """
    data = np.asarray(windows)
    if data.ndim != 4:
        raise ValueError(f"windows must be (samples, channels, patches, patch), not {data.shape}")
    samples, count = data.shape[0], data.shape[1]
    if len(channels) != count:
        raise ValueError(f"{len(channels)} channel names for {count} channels")
    flat = data.reshape(samples, count, data.shape[2] * data.shape[3])
    lead = list(channels).index(R_LEAD) if modality == "ecg" and R_LEAD in channels else None
    p99: list[list[float | None]] = [[None] * count for _ in range(samples)]
    r_peak: list[float | None] = [None] * samples
    lengths = _valid_lengths(flat)
    for length in np.unique(lengths[lengths > 0]).tolist():
        rows = np.flatnonzero(lengths == length)
        magnitude = np.abs(flat[rows, :, :length])
        present = magnitude.any(axis=-1)
        values = percentile_99(magnitude)  # float32 order statistics, interpolated in float64: as on float64
        for row, row_values, row_present in zip(rows.tolist(), values.tolist(), present.tolist()):
            p99[row] = [_round(v) if ok else None for v, ok in zip(row_values, row_present)]
        if lead is not None:
            measured = np.flatnonzero(present[:, lead])
            heights = r_peak_heights(magnitude[measured, lead], fs, values[measured, lead])
            for row, height in zip(rows[measured].tolist(), heights):
                r_peak[row] = None if height is None else _round(height)
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
