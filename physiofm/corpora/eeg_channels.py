"""The EEG channel contract: which source channel is which 10-20 electrode, and what a channel set is.

Archives name the same electrode many ways: TUH writes ``EEG FP1-REF`` (average-reference
montages) or ``EEG FP1-LE`` (linked ears), EEGMMIDB pads names with dots to four characters
(``Fp1.``, ``Cz..``), BIDS and BioSemi files use ``Fp1``, and the 10-10 system renamed four
temporal/parietal sites (T7/T3, T8/T4, P7/T5, P8/T6).  :func:`normalise` reduces a name to
``(electrode, reference)`` and :func:`match` maps a recording's channels onto a recipe's target
set, in the target's order, with a mask for the targets the recording lacks.  Without such a
contract a channel that is absent is silently zero-padded and trained on (braindecode#995).

Rules (all case-insensitive):

* a ``EEG ``/``POL `` prefix and trailing dots are dropped;
* a suffix naming a reference that is not a scalp electrode (``-REF``, ``-LE``, ``-AR``, ``-AVG``,
  ``-CAR``, ``-A1``, ``-A2``, ``-M1``, ``-M2``, ``-A1A2``, ...) is the channel's reference;
  ``FP1-F7`` (one electrode minus another) is a bipolar derivation and matches no electrode;
* an exact electrode name wins over its 10-10 alias (a file with both ``T3`` and ``T7`` gives
  ``T3`` for the target ``T3``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from physiofm.corpora.channels import classify

CBRAMOD_19 = ("FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2",
              "F7", "F8", "T3", "T4", "T5", "T6", "FZ", "CZ", "PZ")  # fmt: skip
"""CBraMod's pretraining channels, in its order (``preprocessing_tueg_for_pretraining.py``)."""

ALIASES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
"""10-20 name -> its 10-10 name (the same site); matched both ways."""
_ALIAS = {**ALIASES, **{new: old for old, new in ALIASES.items()}}

REFERENCES = frozenset({"REF", "LE", "AR", "AVG", "AV", "CAR", "CAV", "A1", "A2", "M1", "M2", "A1A2", "M1M2",
                        "A12", "LM", "RM", "EARS", "LINKED"})  # fmt: skip
"""Reference suffixes that are not scalp electrodes of a target set."""

_ELECTRODE = re.compile(
    r"^(N|NZ|FP|AFF|AF|FFC|FFT|FC|FT|F|FCC|FTT|C|CCP|CP|TTP|TP|T|CPP|P|PPO|PO|POO|O|OI|I|A|M)(Z|\d+H?)$"
)
_PREFIX = re.compile(r"^(EEG|POL)[\s_:-]+")
# Non-EEG channels of EEG recordings, by normalised name; first match wins (then channels.classify).
_OTHER = (
    ("ecg", re.compile(r"^(EKG|ECG)\w*$")),
    ("eog", re.compile(r"^(EOG|LOC|ROC|HEOG|VEOG|EOGL|EOGR)\w*$")),
    ("emg", re.compile(r"^(EMG|CHIN|LEG)\w*$")),
    ("resp", re.compile(r"^(RESP|THOR|ABD|AIRFLOW|FLOW|SNORE|NASAL)\w*$")),
    ("photic", re.compile(r"^(PHOTIC|PHOT|PH)\w*$")),
    ("derived", re.compile(r"^(IBI|BURSTS|SUPPR|DC\d+|HR|PULSE|SPO2|SAO2)$")),
    ("status", re.compile(r"^(STATUS|STI\d*|TRIGGER|TRIG|MARKER|EVENT|EVENTS)$")),
    ("annotation", re.compile(r"^(EDF ANNOTATIONS|BDF ANNOTATIONS|ANNOTATIONS?)$")),
)


@lru_cache(maxsize=4096)
def normalise(name: str) -> tuple[str, str | None]:
    """``(electrode, reference)`` of a channel name: ``"EEG FP1-REF"`` -> ``("FP1", "REF")``.

    ``electrode`` is upper case without prefix, dots or reference suffix; a bipolar derivation
    (``FP1-F7``) comes back whole (``("FP1-F7", None)``) and so matches no electrode.
    """
    key = _PREFIX.sub("", name.strip().upper()).strip().rstrip(".").strip()
    reference = None
    if "-" in key:
        head, _, tail = key.rpartition("-")
        tail = tail.strip().rstrip(".")
        if tail in REFERENCES and head.strip():
            key, reference = head.strip(), tail
    return key.replace(" ", ""), reference


def is_electrode(name: str) -> bool:
    """Whether ``name`` normalises to a 10-20/10-10/10-5 electrode (``Fp1.``, ``EEG T3-LE``, ``AFF1h``)."""
    return bool(_ELECTRODE.match(normalise(name)[0]))


def kind(name: str) -> str:
    """``"eeg"`` for an electrode, a signal type for a non-EEG channel, ``"other"`` for an unknown name.

    Types: ``ecg``, ``eog``, ``emg``, ``resp``, ``photic``, ``derived`` (TUH's ``IBI``, ``BURSTS``,
    ``SUPPR``), ``status``, ``annotation``, or those of :func:`physiofm.corpora.channels.classify`.
    """
    if is_electrode(name):
        return "eeg"
    electrode = normalise(name)[0]
    for label, pattern in _OTHER:
        if pattern.match(electrode):
            return label
    found, _ = classify(electrode)
    return found


@dataclass(frozen=True)
class Match:
    """A recording's channels mapped onto a target set.

    ``source[i]`` is the index (into the recording's channels) of target ``i``, or -1 when the
    recording lacks it (``present[i]`` False, its name in ``missing``).  ``unused`` are the
    recording's channels no target took, ``"A1 (eeg: not in the channel set)"``.
    """

    targets: tuple[str, ...]
    source: tuple[int, ...]
    missing: tuple[str, ...]
    unused: tuple[str, ...] = ()
    reference: str | None = None
    aliased: tuple[str, ...] = field(default=())  # "T7 as T3"

    @property
    def present(self) -> tuple[bool, ...]:
        return tuple(i >= 0 for i in self.source)


@lru_cache(maxsize=1024)
def match(channels: tuple[str, ...], targets: tuple[str, ...] = CBRAMOD_19) -> Match:
    """Map ``channels`` (a recording's names, in file order) onto ``targets`` (any naming)."""
    keys = [normalise(name) for name in channels]
    by_key: dict[str, int] = {}
    duplicates: list[int] = []
    for i, (electrode, _) in enumerate(keys):
        if electrode in by_key:
            duplicates.append(i)
        else:
            by_key[electrode] = i
    source, missing, aliased = [], [], []
    for target in targets:
        want = normalise(target)[0]
        index = by_key.get(want)
        if index is None and want in _ALIAS:
            index = by_key.get(_ALIAS[want])
            if index is not None:
                aliased.append(f"{channels[index]} as {target}")
        source.append(-1 if index is None else index)
        if index is None:
            missing.append(target)
    taken = {i for i in source if i >= 0}
    unused = tuple(
        f"{name} ({'eeg: duplicate of another channel' if i in duplicates else 'eeg: not in the channel set'})"
        for i, name in enumerate(channels)
        if i not in taken
    )
    references = {keys[i][1] for i in taken}
    reference = references.pop() if len(references) == 1 else None
    return Match(tuple(targets), tuple(source), tuple(missing), unused, reference, tuple(aliased))
