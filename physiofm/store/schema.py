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


_ELEMENTS = {str: pl.String(), bool: pl.Boolean(), int: pl.Int64(), float: pl.Float64()}


def rows_frame(rows: list[dict]) -> pl.DataFrame:
    """``pl.DataFrame(rows, infer_schema_length=None)``, the same frame, faster where rows hold lists.

    Polars builds a Series for every list of every row (12 ms per 1,000 rows for each list
    column of a manifest); here a column of lists of one scalar type is built from one Series of
    all its elements.  Everything else (scalar columns, lists of mixed or nested values) is left to
    polars' own inference, column by column, so the types are those it would infer.
    """
    if not rows:
        return pl.DataFrame()
    first = tuple(rows[0])
    same = all(len(row) == len(first) and tuple(row) == first for row in rows)
    names = list(first) if same else list(dict.fromkeys(key for row in rows for key in row))
    lists = [name for name in names if type(next((r[name] for r in rows if r.get(name) is not None), None)) is list]
    built = {name: _list_column(name, [row.get(name) for row in rows]) for name in lists}
    done = {name for name, column in built.items() if column is not None}
    rest = [name for name in names if name not in done]
    if rest:
        keep = set(rest)
        scalar = pl.DataFrame([{k: v for k, v in row.items() if k in keep} for row in rows], infer_schema_length=None)
        built.update({name: scalar[name] for name in rest})
    return pl.DataFrame([built[name] for name in names])


def _list_column(name: str, values: list) -> pl.Series | None:
    """A column of lists (or None) whose elements are all ``str``, all ``bool``, all ``int`` or all
    ``float``, built from one Series of the elements; None for any other column."""
    n = len(values)
    if not all(v is None or type(v) is list for v in values):
        return None
    flat = [x for v in values if v is not None for x in v]
    kinds = {type(x) for x in flat}
    if len(kinds) != 1 or (kind := kinds.pop()) not in _ELEMENTS:
        return None
    inner = _ELEMENTS[kind]
    elements = pl.Series(name, flat, dtype=inner)
    lengths = [0 if v is None else len(v) for v in values]  # Python lists: numpy input imports numpy.ma
    if min(lengths) == max(lengths) and all(v is not None for v in values):  # one width: a reshape
        return elements.reshape((n, lengths[0])).cast(pl.List(inner)).alias(name)
    index = pl.Series("row", [row for row, v in enumerate(values) if v for _ in v], dtype=pl.Int64)
    grouped = pl.DataFrame([index, elements]).group_by("row", maintain_order=True).agg(pl.col(name))
    every = pl.select(pl.int_range(0, n, dtype=pl.Int64).alias("row"))
    column = every.join(grouped, on="row", how="left")[name]
    empty = [v is not None and not v for v in values]
    if any(empty):  # an empty list, not a missing one
        column = pl.select(
            pl.when(pl.Series(empty)).then(pl.lit([], dtype=pl.List(inner))).otherwise(column).alias(name)
        ).to_series()
    return column


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
