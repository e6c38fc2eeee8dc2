"""Reader for DREAMER (Katsigiannis & Ramzan, IEEE JBHI 2018): EEG + ECG of 23 x 18 film clips.

Layout (``shared/docs/datasets.md`` §1): one MATLAB v5 file ``DREAMER.mat`` holding the struct
``DREAMER``; ``Data{s}.EEG.{baseline,stimuli}{t}`` are M x 14 (128 Hz) and
``Data{s}.ECG.{baseline,stimuli}{t}`` M x 2 (256 Hz) doubles, scores 1-5.  The file is read
**once per process** (module cache keyed by URL and size) and every ``read`` call, for any
subset of items, reuses it.

Units (evidence and uncertainty in ``docs/units.md``; the dataset states no unit for either).
EEG is Emotiv raw values in uV with their ~4 mV DC level, passed on unchanged (the pipeline's
high-pass removes the level).  ECG is stored device-native by the Shimmer2 ECG board
(**[reported]**, ``shared/docs/datasets.md`` §1); values that look like 12-bit ADC counts
(median magnitude > 50, i.e. near the 2060 mid-scale; no calibrated ECG sits there) are
converted with Shimmer's default ECG calibration, ``mV = (counts - 2060) * 3000 / 4095 / 175``
(the offset and gain 2060 and 175 are the defaults of Shimmer's own driver, which calibrates a
12-bit ADC value as ``(raw - offset) * (3 V * 1000 / gain) / 4095``), anything else is taken
as mV.  Plausibility: that maps the ADC's 0-4095 onto about -8.6 to +8.5 mV at 4.19 uV per
count, a usual range for an ECG front end, and a 1-mV R wave onto ~240 counts; without the
gain of 175 such an R wave would read ~175 mV.  The per-device offset (``- 2060``) only shifts
the DC level, which the band-pass removes; a device gain differing from the default scales
the amplitudes by the same factor (not correctable without the device's calibration).  The
two ECG columns are unnamed in the dataset and called ``ECG1``, ``ECG2`` here.

Each trial gives a stimulus record and, with ``baseline=True``, the 61-s baseline before it;
EEG and ECG of a record both start at the segment start and are cropped to the same length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from physiofm.corpora.base import Item, Record, Reject, Signal, all_nan_reason
from physiofm.corpora.matlab import load_mat
from physiofm.io import join, url_to_fs

NAME = "dreamer"
FILE = "DREAMER.mat"
SCORE_MIN, SCORE_MAX = 1, 5
SHIMMER_ECG_OFFSET = 2060  # Shimmer2 default ECG calibration: 12-bit ADC offset ...
SHIMMER_ECG_MV_PER_COUNT = 3000 / 4095 / 175  # ... 3 V reference, amplifier gain 175
EMOTIV_CHANNELS = ("AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8", "AF4")
_FIELDS = ("Data", "EEG_SamplingRate", "ECG_SamplingRate")
_SCORES = {"valence": "ScoreValence", "arousal": "ScoreArousal", "dominance": "ScoreDominance"}
_BASELINE_WINDOWS = 6  # 61-s baseline in 10-s windows


@dataclass
class _Dreamer:
    subjects: np.ndarray  # (n,) participant structs as loaded by scipy (raw indexing)
    eeg_fs: float
    ecg_fs: float
    electrodes: list[str]


_CACHE: dict[tuple[str, int], _Dreamer | str] = {}  # the last file loaded: parsed, or why not
LOADED_BY_LISTING = True  # list_items parses the file; a build's workers are forked after it and share it


def _parse(mat: dict[str, Any]) -> _Dreamer:
    top = mat.get("DREAMER")
    if top is None or top.dtype.names is None:
        raise ValueError("no struct variable 'DREAMER' in the MAT file")
    missing = [f for f in _FIELDS if f not in top.dtype.names]
    if missing:
        raise ValueError(f"struct DREAMER lacks field(s) {', '.join(missing)}")
    d = top[0, 0]
    electrodes = list(EMOTIV_CHANNELS)
    if "EEG_Electrodes" in top.dtype.names:
        electrodes = [str(np.ravel(e)[0]) for e in d["EEG_Electrodes"].ravel()]
    return _Dreamer(d["Data"].ravel(), float(d["EEG_SamplingRate"].squeeze()),
                    float(d["ECG_SamplingRate"].squeeze()), electrodes)  # fmt: skip


def _load(root: str) -> _Dreamer | str:
    """The parsed file under ``root`` (cached per process), or the reason it cannot be read."""
    fs, base = url_to_fs(root)
    path = join(base, FILE)
    try:
        key = (fs.unstrip_protocol(path), int(fs.size(path)))
    except FileNotFoundError:
        return f"{FILE} not found"
    if key not in _CACHE:
        _CACHE.clear()  # keep one file: the real one holds ~2 GB of doubles once loaded
        try:
            _CACHE[key] = _parse(load_mat(fs, path))
        except ValueError as exc:
            _CACHE[key] = str(exc)
    return _CACHE[key]


def _field(struct: np.ndarray, name: str) -> np.ndarray:
    """``struct[name][0, 0]`` of a raw-loaded 1x1 struct, with a clear error."""
    if struct.dtype.names is None or name not in struct.dtype.names:
        raise ValueError(f"participant struct lacks field {name}")
    return np.asarray(struct[name]).reshape(-1)[0]


def _trial_matrix(subject: np.ndarray, modality: str, segment: str, trial: int, columns: int) -> np.ndarray:
    """The M x columns matrix of ``Data{s}.<modality>.<segment>{trial}`` as (columns, M)."""
    cells = _field(_field(subject, modality), segment).reshape(-1)
    if trial > cells.size:
        raise ValueError(f"{modality}.{segment} has {cells.size} trials, not {trial}")
    x = np.asarray(cells[trial - 1], dtype=np.float64)
    if x.size == 0:
        raise ValueError(f"empty {modality}.{segment} trial")
    if x.ndim != 2 or x.shape[1] != columns:
        raise ValueError(f"{modality}.{segment} trial is {x.shape}, expected (M, {columns})")
    return x.T


def _text(subject: np.ndarray, name: str) -> str | None:
    """A char field (``Age``, ``Gender``) as text; None when absent or empty."""
    if name not in (subject.dtype.names or ()):
        return None
    value = np.ravel(_field(subject, name))
    return str(value[0]).strip() if value.size else None


def _median_magnitude_above(x: np.ndarray, limit: float) -> bool:
    """``np.nanmedian(np.abs(x)) > limit``, by counting (no sort of the trial): the same answer."""
    magnitude = np.abs(x)
    valid = int(np.count_nonzero(~np.isnan(magnitude)))
    above = int(np.count_nonzero(magnitude > limit))
    if 2 * above != valid:  # more than half above: the median is; fewer: it is not
        return 2 * above > valid
    return bool(np.nanmedian(magnitude) > limit)  # an even count split at the limit: the two middle values decide


def _ecg_mv(x: np.ndarray) -> np.ndarray:
    """Shimmer2 device values to mV (12-bit counts when they look like counts; else mV)."""
    if _median_magnitude_above(x, 50):
        return (x - SHIMMER_ECG_OFFSET) * SHIMMER_ECG_MV_PER_COUNT
    return x


def _common_span(n_eeg: int, eeg_fs: float, n_ecg: int, ecg_fs: float) -> tuple[int, int]:
    """Sample counts of the longest span both signals cover from their common start.

    The EEG count is floored first and the ECG one derived from it, so the ECG never ends
    after the EEG (equal spans when the rates are integer multiples, as 128/256 Hz are).
    """
    seconds = min(n_eeg / eeg_fs, n_ecg / ecg_fs)
    n_eeg = int(np.floor(seconds * eeg_fs + 1e-9))
    return n_eeg, int(np.floor(n_eeg / eeg_fs * ecg_fs + 1e-9))


def _meta(subject: np.ndarray, trial: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"trial": trial}
    for key, field in _SCORES.items():
        scores = np.ravel(_field(subject, field))
        meta[key] = int(scores[trial - 1]) if trial <= scores.size else None
    age = _text(subject, "Age")
    meta |= {"score_min": SCORE_MIN, "score_max": SCORE_MAX,
             "age": int(age) if age and age.isdigit() else age, "gender": _text(subject, "Gender")}  # fmt: skip
    return meta


def detect(root: str) -> bool:
    """A ``DREAMER.mat`` directly under ``root``."""
    fs, base = url_to_fs(root)
    return bool(fs.isfile(join(base, FILE)))


def list_items(root: str) -> list[Item]:
    """One item per (subject, clip), ``s01_t01`` ...; a single ``DREAMER`` item if unreadable."""
    loaded = _load(root)
    if isinstance(loaded, str):
        return [Item(id="DREAMER", path=FILE)]
    items = []
    for s, subject in enumerate(loaded.subjects, start=1):
        try:
            lengths = [np.shape(x)[0] if np.size(x) else 0 for x in _field(_field(subject, "EEG"), "stimuli").ravel()]
        except ValueError:
            lengths = [0] * 18  # listed anyway: read() says what is wrong
        for t, m in enumerate(lengths, start=1):
            est = max(1, round(m / loaded.eeg_fs / 10)) + _BASELINE_WINDOWS
            items.append(Item(id=f"s{s:02d}_t{t:02d}", path=FILE, est_windows=est, extra=(s, t)))
    return items


def read(root: str, items: list[Item], *, baseline: bool = True) -> Iterator[Record | Reject]:
    """Stimulus (and baseline) records of the listed trials; rejects say why one is missing."""
    loaded = _load(root)
    for item in items:
        if isinstance(loaded, str) or len(item.extra) != 2:
            why = loaded if isinstance(loaded, str) else "not a (subject, clip) item"
            yield Reject(NAME, FILE, "read", why, record_id=item.id)
            continue
        s, t = item.extra
        for segment in ("stimulus", "baseline") if baseline else ("stimulus",):
            record_id = item.id if segment == "stimulus" else f"{item.id}_baseline"
            try:
                subject = loaded.subjects[s - 1]
                key = "stimuli" if segment == "stimulus" else "baseline"
                eeg = _trial_matrix(subject, "EEG", key, t, len(loaded.electrodes))
                ecg = _ecg_mv(_trial_matrix(subject, "ECG", key, t, 2))
                meta = _meta(subject, t) | {"segment": segment}
            except (ValueError, IndexError) as exc:
                yield Reject(NAME, FILE, "read", str(exc), record_id=record_id)
                continue
            n_eeg, n_ecg = _common_span(eeg.shape[1], loaded.eeg_fs, ecg.shape[1], loaded.ecg_fs)
            signals = {
                "eeg": Signal(eeg[:, :n_eeg].astype(np.float32), loaded.eeg_fs, loaded.electrodes, unit="uV"),
                "ecg": Signal(ecg[:, :n_ecg].astype(np.float32), loaded.ecg_fs, ["ECG1", "ECG2"], unit="mV"),
            }
            if reason := all_nan_reason(signals):
                yield Reject(NAME, FILE, "read", reason, record_id=record_id)
                continue
            yield Record(NAME, record_id, FILE, signals, subject_id=f"{s:02d}", meta=meta)
