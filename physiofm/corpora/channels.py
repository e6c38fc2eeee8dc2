"""What a source channel is, from its name: an ECG lead (which one), or another signal to skip.

Archives mix ECG with other signals: PhysioNet Challenge 2015 alarm records carry ``II``, ``V``
and ``PLETH``; MIMIC waveform records add ``ABP``, ``RESP``; the PTB Diagnostic ECG Database adds
the Frank leads ``vx``, ``vy``, ``vz`` in a second file.  Readers classify every channel with
:func:`classify`; ECG leads are kept, the others are skipped and listed per record (the
manifest's ``ecg_skipped``), so no record is lost because it also holds a pulse oximeter.

Lead aliases, and why:

* ``DI``, ``DII``, ``DIII`` (CODE-15%, Portuguese/Spanish notation *derivação*) are I, II, III.
* ``MLI``, ``MLII``, ``MLIII`` (MIT-BIH and other Holter records) are *modified* limb leads: the
  limb electrodes sit on the torso (Mason–Likar placement).  Their waveforms are close to the
  standard limb leads', with somewhat larger amplitudes and a shifted axis; they are mapped to
  I, II, III, as every ECG toolkit does, and the mapping is listed in :data:`ALIASES`.
* ``lead X``, ``ECG X`` prefixes and letter case are ignored (``ECG aVF``, ``avf``).
* A bare ``V`` (Challenge 2015, MIMIC waveform records) is a precordial lead whose position the
  record does not say (the bedside monitor's "V" is usually V1 or V5, chosen by the nurse), and
  ``MCL1``/``MCL6`` (modified chest leads) only approximate V1/V6: they are ECG, but not mapped
  to a standard lead, so they are skipped with that reason rather than guessed.
"""

from __future__ import annotations

import re

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_INDEX = {name.lower(): i for i, name in enumerate(STANDARD_LEADS)}
ALIASES = {"di": "I", "dii": "II", "diii": "III", "mli": "I", "mlii": "II", "mliii": "III"}
"""Source name (lower case) -> the standard lead it is read as."""

_UNMAPPED_ECG = re.compile(r"^(v|mcl\d?|cm\d|ecg\d*|ecg|exg\d+|chest|lead|ekg\d*)$")
# Channel types other than ECG, by name (lower case, punctuation removed); first match wins.
_OTHER = (
    ("ppg", re.compile(r"^(pleth|ppg|pulse|plet|bvp)")),
    ("spo2", re.compile(r"^(spo2|sao2|sp02|o2sat)")),
    ("pressure", re.compile(r"^(abp|art|ap|pap|cvp|icp|nbp|bp|uap|lap|rap)(\w*)$")),
    ("resp", re.compile(r"^(resp|rr|imp|thor|abdo|airflow|flow|nasal)")),
    ("eda", re.compile(r"^(eda|gsr)")),
    ("frank", re.compile(r"^(v[xyz]|[xyz])$")),
    ("temperature", re.compile(r"^(temp)")),
    ("eog", re.compile(r"^(eog|heog|veog)")),
    ("emg", re.compile(r"^(emg|erg)")),
    ("status", re.compile(r"^(status|sti\d*|trigger|trig|marker|event)")),
    ("annotation", re.compile(r"^(edfannotations|annotations?)$")),
)


def _key(name: str) -> str:
    key = name.strip().lower()
    for prefix in ("lead ", "ecg ", "ekg "):
        if key.startswith(prefix) and len(key) > len(prefix):
            key = key[len(prefix) :].strip()
    return key


def standard_index(name: str) -> int | None:
    """Index of ``name`` in :data:`STANDARD_LEADS` (case-insensitive, aliases), or None."""
    key = _key(name)
    key = ALIASES.get(key, key).lower()
    return _INDEX.get(key)


def classify(name: str) -> tuple[str, str | None]:
    """``(kind, detail)`` of a source channel.

    ``("ecg", "II")`` for a standard lead (by name or alias); ``("ecg", None)`` for an ECG lead
    that is not one of the 12 (a bare ``V``, ``MCL1``); otherwise the signal's type with ``None``:
    ``ppg``, ``spo2``, ``pressure``, ``resp``, ``eda``, ``frank``, ``temperature``, ``eog``, ``emg``,
    ``status``, ``annotation``, or ``other`` for a name nothing here knows.
    """
    index = standard_index(name)
    if index is not None:
        return "ecg", STANDARD_LEADS[index]
    key = re.sub(r"[^a-z0-9]", "", _key(name))
    if _UNMAPPED_ECG.match(key):
        return "ecg", None
    for kind, pattern in _OTHER:
        if pattern.match(key):
            return kind, None
    return "other", None


def skipped_label(name: str, kind: str, why: str | None = None) -> str:
    """How a skipped channel is listed: ``"PLETH (ppg)"``, ``"V (ecg: not a standard lead)"``."""
    return f"{name} ({kind}{': ' + why if why else ''})"
