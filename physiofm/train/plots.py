"""The training commands' figures: a metric against steps, and ROC curves per target."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def figure(path: Path, size: tuple[float, float]) -> Iterator[Any]:
    """Axes of a new figure (Agg backend, 100 dpi), saved as ``path`` (tight layout) and closed on leaving."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(figsize=size, dpi=100)
    try:
        yield axes
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def plot_curve(records: list[dict[str, Any]], key: str, path: Path, title: str) -> None:
    """A PNG of ``key`` against ``step``."""
    points = [(r["step"], r[key]) for r in records if key in r]
    with figure(path, (6, 3.5)) as axes:
        if points:
            axes.plot(*zip(*points))
        axes.set_xlabel("step")
        axes.set_ylabel(key)
        axes.set_title(title)
        axes.grid(alpha=0.3)


def plot_roc(per_fold: dict[str, dict], targets: tuple[str, ...], out: Path) -> None:
    """One PNG per target (``roc_<target>.png`` in ``out``): each fold's ROC curve and the pooled one."""
    from sklearn.metrics import roc_curve

    for i, target in enumerate(targets):
        with figure(out / f"roc_{target}.png", (4.5, 4.5)) as axes:
            pooled_true, pooled_prob = [], []
            for result in per_fold.values():
                true, prob = np.array(result["true"])[:, i], np.array(result["prob"])[:, i]
                pooled_true.append(true)
                pooled_prob.append(prob)
                if 0 < true.sum() < len(true):
                    fpr, tpr, _ = roc_curve(true, prob)
                    axes.plot(fpr, tpr, alpha=0.35, linewidth=1)
            true, prob = np.concatenate(pooled_true), np.concatenate(pooled_prob)
            if 0 < true.sum() < len(true):
                fpr, tpr, _ = roc_curve(true, prob)
                axes.plot(fpr, tpr, color="black", linewidth=2, label="pooled")
            axes.plot([0, 1], [0, 1], linestyle="--", color="grey")
            axes.set_xlabel("false positive rate")
            axes.set_ylabel("true positive rate")
            axes.set_title(f"{target} (high vs low)")
            axes.legend(loc="lower right")
