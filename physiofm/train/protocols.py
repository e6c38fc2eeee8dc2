"""Evaluation protocols computed from a manifest: which rows train and which test, per fold.

Every protocol splits whole *trials* (all windows of one trial, or of one record when a
manifest has no trial column) so that windows of one trial never straddle train and test:

* ``loso``: leave one subject out, one fold per subject;
* ``kfold-subject``: subjects dealt into ``k`` folds (subject-independent);
* ``kfold-trial``: subject-dependent; each subject's trials dealt into ``k`` folds, fold ``i``
  tests trials of fold ``i`` of every subject and trains on the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

PROTOCOLS = ("loso", "kfold-subject", "kfold-trial")


@dataclass
class Fold:
    name: str
    train: np.ndarray  # manifest row indices
    test: np.ndarray

    @property
    def sizes(self) -> tuple[int, int]:
        return len(self.train), len(self.test)


def _trial_key(manifest: pl.DataFrame) -> pl.Expr:
    if "trial" in manifest.columns:
        return pl.concat_str([pl.col("subject_id"), pl.col("trial").cast(pl.String)], separator="/")
    return pl.col("record_id")


def _deal(values: list, k: int, rng: np.random.Generator) -> list[list]:
    order = list(rng.permutation(len(values)))
    return [[values[i] for i in order[j::k]] for j in range(k)]


def make_folds(manifest: pl.DataFrame, protocol: str, k: int = 5, seed: int = 0) -> list[Fold]:
    """Folds of ``manifest`` (row indices) under ``protocol``; deterministic for a seed."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if manifest["subject_id"].null_count():
        raise ValueError("the manifest has rows without subject_id: subject-wise protocols need it")
    table = manifest.select(pl.col("subject_id"), _trial_key(manifest).alias("group")).with_row_index("row")
    subjects = sorted(table["subject_id"].unique().to_list())
    rng = np.random.default_rng(seed)
    rows = table["row"].to_numpy()
    if protocol == "loso":
        tests = [[s] for s in subjects]
        names = [f"subject-{s}" for s in subjects]
        column = "subject_id"
    elif protocol == "kfold-subject":
        if k > len(subjects):
            raise ValueError(f"kfold-subject with k={k} needs at least {k} subjects, the manifest has {len(subjects)}")
        tests = _deal(subjects, k, rng)
        names = [f"fold-{i}" for i in range(k)]
        column = "subject_id"
    else:
        tests = [[] for _ in range(k)]
        for subject in subjects:
            groups = sorted(table.filter(pl.col("subject_id") == subject)["group"].unique().to_list())
            if len(groups) < k:
                raise ValueError(f"kfold-trial with k={k}: subject {subject} has only {len(groups)} trials")
            for i, dealt in enumerate(_deal(groups, k, rng)):
                tests[i].extend(dealt)
        names = [f"fold-{i}" for i in range(k)]
        column = "group"
    folds = []
    for name, members in zip(names, tests):
        held = table[column].is_in(members).to_numpy()
        folds.append(Fold(name, rows[~held], rows[held]))
    return folds
