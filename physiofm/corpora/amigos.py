"""Reader for AMIGOS preprocessed data (Miranda-Correa et al., IEEE TAC 2018).

Layout (``shared/docs/datasets.md`` §2): one MATLAB v5 file ``Data_Preprocessed_PNN.mat`` per
participant, flat in ``root`` or in ``Data_Preprocessed_PNN/`` sub-folders (both accepted), with
1 x 20 cells ``joined_data`` (N x 17 doubles at 128 Hz: 14 EEG, ECG Right, ECG Left, GSR),
``labels_selfassessment`` (1 x 12: arousal, valence, dominance, liking, familiarity, 7 basic
emotions, 1-9 scales), ``labels_ext_annotation`` and ``VideoIDs``.

The first 5 s (640 samples) of a trial are its baseline, the rest the stimulus.  Empty (0x0)
trials, such as 17-20 of participants without the long-video experiment, become one reject
each and the rest of the file is read.  GSR (column 17) is left out (``Record.skipped``).

Units.  EEG: uV (the preprocessed release is zero-centred EEG; TorchEEG and CBraMod-style
pipelines use it as uV).  ECG: **taken as mV, unconverted** (``ECG_UNIT``).  The dataset does
not state the unit of ``ECG Right``/``ECG Left``; the assumption rests on (a) the ECG was
recorded with a Shimmer 2R ECG module (**[reported]**), whose own software calibrates ECG to mV
(``(counts - 2060) * 3000 / 4095 / 175`` with the default constants of Shimmer's driver), and
(b) the preprocessed release holds processed data in physical units, not device counts (EEG
re-referenced and filtered in uV; the GSR column is used by a third-party loader as a
resistance in ohms).  Plausibility: a calibrated limb-lead ECG has R waves of 0.3-3 mV; counts
would sit near 2060 with R waves of ~240, uV would put them near 1000.  The two columns are
believed to be Shimmer's ``RA-LL`` and ``LA-LL`` outputs (~ minus lead II and minus lead III,
R waves negative-going; **[reported]** by a third-party loader), stored under AMIGOS's names.
If a trial's ECG cannot be mV (median |x| above ``COUNTS_MEDIAN``) the trial is rejected with
that reason rather than stored ~240 (or 1000) times too large.  ``docs/units.md`` has the
evidence and what remains uncertain.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from physiofm.corpora.base import Item, Record, Reject, Signal, all_nan_reason
from physiofm.corpora.dreamer import EMOTIV_CHANNELS
from physiofm.corpora.matlab import load_mat
from physiofm.io import join, url_to_fs

NAME = "amigos"
FS = 128.0
BASELINE_SAMPLES = 640  # 5 s at 128 Hz
N_TRIALS = 20
ECG_CHANNELS = ("ECG Right", "ECG Left")  # believed Shimmer RA-LL and LA-LL (docs/units.md)
ECG_UNIT = "mV"  # assumed, not stated by the dataset (docs/units.md)
COUNTS_MEDIAN = 50.0  # median |ECG| above this cannot be mV: 12-bit counts (~2060 mid-scale) or uV
SKIPPED = ("GSR (eda)",)  # column 17
SCORE_MIN, SCORE_MAX = 1, 9
_FILE = re.compile(r"Data_Preprocessed_P(\d+)\.mat")
_VARIABLES = ("joined_data", "labels_selfassessment", "VideoIDs")
_LABELS = ("arousal", "valence", "dominance", "liking", "familiarity")  # columns 1-5
# 20-s external-annotation segments per video: a cheap length estimate (2 windows of 10 s each)
_SEGMENTS = (6, 7, 5, 6, 4, 5, 8, 5, 7, 5, 9, 5, 5, 4, 6, 7, 72, 58, 72, 44)


def _files(root: str) -> dict[int, str]:
    """Participant number -> file path relative to ``root`` (flat files win over nested)."""
    fs, base = url_to_fs(root)
    base = base.rstrip("/")
    found: dict[int, str] = {}
    for pattern in ("Data_Preprocessed_P*.mat", "Data_Preprocessed_P*/Data_Preprocessed_P*.mat"):
        for path in sorted(fs.glob(join(base, pattern))):
            match = _FILE.fullmatch(path.rsplit("/", 1)[-1])
            if match:
                found.setdefault(int(match.group(1)), path[len(base) + 1 :])
    return found


def detect(root: str) -> bool:
    """Any ``Data_Preprocessed_PNN.mat`` in ``root`` or one folder below."""
    return bool(_files(root))


def list_items(root: str) -> list[Item]:
    """One item per (participant, trial): ``p01_t01`` ... ``p40_t20`` (files are not opened)."""
    return [
        Item(id=f"p{p:02d}_t{t:02d}", path=path, est_windows=2 * _SEGMENTS[t - 1], extra=(p, t))
        for p, path in sorted(_files(root).items())
        for t in range(1, N_TRIALS + 1)
    ]


def _cell(mat: dict[str, Any], name: str, trial: int) -> np.ndarray:
    cells = mat[name].reshape(-1)
    if trial > cells.size:
        raise ValueError(f"{name} has {cells.size} cells, not {trial}")
    return np.asarray(cells[trial - 1])


def _trial(mat: dict[str, Any], trial: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(N, 17) data and meta of one trial; ``ValueError`` says why it cannot be used."""
    data = _cell(mat, "joined_data", trial)
    if data.size == 0:
        raise ValueError(f"empty trial ({'x'.join(map(str, data.shape))}) in joined_data")
    if data.ndim != 2 or data.shape[1] < 16:
        raise ValueError(f"joined_data trial is {data.shape}, expected (N, 17)")
    if data.shape[0] <= BASELINE_SAMPLES:
        raise ValueError(f"trial of {data.shape[0]} samples is not longer than its 5-s baseline")
    labels = _cell(mat, "labels_selfassessment", trial).astype(np.float64).reshape(-1)
    ecg = np.abs(data[:, 14:16])
    if np.isfinite(ecg).any() and np.nanmedian(ecg) > COUNTS_MEDIAN:
        raise ValueError(f"ECG median |x| = {np.nanmedian(ecg):.0f} is not {ECG_UNIT} (12-bit ADC counts sit near "
                         "2060, uV in the hundreds); see docs/units.md")  # fmt: skip
    if labels.size < len(_LABELS):
        raise ValueError("no self-assessment labels for this trial")
    video = np.ravel(_cell(mat, "VideoIDs", trial))
    meta: dict[str, Any] = {"trial": trial}
    meta |= {key: float(v) if np.isfinite(v) else None for key, v in zip(_LABELS, labels, strict=False)}
    meta |= {"score_min": SCORE_MIN, "score_max": SCORE_MAX, "video_id": str(video[0]) if video.size else None}
    return data, meta


def _read_file(root: str, path: str, items: list[Item], baseline: bool) -> Iterator[Record | Reject]:
    fs, base = url_to_fs(root)
    try:
        mat = load_mat(fs, join(base, path))
        missing = [v for v in _VARIABLES if v not in mat]
        if missing:
            raise ValueError(f"no variable(s) {', '.join(missing)} in the MAT file")
    except ValueError as exc:
        for item in items:
            yield Reject(NAME, path, "read", str(exc), record_id=item.id)
        return
    for item in items:
        p, t = item.extra
        try:
            data, meta = _trial(mat, t)
        except ValueError as exc:
            yield Reject(NAME, path, "read", str(exc), record_id=item.id)
            continue
        spans = {"stimulus": slice(BASELINE_SAMPLES, None)}
        if baseline:
            spans["baseline"] = slice(0, BASELINE_SAMPLES)
        for segment, span in spans.items():
            record_id = item.id if segment == "stimulus" else f"{item.id}_baseline"
            x = data[span].T.astype(np.float32)
            signals = {"eeg": Signal(x[:14], FS, list(EMOTIV_CHANNELS), unit="uV"),
                       "ecg": Signal(x[14:16], FS, list(ECG_CHANNELS), unit=ECG_UNIT)}  # fmt: skip
            if reason := all_nan_reason(signals):
                yield Reject(NAME, path, "read", reason, record_id=record_id)
                continue
            yield Record(NAME, record_id, path, signals, subject_id=f"{p:02d}", meta=meta | {"segment": segment},
                         skipped=list(SKIPPED[: data.shape[1] - 16]))  # fmt: skip


def read(root: str, items: list[Item], *, baseline: bool = True) -> Iterator[Record | Reject]:
    """Stimulus (and 5-s baseline) records per trial, grouped by file: each file is loaded once."""
    by_file: dict[str, list[Item]] = {}
    for item in items:
        by_file.setdefault(item.path, []).append(item)
    for path, group in by_file.items():
        yield from _read_file(root, path, group, baseline)
