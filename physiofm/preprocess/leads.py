"""The standard 12-lead order, and the mapping of a record's ECG channels onto it.

Which names mean which lead is the readers' knowledge (:mod:`physiofm.corpora.channels`); this
module maps a list of channel names to positions in :data:`STANDARD_LEADS`.
"""

from __future__ import annotations

import numpy as np

from physiofm.corpora.channels import STANDARD_LEADS, standard_index

__all__ = ["STANDARD_LEADS", "lead_mapping", "standard_index", "unmapped"]


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


def unmapped(channels: list[str]) -> list[str]:
    """How the channels that :func:`lead_mapping` leaves out are listed in ``ecg_skipped``."""
    out, seen = [], set()
    for name in channels:
        j = standard_index(name)
        if j is None:
            out.append(f"{name} (ecg: not a standard lead)")
        elif j in seen:
            out.append(f"{name} (ecg: a second {STANDARD_LEADS[j]})")
        seen.add(j)
    return out
