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
    "synth_challenge",
    "synth_code15",
    "synth_mimic_iv_ecg",
    "synth_ptbxl",
]
