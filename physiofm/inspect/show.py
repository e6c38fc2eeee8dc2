"""One stored sample as a picture (``physiofm show``).

Every channel of the window is drawn on one time axis (seconds from the record's start), one
row per channel, top to bottom EEG then ECG (a paired emotion sample shows both modalities of
the same span one above the other).  Each modality has its own vertical scale, given by a scale
bar (mV for ECG, µV for EEG); a lead the source did not have (``ecg_lead_mask`` False) gets a
grey "absent" label and no trace; zero padding at the end of a short record's last window is
shaded.  The title names the dataset, record, subject, window (index and start), the row and key,
the quality flags raised and the label columns of the manifest (booleans, multi-label lists such
as ``dx`` or ``ptbxl_superclass``, and the recipe's score targets, e.g. valence with its
``valence_high``).

The window is read from the Zarr row (``manifest.zarr_row``, the default: one chunk read) or
from its tar shard (``source="tar"``: the shard's headers are walked up to the sample's members,
which alone are read).  ``raw=True`` reads the source record back through the corpus reader
(``build.json``'s ``dataset`` and ``source``), takes the same span (``window_start_s`` to
``+ window.seconds``) at the source's own rate, converts it to the stored unit, maps it onto the
stored channels as the build did, removes each channel's median (the source's DC offset, which
the recipe's band-pass removes too) and draws it beneath the stored trace: what the recipe did
(resampling, band-pass, notch, baseline removal) shows as the difference.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from physiofm.inspect import InspectError
from physiofm.io import StorageOptions, url_to_fs
from physiofm.preprocess.windows import WindowSpec
from physiofm.store.layout import Layout
from physiofm.store.npy import NpyError, decode
from physiofm.store.tar import ShardError, iter_members

__all__ = ["Drawn", "Sample", "SampleReader", "Store", "draw_on", "draw_sample", "load_sample", "sample_png"]

ORDER = ("eeg", "ecg")  # top to bottom
SOURCES = ("zarr", "tar")
STORED_COLOR, RAW_COLOR, ABSENT_COLOR = "#1f3b73", "#f08a3c", "#9aa0a8"
NOT_LABELS = {"ecg_derivation", "scp_codes"}  # list or text columns that describe, not label, a sample


def display_unit(unit: str) -> str:
    """``uV`` → ``µV`` (the stored unit names are ASCII)."""
    return {"uv": "µV", "µv": "µV", "μv": "µV", "mv": "mV", "v": "V", "nv": "nV"}.get(str(unit).lower(), str(unit))


# ---- the store ----------------------------------------------------------------------------------


@dataclass
class Store:
    """An opened, complete store: its layout, ``build.json``, window geometry and (on first use) manifest."""

    layout: Layout
    info: dict
    _manifest: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, url: str | Store, storage_options: StorageOptions | None = None) -> Store:
        if isinstance(url, Store):
            return url
        layout = Layout(str(url), dict(storage_options or {}))
        try:
            info = layout.read_info()
        except (OSError, ValueError) as error:
            raise InspectError(f"cannot read {url}: {error}") from None
        if info is None:
            raise InspectError(f"{url} is not a complete store (no build.json): build it first, or check the path")
        return cls(layout, info)

    @property
    def url(self) -> str:
        return self.layout.url

    @property
    def modalities(self) -> list[str]:
        found = list(self.info.get("modalities") or self.info.get("sample_shapes", {}))
        return sorted(found, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER))

    @property
    def spec(self) -> WindowSpec:
        return WindowSpec.from_recipe(self.info["recipe"])

    @property
    def manifest(self):
        if self._manifest is None:
            self._manifest = self.layout.read_table("manifest")
        return self._manifest

    def label_columns(self) -> list[str]:
        """The manifest's label columns: score targets of the recipe (each followed by its ``_high``),
        then other boolean columns and list-of-text columns (``dx``, ``ptbxl_superclass``) outside the schema."""
        import polars as pl

        from physiofm.store import schema

        columns = self.manifest.schema
        core = set(schema.columns("manifest", tuple(self.modalities)))
        out: list[str] = []
        for target in (self.info.get("recipe", {}).get("labels", {}) or {}).get("targets", []):
            for name in (target, f"{target}_high"):
                if name in columns and name not in out:
                    out.append(name)
        for name, dtype in columns.items():
            if name in core or name in out or name in NOT_LABELS:
                continue
            if dtype == pl.Boolean or dtype == pl.List(pl.String):
                out.append(name)
        return out

    def pick(self, key: str | None = None, row: int | None = None, random: bool = False, seed: int | None = None):
        """The manifest row index of a sample: by ``key`` (or a record id: its first window), ``row``, at
        ``random`` (from ``seed``), or row 0."""
        import polars as pl

        if sum((key is not None, row is not None, bool(random))) > 1:
            raise InspectError("choose one sample: a KEY, --row N or --random")
        manifest = self.manifest
        height = manifest.height
        if not height:
            raise InspectError(f"{self.url} holds no samples")
        if key is not None:
            indexed = manifest.select("key", "record_id", "window_index").with_row_index("row")
            hit = indexed.filter(pl.col("key") == key)
            if not hit.height:
                hit = indexed.filter(pl.col("record_id") == key).sort("window_index")
            if not hit.height:
                examples = ", ".join(manifest["key"].head(3).to_list())
                raise InspectError(f"no sample with key or record id {key!r} in {self.url} (keys look like {examples})")
            return int(hit["row"][0])
        if random:
            return int(np.random.default_rng(seed).integers(height))
        row = 0 if row is None else int(row)
        if not -height <= row < height:
            raise InspectError(f"row {row} is out of range: {self.url} holds {height} samples (rows 0-{height - 1})")
        return row % height


class SampleReader:
    """Reads stored windows ``{modality: (C, N, P)}`` of manifest rows, from Zarr or from the tar shards."""

    def __init__(self, store: Store, source: str = "zarr") -> None:
        if source not in SOURCES:
            raise InspectError(f"read samples from one of {', '.join(SOURCES)}, not {source!r}")
        self.store, self.source = store, source
        self._group = None

    def read(self, meta: dict) -> dict[str, np.ndarray]:
        return self._zarr(meta) if self.source == "zarr" else self._tar(meta)

    def _zarr(self, meta: dict) -> dict[str, np.ndarray]:
        if self._group is None:
            try:
                self._group = self.store.layout.open_zarr("r")
            except Exception as error:  # noqa: BLE001 - zarr raises many types for a missing group
                raise InspectError(f"cannot open the Zarr arrays of {self.store.url}: {error}") from None
        row = int(meta["zarr_row"])
        return {m: np.asarray(self._group[m][row], dtype=np.float32) for m in self.store.modalities}

    def _tar(self, meta: dict) -> dict[str, np.ndarray]:
        layout = self.store.layout
        path = layout.shard(meta["shard"])
        wanted = {f"{meta['key']}.{m}.npy": m for m in self.store.modalities}
        found: dict[str, np.ndarray] = {}
        try:
            with layout.fs.open(path, "rb") as handle:
                for name, size in iter_members(handle, path):
                    if name in wanted:
                        found[wanted[name]] = decode(handle.read(size), f"{path}: {name}").astype(np.float32)
                        if len(found) == len(wanted):
                            break
        except (OSError, ShardError, NpyError) as error:
            raise InspectError(f"cannot read sample {meta['key']} from {path}: {error}") from None
        missing = sorted(set(wanted) - {f"{meta['key']}.{m}.npy" for m in found})
        if missing:
            raise InspectError(f"{path} holds no {', '.join(missing)} (the manifest says it should)")
        return found


# ---- one sample ---------------------------------------------------------------------------------


@dataclass
class Trace:
    """One modality of a sample: ``data`` (C, T) in ``unit``, the whole window (padding included)."""

    modality: str
    data: np.ndarray
    channels: list[str]
    present: list[bool]
    unit: str
    raw: np.ndarray | None = None  # (C, T_raw) source span in ``unit``, NaN where the source lacks a channel
    raw_fs: float | None = None


@dataclass
class Sample:
    row: int
    meta: dict
    traces: dict[str, Trace]  # in drawing order, top to bottom
    fs: float
    window_s: float
    valid_s: float  # seconds before the zero padding
    labels: list[str]
    read_from: str
    dataset: str = ""

    @property
    def start_s(self) -> float:
        return float(self.meta.get("window_start_s") or 0.0)

    def title(self, width: int = 150) -> str:
        meta = self.meta
        first = (
            f"{meta.get('dataset', self.dataset)} · record {meta.get('record_id')} · subject "
            f"{meta.get('subject_id') if meta.get('subject_id') is not None else '–'} · window "
            f"{meta.get('window_index')} (from {self.start_s:g} s)"
        )
        second = f"row {self.row} · key {meta.get('key')} · read from {self.read_from}"
        if meta.get("segment"):
            second += f" · segment {meta['segment']}"
        flags = [name[2:] for name in ("q_nan", "q_flat", "q_clip", "q_amplitude") if meta.get(name)]
        second += f" · quality flags: {', '.join(flags)}" if flags else " · no quality flag"
        lines = [first, second]
        labels = " · ".join(_label_parts(meta, self.labels))
        if labels:
            lines += textwrap.wrap(labels, width=width, max_lines=3, placeholder=" …")
        return "\n".join(lines)


def _label_parts(meta: dict, columns: list[str]) -> list[str]:
    parts = []
    for name in columns:
        if name.endswith("_high") and name[: -len("_high")] in columns:
            continue  # shown beside its score
        value = meta.get(name)
        high = f"{name}_high"
        if high in columns:
            level = {True: "high", False: "low"}.get(meta.get(high), "?")
            parts.append(f"{name} {_text(value)} ({level})")
        elif isinstance(value, bool):
            parts.append(f"{name}: {'yes' if value else 'no'}")
        elif isinstance(value, list):
            parts.append(f"{name}: {', '.join(map(str, value)) if value else 'none'}")
        else:
            parts.append(f"{name}: {_text(value)}")
    return parts


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def build_sample(store: Store, row: int, windows: dict[str, np.ndarray], read_from: str) -> Sample:
    """A :class:`Sample` of manifest ``row`` from its stored windows ``{modality: (C, N, P)}``."""
    meta = store.manifest.row(row, named=True)
    spec = store.spec
    traces = {}
    for modality in store.modalities:
        window = np.asarray(windows[modality], dtype=np.float32)
        data = window.reshape(window.shape[0], -1)
        channels = list(meta.get(f"{modality}_channels") or [f"{modality}{i}" for i in range(data.shape[0])])
        mask = meta.get(f"{modality}_lead_mask")
        present = [bool(v) for v in mask] if mask is not None and len(mask) == data.shape[0] else [True] * len(channels)
        unit = meta.get(f"{modality}_unit") or {"ecg": "mV", "eeg": "uV"}.get(modality, "")
        traces[modality] = Trace(modality, data, channels, present, unit)
    samples = next(iter(traces.values())).data.shape[1] if traces else 0
    patches = meta.get("n_patches")
    valid = min(samples, int(patches) * spec.patch) if patches is not None else samples
    return Sample(
        row, meta, traces, spec.fs, samples / spec.fs, valid / spec.fs, store.label_columns(), read_from,
        store.info.get("dataset", ""),
    )  # fmt: skip


def load_sample(
    store: str | Store,
    key: str | None = None,
    row: int | None = None,
    random: bool = False,
    seed: int | None = None,
    raw: bool = False,
    storage_options: StorageOptions | None = None,
    source: str = "zarr",
) -> Sample:
    """The sample chosen by ``key``, ``row`` or ``random`` (see :meth:`Store.pick`), with the source span if ``raw``."""
    opened = Store.open(store, storage_options)
    index = opened.pick(key, row, random, seed)
    meta = opened.manifest.row(index, named=True)
    sample = build_sample(opened, index, SampleReader(opened, source).read(meta), source)
    if raw:
        attach_raw(opened, sample)
    return sample


# ---- the source record's same span ---------------------------------------------------------------


def _source_reachable(source: str) -> str | None:
    """None if ``source`` exists, else why not."""
    try:
        fs, path = url_to_fs(source)
        return None if fs.exists(path) else "it does not exist"
    except (OSError, ValueError, ImportError) as error:
        return str(error) or type(error).__name__


def _find_item(items: list, record_id: str):
    """The item that yields ``record_id``: the one of that id, else the longest id it extends
    (``s01_t01_baseline`` is read with item ``s01_t01``)."""
    exact = next((item for item in items if item.id == record_id), None)
    if exact is not None:
        return exact
    prefixes = [item for item in items if record_id.startswith(f"{item.id}_")]
    return max(prefixes, key=lambda item: len(item.id)) if prefixes else None


def attach_raw(store: Store, sample: Sample) -> None:
    """Read the source record of ``sample`` back and attach its same span to each trace (``Trace.raw``)."""
    from physiofm import corpora
    from physiofm.corpora.base import Record
    from physiofm.units import unit_scale

    source, dataset = store.info.get("source"), store.info.get("dataset")
    if not source or not dataset:
        raise InspectError(f"{store.url}/build.json names no source or dataset: the raw record cannot be found")
    why = _source_reachable(str(source))
    if why:
        raise InspectError(
            f"cannot overlay the raw record: the source {source} that built {store.url} is not reachable "
            f"({why}); run show where the archive is, or without --raw"
        )
    try:
        reader = corpora.get(dataset).reader
    except ValueError as error:
        raise InspectError(f"cannot overlay the raw record: {error}") from None
    record_id = sample.meta["record_id"]
    item = _find_item(reader.list_items(str(source)), record_id)
    if item is None:
        raise InspectError(f"the {dataset} reader lists no item for record {record_id} in {source}")
    found = list(reader.read(str(source), [item]))
    record = next((r for r in found if isinstance(r, Record) and r.record_id == record_id), None)
    if record is None:
        reasons = "; ".join(getattr(r, "reason", "") for r in found if not isinstance(r, Record))
        raise InspectError(f"the {dataset} reader gives no record {record_id} from {item.path}: {reasons or 'none'}")
    for modality, trace in sample.traces.items():
        signal = record.signals.get(modality)
        if signal is None:
            continue
        start = int(round(sample.start_s * signal.fs))
        stop = start + int(round(sample.window_s * signal.fs))
        span = np.asarray(signal.data[:, start:stop], dtype=np.float64) * unit_scale(signal.unit, trace.unit)
        source_index, stored_index = _channel_map(modality, store.info.get("kind"), signal.channels, trace.channels)
        aligned = np.full((len(trace.channels), span.shape[1]), np.nan)
        aligned[stored_index] = span[source_index]
        trace.raw, trace.raw_fs = aligned, float(signal.fs)


def _channel_map(modality: str, kind: str | None, source: list[str], stored: list[str]):
    """Which source channel becomes which stored channel: the build's lead mapping for ECG stores,
    the channel names otherwise."""
    if modality == "ecg" and kind == "ecg":
        from physiofm.preprocess.leads import lead_mapping

        src, dst = lead_mapping(list(source))
        keep = dst < len(stored)
        return src[keep], dst[keep]
    pairs = [(source.index(name), j) for j, name in enumerate(stored) if name in source]
    if not pairs and len(source) == len(stored):
        pairs = [(i, i) for i in range(len(stored))]
    src = np.array([p[0] for p in pairs], dtype=np.intp)
    dst = np.array([p[1] for p in pairs], dtype=np.intp)
    return src, dst


# ---- drawing ------------------------------------------------------------------------------------


@dataclass
class Drawn:
    """What :func:`draw_on` put on the axes, by ``(modality, channel)``."""

    traces: dict[tuple[str, str], Any] = field(default_factory=dict)
    raw: dict[tuple[str, str], Any] = field(default_factory=dict)
    absent: list[tuple[str, str]] = field(default_factory=list)
    scale_bars: dict[str, tuple[float, str]] = field(default_factory=dict)  # modality -> (length, unit)


def _nice(value: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above ``value``."""
    if not np.isfinite(value) or value <= 0:
        return 1.0
    exponent = np.floor(np.log10(value))
    for step in (5, 2, 1):
        if step * 10**exponent <= value:
            return float(step * 10**exponent)
    return float(10**exponent)


def _amplitude(trace: Trace, valid: int) -> float:
    """A typical channel's size: the median over present channels of the 99th percentile of |x|."""
    rows = [np.percentile(np.abs(trace.data[i, :valid]), 99) for i, ok in enumerate(trace.present) if ok]
    rows = [r for r in rows if np.isfinite(r) and r > 0]
    return float(np.median(rows)) if rows else 1.0


def size_of(sample: Sample, compact: bool = False) -> tuple[float, float]:
    slots = sum(len(t.channels) for t in sample.traces.values())
    return (7.2, 0.2 * slots + 1.5) if compact else (14.0, 0.42 * slots + 2.2)


def draw_on(axes, sample: Sample, compact: bool = False) -> Drawn:
    """Draw ``sample`` on ``axes``: one row per channel, shared time axis, scale bars, the title."""
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    drawn = Drawn()
    start, window = sample.start_s, sample.window_s
    valid = int(round(sample.valid_s * sample.fs))
    ticks, names, colors = [], [], []
    slot = 0
    label_at = blended_transform_factory(axes.transAxes, axes.transData)
    width = 0.6 if compact else 0.8
    small = 6 if compact else 8
    for block, (modality, trace) in enumerate(sample.traces.items()):
        if block:
            slot += 0.5
            axes.axhline(-(slot - 0.5), xmax=1 / 1.1, color="#c8ccd3", linewidth=0.8, linestyle="--")
        amplitude = _amplitude(trace, max(valid, 1))
        scale = 0.45 / amplitude  # a typical channel fills ±0.45 of its row at its 99th percentile
        first = slot
        time = start + np.arange(valid) / sample.fs
        for c, channel in enumerate(trace.channels):
            centre = -slot
            ticks.append(centre)
            names.append(channel)
            if not trace.present[c]:
                colors.append(ABSENT_COLOR)
                axes.text(start + 0.01 * window, centre, "absent", color=ABSENT_COLOR, fontsize=small,
                          style="italic", va="center")  # fmt: skip
                drawn.absent.append((modality, channel))
            else:
                colors.append("#1d2330")
                if trace.raw is not None and np.isfinite(trace.raw[c]).any():
                    values = trace.raw[c] - np.nanmedian(trace.raw[c])
                    raw_time = start + np.arange(values.shape[0]) / trace.raw_fs
                    (line,) = axes.plot(raw_time, centre + values * scale, color=RAW_COLOR, linewidth=width * 1.5,
                                        alpha=0.8, zorder=1)  # fmt: skip
                    drawn.raw[(modality, channel)] = line
                (line,) = axes.plot(time, centre + trace.data[c, :valid] * scale, color=STORED_COLOR,
                                    linewidth=width, zorder=2)  # fmt: skip
                drawn.traces[(modality, channel)] = line
            slot += 1
        last = slot - 1
        bar = _nice(amplitude)
        x = start + window * 1.012
        bottom = -last - 0.45
        axes.plot([x, x], [bottom, bottom + bar * scale], color="black", linewidth=2, solid_capstyle="butt",
                  clip_on=False)  # fmt: skip
        axes.text(x + window * 0.006, bottom + bar * scale / 2, f"{bar:g} {display_unit(trace.unit)}", fontsize=small,
                  va="center", ha="left")  # fmt: skip
        drawn.scale_bars[modality] = (bar, display_unit(trace.unit))
        axes.text(-0.055 if not compact else -0.08, -(first + last) / 2, modality.upper(), transform=label_at,
                  rotation=90, va="center", ha="center", fontsize=small + 2, fontweight="bold")  # fmt: skip
    if valid < int(round(window * sample.fs)):
        axes.axvspan(start + sample.valid_s, start + window, color="#eceef1", zorder=0)
        axes.text(start + (sample.valid_s + window) / 2, 0.6, "zero padding", ha="center", fontsize=small,
                  color="#6b7280")  # fmt: skip
    axes.set_yticks(ticks)
    axes.set_yticklabels(names, fontsize=6 if compact else 9)
    for label, color in zip(axes.get_yticklabels(), colors):
        label.set_color(color)
    axes.set_ylim(-(slot - 1) - 0.8, 0.8)
    axes.set_xlim(start, start + window * 1.1)  # room on the right for the scale bars
    seconds = np.arange(np.ceil(start), start + window + 1e-9, 1.0)
    axes.set_xticks(seconds)
    # paper-like grid lines (every 0.2 s, darker every second) as two collections: cheap to draw
    low, high = axes.get_ylim()
    fifths = np.arange(start, start + window + 1e-9, 0.2)
    axes.vlines(fifths, low, high, color="#eef0f3", linewidth=0.5, zorder=0)
    axes.vlines(seconds, low, high, color="#d9dde3", linewidth=0.8, zorder=0)
    axes.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    axes.spines["bottom"].set_bounds(start, start + window)
    axes.set_xlabel("time from the record's start (s)", fontsize=7 if compact else 10)
    axes.tick_params(axis="x", labelsize=7 if compact else 10)
    axes.set_title(sample.title(105 if compact else 160), loc="left", fontsize=6.5 if compact else 10)
    if drawn.raw:
        handles = [
            Line2D([], [], color=STORED_COLOR, linewidth=1.2, label="stored window (after the recipe)"),
            Line2D([], [], color=RAW_COLOR, linewidth=1.8,
                   label="source record, same span (stored unit, median removed)"),
        ]  # fmt: skip
        axes.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7 if compact else 8,
                    frameon=False)  # fmt: skip
    return drawn


def sample_png(sample: Sample, compact: bool = False) -> bytes:
    """The picture of ``sample`` as PNG bytes."""
    from physiofm.inspect.html import figure_png

    return figure_png(size_of(sample, compact), lambda axes: draw_on(axes, sample, compact))


def draw_sample(
    store: str | Store,
    key: str | None = None,
    row: int | None = None,
    random: bool = False,
    seed: int | None = None,
    raw: bool = False,
    out: str | Path = "sample.png",
    storage_options: StorageOptions | None = None,
    source: str = "zarr",
) -> Path:
    """Draw one sample of ``store`` (by ``key``, ``row`` or at ``random``; row 0 by default) as the PNG ``out``."""
    sample = load_sample(store, key, row, random, seed, raw, storage_options, source)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sample_png(sample))
    return path
