"""ECG lead names: the standard 12-lead order and mapping of the names archives use."""

from __future__ import annotations

import numpy as np

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_INDEX = {name.lower(): i for i, name in enumerate(STANDARD_LEADS)}
# Names seen in real archives for the same leads (CODE-15% "DI", MIT-BIH "MLII" = modified II).
_ALIASES = {"di": "i", "dii": "ii", "diii": "iii", "mli": "i", "mlii": "ii", "mliii": "iii"}


def standard_index(name: str) -> int | None:
    """Index of ``name`` in :data:`STANDARD_LEADS` (case-insensitive, aliases), or None."""
    key = name.strip().lower()
    for prefix in ("lead ", "ecg "):
        if key.startswith(prefix):
            key = key[len(prefix) :].strip()
    key = _ALIASES.get(key, key)
    return _INDEX.get(key)


def lead_mapping(channels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Map source channel names to the standard order.

    Returns ``(source_index, target_index)``: channel ``source_index[k]`` of the source goes
    to standard lead ``target_index[k]``.  Unknown channels are left out; if a lead appears
    twice, the first one wins.
    """
    src: list[int] = []
    dst: list[int] = []
    for i, name in enumerate(channels):
        j = standard_index(name)
        if j is not None and j not in dst:
            src.append(i)
            dst.append(j)
    return np.asarray(src, dtype=np.intp), np.asarray(dst, dtype=np.intp)
