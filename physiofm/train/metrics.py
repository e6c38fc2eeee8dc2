"""Binary classification metrics per target, and their mean and spread over folds."""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

METRICS = ("roc_auc", "f1", "accuracy", "balanced_accuracy")


def binary_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """ROC-AUC (NaN when the test set holds one class), F1 of the positive class, accuracy and
    balanced accuracy at ``threshold`` on predicted probabilities."""
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_prob) >= threshold
    auc = skm.roc_auc_score(y_true, y_prob) if 0 < y_true.sum() < len(y_true) else math.nan
    return {
        "roc_auc": float(auc),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred))
        if y_true.any() and not y_true.all()
        else float(skm.accuracy_score(y_true, y_pred)),
        "n": int(len(y_true)),
        "positives": int(y_true.sum()),
    }


def summarize(per_fold: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{target: {metric: {"mean", "std", "folds"}}}`` over folds (NaN folds left out of the AUC)."""
    targets = per_fold[0].keys() if per_fold else []
    out: dict[str, dict[str, dict[str, float]]] = {}
    for target in targets:
        out[target] = {}
        for metric in METRICS:
            values = np.array([fold[target][metric] for fold in per_fold], dtype=float)
            finite = values[~np.isnan(values)]
            out[target][metric] = {
                "mean": float(finite.mean()) if len(finite) else math.nan,
                "std": float(finite.std()) if len(finite) else math.nan,
                "folds": int(len(finite)),
            }
    return out
