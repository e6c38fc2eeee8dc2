"""The Temple University Hospital EEG corpora: TUEG, and its labelled subsets TUAB and TUEV, in their layout.

One reader for every TUH tree (``physiofm build eeg SOURCE OUT --format tuh-eeg``; pass
``--recipe tuab`` or ``--recipe tuev`` for those corpora's sample lengths).  Layouts:

* TUEG v2: ``edf/<000>/<subject>/<session>_<yyyy>_<mm>_<dd>/<montage>/<subject>_<session>_<token>.edf``
  (v1 put the montage first: ``edf/<montage>/<000>/<subject>/<session>_<date>/...``);
* TUAB: ``edf/{train,eval}/{normal,abnormal}/01_tcp_ar/[<000>/<subject>/<session>_<date>/]<file>.edf``;
* TUEV: ``edf/{train,eval}/<subject>/<subject>_<nnnnnnnn>.edf`` with ``.rec`` (and ``.lab``) beside it.

Montages: ``01_tcp_ar`` (average reference, channels ``EEG FP1-REF``), ``02_tcp_le`` (linked ears,
``EEG FP1-LE``), ``03_tcp_ar_a`` (average reference without A1/A2); the montage folder becomes
``eeg_montage`` and its reference (``AR``/``LE``) ``eeg_reference``.

Ids and labels, from the path and files alone: ``subject_id`` (the file name's ``<subject>`` before
``_s<nnn>_t<nnn>``, else the folder above the file), ``session`` (``s001``), ``session_date``
(``2015-12-30``), ``token`` (``t000``); TUAB's ``split`` (``train``/``eval``) and ``label``
(``normal``/``abnormal``) with ``abnormal`` (bool); TUEV's events from ``<file>.rec`` (CSV lines
``channel,start,stop,code``, codes 1-6 = spsw, gped, pled, eyem, artf, bckg) or, without one, from
``<file>*.lab`` (HTK lines ``start end label`` in 100-ns units): ``event_labels`` per file and
``events`` (labels overlapping the window) per window; ``age`` and ``sex`` from the EDF patient
field (``... M 01-JAN-1951 ... Age:59``) when it has them.  Signals are read as any EDF
(:mod:`physiofm.corpora.edf`: only the channels and spans kept).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from physiofm.corpora import edf
from physiofm.corpora.base import Item, Record, Reject
from physiofm.io import join, url_to_fs

NAME = "tuh-eeg"
MONTAGE = re.compile(r"^\d\d_tcp_[a-z_]+$")
REFERENCE = {"01_tcp_ar": "AR", "02_tcp_le": "LE", "03_tcp_ar_a": "AR"}
SESSION = re.compile(r"^(s\d{3})_(\d{4})_(\d{2})_(\d{2})$")
FILE = re.compile(r"^(?P<subject>[^_/]+)_(?P<session>s\d{3})_(?P<token>t\d{3})$")
SPLITS = ("train", "dev", "eval")
LABELS = ("normal", "abnormal")
EVENT_CODES = {1: "spsw", 2: "gped", 3: "pled", 4: "eyem", 5: "artf", 6: "bckg"}
_AGE = re.compile(r"\bAge:\s*(\d+)", re.IGNORECASE)
_SEX = re.compile(r"^\S+\s+([MF])\b")


def _listing(root: str) -> tuple[dict[str, int], set[str]]:
    """(``.edf`` path -> size, every other file's path), relative to root, from one listing."""
    fs, base = url_to_fs(root)
    found = fs.find(base, detail=True)
    edfs: dict[str, int] = {}
    others: set[str] = set()
    for path, info in found.items():
        rel = path[len(base.rstrip("/")) + 1 :]
        if rel.lower().endswith(".edf"):
            edfs[rel] = int(info.get("size") or 0)
        else:
            others.add(rel)
    return dict(sorted(edfs.items())), others


def _is_tuh(path: str, others: set[str]) -> bool:
    parts = path.split("/")
    stem = parts[-1][:-4]
    return (any(MONTAGE.match(p) for p in parts[:-1]) or bool(FILE.match(stem))
            or f"{path[:-4]}.rec" in others)  # fmt: skip


def detect(root: str) -> bool:
    """An ``.edf`` below a montage folder (``01_tcp_ar``), named ``<subject>_s<nnn>_t<nnn>``, or with a ``.rec``."""
    fs, base = url_to_fs(root)
    if fs.isfile(base):
        return False
    edfs, others = _listing(root)
    return any(_is_tuh(path, others) for path in edfs)


def _labels_beside(path: str, others: set[str]) -> tuple[str, ...]:
    """The TUEV label files of ``path``: its ``.rec``, else its ``*.lab`` (sorted)."""
    stem = path[:-4]
    if f"{stem}.rec" in others:
        return (f"{stem}.rec",)
    return tuple(sorted(p for p in others if p.startswith(stem) and p.endswith(".lab")))


def list_items(root: str) -> list[Item]:
    """One item per TUH ``.edf`` (several for a long file, :func:`physiofm.corpora.edf.part_items`)."""
    edfs, others = _listing(root)
    items: list[Item] = []
    for path, size in edfs.items():
        if _is_tuh(path, others):
            items.extend(edf.part_items(path[:-4], path, size, _labels_beside(path, others)))
    return items


def path_meta(path: str) -> tuple[str | None, dict, str | None]:
    """``(subject, labels, montage)`` of a TUH path."""
    parts = path.split("/")
    stem = parts[-1][:-4]
    meta: dict = {}
    montage = next((p for p in parts[:-1] if MONTAGE.match(p)), None)
    named = FILE.match(stem)
    subject = named.group("subject") if named else (parts[-2] if len(parts) > 1 else None)
    if named:
        meta["session"], meta["token"] = named.group("session"), named.group("token")
    session = next((SESSION.match(p) for p in parts[:-1] if SESSION.match(p)), None)
    if session:
        meta.setdefault("session", session.group(1))
        meta["session_date"] = f"{session.group(2)}-{session.group(3)}-{session.group(4)}"
    split = next((p for p in parts[:-1] if p in SPLITS), None)
    if split:
        meta["split"] = split
    label = next((p for p in parts[:-1] if p in LABELS), None)
    if label:
        meta["label"], meta["abnormal"] = label, label == "abnormal"
    return subject, meta, montage


def parse_rec(text: str) -> list[tuple[float, float, str]]:
    """TUEV ``.rec`` lines ``channel,start,stop,code`` -> ``(onset, duration, label)``."""
    events = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4:
            continue
        try:
            start, stop, code = float(fields[1]), float(fields[2]), int(float(fields[3]))
        except ValueError:
            continue
        events.append((start, max(0.0, stop - start), EVENT_CODES.get(code, str(code))))
    return events


def parse_lab(text: str) -> list[tuple[float, float, str]]:
    """HTK label lines ``start end label`` (100-ns units) -> ``(onset, duration, label)``."""
    events = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        try:
            start, stop = int(fields[0]) / 1e7, int(fields[1]) / 1e7
        except ValueError:
            continue
        events.append((start, max(0.0, stop - start), fields[2]))
    return events


def _patient(header: edf.EdfHeader) -> dict:
    out: dict = {}
    if sex := _SEX.match(header.patient):
        out["sex"] = sex.group(1)
    if age := _AGE.search(header.patient):
        out["age"] = int(age.group(1))
    return out


def read(root: str, items: list[Item]) -> Iterator[Record | Reject]:
    fs, base = url_to_fs(root)
    for item in items:
        label_files = item.extra[2:] if len(item.extra) > 2 else ()
        try:
            opened = edf.open_recording(fs, join(base, item.path), events=False)
            events: list[tuple[float, float, str]] = []
            for name in label_files:
                text = fs.cat_file(join(base, name)).decode("utf-8", "replace")
                events.extend(parse_rec(text) if name.endswith(".rec") else parse_lab(text))
        except (edf.EdfError, OSError) as error:
            yield edf.reject(NAME, item, str(error))
            continue
        subject, meta, montage = path_meta(item.path)
        meta = {**meta, **_patient(opened.header), "recording_seconds": round(opened.header.seconds, 6)}
        if label_files:
            opened.events = sorted(set(events))
        yield edf.to_record(NAME, item, opened, subject, meta, montage, REFERENCE.get(montage or ""))
