"""The build: a source tree in, one store out (WebDataset shards, Zarr arrays, Parquet tables).

How a build stays correct when it is killed, resumed, or run with any number of jobs:

* The plan is fixed before any work: the corpus lists its items (sorted), and items are
  grouped into *units* of about ``shard_size`` samples.  Unit ``k`` writes exactly one shard,
  ``wds/shard-{k:06d}.tar``; nothing about the plan depends on ``--jobs``.
* A unit is processed by one process (a worker of the executor): it reads its records,
  transforms them in batches, streams samples into its shard (published atomically) and
  then writes its marker ``_build/unit-{k:06d}.json`` (rows and rejects, the shard's size and
  sha256), also atomically.  A unit with a marker is done; a resumed build skips it, unless its
  shard is not the size the marker says, or the marker cannot be read (shards and markers are
  renamed into place without waiting for the disk, so only a crash of the machine can leave one
  empty or short): then the unit runs again.
* When every unit is done, the row count of each unit (hence where its samples go) is known:
  the parent creates the Zarr arrays at their final size and hands out *Zarr tasks*, each
  filling whole Zarr shards (``zarr_shard_rows`` samples) from the tar shards that hold them,
  then writing its marker ``_build/zarr-{j:06d}.json``, which lists the objects it wrote with
  their size and sha256 (hashed as they were written).  Tasks touch disjoint Zarr objects.
* The parent (the client) writes only small things: the plan, the Parquet tables (the manifest,
  rejects and shards tables from the unit markers while the Zarr tasks run; ``zarr.parquet``, the
  index of the Zarr objects, from one listing of ``zarr/`` and the Zarr markers), and
  ``build.json`` last, with the size, sha256 and columns of every table it wrote.  ``build.json``
  marks a complete store; ``_build/`` is removed after it.
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
from dataclasses import dataclass
from importlib import metadata

import polars as pl

import physiofm
from physiofm import corpora, preprocess
from physiofm.corpora.base import Item
from physiofm.io import join, json_bytes, url_to_fs, write_bytes
from physiofm.preprocess.recipe import load_recipe, merge, recipe_hash
from physiofm.store import layout as L
from physiofm.store import schema
from physiofm.store.layout import Layout
from physiofm.store.tasks import BuildError, UnitTask, ZarrTask, run_unit, write_zarr
from physiofm.store.zarr_arrays import create_zarr_array

__all__ = ["BuildError", "build", "plan_units"]


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


def read_marker(store: Layout, path: str) -> dict | None:
    """A task's marker, or None when there is none or it cannot be read (then it is removed and its task
    runs again): markers are renamed into place without ``fsync``, so a crash of the machine can leave
    one empty or cut short."""
    try:
        marker = json.loads(store.fs.cat_file(path))
    except FileNotFoundError:
        return None
    except ValueError:  # not JSON (empty, cut short) or not text
        marker = None
    if isinstance(marker, dict) and isinstance(marker.get("index"), int):
        return marker
    store.fs.rm(path)
    return None


def _remove_unpublished(store: Layout) -> None:
    """Remove shards a killed worker left under their temporary names (never published).

    A task orphaned by a dead client may still be running (on a Dask worker): between the listing and
    the removal it can publish or drop its temporary file, which is then simply gone."""
    for leftover in store.fs.glob(store.path(L.WDS, L.UNPUBLISHED)):
        try:
            store.fs.rm(leftover)
        except FileNotFoundError:
            pass


def _shard_rows(ordered: list[dict]) -> list[dict]:
    """One ``shards.parquet`` row per written shard, in store order, with its ``first_row``."""
    rows, first = [], 0
    for marker in ordered:
        if marker["shard"]:
            rows.append({**marker["shard"], "first_row": first})
            first += marker["shard"]["samples"]
    return rows


def _worker_setup() -> None:
    """In each worker of the build's own process pool: keep freed memory for the next batch.

    glibc hands blocks over its mmap threshold straight back to the system and maps them again,
    zero-filled, for the next batch (page faults, time in the kernel); raising the mmap and trim
    thresholds keeps that memory in the worker's heap.  Measured on a 2,000-record ECG build with 2
    workers: kernel time 1.7-2.2 s -> 1.1-1.4 s, the build 3-9 % faster.  Only the build's own
    workers are changed, never the caller's process; on a C library other than glibc this does nothing.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 256 * 2**20)
    mallopt(m_trim_threshold, 512 * 2**20)
    mallopt(m_top_pad, 64 * 2**20)


def _worker_imports() -> None:
    """What every unit needs and the parent has not imported: ``scipy.fft`` (the recipes' filter pass,
    0.3-0.5 s), imported as the worker starts, while the parent lists the source."""
    import scipy.fft  # noqa: F401


def _worker_start() -> None:
    _worker_setup()
    _worker_imports()


def _default_executor(jobs: int) -> Executor | None:
    if jobs <= 1:
        return None
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_start)
    executor.submit(int)  # the pool forks its workers on the first task: now, not after the listing
    return executor


def _start(function: Callable[[object], dict], tasks: list, executor: Executor | None) -> Iterator[dict]:
    """``function(task)`` for every task, results as they complete.  With an executor every task is
    submitted now, so the workers start on them while the caller goes on; without one they run in
    order, as the results are taken."""
    if executor is None:
        return (function(task) for task in tasks)
    futures = [executor.submit(function, task) for task in tasks]
    return (future.result() for future in as_completed(futures))


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

    # the preparer's modules first, so that the workers inherit them (the EEG preparer imports scipy.fft)
    modalities = tuple(preprocess.preparer(corpus.kind).MODALITIES)
    own_executor = executor is None
    workers = jobs or os.cpu_count() or 1
    after_listing = getattr(corpus.reader, "LOADED_BY_LISTING", False)  # workers share what listing loaded
    if own_executor and not after_listing:  # start now: the workers import what units need during the listing
        executor = _default_executor(workers)
    try:
        items = corpus.reader.list_items(source)
        if not items:
            raise BuildError(f"nothing readable in {source}: no {corpus.name} records found")
        units = plan_units(items, int(resolved["output"]["shard_size"]))
        if plan is None:
            write_bytes(store.fs, store.state(L.PLAN), json_bytes({"fingerprint": fingerprint, "units": len(units)}))
        _remove_unpublished(store)
        markers: dict[int, dict] = {}
        for path in store.fs.glob(store.state(L.UNIT_MARKERS)):
            if (marker := read_marker(store, path)) is not None:
                markers[marker["index"]] = marker
        if markers:  # shards are published without fsync: after a crash of the machine one may be short
            sizes = store.shard_sizes()
            for index, marker in list(markers.items()):
                if marker["shard"] and sizes.get(marker["shard"]["shard"]) != marker["shard"]["bytes"]:
                    del markers[index]  # its unit runs again and replaces the shard whole
        tasks = [
            UnitTask(i, corpus.name, source, out, resolved, unit, dict(storage_options or {}))
            for i, unit in enumerate(units)
            if i not in markers
        ]

        total_units = len(units)
        if own_executor and after_listing:
            _worker_imports()  # here, once before the fork, rather than in every worker
            executor = _default_executor(workers)
        if progress:
            progress("units", len(markers), total_units)
        for marker in _start(run_unit, tasks, executor):
            markers[marker["index"]] = marker
            if progress:
                progress("units", len(markers), total_units)
        ordered = [markers[i] for i in range(total_units)]
        zarr_tasks, shapes = _plan_zarr(store, ordered, modalities, resolved["output"])
        total = len(zarr_tasks)
        zarr_markers = {t.index: read_marker(store, store.state(L.zarr_marker(t.index))) for t in zarr_tasks}
        zarr_markers = {index: marker for index, marker in zarr_markers.items() if marker is not None}
        zarr_tasks = [t for t in zarr_tasks if t.index not in zarr_markers]
        if progress:
            progress("zarr", len(zarr_markers), total)
        running = _start(write_zarr, zarr_tasks, executor)
        tables = _write_tables(store, source, modalities, ordered)  # while the workers fill the Zarr arrays
        for marker in running:
            zarr_markers[marker["index"]] = marker
            if progress:
                progress("zarr", len(zarr_markers), total)
    finally:
        if own_executor and executor is not None:
            executor.shutdown(cancel_futures=True)
    group = store.open_zarr("r") if shapes else {}
    zarr_rows = {modality: group[modality].shape[0] for modality in shapes}
    zarr_ordered = [zarr_markers[index] for index in sorted(zarr_markers)]
    return _finish(store, corpus, modalities, resolved, fingerprint, tables, zarr_rows, shapes, started, zarr_ordered)


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


def _zarr_index(store: Layout, zarr_markers: list[dict]) -> pl.DataFrame:
    """``zarr.parquet``: every object under ``zarr/`` (one listing) with its size and sha256.

    Array shard objects take the size and sha256 their Zarr task hashed while writing them (its
    marker's ``objects``); the rest (the group's and arrays' ``zarr.json``, objects of a marker
    written before markers listed them) are read and hashed here: a few small files.
    """
    store.fs.invalidate_cache()
    listed = store.list_zarr()
    recorded = {o["name"]: (m["index"], o) for m in zarr_markers for o in m.get("objects", ())}
    for name, (index, entry) in recorded.items():
        if listed.get(name, {}).get("size") != entry["bytes"]:
            store.fs.rm(store.state(L.zarr_marker(index)))  # the resumed build writes that task again
            raise BuildError(
                f"zarr/{name} is not what its Zarr task wrote ({listed.get(name, {}).get('size')} bytes, "
                f"the task wrote {entry['bytes']}); run the build again to rewrite it"
            )
    rows = []
    for name in sorted(listed):
        if name in recorded:
            entry = recorded[name][1]
            rows.append({k: entry[k] for k in ("name", "bytes", "sha256", "array", "first_row", "samples")})
        else:
            size, sha = store.hash_file(store.zarr_object(name))
            rows.append({"name": name, "bytes": size, "sha256": sha})
    rows.sort(key=lambda r: (r.get("array") is not None, r.get("array") or "", r.get("first_row") or 0, r["name"]))
    return schema.conform(pl.DataFrame(rows, infer_schema_length=None), "zarr")


@dataclass
class _Tables:
    """What :func:`_write_tables` wrote (``build.json``'s ``tables`` so far), counted and summarised."""

    tables: dict[str, dict]
    counts: dict
    samples: int
    amplitude: dict | None  # build.json's "amplitude", None when a marker has no statistics


def _write_tables(store: Layout, source: str, modalities: tuple[str, ...], ordered: list[dict]) -> _Tables:
    """Write ``rejects.parquet``, ``manifest.parquet`` and ``shards.parquet`` from the unit markers (in
    unit order), count the build and summarise its amplitude statistics.  None of it depends on what
    the Zarr tasks write, so the parent does it while they run; a build interrupted after this writes
    the same tables again."""
    rows = [row for marker in ordered for row in marker["rows"]]
    reject_rows = [r for marker in ordered for r in marker["rejects"]]
    rejects = schema.rows_frame(reject_rows) if reject_rows else schema.empty_frame("rejects")
    tables = {L.TABLES["rejects"]: store.write_table("rejects", schema.conform(rejects, "rejects"))}
    reasons = Counter(r["reason"] if r["stage"] != "quality" else f"quality: {r['reason']}" for r in reject_rows)
    kept = {(row["source_path"], row["record_id"]) for row in rows}  # a masked lead is a reject of a kept record
    whole = {(r["source"], r["record_id"]) for r in reject_rows if r["window_index"] is None}
    records_rejected = len(whole - kept)
    records_read = sum(m["records_read"] for m in ordered)
    items_total = sum(m["items"] for m in ordered)
    if not rows:
        top = "; ".join(f"{reason} ({n})" for reason, n in reasons.most_common(3))
        raise BuildError(
            f"every record of {source} was rejected ({len(reject_rows)} rejects): {top}. "
            f"See {join(store.url, L.TABLES['rejects'])}"
        )

    manifest = schema.rows_frame(rows).with_columns(pl.int_range(0, pl.len(), dtype=pl.Int64).alias("zarr_row"))
    manifest = schema.conform(manifest, "manifest", modalities)
    tables[L.TABLES["manifest"]] = store.write_table("manifest", manifest)
    shards = schema.conform(pl.DataFrame(_shard_rows(ordered)), "shards")
    tables[L.TABLES["shards"]] = store.write_table("shards", shards)
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
    # Amplitude statistics (physiofm.store.amplitude): per-batch stats from the unit markers, combined.
    # A build resumed from markers written before they carried statistics leaves them out rather than
    # summarising part of the store; validate then notes that they are missing.
    from physiofm.store import amplitude

    summary = None
    if all("amplitude" in marker for marker in ordered):
        summary = amplitude.summarise(batch for marker in ordered for batch in marker["amplitude"])
    return _Tables(tables, counts, manifest.height, summary)


def _finish(
    store: Layout,
    corpus,
    modalities: tuple[str, ...],
    recipe: dict,
    fingerprint: dict,
    written: _Tables,
    zarr_rows: dict[str, int],
    sample_shapes: dict,
    started: float,
    zarr_markers: list[dict] = (),
) -> dict:
    """``zarr.parquet`` from the Zarr tasks' markers, then ``build.json``, last: the store is complete."""
    for modality, count in zarr_rows.items():
        if count != written.samples:
            raise BuildError(f"internal error: zarr {modality} has {count} rows, manifest {written.samples}")
    tables = {**written.tables, L.TABLES["zarr"]: store.write_table("zarr", _zarr_index(store, list(zarr_markers)))}
    build_info = {
        **fingerprint,
        "physiofm_version": physiofm.__version__,
        "kind": corpus.kind,
        "modalities": list(modalities),
        "sample_shapes": sample_shapes,
        "dtype": recipe["output"]["dtype"],
        "recipe": recipe,
        "counts": written.counts,
        "versions": _versions(),
        # size, sha256, rows and columns (name, dtype, digest of the values) of every table written:
        # validate names any later edit of a table from these
        "tables": tables,
    }
    if written.amplitude is not None:
        build_info["amplitude"] = written.amplitude
    _remove_unpublished(store)
    write_bytes(store.fs, store.build_info, json.dumps(build_info, indent=2, sort_keys=True).encode())
    store.fs.rm(store.state(), recursive=True)
    return {
        **written.counts,
        "status": "built",
        "seconds": time.perf_counter() - started,
        "out": store.url,
        "dataset": corpus.name,
    }
