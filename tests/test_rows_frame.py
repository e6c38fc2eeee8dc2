"""schema.rows_frame builds the frame polars would infer from the same rows, only faster."""

from __future__ import annotations

import json

import polars as pl
import pytest

from physiofm.store import build
from physiofm.store.schema import rows_frame

CASES = {
    "ints and floats in lists": [{"a": [1, 2]}, {"a": [1.5]}],
    "only empty lists": [{"a": []}, {"a": []}],
    "missing and empty": [{"a": None}, {"a": []}],
    "bools and ints": [{"a": [True]}, {"a": [1]}],
    "strings, missing, empty": [{"a": ["x"]}, {"a": None}, {"a": []}],
    "a None inside a list": [{"a": [None, "x"]}],
    "nested lists": [{"a": [[1]]}],
    "scalars of two types": [{"a": 1}, {"a": 2.5}],
    "keys missing from rows": [{"a": [1]}, {"b": 2}],
    "keys in another order": [{"b": 1, "a": ["x", "y"]}, {"a": ["z"], "c": None}],
    "empty around full": [{"a": []}, {"a": ["q"]}, {"a": []}],
    "a tuple": [{"a": (1, 2)}],
    "first value missing": [{"a": None}, {"a": [True, False]}, {"a": [False]}],
    "one width": [{"a": ["I", "II"], "m": [True, False]}] * 5,
}


@pytest.mark.parametrize("rows", CASES.values(), ids=CASES.keys())
def test_the_frame_is_the_one_polars_infers(rows):
    expected = pl.DataFrame(rows, infer_schema_length=None)
    got = rows_frame(rows)
    assert got.columns == expected.columns
    assert got.schema == expected.schema
    assert got.equals(expected)


def test_a_column_polars_refuses_is_still_refused():
    with pytest.raises(pl.exceptions.ComputeError):
        pl.DataFrame([{"a": [1]}, {"a": "x"}], infer_schema_length=None)
    with pytest.raises(pl.exceptions.ComputeError):
        rows_frame([{"a": [1]}, {"a": "x"}])


def test_the_rows_of_real_builds(shared_data, tmp_path, monkeypatch):
    """Manifest and reject rows of real archives (labels, masks, skipped channels) give the same frames."""
    seen = []
    write_tables = build._write_tables

    def spy(store, source, modalities, ordered):
        seen.append([row for marker in ordered for row in marker["rows"]])
        seen.append([r for marker in ordered for r in marker["rejects"]])
        return write_tables(store, source, modalities, ordered)

    monkeypatch.setattr(build, "_write_tables", spy)
    for name in ("physionet-challenge-2021", "ptb-xl", "wfdb-software-data"):
        build.build(str(shared_data / name), str(tmp_path / name), jobs=1)
    assert len(seen) == 6 and all(seen[0::2])
    for rows in seen:
        if rows:
            rows = json.loads(json.dumps(rows))
            assert rows_frame(rows).equals(pl.DataFrame(rows, infer_schema_length=None))
            assert rows_frame(rows).schema == pl.DataFrame(rows, infer_schema_length=None).schema
