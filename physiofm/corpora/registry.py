"""The one registry of corpora: name -> kind, reader module, generator, default recipe.

Everything keyed by a corpus name reads it from here: the build (which reader, which
preparation), ``--format auto`` detection, ``physiofm synth``, the CLI's choices and help, and
the reader conformance test (every corpus added here gets it).  Modules are named by import path
and imported on first use, so the registry costs nothing to import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from physiofm.corpora.base import Reader

KINDS = ("ecg", "emotion", "eeg")
"""What a corpus's records become: ``ecg`` (12-lead windows), ``emotion`` (paired EEG+ECG windows) or
``eeg`` (windows of a recipe's EEG channel set)."""


@dataclass(frozen=True)
class Corpus:
    name: str
    kind: str
    reader_module: str
    generator: str  # "module:function" writing the corpus's exact layout (tests, demos, benchmarks)
    size: str  # what the generator's size argument counts: "records" or "subjects"
    summary: str

    @property
    def recipe(self) -> str:
        """The default recipe's name (``manifests/recipes/<name>.toml``)."""
        return self.name

    @property
    def reader(self) -> Reader:
        return importlib.import_module(self.reader_module)

    def generate(self, out: str | Path, size: int, seed: int = 0, **options: Any) -> Path:
        """Write a generated dataset of ``size`` records or subjects with this corpus's layout."""
        module, function = self.generator.split(":")
        writer = getattr(importlib.import_module(module), function)
        key = "n_records" if self.size == "records" else "subjects"
        return writer(out, **{key: size}, seed=seed, **options)


_ECG, _EMOTION = "physiofm.synth.ecg", "physiofm.synth.emotion"
# The order of each kind is the order in which ``auto`` tries them (most specific layout first).
CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            "code15",
            "ecg",
            "physiofm.corpora.code15",
            f"{_ECG}:synth_code15",
            "records",
            "CODE-15%: exams.csv + exams_part*.hdf5, 400 Hz",
        ),
        Corpus(
            "mimic-iv-ecg",
            "ecg",
            "physiofm.corpora.mimic",
            f"{_ECG}:synth_mimic_iv_ecg",
            "records",
            "MIMIC-IV-ECG: record_list.csv + WFDB files/, 500 Hz",
        ),
        Corpus(
            "ptbxl",
            "ecg",
            "physiofm.corpora.ptbxl",
            f"{_ECG}:synth_ptbxl",
            "records",
            "PTB-XL: ptbxl_database.csv + records100/ or records500/",
        ),
        Corpus(
            "challenge",
            "ecg",
            "physiofm.corpora.challenge",
            f"{_ECG}:synth_challenge",
            "records",
            "PhysioNet/CinC Challenge 2020/2021: .hea + MATLAB v4 .mat",
        ),
        Corpus(
            "wfdb",
            "ecg",
            "physiofm.corpora.wfdb_tree",
            f"{_ECG}:synth_wfdb",
            "records",
            "any WFDB tree (every .hea below the folder)",
        ),
        Corpus(
            "dreamer",
            "emotion",
            "physiofm.corpora.dreamer",
            f"{_EMOTION}:synth_dreamer",
            "subjects",
            "DREAMER: DREAMER.mat, EEG 128 Hz + ECG 256 Hz",
        ),
        Corpus(
            "amigos",
            "emotion",
            "physiofm.corpora.amigos",
            f"{_EMOTION}:synth_amigos",
            "subjects",
            "AMIGOS: Data_Preprocessed_P*.mat, 128 Hz",
        ),
        Corpus(
            "mahnob",
            "emotion",
            "physiofm.corpora.mahnob",
            f"{_EMOTION}:synth_mahnob",
            "subjects",
            "MAHNOB-HCI: Sessions/*/Part_*.bdf + session.xml, 256 Hz",
        ),
        Corpus(
            "tuh-eeg",
            "eeg",
            "physiofm.corpora.tuh",
            "physiofm.synth.eeg:synth_tuh_eeg",
            "records",
            "TUH EEG (TUEG, TUAB, TUEV): edf/.../<montage>/<subject>_s<nnn>_t<nnn>.edf (+ .rec)",
        ),
        Corpus(
            "bids-eeg",
            "eeg",
            "physiofm.corpora.bids",
            "physiofm.synth.eeg:synth_bids_eeg",
            "subjects",
            "BIDS EEG: sub-*/[ses-*/]eeg/*_eeg.{edf,bdf,vhdr,set} + participants/channels/events sidecars",
        ),
        Corpus(
            "edf",
            "eeg",
            "physiofm.corpora.edf",
            "physiofm.synth.eeg:synth_edf",
            "records",
            "any folder of EDF, EDF+, BDF or BDF+ files",
        ),
    )
}


def names(kind: str | None = None) -> tuple[str, ...]:
    """Registered corpus names (of one kind), in detection order."""
    return tuple(name for name, corpus in CORPORA.items() if kind is None or corpus.kind == kind)


def get(name: str) -> Corpus:
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)}")
    return CORPORA[name]


def detect(root: str, kind: str | None = None) -> Corpus:
    """The first corpus (of ``kind``) whose layout ``root`` matches."""
    candidates = names(kind)
    for name in candidates:
        if CORPORA[name].reader.detect(root):
            return CORPORA[name]
    raise ValueError(f"{root} matches none of the known layouts ({', '.join(candidates)})")
