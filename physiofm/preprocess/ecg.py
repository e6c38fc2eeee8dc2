"""ECG records → windows: lead mapping, mV, 200 Hz, band-pass, windows of patches, quality flags.

Records of a batch that share a sampling rate and length are stacked and transformed with
one call per step, so the cost per record is the numerical work, not Python overhead.
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

import numpy as np

from physiofm.corpora.base import Record, Reject
from physiofm.preprocess import fingerprint
from physiofm.preprocess import transforms as T
from physiofm.preprocess.faults import stage
from physiofm.preprocess.leads import STANDARD_LEADS, lead_mapping, unmapped
from physiofm.preprocess.quality import any_nan, drop_reason, extremes, window_flags
from physiofm.preprocess.windows import WindowSpec, sample_key
from physiofm.units import unit_scale

MODALITIES = ("ecg",)
SOURCE_FS = (
    25.0,
    20_000.0,
)  # Hz: a header outside this is wrong (resampling 0.01 Hz to 200 Hz would need 20,000x the samples)
_IDENTITY = np.arange(len(STANDARD_LEADS))


@lru_cache(maxsize=256)
def _unmapped(channels: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(unmapped(list(channels)))


@lru_cache(maxsize=256)
def _mapping(channels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    return lead_mapping(list(channels))


def _map_leads(record: Record, source_scale: float = 1.0) -> tuple[float, np.ndarray, np.ndarray] | None:
    """``(fs, data (12, T) float32 in mV with absent leads zero, present (12,))``, or None without a standard lead.

    ``source_scale`` is the recipe's ``[source] scale``: a factor applied to the values as the reader
    gives them, before unit conversion (1 unless a corpus's unit is in doubt, as CODE-15%'s was).
    """
    signal = record.signals["ecg"]
    src, dst = _mapping(tuple(signal.channels))
    if not len(dst):
        return None
    scale = unit_scale(signal.unit) * source_scale
    present = np.zeros(len(STANDARD_LEADS), dtype=bool)
    present[dst] = True
    whole = signal.data.shape[0] == len(STANDARD_LEADS) and (src == _IDENTITY).all() and (dst == _IDENTITY).all()
    # float32 from here on, scaled in float64 first: the values the filter always took (it works in
    # float32), half the memory traffic for the quality flags and fingerprints (which give the same
    # flags and hashes: an ADC's steps stay distinct in float32, and fingerprints round to float32 µV)
    if whole:  # the 12 standard leads in order and nothing else: one conversion, no mapping
        data = np.asarray(signal.data, dtype=np.float64)
        data = (data * scale if scale != 1 else data).astype(np.float32)
    else:
        data = np.zeros((len(STANDARD_LEADS), signal.data.shape[1]), dtype=np.float32)
        data[dst] = np.asarray(signal.data[src], dtype=np.float64) * scale
    return float(signal.fs), data, present


def sample_shape(recipe: dict) -> dict[str, tuple[int, ...]]:
    spec = WindowSpec.from_recipe(recipe)
    return {"ecg": (len(STANDARD_LEADS), spec.patches, spec.patch)}


def prepare(records: list[Record], recipe: dict) -> tuple[dict[str, np.ndarray], list[dict], list[Reject]]:
    """Turn a batch of records into samples: ``({"ecg": (S, 12, N, 200)}, metadata rows, rejects)``."""
    spec = WindowSpec.from_recipe(recipe)
    dtype = np.dtype(recipe["output"]["dtype"])
    drop = set(recipe["quality"]["drop"])
    source_scale = float(recipe.get("source", {}).get("scale", 1.0))
    rejects: list[Reject] = []
    groups: dict[tuple[float, int], list[tuple[int, Record, np.ndarray, np.ndarray]]] = defaultdict(list)
    for position, record in enumerate(records):
        with stage("lead"):
            mapped = _map_leads(record, source_scale)
        if mapped is None:
            rejects.append(
                Reject(
                    record.dataset,
                    record.source,
                    "lead",
                    f"no standard ECG lead among channels {record.signals['ecg'].channels}",
                    record.record_id,
                )
            )
            continue
        fs, data, present = mapped
        if not SOURCE_FS[0] <= fs <= SOURCE_FS[1]:
            reason = (
                f"sampling rate {fs:g} Hz is outside what ECG recordings use ({SOURCE_FS[0]:g}-{SOURCE_FS[1]:g} Hz)"
            )
            rejects.append(Reject(record.dataset, record.source, "transform", reason, record.record_id))
            continue
        groups[(fs, data.shape[1])].append((position, record, data, present))

    # record position -> (rows, its group's kept windows, where the record's are in them)
    outputs: dict[int, tuple[list[dict], np.ndarray, int, int]] = {}
    for (fs, length), members in groups.items():
        group_records = [m[1] for m in members]
        raw = np.stack([m[2] for m in members])
        present = np.stack([m[3] for m in members])
        nan = any_nan(raw)
        if nan is not None:
            raw[nan] = 0.0
        count = T.n_windows(T.resampled_length(length, fs, spec.fs), spec.samples, spec.pad_min)
        if count == 0:
            for record in group_records:
                rejects.append(
                    Reject(
                        record.dataset,
                        record.source,
                        "transform",
                        f"shorter than one window ({length / fs:.2f} s < {spec.seconds:g} s)",
                        record.record_id,
                    )
                )
            continue
        with stage("transform"):
            filtered = T.filter_section(raw, fs, spec.fs, recipe["filter"])
            if not present.all():
                filtered *= present[..., None]  # absent leads stay exactly zero
            valid = filtered.shape[-1]
            windows = T.to_windows(
                filtered.astype(np.float32, copy=False), spec.samples, spec.patch, count
            )  # (R, W, 12, N, P)
        quality = recipe["quality"]
        with stage("quality"):
            limits = extremes(raw)  # each lead's largest and smallest value: for the flags and fingerprints
            flags = window_flags(
                raw,
                nan,
                present,
                windows,
                fs,
                spec.seconds,
                flat_ptp=quality["flat_ptp_mv"],
                clip_fraction=quality["clip_fraction"],
                amplitude_max=quality["amplitude_max_mv"],
                limits=limits,
            )
        with stage("transform"):  # fp_signal, fp_sketch per window (physiofm.preprocess.fingerprint)
            prints = fingerprint.ecg_columns(raw, fs, present, windows, list(STANDARD_LEADS), spec.fs, limits)
        n_patches = np.minimum(spec.samples, valid - np.arange(count) * spec.samples)
        n_patches = -(-n_patches // spec.patch)
        keep = np.ones(windows.shape[:2], dtype=bool)
        for name in drop:
            keep &= ~flags[f"q_{name}"]
        selected = windows[keep]  # the group's kept windows in record order: one copy
        ends = np.cumsum(keep.sum(axis=1)).tolist()
        flag_values = {name: values.tolist() for name, values in flags.items()}
        for r, record in enumerate(group_records):
            rows: list[dict] = []
            base = {
                "dataset": record.dataset,
                "record_id": record.record_id,
                "subject_id": record.subject_id,
                "source_path": record.source,
                "ecg_fs": fs,
                "ecg_unit": "mV",
                "ecg_channels": list(STANDARD_LEADS),
                "ecg_lead_mask": present[r].tolist(),
                "ecg_skipped": [*record.skipped, *_unmapped(tuple(record.signals["ecg"].channels))],
            }
            for w in range(count):
                row_flags = {name: values[r][w] for name, values in flag_values.items()}
                if not keep[r, w]:
                    rejects.append(
                        Reject(
                            record.dataset, record.source, "quality", drop_reason(row_flags, drop), record.record_id, w
                        )
                    )
                    continue
                rows.append(
                    {
                        "key": sample_key(record.record_id, w),
                        **base,
                        "window_index": w,
                        "window_start_s": w * spec.seconds,
                        "n_patches": int(n_patches[w]),
                        **row_flags,
                        **prints[r][w],
                        **record.meta,
                    }
                )
            outputs[members[r][0]] = (rows, selected, ends[r - 1] if r else 0, ends[r])
    ordered = [outputs[p] for p in sorted(outputs)]
    rows = [row for record_rows, *_ in ordered for row in record_rows]
    if len({id(selected) for _, selected, *_ in ordered}) == 1:  # one group (nearly always): already in order
        arrays = ordered[0][1]
    else:
        kept = [selected[start:stop] for _, selected, start, stop in ordered if stop > start]
        arrays = np.concatenate(kept) if kept else np.zeros((0, *sample_shape(recipe)["ecg"]), dtype=dtype)
    return {"ecg": arrays.astype(dtype, copy=False)}, rows, rejects
