"""MIMIC-IV-ECG: ``record_list.csv`` + ``files/pNNNN/pSUBJECT/sSTUDY/STUDY.{hea,dat}``.

Leads are mapped by name, so the archive's aVF-before-aVL order lands in the standard order.
When ``machine_measurements.csv`` is present, the machine report lines are joined into
``report``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import polars as pl

from physiofm.corpora import wfdb_tree as wfdb_dir
from physiofm.corpora.base import Item, Record, Reject
from physiofm.io import join, url_to_fs

NAME = "mimic-iv-ecg"
RECORD_LIST = "record_list.csv"


def _root(fs, base: str) -> str:
    """The folder holding ``record_list.csv`` (the source or its single versioned sub-folder)."""
    if fs.exists(join(base, RECORD_LIST)):
        return base
    found = sorted(fs.glob(join(base, "*", RECORD_LIST)))
    return found[0].rsplit("/", 1)[0] if found else base


def detect(root: str) -> bool:
    fs, base = url_to_fs(root)
    return fs.exists(join(_root(fs, base), RECORD_LIST))


def list_items(root: str) -> list[Item]:
    fs, base = url_to_fs(root)
    top = _root(fs, base)
    prefix = top[len(base.rstrip("/")) + 1 :] if top != base else ""
    with fs.open(join(top, RECORD_LIST), "rb") as handle:
        records = pl.read_csv(handle, infer_schema_length=0)
    reports: dict[tuple[str, str], str] = {}
    measurements = join(top, "machine_measurements.csv")
    if fs.exists(measurements):
        with fs.open(measurements, "rb") as handle:
            table = pl.read_csv(handle, infer_schema_length=0)
        lines = [c for c in table.columns if c.startswith("report_")]
        for row in table.iter_rows(named=True):
            text = "; ".join(row[c].strip() for c in lines if row[c] and row[c].strip())
            reports[(row["subject_id"], row["study_id"])] = text
    items = []
    for row in records.iter_rows(named=True):
        meta = {
            "study_id": row["study_id"],
            "ecg_time": row.get("ecg_time"),
            "report": reports.get((row["subject_id"], row["study_id"])),
        }
        path = join(prefix, row["path"]) + ".hea" if prefix else row["path"] + ".hea"
        items.append(Item(id=row["study_id"], path=path, extra=(row["subject_id"], json.dumps(meta))))
    return sorted(items, key=lambda item: item.path)


def read(root: str, items: list[Item]) -> Iterator[Record | Reject]:
    return wfdb_dir.read_records(root, items, NAME, wfdb_dir.listed_labels)
