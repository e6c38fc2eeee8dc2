"""Batch buffers that are filled in place and reused, and the loader that hands them from workers to training.

A :class:`~physiofm.train.data.stream.StreamingDataset` reads every sample straight into its
place in a batch.  The batches' signal arrays live in *slots*: one flat buffer per batch holding
every modality at ``batch_size`` rows (:class:`BatchLayout`).  A :class:`SlotPool` keeps up to
``capacity`` slots and reuses them, so a slot's pages are faulted in once, not once per batch
(a fresh 6-MiB shared-memory tensor costs 5-9 ms to create and fill on these machines, a reused
one 0.4 ms).

Who owns a slot is one byte per slot (``flags``): 1 from when the pool hands it out for a batch
until that batch is dropped by whoever consumes it, 0 when free.  A batch's tensors are views of
one storage that holds a *lease* (a numpy view of the slot); ``weakref.finalize`` on the lease
frees the slot when the last view of the batch dies, so a batch kept by the caller (``list(loader)``,
a batch stored for later) is never overwritten: the pool then allocates a one-off buffer instead.

Three modes, chosen per process by the dataset:

* ``inline`` (iterating in the training process, ``num_workers=0``): private memory, batches
  are dicts of leased tensors;
* ``packed`` (DataLoader workers started by :class:`StreamLoader`): slots in shared memory,
  allocated by the worker and sent to the training process once; afterwards a batch crosses the
  process boundary as a :class:`Packet` of a few hundred bytes (slot number, selection indices),
  and the training process rebuilds its fields (keys, rows, labels, masks) from its own copy of
  the index: no per-sample Python objects, no tensor pickling, no file descriptor passing;
* ``plain`` (workers of a DataLoader made by the caller): a fresh shared-memory buffer per batch,
  as torch's DataLoader expects.

:class:`StreamLoader` (what ``StreamingDataset.loader()`` returns) keeps its workers alive across
epochs: ``set_epoch``/``load_state_dict`` on the dataset reach them through a shared position
tensor read when an epoch's iteration starts.  With ``pin_memory`` (default: when CUDA is
available), torch's pin-memory thread copies each packet's tensors into pinned memory and frees
the slot at once.
"""

from __future__ import annotations

import copy
import math
import os
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from physiofm.train.data.stream import StreamingDataset

ALIGN = 64  # bytes: each modality's part of a slot starts on a cache line
PREFETCH = 4  # batches each worker keeps ready (the DataLoader's prefetch_factor)


class BatchLayout:
    """Where each modality of a batch lies in a slot's flat byte buffer (float32, ``batch_size`` rows)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], batch_size: int) -> None:
        self.shapes, self.batch_size = dict(shapes), batch_size
        self.parts: dict[str, tuple[int, tuple[int, ...]]] = {}
        offset = 0
        for modality, shape in self.shapes.items():
            self.parts[modality] = (offset, (batch_size, *shape))
            offset += -(-4 * batch_size * math.prod(shape) // ALIGN) * ALIGN
        self.nbytes = max(offset, ALIGN)

    def arrays(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Full-size float32 numpy views of a slot's bytes, per modality."""
        return {m: flat[o : o + 4 * math.prod(s)].view(np.float32).reshape(s) for m, (o, s) in self.parts.items()}

    def tensors(self, flat: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        """Float32 tensor views (first ``n`` rows) of a uint8 slot tensor, per modality."""
        return {m: flat[o : o + 4 * math.prod(s)].view(torch.float32).view(s)[:n] for m, (o, s) in self.parts.items()}


def empty_bytes(nbytes: int, shared: bool) -> torch.Tensor:
    """An uninitialised uint8 tensor; in shared memory when ``shared``, so that it is sent without a copy."""
    if not shared:
        return torch.empty(nbytes, dtype=torch.uint8)
    prototype = torch.empty(0, dtype=torch.uint8)
    return prototype.new(prototype._typed_storage()._new_shared(nbytes))


def lease(flat: np.ndarray, release: Callable[[], None] | None, layout: BatchLayout, n: int) -> dict[str, torch.Tensor]:
    """The modality tensors of a slot's first ``n`` rows; ``release`` runs when the last view of them dies.

    All tensors are views of one storage built on a fresh numpy view of the slot (the lease): only
    that storage holds the lease, so its finalizer fires exactly when nothing can read the slot.
    """
    view = flat[:]
    if release is not None:
        weakref.finalize(view, release)
    return layout.tensors(torch.from_numpy(view), n)


def _free(flags: np.ndarray, index: Any) -> None:
    flags[index] = 0


@dataclass
class Slot:
    index: int  # in the pool; -1: a one-off buffer (the pool was exhausted)
    flat: torch.Tensor  # uint8
    arrays: dict[str, np.ndarray]
    fresh: bool  # not yet sent to the training process


class SlotPool:
    """Up to ``len(flags)`` reusable slots of one process (see the module docstring for ``mode``)."""

    def __init__(self, layout: BatchLayout, flags: np.ndarray, mode: str, ring: str = "", worker: int = 0) -> None:
        self.layout, self.flags, self.mode, self.ring, self.worker = layout, flags, mode, ring, worker
        self.slots: list[Slot] = []
        self.pid = os.getpid()

    def acquire(self) -> Slot:
        """A free slot (marked taken), a new one while under capacity, else a one-off buffer."""
        used = len(self.slots)
        free = np.flatnonzero(self.flags[:used] == 0)
        if len(free):
            slot = self.slots[int(free[0])]
            self.flags[slot.index] = 1
            return slot
        flat = empty_bytes(self.layout.nbytes, self.mode != "inline")
        slot = Slot(used if used < len(self.flags) else -1, flat, self.layout.arrays(flat.numpy()), True)
        if slot.index >= 0:
            self.slots.append(slot)
            self.flags[slot.index] = 1
        return slot

    def release(self, slot: Slot) -> None:
        """Free a slot that was acquired but never delivered."""
        if slot.index >= 0:
            self.flags[slot.index] = 0

    def deliver(self, slot: Slot, n: int, js: np.ndarray, meta: list | None, index) -> Any:
        """What the dataset yields for a filled slot: a batch dict, or a :class:`Packet` from a worker."""
        if self.mode == "packed":
            storage = slot.flat if slot.fresh else None
            slot.fresh = False
            return Packet(self.ring, self.worker, slot.index, n, js.copy(), meta, storage)
        if self.mode == "inline":
            release = partial(_free, self.flags, slot.index) if slot.index >= 0 else None
            out: dict[str, Any] = lease(slot.flat.numpy(), release, self.layout, n)
        else:
            out = self.layout.tensors(slot.flat, n)
        out.update(index.fields(js))
        if meta is not None:
            out["meta"] = meta
        return out


# ---- the training process's side -----------------------------------------------------------------


class Receiver:
    """The training process's view of one loader's slots: turns packets back into batches."""

    def __init__(self, layout: BatchLayout, flags: torch.Tensor) -> None:
        self.index = None  # the index of the epoch being iterated (set by StreamLoader)
        self.layout, self.flags = layout, flags.numpy()
        self.slots: dict[tuple[int, int], np.ndarray] = {}

    def batch(self, packet: Packet) -> dict[str, Any]:
        if packet.slot < 0:
            out: dict[str, Any] = lease(packet.storage.numpy(), None, self.layout, packet.n)
        else:
            where = (packet.worker, packet.slot)
            out = lease(self.slots[where], partial(_free, self.flags, where), self.layout, packet.n)
        out.update(self.index.fields(packet.js))
        if packet.meta is not None:
            out["meta"] = packet.meta
        return out


_RECEIVERS: dict[str, Receiver] = {}


class Packet:
    """A batch sent by a worker: which slot holds its signals, and its selection indices.

    Unpickled in the training process it registers a slot sent for the first time; dropped
    there without being turned into a batch (an interrupted epoch's prefetched batches), it frees
    its slot.
    """

    __slots__ = ("ring", "worker", "slot", "n", "js", "meta", "storage", "_owned")

    def __init__(self, ring, worker, slot, n, js, meta, storage) -> None:
        self.ring, self.worker, self.slot, self.n, self.js, self.meta, self.storage = (
            ring, worker, slot, n, js, meta, storage,
        )  # fmt: skip
        self._owned = False  # True in the training process until the batch is made

    def __getstate__(self) -> tuple:
        return self.ring, self.worker, self.slot, self.n, self.js, self.meta, self.storage

    def __setstate__(self, state: tuple) -> None:
        self.ring, self.worker, self.slot, self.n, self.js, self.meta, self.storage = state
        receiver = _RECEIVERS.get(self.ring)
        self._owned = receiver is not None and self.slot >= 0
        if self._owned and self.storage is not None:
            receiver.slots[self.worker, self.slot] = self.storage.numpy()
            self.storage = None

    def batch(self) -> dict[str, Any]:
        receiver = _RECEIVERS.get(self.ring)
        if receiver is None:
            raise RuntimeError("a batch arrived for a loader that no longer exists")
        self._owned = False  # the batch's lease frees the slot from now on
        return receiver.batch(self)

    def pin_memory(self, device: Any = None) -> dict[str, Any]:
        """The batch in pinned memory (torch's pin-memory thread calls this); the slot is freed at once."""
        from torch.utils.data._utils.pin_memory import pin_memory

        return pin_memory(self.batch(), device)

    def __del__(self) -> None:
        try:
            if self._owned and (receiver := _RECEIVERS.get(self.ring)) is not None:
                receiver.flags[self.worker, self.slot] = 0
        except Exception:  # interpreter shutdown
            pass


@dataclass
class RingSpec:
    """What a loader's workers share with the training process (pickled with the dataset)."""

    ring: str
    flags: torch.Tensor  # uint8 (workers, capacity), shared
    position: torch.Tensor  # int64 (epoch, start_batch), shared


def _stop_workers(dataloader: DataLoader) -> None:
    """Shut down a DataLoader's (persistent) workers now.

    Left to the garbage collector, a loader in a reference cycle (dataset ↔ loader) is finalised
    in arbitrary order: its index queues may be closed before the iterator's ``__del__`` sends the
    workers their stop signal, and every worker then costs a 5-s join timeout.  A
    ``weakref.finalize`` callback runs before the cycle's finalisers, with the queues intact.
    """
    iterator = getattr(dataloader, "_iterator", None)
    dataloader._iterator = None
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def _as_is(item: Any) -> Any:
    return item


class StreamLoader:
    """Iterable of a :class:`StreamingDataset`'s batches: a DataLoader with persistent workers underneath.

    Each iteration is the dataset's current epoch (``set_epoch``/``load_state_dict`` before
    iterating); ``len()`` is the dataset's.  Workers are started on the first iteration and kept
    until the loader (or its dataset) is deleted, or :meth:`close`.  Do not iterate one loader twice at once.
    """

    def __init__(
        self,
        dataset: StreamingDataset,
        *,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.dataset = dataset
        workers = dataset.num_workers
        pin = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.spec: RingSpec | None = None
        source: StreamingDataset = dataset
        if workers:
            prefetch = prefetch_factor or PREFETCH
            capacity = dataset._window // dataset.batch_size + prefetch + 2
            self.spec = RingSpec(
                uuid.uuid4().hex,
                torch.zeros((workers, capacity), dtype=torch.uint8).share_memory_(),
                torch.zeros(2, dtype=torch.int64).share_memory_(),
            )
            layout = BatchLayout(dataset.index.sample_shapes, dataset.batch_size)
            self.receiver = _RECEIVERS[self.spec.ring] = Receiver(layout, self.spec.flags)
            weakref.finalize(self, _RECEIVERS.pop, self.spec.ring, None)
            # The workers' copy: no reference back to the dataset (which holds this loader), so that
            # deleting the dataset deletes the loader and stops its workers.
            source = copy.copy(dataset)
            source.__dict__.update(_loader=None, _pool=None, _ring=self.spec)
            kwargs.update(persistent_workers=persistent_workers, prefetch_factor=prefetch)
        self.dataloader = DataLoader(
            source, batch_size=None, num_workers=workers, collate_fn=_as_is, pin_memory=pin, **kwargs
        )
        self._stop = weakref.finalize(self, _stop_workers, self.dataloader) if workers else None

    def close(self) -> None:
        """Stop the workers now (they also stop when the loader is collected)."""
        if self._stop is not None:
            self._stop()
            self._stop = weakref.finalize(self, _stop_workers, self.dataloader)  # for a later iteration's workers

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        dataset = self.dataset
        if self.spec is not None:
            source = self.dataloader.dataset
            source.__dict__.update(epoch=dataset.epoch, start_batch=dataset.start_batch, index=dataset.index)
            self.receiver.index = dataset.index
            self.spec.position[0], self.spec.position[1] = dataset.epoch, dataset.start_batch
        for item in self.dataloader:
            yield item.batch() if isinstance(item, Packet) else item
