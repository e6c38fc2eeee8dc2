"""The HTML report of a store (``physiofm report STORE --out report.html``).

One self-contained page (inline CSS, figures as PNG data URIs, no script, nothing fetched) with
the store's counts (records, windows, subjects, shards, bytes), the quality flags of the kept
windows, rejects by stage and reason, samples per dataset and subject, the balance of every
label column, per-channel amplitude distributions (``build.json``'s ``"amplitude"`` section,
or, for a store built without it, the drawn samples), windows per record, a grid of a few random
samples drawn as ``physiofm show`` draws them, the recipe with its hash, and the versions.

It reads ``build.json``, the three Parquet tables and the samples it draws, nothing else: each
drawn sample is one Zarr row (one chunk of one object), so a store of 100,000 samples on S3
reports in seconds.  The only other access is a listing of the Zarr folder for its size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from physiofm.inspect import html as H
from physiofm.inspect.show import NOT_LABELS, SampleReader, Store, build_sample, display_unit, sample_png
from physiofm.io import StorageOptions

__all__ = ["store_report", "store_report_html"]

TOP = 30  # rows of a long table (reasons, subjects, list labels) shown before "… and N more"
FEW_VALUES = 12  # a text column with at most this many values gets a balance table too
FLAGS = ("q_nan", "q_flat", "q_clip", "q_amplitude")


def store_report(
    store: str,
    out: str | Path = "report.html",
    storage_options: StorageOptions | None = None,
    samples: int = 6,
    seed: int = 0,
    source: str = "zarr",
) -> Path:
    """Write the report of the store at ``store`` (a folder or URL) to ``out``; return its path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(store_report_html(store, storage_options, samples, seed, source), encoding="utf-8")
    return path


def store_report_html(
    store: str | Store,
    storage_options: StorageOptions | None = None,
    samples: int = 6,
    seed: int = 0,
    source: str = "zarr",
) -> str:
    """The report page of ``store`` as a string (see the module docstring)."""
    opened = Store.open(store, storage_options)
    info, manifest = opened.info, opened.manifest
    shards = _table(opened, "shards")
    rejects = _table(opened, "rejects")
    drawn = _draw(opened, samples, seed, source)
    sections = [
        ("Overview", _overview(opened, manifest, shards)),
        ("Rejects", _rejects(rejects, info)),
        ("Samples per dataset and subject", _per_dataset_subject(manifest)),
        ("Class balance", _balance(opened, manifest)),
        ("Amplitudes", _amplitudes(opened, drawn)),
        ("Windows per record", _windows_per_record(manifest)),
        ("Samples", _sample_grid(drawn, manifest.height, seed)),
        ("Recipe", _recipe(info)),
        ("Versions", _versions(info)),
    ]
    title = f"Store report: {info.get('dataset', '?')} ({info.get('kind', '?')})"
    subtitle = f"{opened.url} · {manifest.height:,} samples · built with physiofm {info.get('physiofm_version', '?')}"
    return H.page(title, subtitle, sections)


def _table(store: Store, name: str) -> pl.DataFrame | None:
    try:
        return store.layout.read_table(name)
    except (OSError, FileNotFoundError, pl.exceptions.PolarsError):
        return None


def _draw(store: Store, count: int, seed: int, source: str) -> list:
    """The samples of the grid: ``count`` rows drawn at random (from ``seed``), in row order."""
    height = store.manifest.height
    if count <= 0 or not height:
        return []
    rows = np.sort(np.random.default_rng(seed).choice(height, size=min(count, height), replace=False))
    reader = SampleReader(store, source)
    out = []
    for row in rows.tolist():
        meta = store.manifest.row(row, named=True)
        out.append(build_sample(store, row, reader.read(meta), source))
    return out


# ---- sections -----------------------------------------------------------------------------------


def _overview(store: Store, manifest: pl.DataFrame, shards: pl.DataFrame | None) -> str:
    info = store.info
    counts = info.get("counts", {})
    records = manifest.select("dataset", "record_id").n_unique() if manifest.height else 0
    subjects = manifest["subject_id"].drop_nulls().n_unique() if "subject_id" in manifest.columns else 0
    tar_bytes = int(shards["bytes"].sum()) if shards is not None and "bytes" in shards.columns else None
    figures = [
        ("windows (samples)", manifest.height),
        ("records with samples", records),
        ("subjects", subjects if subjects else "–"),
        ("datasets", manifest["dataset"].n_unique() if manifest.height else 0),
        ("tar shards", shards.height if shards is not None else counts.get("shards")),
        ("tar bytes", H.human_bytes(tar_bytes) if tar_bytes is not None else "–"),
        ("Zarr bytes", _zarr_bytes(store)),
    ]
    build = [
        ("items listed", counts.get("items")),
        ("records read", counts.get("records_read")),
        ("records rejected (whole)", counts.get("records_rejected")),
        ("windows written", counts.get("samples")),
        ("windows rejected (quality)", counts.get("windows_rejected")),
        ("rejects (all stages)", counts.get("rejects")),
    ]
    shapes = ", ".join(f"{m} {tuple(s)}" for m, s in (info.get("sample_shapes") or {}).items())
    spec = store.spec
    about = [
        ("store", store.url),
        ("dataset", info.get("dataset")),
        ("kind", info.get("kind")),
        ("built from", info.get("source")),
        ("modalities", ", ".join(store.modalities)),
        ("sample shapes", f"{shapes} ({info.get('dtype')})"),
        ("windows", f"{spec.seconds:g} s at {spec.fs:g} Hz, patches of {spec.patch} samples"),
        ("units", ", ".join(f"{m} {display_unit(_unit(manifest, m))}" for m in store.modalities)),
        ("schema version", info.get("schema_version")),
    ]
    flags = [
        (name[2:], int(manifest[name].sum()), H.bar(manifest[name].mean() or 0.0))
        for name in FLAGS
        if name in manifest.columns and manifest.height
    ]
    parts = [
        H.cards(figures),
        "<h3>The store</h3>",
        H.pairs(about),
        "<h3>The build (build.json counts)</h3>",
        H.pairs(build),
        "<h3>Quality flags of the kept windows</h3>",
        H.note("Flags in the recipe's quality.drop sent windows to rejects; the others are kept, flagged."),
        H.table(["flag", "windows", "share"], flags, numeric=(1,)) if flags else H.note("no quality flag columns"),
    ]
    return "".join(parts)


def _unit(manifest: pl.DataFrame, modality: str) -> str:
    column = f"{modality}_unit"
    if column in manifest.columns and manifest.height:
        return str(manifest[column][0])
    return {"ecg": "mV", "eeg": "uV"}.get(modality, "")


def _zarr_bytes(store: Store) -> str:
    try:
        return H.human_bytes(store.layout.fs.du(store.layout.zarr))
    except (OSError, ValueError, NotImplementedError):
        return "–"


def _rejects(rejects: pl.DataFrame | None, info: dict) -> str:
    if rejects is None:
        return H.note("rejects.parquet could not be read", warn=True)
    if not rejects.height:
        return H.note("Nothing was rejected: every record read became samples, every window was kept.")
    by_stage = (
        rejects.group_by("stage")
        .agg(pl.len().alias("rejects"), pl.col("record_id").n_unique().alias("records"))
        .sort("rejects", descending=True)
    )
    by_reason = (
        rejects.group_by("stage", "reason")
        .agg(pl.len().alias("rejects"), pl.col("record_id").n_unique().alias("records"))
        .sort(["rejects", "stage", "reason"], descending=[True, False, False])
    )
    total = rejects.height
    stage_rows = [
        (r["stage"], r["rejects"], r["records"], H.bar(r["rejects"] / total)) for r in by_stage.iter_rows(named=True)
    ]
    reason_rows = [
        (r["stage"], r["reason"], r["rejects"], r["records"]) for r in by_reason.head(TOP).iter_rows(named=True)
    ]
    parts = [
        H.note(
            "Stages: read (the reader could not use the record), lead (an ECG lead masked), transform "
            "(preprocessing), quality (a window dropped by the recipe's quality.drop), write."
        ),
        "<h3>By stage</h3>",
        H.table(["stage", "rejects", "records", "share"], stage_rows, numeric=(1, 2)),
        "<h3>By stage and reason</h3>",
        H.table(["stage", "reason", "rejects", "records"], reason_rows, numeric=(2, 3)),
    ]
    if by_reason.height > TOP:
        parts.append(H.note(f"… and {by_reason.height - TOP} more reasons (see rejects.parquet)"))
    return "".join(parts)


def _per_dataset_subject(manifest: pl.DataFrame) -> str:
    if not manifest.height:
        return H.note("no samples")
    total = manifest.height
    datasets = (
        manifest.group_by("dataset")
        .agg(
            pl.len().alias("samples"),
            pl.col("record_id").n_unique().alias("records"),
            pl.col("subject_id").drop_nulls().n_unique().alias("subjects"),
        )  # fmt: skip
        .sort("samples", descending=True)
    )
    rows = [(r["dataset"], r["samples"], r["records"], r["subjects"] or "–", H.bar(r["samples"] / total))
            for r in datasets.iter_rows(named=True)]  # fmt: skip
    parts = ["<h3>Per dataset</h3>", H.table(["dataset", "samples", "records", "subjects", "share"], rows, (1, 2, 3))]
    subjects = manifest.filter(pl.col("subject_id").is_not_null())
    parts.append("<h3>Per subject</h3>")
    if not subjects.height:
        parts.append(H.note("No subject ids in this store (the archive does not give them): "
                            "subject-wise splits cannot be checked."))  # fmt: skip
        return "".join(parts)
    per = (
        subjects.group_by("dataset", "subject_id")
        .agg(pl.len().alias("samples"), pl.col("record_id").n_unique().alias("records"))
        .sort(["samples", "subject_id"], descending=[True, False])
    )
    counts = per["samples"].to_numpy()
    missing = total - subjects.height
    summary = (
        f"{per.height:,} subjects; samples per subject: min {counts.min():,}, median {np.median(counts):g}, "
        f"max {counts.max():,}" + (f"; {missing:,} samples have no subject id" if missing else "")
    )
    parts.append(H.note(summary))
    if per.height > TOP:
        png = H.figure_png((7, 3), lambda axes: _histogram(axes, counts, "samples per subject", "subjects"))
        parts.append(H.image(png, "histogram of samples per subject"))
    top = counts.max()
    rows = [(r["dataset"], r["subject_id"], r["samples"], r["records"], H.bar(r["samples"] / top))
            for r in per.head(TOP).iter_rows(named=True)]  # fmt: skip
    parts.append(H.table(["dataset", "subject", "samples", "records", ""], rows, numeric=(2, 3)))
    if per.height > TOP:
        parts.append(H.note(f"… and {per.height - TOP:,} more subjects"))
    return "".join(parts)


def _histogram(axes, values: np.ndarray, xlabel: str, ylabel: str) -> None:
    """Counts of integer ``values``: one bar per value over a small range, 40 bins otherwise."""
    values = np.asarray(values)
    low, high = int(values.min()), int(values.max())
    if high - low <= 40:
        axes.hist(values, bins=np.arange(low, high + 2) - 0.5, color="#3a6fc4", edgecolor="white")
        axes.set_xticks(np.arange(low, high + 1, max(1, (high - low) // 10 + 1)))
    else:
        axes.hist(values, bins=40, color="#3a6fc4", edgecolor="white")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(axis="y", alpha=0.3)


def _balance(store: Store, manifest: pl.DataFrame) -> str:
    labels = store.label_columns()
    if not manifest.height:
        return H.note("no samples")
    total = manifest.height
    parts = [H.note("Per label column of the manifest: samples (windows) per value. Booleans and scores (the "
                    "recipe's targets) are labels; list columns are multi-label (a sample may count under "
                    "several values).")]  # fmt: skip
    if not labels:
        parts.append(H.note("This store has no label columns."))
    blocks = []
    for name in labels:
        column = manifest[name]
        if column.dtype == pl.Boolean:
            counts = [("true", int(column.sum())), ("false", int((~column.drop_nulls()).sum())),
                      ("missing", column.null_count())]  # fmt: skip
            rows = [(value, n, f"{n / total:.1%}", H.bar(n / total)) for value, n in counts if n or value != "missing"]
            body = H.table(["value", "samples", "share", ""], rows, numeric=(1, 2))
        elif isinstance(column.dtype, pl.List):
            body = _multilabel(manifest, name, total)
        else:
            body = _values(column, total)
        blocks.append(f"<h3>{H.esc(name)}</h3>{body}")
    parts.append(H.tiles(blocks))
    core = _core(store)
    others = [
        name
        for name, dtype in manifest.schema.items()
        if dtype == pl.String and name not in labels and name not in core and name not in NOT_LABELS
        and 1 < manifest[name].n_unique() <= FEW_VALUES
    ]  # fmt: skip
    if others:
        parts.append("<h3>Other columns with few values</h3>")
        parts.append(H.tiles(f"<p><b>{H.esc(name)}</b></p>{_values(manifest[name], total)}" for name in others))
    return "".join(parts)


def _core(store: Store) -> set[str]:
    from physiofm.store import schema

    return set(schema.columns("manifest", tuple(store.modalities)))


def _multilabel(manifest: pl.DataFrame, name: str, total: int) -> str:
    lengths = manifest[name].list.len().fill_null(0)
    exploded = manifest.select(pl.col(name).explode().alias("value")).drop_nulls()
    counts = exploded.group_by("value").len().sort(["len", "value"], descending=[True, False])
    rows = [(r["value"], r["len"], f"{r['len'] / total:.1%}", H.bar(r["len"] / total))
            for r in counts.head(TOP).iter_rows(named=True)]  # fmt: skip
    empty = int((lengths == 0).sum())
    rows.append(("(none)", empty, f"{empty / total:.1%}", H.bar(empty / total)))
    more = H.note(f"… and {counts.height - TOP} more values") if counts.height > TOP else ""
    return H.table(["value", "samples", "share", ""], rows, numeric=(1, 2)) + more


def _values(column: pl.Series, total: int) -> str:
    counts = column.value_counts(sort=False).sort(column.name, nulls_last=True)
    if counts.height > TOP and column.dtype.is_numeric():
        values = column.drop_nulls().to_numpy().astype(float)
        q = np.percentile(values, [0, 25, 50, 75, 100]) if len(values) else [np.nan] * 5
        return H.table(["min", "q1", "median", "q3", "max", "missing"], [(*q, column.null_count())],
                       numeric=(0, 1, 2, 3, 4, 5))  # fmt: skip
    count_name = [c for c in counts.columns if c != column.name][0]
    counts = counts.sort(count_name, descending=True) if not column.dtype.is_numeric() else counts
    rows = [(r[column.name] if r[column.name] is not None else "(missing)", r[count_name],
             f"{r[count_name] / total:.1%}", H.bar(r[count_name] / total))
            for r in counts.head(TOP).iter_rows(named=True)]  # fmt: skip
    return H.table(["value", "samples", "share", ""], rows, numeric=(1, 2))


def _amplitudes(store: Store, drawn: list) -> str:
    section = store.info.get("amplitude")
    parts = [H.note("The 99th percentile of |x| per window and channel, a robust amplitude: median with "
                    "quartiles over windows. A channel far from the others, or a store far from physiological "
                    "ranges (ECG about 0.1-3 mV, EEG about 5-150 µV), points at a wrong unit or gain.")]  # fmt: skip
    if isinstance(section, dict) and section:
        parts.append(H.note("From build.json (every window of the store)."))
        figures = {m: _from_build(store, m, section[m]) for m in store.modalities if isinstance(section.get(m), dict)}
        source = "build.json"
    else:
        parts.append(H.note(f"build.json has no amplitude section (built by an older physiofm): computed from the "
                            f"{len(drawn)} drawn samples only.", warn=True))  # fmt: skip
        figures = {m: _from_samples(drawn, m) for m in store.modalities}
        source = f"{len(drawn)} drawn samples"
    images, tables = [], []
    for modality, (channels, points) in figures.items():
        if not channels:
            continue
        unit = display_unit(_unit(store.manifest, modality))
        height = 0.26 * len(channels) + 1.3
        png = H.figure_png(
            (6.5, height), lambda axes, m=modality, c=channels, p=points, u=unit: _amplitude_plot(axes, m, c, p, u)
        )
        images.append(H.image(png, f"{modality} amplitude per channel", f"{modality.upper()}: from {source}"))
        rows = [(name, *(_round(f.get(k)) for k in ("median", "q1", "q3")), f.get("windows")) for name, f in channels]
        if modality in figures and isinstance(section, dict) and isinstance(section.get(modality), dict):
            peaks = section[modality].get("r_peak_ii")
            if isinstance(peaks, dict) and peaks.get("windows"):
                rows.append(
                    ("R peaks, lead II", *(_round(peaks.get(k)) for k in ("median", "q1", "q3")), peaks["windows"])
                )
        tables.append(f"<h3>{H.esc(modality.upper())} ({H.esc(unit)})</h3>"
                      + H.table(["channel", "median", "q1", "q3", "windows"], rows, numeric=(1, 2, 3, 4)))  # fmt: skip
    if not images:
        parts.append(H.note("no amplitudes to show"))
    parts.append(f'<div class="grid">{"".join(images)}</div>')
    parts.append(H.tiles(tables))
    return "".join(parts)


def _round(value: Any) -> Any:
    return None if value is None else float(f"{float(value):.4g}")


def _channel_order(store: Store, modality: str, names) -> list[str]:
    column = f"{modality}_channels"
    stored = list(store.manifest[column][0]) if column in store.manifest.columns and store.manifest.height else []
    return [n for n in stored if n in names] + sorted(n for n in names if n not in stored)


def _from_build(store: Store, modality: str, section: dict):
    channels = section.get("channels") or {}
    ordered = _channel_order(store, modality, channels)
    return [(name, channels[name]) for name in ordered], None


def _from_samples(drawn: list, modality: str):
    """Per channel, the figures of the drawn samples' 99th percentiles of |x|, and the points themselves."""
    values: dict[str, list[float]] = {}
    for sample in drawn:
        trace = sample.traces.get(modality)
        if trace is None:
            continue
        valid = max(1, int(round(sample.valid_s * sample.fs)))
        for name, present, row in zip(trace.channels, trace.present, trace.data):
            values.setdefault(name, [])
            if present and np.abs(row[:valid]).any():
                values[name].append(float(np.percentile(np.abs(row[:valid]), 99)))
    channels = []
    for name, points in values.items():
        if points:
            q1, median, q3 = np.percentile(points, [25, 50, 75]).tolist()
            channels.append((name, {"median": median, "q1": q1, "q3": q3, "windows": len(points)}))
        else:
            channels.append((name, {"median": None, "q1": None, "q3": None, "windows": 0}))
    return channels, values


def _amplitude_plot(axes, modality: str, channels: list, points: dict | None, unit: str) -> None:
    positions = np.arange(len(channels))[::-1]
    for y, (name, figures) in zip(positions, channels):
        if figures.get("median") is None:
            axes.text(0, y, "  absent in every window", va="center", fontsize=8, color="#9aa0a8",
                      transform=axes.get_yaxis_transform())  # fmt: skip
            continue
        axes.plot([figures["q1"], figures["q3"]], [y, y], color="#3a6fc4", linewidth=6, solid_capstyle="butt")
        axes.plot([figures["median"]], [y], marker="|", color="#1d2330", markersize=12, markeredgewidth=2)
        if points and points.get(name):
            axes.plot(points[name], [y] * len(points[name]), "o", color="#f08a3c", markersize=3, alpha=0.8)
    axes.set_yticks(positions)
    axes.set_ylim(-0.7, len(channels) - 0.3)
    axes.set_yticklabels([name for name, _ in channels], fontsize=8)
    axes.set_xlabel(f"99th percentile of |x| per window ({unit})")
    axes.set_title(f"{modality.upper()}: median and quartiles", fontsize=10, loc="left")
    axes.set_xlim(left=0)
    axes.grid(axis="x", alpha=0.3)


def _windows_per_record(manifest: pl.DataFrame) -> str:
    if not manifest.height:
        return H.note("no samples")
    per = manifest.group_by("dataset", "record_id").len()
    counts = per["len"].to_numpy()
    summary = (
        f"{per.height:,} records; windows per record: min {counts.min():,}, median {np.median(counts):g}, "
        f"mean {counts.mean():.2f}, max {counts.max():,}"
    )
    png = H.figure_png((7, 3), lambda axes: _histogram(axes, counts, "windows per record", "records"))
    top = per.sort(["len", "record_id"], descending=[True, False]).head(5)
    rows = [(r["dataset"], r["record_id"], r["len"]) for r in top.iter_rows(named=True)]
    return (H.note(summary) + H.image(png, "histogram of windows per record")
            + "<h3>Records with the most windows</h3>"
            + H.table(["dataset", "record", "windows"], rows, (2,)))  # fmt: skip


def _sample_grid(drawn: list, height: int, seed: int) -> str:
    if not drawn:
        return H.note("no samples drawn")
    intro = H.note(
        f"{len(drawn)} of {height:,} samples drawn at random (seed {seed}), as physiofm show draws them; "
        f"physiofm show STORE --row N draws one larger, --raw overlays its source record."
    )
    images = [H.image(sample_png(s, compact=True), f"sample row {s.row}", f"row {s.row}: {s.meta.get('key')}")
              for s in drawn]  # fmt: skip
    return intro + f'<div class="grid">{"".join(images)}</div>'


def _recipe(info: dict) -> str:
    from physiofm.preprocess.recipe import recipe_hash

    recipe = info.get("recipe")
    stored = info.get("recipe_hash", "")
    if not isinstance(recipe, dict):
        return H.note("build.json holds no recipe", warn=True)
    computed = recipe_hash(recipe)
    check = ("matches the recipe below" if computed == stored
             else f"does not match the recipe below (its hash is {computed})")  # fmt: skip
    return (H.pairs([("recipe", recipe.get("name")), ("recipe_hash", stored), ("check", check)])
            + H.note("As resolved and stored in build.json (its extends applied, the build's overrides merged):")
            + H.pre(H.toml_text(recipe), columns=True))  # fmt: skip


def _versions(info: dict) -> str:
    import physiofm

    versions = dict(info.get("versions") or {})
    versions.setdefault("physiofm", info.get("physiofm_version"))
    rows = sorted(versions.items()) + [("store schema", info.get("schema_version"))]
    return (H.note("What built the store (build.json versions):") + H.table(["package", "version"], rows)
            + H.note(f"This report was written by physiofm {physiofm.__version__}."))  # fmt: skip
