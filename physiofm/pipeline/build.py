"""The build: a source tree in, one store out (WebDataset shards, Zarr arrays, Parquet tables).

How a build stays correct when it is killed, resumed, or run with any number of jobs:

* The plan is fixed before any work: the corpus lists its items (sorted), and items are
  grouped into *units* of about ``shard_size`` samples.  Unit ``k`` writes exactly one shard,
  ``wds/shard-{k:06d}.tar``; nothing about the plan depends on ``--jobs``.
* A unit is processed by one process (a worker of the executor): it reads its records,
  transforms them in batches, streams samples into its shard (published atomically) and
  then writes its marker ``_build/unit-{k:06d}.json`` (rows and rejects), also atomically.
  A unit with a marker is done; a resumed build skips it.
* The parent alone writes the Zarr arrays, appending each unit's samples in unit order as
  soon as every earlier unit is done, then the Parquet tables, and ``build.json`` last.
  ``build.json`` marks a complete store; ``_build/`` is removed after it is written.
"""

from __future__ import annotations

import importlib
from importlib import metadata
import json
import multiprocessing
import os
import platform
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from itertools import islice

import numpy as np
import polars as pl

import physiofm
from physiofm.io import atomic_write, join, url_to_fs, write_bytes
from physiofm.pipeline import corpora, schema
from physiofm.pipeline.recipe import load_recipe, merge, recipe_hash
from physiofm.pipeline.shards import read_arrays
from physiofm.pipeline.records import Item, Record, Reject
from physiofm.pipeline.writers import (
    TarShardWriter, ZarrAppender, json_bytes, npy_bytes, open_zarr_group,
)

PREPARERS = {"ecg": "physiofm.pipeline.ecg", "emotion": "physiofm.pipeline.emotion"}
BATCH_RECORDS = 64  # records transformed together: bounds a worker's memory, whatever the shard size
STATE = "_build"


class BuildError(RuntimeError):
    """A build that cannot go on (the message says why and what to do)."""


@dataclass
class UnitTask:
    """Everything a worker needs to produce one shard (picklable, small)."""

    index: int
    corpus: str
    source: str
    out: str
    recipe: dict
    items: list[Item]
    storage_options: dict = field(default_factory=dict)


def plan_units(items: list[Item], shard_size: int) -> list[list[Item]]:
    """Group items, in order, into units of about ``shard_size`` estimated samples."""
    units: list[list[Item]] = []
    current: list[Item] = []
    total = 0
    for item in items:
        if current and total + item.est_windows > shard_size:
            units.append(current)
            current, total = [], 0
        current.append(item)
        total += item.est_windows
    if current:
        units.append(current)
    return units


def _batches(iterator: Iterator, size: int | None) -> Iterator[list]:
    """Lists of ``size`` items (all of them when ``size`` is None)."""
    while batch := list(islice(iterator, size)):
        yield batch


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def run_unit(task: UnitTask) -> dict:
    """Process one unit: write its shard and its marker; return the marker's content."""
    reader = corpora.get(task.corpus)
    preparer = importlib.import_module(PREPARERS[corpora.kind_of(task.corpus)])
    fs, out = url_to_fs(task.out, task.storage_options)
    name = shard_name(task.index)
    writer = TarShardWriter(fs, join(out, "wds", name))
    rows: list[dict] = []
    rejects: list[Reject] = []
    read = 0
    try:
        for batch in _batches(iter(reader.read(task.source, task.items)), getattr(preparer, "BATCH_RECORDS", BATCH_RECORDS)):
            records = [r for r in batch if isinstance(r, Record)]
            rejects.extend(r for r in batch if isinstance(r, Reject))
            read += len(records)
            arrays, metas, more = preparer.prepare(records, task.recipe)
            rejects.extend(more)
            for i, meta in enumerate(metas):
                members = {f"{modality}.npy": npy_bytes(values[i]) for modality, values in arrays.items()}
                members["json"] = json_bytes(meta)
                rows.append({**meta, "shard": name, "shard_pos": writer.samples})
                writer.add(meta["key"], members)
    except BaseException:
        writer.abort()
        raise
    info = writer.close()
    marker = {"index": task.index, "shard": asdict(info) if info else None, "records_read": read,
              "items": len(task.items), "rows": rows, "rejects": [asdict(r) for r in rejects]}
    payload = json_bytes(marker)
    write_bytes(fs, join(out, STATE, f"unit-{task.index:06d}.json"), payload)
    return json.loads(payload)  # exactly what a resumed build reads back


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "physiofm": physiofm.__version__}
    for name in ("numpy", "scipy", "wfdb", "zarr", "polars", "pyarrow", "h5py", "mne"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _fingerprint(corpus: str, source: str, recipe: dict) -> dict:
    return {"dataset": corpus, "source": str(source), "recipe_hash": recipe_hash(recipe),
            "schema_version": schema.SCHEMA_VERSION}


def _read_json(fs, path: str) -> dict | None:
    return json.loads(fs.cat_file(path)) if fs.exists(path) else None


def _default_executor(jobs: int) -> Executor | None:
    if jobs <= 1:
        return None
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context)


def _run(tasks: list[UnitTask], executor: Executor | None) -> Iterator[dict]:
    if executor is None:
        for task in tasks:
            yield run_unit(task)
        return
    futures = [executor.submit(run_unit, task) for task in tasks]
    for future in as_completed(futures):
        yield future.result()


def build(
    source: str,
    out: str,
    *,
    fmt: str = "auto",
    kind: str = "ecg",
    recipe: str | dict | None = None,
    jobs: int | None = None,
    shard_size: int | None = None,
    dtype: str | None = None,
    recipe_overrides: dict | None = None,
    storage_options: dict | None = None,
    executor: Executor | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Build a store at ``out`` from the archive at ``source``; return the build summary.

    ``fmt`` names the corpus (``auto`` detects it among those of ``kind``); ``recipe`` is a
    recipe name, path or dict (default: the corpus's own recipe); ``shard_size`` and
    ``dtype`` override the recipe's output section.  ``progress(stage, done, total)`` is
    called as units finish.  A complete store with the same source and recipe is left as
    it is; an interrupted one is resumed.
    """
    started = time.perf_counter()
    candidates = corpora.ECG_FORMATS if kind == "ecg" else corpora.EMOTION_DATASETS
    corpus = corpora.detect(source, candidates) if fmt == "auto" else fmt
    reader = corpora.get(corpus)
    overrides = dict(recipe_overrides or {})
    output = dict(overrides.get("output", {}))
    if shard_size:
        output["shard_size"] = int(shard_size)
    if dtype:
        output["dtype"] = dtype
    if output:
        overrides["output"] = output
    resolved = merge(recipe, overrides) if isinstance(recipe, dict) else load_recipe(recipe or corpus, overrides)
    fingerprint = _fingerprint(corpus, source, resolved)

    fs, root = url_to_fs(out, storage_options)
    done_build = _read_json(fs, join(root, "build.json"))
    if done_build is not None:
        if all(done_build.get(k) == v for k, v in fingerprint.items()):
            return {**done_build["counts"], "status": "up-to-date", "seconds": time.perf_counter() - started,
                    "out": out, "dataset": corpus}
        raise BuildError(f"{out} already holds a different build (dataset {done_build.get('dataset')}, "
                         f"recipe {done_build.get('recipe_hash', '')[:12]}); choose another output")
    plan_path = join(root, STATE, "plan.json")
    plan = _read_json(fs, plan_path)
    if plan is not None and plan["fingerprint"] != fingerprint:
        raise BuildError(f"{out} holds an unfinished build of another source or recipe; "
                         f"remove it or choose another output")

    items = reader.list_items(source)
    if not items:
        raise BuildError(f"nothing readable in {source}: no {corpus} records found")
    units = plan_units(items, int(resolved["output"]["shard_size"]))
    if plan is None:
        write_bytes(fs, plan_path, json_bytes({"fingerprint": fingerprint, "units": len(units)}))
    for leftover in fs.glob(join(root, "wds", ".*.tmp-*")):  # a killed worker's unpublished shard
        fs.rm(leftover)
    markers: dict[int, dict] = {}
    for path in fs.glob(join(root, STATE, "unit-*.json")):
        marker = json.loads(fs.cat_file(path))
        markers[marker["index"]] = marker
    tasks = [UnitTask(i, corpus, source, out, resolved, unit, dict(storage_options or {}))
             for i, unit in enumerate(units) if i not in markers]

    preparer = importlib.import_module(PREPARERS[corpora.kind_of(corpus)])
    group = open_zarr_group(fs, join(root, "zarr"), mode="w", storage_options=storage_options)
    appenders: dict[str, ZarrAppender] = {}
    out_cfg = resolved["output"]

    def commit(marker: dict) -> None:
        if not marker["shard"]:
            return
        shard_path = join(root, "wds", marker["shard"]["shard"])
        for modality in preparer.MODALITIES:
            with fs.open(shard_path, "rb") as handle:
                arrays = read_arrays(handle, shard_path, f"{modality}.npy")
            if modality not in appenders:
                appenders[modality] = ZarrAppender(group, modality, arrays[0].shape, out_cfg["dtype"],
                                                   out_cfg["zarr_chunk_rows"], out_cfg["zarr_shard_rows"],
                                                   out_cfg["zarr_compression"])
            appenders[modality].append(np.stack(arrays))

    committed = 0
    total_units = len(units)

    def advance() -> None:
        nonlocal committed
        while committed in markers:
            commit(markers[committed])
            committed += 1

    own_executor = executor is None
    executor = executor or _default_executor(jobs or os.cpu_count() or 1)
    try:
        advance()
        if progress:
            progress("units", len(markers), total_units)
        for marker in _run(tasks, executor):
            markers[marker["index"]] = marker
            advance()
            if progress:
                progress("units", len(markers), total_units)
    finally:
        if own_executor and executor is not None:
            executor.shutdown(cancel_futures=True)
    zarr_rows = {modality: appender.close() for modality, appender in appenders.items()}
    shapes = {modality: list(appender.sample_shape) for modality, appender in appenders.items()}

    return _finish(fs, root, out, source, corpus, preparer, resolved, fingerprint, units,
                   markers, zarr_rows, shapes, started)


def _finish(fs, root, out, source, corpus, preparer, recipe, fingerprint, units, markers,
            zarr_rows, sample_shapes, started) -> dict:
    ordered = [markers[i] for i in range(len(units))]
    rows = [row for marker in ordered for row in marker["rows"]]
    reject_rows = [r for marker in ordered for r in marker["rejects"]]
    modalities = tuple(preparer.MODALITIES)
    rejects = (pl.DataFrame(reject_rows, infer_schema_length=None) if reject_rows
               else schema.empty_frame("rejects"))
    rejects = schema.conform(rejects, "rejects")
    with atomic_write(fs, join(root, "rejects.parquet")) as handle:
        rejects.write_parquet(handle)
    reasons = Counter(r["reason"] if r["stage"] != "quality" else f"quality: {r['reason']}" for r in reject_rows)
    records_rejected = len({(r["source"], r["record_id"]) for r in reject_rows if r["stage"] != "quality"})
    records_read = sum(m["records_read"] for m in ordered)
    items_total = sum(m["items"] for m in ordered)
    if not rows:
        top = "; ".join(f"{reason} ({n})" for reason, n in reasons.most_common(3))
        raise BuildError(f"every record of {source} was rejected ({len(reject_rows)} rejects): {top}. "
                         f"See {join(out, 'rejects.parquet')}")

    manifest = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.int_range(0, pl.len(), dtype=pl.Int64).alias("zarr_row"))
    manifest = schema.conform(manifest, "manifest", modalities)
    for modality, count in zarr_rows.items():
        if count != manifest.height:
            raise BuildError(f"internal error: zarr {modality} has {count} rows, manifest {manifest.height}")
    with atomic_write(fs, join(root, "manifest.parquet")) as handle:
        manifest.write_parquet(handle)

    shard_rows, first = [], 0
    for marker in ordered:
        if marker["shard"]:
            shard_rows.append({**marker["shard"], "first_row": first})
            first += marker["shard"]["samples"]
    shards = schema.conform(pl.DataFrame(shard_rows), "shards")
    with atomic_write(fs, join(root, "shards.parquet")) as handle:
        shards.write_parquet(handle)

    counts = {"items": items_total, "records_read": records_read, "records_rejected": records_rejected,
              "samples": manifest.height, "windows_rejected": sum(1 for r in reject_rows if r["stage"] == "quality"),
              "rejects": len(reject_rows), "shards": shards.height,
              "rejected_by_reason": dict(sorted(reasons.items()))}
    build_info = {**fingerprint, "physiofm_version": physiofm.__version__, "kind": corpora.kind_of(corpus),
                  "modalities": list(modalities), "sample_shapes": sample_shapes,
                  "dtype": recipe["output"]["dtype"], "recipe": recipe, "counts": counts,
                  "versions": _versions()}
    write_bytes(fs, join(root, "build.json"), json.dumps(build_info, indent=2, sort_keys=True).encode())
    fs.rm(join(root, STATE), recursive=True)
    return {**counts, "status": "built", "seconds": time.perf_counter() - started, "out": out, "dataset": corpus}
