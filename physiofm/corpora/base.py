"""What readers yield (records of one or more signals, or rejects) and what a reader is.

A reader turns files into :class:`Record` objects; everything downstream (lead mapping,
resampling, filtering, windowing, writing) works on these and never on files.  A record
that cannot be read becomes a :class:`Reject` with a reason a person can act on; the
build writes it to ``rejects.parquet`` and goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class Signal:
    """One modality of a record: ``data`` is (channels, samples) in physical ``unit``."""

    data: np.ndarray
    fs: float
    channels: list[str]
    unit: str = "mV"  # "mV", "uV" or "V"; converted by the preprocessing step

    def __post_init__(self) -> None:
        if self.data.ndim != 2:
            raise ValueError(f"signal data must be (channels, samples), got shape {self.data.shape}")
        if len(self.channels) != self.data.shape[0]:
            raise ValueError(f"{len(self.channels)} channel names for {self.data.shape[0]} channels of data")


@dataclass
class Record:
    """One recording (ECG archives) or one trial segment (emotion datasets).

    ``signals`` maps a modality (``"ecg"``, ``"eeg"``) to its :class:`Signal`; all signals of
    a record start at the same instant.  ``meta`` holds labels and ids as JSON-serialisable
    values; its keys become manifest columns.  ``skipped`` names the source channels the reader
    left out, each with its type (``"PLETH (ppg)"``, ``"vx (frank)"``); ``issues`` are rejects of
    parts of the record (stage ``lead``: an ECG lead masked, say because its unit is unreadable)
    that did not stop the rest of it.
    """

    dataset: str
    record_id: str
    source: str  # path of the source file, relative to the source root
    signals: dict[str, Signal]
    subject_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    issues: list[Reject] = field(default_factory=list)


@dataclass
class Reject:
    """Something that could not become samples, and why."""

    dataset: str
    source: str
    stage: str  # "read", "lead", "transform", "quality" or "write"
    reason: str
    record_id: str | None = None
    window_index: int | None = None


@dataclass(frozen=True)
class Item:
    """A unit of listing: one record (or one file) of a source tree, cheap to produce.

    ``est_windows`` is the planner's estimate of how many windows the item yields; it only
    decides how items are grouped into shards, never what is written.
    """

    id: str
    path: str  # relative to the source root
    est_windows: int = 1
    extra: tuple = ()


@runtime_checkable
class Reader(Protocol):
    """What every corpus module provides (checked for each registered corpus by the conformance test).

    * ``detect(root)``: whether ``root`` (a path or fsspec URL) has this corpus's layout; cheap.
    * ``list_items(root)``: every record of the tree as an :class:`Item`, sorted by ``(path, id)``
      order of the corpus, ids unique; cheap (no signal is read) and picklable, so the build can
      plan before any work and hand items to other processes.
    * ``read(root, items)``: a :class:`Record` or a :class:`Reject` for every item, in order; never
      raises for a bad record (a reject says why).  Reading a subset of items yields exactly the
      records a full read yields for them.

    A module whose ``list_items`` loads the whole archive into a process cache that ``read`` then
    uses (DREAMER's one MAT file) says so with ``LOADED_BY_LISTING = True``: a build forks its workers
    after listing such a corpus, so they share what the listing loaded; otherwise it forks them first.
    """

    NAME: str

    def detect(self, root: str) -> bool: ...

    def list_items(self, root: str) -> list[Item]: ...

    def read(self, root: str, items: list[Item]) -> Iterator[Record | Reject]: ...


def all_nan_reason(signals: dict[str, Signal]) -> str | None:
    """The reject reason when a modality holds no finite sample (or no sample), else None."""
    for name, signal in signals.items():
        if signal.data.size == 0:
            return f"no samples in {name}"
        if not np.isfinite(signal.data).any():
            return f"all samples are NaN in {name}"
    return None
