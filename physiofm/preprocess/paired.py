"""EEG+ECG trial segments → paired windows: one sample holds both modalities of the same span.

Each modality is converted to its unit (EEG µV, ECG mV), resampled from its own rate to
200 Hz and band-passed with its own recipe section; then both are cut at the same 200-Hz
sample indices, so a sample's ``eeg.npy`` (C_eeg, N, 200) and ``ecg.npy`` (C_ecg, N, 200)
cover the same instant to within one sample.  Raw self-assessment scores are kept beside
binary labels (``<target>_high = score > threshold``, the scale's midpoint by default, the
threshold recorded in ``label_threshold``).

Baselines (``[baseline] mode``; a trial's baseline is the record ``<stimulus id>_baseline``):

* ``ignore``: baseline records are read and dropped;
* ``samples``: baseline windows are stored too, with ``segment = "baseline"``;
* ``subtract``: TorchEEG's baseline removal (``BaselineRemoval`` after its DREAMER/AMIGOS/
  MAHNOB constructors average the baseline as ``baseline.reshape(C, n, 1 s).mean(1)``), done
  on the preprocessed signals: the trial's baseline, resampled to 200 Hz and band-passed like
  the stimulus, is cut into its whole 1-s pieces (200 samples, from the baseline's start; a
  piece that overlaps a NaN of the source is left out), the pieces are averaged per channel
  into one 1-s template waveform, and that template is subtracted from every second of the
  stimulus, counted from the stimulus's first sample (second ``k`` = samples
  ``[200 k, 200 (k + 1))``; with ``window.last_seconds`` the grid still starts at the stimulus
  start).  What this removes is activity phase-locked to the 1-s grid in both segments; the
  per-channel *mean* of a band-passed baseline is ~0 and would remove nothing.  A stimulus
  whose baseline is missing or shorter than 1 s becomes a reject instead of being stored
  without the subtraction.
"""

from __future__ import annotations

import numpy as np

from physiofm.corpora.base import Record, Reject
from physiofm.preprocess import transforms as T
from physiofm.preprocess.faults import stage
from physiofm.preprocess.quality import FLAGS, drop_reason, window_flags
from physiofm.preprocess.windows import WindowSpec, sample_key
from physiofm.units import unit_scale

MODALITIES = ("eeg", "ecg")
BATCH_RECORDS = None  # a unit's records are prepared together: a trial's baseline meets its stimulus


def _process(signal, section: dict, fs_out: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw in output units with NaN zeroed, NaN mask, filtered at fs_out) for one modality."""
    raw = np.asarray(signal.data, dtype=np.float64) * unit_scale(signal.unit, section["unit"])
    nan = np.isnan(raw)
    if nan.any():
        raw = np.where(nan, 0.0, raw)
    return raw, nan, T.filter_section(raw, signal.fs, fs_out, section)


def _threshold(recipe: dict, meta: dict) -> float:
    setting = recipe["labels"]["threshold"]
    if setting == "midpoint":
        return (float(meta["score_min"]) + float(meta["score_max"])) / 2
    return float(setting)


def _baseline_templates(
    records: list[Record], recipe: dict, fs_out: float
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """1-s baseline templates ``{stimulus record id: {modality: (C, 1 s)}}``, and why some could not be made.

    The template of a modality is the mean of the whole, NaN-free 1-s pieces of its
    preprocessed (resampled, band-passed) baseline; see the module docstring.
    """
    period = int(round(fs_out))  # samples in one second at the output rate
    templates: dict[str, dict[str, np.ndarray]] = {}
    problems: dict[str, str] = {}
    for record in records:
        if record.meta.get("segment") != "baseline":
            continue
        stimulus = record.record_id.removesuffix("_baseline")
        pieces = {}
        for m in MODALITIES:
            if m not in record.signals:
                continue
            signal = record.signals[m]
            _, nan, filtered = _process(signal, recipe[m], fs_out)
            n = filtered.shape[-1] // period
            bad = [nan[:, int(k * signal.fs) : int(np.ceil((k + 1) * signal.fs))].any() for k in range(n)]
            pieces[m] = filtered[:, : n * period].reshape(filtered.shape[0], n, period)[:, ~np.array(bad, dtype=bool)]
        usable = min((p.shape[1] for p in pieces.values()), default=0)
        if len(pieces) < len(MODALITIES) or usable == 0:
            seconds = min((s.data.shape[1] / s.fs for s in record.signals.values()), default=0.0)
            problems[stimulus] = f"baseline has no whole NaN-free second to subtract ({seconds:.2f} s)"
            continue
        templates[stimulus] = {m: p.mean(axis=1) for m, p in pieces.items()}
    return templates, problems


def _subtract(filtered: np.ndarray, template: np.ndarray) -> np.ndarray:
    """``filtered`` (C, T) minus ``template`` (C, P) repeated every P samples from sample 0."""
    period = template.shape[-1]
    return filtered - template[:, np.arange(filtered.shape[-1]) % period]


def prepare(records: list[Record], recipe: dict) -> tuple[dict[str, np.ndarray], list[dict], list[Reject]]:
    """Turn trial segments into paired samples: ``({"eeg": ..., "ecg": ...}, rows, rejects)``."""
    spec = WindowSpec.from_recipe(recipe)
    mode = recipe["baseline"]["mode"]
    drop = set(recipe["quality"]["drop"])
    dtype = np.dtype(recipe["output"]["dtype"])
    templates, problems = _baseline_templates(records, recipe, spec.fs) if mode == "subtract" else ({}, {})
    arrays: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    rows: list[dict] = []
    rejects: list[Reject] = []
    for record in records:
        segment = record.meta.get("segment", "stimulus")
        if segment == "baseline" and mode != "samples":
            continue
        missing = [m for m in MODALITIES if m not in record.signals]
        if missing:
            rejects.append(
                Reject(
                    record.dataset, record.source, "transform", f"no {' or '.join(missing)} signal", record.record_id
                )
            )
            continue
        template = templates.get(record.record_id)
        if mode == "subtract" and segment == "stimulus" and template is None:
            why = problems.get(record.record_id, "no baseline segment read for this trial")
            rejects.append(
                Reject(record.dataset, record.source, "transform", f"baseline.mode = subtract: {why}", record.record_id)
            )
            continue
        seconds = min(s.data.shape[1] / s.fs for s in (record.signals[m] for m in MODALITIES))
        span = int(np.floor(seconds * spec.fs))
        start = max(0, span - int(round(spec.last_seconds * spec.fs))) if spec.last_seconds else 0
        count = T.n_windows(span - start, spec.samples, spec.pad_min)
        if count == 0:
            rejects.append(
                Reject(
                    record.dataset,
                    record.source,
                    "transform",
                    f"shorter than one window ({(span - start) / spec.fs:.2f} s < {spec.seconds:g} s)",
                    record.record_id,
                )
            )
            continue
        flags = {name: np.zeros(count, dtype=bool) for name in FLAGS}
        windows = {}
        for modality in MODALITIES:
            signal, section = record.signals[modality], recipe[modality]
            with stage("transform"):
                raw, nan, filtered = _process(signal, section, spec.fs)
                if mode == "subtract" and segment == "stimulus":
                    filtered = _subtract(filtered, template[modality])
                stack = T.to_windows(filtered[None, :, start:span], spec.samples, spec.patch, count)  # (1, W, C, N, P)
            present = np.ones((1, signal.data.shape[0]), dtype=bool)
            offset = int(round(start * signal.fs / spec.fs))
            with stage("quality"):
                found = window_flags(
                    raw[None],
                    nan[None],
                    present,
                    stack,
                    signal.fs,
                    spec.seconds,
                    flat_ptp=section["flat_ptp"],
                    clip_fraction=recipe["quality"]["clip_fraction"],
                    amplitude_max=section["amplitude_max"],
                    offset=offset,
                )
            for name in FLAGS:
                flags[name] |= found[name][0]
            windows[modality] = stack[0]
        meta = dict(record.meta)
        threshold = _threshold(recipe, meta)
        labels = {
            f"{t}_high": (None if meta.get(t) is None else bool(float(meta[t]) > threshold))
            for t in recipe["labels"]["targets"]
        }
        base_row = {
            "dataset": record.dataset,
            "record_id": record.record_id,
            "subject_id": record.subject_id,
            "source_path": record.source,
            "segment": segment,
            "label_threshold": threshold,
            **{f"{m}_fs": float(record.signals[m].fs) for m in MODALITIES},
            **{f"{m}_unit": recipe[m]["unit"] for m in MODALITIES},
            **{f"{m}_channels": list(record.signals[m].channels) for m in MODALITIES},
            "ecg_lead_mask": [True] * len(record.signals["ecg"].channels),
            **({"ecg_skipped": list(record.skipped)} if record.skipped else {}),
            **meta,
            **labels,
        }
        for w in range(count):
            row_flags = {name: bool(flags[name][w]) for name in FLAGS}
            reason = drop_reason(row_flags, drop)
            if reason:
                rejects.append(Reject(record.dataset, record.source, "quality", reason, record.record_id, w))
                continue
            valid = min(spec.samples, span - start - w * spec.samples)
            rows.append(
                {
                    "key": sample_key(record.record_id, w),
                    **base_row,
                    "window_index": w,
                    "window_start_s": (start + w * spec.samples) / spec.fs,
                    "n_patches": -(-valid // spec.patch),
                    **row_flags,
                }
            )
            for modality in MODALITIES:
                arrays[modality].append(windows[modality][w].astype(dtype))
    out = {m: np.stack(v) if v else np.zeros((0,), dtype=dtype) for m, v in arrays.items()}
    return out, rows, rejects
