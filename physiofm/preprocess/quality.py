"""Per-window quality flags, shared by every modality (thresholds come from the recipe)."""

from __future__ import annotations

import numpy as np

from physiofm.preprocess import transforms as T

FLAGS = ("q_nan", "q_flat", "q_clip", "q_amplitude")


def any_nan(x: np.ndarray) -> np.ndarray | None:
    """``x``'s NaN mask, or None when it has no NaN (nearly always): one summing pass decides, and the
    mask is only made when the sum is not finite (a NaN, or an infinity: then the mask says which)."""
    if x.size and np.isfinite(x.sum()):
        return None
    mask = np.isnan(x)
    return mask if mask.any() else None


def extremes(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the largest and smallest sample of ``raw`` (R, C, T): ``(top, bottom)``, each (R, C).

    :func:`window_flags` needs them and so do the fingerprints: made once, passed to both."""
    return raw.max(axis=-1), raw.min(axis=-1)


def window_flags(
    raw: np.ndarray,
    nan: np.ndarray | None,
    present: np.ndarray,
    windows: np.ndarray,
    fs: float,
    window_s: float,
    *,
    flat_ptp: float,
    clip_fraction: float,
    amplitude_max: float,
    offset: int = 0,
    limits: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Flags (R, W) for windows of a stack of records.

    ``raw`` (R, C, T) is the source-rate signal in output units with NaNs zeroed and ``nan``
    its NaN mask (None: no NaN); ``present`` (R, C) marks channels that exist in the source; ``windows``
    (R, W, C, N, P) are the processed windows; ``offset`` is the source sample where window 0
    starts.  A window is flagged *nan* if it overlaps a NaN sample, *flat* if a present
    channel's peak-to-peak is below ``flat_ptp``, *clip* if more than ``clip_fraction`` of a
    channel's samples sit at that channel's extreme value, *amplitude* if |x| exceeds
    ``amplitude_max``.  ``limits`` is :func:`extremes` of ``raw`` when the caller has it (with
    ``offset`` 0).
    """
    count = windows.shape[1]
    if offset:
        raw, nan, limits = raw[..., offset:], None if nan is None else nan[..., offset:], None
    top, bottom = extremes(raw) if limits is None else limits
    top, bottom = top[..., None], bottom[..., None]
    varying = (top > bottom)[..., 0] & present
    is_top, is_bottom = raw == top, raw == bottom
    # A window's share of extreme samples is at most the record's count over the window length: only
    # channels whose count passes that bound can flag one (rarely any), so only those are cut up.
    at_limits = np.count_nonzero(is_top, axis=-1) + np.count_nonzero(is_bottom, axis=-1)
    suspect = varying & (at_limits / (window_s * fs) > clip_fraction)
    clip = np.zeros((raw.shape[0], count), dtype=bool)
    if suspect.any():
        rows = np.flatnonzero(suspect.any(axis=1))
        at_extreme = (is_top[rows] | is_bottom[rows]) & suspect[rows][..., None]
        clip[rows] = (T.window_fraction(at_extreme, fs, window_s, count) > clip_fraction).any(axis=1)
    high, low = windows.max(axis=(-2, -1)), windows.min(axis=(-2, -1))  # (R, W, C)
    has_nan = nan is not None and nan.any()  # nearly never: then no window needs mapping
    return {
        "q_nan": T.window_any(nan.any(axis=1), fs, window_s, count) if has_nan else np.zeros_like(clip),
        "q_flat": ((high - low < flat_ptp) & present[:, None, :]).any(axis=-1),
        "q_clip": clip,
        "q_amplitude": (np.maximum(high, -low) > amplitude_max).any(axis=-1),  # max |x|, from the same passes
    }


def drop_reason(flags: dict[str, bool], drop: set[str]) -> str | None:
    """The reject reason for a window whose flags hit the drop policy, else None."""
    hit = [name[2:] for name, value in flags.items() if value and name[2:] in drop]
    return f"window flagged {', '.join(hit)}" if hit else None
