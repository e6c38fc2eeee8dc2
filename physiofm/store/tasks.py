"""The build's tasks, run by workers of any executor: a unit writes one tar shard and its marker; a Zarr
task fills whole Zarr shards from the tar shards.  Both are idempotent: a task run again replaces its
outputs whole, so a task lost with its worker is simply run again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice

import numpy as np

from physiofm import corpora, preprocess
from physiofm.corpora.base import Item, Record, Reject
from physiofm.io import json_bytes, read_bytes, write_bytes
from physiofm.preprocess.faults import describe
from physiofm.store import amplitude
from physiofm.store import layout as L
from physiofm.store.layout import Layout
from physiofm.store.npy import npy_bytes
from physiofm.store.tar import TarShardWriter, read_named_arrays
from physiofm.store.zarr_arrays import plain_shard_rows, shard_key, write_plain_shard

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


def _batches(iterator: Iterator, size: int | None) -> Iterator[list]:
    """Lists of ``size`` items (all of them when ``size`` is None)."""
    while batch := list(islice(iterator, size)):
        yield batch


def _fault(dataset: str, source: str, record_id: str | None, error: BaseException, stage: str) -> Reject:
    stage, reason = describe(error, stage)
    return Reject(dataset, source, stage, reason, record_id)


def read_guarded(reader, source: str, items: list[Item], dataset: str, chunk: int = BATCH_RECORDS):
    """``reader.read`` over ``items``, ``chunk`` items at a time; an exception becomes rejects, never a crash.

    A chunk whose read raises is read again one item at a time, so only the item that fails
    becomes a reject (stage ``read``, the exception's type and message); the others are read as
    they would have been.  The records come out in item order, as from one ``read`` call.
    """
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        try:
            yield from list(reader.read(source, part))
            continue
        except Exception:  # noqa: BLE001 - a reader bug on one record must not end the build
            pass
        for item in part:
            try:
                yield from list(reader.read(source, [item]))
            except Exception as error:  # noqa: BLE001
                yield _fault(dataset, item.path, item.id, error, "read")


def prepare_guarded(preparer, records: list[Record], recipe: dict):
    """``preparer.prepare`` with a fault boundary per record.

    When the batch raises, each record is prepared alone to find the ones that fail; those become
    rejects (their stage and the exception), and the batch is prepared again without them, so
    the other records' samples are exactly what they would be without the failing ones.
    """
    try:
        return preparer.prepare(records, recipe)
    except Exception as error:  # noqa: BLE001
        batch_error = error
        if len(records) == 1:
            record = records[0]
            return (
                _empty(preparer, recipe),
                [],
                [_fault(record.dataset, record.source, record.record_id, error, "transform")],
            )
    failed: list[Reject] = []
    keep: list[Record] = []
    for record in records:
        try:
            preparer.prepare([record], recipe)
            keep.append(record)
        except Exception as error:  # noqa: BLE001
            failed.append(_fault(record.dataset, record.source, record.record_id, error, "transform"))
    if not failed:  # the batch fails but no record alone does: nothing singles one out, so all are rejected
        keep, failed = [], [_fault(r.dataset, r.source, r.record_id, batch_error, "transform") for r in records]
    if not keep:
        return _empty(preparer, recipe), [], failed
    arrays, metas, rejects = preparer.prepare(keep, recipe)
    return arrays, metas, rejects + failed


def _empty(preparer, recipe: dict) -> dict[str, np.ndarray]:
    return {modality: np.zeros((0,), dtype=recipe["output"]["dtype"]) for modality in preparer.MODALITIES}


def _serialised(
    arrays: dict[str, np.ndarray], metas: list[dict]
) -> Iterator[tuple[list[tuple[dict, dict]], Exception | None]]:
    """Per record (consecutive rows with one ``record_id``): ``(row index, row, tar members)`` of its samples,
    or ``[(row, {})]`` and the exception that serialising one of them raised."""
    start = 0
    while start < len(metas):
        stop = start
        while stop < len(metas) and metas[stop]["record_id"] == metas[start]["record_id"]:
            stop += 1
        try:
            samples = []
            for i in range(start, stop):
                members = {f"{modality}.npy": npy_bytes(values[i]) for modality, values in arrays.items()}
                members["json"] = json_bytes(metas[i])
                samples.append((i, metas[i], members))
            yield samples, None
        except Exception as error:  # noqa: BLE001 - e.g. a label that JSON cannot hold
            yield [(metas[start], {})], error
        start = stop


def _amplitudes(arrays: dict[str, np.ndarray], metas: list[dict], written: list[int], fs: float) -> list[dict]:
    """:func:`physiofm.store.amplitude.window_stats` of the written samples, per modality and channel set."""
    groups: dict[tuple, list[int]] = {}
    for i in written:
        groups.setdefault(tuple(tuple(metas[i][f"{m}_channels"]) for m in arrays), []).append(i)
    return [
        {m: amplitude.window_stats(m, arrays[m][rows], list(names), fs) for m, names in zip(arrays, key)}
        for key, rows in groups.items()
    ]


def run_unit(task: UnitTask) -> dict:
    """Process one unit: write its shard and its marker; return the marker's content.

    Every record passes a fault boundary in each stage (read, lead mapping and transforms,
    quality, serialising its samples): an exception there makes that record a reject and the
    rest is written as it would be without it.  Only faults of the store itself (writing the
    shard or the marker) end the task, leaving nothing visible; the build then stops and resumes
    when run again.
    """
    corpus = corpora.get(task.corpus)
    reader, preparer = corpus.reader, preprocess.preparer(corpus.kind)
    store = Layout(task.out, task.storage_options)
    name = L.shard_name(task.index)
    writer = TarShardWriter(store.fs, store.shard(name))
    rows: list[dict] = []
    rejects: list[Reject] = []
    read = 0
    shapes: dict[str, list[int]] = {}
    amplitudes: list[dict] = []
    size = getattr(preparer, "BATCH_RECORDS", BATCH_RECORDS)
    try:
        for batch in _batches(read_guarded(reader, task.source, task.items, corpus.name), size):
            records = [r for r in batch if isinstance(r, Record)]
            rejects.extend(r for r in batch if isinstance(r, Reject))
            for record in records:
                rejects.extend(record.issues)
            read += len(records)
            arrays, metas, more = prepare_guarded(preparer, records, task.recipe)
            rejects.extend(more)
            if metas and not shapes:
                shapes = {modality: list(values.shape[1:]) for modality, values in arrays.items()}
            written: list[int] = []
            for samples, error in _serialised(arrays, metas):
                if error is not None:
                    meta = samples[0][0]
                    rejects.append(_fault(meta["dataset"], meta["source_path"], meta["record_id"], error, "write"))
                    continue
                for index, meta, members in samples:
                    rows.append({**meta, "shard": name, "shard_pos": writer.samples})
                    writer.add(meta["key"], members)
                    written.append(index)
            amplitudes.extend(_amplitudes(arrays, metas, written, float(task.recipe["signal"]["fs"])))
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
        "amplitude": amplitudes,
    }
    payload = json_bytes(marker)
    _write_marker(store, L.unit_marker(task.index), payload)
    return json.loads(payload)  # exactly what a resumed build reads back


def _write_marker(store: Layout, name: str, payload: bytes) -> None:
    """Write a task's marker, unless the store is already complete (a task orphaned by a dead
    client can outlive the build that replaced it: its outputs are identical, its marker is not wanted).

    Published atomically but without waiting for the disk (an ``fsync`` held a worker 5-7 ms a marker
    here): a crash of the machine can leave a marker empty or short, and the resumed build then runs
    that task again (:func:`physiofm.store.build.read_marker`)."""
    if not store.fs.exists(store.build_info):
        write_bytes(store.fs, store.state(name), payload, durable=False)


def write_zarr(task: ZarrTask) -> dict:
    """Process one Zarr task: write its rows, whole Zarr shards at a time, then its marker.

    Every Zarr object the task writes is hashed as it is written (a recording store, or
    :func:`~physiofm.store.zarr_arrays.write_plain_shard` for uncompressed arrays, which writes Zarr's
    bytes itself: no read-back, the cost is sha256 of the bytes written); the marker lists them (``objects``: name under
    ``zarr/``, bytes, sha256, array, first_row, samples) for ``zarr.parquet``.
    """
    store = Layout(task.out, task.storage_options)
    record: dict[str, dict | None] = {}
    group = store.open_zarr("r+", record=record)
    arrays = {modality: group[modality] for modality in task.modalities}
    plain = {modality: plain_shard_rows(array) for modality, array in arrays.items()}
    extensions = tuple(f"{modality}.npy" for modality in task.modalities)
    cached: tuple[str, dict] | None = None  # a tar shard straddling two Zarr shards is read once
    objects: dict[str, dict] = {}
    for start in range(task.start, task.stop, task.shard_rows):
        stop = min(start + task.shard_rows, task.stop)
        samples: dict[str, list[np.ndarray]] = {modality: [] for modality in task.modalities}
        for name, first, count in task.sources:
            low, high = max(start, first), min(stop, first + count)
            if low >= high:
                continue
            if cached is None or cached[0] != name:
                path = store.shard(name)
                cached = name, read_named_arrays(read_bytes(store.fs, path), path, extensions)
            for modality, extension in zip(task.modalities, extensions):
                held = cached[1][extension]
                if len(held) != count:
                    raise BuildError(f"{name} holds {len(held)} {extension} arrays, its unit marker says {count}")
                samples[modality].extend(held[low - first : high - first])
        for modality, array in arrays.items():
            record.clear()
            layout = plain[modality]
            if layout is not None and start % layout[1] == 0:  # one whole shard object: written directly,
                key = shard_key(modality, start // layout[1], array.ndim)  # from the tar's views, unstacked
                record[key] = write_plain_shard(store.fs, store.zarr_object(key), samples[modality], *layout)
            else:
                array[start:stop] = np.stack(samples[modality])
            for key, written in record.items():
                objects.pop(key, None)
                if written is None:  # deleted (every chunk fill value) or written in part: what is stored, if any
                    store.fs.invalidate_cache()
                    if not store.fs.exists(store.zarr_object(key)):
                        continue
                    size, sha = store.hash_file(store.zarr_object(key))
                    written = {"bytes": size, "sha256": sha}
                objects[key] = {**written, "name": key, "array": modality, "first_row": start, "samples": stop - start}
    marker = {
        "index": task.index,
        "start": task.start,
        "stop": task.stop,
        "objects": [objects[key] for key in sorted(objects)],
    }
    _write_marker(store, L.zarr_marker(task.index), json_bytes(marker))
    return marker
