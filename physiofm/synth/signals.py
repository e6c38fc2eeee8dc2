"""Fast synthetic 12-lead ECG: a vectorcardiographic sum-of-Gaussians beat model.

Each beat is a handful of Gaussian waves (P, Q, R, S, terminal R', ST, T), each with a 3-D
heart vector (X left, Y inferior, Z posterior, in mV).  The vectorcardiogram is projected on
I, II and V1–V6 with Dower's inverse transform; III, aVR, aVL and aVF are derived from I and II,
so Einthoven's and Goldberger's relations hold exactly.  Conditions (atrial fibrillation, bundle
branch blocks, hypertrophy, …) change the rhythm and the wave vectors, so labels written by the
archive generators match what the signal shows.  Everything is vectorised over records.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

RHYTHMS = ("SR", "SB", "ST", "AF")
"""Sinus rhythm, sinus bradycardia, sinus tachycardia, atrial fibrillation."""

FINDINGS = ("1AVB", "RBBB", "LBBB", "LAFB", "LVH", "LVOLT", "IMI", "ASMI", "NDT", "NST")
"""First-degree AV block, right/left bundle branch block, left anterior fascicular block, left
ventricular hypertrophy, low QRS voltage, inferior/anteroseptal infarct, T-wave abnormality,
non-specific ST depression."""

CONDITIONS = RHYTHMS + FINDINGS

_EXCLUSIVE = ({"RBBB", "LBBB"}, {"LAFB", "LBBB"}, {"LVH", "LVOLT"}, {"NDT", "NST"})

_HR_RANGE = {"SB": (42.0, 58.0), "ST": (102.0, 135.0), "AF": (60.0, 130.0), "SR": (60.0, 100.0)}
_HR_DEFAULT = (50.0, 110.0)

# Dower inverse transform, rows I, II, V1..V6; columns X, Y, Z of the Frank vectorcardiogram.
_DOWER = np.array(
    [
        [0.632, -0.235, 0.059],
        [0.235, 1.066, -0.132],
        [-0.515, 0.157, -0.917],
        [0.044, 0.164, -1.387],
        [0.882, 0.098, -1.277],
        [1.213, 0.127, -0.601],
        [1.125, 0.127, -0.086],
        [0.831, 0.076, 0.230],
    ]
)

# Waves: name -> (centre relative to the R peak [s], width sigma [s], normal heart vector [mV]).
# The T centre is scaled by sqrt(RR) per beat (QT shortens with rate).
_WAVES = {
    "P": (-0.16, 0.022, (0.06, 0.11, -0.03)),
    "Q": (-0.032, 0.009, (-0.12, 0.04, -0.16)),
    "R": (0.0, 0.011, (0.85, 0.55, 0.30)),
    "S": (0.032, 0.010, (-0.25, -0.20, 0.35)),
    "R2": (0.075, 0.020, (0.0, 0.0, 0.0)),
    "ST": (0.14, 0.05, (0.0, 0.0, 0.0)),
    "T": (0.30, 0.055, (0.25, 0.20, -0.15)),
}
_NAMES = tuple(_WAVES)
_T_FALL = 0.038  # sigma of the T wave's descending half (T waves rise slowly, fall fast)
_QRS = ("Q", "R", "S", "R2")
_FWAVE = (0.3, 0.5, -0.8)  # direction of atrial fibrillation f-waves (largest in V1)


def sample_conditions(n: int, rng: np.random.Generator) -> list[frozenset[str]]:
    """Draw ``n`` label sets: one rhythm each, and for about half of them 1–2 compatible findings."""
    rhythms = rng.choice(RHYTHMS, size=n, p=(0.7, 0.1, 0.1, 0.1))
    out = []
    for rhythm in rhythms:
        labels = {str(rhythm)}
        if rng.random() < 0.55:
            wanted = int(rng.integers(1, 3))
            for finding in rng.permutation(FINDINGS):
                finding = str(finding)
                clash = any(finding in group and labels & group for group in _EXCLUSIVE)
                if not clash and not (finding == "1AVB" and rhythm == "AF"):
                    labels.add(finding)
                if len(labels) > wanted:
                    break
        out.append(frozenset(labels))
    return out


def is_normal(labels: Collection[str]) -> bool:
    """A label set is a normal ECG when it is sinus rhythm with no finding."""
    return "SR" in labels and not set(labels) & set(FINDINGS)


def heart_rates(conditions: Sequence[Collection[str]], rng: np.random.Generator) -> np.ndarray:
    """Mean heart rate (bpm) per record, in the range its rhythm label implies (50–110 if none)."""
    bounds = np.array([next((_HR_RANGE[r] for r in RHYTHMS if r in c), _HR_DEFAULT) for c in conditions])
    return rng.uniform(bounds[:, 0], bounds[:, 1]) if len(bounds) else np.zeros(0)


def _r_peaks(hr: np.ndarray, irregular: np.ndarray, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """R-peak times (n, B): the first before 0, the last after ``seconds``."""
    n = len(hr)
    beats = int(np.ceil((seconds + 1.0) / 0.3)) + 2
    mean_rr = 60.0 / hr[:, None]
    k = np.arange(beats)
    resp = rng.uniform(0.15, 0.35, (n, 1)) * mean_rr * k  # respiratory cycles elapsed
    sinus = 1 + rng.uniform(0.01, 0.05, (n, 1)) * np.sin(2 * np.pi * (resp + rng.random((n, 1))))
    sinus += 0.01 * rng.standard_normal((n, beats))
    fib = rng.lognormal(0.0, 0.22, (n, beats))
    rr = np.maximum(mean_rr * np.where(irregular[:, None], fib, sinus), 0.3)
    start = -rng.uniform(0.05, 1.0, (n, 1)) * rr[:, :1]
    return start + np.concatenate([np.zeros((n, 1)), np.cumsum(rr[:, :-1], axis=1)], axis=1)


def _previous_beat(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the last R peak at or before each sample time, per record: (n, T)."""
    n, beats = r.shape
    span = float(r.max() - r.min() + t[-1] + 1.0)
    rows = np.arange(n)[:, None] * span
    idx = np.searchsorted((r + rows).ravel(), (t[None, :] + rows).ravel(), side="right")
    return idx.reshape(n, len(t)) - 1 - np.arange(n)[:, None] * beats


def _wave_vectors(labels: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-record heart vectors (n, 3) of every wave, after conditions, scaling and rotation."""
    n = len(labels["AF"])
    vec = {w: np.tile(np.asarray(_WAVES[w][2], float), (n, 1)) for w in _NAMES}
    for w in _NAMES:
        vec[w] = vec[w] * rng.uniform(0.8, 1.2, (n, 1)) + rng.normal(0.0, 0.02, (n, 3))

    def where(flag: str, wave: str, value: np.ndarray | tuple[float, ...]) -> None:
        vec[wave] = np.where(labels[flag][:, None], np.asarray(value, float), vec[wave])

    where("AF", "P", (0.0, 0.0, 0.0))
    where("RBBB", "R2", (-0.35, 0.05, -0.60))
    where("LBBB", "Q", (0.0, 0.0, 0.0))
    where("LBBB", "R", (0.85, 0.20, 1.05))
    where("LBBB", "S", (0.0, 0.0, 0.0))
    where("LBBB", "T", (-0.20, -0.05, -0.30))
    where("LAFB", "R", (0.75, -0.55, 0.30))
    where("LAFB", "Q", (-0.05, 0.15, -0.10))
    where("IMI", "Q", (0.0, -0.35, 0.0))
    where("ASMI", "Q", (0.05, 0.0, 0.40))
    for w in ("R", "S"):
        vec[w] = vec[w] * np.where(labels["LVH"], 2.0, 1.0)[:, None]
    where("LVH", "T", (-0.15, -0.05, 0.15))
    for w in (*_QRS, "T"):
        vec[w] = vec[w] * np.where(labels["LVOLT"], 0.35 if w in _QRS else 0.6, 1.0)[:, None]
    vec["T"] = vec["T"] * np.where(labels["NDT"], rng.uniform(-0.4, 0.1, n), 1.0)[:, None]
    vec["ST"] = np.where(labels["NST"][:, None], -0.35 * vec["T"], vec["ST"])

    scale = {"P": rng.uniform(0.7, 1.3, n), "T": rng.uniform(0.7, 1.3, n)}
    qrs_scale = rng.uniform(0.7, 1.4, n)
    rot = _rotations(rng.normal(0.0, (0.15, 0.2, 0.25), (n, 3)))
    out = {}
    for w in _NAMES:
        v = vec[w] * scale.get(w, qrs_scale)[:, None]
        out[w] = np.einsum("nij,nj->ni", rot, v)
    return out


def _rotations(angles: np.ndarray) -> np.ndarray:
    """Rotation matrices (n, 3, 3) from angles about X, Y and Z (radians)."""
    c, s = np.cos(angles), np.sin(angles)
    n = len(angles)
    one, zero = np.ones(n), np.zeros(n)
    rx = np.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1).reshape(n, 3, 3)
    ry = np.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1).reshape(n, 3, 3)
    rz = np.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1).reshape(n, 3, 3)
    return rz @ ry @ rx


def ecg_12lead(
    n_records: int,
    fs: float,
    seconds: float,
    rng: np.random.Generator,
    *,
    conditions: Sequence[Collection[str]] | None = None,
    heart_rate: np.ndarray | float | None = None,
    noise: float = 0.006,
    wander: float = 0.08,
) -> np.ndarray:
    """Synthetic 12-lead ECGs, (n_records, 12, T) float64 in mV, leads in :data:`LEADS` order.

    ``conditions`` holds one label set per record (names from :data:`CONDITIONS`); without it
    every record is a normal sinus ECG.  ``heart_rate`` (bpm, scalar or per record) defaults to
    :func:`heart_rates`.  ``noise`` is the white-noise SD and ``wander`` the largest baseline
    wander amplitude, both in mV; noise is added to I, II and V1–V6 before the other limb leads
    are derived, so the lead relations hold exactly.
    """
    n, n_samples = n_records, int(round(fs * seconds))
    conds = [frozenset(c) for c in conditions] if conditions is not None else [frozenset()] * n
    if len(conds) != n:
        raise ValueError(f"{len(conds)} condition sets for {n} records")
    unknown = set().union(*conds) - set(CONDITIONS) if conds else set()
    if unknown:
        raise ValueError(f"unknown conditions {sorted(unknown)}; known: {CONDITIONS}")
    if n == 0:
        return np.zeros((0, 12, n_samples))
    labels = {c: np.array([c in s for s in conds]) for c in CONDITIONS}
    hr = heart_rates(conds, rng) if heart_rate is None else np.broadcast_to(np.asarray(heart_rate, float), (n,))

    t = np.arange(n_samples) / fs
    r = _r_peaks(hr, labels["AF"], seconds, rng)
    prev = _previous_beat(r, t)
    phase = {"prev": prev, "next": prev + 1}  # beat index each sample is timed from
    tau = {side: t - np.take_along_axis(r, k, 1) for side, k in phase.items()}

    beats = r.shape[1]
    amp = 1 + 0.03 * rng.standard_normal((n, beats))
    amp += rng.uniform(0, 0.06, (n, 1)) * np.sin(2 * np.pi * (rng.uniform(0.15, 0.35, (n, 1)) * r + rng.random((n, 1))))
    rr_before = np.diff(r, axis=1, prepend=r[:, :1] - 60.0 / hr[:, None])
    wide = labels["RBBB"] | labels["LBBB"]
    centre = {w: np.full((n, 1), _WAVES[w][0]) for w in _NAMES}
    centre["P"] = np.where(labels["1AVB"], rng.uniform(-0.30, -0.25, n), rng.uniform(-0.19, -0.14, n))[:, None]
    centre["T"] = (rng.uniform(0.27, 0.31, (n, 1)) + 0.04 * wide[:, None]) * np.sqrt(rr_before)
    sigma = {w: np.full((n, 1), _WAVES[w][1]) for w in _NAMES}
    sigma["R"] = np.where(labels["LBBB"], 0.026, 0.011)[:, None]
    sigma["S"] = np.where(labels["RBBB"], 0.016, 0.010)[:, None]
    # waves before the R peak belong to the next beat, those after it to the previous one
    sides = {"P": ("next",), "Q": ("prev", "next"), "R": ("prev", "next"), "S": ("prev", "next")}

    beat_amp = {side: np.take_along_axis(amp, phase[side], 1) for side in phase}
    shapes = np.zeros((n, len(_NAMES) + 1, n_samples))
    for i, w in enumerate(_NAMES):
        for side in sides.get(w, ("prev",)):
            c = centre[w] if centre[w].shape[1] == 1 else np.take_along_axis(centre[w], phase[side], 1)
            d = tau[side] - c
            s = np.where(d > 0, _T_FALL, sigma[w]) if w == "T" else sigma[w]
            shapes[:, i] += beat_amp[side] * np.exp(-0.5 * (d / s) ** 2)
    af = np.flatnonzero(labels["AF"])
    if len(af):
        f = rng.uniform(4.0, 8.0, (len(af), 3, 1))
        waves = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, (len(af), 3, 1))).sum(axis=1)
        shapes[af, -1] = rng.uniform(0.03, 0.08, (len(af), 1)) * waves

    vectors = _wave_vectors(labels, rng)
    vectors["F"] = np.tile(np.asarray(_FWAVE) / np.linalg.norm(_FWAVE), (n, 1))
    vcg_to_leads = np.einsum("lc,nwc->nlw", _DOWER, np.stack([vectors[w] for w in (*_NAMES, "F")], 1))
    leads = np.einsum("nlw,nwt->nlt", vcg_to_leads, shapes, optimize=True)  # I, II, V1..V6

    # baseline wander: two slow sinusoids per record, with amplitude and phase drawn per lead
    phi = 2 * np.pi * rng.uniform(0.05, 0.4, (n, 2, 1)) * t
    basis = np.concatenate([np.sin(phi), np.cos(phi)], axis=1)
    size, angle = rng.uniform(0, wander / 2, (n, 8, 2)), rng.uniform(0, 2 * np.pi, (n, 8, 2))
    mix = np.concatenate([size * np.cos(angle), size * np.sin(angle)], axis=2)
    leads += np.einsum("nlk,nkt->nlt", mix, basis, optimize=True)
    leads += noise * rng.standard_normal((n, 8, n_samples), dtype=np.float32)

    lead_i, lead_ii = leads[:, 0], leads[:, 1]
    derived = np.stack([lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2], 1)
    return np.concatenate([leads[:, :2], derived, leads[:, 2:]], axis=1)
