"""`physiofm validate`: check a store against its schemas, its indexes and its own data.

Five checks; every problem is collected, none stops the others:

* **schema**: ``build.json`` exists (its absence marks an interrupted build) and holds the keys
  of ``manifests/schema/vN/build.json``; every table matches its versioned schema.
* **integrity**: every table is the one the build wrote: its size and sha256 against
  ``build.json``'s ``tables`` (read whole: the cost is the size of the tables), and on a difference
  what differs: a column missing, added or of another dtype, the columns whose values were edited
  (digests of the values), or nothing but the bytes (the table was re-written).  Every shard of
  ``shards.parquet`` and every object of ``zarr.parquet`` exists with its recorded size (one
  listing of ``wds/``, one of ``zarr/``) and nothing else is there; sample counts agree (index,
  manifest, Zarr, build.json); keys are unique; every manifest row points at a real (shard,
  position) and Zarr row.  Shards that are *read* are hashed, their members listed against the
  manifest, each sample's metadata compared with its manifest row and its arrays with its Zarr
  row; Zarr objects that are read are hashed against ``zarr.parquet``.
* **content**: Zarr arrays and the arrays read have the recipe's shapes and dtype and no NaN or
  infinite value; labels lie in the dataset's ranges; ``<target>_high`` is
  ``<target> > label_threshold``.
* **leakage**: samples and subjects per split value (``split``, ``fold``); a subject on both sides
  of a subject-wise split is an error.  Class balance per label column is reported.
* **scale**: the amplitude statistics of ``build.json`` (:mod:`physiofm.store.amplitude`) against
  physiological ranges: ECG R peaks on lead II (median 0.3–3 mV), ECG leads that are all far
  outside 0.1–10 mV, one lead ten times off the others, EEG outside 1–1000 µV.  These are
  *warnings* (shown, in ``--json``, but the store stays ``ok``): unusual real data must still pass,
  and the message says what to look at (usually the source unit).  A store built before the
  statistics existed gets a note in the summary.

What is read.  ``deep``: everything (every shard and every Zarr object hashed, every sample
compared), in parallel over ``jobs`` processes.  By default: the tables, the two listings, the
Zarr metadata, and

* whole tar shards drawn in a seeded order until they hold at least ``sample`` samples, with the
  Zarr objects that hold their rows (a store of 1000-sample shards reads one shard);
* the objects changed after ``build.json`` was written (listing time newer than its own, up to
  ``RECENT`` tar shards and ``RECENT`` Zarr objects, newest first): an edit made after the build
  (a NaN written through zarr, a byte changed in a shard) is read whatever the draw;
* for a Zarr object whose sha256 differs, the tar shards of its rows, to name the samples.

Modification times only choose what to read, never decide a finding: a copied store (new times
everywhere) is checked as well, only at the cost of reading a few more objects.  What was read is
said in the summary and the JSON (``sections.checked.read``), so nobody mistakes the default for
the full check.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from physiofm.preprocess.recipe import recipe_hash
from physiofm.store import layout as L
from physiofm.store import schema
from physiofm.store.hashing import HashingStream
from physiofm.store.layout import Layout
from physiofm.store.npy import NpyError, decode
from physiofm.store.tar import ShardError, iter_samples
from physiofm.store.validate.report import Problem, Report

SPLIT_COLUMNS = ("split", "fold")  # subject-wise unless build.json's "splits" says otherwise
SHOWN = 5  # keys, shards or subjects named in one message
RECENT = 4  # tar shards, and Zarr objects, changed after build.json that the default check also reads
POOLS = ("process", "thread")
BUFFER = 1 << 20  # bytes read from a shard at once
# Ranges of labels whose scale is not in the manifest itself (emotion scores carry score_min/max).
LABEL_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "*": {"age": (0, 300)},  # 300: PTB-XL's (and the Challenge's PTB-XL subset's) age above 89
    "ptbxl": {"fold": (1, 10)},
}
# Plausible amplitudes (store units: mV for ECG, µV for EEG); outside them, check "scale" warns.
R_PEAK_MV = (0.3, 3.0)  # median R peak on lead II
ECG_P99_MV = (0.1, 10.0)  # median p99 of |x| of a lead: warned when every lead is outside
LEAD_RATIO = 10.0  # a lead whose median p99 is this many times above (or below) the median of the leads
LEAD_RATIO_MIN_LEADS = 3  # with fewer leads the median is no reference
EEG_P99_UV = (1.0, 1000.0)  # median over channels of the median p99 of |x|
# Per-sample findings of a shard read: code -> (check, what the listed samples have).
SAMPLE_FINDINGS = {
    "shard-keys-mismatch": ("integrity", "positions whose key differs from the manifest"),
    "sample-member-missing": ("integrity", "missing members"),
    "sample-shape-mismatch": ("content", "arrays whose shape or dtype differs from build.json"),
    "non-finite": ("content", "arrays with NaN or infinite values"),
    "zarr-shard-mismatch": ("integrity", "arrays that differ from their Zarr row"),
    "manifest-shard-mismatch": ("integrity", "samples whose metadata differ from their manifest row"),
}


@dataclass
class _Store:
    """What the checks share: the opened store and the tables that could be read."""

    store: Layout
    info: dict[str, Any]
    modalities: tuple[str, ...]
    tables: dict[str, pl.DataFrame | None]
    arrays: dict[str, Any]  # modality -> Zarr array
    files: dict[str, tuple[int, str]] = field(default_factory=dict)  # table -> (bytes, sha256) as read

    @property
    def fs(self):
        return self.store.fs

    @property
    def manifest(self) -> pl.DataFrame | None:
        return self.tables["manifest"]

    @property
    def shards(self) -> pl.DataFrame | None:
        return self.tables["shards"]

    def has(self, table: str, *names: str) -> bool:
        df = self.tables.get(table)
        return df is not None and all(name in df.columns for name in names)

    def sample_shape(self, modality: str) -> tuple[tuple[int, ...], str] | None:
        """(shape, dtype) a sample of ``modality`` must have: build.json's, else Zarr's."""
        shapes = self.info.get("sample_shapes") or {}
        if modality in shapes and self.info.get("dtype"):
            return tuple(shapes[modality]), str(self.info["dtype"])
        if modality in self.arrays:
            return tuple(self.arrays[modality].shape[1:]), str(self.arrays[modality].dtype)
        return None


def validate(
    store: str,
    *,
    deep: bool = False,
    sample: int = 64,
    seed: int = 0,
    storage_options: dict | None = None,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    pool: str | None = None,
) -> Report:
    """Check the store at ``store`` (path or URL); return every problem found and the summary.

    ``sample``: the default check reads whole shards, drawn in an order fixed by ``seed``, until
    they hold at least ``sample`` samples (and what changed after the build, see the module
    docstring); ``deep`` reads every shard and every Zarr object.  ``jobs`` (default: every core)
    objects are read at once, by processes for ``deep`` and threads otherwise (``pool``:
    ``"process"`` or ``"thread"`` to choose); ``progress(done, total)`` is called as objects are read.
    """
    layout = Layout(store, storage_options or {})
    fs, root = layout.fs, layout.root
    fs.invalidate_cache()  # see the storage as it is now, not as an earlier listing left it
    report = Report(store=store, deep=deep)
    report.sections = {
        "store": {},
        "counts": {},
        "checked": {"mode": "deep" if deep else "default", "sample": sample, "seed": seed},
    }
    if not fs.isdir(root):
        report.add("schema", "store-missing", f"no store at {store}")
        return report
    ctx = _open(report, layout)
    steps = (
        ("integrity", _check_tables),
        ("integrity", _check_counts),
        ("integrity", _check_rows),
        ("content", _check_labels),
        ("leakage", _check_splits),
        ("leakage", _class_balance),
        ("scale", _check_scale),
    )
    for check, step in steps:
        _guarded(report, check, step, report, ctx)
    present = _guarded(report, "integrity", _check_listing, report, ctx) or {}
    zarr_present = _guarded(report, "integrity", _check_zarr_listing, report, ctx) or {}
    options = _ReadOptions(deep, sample, seed, max(1, jobs or os.cpu_count() or 1), pool, progress)
    _guarded(report, "integrity", _check_data, report, ctx, present, zarr_present, options)
    return report


def _guarded(report: Report, check: str, step, *args):
    """Run one step; an exception becomes a problem and the other steps go on."""
    try:
        return step(*args)
    except Exception as error:  # a corrupt store can break a step in any way: report it, go on
        report.add(check, "check-failed", f"{step.__name__.strip('_')} failed: {type(error).__name__}: {error}")
        return None


def _named(items: Sequence[str], total: int | None = None) -> str:
    """The first few of ``total`` items (default: all of ``items``), then how many more."""
    total = len(items) if total is None else total
    shown = ", ".join(str(item) for item in items[:SHOWN])
    return shown + (f" (+{total - SHOWN} more)" if total > SHOWN else "")


# ---- schema: build.json, tables, Zarr metadata --------------------------------------------------


def _open(report: Report, store: Layout) -> _Store:
    info = _read_build_info(report, store)
    group = None
    try:
        group = store.open_zarr("r")
    except FileNotFoundError:
        report.add("schema", "zarr-missing", f"{L.ZARR}/ is missing or is not a Zarr group")
    modalities = tuple(info.get("modalities") or (sorted(group.array_keys()) if group is not None else ()))
    ctx = _Store(store, info, modalities, {}, {})
    for name in L.TABLES:
        ctx.tables[name] = _read_table(report, ctx, name)
    if group is not None:
        for modality in modalities:
            if modality in group.array_keys():
                ctx.arrays[modality] = group[modality]
            else:
                report.add("schema", "zarr-array-missing", f"zarr/ has no array {modality!r}")
        _check_shapes(report, ctx)
    report.sections["store"] = {
        key: info.get(key)
        for key in (
            "dataset",
            "kind",
            "modalities",
            "sample_shapes",
            "dtype",
            "schema_version",
            "physiofm_version",
            "recipe_hash",
        )
    }
    return ctx


def _read_build_info(report: Report, store: Layout) -> dict[str, Any]:
    if not store.fs.exists(store.build_info):
        state = (
            f"; {L.STATE}/ holds an interrupted build: run the build again to resume it"
            if store.fs.exists(store.state())
            else ""
        )
        report.add("schema", "store-incomplete", f"{L.BUILD_INFO} is missing: the store is incomplete{state}")
        return {}
    try:
        info = json.loads(store.fs.cat_file(store.build_info))
    except ValueError as error:
        report.add("schema", "build-json-unreadable", f"build.json is not JSON: {error}")
        return {}
    if not isinstance(info, dict):
        report.add("schema", "build-json-unreadable", "build.json is not a JSON object")
        return {}
    missing = [key for key in schema.load_schema("build")["required"] if key not in info]
    if missing:
        report.add("schema", "build-json-incomplete", f"build.json lacks {', '.join(missing)}")
    if "schema_version" in info and info["schema_version"] != schema.SCHEMA_VERSION:
        report.add(
            "schema",
            "schema-version",
            f"build.json says schema v{info['schema_version']}; this physiofm checks v{schema.SCHEMA_VERSION}",
        )
    if isinstance(info.get("recipe"), dict) and info.get("recipe_hash") != recipe_hash(info["recipe"]):
        report.add("schema", "recipe-hash-mismatch", "build.json: recipe_hash is not the hash of its recipe")
    return info


def _read_table(report: Report, ctx: _Store, table: str) -> pl.DataFrame | None:
    """Read a table whole, hashing it on the way (its size and sha256 go to ``ctx.files``)."""
    store, file = ctx.store, L.TABLES[table]
    if not store.fs.exists(store.table(table)):
        recorded = ctx.info.get("tables")
        if table == "zarr" and not (isinstance(recorded, dict) and file in recorded):
            return None  # a store built before zarr.parquet existed: _check_tables notes it
        report.add("schema", "table-missing", f"{file} is missing")
        return None
    try:
        data, size, sha = store.read_hashed(store.table(table))
        ctx.files[table] = (size, sha)
        df = pl.read_parquet(io.BytesIO(data))
    except (pl.exceptions.PolarsError, OSError, ValueError) as error:
        report.add("schema", "table-unreadable", f"{file} cannot be read: {error}")
        return None
    for message in schema.problems(df, table, ctx.modalities if table == "manifest" else ()):
        report.add("schema", "schema-mismatch", message)
    return df


def _check_shapes(report: Report, ctx: _Store) -> None:
    """Zarr arrays against build.json, and build.json's sample shapes against the recipe's window."""
    window = (ctx.info.get("recipe") or {}).get("window", {})
    rate = (ctx.info.get("recipe") or {}).get("signal", {}).get("fs")
    for modality, array in ctx.arrays.items():
        want = ctx.sample_shape(modality)
        if want and (tuple(array.shape[1:]), str(array.dtype)) != want:
            report.add(
                "content",
                "sample-shape-mismatch",
                f"zarr {modality} holds {array.dtype} samples of "
                f"shape {tuple(array.shape[1:])}; build.json says {want[1]} {want[0]}",
            )
        if want and rate and window.get("seconds") and window.get("patch"):
            patch = int(window["patch"])
            recipe_shape = (round(float(window["seconds"]) * float(rate)) // patch, patch)
            if want[0][-2:] != recipe_shape:
                report.add(
                    "content",
                    "sample-shape-mismatch",
                    f"build.json sample shape of {modality} "
                    f"{want[0]} does not end in the recipe's window {recipe_shape}",
                )


def _check_tables(report: Report, ctx: _Store) -> None:
    """Every table against what ``build.json`` recorded of it: size, sha256, rows, columns, values.

    The values are compared (column digests, :func:`physiofm.store.layout.column_digest`) only
    when the sha256 differs, to say what the edit was.
    """
    recorded = ctx.info.get("tables")
    checked = report.sections["checked"]
    if not isinstance(recorded, dict):
        if ctx.info:
            checked["tables"] = (
                "not checked against build.json: it records no table sizes and sha256 "
                "(built by an older physiofm; rebuild to check)"
            )
        return
    by_file = {file: table for table, file in L.TABLES.items()}
    hashed = 0
    for file in sorted(recorded):
        entry, table = recorded[file], by_file.get(file)
        if table is None or not isinstance(entry, dict) or table not in ctx.files:
            continue  # an unknown table, or missing / unreadable: already a problem
        hashed += 1
        size, sha = ctx.files[table]
        df = ctx.tables.get(table)
        if sha == entry.get("sha256") and size == entry.get("bytes"):
            continue
        want = {name: dtype for name, dtype in entry.get("columns") or ()}
        before = len(report.problems)
        if df is not None and want:
            have = {name: str(dtype) for name, dtype in df.schema.items()}
            for name in want:
                if name not in have:
                    report.add(
                        "integrity", "table-column-missing", f"{file}: column {name!r} is missing (build.json lists it)"
                    )
                elif have[name] != want[name]:
                    report.add(
                        "integrity",
                        "table-column-dtype",
                        f"{file}: column {name!r} is {have[name]}; build.json says {want[name]}",
                    )
            for name in have:
                if name not in want:
                    report.add(
                        "integrity",
                        "table-column-added",
                        f"{file}: column {name!r} is not in build.json's list (it was added after the build)",
                    )
            common = [name for name in have if name in want]
            if common != [name for name in want if name in have]:
                report.add("integrity", "table-column-order", f"{file}: the columns are in another order than built")
            if df.height != entry.get("rows", df.height):
                report.add(
                    "integrity",
                    "table-rows-mismatch",
                    f"{file}: {df.height:,} rows; build.json says {entry['rows']:,}",
                )
            digests = entry.get("column_sha256") or {}
            edited = [
                name
                for name in common
                if have[name] == want[name] and name in digests and df.height == entry.get("rows", df.height)
                if L.column_digest(df[name]) != digests[name]
            ]
            if edited:
                where = (
                    " (`--deep` compares every sample's metadata with its manifest row)" if table == "manifest" else ""
                )
                report.add(
                    "integrity",
                    "table-column-edited",
                    f"{file}: the values of {'columns' if len(edited) > 1 else 'column'} "
                    f"{_named([repr(n) for n in edited])} differ from those the build wrote{where}",
                )
        sizes = f" ({size:,} bytes; build.json says {entry.get('bytes', 0):,})" if size != entry.get("bytes") else ""
        if df is not None and want and len(report.problems) == before:
            why = (
                ", but its columns and values are those the build wrote: the table was re-written "
                "(same content, different bytes), not edited"
            )
        else:
            why = " (the table was edited after the build)"
        report.add("integrity", "table-sha256-mismatch", f"{file}: sha256 differs from build.json{sizes}{why}")
    checked["tables"] = f"{hashed} hashed whole against build.json ({sum(s for s, _ in ctx.files.values()):,} bytes)"


# ---- integrity: indexes ----------------------------------------------------------------------


def _check_counts(report: Report, ctx: _Store) -> None:
    """Sample and shard counts of the index, the manifest, Zarr and build.json agree."""
    counts = ctx.info.get("counts") or {}
    samples: dict[str, int] = {}
    if ctx.manifest is not None:
        samples["manifest"] = ctx.manifest.height
    if ctx.has("shards", "samples"):
        samples["shards.parquet"] = int(ctx.shards["samples"].sum())
    samples.update({f"zarr {m}": int(array.shape[0]) for m, array in ctx.arrays.items()})
    if "samples" in counts:
        samples["build.json"] = int(counts["samples"])
    if len(set(samples.values())) > 1:
        report.add(
            "integrity",
            "count-mismatch",
            "sample counts disagree: " + ", ".join(f"{where} {n}" for where, n in samples.items()),
        )
    for table, key in (("shards", "shards"), ("rejects", "rejects")):
        if ctx.tables[table] is not None and key in counts and ctx.tables[table].height != counts[key]:
            report.add(
                "integrity",
                "count-mismatch",
                f"{table}.parquet has {ctx.tables[table].height} rows, build.json counts {counts[key]}",
            )
    report.sections["counts"] = {
        "samples": samples.get("manifest"),
        "shards": None if ctx.shards is None else ctx.shards.height,
        "rejects": None if ctx.tables["rejects"] is None else ctx.tables["rejects"].height,
        **{f"zarr rows ({m})": int(a.shape[0]) for m, a in ctx.arrays.items()},
    }
    if ctx.has("manifest", "subject_id"):
        report.sections["counts"]["subjects"] = ctx.manifest["subject_id"].drop_nulls().n_unique()
    if not ctx.has("shards", "shard", "samples", "first_row"):
        return
    index = ctx.shards
    for name in index.filter(pl.col("shard").is_duplicated())["shard"].unique().sort():
        report.add("integrity", "duplicate-shard", f"{name} is listed more than once in shards.parquet")
    expected_first = index["samples"].cum_sum() - index["samples"]
    for name in index.filter(pl.col("first_row") != expected_first)["shard"]:
        report.add("integrity", "bad-first-row", f"{name}: first_row is not the sum of the samples before it")
    if ctx.has("manifest", "shard"):
        rows = ctx.manifest.group_by("shard").len()
        joined = index.join(rows, on="shard", how="left").filter(pl.col("len").fill_null(0) != pl.col("samples"))
        for row in joined.iter_rows(named=True):
            report.add(
                "integrity",
                "shard-count-mismatch",
                f"{row['shard']}: {row['len'] or 0} manifest rows, {row['samples']} samples in shards.parquet",
            )


def _check_rows(report: Report, ctx: _Store) -> None:
    """Keys are unique; every row points at a listed shard, a position in it, and its Zarr row."""
    if not ctx.has("manifest", "key"):
        return
    manifest = ctx.manifest
    duplicated = manifest.group_by("key").len().filter(pl.col("len") > 1).sort("key")
    if duplicated.height:
        report.add(
            "integrity",
            "duplicate-key",
            f"keys on more than one row ({duplicated.height}): "
            + _named([f"{k} ({n} rows)" for k, n in duplicated.iter_rows()]),
        )
    if not (
        ctx.has("manifest", "shard", "shard_pos", "zarr_row") and ctx.has("shards", "shard", "samples", "first_row")
    ):
        return
    rows = manifest.select("key", "shard", "shard_pos", "zarr_row").join(
        ctx.shards.select("shard", "samples", "first_row").unique("shard", keep="first"), on="shard", how="left"
    )
    past_zarr = pl.lit(False)
    if ctx.arrays:
        past_zarr = pl.col("zarr_row") >= min(int(a.shape[0]) for a in ctx.arrays.values())
    checks = {
        "unknown-shard": (pl.col("samples").is_null(), "rows pointing at shards that shards.parquet does not list"),
        "bad-shard-position": (
            pl.col("samples").is_not_null()
            & (
                (pl.col("shard_pos") < 0)
                | (pl.col("shard_pos") >= pl.col("samples"))
                | pl.struct("shard", "shard_pos").is_duplicated()
            ),
            "rows pointing outside their shard or sharing a position",
        ),
        "bad-zarr-row": (
            (pl.col("zarr_row") != pl.col("first_row") + pl.col("shard_pos")) | (pl.col("zarr_row") < 0) | past_zarr,
            "rows whose zarr_row is not their shard position's row, or is past the Zarr arrays",
        ),
    }
    for code, (condition, what) in checks.items():
        bad = rows.filter(condition.fill_null(False))
        if bad.height:
            report.add(
                "integrity",
                code,
                f"{what} ({bad.height}): "
                + _named(
                    [f"{k} ({s}#{p}, zarr row {z})" for k, s, p, z, *_ in bad.head(SHOWN).iter_rows()], bad.height
                ),
            )


def _check_listing(report: Report, ctx: _Store) -> dict[str, dict]:
    """Sizes of all shards from one listing of ``wds/``; returns the listed shards present (name -> entry)."""
    try:
        entries = ctx.fs.ls(ctx.store.path(L.WDS), detail=True)
    except FileNotFoundError:
        entries = []
    found = {entry["name"].rstrip("/").rsplit("/", 1)[-1]: entry for entry in entries}
    if not ctx.has("shards", "shard", "bytes"):
        return {}
    listed = set(ctx.shards["shard"])
    for name, size in ctx.shards.select("shard", "bytes").iter_rows():
        if name not in found:
            report.add("integrity", "shard-missing", f"{name} is listed in shards.parquet but missing from wds/")
        elif found[name].get("size") != size:
            report.add(
                "integrity",
                "shard-size-mismatch",
                f"{name} is {found[name].get('size')} bytes; shards.parquet says {size}",
            )
    for name in sorted(set(found) - listed):
        report.add("integrity", "shard-unlisted", f"wds/{name} is not listed in shards.parquet")
    report.sections["checked"]["shard sizes checked"] = len(listed & set(found))
    return {name: found[name] for name in sorted(listed & set(found))}


def _check_zarr_listing(report: Report, ctx: _Store) -> dict[str, dict]:
    """Sizes of all Zarr objects from one listing of ``zarr/`` against ``zarr.parquet``; returns those present."""
    if not ctx.has("zarr", "name", "bytes"):
        if ctx.tables.get("zarr") is None and "zarr" not in ctx.files and ctx.info:
            report.sections["checked"]["zarr objects"] = (
                "not checked: the store has no zarr.parquet (built by an older physiofm; rebuild to check)"
            )
        return {}
    found = ctx.store.list_zarr()
    index = ctx.tables["zarr"]
    listed = set(index["name"])
    for name in index.filter(pl.col("name").is_duplicated())["name"].unique().sort():
        report.add("integrity", "zarr-duplicate-object", f"zarr/{name} is listed more than once in zarr.parquet")
    for name, size in index.select("name", "bytes").iter_rows():
        if name not in found:
            report.add("integrity", "zarr-object-missing", f"zarr/{name} is listed in zarr.parquet but missing")
        elif found[name].get("size") != size:
            report.add(
                "integrity",
                "zarr-size-mismatch",
                f"zarr/{name} is {found[name].get('size')} bytes; zarr.parquet says {size}",
            )
    for name in sorted(set(found) - listed):
        report.add("integrity", "zarr-object-unlisted", f"zarr/{name} is not listed in zarr.parquet")
    report.sections["checked"]["zarr sizes checked"] = len(listed & set(found))
    return {name: found[name] for name in sorted(listed & set(found))}


# ---- integrity and content: what is read (tar shards, Zarr objects), in parallel -------------------


@dataclass
class _ReadOptions:
    deep: bool
    sample: int
    seed: int
    jobs: int
    pool: str | None
    progress: Callable[[int, int], None] | None


@dataclass
class _ShardJob:
    """Read one tar shard whole (picklable: a process pool runs it)."""

    url: str
    storage_options: dict
    modalities: tuple[str, ...]
    shapes: dict[str, tuple[tuple[int, ...], str] | None]
    index_row: dict  # its shards.parquet row
    rows: pl.DataFrame | None  # its manifest rows, in shard order


@dataclass
class _ZarrJob:
    """Hash one Zarr object against its zarr.parquet row."""

    url: str
    storage_options: dict
    entry: dict  # its zarr.parquet row


@dataclass
class _Result:
    problems: list[Problem]
    samples: int = 0
    bytes: int = 0
    mismatch: bool = False  # a Zarr object whose sha256 differs


_OPENED: dict[tuple, tuple[Layout, dict]] = {}  # (pid, url, options) -> (layout, Zarr arrays), per process


def _opened_key(url: str, options: dict) -> tuple:
    return os.getpid(), url, json.dumps(options, sort_keys=True, default=str)


def _opened(url: str, options: dict, modalities: tuple[str, ...]) -> tuple[Layout, dict]:
    """The store and its Zarr arrays, opened once per process (a forked worker opens its own)."""
    key = _opened_key(url, options)
    if key not in _OPENED:
        layout = Layout(url, options)
        try:
            group = layout.open_zarr("r")
            arrays = {m: group[m] for m in modalities if m in group.array_keys()}
        except FileNotFoundError:
            arrays = {}
        _OPENED[key] = layout, arrays
    return _OPENED[key]


def _run_job(job: _ShardJob | _ZarrJob) -> _Result:
    result = _Result([])
    own = Report(job.url, False)
    if isinstance(job, _ShardJob):
        layout, arrays = _opened(job.url, job.storage_options, job.modalities)
        _guarded(own, "integrity", _check_shard, own, layout, arrays, job, result)
    else:
        _guarded(own, "integrity", _check_zarr_object, own, Layout(job.url, job.storage_options), job, result)
    result.problems = own.problems
    return result


class _Runner:
    """Runs read jobs: in this process (one job), on threads, or on forked processes; results in job order."""

    def __init__(self, options: _ReadOptions) -> None:
        self.options = options
        self.kind = options.pool or ("process" if options.deep else "thread")
        if self.kind not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, not {self.kind!r}")
        self.executor: Executor | None = None
        self.done = self.total = 0

    def run(self, jobs: list) -> list[_Result]:
        self.total += len(jobs)
        self._report()
        if self.options.jobs <= 1 or len(jobs) <= 1:
            results = []
            for job in jobs:
                results.append(_run_job(job))
                self.done += 1
                self._report()
            return results
        if self.executor is None:
            if self.kind == "thread":  # hashing, decoding and I/O release the GIL, in part
                self.executor = ThreadPoolExecutor(self.options.jobs)
            else:
                context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
                self.executor = ProcessPoolExecutor(self.options.jobs, mp_context=context)
        futures = [self.executor.submit(_run_job, job) for job in jobs]
        for _ in as_completed(futures):  # progress as each one ends; results in job order
            self.done += 1
            self._report()
        return [future.result() for future in futures]

    def _report(self) -> None:
        if self.options.progress:
            self.options.progress(self.done, self.total)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)


def _draw(index: pl.DataFrame, sample: int, seed: int) -> pl.DataFrame:
    """Shards in a seeded order until they hold ``sample`` samples (index order kept)."""
    order = np.random.default_rng(seed).permutation(index.height)
    taken, total = [], 0
    for i in order:
        if total >= sample:
            break
        taken.append(int(i))
        total += int(index["samples"][int(i)])
    return index[sorted(taken)]


def _changed_after(entries: dict[str, dict], built: float | None) -> tuple[list[str], int]:
    """The ``RECENT`` newest of ``entries`` listed as modified at or after ``built``, and how many there are."""
    if built is None:
        return [], 0
    times = ((L.mtime(entry), name) for name, entry in entries.items())
    newer = sorted(((t, name) for t, name in times if t is not None and t >= built), reverse=True)
    return sorted(name for _, name in newer[:RECENT]), len(newer)


def _overlapping(index: pl.DataFrame, ranges: list[tuple[int, int]], first: str, count: str) -> pl.DataFrame:
    """Rows of ``index`` whose rows ``[first, first + count)`` meet one of ``ranges``."""
    if not ranges or index.height == 0:
        return index.clear()
    hit = pl.lit(False)
    for low, high in ranges:
        hit = hit | ((pl.col(first) < high) & (pl.col(first) + pl.col(count) > low))
    return index.filter(hit.fill_null(False))


def _check_data(
    report: Report, ctx: _Store, present: dict[str, dict], zarr_present: dict[str, dict], options: _ReadOptions
) -> None:
    checked = report.sections["checked"]
    shards = ctx.shards.filter(pl.col("shard").is_in(list(present))) if ctx.has("shards", *_SHARD_COLUMNS) else None
    objects = None
    if ctx.has("zarr", "name", "bytes", "sha256", "array", "first_row", "samples"):
        objects = ctx.tables["zarr"].filter(pl.col("name").is_in(list(zarr_present)))
    built = None
    if ctx.info and not options.deep:
        built = L.mtime(ctx.fs.info(ctx.store.build_info))
    recent_shards, newer_shards = _changed_after(present if shards is not None else {}, built)
    recent_zarr, newer_zarr = _changed_after(zarr_present if objects is not None else {}, built)
    if shards is None:
        chosen_shards = None
    elif options.deep:
        chosen_shards = shards
    else:
        drawn = _draw(shards, options.sample, options.seed)["shard"].to_list()
        chosen_shards = shards.filter(pl.col("shard").is_in(sorted({*drawn, *recent_shards})))
    if objects is None:
        chosen_objects = None
    elif options.deep:
        chosen_objects = objects
    else:
        ranges = (
            []
            if chosen_shards is None
            else [(f, f + n) for f, n in chosen_shards.select("first_row", "samples").iter_rows()]
        )
        names = {*recent_zarr, *objects.filter(pl.col("array").is_null())["name"]}
        names |= set(
            _overlapping(objects.filter(pl.col("array").is_not_null()), ranges, "first_row", "samples")["name"]
        )
        chosen_objects = objects.filter(pl.col("name").is_in(sorted(names)))

    runner = _Runner(options)
    key = _opened_key(ctx.store.url, ctx.store.storage_options)
    _OPENED[key] = ctx.store, ctx.arrays  # this process's jobs use the arrays already open
    try:
        shard_jobs = _shard_jobs(ctx, chosen_shards)
        zarr_jobs = [
            _ZarrJob(ctx.store.url, dict(ctx.store.storage_options), entry)
            for entry in ([] if chosen_objects is None else chosen_objects.to_dicts())
        ]
        results = runner.run([*shard_jobs, *zarr_jobs])
        shard_results, zarr_results = results[: len(shard_jobs)], results[len(shard_jobs) :]
        follow = []
        if not options.deep and chosen_shards is not None:
            changed = [
                (job.entry["first_row"], job.entry["first_row"] + job.entry["samples"])
                for job, result in zip(zarr_jobs, zarr_results)
                if result.mismatch and job.entry.get("array") is not None
            ]
            more = _overlapping(
                shards.filter(~pl.col("shard").is_in(chosen_shards["shard"])), changed, "first_row", "samples"
            )
            follow = _shard_jobs(ctx, more)
            if follow:
                chosen_shards = pl.concat([chosen_shards, more]).sort("first_row")
                shard_results += runner.run(follow)
    finally:
        runner.close()
        _OPENED.pop(key, None)
    for result in [*shard_results, *zarr_results]:
        report.problems.extend(result.problems)

    total_samples = int(ctx.shards["samples"].sum()) if ctx.has("shards", "samples") else 0
    read_samples = sum(r.samples for r in shard_results)
    table_bytes = sum(size for size, _ in ctx.files.values())
    read_bytes = table_bytes + sum(r.bytes for r in [*shard_results, *zarr_results])
    n_shards = 0 if ctx.shards is None else ctx.shards.height
    n_objects = 0 if ctx.tables.get("zarr") is None else ctx.tables["zarr"].height
    checked.update(
        {
            "jobs": f"{options.jobs} ({'processes' if runner.kind == 'process' else 'threads'})"
            if options.jobs > 1
            else "1",
            "shards read": f"{len(shard_results)} / {n_shards}",
            "samples compared with zarr": f"{read_samples} / {total_samples}",
            "zarr objects hashed": f"{len(zarr_results)} / {n_objects}",
            "bytes read": read_bytes,
        }
    )
    if not options.deep:
        checked["changed after build.json"] = {
            "shards": newer_shards,
            "zarr objects": newer_zarr,
            "read": [*recent_shards, *(f"zarr/{name}" for name in recent_zarr)],
        }
    checked["read"] = _read_sentence(
        options, len(shard_results), n_shards, read_samples, total_samples, len(zarr_results), n_objects,
        len(ctx.files), (newer_shards, len(recent_shards)), (newer_zarr, len(recent_zarr)), len(follow),
    )  # fmt: skip


_SHARD_COLUMNS = ("shard", "samples", "sha256", "first_row")


def _shard_jobs(ctx: _Store, chosen: pl.DataFrame | None) -> list[_ShardJob]:
    if chosen is None or chosen.height == 0:
        return []
    groups: dict[str, pl.DataFrame] = {}
    if ctx.has("manifest", "shard", "shard_pos"):
        rows = ctx.manifest.filter(pl.col("shard").is_in(chosen["shard"].to_list())).sort("shard", "shard_pos")
        groups = {name: group for (name,), group in rows.group_by("shard", maintain_order=True)}
    shapes = {modality: ctx.sample_shape(modality) for modality in ctx.modalities}
    return [
        _ShardJob(ctx.store.url, dict(ctx.store.storage_options), ctx.modalities, shapes, row, groups.get(row["shard"]))
        for row in chosen.iter_rows(named=True)
    ]


def _read_sentence(
    options: _ReadOptions,
    shards: int,
    n_shards: int,
    samples: int,
    n_samples: int,
    objects: int,
    n_objects: int,
    tables: int,
    newer_shards: tuple[int, int],
    newer_zarr: tuple[int, int],
    follow: int,
) -> str:
    """What the check read, in one sentence (``sections.checked.read``)."""
    jobs = f" ({options.jobs} jobs)" if options.jobs > 1 else ""
    if options.deep:
        return (
            f"read everything{jobs}: {samples:,} of {n_samples:,} samples in {shards} of {n_shards} shards, "
            f"{objects} of {n_objects} Zarr objects hashed, {tables} tables hashed whole"
        )
    text = (
        f"sampled {samples:,} of {n_samples:,} samples in {shards} of {n_shards} shards (seed {options.seed}) "
        f"and hashed {objects} of {n_objects} Zarr objects; {tables} tables hashed whole, every shard's and "
        f"Zarr object's size checked"
    )
    changed = []
    for what, (newer, read) in (("shard", newer_shards), ("Zarr object", newer_zarr)):
        if newer:
            changed.append(f"{read} of {newer} {what}{'s' if newer > 1 else ''} changed after build.json")
    if changed:
        text += "; read " + " and ".join(changed)
    if follow:
        text += f"; read {follow} more shard{'s' if follow > 1 else ''} holding the rows of a changed Zarr object"
    return text + "; `--deep` reads everything"


def _check_zarr_object(report: Report, layout: Layout, job: _ZarrJob, result: _Result) -> None:
    entry = job.entry
    name = entry["name"]
    rows = ""
    if entry.get("array") is not None and entry.get("first_row") is not None:
        first = int(entry["first_row"])
        rows = f" ({entry['array']} rows {first}–{first + int(entry['samples'] or 0) - 1})"
    try:
        size, sha = layout.hash_file(layout.zarr_object(name))
    except (OSError, ValueError) as error:
        report.add("integrity", "zarr-unreadable", f"zarr/{name}{rows} cannot be read: {error}")
        return
    result.bytes = size
    if sha != entry["sha256"]:
        result.mismatch = True
        report.add(
            "integrity",
            "zarr-sha256-mismatch",
            f"zarr/{name}{rows}: sha256 {sha[:16]}… differs from zarr.parquet's {str(entry['sha256'])[:16]}… "
            "(the object was changed after the build)",
        )


def _check_shard(report: Report, layout: Layout, arrays: dict, job: _ShardJob, result: _Result) -> None:
    """Stream one shard once: hash it, list its samples, compare each with its manifest row and Zarr row."""
    index_row = job.index_row
    name, start, count_listed = index_row["shard"], int(index_row["first_row"]), int(index_row["samples"])
    rows = job.rows.to_dicts() if job.rows is not None else []
    zarr_data: dict[str, np.ndarray] = {}
    for modality, array in arrays.items():
        stop = min(start + count_listed, array.shape[0])
        try:
            zarr_data[modality] = array[start:stop]
        except Exception as error:  # noqa: BLE001 - a damaged Zarr object can fail in any codec
            report.add(
                "integrity",
                "zarr-unreadable",
                f"{name}: zarr {modality} rows {start}–{stop - 1} cannot be read: {type(error).__name__}: {error}",
            )
    found: dict[str, list[str]] = defaultdict(list)
    for modality, data in zarr_data.items():
        for pos in np.flatnonzero(~np.isfinite(data).all(axis=tuple(range(1, data.ndim)))):
            key = rows[pos]["key"] if pos < len(rows) else f"position {pos}"
            found["non-finite"].append(f"{key} ({modality}, zarr row {start + pos})")
    count = 0
    path = layout.shard(name)
    with layout.fs.open(path, "rb") as handle:
        reader = HashingStream(handle)
        buffered = io.BufferedReader(reader, BUFFER)  # the tar headers are small reads: hash big blocks
        try:
            for pos, (key, members) in enumerate(iter_samples(buffered, path)):
                count += 1
                row = rows[pos] if pos < len(rows) else None
                _check_sample(job, found, pos, key, members, row, zarr_data)
        except (ShardError, OSError, ValueError) as error:
            report.add("integrity", "shard-unreadable", f"{name} cannot be read past sample {count}: {error}")
        while buffered.read(BUFFER):  # hash to the end, past the tar's end-of-archive blocks
            pass
    result.samples, result.bytes = count, reader.size
    if count != count_listed:
        report.add(
            "integrity",
            "shard-count-mismatch",
            f"{name}: {count} samples in the tar, {count_listed} in shards.parquet",
        )
    if reader.hexdigest() != index_row["sha256"]:
        report.add(
            "integrity",
            "shard-sha256-mismatch",
            f"{name}: sha256 {reader.hexdigest()[:16]}… differs from shards.parquet's {str(index_row['sha256'])[:16]}…",
        )
    for code, (check, what) in SAMPLE_FINDINGS.items():
        if found[code]:
            report.add(check, code, f"{name}: {what} ({len(found[code])}): {_named(found[code])}")


def _check_sample(
    job: _ShardJob,
    found: dict[str, list[str]],
    pos: int,
    key: str,
    members: dict[str, bytes],
    row: dict | None,
    zarr_data: dict[str, np.ndarray],
) -> None:
    if row is None or row["key"] != key:
        found["shard-keys-mismatch"].append(f"#{pos} {key} (manifest: {row['key'] if row else 'no row'})")
    for modality in job.modalities:
        payload = members.get(f"{modality}.npy")
        if payload is None:
            found["sample-member-missing"].append(f"{key}.{modality}.npy")
            continue
        try:
            array = decode(payload, f"{key}.{modality}.npy")
        except NpyError:
            found["sample-shape-mismatch"].append(f"{key} ({modality}: not a numeric .npy array)")
            continue
        want = job.shapes.get(modality)
        if want and (array.shape, str(array.dtype)) != want:
            found["sample-shape-mismatch"].append(f"{key} ({modality} {array.dtype} {array.shape})")
        if not np.isfinite(array).all():
            found["non-finite"].append(f"{key} ({modality}, in the shard)")
        data = zarr_data.get(modality)
        if data is not None and pos < len(data) and not np.array_equal(array, data[pos], equal_nan=True):
            found["zarr-shard-mismatch"].append(f"{key} ({modality}, zarr row {row['zarr_row'] if row else '?'})")
    if "json" not in members:
        found["sample-member-missing"].append(f"{key}.json")
    elif row is not None:
        meta = json.loads(members["json"])
        differ = [column for column, value in meta.items() if column in row and not _same(row[column], value)]
        if differ:
            found["manifest-shard-mismatch"].append(f"{key} ({', '.join(differ)})")


def _same(a: Any, b: Any) -> bool:
    """Equal as a manifest cell and a JSON value (numbers by value, NaN equal to NaN, lists item by item)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and isinstance(a, bool) == isinstance(b, bool):
        return a == b or (a != a and b != b)
    return a == b and type(a) is type(b)


# ---- content: labels ----------------------------------------------------------------------------


def _check_labels(report: Report, ctx: _Store) -> None:
    """Binary labels against raw scores and the recorded threshold; labels within their ranges."""
    if ctx.manifest is None:
        return
    manifest = ctx.manifest.with_row_index("_row")
    columns = set(manifest.columns)
    keys = pl.col("key") if "key" in columns else pl.format("row {}", "_row")
    targets = sorted(c[: -len("_high")] for c in columns if c.endswith("_high") and c[: -len("_high")] in columns)

    def flag(code: str, condition: pl.Expr, what: str) -> None:
        bad = manifest.filter(condition.fill_null(False)).select(keys.alias("k"))["k"]
        if len(bad):
            report.add("content", code, f"{what} ({len(bad)} rows): {_named(bad.head(SHOWN).to_list(), len(bad))}")

    for target in targets:
        high, score = f"{target}_high", pl.col(target).cast(pl.Float64, strict=False)
        if "label_threshold" not in columns:
            report.add("content", "label-threshold-missing", f"{high} has no label_threshold column to check it by")
            continue
        expected = score > pl.col("label_threshold")
        flag(
            "label-inconsistent",
            score.is_not_null() & (pl.col(high).is_null() | (pl.col(high) != expected)),
            f"{high} disagrees with {target} > label_threshold",
        )
    if {"score_min", "score_max"} <= columns:
        for column in [*targets, "label_threshold"] if "label_threshold" in columns else targets:
            value = pl.col(column).cast(pl.Float64, strict=False)
            flag(
                "label-out-of-range",
                (value < pl.col("score_min")) | (value > pl.col("score_max")),
                f"{column} outside [score_min, score_max]",
            )
    dataset = ctx.info.get("dataset") or (manifest["dataset"][0] if "dataset" in columns and manifest.height else "")
    for column, (low, high_) in {**LABEL_RANGES["*"], **LABEL_RANGES.get(dataset, {})}.items():
        if column in columns and manifest.schema[column].is_numeric():
            flag(
                "label-out-of-range",
                (pl.col(column) < low) | (pl.col(column) > high_),
                f"{column} outside [{low:g}, {high_:g}]",
            )


# ---- leakage and balance -----------------------------------------------------------------------


def _check_splits(report: Report, ctx: _Store) -> None:
    """Samples and subjects per split value; subjects on both sides of a subject-wise split."""
    if ctx.manifest is None:
        return
    manifest = ctx.manifest
    declared = ctx.info.get("splits") or {}
    columns = [c for c in dict.fromkeys((*SPLIT_COLUMNS, *declared)) if c in manifest.columns]
    subjects = "subject_id" in manifest.columns and manifest["subject_id"].null_count() < manifest.height
    splits: dict[str, dict[str, Any]] = {}
    for column in columns:
        subject_wise = bool((declared.get(column) or {}).get("subject_wise", True))
        per_value = (
            manifest.group_by(column)
            .agg(
                pl.len().alias("samples"),
                (pl.col("subject_id").drop_nulls().n_unique() if subjects else pl.lit(None)).alias("subjects"),
            )
            .sort(column)
        )
        section: dict[str, Any] = {
            "subject_wise": subject_wise,
            "values": {str(v): {"samples": n, "subjects": s} for v, n, s in per_value.iter_rows()},
        }
        if subject_wise and subjects:
            leaks = (
                manifest.filter(pl.col("subject_id").is_not_null() & pl.col(column).is_not_null())
                .group_by("subject_id")
                .agg(pl.col(column).unique().sort())
                .filter(pl.col(column).list.len() > 1)
                .sort("subject_id")
            )
            section["leaked subjects"] = leaks.height
            if leaks.height:
                report.add(
                    "leakage",
                    "subject-leak",
                    f"{column} is subject-wise but subjects are in more than "
                    f"one {column} ({leaks.height}): "
                    + _named([f"{s} ({column} {', '.join(map(str, v))})" for s, v in leaks.iter_rows()]),
                )
        elif subject_wise:
            section["leaked subjects"] = "not checked: no subject ids"
        splits[column] = section
    report.sections["splits"] = splits


def _class_balance(report: Report, ctx: _Store) -> None:
    """Counts per value of each label column (boolean, or list of codes) outside the core schema."""
    if ctx.manifest is None:
        return
    manifest = ctx.manifest
    core = schema.columns("manifest", ctx.modalities)
    balance: dict[str, dict[str, int]] = {}
    for column in sorted(c for c in manifest.columns if c not in core):
        series = manifest[column]
        if series.dtype == pl.Boolean:
            counts = {"true": int(series.sum()), "false": int((~series).sum())}
        elif series.dtype == pl.List(pl.String):
            values = series.explode().drop_nulls().value_counts(sort=True)
            counts = {str(v): int(n) for v, n in values.iter_rows()}
            empty = int((series.list.len() == 0).sum())
            if empty:
                counts["(none)"] = empty
        else:
            continue
        if series.null_count():
            counts["null"] = series.null_count()
        balance[column] = counts
    report.sections["balance"] = balance


# ---- scale: amplitudes against physiological ranges ---------------------------------------------


def _unit_question(ctx: _Store) -> str:
    """The end of a scale warning: what to check, and the recipe's own source factor if it has one."""
    scale = ((ctx.info.get("recipe") or {}).get("source") or {}).get("scale")
    question = "is the source unit right (CODE-15% values are mV; V, mV and µV differ by factors of 1000)?"
    if isinstance(scale, int | float) and scale != 1:
        question += f" The recipe multiplies the source values by {scale:g} ([source] scale)."
    return question


def _check_scale(report: Report, ctx: _Store) -> None:
    """Warn on amplitudes no real recording has: a wrong source unit, one lead with a wrong gain."""
    if not ctx.info:
        return  # no build.json: already a problem
    amplitude = ctx.info.get("amplitude")
    if not isinstance(amplitude, dict):
        report.sections["checked"]["amplitude"] = (
            "not checked: build.json has no amplitude statistics (built by an older physiofm; rebuild to check)"
        )
        return
    report.sections["amplitude"] = amplitude
    report.sections["checked"]["amplitude"] = ", ".join(
        f"{modality} ({section.get('windows', 0)} windows)" for modality, section in amplitude.items()
    )
    question = _unit_question(ctx)
    ecg, eeg = amplitude.get("ecg"), amplitude.get("eeg")
    if isinstance(ecg, dict) and ecg.get("windows"):
        _check_ecg_scale(report, ecg, question)
    if isinstance(eeg, dict) and eeg.get("windows"):
        medians = [f["median"] for f in (eeg.get("channels") or {}).values() if f.get("median") is not None]
        if medians:
            level = float(np.median(medians))
            low, high = EEG_P99_UV
            if not low <= level <= high:
                report.warn(
                    "scale",
                    "eeg-amplitude-implausible",
                    f"EEG p99 of |x| has a median of {level:.3g} µV over {len(medians)} channels "
                    f"and {eeg['windows']} windows; scalp EEG is {low:g}–{high:g} µV: {question}",
                )


def _check_ecg_scale(report: Report, ecg: dict, question: str) -> None:
    windows = ecg["windows"]
    leads = {name: f["median"] for name, f in (ecg.get("channels") or {}).items() if f.get("median") is not None}
    peaks = ecg.get("r_peak_ii") or {}
    low, high = R_PEAK_MV
    if peaks.get("median") is not None and not low <= peaks["median"] <= high:
        report.warn(
            "scale",
            "ecg-amplitude-implausible",
            f"ECG R peaks on lead II have a median of {peaks['median']:.2g} mV over {peaks['windows']} windows; "
            f"physiological is {low:g}–{high:g} mV: {question}",
        )
    elif leads:
        low, high = ECG_P99_MV
        if all(not low <= value <= high for value in leads.values()):
            report.warn(
                "scale",
                "ecg-amplitude-implausible",
                f"ECG p99 of |x| is outside {low:g}–{high:g} mV on every lead (medians from "
                f"{min(leads.values()):.2g} to {max(leads.values()):.2g} mV over {windows} windows): {question}",
            )
    if len(leads) < LEAD_RATIO_MIN_LEADS:
        return
    reference = float(np.median(list(leads.values())))
    if reference <= 0:
        return
    for name, value in leads.items():
        ratio = value / reference
        if ratio > LEAD_RATIO or ratio < 1 / LEAD_RATIO:
            report.warn(
                "scale",
                "lead-scale-outlier",
                f"ECG lead {name}: median p99 of |x| is {value:.2g} mV, {ratio:.2g}× the median of the "
                f"{len(leads)} leads ({reference:.2g} mV): is its gain or unit wrong in the source?",
            )
