"""Any WFDB tree: every ``.hea`` below the source folder is a record (any lead count, any format)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from physiofm.corpora.base import Item, Record, Reject, Signal
from physiofm.corpora.channels import classify, skipped_label
from physiofm.corpora.wfdb_format import Header, HeaderError, parse_header, read_signals
from physiofm.io import find_files, join, read_bytes, read_head, url_to_fs
from physiofm.units import unit_scale

NAME = "wfdb"


def detect(root: str) -> bool:
    fs, base = url_to_fs(root)
    return bool(find_files(fs, base, ".hea", maxdepth=6))


def _relative(base: str, path: str) -> str:
    return path[len(base.rstrip("/")) + 1 :]


def _estimate(fs, path: str) -> int:
    """Rough 10-s window count from the record line (1 if the header is unreadable)."""
    try:
        first = read_head(fs, path, 512).split(b"\n", 1)[0].split()
        return max(1, round(float(first[3]) / float(first[2].split(b"/")[0].split(b"(")[0]) / 10))
    except Exception:  # noqa: BLE001 - an estimate only; the read stage reports the real problem
        return 1


def list_headers(root: str, under: str = "") -> list[Item]:
    """Every ``.hea`` below ``root`` (below ``root/under`` if given), as items in path order."""
    fs, base = url_to_fs(root)
    paths = find_files(fs, join(base, under), ".hea")
    return [Item(id=_relative(base, p)[:-4], path=_relative(base, p), est_windows=_estimate(fs, p)) for p in paths]


def list_items(root: str) -> list[Item]:
    return list_headers(root)


@dataclass
class Loaded:
    """One WFDB record as read: its header, its ECG leads in mV, and what was left out."""

    header: Header
    signal: Signal
    skipped: list[str] = field(default_factory=list)  # non-ECG channels, "PLETH (ppg)"
    masked: list[tuple[str, str]] = field(default_factory=list)  # ECG leads left out: (name, why)


def load(fs, base: str, item: Item) -> Loaded:
    """Read one record's header and signals; raise ``ValueError`` with the reason on failure.

    Every channel is classified by name (:func:`physiofm.corpora.channels.classify`): ECG leads are
    kept and converted to mV; other signals (PLETH, ABP, RESP, Frank leads, …) are skipped, whatever
    their unit.  An ECG lead whose unit is not a voltage is left out (masked) with the reason, and the
    record goes on with its other leads.
    """
    header_path = join(base, item.path)
    try:
        text = read_bytes(fs, header_path).decode("latin-1")
    except FileNotFoundError:
        raise ValueError(f"missing header {item.path}") from None
    try:
        header = parse_header(text)
    except HeaderError as error:
        raise ValueError(f"garbage header: {error}") from None
    folder = header_path.rsplit("/", 1)[0]
    record_name = item.path.rsplit("/", 1)[-1][:-4]
    data, channels, units = read_signals(fs, folder, header, record_name)
    keep: list[int] = []
    skipped: list[str] = []
    masked: list[tuple[str, str]] = []
    for row, (name, unit) in enumerate(zip(channels, units)):
        kind, _ = classify(name)
        if kind != "ecg":
            skipped.append(skipped_label(name, kind))
            continue
        try:
            factor = unit_scale(unit)
        except ValueError:
            masked.append((name, f"unknown physical unit {unit!r}"))
            continue
        if factor != 1.0:
            data[row] *= factor
        keep.append(row)
    if not keep:
        described = ", ".join(f"{name} [{unit}]" for name, unit in zip(channels, units))
        raise ValueError(f"no usable ECG lead among channels {described}")
    if len(keep) < len(channels):
        data, channels = data[keep], [channels[i] for i in keep]
    return Loaded(header, Signal(data, header.fs, channels, "mV"), skipped, masked)


Describe = Callable[[Item, Header], tuple[str | None, dict]]


def comments(item: Item, header: Header) -> tuple[str | None, dict]:
    """No subject id; the header's comment lines as ``comments``."""
    return None, ({"comments": "; ".join(header.comments)} if header.comments else {})


def listed_labels(item: Item, header: Header) -> tuple[str | None, dict]:
    """The ``(subject id, labels JSON)`` a corpus stored in ``Item.extra`` when it listed the item."""
    return (item.extra[0], json.loads(item.extra[1])) if item.extra else (None, {})


def read_records(root: str, items: list[Item], dataset: str, describe: Describe) -> Iterator[Record | Reject]:
    """Read WFDB records; ``describe(item, header)`` gives each record's subject id and labels."""
    fs, base = url_to_fs(root)
    for item in items:
        try:
            loaded = load(fs, base, item)
        except ValueError as error:
            yield Reject(dataset, item.path, "read", str(error), item.id)
            continue
        subject, meta = describe(item, loaded.header)
        issues = [
            Reject(dataset, item.path, "lead", f"lead {name} left out: {why}", item.id) for name, why in loaded.masked
        ]
        yield Record(dataset, item.id, item.path, {"ecg": loaded.signal}, subject, meta, loaded.skipped, issues)


def read(root: str, items: list[Item]) -> Iterator[Record | Reject]:
    return read_records(root, items, NAME, comments)
