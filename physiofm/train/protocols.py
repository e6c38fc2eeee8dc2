"""Evaluation protocols computed from a manifest: which rows train, which validate and which test, per fold.

Every protocol splits whole *trials* (all windows of one trial, or of one record when a
manifest has no trial column) so that windows of one trial never straddle two splits:

* ``loso``: leave one subject out, one fold per subject;
* ``kfold-subject``: subjects dealt into ``k`` folds (subject-independent);
* ``kfold-trial``: subject-dependent; each subject's trials dealt into ``k`` folds, fold ``i``
  tests trials of fold ``i`` of every subject and trains on the rest;
* ``ptbxl``: PTB-XL's recommended split from the manifest's ``fold`` column (``strat_fold``):
  folds 1–8 train, 9 validates, 10 tests (one fold, named ``ptbxl``).  PTB-XL's folds are
  patient-wise; a subject found in two of the three splits is an error;
* ``split``: the corpus's own split from the manifest's ``split`` column (TUAB's ``train`` and
  ``eval`` folders): ``eval``/``test`` rows test, ``dev``/``val`` rows (where there are any)
  validate, ``train`` rows train (one fold, named ``split``).  A subject found in two of them is
  an error.

Subjects are the manifest's ``subject_id``; a row without one (Challenge 2020/21 records carry
no patient id) is its own subject, named by its ``record_id``.

With ``val_fraction`` > 0 each fold's training rows keep a validation split for early stopping
and the choice of checkpoint, made of the same units as the protocol's test split: whole
subjects for the subject-independent protocols (at least one, never all), whole trials of every
subject for ``kfold-trial``; ``ptbxl`` always validates on fold 9, and ``split`` on its
``dev``/``val`` rows when the corpus has them.  The validation split is drawn
from its own random stream, so the test rows of a fold do not depend on it.  Given ``strata`` (a
label per row, e.g. a single binary target), validation subjects are drawn within each stratum
(a subject counts in its most common one), so that a small validation split still holds every
class where the training subjects do.

:func:`label_subsets` makes nested, seeded, subject-wise subsets of a training split for
label-efficiency curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

PROTOCOLS = ("loso", "kfold-subject", "kfold-trial", "ptbxl", "split")
SPLIT_TRAIN, SPLIT_VAL, SPLIT_TEST = ("train",), ("dev", "val", "validation"), ("eval", "test")
PTBXL_TRAIN, PTBXL_VAL, PTBXL_TEST = tuple(range(1, 9)), (9,), (10,)


@dataclass
class Fold:
    name: str
    train: np.ndarray  # manifest row indices (positions in the manifest given to make_folds)
    test: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def sizes(self) -> tuple[int, int]:
        return len(self.train), len(self.test)


def subjects(manifest: pl.DataFrame) -> pl.Series:
    """Each row's subject: ``subject_id``, or ``record:<record_id>`` where it is null (or absent)."""
    if "subject_id" in manifest.columns:
        expr = pl.col("subject_id").cast(pl.String)
        if "record_id" in manifest.columns:
            expr = pl.coalesce(expr, pl.concat_str([pl.lit("record:"), pl.col("record_id").cast(pl.String)]))
    elif "record_id" in manifest.columns:
        expr = pl.concat_str([pl.lit("record:"), pl.col("record_id").cast(pl.String)])
    else:
        raise ValueError("the manifest has neither subject_id nor record_id: subject-wise protocols need one")
    found = manifest.select(expr.alias("subject")).to_series()
    if found.null_count():
        raise ValueError("the manifest has rows without subject_id and record_id: subject-wise protocols need one")
    return found


def _trial_key(manifest: pl.DataFrame) -> pl.Expr:
    if "trial" in manifest.columns:
        return pl.concat_str([pl.col("subject"), pl.col("trial").cast(pl.String)], separator="/")
    return pl.col("record_id") if "record_id" in manifest.columns else pl.col("subject")


def _table(manifest: pl.DataFrame) -> pl.DataFrame:
    table = manifest.with_columns(subjects(manifest).alias("subject"))
    return table.select(pl.col("subject"), _trial_key(table).alias("group")).with_row_index("row")


def _deal(values: list, k: int, rng: np.random.Generator) -> list[list]:
    order = list(rng.permutation(len(values)))
    return [[values[i] for i in order[j::k]] for j in range(k)]


def make_folds(
    manifest: pl.DataFrame,
    protocol: str,
    k: int = 5,
    seed: int = 0,
    val_fraction: float = 0.0,
    strata: Sequence | np.ndarray | None = None,
) -> list[Fold]:
    """Folds of ``manifest`` (row indices) under ``protocol``; deterministic for a seed.

    ``val_fraction``: the share of each fold's training units (subjects, or trials for
    ``kfold-trial``) moved to its validation split (0: none; ``ptbxl`` validates on fold 9 anyway).
    ``strata``: one value per manifest row; subject-wise validation draws within each stratum.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    table = _table(manifest)
    if strata is not None:
        if len(strata) != manifest.height:
            raise ValueError(f"strata has {len(strata)} values for {manifest.height} manifest rows")
        table = table.with_columns(pl.Series("stratum", [str(v) for v in strata], dtype=pl.String))
    if protocol == "ptbxl":
        return [_ptbxl_fold(manifest, table)]
    if protocol == "split":
        return [_split_fold(manifest, table, val_fraction, seed)]
    subject_list = sorted(table["subject"].unique().to_list())
    rng = np.random.default_rng(seed)
    rows = table["row"].to_numpy()
    if protocol == "loso":
        tests = [[s] for s in subject_list]
        names = [f"subject-{s}" for s in subject_list]
        column = "subject"
    elif protocol == "kfold-subject":
        if k > len(subject_list):
            raise ValueError(
                f"kfold-subject with k={k} needs at least {k} subjects, the manifest has {len(subject_list)}"
            )
        tests = _deal(subject_list, k, rng)
        names = [f"fold-{i}" for i in range(k)]
        column = "subject"
    else:
        tests = [[] for _ in range(k)]
        for subject in subject_list:
            groups = sorted(table.filter(pl.col("subject") == subject)["group"].unique().to_list())
            if len(groups) < k:
                raise ValueError(f"kfold-trial with k={k}: subject {subject} has only {len(groups)} trials")
            for i, dealt in enumerate(_deal(groups, k, rng)):
                tests[i].extend(dealt)
        names = [f"fold-{i}" for i in range(k)]
        column = "group"
    folds = []
    for index, (name, members) in enumerate(zip(names, tests)):
        held = table[column].is_in(members).to_numpy()
        train, test = rows[~held], rows[held]
        val = np.zeros(0, dtype=np.int64)
        if val_fraction > 0:
            val_rng = np.random.default_rng([seed, index, 0x7A1])
            train, val = _validation(table, train, column, val_fraction, val_rng)
        folds.append(Fold(name, train, test, val))
    return folds


def _validation(
    table: pl.DataFrame, train: np.ndarray, column: str, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Move ``fraction`` of the training units to validation: whole subjects, or (``group``) whole
    trials of each subject; at least one unit, never all of them."""
    part = table[train]
    if column == "subject":
        units = sorted(part["subject"].unique().to_list())
        if len(units) < 2:
            return train, np.zeros(0, dtype=np.int64)
        if "stratum" in part.columns:
            chosen = _stratified(part, units, fraction, rng)
        else:
            n = min(len(units) - 1, max(1, round(fraction * len(units))))
            chosen = [units[i] for i in rng.permutation(len(units))[:n]]
        held = part["subject"].is_in(chosen).to_numpy()
    else:
        chosen = []
        for subject in sorted(part["subject"].unique().to_list()):
            groups = sorted(part.filter(pl.col("subject") == subject)["group"].unique().to_list())
            if len(groups) < 2:
                continue
            n = min(len(groups) - 1, max(1, round(fraction * len(groups))))
            chosen += [groups[i] for i in rng.permutation(len(groups))[:n]]
        held = part["group"].is_in(chosen).to_numpy()
    return train[~held], train[held]


def _stratified(part: pl.DataFrame, units: list, fraction: float, rng: np.random.Generator) -> list:
    """``fraction`` of the subjects of each stratum (a subject's most common stratum; at least one of every
    stratum with two or more subjects, never all of one), at least one in all and never every subject."""
    counts = (
        part.group_by("subject", "stratum").len().sort(["subject", "len", "stratum"], descending=[False, True, False])
    )
    home = dict(counts.unique("subject", keep="first", maintain_order=True).select("subject", "stratum").iter_rows())
    chosen = []
    for stratum in sorted(set(home.values())):
        members = [u for u in units if home[u] == stratum]
        if len(members) >= 2:
            n = min(len(members) - 1, max(1, round(fraction * len(members))))
            chosen += [members[i] for i in rng.permutation(len(members))[:n]]
    if not chosen:
        chosen = [units[int(rng.integers(len(units)))]]
    return chosen[: len(units) - 1]


def _ptbxl_fold(manifest: pl.DataFrame, table: pl.DataFrame) -> Fold:
    if "fold" not in manifest.columns:
        raise ValueError("the ptbxl protocol needs the manifest's fold column (PTB-XL's strat_fold)")
    fold = manifest["fold"].cast(pl.Int64)
    if fold.null_count():
        raise ValueError(f"the ptbxl protocol: {fold.null_count()} rows have no fold")
    values = fold.to_numpy()
    rows = table["row"].to_numpy()
    split = np.where(np.isin(values, PTBXL_TEST), 2, np.where(np.isin(values, PTBXL_VAL), 1, 0))
    unknown = sorted(set(values.tolist()) - set(PTBXL_TRAIN + PTBXL_VAL + PTBXL_TEST))
    if unknown:
        raise ValueError(f"the ptbxl protocol: fold values {unknown} are not 1–10")
    crossing = _crossing(table, split)
    if crossing.height:
        raise ValueError(
            f"the ptbxl protocol: {crossing.height} subject(s) lie in two of train (folds 1–8), validation (9) "
            f"and test (10), e.g. {crossing['subject'][0]!r}: the fold column is not patient-wise"
        )
    return Fold("ptbxl", rows[split == 0], rows[split == 2], rows[split == 1])


def _crossing(table: pl.DataFrame, split: np.ndarray) -> pl.DataFrame:
    """Subjects whose rows lie in more than one of the splits ``split`` (0 train, 1 validation, 2 test) names."""
    return (
        table.with_columns(pl.Series("split", split)).group_by("subject").agg(pl.col("split").n_unique().alias("n"))
    ).filter(pl.col("n") > 1)


def _split_fold(manifest: pl.DataFrame, table: pl.DataFrame, val_fraction: float, seed: int) -> Fold:
    if "split" not in manifest.columns:
        raise ValueError(
            "the split protocol needs the manifest's split column (TUAB's train/eval folders); this store has none: "
            "use kfold-subject"
        )
    values = manifest["split"].cast(pl.String).str.to_lowercase()
    if values.null_count():
        raise ValueError(f"the split protocol: {values.null_count()} rows have no split")
    names = values.to_numpy()
    known = SPLIT_TRAIN + SPLIT_VAL + SPLIT_TEST
    unknown = sorted(set(names.tolist()) - set(known))
    if unknown:
        raise ValueError(f"the split protocol: split values {unknown} are none of {', '.join(known)}")
    split = np.where(np.isin(names, SPLIT_TEST), 2, np.where(np.isin(names, SPLIT_VAL), 1, 0))
    if not (split == 2).any() or not (split == 0).any():
        raise ValueError("the split protocol needs rows in both a training split (train) and a test split (eval/test)")
    crossing = _crossing(table, split)
    if crossing.height:
        raise ValueError(
            f"the split protocol: {crossing.height} subject(s) lie in two of train, validation and test, "
            f"e.g. {crossing['subject'][0]!r}: the corpus's split is not subject-wise"
        )
    rows = table["row"].to_numpy()
    train, val = rows[split == 0], rows[split == 1]
    if not len(val) and val_fraction > 0:
        train, val = _validation(table, train, "subject", val_fraction, np.random.default_rng([seed, 0, 0x7A1]))
    return Fold("split", train, rows[split == 2], val)


def label_subsets(
    manifest: pl.DataFrame, rows: np.ndarray, fractions: Sequence[float], seed: int = 0
) -> dict[float, np.ndarray]:
    """Nested subject-wise subsets of ``rows``: for each fraction, whole subjects taken in one seeded
    order until they hold at least ``fraction`` of the rows (at least one subject).

    As every subset is a prefix of the same order, the subset of a smaller fraction lies inside
    the subset of a larger one (for the same ``seed``); a fraction of 1 is all of ``rows``.
    """
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"label fractions must be in (0, 1], got {f}")
    rows = np.asarray(rows, dtype=np.int64)
    who = subjects(manifest).to_numpy()[rows]
    names, counts = np.unique(who, return_counts=True)
    order = np.random.default_rng([seed, 0x1AB]).permutation(len(names))
    cumulative = np.cumsum(counts[order])
    out = {}
    for f in fractions:
        if f >= 1.0:
            out[f] = rows.copy()
            continue
        need = math.ceil(f * len(rows) - 1e-9)
        taken = int(np.searchsorted(cumulative, need) + 1)
        keep = set(names[order[: max(1, taken)]].tolist())
        out[f] = rows[np.fromiter((w in keep for w in who), bool, len(who))]
    return out
