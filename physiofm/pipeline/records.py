"""What readers yield: records of one or more signals, or rejects.

A reader turns files into :class:`Record` objects; everything downstream (lead mapping,
resampling, filtering, windowing, writing) works on these and never on files.  A record
that cannot be read becomes a :class:`Reject` with a reason a person can act on; the
build writes it to ``rejects.parquet`` and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
            raise ValueError(
                f"{len(self.channels)} channel names for {self.data.shape[0]} channels of data"
            )


@dataclass
class Record:
    """One recording (ECG archives) or one trial segment (emotion datasets).

    ``signals`` maps a modality (``"ecg"``, ``"eeg"``) to its :class:`Signal`; all signals of
    a record start at the same instant.  ``meta`` holds labels and ids as JSON-serialisable
    values; its keys become manifest columns.
    """

    dataset: str
    record_id: str
    source: str  # path of the source file, relative to the source root
    signals: dict[str, Signal]
    subject_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reject:
    """Something that could not become samples, and why."""

    dataset: str
    source: str
    stage: str  # "list", "read", "transform", "quality"
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
