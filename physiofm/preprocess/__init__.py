"""Preprocessing: pure, vectorised transforms and the preparers that turn records into windows.

A *preparer* turns a batch of :class:`~physiofm.corpora.Record` into samples; there is one per
corpus kind (:data:`physiofm.corpora.KINDS`): ``ecg`` (12 standard leads) and ``emotion``
(paired EEG+ECG windows of the same span).
"""

from __future__ import annotations

import importlib
from types import ModuleType

PREPARERS = {
    "ecg": "physiofm.preprocess.ecg",
    "emotion": "physiofm.preprocess.paired",
    "eeg": "physiofm.preprocess.eeg",
}


def preparer(kind: str) -> ModuleType:
    """The preparer module of a corpus kind: ``MODALITIES`` and ``prepare(records, recipe)``."""
    if kind not in PREPARERS:
        raise ValueError(f"unknown corpus kind {kind!r}; choose one of {', '.join(PREPARERS)}")
    return importlib.import_module(PREPARERS[kind])
