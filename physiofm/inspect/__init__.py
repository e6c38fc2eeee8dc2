"""Stores and runs that explain themselves: one sample as a picture, a store or runs as one HTML page.

* :func:`physiofm.inspect.show.draw_sample` (``physiofm show``): every channel of one stored window
  on a shared time axis, with lead names, the lead mask, units, scale bars, ids and labels; with
  ``raw=True`` the source record's same span, read back through the corpus reader, drawn beneath.
* :func:`physiofm.inspect.store_report.store_report` (``physiofm report STORE --out``): counts,
  rejects, balance, amplitudes, the recipe and versions and a few drawn samples, read from the
  store's tables and only the samples it draws.
* :func:`physiofm.inspect.run_report.run_report` (``physiofm report RUN... --out``): the comparison
  of fine-tuning runs, their ROC curves and the loss curves of pretraining runs.

Nothing heavy is imported here (the modules import matplotlib and polars when used).
"""

from __future__ import annotations

from physiofm.io import StorageOptions, join, url_to_fs

__all__ = ["InspectError", "kind_of"]

RUN_FILES = ("results.json", "metrics.jsonl")
"""A run folder holds one of these: ``results.json`` (fine-tuning) or ``metrics.jsonl`` (pretraining)."""


class InspectError(RuntimeError):
    """What cannot be shown or reported, and why (one line a person can act on)."""


def kind_of(path: str, storage_options: StorageOptions | None = None) -> str | None:
    """``"store"`` (a ``build.json``), ``"run"`` (``results.json`` or ``metrics.jsonl``) or None."""
    try:
        fs, root = url_to_fs(path, storage_options)
        if fs.exists(join(root, "build.json")):
            return "store"
        if any(fs.exists(join(root, name)) for name in RUN_FILES):
            return "run"
    except (OSError, ValueError, ImportError):
        return None
    return None
