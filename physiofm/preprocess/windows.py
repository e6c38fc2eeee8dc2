"""How records are cut into samples: one :class:`WindowSpec` read from a recipe, and sample keys."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class WindowSpec:
    """Windows of ``seconds`` at ``fs`` Hz, cut into patches of ``patch`` samples.

    ``samples`` is the window length in samples; a last, shorter window is kept (zero-padded)
    when it holds at least ``pad_min`` samples; ``last_seconds`` (emotion recipes) keeps only the
    end of each segment (0: all of it).
    """

    fs: float
    seconds: float
    patch: int
    pad_min: int
    last_seconds: float = 0.0

    @classmethod
    def from_recipe(cls, recipe: dict) -> WindowSpec:
        fs, window = float(recipe["signal"]["fs"]), recipe["window"]
        return cls(
            fs,
            float(window["seconds"]),
            int(window["patch"]),
            int(round(float(window["pad_last_min_seconds"]) * fs)),
            float(window.get("last_seconds", 0) or 0),
        )

    @property
    def samples(self) -> int:
        return int(round(self.seconds * self.fs))

    @property
    def patches(self) -> int:
        return self.samples // self.patch


def sample_key(record_id: str, window: int) -> str:
    """A WebDataset-safe key (no dots, no slashes) for window ``window`` of a record."""
    return f"{_UNSAFE.sub('-', record_id).strip('-')}_w{window:03d}"
