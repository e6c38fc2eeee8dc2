"""Layout-exact generators of the archives physiofm reads (for tests and demos)."""

from physiofm.synth.ecg import (
    GENERATORS,
    synth_challenge,
    synth_code15,
    synth_mimic_iv_ecg,
    synth_ptbxl,
)
from physiofm.synth.signals import CONDITIONS, LEADS, ecg_12lead

__all__ = [
    "CONDITIONS",
    "GENERATORS",
    "LEADS",
    "ecg_12lead",
    "generate",
    "synth_challenge",
    "synth_code15",
    "synth_mimic_iv_ecg",
    "synth_ptbxl",
]


def generate(name: str, out, *, records: int = 20, subjects: int = 3, seed: int = 0):
    """Write dataset ``name`` (an ECG archive or an emotion dataset) under ``out``; return its root."""
    from physiofm.synth import emotion

    if name in GENERATORS:
        return GENERATORS[name](out, n_records=records, seed=seed)
    if name in emotion.GENERATORS:
        return emotion.GENERATORS[name](out, subjects=subjects, seed=seed)
    known = ", ".join([*GENERATORS, *emotion.GENERATORS])
    raise ValueError(f"unknown dataset {name!r}; choose one of {known}")
