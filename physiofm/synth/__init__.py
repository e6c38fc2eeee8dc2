"""Layout-exact generators of the archives physiofm reads (for tests, demos and benchmarks).

Each corpus of the registry names its generator (:attr:`physiofm.corpora.Corpus.generator`);
:func:`generate` writes any of them by name.  The generators keep their own constants (device
calibrations, file layouts) instead of importing the readers', so a test can catch a reader
whose constant is wrong.
"""

from physiofm.synth.ecg import synth_challenge, synth_code15, synth_mimic_iv_ecg, synth_ptbxl, synth_wfdb
from physiofm.synth.signals import CONDITIONS, LEADS, ecg_12lead

__all__ = [
    "CONDITIONS",
    "LEADS",
    "ecg_12lead",
    "generate",
    "synth_challenge",
    "synth_code15",
    "synth_mimic_iv_ecg",
    "synth_ptbxl",
    "synth_wfdb",
]


def generate(name: str, out, *, records: int = 20, subjects: int = 3, seed: int = 0):
    """Write dataset ``name`` (any registered corpus) under ``out``; return its root."""
    from physiofm.corpora import get

    corpus = get(name)
    return corpus.generate(out, records if corpus.size == "records" else subjects, seed=seed)
