"""Versioned table schemas (``manifests/schema/vN/*.json``): casting on write, checking on read."""

from __future__ import annotations

import json
from functools import cache

import polars as pl

from physiofm.preprocess.recipe import manifests_dir

SCHEMA_VERSION = 1

_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int32": pl.Int32(),
    "int64": pl.Int64(),
    "float64": pl.Float64(),
    "bool": pl.Boolean(),
    "list[string]": pl.List(pl.String()),
    "list[bool]": pl.List(pl.Boolean()),
}


@cache
def load_schema(table: str, version: int = SCHEMA_VERSION) -> dict:
    path = manifests_dir() / "schema" / f"v{version}" / f"{table}.json"
    return json.loads(path.read_text())


def columns(table: str, modalities: tuple[str, ...] = (), version: int = SCHEMA_VERSION) -> dict[str, dict]:
    """The declared columns of ``table`` (core, plus those of each modality for the manifest)."""
    schema = load_schema(table, version)
    cols = dict(schema["columns"])
    for modality in modalities:
        cols.update(schema.get("modalities", {}).get(modality, {}))
    return cols


def empty_frame(table: str, modalities: tuple[str, ...] = ()) -> pl.DataFrame:
    return pl.DataFrame(schema={name: _TYPES[spec["type"]] for name, spec in columns(table, modalities).items()})


def conform(df: pl.DataFrame, table: str, modalities: tuple[str, ...] = ()) -> pl.DataFrame:
    """Cast declared columns to their schema types and put them first, in schema order.

    A nullable declared column that ``df`` lacks is added as nulls (a preparer that has no value
    for it, say ``ecg_skipped`` of a dataset whose readers skip nothing, need not invent one).
    """
    cols = columns(table, modalities)
    missing = [name for name, spec in cols.items() if name not in df.columns and not spec.get("nullable")]
    if missing:
        raise ValueError(f"{table} table lacks columns {missing}")
    declared = [
        (pl.col(name) if name in df.columns else pl.lit(None)).cast(_TYPES[spec["type"]]).alias(name)
        for name, spec in cols.items()
    ]
    extra = [name for name in df.columns if name not in cols]
    return df.select(declared + extra)


def problems(df: pl.DataFrame, table: str, modalities: tuple[str, ...] = ()) -> list[str]:
    """Every way ``df`` departs from its schema (missing column, wrong type, unexpected nulls)."""
    found: list[str] = []
    for name, spec in columns(table, modalities).items():
        if name not in df.columns:
            found.append(f"{table}: missing column {name!r}")
            continue
        want = _TYPES[spec["type"]]
        if df.schema[name] != want:
            found.append(f"{table}: column {name!r} is {df.schema[name]}, schema says {want}")
        if not spec.get("nullable") and df[name].null_count():
            found.append(f"{table}: column {name!r} has {df[name].null_count()} nulls")
    return found
