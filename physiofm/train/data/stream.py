"""Datasets over a physiofm store: exact streaming epochs from the shards, random access to the Zarr arrays.

:class:`StreamingDataset` streams the WebDataset shards (local or ``s3://``, opened with
webdataset's ``gopen``; see :mod:`physiofm.train.data.s3`) and yields ready batches:

=============  ===============================  =========================================================
key            type                             meaning
=============  ===============================  =========================================================
``ecg``        float32 ``(B, C, N, 200)``       in mV (when the store has ECG and it is selected)
``eeg``        float32 ``(B, C, N, 200)``       in units of 100 µV (µV / 100, as CBraMod expects)
``key``        ``list[str]``                    sample keys (``""`` for padding)
``row``        int64 ``(B,)``                   manifest rows (-1 for padding)
``n_patches``  int64 ``(B,)``                   valid (not zero-padded) patches of each window
``pad``        bool ``(B,)``                    True for padding samples: leave them out of losses/metrics
``lead_mask``  bool ``(B, C_ecg)``              ECG channels present in the source (with ECG)
``labels``     float32 ``(B, L)``               the ``labels`` columns, in order; NaN when null or padding
``meta``       ``list[dict]``                   each sample's ``.json`` (with ``meta=True``)
=============  ===============================  =========================================================

Scaling comes from the manifest's ``<modality>_unit`` columns, never from the shards.
Padding samples are all zeros.  :class:`ZarrDataset` returns the same fields per sample
(``torch``'s default collate turns them into the same batches).

How an epoch is planned (every worker of every rank computes the same plan from the manifest):

* The selected samples (manifest ``filters`` and/or ``rows``) are counted per shard.  The
  shards are put in an order (a permutation drawn from ``(seed, epoch)`` when shuffling), and
  that sample sequence is cut into ``world_size × workers`` contiguous *slots* of equal size
  (±1): slot ``rank × workers + worker``.  A shard straddling two slots is read by both, each
  keeping its part; shards without selected samples are never opened; unselected samples are
  skipped by key, by ``seek``, without being read or decoded.
* Every slot is padded to ``ceil(samples / slots)`` positions (one padding sample at most) and
  cut into batches, so every slot yields the same number of batches ``T`` and every rank
  ``workers × T`` (``len(dataset)``); the DataLoader (in order, the default) takes batch ``i``
  of a rank from worker ``i % workers``.  Every real sample is in exactly one batch of one rank.
* Shuffling within a slot: its positions go in windows of ``shuffle_buffer`` samples (rounded
  up to whole batches); the samples read for a window are permuted with a generator seeded by
  ``(seed, epoch, slot, window)``.  Where a sample goes is thus known before it is read, and it
  is read straight into its batch (one copy), holding one window of batches per worker.
* Resuming after ``k`` batches of a rank: each worker knows which positions of its slot were
  delivered; it skips their samples (shards holding only those are not opened) and yields the
  rest of the epoch in the same order as an uninterrupted epoch.

``resampled=True`` (pretraining) makes each slot an endless stream: shards drawn with
replacement (probability proportional to their selected samples) from ``(seed, epoch, slot)``,
all their selected samples shuffled by windows as above; no padding, no length.

Each batch's signals are read into a reused *slot* (:mod:`physiofm.train.data.batches`): private
memory when iterating in the training process; shared memory in the workers of :meth:`loader`,
which persist across epochs and send a batch as its slot number and selection indices (the
training process rebuilds keys, rows, masks and labels from its own index).  Float16 members are
converted to float32 by torch while read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.gopen import gopen

from physiofm.io import StorageOptions
from physiofm.store.npy import header_length, npy_layout
from physiofm.store.tar import ShardError as StreamError
from physiofm.store.tar import iter_members
from physiofm.train.data.batches import BatchLayout, SlotPool, StreamLoader
from physiofm.train.data.index import Filters, Mixture
from physiofm.train.data.s3 import BLOCK_SIZE, RETRIES, register_opener

Visit = tuple[int, int, int]  # (shard index, first selection index, end selection index)


# ---- reading shards --------------------------------------------------------------------------


def _read_npy(stream, size: int, out: np.ndarray, where: str) -> None:
    """Read a ``.npy`` member of ``size`` bytes into the float32 array ``out`` (straight into it when the
    member is float32 too); only float arrays of ``out``'s shape are accepted, never pickles."""
    head = stream.read(12)
    end = header_length(head)
    layout = npy_layout(head + stream.read(end - 12)) if head[:6] == b"\x93NUMPY" and end > 12 else None
    if layout is None:
        raise StreamError(f"{where}: not a version 1 or 2 .npy member")
    shape, fortran, dtype = layout
    nbytes = dtype.itemsize * math.prod(shape)
    if shape != out.shape or dtype.kind != "f" or size - end != nbytes:
        raise StreamError(
            f"{where}: {dtype} array of shape {shape} ({size} bytes); expected floats of shape {out.shape}"
        )
    if dtype == out.dtype and not fortran:
        got = stream.readinto(out.data.cast("B"))
    elif (
        dtype.str[1:] in _TORCH_FLOATS and dtype.isnative and not fortran and (scratch := _scratch(nbytes)) is not None
    ):
        # float16 stores: torch converts about 15x faster than numpy (vectorised half -> float)
        got = stream.readinto(scratch.data)
        if got == nbytes:
            torch.from_numpy(out).copy_(torch.from_numpy(scratch).view(_TORCH_FLOATS[dtype.str[1:]]).view(shape))
    else:
        data = stream.read(nbytes)
        got = len(data)
        if got == nbytes:
            out[...] = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    if got != nbytes:
        raise StreamError(f"{where}: truncated member")


_TORCH_FLOATS = {"f2": torch.float16, "f4": torch.float32, "f8": torch.float64}
_SCRATCH: dict[int, np.ndarray] = {}


def _scratch(nbytes: int) -> np.ndarray | None:
    """A reused buffer of ``nbytes`` bytes for members that need converting (this process's own)."""
    if nbytes not in _SCRATCH:
        if len(_SCRATCH) > 8:
            return None
        _SCRATCH[nbytes] = np.empty(nbytes, np.uint8)
    return _SCRATCH[nbytes]


def _slot_visits(counts: np.ndarray, starts: np.ndarray, order: np.ndarray, slots: int, slot: int) -> list[Visit]:
    """The shard parts of slot ``slot``: the samples of the shards in ``order`` cut in ``slots`` even parts."""
    total = int(counts.sum())
    low, high = slot * total // slots, (slot + 1) * total // slots
    visits, position = [], 0
    for shard in order.tolist():
        count = int(counts[shard])
        first, last = max(low, position), min(high, position + count)
        if first < last:
            base = int(starts[shard]) - position
            visits.append((shard, base + first, base + last))
        position += count
        if position >= high:
            break
    return visits


class _Window:
    """The batches of slot positions ``[first, end)``, filled in place as their samples are read.

    Each batch is one slot of ``pool`` (:mod:`physiofm.train.data.batches`); slots not yet
    delivered when the window is dropped (an interrupted epoch) go back to the pool.
    """

    def __init__(self, dataset: StreamingDataset, first: int, end: int, pool: SlotPool) -> None:
        self.dataset, self.first, self.pool = dataset, first, pool
        step = dataset.batch_size
        self.sizes = [min(step, end - start) for start in range(first, end, step)]
        self.slots = [pool.acquire() for _ in self.sizes]
        self.arrays = {
            modality: [slot.arrays[modality][:n] for slot, n in zip(self.slots, self.sizes)]
            for modality in dataset.index.sample_shapes
        }
        self.js = np.full(end - first, -1, dtype=np.int64)
        self.meta: list[dict] = [{} for _ in range(end - first)] if dataset.meta else []
        self.delivered = 0

    def put(self, position: int, j: int, member: str, size: int, stream, where: str) -> None:
        i = position - self.first
        self.js[i] = j
        if member == "json":
            self.meta[i] = json.loads(stream.read(size))
        else:
            batch, row = divmod(i, self.dataset.batch_size)
            _read_npy(stream, size, self.arrays[member[:-4]][batch][row], where)

    def batches(self) -> Iterator[Any]:
        index, start = self.dataset.index, 0
        for batch, n in enumerate(self.sizes):
            js = self.js[start : start + n]
            pad = js < 0
            for modality, arrays in self.arrays.items():
                values = arrays[batch]
                if pad.any():
                    values[pad] = 0.0
                scale = np.where(pad, 1.0, index.scales[modality][np.maximum(js, 0)]).astype(np.float32)
                if (scale != 1.0).any():
                    values *= scale.reshape(-1, *[1] * (values.ndim - 1))
            meta = self.meta[start : start + n] if self.dataset.meta else None
            start += n
            self.delivered += 1
            yield self.pool.deliver(self.slots[batch], n, js, meta, index)

    def close(self) -> None:
        """Return the slots not delivered to the pool."""
        for slot in self.slots[self.delivered :]:
            self.pool.release(slot)
        self.delivered = len(self.slots)


class StreamingDataset(IterableDataset):
    """Batches streamed from a store's WebDataset shards, exact per epoch (see the module docstring).

    ``store``: local path or ``s3://bucket/prefix``, or a list of them streamed as one (their
    samples in each epoch in proportion to their sizes, or to ``mix`` weights: see
    :class:`physiofm.train.data.index.Mixture`; batches then have ``source``, the store of each
    sample, -1 for padding); ``storage_options`` for fsspec (else the
    AWS environment variables).  ``batch_size``: samples per batch (batches are made here: use
    :meth:`loader`, or a DataLoader with ``batch_size=None`` and ``num_workers`` equal to the
    one given here, ``in_order=True`` and no persistent workers).  ``modalities``: default all
    of the store.  ``labels``: numeric or boolean manifest columns for ``batch["labels"]``.
    ``filters``/``rows``: select samples (``{"subject_id": [...], "q_nan": False}`` or a polars
    expression; manifest row indices, e.g. a fold of :mod:`physiofm.train.protocols`).
    ``rank``/``world_size``: default from ``torch.distributed`` when initialised, else 0/1.
    ``retries``/``block_size``: remote shards are read in ranged requests of ``block_size`` bytes,
    each retried from the first byte not yet delivered at most ``retries`` times
    (:class:`physiofm.train.data.s3.ShardReadError` then names the shard).  ``meta``: add ``batch["meta"]``.
    The order of an epoch depends on ``seed``, ``epoch``, ``world_size``, ``num_workers``,
    ``batch_size`` and ``shuffle_buffer``; resuming needs the same values.
    """

    _loader: tuple[str, StreamLoader] | None = None  # (options, the loader) of loader()
    _pool: SlotPool | None = None  # this process's batch slots
    _ring = None  # RingSpec: set on the copy a StreamLoader gives its workers

    def __init__(
        self,
        store: str | Sequence[str],
        *,
        batch_size: int,
        modalities: Sequence[str] | None = None,
        labels: Sequence[str] = (),
        filters: Filters = None,
        rows: Sequence[int] | np.ndarray | None = None,
        shuffle: bool = True,
        shuffle_buffer: int = 512,
        seed: int = 0,
        epoch: int = 0,
        start_batch: int = 0,
        resampled: bool = False,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        meta: bool = False,
        storage_options: StorageOptions | None = None,
        retries: int = RETRIES,
        block_size: int = BLOCK_SIZE,
        mix: str | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.world_size = (
            world_size if world_size is not None else (torch.distributed.get_world_size() if distributed else 1)
        )
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world_size})")
        # several stores (or a mix): one stream of virtual shards per epoch (physiofm.train.data.index.Mixture)
        self.mixture = Mixture.load(
            store, mix=mix, seed=seed, modalities=modalities, labels=labels, filters=filters, rows=rows,
            storage_options=storage_options,
        )  # fmt: skip
        self.batch_size, self.num_workers = batch_size, num_workers
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.resampled, self.meta, self.retries, self.block_size = resampled, meta, retries, block_size
        self.set_epoch(epoch, start_batch)

    # ---- epochs and resuming ----

    @property
    def num_samples(self) -> int:
        """Selected (real) samples: an exact epoch delivers each once, over all ranks."""
        return len(self.index)

    @property
    def _workers(self) -> int:
        return max(1, self.num_workers)

    @property
    def _slot_length(self) -> int:
        """Positions (samples and padding) of every slot in an exact epoch."""
        return -(-self.num_samples // (self.world_size * self._workers))

    @property
    def batches_per_epoch(self) -> int:
        """Batches every rank yields in a full exact epoch (the same on all ranks)."""
        if self.resampled:
            raise TypeError("a resampled stream is endless: it has no epoch length")
        return self._workers * -(-self._slot_length // self.batch_size)

    def __len__(self) -> int:
        """Batches this rank yields on the next iteration (the epoch's rest after ``start_batch``)."""
        return self.batches_per_epoch - self.start_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting after ``start_batch`` batches of this rank."""
        self.index = self.mixture.index(epoch)
        if start_batch < 0 or (not self.resampled and start_batch > self.batches_per_epoch):
            raise ValueError(f"start_batch {start_batch} is outside the epoch")
        self.epoch, self.start_batch = epoch, start_batch

    def state_dict(self, batches_consumed: int) -> dict[str, int | bool]:
        """Where this rank stands after ``batches_consumed`` batches of the current epoch."""
        return {"epoch": self.epoch, "start_batch": self.start_batch + batches_consumed, **self._plan_config()}

    def load_state_dict(self, state: Mapping[str, int | bool]) -> None:
        """Resume at a :meth:`state_dict`: the next iteration yields exactly the rest of that epoch."""
        changed = {k: (state.get(k), v) for k, v in self._plan_config().items() if state.get(k) != v}
        if changed:
            raise ValueError(f"cannot resume: the epoch plan changed (saved, now): {changed}")
        self.set_epoch(int(state["epoch"]), int(state["start_batch"]))

    def _plan_config(self) -> dict[str, int | bool]:
        return {
            "seed": self.seed,
            "samples": self.num_samples,
            "world_size": self.world_size,
            "num_workers": self._workers,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "shuffle_buffer": self.shuffle_buffer,
            "resampled": self.resampled,
            **self.mixture.plan_config(),
        }

    def loader(self, **kwargs: Any) -> StreamLoader:
        """This dataset's batches, each iteration the current epoch (:class:`~physiofm.train.data.batches.StreamLoader`).

        With workers, batches are assembled in the workers in reused shared-memory slots and the
        workers persist across epochs (``persistent_workers=False`` stops them after each one);
        the same loader is returned until ``kwargs`` or the epoch plan change.  ``pin_memory``
        defaults to whether CUDA is available; other ``kwargs`` pass on to the DataLoader.
        """
        if kwargs.get("in_order") is False:
            raise ValueError("in_order=False breaks the epoch plan and resuming")
        key = (repr(sorted(kwargs.items())), repr(self._plan_config()))
        if self._loader is None or self._loader[0] != key:
            if self._loader is not None:  # stop the old workers before starting new ones
                self._loader[1].close()
            self._loader = None
            self._loader = (key, StreamLoader(self, **kwargs))
        return self._loader[1]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loader": None, "_pool": None}

    def _batch_pool(self) -> SlotPool:
        """This process's batch slots: private in the training process, shared in a loader's workers."""
        info = get_worker_info()
        mode = "inline" if info is None else "packed" if self._ring is not None else "plain"
        layout = BatchLayout(self.index.sample_shapes, self.batch_size)
        pool = self._pool
        if pool is None or pool.mode != mode or pool.layout.parts != layout.parts or pool.pid != os.getpid():
            if mode == "packed":
                pool = SlotPool(layout, self._ring.flags[info.id].numpy(), mode, self._ring.ring, info.id)
            else:  # inline: a window of batches, the one being consumed and the one before it
                capacity = self._window // self.batch_size + 2 if mode == "inline" else 0
                pool = SlotPool(layout, np.zeros(capacity, np.uint8), mode)
            self._pool = pool
        return pool

    # ---- iteration ----

    @property
    def _window(self) -> int:
        """Positions shuffled together: ``shuffle_buffer`` rounded up to whole batches (one batch without shuffle)."""
        return self.batch_size * (max(1, -(-self.shuffle_buffer // self.batch_size)) if self.shuffle else 1)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if self._ring is not None and info is not None:  # a persistent worker: the epoch set in the training process
            epoch, start_batch = self._ring.position.tolist()
            if (epoch, start_batch) != (self.epoch, self.start_batch):
                self.set_epoch(epoch, start_batch)
        if workers != self._workers:
            raise ValueError(
                f"this dataset was made for num_workers={self.num_workers} but the DataLoader has "
                f"{info.num_workers if info else 0}: the epoch plan depends on it"
            )
        for scheme in {u.split("://", 1)[0] for u in self.mixture.urls if "://" in u}:
            register_opener(scheme)
        # The DataLoader takes batch i from worker i % workers; after start_batch batches it starts again at
        # worker 0, so worker w continues the part of the one that would have made batch start_batch + w.
        part = (worker + self.start_batch) % workers
        slots, slot = self.world_size * workers, self.rank * workers + part
        done = -(-(self.start_batch - part) // workers) * self.batch_size  # positions that part has delivered
        if self.resampled:
            yield from self._slot_batches(self._resampled_visits(slot), None, None, slot, done)
            return
        counts = self.index.shard_counts()
        order = (
            np.random.default_rng([self.seed, self.epoch, 1]).permutation(len(counts))
            if self.shuffle
            else np.arange(len(counts))
        )
        visits = _slot_visits(counts, self.index.shard_starts, order, slots, slot)
        real = sum(high - low for _, low, high in visits)
        yield from self._slot_batches(visits, real, self._slot_length, slot, min(done, self._slot_length))

    def _resampled_visits(self, slot: int) -> Iterator[Visit]:
        rng = np.random.default_rng([self.seed, self.epoch, 3, slot])
        counts = self.index.shard_counts()
        starts = self.index.shard_starts
        while True:
            for shard in rng.choice(len(counts), size=256, p=counts / counts.sum()).tolist():
                yield shard, int(starts[shard]), int(starts[shard + 1])

    def _slot_batches(
        self, visits: Iterable[Visit], real: int | None, length: int | None, slot: int, done: int
    ) -> Iterator[dict[str, Any]]:
        """The batches of a slot after its first ``done`` positions.

        Positions come in windows of ``_window``; window ``w`` holds the samples read for it (read
        positions ``w × window …``) in an order drawn from ``(seed, epoch, slot, w)``, so where any
        sample goes is known before it is read, and it is read straight into its batch.  Positions
        from ``real`` on are padding; the slot ends at ``length`` (None: endless).
        """
        size = self._window
        window = done // size
        pool = self._batch_pool()
        members = self._members(visits, window * size)
        ahead = next(members, None)
        while length is None or window * size < length:
            low = window * size
            high = low + size if length is None else min(low + size, length)
            real_high = high if real is None else min(high, real)
            first = max(low, done)
            count = max(0, real_high - low)
            rng = np.random.default_rng([self.seed, self.epoch, 2, slot, window])
            order = rng.permutation(count) if self.shuffle else np.arange(count)
            batches = _Window(self, first, high, pool)
            try:
                while ahead is not None and ahead[0] < real_high:
                    position, j, member, member_size, stream, where = ahead
                    if (target := low + int(order[position - low])) >= first:
                        batches.put(target, j, member, member_size, stream, where)
                    ahead = next(members, None)
                if (batches.js >= 0).sum() != max(0, real_high - first):
                    raise StreamError(f"slot {slot} of epoch {self.epoch}: the shards ran out before the manifest did")
                yield from batches.batches()
            finally:
                batches.close()
            window += 1

    def _members(self, visits: Iterable[Visit], first: int) -> Iterator[tuple[int, int, str, int, Any, str]]:
        """``(read position, selection index, member, size, stream, where)`` of the members to read, in order.

        Samples before read position ``first`` are skipped, and shards holding only those are not
        opened; so are unselected samples and members (by name, without reading them).
        """
        expected = tuple(f"{m}.npy" for m in self.index.modalities) + (("json",) if self.meta else ())
        position = 0
        for shard, low, high in visits:
            start, position = position, position + high - low
            if position <= first:
                continue
            keys = {self.index.keys[j]: (start + j - low, j) for j in range(low + max(0, first - start), high)}
            left = dict.fromkeys(keys, len(expected))
            url = self.index.shard_url(shard)
            with gopen(
                url,
                "rb",
                storage_options=self.index.storage_options,
                size=int(self.index.shard_bytes[shard]),
                retries=self.retries,
                block_size=self.block_size,
            ) as stream:
                for name, size in iter_members(stream, url):
                    for member in expected:
                        cut = -len(member) - 1
                        if name.endswith(member) and name[cut] == "." and (key := name[:cut]) in left:
                            yield (*keys[key], member, size, stream, f"{url}:{name}")
                            left[key] -= 1
                            if not left[key]:
                                del left[key]
                            break
                    if not left:
                        break
            if left:
                raise StreamError(
                    f"{url}: {len(left)} sample(s) of the manifest are missing or incomplete in the "
                    f"shard (first: {next(iter(left))!r})"
                )
