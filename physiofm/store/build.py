"""The build: a source tree in, one store out (WebDataset shards, Zarr arrays, Parquet tables).

How a build stays correct when it is killed, resumed, or run with any number of jobs:

* The plan is fixed before any work: the corpus lists its items (sorted), and items are
  grouped into *units* of about ``shard_size`` samples.  Unit ``k`` writes exactly one shard,
  ``wds/shard-{k:06d}.tar``; nothing about the plan depends on ``--jobs``.
* A unit is processed by one process (a worker of the executor): it reads its records,
  transforms them in batches, streams samples into its shard (published atomically) and
  then writes its marker ``_build/unit-{k:06d}.json`` (rows and rejects), also atomically.
  A unit with a marker is done; a resumed build skips it.
* When every unit is done, the row count of each unit (hence where its samples go) is known:
  the parent creates the Zarr arrays at their final size and hands out *Zarr tasks*, each
  filling whole Zarr shards (``zarr_shard_rows`` samples) from the tar shards that hold them,
  then writing its marker ``_build/zarr-{j:06d}.json``.  Tasks touch disjoint Zarr objects.
* The parent (the client) writes only small things: the plan, the Parquet tables, and
  ``build.json`` last.  ``build.json`` marks a complete store; ``_build/`` is removed after it.
* Units and Zarr tasks run on any :class:`concurrent.futures.Executor`: a local process pool
  by default, or a Dask cluster (:mod:`physiofm.store.executors`).  A task that dies with
  its worker is run again from scratch: its outputs are replaced whole, so nothing is lost or
  duplicated, and the store is byte-identical whatever ran it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from importlib import metadata
from itertools import islice

import numpy as np
import polars as pl

import physiofm
from physiofm import corpora, preprocess
from physiofm.corpora.base import Item, Record, Reject
from physiofm.io import join, json_bytes, url_to_fs, write_bytes
from physiofm.preprocess.recipe import load_recipe, merge, recipe_hash
from physiofm.store import layout as L
from physiofm.store import schema
from physiofm.store.layout import Layout
from physiofm.store.npy import npy_bytes
from physiofm.store.tar import TarShardWriter, read_named_arrays
from physiofm.store.zarr_arrays import create_zarr_array

BATCH_RECORDS = 64  # records transformed together: bounds a worker's memory, whatever the shard size


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


@dataclass
class ZarrTask:
    """Fill Zarr rows ``[start, stop)`` of every modality from the tar shards that hold them."""

    index: int
    out: str
    modalities: tuple[str, ...]
    start: int
    stop: int
    shard_rows: int
    sources: list[tuple[str, int, int]]  # (tar shard name, its first row, its samples), overlapping rows
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


def run_unit(task: UnitTask) -> dict:
    """Process one unit: write its shard and its marker; return the marker's content."""
    corpus = corpora.get(task.corpus)
    reader, preparer = corpus.reader, preprocess.preparer(corpus.kind)
    store = Layout(task.out, task.storage_options)
    name = L.shard_name(task.index)
    writer = TarShardWriter(store.fs, store.shard(name))
    rows: list[dict] = []
    rejects: list[Reject] = []
    read = 0
    shapes: dict[str, list[int]] = {}
    try:
        for batch in _batches(
            iter(reader.read(task.source, task.items)), getattr(preparer, "BATCH_RECORDS", BATCH_RECORDS)
        ):
            records = [r for r in batch if isinstance(r, Record)]
            rejects.extend(r for r in batch if isinstance(r, Reject))
            read += len(records)
            arrays, metas, more = preparer.prepare(records, task.recipe)
            rejects.extend(more)
            if metas and not shapes:
                shapes = {modality: list(values.shape[1:]) for modality, values in arrays.items()}
            for i, meta in enumerate(metas):
                members = {f"{modality}.npy": npy_bytes(values[i]) for modality, values in arrays.items()}
                members["json"] = json_bytes(meta)
                rows.append({**meta, "shard": name, "shard_pos": writer.samples})
                writer.add(meta["key"], members)
    except BaseException:
        writer.abort()
        raise
    info = writer.close()
    marker = {
        "index": task.index,
        "shard": asdict(info) if info else None,
        "records_read": read,
        "items": len(task.items),
        "sample_shapes": shapes,
        "rows": rows,
        "rejects": [asdict(r) for r in rejects],
    }
    payload = json_bytes(marker)
    _write_marker(store, L.unit_marker(task.index), payload)
    return json.loads(payload)  # exactly what a resumed build reads back


def _write_marker(store: Layout, name: str, payload: bytes) -> None:
    """Write a task's marker, unless the store is already complete (a task orphaned by a dead
    client can outlive the build that replaced it: its outputs are identical, its marker is not wanted)."""
    if not store.fs.exists(store.build_info):
        write_bytes(store.fs, store.state(name), payload)


def write_zarr(task: ZarrTask) -> dict:
    """Process one Zarr task: write its rows, whole Zarr shards at a time, then its marker."""
    store = Layout(task.out, task.storage_options)
    group = store.open_zarr("r+")
    arrays = {modality: group[modality] for modality in task.modalities}
    extensions = tuple(f"{modality}.npy" for modality in task.modalities)
    cached: tuple[str, dict] | None = None  # a tar shard straddling two Zarr shards is read once
    for start in range(task.start, task.stop, task.shard_rows):
        stop = min(start + task.shard_rows, task.stop)
        samples: dict[str, list[np.ndarray]] = {modality: [] for modality in task.modalities}
        for name, first, count in task.sources:
            low, high = max(start, first), min(stop, first + count)
            if low >= high:
                continue
            if cached is None or cached[0] != name:
                path = store.shard(name)
                with store.fs.open(path, "rb") as handle:
                    cached = name, read_named_arrays(handle, path, extensions)
            for modality, extension in zip(task.modalities, extensions):
                held = cached[1][extension]
                if len(held) != count:
                    raise BuildError(f"{name} holds {len(held)} {extension} arrays, its unit marker says {count}")
                samples[modality].extend(held[low - first : high - first])
        for modality, array in arrays.items():
            array[start:stop] = np.stack(samples[modality])
    marker = {"index": task.index, "start": task.start, "stop": task.stop}
    _write_marker(store, L.zarr_marker(task.index), json_bytes(marker))
    return marker


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "physiofm": physiofm.__version__}
    for name in ("numpy", "scipy", "wfdb", "zarr", "polars", "pyarrow", "h5py", "mne"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _fingerprint(corpus: str, source: str, recipe: dict) -> dict:
    return {
        "dataset": corpus,
        "source": str(source),
        "recipe_hash": recipe_hash(recipe),
        "schema_version": schema.SCHEMA_VERSION,
    }


def _remove_unpublished(store: Layout) -> None:
    """Remove shards a killed worker left under their temporary names (never published)."""
    for leftover in store.fs.glob(store.path(L.WDS, L.UNPUBLISHED)):
        store.fs.rm(leftover)


def _shard_rows(ordered: list[dict]) -> list[dict]:
    """One ``shards.parquet`` row per written shard, in store order, with its ``first_row``."""
    rows, first = [], 0
    for marker in ordered:
        if marker["shard"]:
            rows.append({**marker["shard"], "first_row": first})
            first += marker["shard"]["samples"]
    return rows


def _default_executor(jobs: int) -> Executor | None:
    if jobs <= 1:
        return None
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context)


def _run(function: Callable[[object], dict], tasks: list, executor: Executor | None) -> Iterator[dict]:
    """``function(task)`` for every task, results as they complete (in order without an executor)."""
    if executor is None:
        for task in tasks:
            yield function(task)
        return
    futures = [executor.submit(function, task) for task in tasks]
    for future in as_completed(futures):
        yield future.result()


def _source_exists(source: str) -> bool:
    try:
        fs, path = url_to_fs(source)
        return fs.exists(path)
    except (OSError, ValueError):
        return False


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
    if not _source_exists(source):
        raise BuildError(f"source {source} does not exist")
    corpus = corpora.detect(source, kind) if fmt == "auto" else corpora.get(fmt)
    overrides = dict(recipe_overrides or {})
    output = dict(overrides.get("output", {}))
    if shard_size:
        output["shard_size"] = int(shard_size)
    if dtype:
        output["dtype"] = dtype
    if output:
        overrides["output"] = output
    resolved = merge(recipe, overrides) if isinstance(recipe, dict) else load_recipe(recipe or corpus.recipe, overrides)
    fingerprint = _fingerprint(corpus.name, source, resolved)

    store = Layout(out, storage_options or {})
    done_build = store.read_info()
    if done_build is not None:
        if all(done_build.get(k) == v for k, v in fingerprint.items()):
            return {
                **done_build["counts"],
                "status": "up-to-date",
                "seconds": time.perf_counter() - started,
                "out": out,
                "dataset": corpus.name,
            }
        raise BuildError(
            f"{out} already holds a different build (dataset {done_build.get('dataset')}, "
            f"recipe {done_build.get('recipe_hash', '')[:12]}); choose another output"
        )
    plan = store.read_json(store.state(L.PLAN))
    if plan is not None and plan["fingerprint"] != fingerprint:
        raise BuildError(
            f"{out} holds an unfinished build of another source or recipe; remove it or choose another output"
        )

    items = corpus.reader.list_items(source)
    if not items:
        raise BuildError(f"nothing readable in {source}: no {corpus.name} records found")
    units = plan_units(items, int(resolved["output"]["shard_size"]))
    if plan is None:
        write_bytes(store.fs, store.state(L.PLAN), json_bytes({"fingerprint": fingerprint, "units": len(units)}))
    _remove_unpublished(store)
    markers: dict[int, dict] = {}
    for path in store.fs.glob(store.state(L.UNIT_MARKERS)):
        marker = json.loads(store.fs.cat_file(path))
        markers[marker["index"]] = marker
    tasks = [
        UnitTask(i, corpus.name, source, out, resolved, unit, dict(storage_options or {}))
        for i, unit in enumerate(units)
        if i not in markers
    ]

    modalities = tuple(preprocess.preparer(corpus.kind).MODALITIES)
    total_units = len(units)
    own_executor = executor is None
    executor = executor or _default_executor(jobs or os.cpu_count() or 1)
    try:
        if progress:
            progress("units", len(markers), total_units)
        for marker in _run(run_unit, tasks, executor):
            markers[marker["index"]] = marker
            if progress:
                progress("units", len(markers), total_units)
        ordered = [markers[i] for i in range(total_units)]
        zarr_tasks, shapes = _plan_zarr(store, ordered, modalities, resolved["output"])
        done = total = len(zarr_tasks)
        zarr_tasks = [t for t in zarr_tasks if not store.fs.exists(store.state(L.zarr_marker(t.index)))]
        done -= len(zarr_tasks)
        if progress:
            progress("zarr", done, total)
        for _ in _run(write_zarr, zarr_tasks, executor):
            done += 1
            if progress:
                progress("zarr", done, total)
    finally:
        if own_executor and executor is not None:
            executor.shutdown(cancel_futures=True)
    group = store.open_zarr("r") if shapes else {}
    zarr_rows = {modality: group[modality].shape[0] for modality in shapes}
    return _finish(store, source, corpus, modalities, resolved, fingerprint, ordered, zarr_rows, shapes, started)


def _plan_zarr(
    store: Layout, ordered: list[dict], modalities: tuple[str, ...], output: dict
) -> tuple[list[ZarrTask], dict[str, list[int]]]:
    """Create the Zarr arrays at their final size (once: a resumed build keeps them); return the tasks.

    A task covers about one tar shard's worth of rows, rounded to whole Zarr shards.
    """
    sources = [(row["shard"], row["first_row"], row["samples"]) for row in _shard_rows(ordered)]
    shapes: dict[str, list[int]] = next((m["sample_shapes"] for m in ordered if m["shard"]), {})
    rows = sum(samples for _, _, samples in sources)
    shard_rows = int(output["zarr_shard_rows"])
    plan = {"rows": rows, "sample_shapes": shapes, "shard_rows": shard_rows}
    if rows and store.read_json(store.state(L.ZARR_PLAN)) != plan:
        group = store.open_zarr("w")
        for modality in modalities:
            create_zarr_array(
                group,
                modality,
                rows,
                tuple(shapes[modality]),
                output["dtype"],
                int(output["zarr_chunk_rows"]),
                shard_rows,
                output["zarr_compression"],
            )
        for stale in store.fs.glob(store.state(L.ZARR_MARKERS)):
            store.fs.rm(stale)
        write_bytes(store.fs, store.state(L.ZARR_PLAN), json_bytes(plan))
    step = shard_rows * max(1, round(int(output["shard_size"]) / shard_rows))
    tasks = []
    for index, start in enumerate(range(0, rows, step)):
        stop = min(start + step, rows)
        overlapping = [s for s in sources if s[1] < stop and s[1] + s[2] > start]
        tasks.append(
            ZarrTask(index, store.url, modalities, start, stop, shard_rows, overlapping, dict(store.storage_options))
        )
    return tasks, shapes


def _finish(
    store: Layout,
    source: str,
    corpus,
    modalities: tuple[str, ...],
    recipe: dict,
    fingerprint: dict,
    ordered: list[dict],
    zarr_rows: dict[str, int],
    sample_shapes: dict,
    started: float,
) -> dict:
    rows = [row for marker in ordered for row in marker["rows"]]
    reject_rows = [r for marker in ordered for r in marker["rejects"]]
    rejects = pl.DataFrame(reject_rows, infer_schema_length=None) if reject_rows else schema.empty_frame("rejects")
    store.write_table("rejects", schema.conform(rejects, "rejects"))
    reasons = Counter(r["reason"] if r["stage"] != "quality" else f"quality: {r['reason']}" for r in reject_rows)
    records_rejected = len({(r["source"], r["record_id"]) for r in reject_rows if r["stage"] != "quality"})
    records_read = sum(m["records_read"] for m in ordered)
    items_total = sum(m["items"] for m in ordered)
    if not rows:
        top = "; ".join(f"{reason} ({n})" for reason, n in reasons.most_common(3))
        raise BuildError(
            f"every record of {source} was rejected ({len(reject_rows)} rejects): {top}. "
            f"See {join(store.url, L.TABLES['rejects'])}"
        )

    manifest = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.int_range(0, pl.len(), dtype=pl.Int64).alias("zarr_row")
    )
    manifest = schema.conform(manifest, "manifest", modalities)
    for modality, count in zarr_rows.items():
        if count != manifest.height:
            raise BuildError(f"internal error: zarr {modality} has {count} rows, manifest {manifest.height}")
    store.write_table("manifest", manifest)
    shards = schema.conform(pl.DataFrame(_shard_rows(ordered)), "shards")
    store.write_table("shards", shards)

    counts = {
        "items": items_total,
        "records_read": records_read,
        "records_rejected": records_rejected,
        "samples": manifest.height,
        "windows_rejected": sum(1 for r in reject_rows if r["stage"] == "quality"),
        "rejects": len(reject_rows),
        "shards": shards.height,
        "rejected_by_reason": dict(sorted(reasons.items())),
    }
    build_info = {
        **fingerprint,
        "physiofm_version": physiofm.__version__,
        "kind": corpus.kind,
        "modalities": list(modalities),
        "sample_shapes": sample_shapes,
        "dtype": recipe["output"]["dtype"],
        "recipe": recipe,
        "counts": counts,
        "versions": _versions(),
    }
    _remove_unpublished(store)
    write_bytes(store.fs, store.build_info, json.dumps(build_info, indent=2, sort_keys=True).encode())
    store.fs.rm(store.state(), recursive=True)
    return {
        **counts,
        "status": "built",
        "seconds": time.perf_counter() - started,
        "out": store.url,
        "dataset": corpus.name,
    }
