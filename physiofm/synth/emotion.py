"""Layout-exact synthetic DREAMER, AMIGOS and MAHNOB-HCI archives with a planted relation.

The three generators write the on-disk layout of the real (EULA-restricted) datasets as
described in ``shared/docs/datasets.md`` §1-3, filled with synthetic EEG and ECG whose
physiology depends on the self-assessment scores (the *planted relation*, documented with
its formulas in ``docs/planted-relation.md``):

* ECG heart rate rises with arousal; ECG beat-to-beat variability rises with ``d + w``;
* EEG alpha (8-12 Hz) power falls with valence; EEG beta power rises with ``d - w``;

where ``d`` is the normalised dominance score and ``w`` a per-trial nuisance draw, so that
dominance is recoverable only from both modalities together.  Subject-specific offsets and
trial-level noise keep it realistic.  Every generator is deterministic per ``seed`` and draws
each subject from its own random stream, so subject 1 is the same whatever ``subjects`` is.

Options plant a sharp pulse at a known instant in both modalities (``event_at``), NaN
stretches (``nan_at``) and broken inputs (``corrupt``, ``no_triggers``, ``unrated``,
``missing_long``) for reader tests.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.io import savemat
from scipy.signal import lfilter

BIOSEMI32_CHANNELS = (
    "Fp1", "AF3", "F3", "F7", "FC5", "FC1", "C3", "T7", "CP5", "CP1", "P3", "P7", "PO3", "O1", "Oz", "Pz",
    "Fp2", "AF4", "Fz", "F4", "F8", "FC6", "FC2", "Cz", "C4", "T8", "CP6", "CP2", "P4", "P8", "PO4", "O2",
)  # fmt: skip
MAHNOB_CHANNELS = (
    *BIOSEMI32_CHANNELS,
    *(f"EXG{i}" for i in range(1, 9)),
    "GSR1", "GSR2", "Erg1", "Erg2", "Resp", "Temp", "Status",
)  # fmt: skip
AMIGOS_VIDEO_IDS = (
    "4", "5", "9", "10", "13", "18", "19", "20", "23", "30", "31", "34", "36", "58", "80", "138",
    "N1", "P1", "B1", "U1",
)  # fmt: skip
AMIGOS_MISSING_LONG = (8, 24, 28)  # participants without the long-video experiment

Corruption = Literal["truncated", "v7.3", "v4"]
Event = tuple[int, int, float]  # (subject, trial, seconds after the stimulus start), 1-based
NanSpan = tuple[int, int, float, float]  # (subject, trial, start s, duration s) in the stimulus

# ---- planted relation (see docs/planted-relation.md) ------------------------------------------
HR_PER_AROUSAL = 12.0  # bpm per unit of normalised arousal
HR_NOISE = 1.5  # bpm, per segment
HRV_PER_DOMINANCE = 0.45  # log RR-variability per unit of (d + w)
ALPHA_PER_VALENCE = -0.55  # log alpha amplitude per unit of normalised valence
BETA_PER_DOMINANCE = 0.45  # log beta amplitude per unit of (d - w)
BAND_NOISE = 0.08  # sd of the per-segment log-amplitude noise of alpha and beta
SPLIT_SD = 0.7  # sd of w, the part of dominance each modality sees with opposite sign

EVENT_SIGMA = 0.010  # s, width of the planted pulse
EVENT_EEG_UV = 400.0
EVENT_ECG_MV = 4.0
# The devices' own constants, written here independently of the readers (a reader with a wrong
# constant then disagrees with these files, and its tests fail).
EMOTIV_CHANNELS = ("AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8", "AF4")
SHIMMER_ECG_OFFSET = 2060  # Shimmer2 ECG: 12-bit ADC counts around mid-scale ...
SHIMMER_ECG_MV_PER_COUNT = 3000 / 4095 / 175  # ... 3000 mV reference over 4095 counts, amplifier gain 175
EMOTIV_LSB_UV = 1 / 1.95  # Emotiv EPOC 14-bit resolution (0.51 uV)
EMOTIV_OFFSET_UV = 4200.0  # Emotiv raw values sit on a ~4 mV DC level

# ECG lead geometry (docs/planted-relation.md §3): electrode sites in the frontal plane
# (degrees; 0 = towards the subject's left, 90 = towards the feet), Einthoven's triangle, so
# LA - RA is lead I (0 deg), LL - RA lead II (60 deg), LL - LA lead III (120 deg).
ELECTRODE_ANGLES = {"RA": -150.0, "LA": -30.0, "LL": 90.0}
HEART_AXIS = (40.0, 70.0)  # per-subject mean QRS axis, degrees (normal: -30 to 90)
AMIGOS_LEADS = (("RA", "LL"), ("LA", "LL"))  # ECG Right, ECG Left: Shimmer RA-LL, LA-LL (~ -II, -III)
MAHNOB_EXG_SITES = ("RA", "LA", "LL")  # EXG1 upper right chest, EXG2 upper left chest, EXG3 left abdomen
# BioSemi records each EXG against CMS: every channel also carries a common part (mV).
CMS_GAIN = (-0.15, 0.05)  # cardiac potential at the CMS site, per unit heart vector (head: small)
COMMON_MAINS_MV = (8.0, 20.0)  # 50 Hz pickup amplitude
COMMON_DRIFT_MV = (10.0, 30.0)  # slow drift amplitude
EXG_OFFSET_MV = 40.0  # electrode DC offsets, uniform in +-this
EXG_EVENT_WEIGHTS = (-0.5, 0.5, 1.0)  # planted pulse on EXG1-3 (x EVENT_ECG_MV): +4, +6, +2 mV on I, II, III


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent random stream per (seed, dataset, subject, ...)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


@dataclass(frozen=True)
class Affect:
    """Normalised scores in [-1, 1] ((score - midpoint) / half range) and the split ``w``."""

    valence: float
    arousal: float
    dominance: float
    split: float

    @classmethod
    def neutral(cls, rng: np.random.Generator) -> Affect:
        """The state of a baseline (pre-stimulus) segment."""
        return cls(0.0, 0.0, 0.0, float(rng.normal(0, SPLIT_SD)))

    @classmethod
    def from_scores(cls, valence: float, arousal: float, dominance: float, lo: int, hi: int,
                    rng: np.random.Generator) -> Affect:  # fmt: skip
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        return cls((valence - mid) / half, (arousal - mid) / half, (dominance - mid) / half,
                   float(rng.normal(0, SPLIT_SD)))  # fmt: skip


@dataclass(frozen=True)
class Physiology:
    """Subject-specific constants of the synthetic physiology."""

    hr0: float  # resting heart rate, bpm
    hrv0: float  # RR variability (sd / mean) at d + w = 0
    r_mv: float  # R-wave amplitude, mV
    resp_hz: float  # breathing rate (sinus arrhythmia, baseline wander)
    alpha_uv: float  # alpha amplitude (rms) at valence 0
    iaf_hz: float  # individual alpha frequency
    beta_uv: float  # beta amplitude (rms) at d - w = 0
    background_uv: float  # 1/f background amplitude (rms)

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Physiology:
        return cls(
            hr0=rng.uniform(62, 78), hrv0=rng.uniform(0.03, 0.05), r_mv=rng.uniform(0.8, 1.4),
            resp_hz=rng.uniform(0.2, 0.3), alpha_uv=rng.uniform(8, 14), iaf_hz=rng.uniform(9.5, 10.5),
            beta_uv=rng.uniform(3, 5), background_uv=rng.uniform(8, 12),
        )  # fmt: skip


def draw_scores(rng: np.random.Generator, n_trials: int, lo: int, hi: int) -> np.ndarray:
    """(n_trials, 3) integer scores (valence, arousal, dominance), balanced per dimension.

    Half the trials (rounded up) score above the scale midpoint and half below; the midpoint
    itself is never drawn, so ``score > mid`` and ``score >= mid`` binarise identically.
    """
    mid = (lo + hi) // 2
    out = np.empty((n_trials, 3), dtype=np.int64)
    for dim in range(3):
        high = rng.permutation(np.arange(n_trials) % 2 == 0)
        out[:, dim] = np.where(high, rng.integers(mid + 1, hi + 1, n_trials), rng.integers(lo, mid, n_trials))
    return out


def _unit_filter(h: np.ndarray, n: int) -> np.ndarray:
    """Scale an rfft-domain amplitude response so filtered unit white noise has variance 1."""
    power = 2 * np.sum(h**2) - h[0] ** 2 - (h[-1] ** 2 if n % 2 == 0 else 0)
    return h / np.sqrt(power / n)


def eeg_signal(rng: np.random.Generator, phys: Physiology, affect: Affect, n: int, fs: float,
        channels: Sequence[str]) -> np.ndarray:  # fmt: skip
    """(channels, n) EEG in uV: 1/f background + alpha peak + beta band + 50 Hz mains.

    Alpha is strongest over posterior sites (O*, P*, PO*, CP*), beta over frontal ones
    (F*, AF*, Fp*); channels share 30 % of their noise (volume conduction).
    """
    f = np.fft.rfftfreq(n, 1 / fs)
    shapes = np.stack([
        _unit_filter(np.where(f > 0, np.maximum(f, 0.5) ** -0.75, 0.0), n),
        _unit_filter(np.exp(-0.5 * ((f - phys.iaf_hz) / 1.0) ** 2), n),
        _unit_filter(np.exp(-0.5 * ((f - 20.0) / 4.0) ** 2), n),
    ])  # fmt: skip
    posterior = np.array([c[0] in "OP" or c.startswith(("CP", "PO")) for c in channels])
    frontal = np.array([c.startswith(("F", "AF")) for c in channels])
    alpha = phys.alpha_uv * np.exp(ALPHA_PER_VALENCE * affect.valence + rng.normal(0, BAND_NOISE))
    beta = phys.beta_uv * np.exp(BETA_PER_DOMINANCE * (affect.dominance - affect.split) + rng.normal(0, BAND_NOISE))
    rms = np.stack([
        np.full(len(channels), phys.background_uv),
        alpha * np.where(posterior, 1.0, 0.45),
        beta * np.where(frontal, 1.0, 0.6),
    ], axis=1)  # fmt: skip  # (channels, 3 components)
    white = rng.standard_normal((len(channels) + 1, n))
    white = np.sqrt(0.3) * white[:1] + np.sqrt(0.7) * white[1:]
    spectrum = np.fft.rfft(white, axis=1) * np.sqrt((rms**2) @ shapes**2)
    mains = 0.5 * np.sin(2 * np.pi * 50.0 * np.arange(n) / fs + rng.uniform(0, 2 * np.pi))
    return np.fft.irfft(spectrum, n, axis=1) + mains


# P, Q, R, S, T waves of one beat: offset from the R peak (s; T scales with sqrt(RR)),
# amplitude relative to R, Gaussian width (s).
_WAVES = np.array([[-0.16, 0.12, 0.025], [-0.035, -0.14, 0.012], [0.0, 1.0, 0.011],
                   [0.035, -0.28, 0.012], [0.30, 0.32, 0.055]])  # fmt: skip


def ecg_signal(rng: np.random.Generator, phys: Physiology, affect: Affect, n: int, fs: float,
        gains: Sequence[float]) -> np.ndarray:  # fmt: skip
    """(leads, n) ECG in mV: a P-QRS-T beat train projected on leads with ``gains``.

    RR intervals are ``60 / HR * (1 + c * r_k)``, ``r_k`` a unit-variance mix of sinus
    arrhythmia (breathing) and AR(1) jitter; plus baseline wander, white noise, 50 Hz mains.
    """
    hr = phys.hr0 + HR_PER_AROUSAL * affect.arousal + rng.normal(0, HR_NOISE)
    c = np.clip(phys.hrv0 * np.exp(HRV_PER_DOMINANCE * (affect.dominance + affect.split)), 0.005, 0.18)
    rr_mean = 60.0 / hr
    n_beats = int(n / fs / (rr_mean * 0.4)) + 4
    t_nominal = np.arange(n_beats) * rr_mean
    jitter = lfilter([np.sqrt(1 - 0.25)], [1, -0.5], rng.standard_normal(n_beats))
    sinus = np.sqrt(2) * np.sin(2 * np.pi * phys.resp_hz * t_nominal + rng.uniform(0, 2 * np.pi))
    rr = rr_mean * (1 + c * (0.8 * sinus + 0.6 * jitter))
    beats = np.cumsum(rr) - rr[0] - rng.uniform(0.3, 0.3 + rr_mean)
    beats = beats[beats < n / fs + 0.6]
    offsets = np.broadcast_to(_WAVES[:, 0], (len(beats), 5)).copy()
    offsets[:, 4] *= np.sqrt(rr[: len(beats)])
    width = int(0.95 * fs) + 1
    idx = np.floor((beats - 0.35) * fs).astype(np.int64)[:, None] + np.arange(width)
    t = idx / fs - beats[:, None]  # (beats, samples) time from each R peak
    gauss = np.exp(-0.5 * ((t[..., None] - offsets[:, None, :]) / _WAVES[:, 2]) ** 2)  # (beats, samples, waves)
    wave = gauss @ _WAVES[:, 1]
    ok = (idx >= 0) & (idx < n)
    beat_train = phys.r_mv * np.bincount(idx[ok], weights=wave[ok], minlength=n)
    time = np.arange(n) / fs
    leads = []
    for gain in gains:
        wander = 0.08 * np.sin(2 * np.pi * phys.resp_hz * time + rng.uniform(0, 2 * np.pi))
        mains = 0.01 * np.sin(2 * np.pi * 50.0 * time + rng.uniform(0, 2 * np.pi))
        leads.append(gain * beat_train + wander + mains + rng.normal(0, 0.015, n))
    return np.stack(leads)


def electrode_gains(axis: float, sites: Sequence[str]) -> np.ndarray:
    """Potential of each electrode site per unit of a heart vector pointing at ``axis`` degrees.

    Potentials are relative to Wilson's central terminal (they sum to 0 over RA, LA, LL); the
    difference of two sites is the gain of that bipolar lead: ``LA - RA = cos(axis)`` (lead I),
    ``LL - RA = cos(axis - 60)`` (II), ``LL - LA = cos(axis - 120)`` (III).
    """
    return np.array([np.cos(np.radians(axis - ELECTRODE_ANGLES[site])) / np.sqrt(3) for site in sites])


def common_mode(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    """(n,) mV that every channel of a CMS-referenced BioSemi recording shares: mains, drift, a random walk."""
    t = np.arange(n) / fs
    mains = rng.uniform(*COMMON_MAINS_MV) * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 2 * np.pi))
    drift = rng.uniform(*COMMON_DRIFT_MV) * np.sin(2 * np.pi * rng.uniform(0.005, 0.03) * t + rng.uniform(0, 2 * np.pi))
    return mains + drift + np.cumsum(rng.normal(0, 0.02, n))


def pulse(n: int, fs: float, at: float) -> np.ndarray:
    """A unit Gaussian pulse (sd ``EVENT_SIGMA``) centred ``at`` seconds into ``n`` samples."""
    return np.exp(-0.5 * ((np.arange(n) / fs - at) / EVENT_SIGMA) ** 2)


def _segment(rng: np.random.Generator, phys: Physiology, affect: Affect, duration: float,
             eeg_fs: float, ecg_fs: float, channels: Sequence[str], gains: Sequence[float],
             event: float | None = None, ecg_extra: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """EEG (channels, T1) and ECG (leads, T2) of one segment starting at the same instant."""
    n_eeg, n_ecg = round(duration * eeg_fs), round(duration * ecg_fs) + ecg_extra
    x = eeg_signal(rng, phys, affect, n_eeg, eeg_fs, channels)
    y = ecg_signal(rng, phys, affect, n_ecg, ecg_fs, gains)
    if event is not None:
        x += EVENT_EEG_UV * pulse(n_eeg, eeg_fs, event)
        y += EVENT_ECG_MV * pulse(n_ecg, ecg_fs, event)
    return x, y


def _nan_span(x: np.ndarray, fs: float, start: float, duration: float) -> None:
    """Set ``x[:, start : start + duration]`` (seconds; last axis is time) to NaN in place."""
    x[:, round(start * fs) : round((start + duration) * fs)] = np.nan


def _durations(rng: np.random.Generator, n: int, seconds: float | tuple[float, float]) -> np.ndarray:
    """Per-trial durations: a fixed value, or uniform in a range rounded to 1/256 s."""
    if isinstance(seconds, tuple):
        return np.round(rng.uniform(*seconds, n) * 256) / 256
    return np.full(n, float(seconds))


def _cell(values: Sequence[object], shape: tuple[int, int]) -> np.ndarray:
    """A MATLAB cell array (object ndarray) of ``shape`` filled in column-major order."""
    cell = np.empty(shape, dtype=object)
    for i, v in enumerate(values):
        cell[np.unravel_index(i, shape, order="F")] = v
    return cell


def write_mat(path: Path, variables: Mapping[str, object]) -> None:
    """``savemat`` as MATLAB v7 (level-5, each variable zlib-compressed) but at zlib level 1.

    scipy compresses at the default level 6, about 6x slower for files ~25 % smaller; a
    DREAMER-sized file would spend most of a minute in zlib.
    """
    with open(path, "wb") as fh:
        for i, (name, value) in enumerate(variables.items()):
            buf = io.BytesIO()
            savemat(buf, {name: value}, do_compression=False)
            view = buf.getbuffer()
            if i == 0:
                fh.write(view[:128])  # the MAT header
            compressed = zlib.compress(view[128:], 1)
            fh.write(np.array([15, len(compressed)], dtype="<u4").tobytes())  # miCOMPRESSED tag
            fh.write(compressed)
            del view


def write_bad_mat(path: Path, variable: str, kind: Corruption, valid: Callable[[Path], object]) -> None:
    """Write a broken MAT file: ``valid`` truncated to 60 % of its data, an HDF5 (v7.3) one, or a v4 one."""
    if kind == "truncated":
        valid(path)
        path.write_bytes(path.read_bytes()[: 128 + int((path.stat().st_size - 128) * 0.6)])  # header kept
    elif kind == "v7.3":
        import h5py

        with h5py.File(path, "w", userblock_size=512) as h5:
            group = h5.create_group(variable)
            group.attrs["MATLAB_class"] = np.bytes_("struct")
            group.create_dataset("noOfSubjects", data=np.array([[1.0]]))
        text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {datetime(2017, 1, 1):%c} HDF5 schema 1.00 ."
        with open(path, "r+b") as fh:
            fh.write(text.ljust(116).encode() + b"\0" * 8 + b"\x00\x02IM")
    elif kind == "v4":
        savemat(path, {variable: np.zeros((2, 2))}, format="4")
    else:
        raise ValueError(f"unknown corruption {kind!r}")


# ---- DREAMER ------------------------------------------------------------------------------------


def synth_dreamer(out: str | Path, subjects: int = 3, seed: int = 0, *,
                  clip_seconds: float | tuple[float, float] = (10.0, 20.0), baseline_seconds: float = 61.0,
                  event_at: Event | None = None, nan_at: NanSpan | None = None,
                  corrupt: Corruption | None = None) -> Path:  # fmt: skip
    """Write ``out/DREAMER.mat`` (MATLAB v5, compressed) with the layout of DREAMER 1.0.2.

    ``clip_seconds`` is the stimulus length (fixed, or a range drawn once per clip: every
    subject watches the same 18 clips).  EEG is stored as Emotiv raw values (uV on a ~4200 uV
    DC level, 0.51 uV steps), ECG as Shimmer2 12-bit counts (``SHIMMER_ECG_*``).
    ``corrupt`` writes a truncated, HDF5 (v7.3) or v4 file instead.
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "DREAMER.mat"
    if corrupt is not None:
        write_bad_mat(path, "DREAMER", corrupt, lambda p: synth_dreamer(root, subjects, seed, clip_seconds=2.0))
        return root
    n_clips, eeg_fs, ecg_fs = 18, 128.0, 256.0
    clips = _durations(_rng(seed, 1, 0), n_clips, clip_seconds)
    data = np.empty((1, subjects), dtype=object)
    for s in range(1, subjects + 1):
        rng = _rng(seed, 1, s)
        phys = Physiology.draw(rng)
        offset = EMOTIV_OFFSET_UV + rng.normal(0, 150, len(EMOTIV_CHANNELS))[:, None]
        ecg_offset = SHIMMER_ECG_OFFSET + rng.integers(-60, 60, (2, 1))
        scores = draw_scores(rng, n_clips, 1, 5)
        cells: dict[str, list[np.ndarray]] = {"eb": [], "es": [], "cb": [], "cs": []}
        for t in range(1, n_clips + 1):
            v, a, d = scores[t - 1]
            event = event_at[2] if event_at is not None and event_at[:2] == (s, t) else None
            segments = (
                ("b", Affect.neutral(rng), baseline_seconds, None, 0),
                ("s", Affect.from_scores(v, a, d, 1, 5, rng), clips[t - 1], event, int(rng.integers(0, 9))),
            )
            for key, affect, duration, ev, extra in segments:
                x, y = _segment(rng, phys, affect, duration, eeg_fs, ecg_fs, EMOTIV_CHANNELS, (1.0, 0.75), ev, extra)
                x = np.round((x + offset) / EMOTIV_LSB_UV) * EMOTIV_LSB_UV
                y = np.clip(np.round(y / SHIMMER_ECG_MV_PER_COUNT) + ecg_offset, 0, 4095)
                if key == "s" and nan_at is not None and nan_at[:2] == (s, t):
                    _nan_span(x, eeg_fs, *nan_at[2:])
                    _nan_span(y, ecg_fs, *nan_at[2:])
                cells["e" + key].append(x.T)
                cells["c" + key].append(y.T)
        data[0, s - 1] = {
            "Age": str(rng.integers(22, 34)),
            "Gender": str(rng.choice(["male", "female"])),
            "EEG": {"baseline": _cell(cells["eb"], (n_clips, 1)), "stimuli": _cell(cells["es"], (n_clips, 1))},
            "ECG": {"baseline": _cell(cells["cb"], (n_clips, 1)), "stimuli": _cell(cells["cs"], (n_clips, 1))},
            "ScoreValence": scores[:, [0]].astype(np.uint8),
            "ScoreArousal": scores[:, [1]].astype(np.uint8),
            "ScoreDominance": scores[:, [2]].astype(np.uint8),
        }
    dreamer = {
        "Data": data,
        "EEG_SamplingRate": eeg_fs,
        "ECG_SamplingRate": ecg_fs,
        "EEG_Electrodes": _cell(list(EMOTIV_CHANNELS), (1, len(EMOTIV_CHANNELS))),
        "noOfSubjects": float(subjects),
        "noOfVideoSequences": float(n_clips),
        "Disclaimer": "While every care has been taken to reproduce its layout, this file is SYNTHETIC "
        "(generated by physiofm.synth.emotion) and contains no recording of any person.",
        "Provider": "University of the West of Scotland",
        "Version": "1.0.2",
        "Acknowledgement": "The authors would like to thank the creators of DREAMER, whose layout this "
        "synthetic file imitates.",
    }
    write_mat(path, {"DREAMER": dreamer})
    return root


# ---- AMIGOS -------------------------------------------------------------------------------------


def _amigos_labels(rng: np.random.Generator, v: int, a: int, d: int) -> np.ndarray:
    """(1, 12) self-assessment: arousal, valence, dominance, liking, familiarity, 7 basic emotions."""
    liking = np.clip(v + rng.integers(-2, 3), 1, 9)
    emotions = np.zeros(7)  # neutral disgust happiness surprise anger fear sadness
    emotions[rng.choice([2, 3]) if v > 5 else rng.choice([1, 4, 5, 6])] = 1
    return np.array([[a, v, d, liking, rng.integers(1, 10), *emotions]], dtype=np.float64)


def synth_amigos(out: str | Path, subjects: int = 3, seed: int = 0, *,
                 clip_seconds: float | tuple[float, float] = (20.0, 40.0), long_seconds: float = 60.0,
                 missing_long: Collection[int] = AMIGOS_MISSING_LONG, layout: Literal["nested", "flat"] = "nested",
                 event_at: Event | None = None, nan_at: NanSpan | None = None,
                 corrupt: Mapping[int, Corruption] | None = None) -> Path:  # fmt: skip
    """Write AMIGOS preprocessed files ``Data_Preprocessed_PNN.mat`` for participants 1..subjects.

    ``layout="nested"`` puts each in ``Data_Preprocessed_PNN/`` (as extracted from the
    download), ``"flat"`` all in ``out``.  Each of the 20 trials is 5 s of baseline + the
    stimulus (``clip_seconds`` for the 16 short videos, ``long_seconds`` for the 4 long ones;
    real long videos last 15-24 min).  Participants in ``missing_long`` get 0x0 trials 17-20.
    ``corrupt`` maps participants to a broken-file kind.  ECG is written as the preprocessed
    files are believed to hold it (``docs/units.md``): calibrated mV, ``ECG Right`` = RA - LL and
    ``ECG Left`` = LA - LL of a heart vector at a per-subject axis (R waves negative-going).
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    fs, n_trials, baseline_s = 128.0, len(AMIGOS_VIDEO_IDS), 5.0
    lengths = np.concatenate([_durations(_rng(seed, 2, 0), 16, clip_seconds), np.full(4, float(long_seconds))])
    one_trial = _cell([np.zeros((1, 17))], (1, 1))  # the valid content of a file written truncated
    for s in range(1, subjects + 1):
        name = f"Data_Preprocessed_P{s:02d}"
        folder = root / name if layout == "nested" else root
        folder.mkdir(exist_ok=True)
        path = folder / f"{name}.mat"
        if corrupt and s in corrupt:
            write_bad_mat(path, "joined_data", corrupt[s], lambda p: write_mat(p, {"joined_data": one_trial}))
            continue
        rng = _rng(seed, 2, s)
        phys = Physiology.draw(rng)
        axis = _rng(seed, 2, s, 0).uniform(*HEART_AXIS)
        site = dict(zip(ELECTRODE_ANGLES, electrode_gains(axis, tuple(ELECTRODE_ANGLES)), strict=True))
        gains = [float(site[plus] - site[minus]) for plus, minus in AMIGOS_LEADS]
        present = [t for t in range(1, n_trials + 1) if not (t > 16 and s in missing_long)]
        scores = draw_scores(rng, len(present), 1, 9)
        joined, selfass, ext = [], [], []
        for t in range(1, n_trials + 1):
            if t not in present:
                joined.append(np.zeros((0, 0)))
                selfass.append(np.zeros((0, 0)))
                ext.append(np.zeros((0, 0)))
                continue
            v, a, d = scores[present.index(t)]
            event = event_at[2] if event_at is not None and event_at[:2] == (s, t) else None
            parts = [
                _segment(rng, phys, Affect.neutral(rng), baseline_s, fs, fs, EMOTIV_CHANNELS, gains),
                _segment(rng, phys, Affect.from_scores(v, a, d, 1, 9, rng), lengths[t - 1], fs, fs,
                         EMOTIV_CHANNELS, gains, event),
            ]  # fmt: skip
            signals = np.concatenate([np.vstack(p) for p in parts], axis=1)
            gsr = 4.0 + rng.uniform(-2, 2) + np.cumsum(rng.normal(0, 0.002, signals.shape[1]))
            signals = np.vstack([signals, gsr])
            if nan_at is not None and nan_at[:2] == (s, t):
                _nan_span(signals, fs, baseline_s + nan_at[2], nan_at[3])
            joined.append(signals.T)
            selfass.append(_amigos_labels(rng, v, a, d))
            k = max(1, int(np.ceil(lengths[t - 1] / 20)))
            va = np.clip(np.array([(v - 5) / 4, (a - 5) / 4]) + rng.normal(0, 0.15, (k, 2)), -1, 1)
            ext.append(np.column_stack([np.arange(1, k + 1), va]))
        write_mat(path, {
            "VideoIDs": _cell(list(AMIGOS_VIDEO_IDS), (1, n_trials)),
            "joined_data": _cell(joined, (1, n_trials)),
            "labels_ext_annotation": _cell(ext, (1, n_trials)),
            "labels_selfassessment": _cell(selfass, (1, n_trials)),
        })  # fmt: skip
    return root


# ---- MAHNOB-HCI ---------------------------------------------------------------------------------


def _bdf_header(label: str, fs: int) -> dict[str, str | int | float | None]:
    """pyedflib signal header of a BioSemi channel (24-bit, 1-s records)."""
    header: dict[str, str | int | float | None] = {"label": label, "sample_frequency": fs, "digital_min": -8388608,
                                 "digital_max": 8388607, "prefilter": "HP: DC; LP: 52 Hz"}  # fmt: skip
    if label == "Status":
        return header | {"dimension": "Boolean", "physical_min": -8388608, "physical_max": 8388607,
                         "transducer": "Triggers and Status", "prefilter": "No filtering"}  # fmt: skip
    if label.startswith("GSR"):
        return header | {"dimension": "Ohm", "physical_min": 0, "physical_max": 16777215, "transducer": "Nihon Kohden"}
    if label == "Temp":
        return header | {"dimension": "Celsius", "physical_min": -1000, "physical_max": 1000,
                         "transducer": "Temp sensor"}  # fmt: skip
    return header | {"dimension": "uV", "physical_min": -262144, "physical_max": 262143,
                     "transducer": "Active Electrode"}  # fmt: skip


def _write_bdf(path: Path, signals: np.ndarray, fs: int, start: datetime, subject: int) -> None:
    """Write (47, n) physical values as a BioSemi BDF with MAHNOB's channel labels."""
    import pyedflib

    writer = pyedflib.EdfWriter(str(path), len(MAHNOB_CHANNELS), file_type=pyedflib.FILETYPE_BDF)
    try:
        writer.setSignalHeaders([_bdf_header(label, fs) for label in MAHNOB_CHANNELS])
        writer.setStartdatetime(start)
        writer.setPatientCode(f"Part_{subject}")
        writer.writeSamples(list(signals))
    finally:
        writer.close()


def _session_xml(path: Path, session: int, subject: int, trial: int, media: str, length: float,
                 is_stim: bool, ratings: Mapping[str, int] | None) -> None:  # fmt: skip
    """Write ``session.xml``: ratings as attributes of ``<session>`` and ``<subject id>``."""
    attrs = {"sessionId": str(session), "cutNr": str(trial), "cutLenSec": f"{length:g}",
             "isStim": str(int(is_stim)), "mediaFile": media}  # fmt: skip
    if ratings is not None:
        attrs |= {key: str(value) for key, value in ratings.items()}
    root = ET.Element("session", dict(sorted(attrs.items())))
    ET.SubElement(root, "subject", {"id": str(subject)})
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def synth_mahnob(out: str | Path, subjects: int = 3, seed: int = 0, *, trials: int = 6,
                 clip_seconds: float | tuple[float, float] = (20.0, 40.0), pre_seconds: float = 5.0,
                 post_seconds: float = 5.0, neutral_sessions: int = 1, event_at: Event | None = None,
                 no_triggers: Collection[tuple[int, int]] = (),
                 unrated: Collection[tuple[int, int]] = ()) -> Path:  # fmt: skip
    """Write ``out/Sessions/<id>/{Part_<s>_<N|S>_Trial<k>_emotion.bdf, session.xml}``.

    Session ids follow the real numbering: ``(subject - 1) * 130 + 2 * k`` for the stimulus
    trial k (S) and ``... + 2 * k - 1`` for the neutral clip before it (N, ``isStim="0"``,
    no ratings; ``neutral_sessions`` of them per subject).  Each BDF holds 256 Hz BioSemi
    channels with ``pre_seconds`` before and about ``post_seconds`` after the clip (30 s each
    in the real data), bounded by two Status trigger pulses.  ``no_triggers`` and
    ``unrated`` list (subject, trial) pairs written without triggers or without felt* ratings.

    EXG1-3 are written as a BioSemi records them, each against CMS: the electrode's cardiac
    potential (a heart vector at a per-subject axis projected on ``MAHNOB_EXG_SITES``, minus
    that of the CMS site) plus a part common to the three (mains, drift, a random walk; tens of
    mV) and a DC offset per electrode.  Their differences (EXG2 - EXG1 ~ lead I, EXG3 - EXG1 ~ II,
    EXG3 - EXG2 ~ III) are a clean ECG; each channel alone is mostly the common part.
    """
    sessions = Path(out) / "Sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    fs = 256
    media = [f"{i}.avi" for i in (52, 53, 69, 55, 58, 80, 30, 73, 90, 107, 111, 146, 138, 1, 2, 3, 4, 5, 6, 7)]
    lengths = _durations(_rng(seed, 3, 0), len(media), clip_seconds)
    for s in range(1, subjects + 1):
        rng = _rng(seed, 3, s)
        phys = Physiology.draw(rng)
        heart = _rng(seed, 3, s, 0)
        axis, cms = heart.uniform(*HEART_AXIS), heart.uniform(*CMS_GAIN)
        exg_gains = electrode_gains(axis, MAHNOB_EXG_SITES) - cms  # referential: electrode minus CMS
        scores = draw_scores(rng, trials, 1, 9)
        order = rng.permutation(len(media))
        started = datetime(2009, 7, 9, 10, 0) + timedelta(days=s)
        for t in range(1, trials + 1):
            clip = int(order[(t - 1) % len(media)])
            kinds = ["S"] if t > neutral_sessions else ["N", "S"]
            for kind in kinds:
                stim = kind == "S"
                v, a, d = scores[t - 1]
                affect = Affect.from_scores(v, a, d, 1, 9, rng) if stim else Affect.neutral(rng)
                event = event_at[2] if stim and event_at is not None and event_at[:2] == (s, t) else None
                length = lengths[clip] if stim else 10.0
                n_total = int(np.ceil(pre_seconds + length + post_seconds)) * fs
                start, stop = round(pre_seconds * fs), round((pre_seconds + length) * fs)
                signals = np.zeros((len(MAHNOB_CHANNELS), n_total))
                bounds = [(0, start, Affect.neutral(rng), None), (start, stop, affect, event),
                          (stop, n_total, Affect.neutral(rng), None)]  # fmt: skip
                for lo, hi, aff, ev in bounds:
                    x, y = _segment(rng, phys, aff, (hi - lo) / fs, fs, fs, BIOSEMI32_CHANNELS, exg_gains)
                    if ev is not None:  # the pulse must survive the bipolar derivation: weights differ
                        x += EVENT_EEG_UV * pulse(hi - lo, fs, ev)
                        y += EVENT_ECG_MV * np.array(EXG_EVENT_WEIGHTS)[:, None] * pulse(hi - lo, fs, ev)
                    signals[:32, lo:hi] = x
                    signals[32:35, lo:hi] = y  # mV, cardiac part of EXG1-3
                session = (s - 1) * 130 + 2 * t - (kind == "N")
                cm = _rng(seed, 3, s, session)
                offsets = cm.uniform(-EXG_OFFSET_MV, EXG_OFFSET_MV, (3, 1))
                signals[32:35] = (signals[32:35] + common_mode(cm, n_total, fs) + offsets) * 1000.0  # uV
                signals[35:40] = rng.normal(0, 15, (5, n_total))  # EXG4-8: unused / EOG-type
                signals[40:42] = 8e5 + rng.uniform(-3e5, 3e5) + np.cumsum(rng.normal(0, 50, (2, n_total)), axis=1)
                signals[42:44] = rng.normal(0, 5, (2, n_total))  # Erg1-2
                signals[44] = 2000 * np.sin(2 * np.pi * phys.resp_hz * np.arange(n_total) / fs)
                signals[45] = 33.0 + rng.uniform(-1, 1) + np.linspace(0, 0.2, n_total)
                if (s, t) not in no_triggers:
                    width = max(2, round(0.05 * fs))
                    signals[46, start : start + width] = 1
                    signals[46, stop : stop + width] = 1
                folder = sessions / str(session)
                folder.mkdir(exist_ok=True)
                _write_bdf(folder / f"Part_{s}_{kind}_Trial{t}_emotion.bdf", signals, fs, started, s)
                started += timedelta(seconds=n_total / fs + 60)
                ratings = None
                if stim and (s, t) not in unrated:
                    ratings = {"feltArsl": a, "feltCtrl": d, "feltEmo": 4 if v > 5 else int(rng.choice([1, 2, 3, 5])),
                               "feltPred": int(rng.integers(1, 10)), "feltVlnc": v}  # fmt: skip
                media_file = media[clip] if stim else f"neutral_{t}.avi"
                _session_xml(folder / "session.xml", session, s, t, media_file, length, stim, ratings)
    return Path(out)
