"""The one table of physical units: every conversion between V, mV, µV and nV goes through it."""

from __future__ import annotations

MICROVOLTS = {"v": 1e6, "mv": 1e3, "uv": 1.0, "µv": 1.0, "μv": 1.0, "nv": 1e-3}
"""µV per unit, keyed by the lower-cased unit name."""


def microvolts(unit: str) -> float:
    """µV in one ``unit`` ("V", "mV", "uV"/"µV", "nV"; any case); ``ValueError`` for anything else."""
    try:
        return MICROVOLTS[unit.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown physical unit {unit!r}") from None


def unit_scale(unit: str, target: str = "mV") -> float:
    """Factor that converts values in ``unit`` to ``target``."""
    return microvolts(unit) / microvolts(target)
