"""What a fine-tuning run predicts: its targets, their kind and a label vocabulary fixed before any fold.

A :class:`LabelSpec` is resolved once from the *whole* manifest (or given, or read back from a
run), so every fold, label fraction and seed of a run predicts the same outputs in the same
order, whatever classes a fold happens to contain; it is written to the run as ``labels.json``.

Kinds:

* ``binary``: one or more boolean (or 0/1) columns, one logit each: an emotion target
  ``valence`` reads ``valence_high``; ``--targets AF,RBBB`` on a CODE-15% store reads those flags.
* ``multilabel``: one ``list[str]`` column (PTB-XL ``ptbxl_superclass``, ``ptbxl_subclass``,
  ``ptbxl_form``, ``ptbxl_rhythm``, ``ptbxl_diagnostic``; Challenge ``dx``), one logit per class
  of the vocabulary.  Rows whose list is null are unknown; rows whose list is empty hold no class of
  this task and are left out (``drop_empty``, as the PTB-XL benchmark does), else they are
  all-negative.  Labels outside a given vocabulary are ignored (counted in :attr:`LabelSpec.unseen`).
* ``multiclass``: one string or integer column with several values, one logit per class and a
  softmax (its labels are one-hot rows).

:meth:`LabelSpec.encode` gives the ``(rows, classes)`` float32 matrix (NaN: unknown) that the
training code indexes by manifest row.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

KINDS = ("auto", "binary", "multilabel", "multiclass")
LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class LabelSpec:
    kind: str
    columns: tuple[str, ...]  # manifest columns read (binary: one per class; else one)
    classes: tuple[str, ...]  # output names, one per logit, in order
    drop_empty: bool = True
    counts: dict[str, int] = field(default_factory=dict)  # rows holding each class in the manifest it came from
    unseen: dict[str, int] = field(default_factory=dict)  # labels outside the vocabulary, with their row counts

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> LabelSpec:
        return cls(
            kind=data["kind"],
            columns=tuple(data["columns"]),
            classes=tuple(data["classes"]),
            drop_empty=bool(data.get("drop_empty", True)),
            counts=dict(data.get("counts", {})),
            unseen=dict(data.get("unseen", {})),
        )

    def same_task(self, other: LabelSpec) -> bool:
        """Whether two specs predict the same outputs from the same columns (counts aside)."""
        return (self.kind, self.columns, self.classes, self.drop_empty) == (
            other.kind,
            other.columns,
            other.classes,
            other.drop_empty,
        )

    def encode(self, manifest: pl.DataFrame) -> np.ndarray:
        """``(rows, classes)`` float32: 1 / 0 per class, NaN where the label is unknown (a whole row for
        a null list, an empty list under ``drop_empty`` or a null category)."""
        if self.kind == "binary":
            return (
                manifest.select(pl.col(list(self.columns)).cast(pl.Float32).fill_null(float("nan")))
                .to_numpy(writable=True)
                .astype(np.float32)
            )
        column = manifest[self.columns[0]]
        out = np.zeros((manifest.height, self.n_outputs), np.float32)
        index = {name: i for i, name in enumerate(self.classes)}
        if self.kind == "multilabel":
            for r, values in enumerate(column.to_list()):
                if values is None or (self.drop_empty and len(values) == 0):
                    out[r] = np.nan
                    continue
                for value in values:
                    if (i := index.get(str(value))) is not None:
                        out[r, i] = 1.0
            return out
        for r, value in enumerate(column.to_list()):
            if value is None or (i := index.get(str(value))) is None:
                out[r] = np.nan
            else:
                out[r, i] = 1.0
        return out


def _binary_column(manifest: pl.DataFrame, target: str) -> str | None:
    for name in (target, f"{target}_high"):
        dtype = manifest.schema.get(name)
        if dtype == pl.Boolean:
            return name
        if dtype is not None and dtype.is_numeric():
            values = set(manifest[name].drop_nulls().unique().to_list())
            if values <= {0, 1}:
                return name
    return None


def resolve_labels(
    manifest: pl.DataFrame,
    targets: tuple[str, ...] | list[str],
    kind: str = "auto",
    classes: tuple[str, ...] | list[str] = (),
    min_count: int = 1,
    drop_empty: bool = True,
) -> LabelSpec:
    """The :class:`LabelSpec` of ``targets`` on ``manifest`` (the whole store's rows, before any fold).

    ``classes`` fixes the vocabulary (and its order); otherwise it is every value held by at least
    ``min_count`` rows of ``manifest``, sorted.  ``kind="auto"``: a list column is multi-label,
    boolean or 0/1 columns (or ``<target>_high``) are binary, any other single column multi-class.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown label kind {kind!r}; choose one of {', '.join(KINDS)}")
    targets = tuple(targets)
    if not targets:
        raise ValueError("name at least one target")
    binary = [_binary_column(manifest, t) for t in targets]
    if kind == "binary" or (kind == "auto" and all(binary)):
        missing = [t for t, c in zip(targets, binary) if c is None]
        if missing:
            raise ValueError(f"no boolean or 0/1 column for {missing} (looked for NAME and NAME_high)")
        counts = {t: int(manifest[c].cast(pl.Float64).fill_null(0).sum()) for t, c in zip(targets, binary)}
        return LabelSpec("binary", tuple(binary), targets, drop_empty, counts)  # type: ignore[arg-type]
    if len(targets) != 1:
        raise ValueError(
            f"targets {list(targets)}: several targets must all be boolean columns; a multi-label or "
            "multi-class task reads one column"
        )
    column = targets[0]
    dtype = manifest.schema.get(column)
    if dtype is None:
        raise ValueError(f"the manifest has no column {column!r}")
    is_list = isinstance(dtype, pl.List)
    if kind == "auto":
        kind = "multilabel" if is_list else "multiclass"
    if kind == "multilabel" and not is_list:
        raise ValueError(f"{column!r} is {dtype}: a multi-label target needs a list column")
    if kind == "multiclass" and is_list:
        raise ValueError(f"{column!r} is a list column: use a multi-label target")
    values = manifest[column].explode() if is_list else manifest[column]
    if kind == "multilabel":
        present = manifest.select(pl.col(column).list.unique()).to_series().explode()
    else:
        present = values
    tally = present.drop_nulls().cast(pl.String).value_counts()
    observed = dict(zip(tally[tally.columns[0]].to_list(), tally["count"].to_list()))
    if classes:
        vocabulary = tuple(str(c) for c in classes)
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError(f"classes repeat a name: {list(vocabulary)}")
    else:
        vocabulary = tuple(sorted(v for v, n in observed.items() if n >= min_count))
    if not vocabulary:
        raise ValueError(f"{column!r} holds no class with at least {min_count} rows")
    if kind == "multiclass" and len(vocabulary) < 2:
        raise ValueError(f"{column!r} has one class only ({vocabulary[0]}): nothing to classify")
    counts = {c: int(observed.get(c, 0)) for c in vocabulary}
    unseen = {v: int(n) for v, n in sorted(observed.items()) if v not in counts}
    return LabelSpec(kind, (column,), vocabulary, drop_empty, counts, unseen)


def write_labels(spec: LabelSpec, run: str | Path) -> None:
    Path(run, LABELS_FILE).write_text(json.dumps(spec.to_json(), indent=2, sort_keys=True))


def read_labels(path: str | Path) -> LabelSpec:
    """A spec from a run folder (its ``labels.json``) or a ``labels.json`` file."""
    path = Path(path)
    if path.is_dir():
        path = path / LABELS_FILE
    return LabelSpec.from_json(json.loads(path.read_text()))
