"""`physiofm validate`: check a store against its schemas, its indexes and its own data.

Four checks; every problem is collected, none stops the others:

* **schema**: ``build.json`` exists (its absence marks an interrupted build) and holds the keys
  of ``manifests/schema/vN/build.json``; every table matches its versioned schema.
* **integrity**: every shard of ``shards.parquet`` exists with its recorded size (one listing of
  ``wds/``) and nothing else is there; sample counts agree (index, manifest, Zarr, build.json);
  keys are unique; every manifest row points at a real (shard, position) and Zarr row.  Shards
  that are *read* are hashed, their members listed against the manifest, each sample's metadata
  compared with its manifest row and its arrays with its Zarr row.
* **content**: Zarr arrays and the arrays read have the recipe's shapes and dtype and no NaN or
  infinite value; labels lie in the dataset's ranges; ``<target>_high`` is
  ``<target> > label_threshold``.
* **leakage**: samples and subjects per split value (``split``, ``fold``); a subject on both sides
  of a subject-wise split is an error.  Class balance per label column is reported.

Which shards are read: by default whole shards drawn in a seeded order until they hold at least
``sample`` samples (a store of 1000-sample shards reads one shard and its 1000 Zarr rows); with
``deep`` every shard.  The rest reads only ``build.json``, the Parquet tables, Zarr metadata and
one listing of ``wds/``, so the default cost does not grow with the data.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
READERS = 4  # shards read at once
# Ranges of labels whose scale is not in the manifest itself (emotion scores carry score_min/max).
LABEL_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "*": {"age": (0, 300)},  # 300: PTB-XL's (and the Challenge's PTB-XL subset's) age above 89
    "ptbxl": {"fold": (1, 10)},
}
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
        df = self.tables[table]
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
    store: str, *, deep: bool = False, sample: int = 64, seed: int = 0, storage_options: dict | None = None
) -> Report:
    """Check the store at ``store`` (path or URL); return every problem found and the summary.

    ``sample``: the default check reads whole shards, drawn in an order fixed by ``seed``, until
    they hold at least ``sample`` samples; ``deep`` reads every shard.
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
        ("integrity", _check_counts),
        ("integrity", _check_rows),
        ("content", _check_labels),
        ("leakage", _check_splits),
        ("leakage", _class_balance),
    )
    for check, step in steps:
        _guarded(report, check, step, report, ctx)
    present = _guarded(report, "integrity", _check_listing, report, ctx) or set()
    _guarded(report, "integrity", _check_shard_data, report, ctx, present, deep, sample, seed)
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
    tables = {name: _read_table(report, store, name, modalities) for name in L.TABLES}
    ctx = _Store(store, info, modalities, tables, {})
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


def _read_table(report: Report, store: Layout, table: str, modalities: tuple[str, ...]) -> pl.DataFrame | None:
    if not store.fs.exists(store.table(table)):
        report.add("schema", "table-missing", f"{L.TABLES[table]} is missing")
        return None
    try:
        df = store.read_table(table)
    except (pl.exceptions.PolarsError, OSError, ValueError) as error:
        report.add("schema", "table-unreadable", f"{table}.parquet cannot be read: {error}")
        return None
    for message in schema.problems(df, table, modalities if table == "manifest" else ()):
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


def _check_listing(report: Report, ctx: _Store) -> set[str]:
    """Sizes of all shards from one listing of ``wds/``; returns the names present."""
    try:
        entries = ctx.fs.ls(ctx.store.path(L.WDS), detail=True)
    except FileNotFoundError:
        entries = []
    found = {entry["name"].rstrip("/").rsplit("/", 1)[-1]: entry for entry in entries}
    if not ctx.has("shards", "shard", "bytes"):
        return set(found)
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
    return set(found) & listed


# ---- integrity and content: shards read ---------------------------------------------------------


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


def _check_shard_data(report: Report, ctx: _Store, present: set[str], deep: bool, sample: int, seed: int) -> None:
    if not ctx.has("shards", "shard", "samples", "sha256", "first_row"):
        return
    index = ctx.shards.filter(pl.col("shard").is_in(sorted(present)))
    chosen = index if deep else _draw(index, sample, seed)
    by_shard: dict[str, list[dict]] = {}
    if ctx.has("manifest", "shard", "shard_pos"):
        rows = ctx.manifest.filter(pl.col("shard").is_in(chosen["shard"].to_list())).sort("shard", "shard_pos")
        by_shard = {name: group.to_dicts() for (name,), group in rows.group_by("shard", maintain_order=True)}

    def check(row: dict) -> list[Problem]:
        own = Report(report.store, report.deep)
        _guarded(own, "integrity", _check_shard, own, ctx, row, by_shard.get(row["shard"], []))
        return own.problems

    with ThreadPoolExecutor(READERS) as pool:  # hashing, decoding and I/O release the GIL
        for problems in pool.map(check, chosen.iter_rows(named=True)):
            report.problems.extend(problems)
    report.sections["checked"].update(
        {
            "shards read": f"{chosen.height} / {ctx.shards.height}",
            "samples compared with zarr": f"{int(chosen['samples'].sum())} / {int(ctx.shards['samples'].sum())}",
        }
    )


def _check_shard(report: Report, ctx: _Store, index_row: dict, rows: list[dict]) -> None:
    """Stream one shard once: hash it, list its samples, compare each with its manifest row and Zarr row."""
    name, start = index_row["shard"], int(index_row["first_row"])
    zarr_data = {m: a[start : min(start + int(index_row["samples"]), a.shape[0])] for m, a in ctx.arrays.items()}
    found: dict[str, list[str]] = defaultdict(list)
    for modality, data in zarr_data.items():
        for pos in np.flatnonzero(~np.isfinite(data).all(axis=tuple(range(1, data.ndim)))):
            key = rows[pos]["key"] if pos < len(rows) else f"position {pos}"
            found["non-finite"].append(f"{key} ({modality}, zarr row {start + pos})")
    count = 0
    path = ctx.store.shard(name)
    with ctx.fs.open(path, "rb") as handle:
        reader = HashingStream(handle)
        try:
            for pos, (key, members) in enumerate(iter_samples(reader, path)):
                count += 1
                _check_sample(ctx, found, pos, key, members, rows[pos] if pos < len(rows) else None, zarr_data)
        except (ShardError, OSError, ValueError) as error:
            report.add("integrity", "shard-unreadable", f"{name} cannot be read past sample {count}: {error}")
        reader.drain()  # hash to the end, past the tar's end-of-archive blocks
    if count != index_row["samples"]:
        report.add(
            "integrity",
            "shard-count-mismatch",
            f"{name}: {count} samples in the tar, {index_row['samples']} in shards.parquet",
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
    ctx: _Store,
    found: dict[str, list[str]],
    pos: int,
    key: str,
    members: dict[str, bytes],
    row: dict | None,
    zarr_data: dict[str, np.ndarray],
) -> None:
    if row is None or row["key"] != key:
        found["shard-keys-mismatch"].append(f"#{pos} {key} (manifest: {row['key'] if row else 'no row'})")
    for modality in ctx.modalities:
        payload = members.get(f"{modality}.npy")
        if payload is None:
            found["sample-member-missing"].append(f"{key}.{modality}.npy")
            continue
        try:
            array = decode(payload, f"{key}.{modality}.npy")
        except NpyError:
            found["sample-shape-mismatch"].append(f"{key} ({modality}: not a numeric .npy array)")
            continue
        want = ctx.sample_shape(modality)
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
