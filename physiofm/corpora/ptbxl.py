"""PTB-XL: ``ptbxl_database.csv`` + ``records100/`` or ``records500/`` (WFDB format 16).

Labels: ``scp_codes`` (parsed; kept as JSON), the label aggregations of ``scp_statements.csv``
when present (diagnostic codes, subclass, superclass, form, rhythm), ``strat_fold``, patient
id, age and sex.  Without the CSV (a bare ``records*/`` tree) records are read unlabelled.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator

import polars as pl

from physiofm.corpora import wfdb_tree as wfdb_dir
from physiofm.corpora.base import Item, Record, Reject
from physiofm.io import join, url_to_fs

NAME = "ptbxl"
DATABASE = "ptbxl_database.csv"
STATEMENTS = "scp_statements.csv"


def detect(root: str) -> bool:
    fs, base = url_to_fs(root)
    return fs.exists(join(base, DATABASE)) or any(fs.isdir(join(base, f"records{r}")) for r in (100, 500))


def _rate_folder(fs, base: str) -> str:
    return "records500" if fs.isdir(join(base, "records500")) else "records100"


def _flag(value) -> bool:
    return value not in (None, "", "0", "0.0", "nan", "NaN")


def _statements(fs, base: str) -> dict[str, dict]:
    path = join(base, STATEMENTS)
    if not fs.exists(path):
        return {}
    with fs.open(path, "rb") as handle:
        table = pl.read_csv(handle, infer_schema_length=0)
    code = table.columns[0]
    return {row[code]: row for row in table.iter_rows(named=True)}


def _int_text(value) -> str | None:
    try:
        return str(int(float(value)))
    except (TypeError, ValueError):
        return None


def _labels(row: dict, statements: dict[str, dict]) -> dict:
    codes = ast.literal_eval(row["scp_codes"]) if row.get("scp_codes") else {}
    meta = {"scp_codes": json.dumps(codes, sort_keys=True), "fold": int(float(row["strat_fold"]))}
    age = row.get("age")
    meta["age"] = float(age) if age not in (None, "") else None
    meta["sex"] = {"0": "male", "1": "female"}.get(_int_text(row.get("sex")) or "", None)
    if statements:
        known = [statements[c] for c in codes if c in statements]
        diagnostic = [s for s in known if _flag(s.get("diagnostic"))]
        meta["ptbxl_diagnostic"] = sorted(
            c for c in codes if c in statements and _flag(statements[c].get("diagnostic"))
        )
        meta["ptbxl_subclass"] = sorted({s["diagnostic_subclass"] for s in diagnostic if s.get("diagnostic_subclass")})
        meta["ptbxl_superclass"] = sorted({s["diagnostic_class"] for s in diagnostic if s.get("diagnostic_class")})
        meta["ptbxl_form"] = sorted(c for c in codes if c in statements and _flag(statements[c].get("form")))
        meta["ptbxl_rhythm"] = sorted(c for c in codes if c in statements and _flag(statements[c].get("rhythm")))
    return meta


def list_items(root: str) -> list[Item]:
    fs, base = url_to_fs(root)
    folder = _rate_folder(fs, base)
    if not fs.exists(join(base, DATABASE)):
        return wfdb_dir.list_headers(root, folder)
    with fs.open(join(base, DATABASE), "rb") as handle:
        table = pl.read_csv(handle, infer_schema_length=0)
    statements = _statements(fs, base)
    column = "filename_hr" if folder == "records500" else "filename_lr"
    items = []
    for row in table.iter_rows(named=True):
        path = f"{row[column]}.hea"
        meta = _labels(row, statements)
        items.append(
            Item(
                id=path.rsplit("/", 1)[-1][:-4],
                path=path,
                est_windows=1,
                extra=(_int_text(row.get("patient_id")), json.dumps(meta)),
            )
        )
    return sorted(items, key=lambda item: item.path)


def read(root: str, items: list[Item]) -> Iterator[Record | Reject]:
    return wfdb_dir.read_records(root, items, NAME, wfdb_dir.listed_labels)
