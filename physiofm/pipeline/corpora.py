"""The registry of readers: one module per corpus, found by name or detected from a folder."""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module; the order is the order in which ``auto`` tries them (most specific first).
_MODULES = {
    "code15": "physiofm.pipeline.code15",
    "mimic-iv-ecg": "physiofm.pipeline.mimic",
    "ptbxl": "physiofm.pipeline.ptbxl",
    "challenge": "physiofm.pipeline.challenge",
    "wfdb": "physiofm.pipeline.wfdb_dir",
    "dreamer": "physiofm.pipeline.dreamer",
    "amigos": "physiofm.pipeline.amigos",
    "mahnob": "physiofm.pipeline.mahnob",
}
ECG_FORMATS = ("code15", "mimic-iv-ecg", "ptbxl", "challenge", "wfdb")
EMOTION_DATASETS = ("dreamer", "amigos", "mahnob")


def kind_of(name: str) -> str:
    """``"ecg"`` or ``"emotion"``: which preparation a corpus's records go through."""
    return "ecg" if name in ECG_FORMATS else "emotion"


def get(name: str) -> ModuleType:
    if name not in _MODULES:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(_MODULES)} or 'auto'")
    return importlib.import_module(_MODULES[name])


def detect(root: str, candidates: tuple[str, ...] = ECG_FORMATS) -> str:
    """The first corpus in ``candidates`` whose layout ``root`` matches."""
    for name in candidates:
        if get(name).detect(root):
            return name
    raise ValueError(f"{root} matches none of the known layouts ({', '.join(candidates)})")
