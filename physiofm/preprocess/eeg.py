"""EEG recordings → windows: the channel contract, µV, 200 Hz, band-pass, notch, trims, quality flags.

One recording at a time, a few minutes at a time.  The reader gives a lazy signal (for EDF/BDF,
:class:`physiofm.corpora.edf.EdfArray`); this preparer maps its channels onto the recipe's target
set (:func:`physiofm.corpora.eeg_channels.match`), decides from the recording's length which
windows the recipe keeps (``[recording]``: minimum length, seconds dropped at the start and end;
``[window]``: length), and then reads, for each *chunk* of about ``processing.chunk_seconds`` of
windows, only the target channels over the chunk's span plus ``processing.margin_seconds`` of
context on each side.  Each chunk is resampled to ``signal.fs``, band-passed and notched
(zero-phase), the margins are cut off and the rest is cut into windows of patches.  So a worker
holds one chunk of source signal and one part's windows, whatever the recording's length.

``filter.method``: ``fft`` (default) does the resampling and both filters in one real FFT per chunk
and channel, multiplying the spectrum by ``|H(f)|^2`` of the recipe's Butterworth band-pass and
notch (what ``sosfiltfilt`` applies, without its edge effects), in float32; ``sosfiltfilt`` uses
the shared time-domain transforms (``resample_poly``, then ``sosfiltfilt``) in float64, as the ECG
preparer does.  They agree to about 1e-3 of the signal's rms (tested), the FFT one at a fraction
of the cost.

The chunk grid is fixed by the recipe and the recording (chunks start on source samples that fall
exactly on the output grid), so the output does not depend on how a build is run.  Filtering a
chunk with its margins differs from filtering the whole recording only by edge transients that
have decayed within the margin (checked against whole-recording filtering in the tests).

Window ``w`` starts at output sample ``round(trim_start * fs) + w * samples``; as in CBraMod's
``preprocessing_tueg_for_pretraining.py`` the remainder after the last whole window is dropped
together with the end trim.  Flags (µV): ``q_nan`` (a NaN in the source span), ``q_flat`` (a
present channel's peak-to-peak below ``quality.flat_ptp_uv``), ``q_clip`` (more than
``quality.clip_fraction`` of a channel's source samples at its physical range's limit: the
amplifier saturated), ``q_amplitude`` (``max |x| >= quality.amplitude_max_uv`` on a present
channel: CBraMod keeps a sample only when ``max |x| < 100`` µV).  ``quality.drop`` names the flags
whose windows become ``quality`` rejects.

Channel policy (``[channels]``): ``targets`` in order; a target the recording lacks is zero and
masked (``eeg_channel_mask``), and a recording missing more than ``max_missing`` targets is a
``lead`` reject naming them.  Montage and reference go into ``eeg_montage`` and ``eeg_reference``.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
import scipy.fft

from physiofm.corpora import eeg_channels
from physiofm.corpora.base import Record, Reject
from physiofm.preprocess import transforms as T
from physiofm.preprocess.faults import stage
from physiofm.preprocess.windows import WindowSpec, sample_key
from physiofm.units import unit_scale

MODALITIES = ("eeg",)
BATCH_RECORDS = 1  # one recording per prepare call: a worker holds one recording part's windows
SOURCE_FS = (50.0, 50_000.0)  # Hz: a header outside this is wrong


def targets(recipe: dict) -> tuple[str, ...]:
    return tuple(recipe["channels"]["targets"])


def sample_shape(recipe: dict) -> dict[str, tuple[int, ...]]:
    spec = WindowSpec.from_recipe(recipe)
    return {"eeg": (len(targets(recipe)), spec.patches, spec.patch)}


def _ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    """(up, down) of the polyphase resampler: the same reduction :func:`transforms.resample` uses."""
    if fs_in == fs_out:
        return 1, 1
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


@lru_cache(maxsize=64)
def _power(n_out: int, fs_out: float, bandpass: tuple[float, float], order: int, notch: float, notch_q: float):
    """``|H(f)|^2`` of the band-pass (and notch) at the rfft bins of ``n_out`` samples: the response of
    applying the Butterworth filter forwards and backwards (``sosfiltfilt``), without its edge effects."""
    freqs = np.fft.rfftfreq(n_out, 1 / fs_out)  # closed forms (no scipy.signal import): equal to 1e-10
    power = T.butter_power(freqs, float(fs_out), *map(float, bandpass), int(order))
    if notch:
        power *= T.notch_power(freqs, float(fs_out), float(notch), float(notch_q))
    power.setflags(write=False)
    return power


def fft_resample_filter(x: np.ndarray, fs_in: float, fs_out: float, bandpass: tuple[float, float], order: int,
                        notch: float = 0.0, notch_q: float = 30.0) -> np.ndarray:  # fmt: skip
    """Resample ``x`` (C, L) from ``fs_in`` to ``fs_out`` and apply the zero-phase band-pass and notch, in one FFT.

    The line through the first and last samples is removed first (the band-pass removes it anyway, and
    the chunk then wraps around without a step); the chunk is zero-padded to a length whose resampled
    length is whole, so output sample ``k`` lies exactly at ``k / fs_out`` s.  Equivalent to
    ``notch(bandpass(resample(x)))`` with ``sosfiltfilt`` away from the chunk's edges (the preparer
    reads margins and discards them).  Returns ``ceil(L * fs_out / fs_in)`` samples.
    """
    up, down = _ratio(fs_in, fs_out)
    channels, length = x.shape
    blocks = scipy.fft.next_fast_len(-(-length // down), real=True)
    n_in, n_out = blocks * down, blocks * up
    padded = np.zeros((channels, n_in), dtype=x.dtype)
    body = padded[:, :length]
    body[...] = x
    first, slope = x[:, :1].copy(), x[:, -1:] - x[:, :1]
    body -= first
    body -= slope * np.linspace(0.0, 1.0, length, dtype=x.dtype)
    spectrum = scipy.fft.rfft(padded, axis=-1, overwrite_x=True)
    del padded, body
    bins = n_out // 2 + 1
    if n_out <= n_in:
        spectrum = spectrum[:, :bins]
    else:
        wider = np.zeros((channels, bins), dtype=spectrum.dtype)
        wider[:, : spectrum.shape[1]] = spectrum
        if n_in % 2 == 0:
            wider[:, n_in // 2] *= 0.5  # the input's Nyquist bin is split between +f and -f
        spectrum = wider
    power = _power(n_out, float(fs_out), tuple(bandpass), int(order), float(notch), float(notch_q))
    spectrum *= power.astype(x.dtype) * (n_out / n_in)
    out = scipy.fft.irfft(spectrum, n=n_out, axis=-1)
    return out[:, : -(-length * up // down)]


def _notch(recipe: dict, meta: dict) -> float:
    """The notch frequency: a number, or ``"line"``: the recording's power-line frequency (BIDS
    ``PowerLineFrequency``), else ``filter.line_default``; 0 disables it."""
    setting = recipe["filter"].get("notch", 0) or 0
    if setting == "line":
        line = meta.get("power_line_hz")
        return float(line) if line else float(recipe["filter"].get("line_default", 0) or 0)
    return float(setting)


def _events_in(events: list, start: float, stop: float) -> list[str]:
    """Labels of the events overlapping ``[start, stop)`` s (an instant event: its onset inside)."""
    found = set()
    for onset, duration, label in events:
        onset, duration = float(onset), float(duration)
        if (onset < stop and onset + duration > start) or (duration <= 0 and start <= onset < stop):
            found.add(str(label))
    return sorted(found)


class _Plan:
    """Which windows of one recording (part) the recipe keeps, on the output grid.

    Windows are processed in chunks of ``per_chunk`` windows on a grid fixed by the recording;
    part ``k`` of ``n`` takes whole chunks (``[k * chunks // n, (k + 1) * chunks // n)``), so the
    parts of a file together give exactly the windows, and the bytes, of the whole file.
    """

    def __init__(self, n_source: int, fs: float, spec: WindowSpec, recipe: dict, part: tuple[int, int]) -> None:
        recording = recipe.get("recording", {})
        self.fs, self.spec = fs, spec
        self.up, self.down = _ratio(fs, spec.fs)
        self.out_length = T.resampled_length(n_source, fs, spec.fs) if fs != spec.fs else n_source
        self.start = int(round(float(recording.get("trim_start_seconds", 0)) * spec.fs))
        self.stop = self.out_length - int(round(float(recording.get("trim_end_seconds", 0)) * spec.fs))
        self.count = T.n_windows(max(0, self.stop - self.start), spec.samples, spec.pad_min)
        seconds = float(recipe.get("processing", {}).get("chunk_seconds", 300))
        self.per_chunk = max(1, int(round(seconds / spec.seconds)))
        chunks = -(-self.count // self.per_chunk)
        k, n = part
        self.first = min(self.count, (k * chunks // n) * self.per_chunk)
        self.last = min(self.count, ((k + 1) * chunks // n) * self.per_chunk)

    def window_start(self, w: int) -> int:
        return self.start + w * self.spec.samples

    def source_index(self, out_index: int) -> int:
        """The source sample at output sample ``out_index`` (rounded)."""
        return int(round(out_index * self.down / self.up))


def _reject(record: Record, recording: str, stage_name: str, reason: str, window: int | None = None) -> Reject:
    return Reject(record.dataset, record.source, stage_name, reason, recording, window)


def _window_share(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Fraction of True samples of ``mask`` (C, T) in each span ``[starts[i], starts[i+1])``: (W, C)."""
    lengths = np.maximum(starts[1:] - starts[:-1], 1)
    if (starts[1:] - starts[:-1] == lengths[0]).all():  # windows of whole, equal source spans: a reshape
        part = mask[:, starts[0] : starts[-1]].reshape(mask.shape[0], len(lengths), lengths[0])
        return (np.count_nonzero(part, axis=-1) / lengths[0]).T
    counts = np.add.reduceat(mask[:, : starts[-1]], starts[:-1], axis=1, dtype=np.int64)
    counts[:, starts[:-1] >= starts[1:]] = 0
    return counts.T / lengths[:, None]


def _filter(raw: np.ndarray, fs: float, spec: WindowSpec, filt: dict, notch: float) -> np.ndarray:
    """Resample to ``spec.fs``, band-pass and notch, by the recipe's ``filter.method``."""
    notch = notch if notch and notch < spec.fs / 2 else 0.0
    if filt.get("method", "fft") == "fft":
        return fft_resample_filter(raw, fs, spec.fs, tuple(filt["bandpass"]), filt["order"], notch, filt["notch_q"])
    out = T.bandpass(T.resample(raw, fs, spec.fs), spec.fs, *filt["bandpass"], order=filt["order"])
    return T.notch(out, spec.fs, notch, filt["notch_q"]) if notch else out


class _Recording:
    """One record's recording as the recipe sees it: its channels on the target set, and the windows kept."""

    def __init__(self, record: Record, recipe: dict, spec: WindowSpec) -> None:
        self.record, self.recipe, self.spec = record, recipe, spec
        self.wanted = targets(recipe)
        self.meta = {key: value for key, value in record.meta.items() if not key.startswith("_")}
        self.private = {key: value for key, value in record.meta.items() if key.startswith("_")}
        self.id = str(self.private.get("_recording") or record.record_id)
        self.part = tuple(self.private.get("_part") or (0, 1))

    def problem(self) -> tuple[str, str] | None:
        """``(stage, reason)`` when the recording gives no window; sets the channel map and plan otherwise."""
        signal = self.record.signals.get("eeg")
        if signal is None:
            return "transform", f"no eeg signal (has {', '.join(self.record.signals) or 'none'})"
        self.signal = signal
        with stage("lead"):
            self.found = found = eeg_channels.match(tuple(signal.channels), self.wanted)
            allowed = int(self.recipe["channels"].get("max_missing", 0))
            if len(found.missing) > allowed:
                return "lead", (f"missing {len(found.missing)} of {len(self.wanted)} channels (the recipe allows "
                                f"{allowed}): {', '.join(found.missing)}")  # fmt: skip
            self.rows = np.array([i for i in found.source if i >= 0], dtype=np.intp)
            self.slots = np.array([j for j, i in enumerate(found.source) if i >= 0], dtype=np.intp)
            if not len(self.slots):
                return "lead", f"none of the {len(self.wanted)} target channels is in the recording"
        self.fs = fs = float(signal.fs)
        if not SOURCE_FS[0] <= fs <= SOURCE_FS[1]:
            return "transform", (f"sampling rate {fs:g} Hz is outside what EEG recordings use "
                                 f"({SOURCE_FS[0]:g}-{SOURCE_FS[1]:g} Hz)")  # fmt: skip
        self.n_source = int(signal.data.shape[1])
        seconds = self.n_source / fs
        section = self.recipe.get("recording", {})
        minimum = float(section.get("min_seconds", 0) or 0)
        if seconds < minimum:
            return "transform", f"recording is {seconds:.1f} s, shorter than the recipe's minimum {minimum:g} s"
        self.plan = _Plan(self.n_source, fs, self.spec, self.recipe, self.part)  # type: ignore[arg-type]
        if self.plan.count == 0:
            trims = float(section.get("trim_start_seconds", 0)) + float(section.get("trim_end_seconds", 0))
            return "transform", (f"no whole window: {seconds:.1f} s minus {trims:g} s of trims is shorter than "
                                 f"one {self.spec.seconds:g}-s window")  # fmt: skip
        return None

    def base_row(self) -> dict:
        found, private = self.found, self.private
        row = {
            "dataset": self.record.dataset,
            "record_id": self.id,
            "subject_id": self.record.subject_id,
            "source_path": self.record.source,
            "eeg_fs": self.fs,
            "eeg_unit": "uV",
            "eeg_channels": list(self.wanted),
            "eeg_channel_mask": list(found.present),
            "eeg_montage": private.get("_montage"),
            "eeg_reference": private.get("_reference") or found.reference,
            "eeg_skipped": [*self.record.skipped, *found.unused],
        }
        if "_events" in private:
            row["event_labels"] = sorted({str(e[2]) for e in private["_events"]})
        return row

    def chunk(self, w0: int, w1: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Windows ``[w0, w1)``: ``(windows (W, C, N, P) float32, flags {name: (W,)})``."""
        plan, spec, recipe, signal = self.plan, self.spec, self.recipe, self.signal
        margin = int(round(float(recipe.get("processing", {}).get("margin_seconds", 15)) * spec.fs))
        o0, o1 = plan.window_start(w0), min(plan.window_start(w1), plan.out_length)
        block = max(0, (o0 - margin) // plan.up)  # the span starts on a source sample of the output grid
        a, b = block * plan.down, min(self.n_source, -(-(o1 + margin) // plan.up) * plan.down)
        work = np.float32 if recipe["filter"].get("method", "fft") == "fft" else np.float64
        with stage("read"):
            if hasattr(signal.data, "read"):
                raw = signal.data.read(self.rows, a, b, work)
            else:
                raw = np.asarray(signal.data[self.rows, a:b], dtype=work)
        with stage("transform"):
            scale = unit_scale(signal.unit, "uV")
            if scale != 1:
                raw = raw * work(scale)
            nan = np.isnan(raw)
            if nan.any():
                raw = np.where(nan, 0.0, raw).astype(work)
            out = _filter(raw, self.fs, spec, recipe["filter"], _notch(recipe, self.meta))
            out = out[:, o0 - block * plan.up : o1 - block * plan.up]
            chunk = np.zeros((len(self.wanted), (w1 - w0) * spec.samples), dtype=np.float32)
            chunk[self.slots, : out.shape[1]] = out
        with stage("quality"):
            flags = self._flags(raw, nan, chunk, a, w0, w1, scale)
        return T.to_windows(chunk, spec.samples, spec.patch, w1 - w0), flags

    def _flags(self, raw, nan, chunk, a: int, w0: int, w1: int, scale: float) -> dict[str, np.ndarray]:
        plan, quality, count = self.plan, self.recipe["quality"], w1 - w0
        ends = [min(plan.window_start(w), plan.out_length) for w in range(w0, w1 + 1)]
        starts = np.clip(np.array([plan.source_index(o) - a for o in ends]), 0, raw.shape[1])
        q_nan = (_window_share(nan, starts) > 0).any(axis=1) if nan.any() else np.zeros(count, dtype=bool)
        limits = getattr(self.signal.data, "physical_range", None)
        q_clip = np.zeros(count, dtype=bool)
        if limits is not None:  # samples at the physical range's limit: the amplifier or converter saturated
            low, high = limits[0][self.rows] * scale, limits[1][self.rows] * scale
            tolerance = np.abs(high - low) * 1e-6
            span = raw[:, starts[0] : starts[-1]]
            at_limit = np.zeros(raw.shape, dtype=bool)
            at_limit[:, starts[0] : starts[-1]] = (span <= (low + tolerance)[:, None]) | (
                span >= (high - tolerance)[:, None])  # fmt: skip
            q_clip = (_window_share(at_limit, starts) > float(quality["clip_fraction"])).any(axis=1)
        live = chunk[self.slots].reshape(len(self.slots), count, self.spec.samples)
        top, bottom = live.max(axis=-1), live.min(axis=-1)  # (C, W)
        return {
            "q_nan": q_nan,
            "q_flat": (top - bottom < float(quality["flat_ptp_uv"])).any(axis=0),
            "q_clip": q_clip,
            "q_amplitude": np.maximum(top, -bottom).max(axis=0) >= float(quality["amplitude_max_uv"]),
        }


def _prepare_record(record: Record, recipe: dict, spec: WindowSpec) -> tuple[np.ndarray, list[dict], list[Reject]]:
    empty = np.zeros((0, len(targets(recipe)), spec.patches, spec.patch), dtype=np.float32)
    recording = _Recording(record, recipe, spec)
    problem = recording.problem()
    if problem is not None:  # a recording-wide reject, reported once (by its first part)
        return empty, [], ([_reject(record, recording.id, *problem)] if recording.part[0] == 0 else [])
    plan = recording.plan
    if plan.first >= plan.last:
        return empty, [], []
    if recipe["filter"].get("method", "fft") not in ("fft", "sosfiltfilt"):
        raise ValueError(f"filter.method must be fft or sosfiltfilt, not {recipe['filter']['method']!r}")
    drop = set(recipe["quality"]["drop"])
    base = recording.base_row()
    events = recording.private.get("_events")
    rows: list[dict] = []
    rejects: list[Reject] = []
    kept: list[np.ndarray] = []
    for w0 in range(plan.first, plan.last, plan.per_chunk):
        w1 = min(w0 + plan.per_chunk, plan.last)
        windows, flags = recording.chunk(w0, w1)
        keep = np.ones(w1 - w0, dtype=bool)
        for name in drop:
            keep &= ~flags[f"q_{name}"]
        for i, w in enumerate(range(w0, w1)):
            row_flags = {name: bool(values[i]) for name, values in flags.items()}
            if not keep[i]:
                hit = [name[2:] for name, value in row_flags.items() if value and name[2:] in drop]
                rejects.append(_reject(record, recording.id, "quality", f"window flagged {', '.join(hit)}", w))
                continue
            start = plan.window_start(w)
            valid = max(0, min(spec.samples, plan.out_length - start, plan.stop - start))
            row = {"key": sample_key(recording.id, w), **base, "window_index": w, "window_start_s": start / spec.fs,
                   "n_patches": -(-valid // spec.patch), **row_flags, **recording.meta}  # fmt: skip
            if events is not None:
                row["events"] = _events_in(events, start / spec.fs, start / spec.fs + spec.seconds)
            rows.append(row)
        if keep.any():
            kept.append(windows[keep])
    arrays = kept[0] if len(kept) == 1 else np.concatenate(kept) if kept else empty
    return arrays, rows, rejects


def prepare(records: list[Record], recipe: dict) -> tuple[dict[str, np.ndarray], list[dict], list[Reject]]:
    """Turn recordings into samples: ``({"eeg": (S, C, N, P)}, metadata rows, rejects)``."""
    spec = WindowSpec.from_recipe(recipe)
    dtype = np.dtype(recipe["output"]["dtype"])
    arrays: list[np.ndarray] = []
    rows: list[dict] = []
    rejects: list[Reject] = []
    for record in records:
        values, more_rows, more_rejects = _prepare_record(record, recipe, spec)
        if len(values):
            arrays.append(values)
        rows.extend(more_rows)
        rejects.extend(more_rejects)
    if len(arrays) == 1:
        out = arrays[0]
    else:
        out = np.concatenate(arrays) if arrays else np.zeros((0, *sample_shape(recipe)["eeg"]), dtype=np.float32)
    return {"eeg": out.astype(dtype, copy=False)}, rows, rejects
