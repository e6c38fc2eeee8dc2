"""Classification metrics: per class and macro, thresholds chosen on validation, bootstrap intervals.

* :func:`binary_metrics`: ROC-AUC, PR-AUC (average precision), F1 of the positive class,
  accuracy and balanced accuracy at a threshold.  AUCs are NaN when the set holds one class, and
  F1 is NaN when it holds no positive (undefined there; a zero would drag a mean over folds).
* :func:`choose_threshold`: the threshold that maximises F1 on validation predictions.
* :func:`evaluate`: per-class metrics at 0.5, F1 (and accuracies) at the thresholds chosen on
  validation, and their macro means over classes; multi-class tasks add accuracy and macro F1
  of the arg-max.
* :func:`bootstrap_ci`: percentile intervals of macro and per-class metrics, resampling whole
  subjects (clusters) of the test set; optionally averaged over several predictions of the same
  rows (seeds), so the interval is that of the seed mean.
* :func:`summarize`: mean and spread of per-fold metrics (NaN folds left out, and counted).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

METRICS = ("roc_auc", "pr_auc", "f1", "accuracy", "balanced_accuracy")
MACRO = ("roc_auc", "pr_auc", "f1", "accuracy", "balanced_accuracy")
INTERVAL_METRICS = ("roc_auc", "pr_auc", "f1")


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC from ranks (ties averaged, as sklearn); NaN with one class."""
    y = np.asarray(y, bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(p)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision (PR-AUC, as ``sklearn.metrics.average_precision_score``); NaN without positives."""
    y = np.asarray(y, bool)
    positives = int(y.sum())
    if positives == 0:
        return math.nan
    order = np.argsort(-np.asarray(p, float), kind="mergesort")
    scores, hits = np.asarray(p, float)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # last index of each distinct score
    tps = np.cumsum(hits)[last]
    precision = tps / (last + 1)
    recall = tps / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _f1(y: np.ndarray, predicted: np.ndarray) -> float:
    positives = int(y.sum())
    if positives == 0:
        return math.nan
    tp = int((y & predicted).sum())
    return 2 * tp / (positives + int(predicted.sum()))


def binary_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """ROC-AUC and PR-AUC (NaN when the set holds one class / no positive), F1 of the positive class
    (NaN without positives), accuracy and balanced accuracy at ``threshold`` on probabilities."""
    y_true = np.asarray(y_true).astype(bool)
    y_prob = np.asarray(y_prob, float)
    y_pred = y_prob >= threshold
    both = bool(y_true.any() and not y_true.all())
    return {
        "roc_auc": roc_auc(y_true, y_prob),
        "pr_auc": average_precision(y_true, y_prob) if both else math.nan,
        "f1": _f1(y_true, y_pred),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else math.nan,
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred))
        if both
        else (float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else math.nan),
        "n": int(len(y_true)),
        "positives": int(y_true.sum()),
    }


def choose_threshold(y_val: np.ndarray, p_val: np.ndarray, default: float = 0.5) -> float:
    """The probability threshold with the highest F1 on validation (``default`` without positives there).

    Candidates are the midpoints between consecutive distinct validation probabilities; ties go
    to the threshold closest to ``default``.
    """
    known = ~np.isnan(np.asarray(y_val, float))
    y, p = np.asarray(y_val)[known].astype(bool), np.asarray(p_val, float)[known]
    if not y.any():
        return default
    order = np.argsort(-p, kind="mergesort")
    scores, hits = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(hits)[last]
    f1 = 2 * tps / (y.sum() + last + 1)  # predicting positive every score >= scores[last]
    below = np.r_[scores[last][1:], -np.inf]
    cuts = np.where(np.isfinite(below), (scores[last] + below) / 2, scores[last] - 1e-6)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best] - default))]])


def _known(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(y)
    return y[keep], p[keep]


def evaluate(
    true: np.ndarray,
    prob: np.ndarray,
    classes: Sequence[str],
    kind: str = "binary",
    thresholds: Sequence[float] | None = None,
) -> dict:
    """Metrics of ``prob`` (rows, classes) against ``true`` (NaN: unknown) for every class.

    Returns ``{"per_class": {class: binary_metrics at 0.5}, "tuned": {class: {"threshold", "f1",
    "accuracy", "balanced_accuracy"}}, "macro": {metric: mean over classes (NaN left out)},
    "classes_scored": {metric: classes counted}}``; ``thresholds`` (one per class, e.g. from
    :func:`choose_threshold` on validation) default to 0.5, and the macro F1 and accuracies are
    those at these thresholds.  Multi-class tasks (``kind="multiclass"``) score the arg-max instead:
    ``macro["f1"]`` is the macro F1 and ``macro["accuracy"]`` the accuracy of the predicted class.
    """
    true, prob = np.asarray(true, float), np.asarray(prob, float)
    thresholds = list(thresholds) if thresholds is not None else [0.5] * len(classes)
    per_class, tuned = {}, {}
    for i, name in enumerate(classes):
        y, p = _known(true[:, i], prob[:, i])
        per_class[name] = binary_metrics(y, p)
        at = binary_metrics(y, p, thresholds[i])
        tuned[name] = {"threshold": float(thresholds[i]), **{m: at[m] for m in ("f1", "accuracy", "balanced_accuracy")}}
    macro, scored = {}, {}
    for metric in MACRO:
        source = per_class if metric in ("roc_auc", "pr_auc") else tuned
        values = np.array([source[c][metric] for c in classes], float)
        finite = values[~np.isnan(values)]
        macro[metric] = float(finite.mean()) if len(finite) else math.nan
        scored[metric] = int(len(finite))
    if kind == "multiclass":
        known = ~np.isnan(true).any(axis=1)
        truth, guess = true[known].argmax(axis=1), prob[known].argmax(axis=1)
        if len(truth):
            macro["f1"] = float(
                skm.f1_score(truth, guess, average="macro", labels=range(len(classes)), zero_division=0)
            )
            macro["accuracy"] = float(skm.accuracy_score(truth, guess))
            macro["balanced_accuracy"] = float(skm.balanced_accuracy_score(truth, guess))
    return {"per_class": per_class, "tuned": tuned, "macro": macro, "classes_scored": scored}


def _scores(true: np.ndarray, probs: list[np.ndarray], decisions: list[np.ndarray]) -> np.ndarray:
    """(metrics, classes) of each metric in INTERVAL_METRICS (F1 from ``decisions``), averaged over ``probs``."""
    out = np.full((len(probs), len(INTERVAL_METRICS), true.shape[1]), np.nan)
    for s, (prob, decided) in enumerate(zip(probs, decisions)):
        for i in range(true.shape[1]):
            keep = ~np.isnan(true[:, i])
            y, p, d = true[keep, i].astype(bool), prob[keep, i], decided[keep, i]
            out[s, 0, i] = roc_auc(y, p)
            out[s, 1, i] = average_precision(y, p) if y.any() and not y.all() else math.nan
            out[s, 2, i] = _f1(y, d)
    if len(probs) == 1:
        return out[0]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(out, axis=0)


def _macro(scores: np.ndarray) -> list[float]:
    return [float(np.mean(row[np.isfinite(row)])) if np.isfinite(row).any() else math.nan for row in scores]


def _inputs(true, probs, decisions) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    true = np.asarray(true, float)
    probs = [np.asarray(p, float) for p in (probs if isinstance(probs, list) else [probs])]
    if decisions is None:
        decisions = [p >= 0.5 for p in probs]
    decisions = [np.asarray(d, bool) for d in (decisions if isinstance(decisions, list) else [decisions])]
    return true, probs, decisions


def point_scores(true: np.ndarray, probs, decisions=None, classes: Sequence[str] = ()) -> dict:
    """Macro and per-class ROC-AUC, PR-AUC and F1 on the whole set: the statistic :func:`bootstrap_ci` resamples.

    ``probs``: one ``(rows, classes)`` array or a list (seeds: each metric is then their mean);
    ``decisions``: the matching boolean predictions for F1 (default ``prob >= 0.5``).
    """
    true, probs, decisions = _inputs(true, probs, decisions)
    classes = list(classes) or [str(i) for i in range(true.shape[1])]
    scores = _scores(true, probs, decisions)
    return {
        "macro": dict(zip(INTERVAL_METRICS, _macro(scores))),
        "per_class": {
            c: {m: float(scores[j, i]) for j, m in enumerate(INTERVAL_METRICS)} for i, c in enumerate(classes)
        },
    }


def bootstrap_ci(
    true: np.ndarray,
    probs,
    groups: np.ndarray | None = None,
    classes: Sequence[str] = (),
    decisions=None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Percentile bootstrap intervals of macro and per-class ROC-AUC, PR-AUC and F1 on a test set.

    ``probs``: one ``(rows, classes)`` array, or a list of them for the same rows (seeds): each
    resample's statistic is then their mean.  ``groups`` (e.g. subject ids per row): resample
    whole groups, as rows of one subject are not independent; default rows.  ``decisions``: the
    boolean predictions F1 is computed from (as ``probs``; default ``prob >= 0.5``).  A resample
    where a class has one label leaves that class out of its macro mean; an interval needs a
    quarter of the resamples finite (else NaN).  Returns ``{"macro": {metric: [low, high]},
    "per_class": {class: {metric: [low, high]}}, "n_boot", "level", "unit"}``.
    """
    true, probs, decisions = _inputs(true, probs, decisions)
    classes = list(classes) or [str(i) for i in range(true.shape[1])]
    groups = np.arange(len(true)) if groups is None else np.asarray(groups)
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    macro = np.full((n_boot, len(INTERVAL_METRICS)), np.nan)
    per_class = np.full((n_boot, len(INTERVAL_METRICS), true.shape[1]), np.nan)
    for b in range(n_boot):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(names), len(names))])
        scores = _scores(true[pick], [p[pick] for p in probs], [d[pick] for d in decisions])
        per_class[b] = scores
        macro[b] = _macro(scores)
    tail = (1 - level) / 2 * 100

    def interval(values: np.ndarray) -> list[float]:
        finite = values[np.isfinite(values)]
        if not len(finite) or len(finite) < n_boot / 4:
            return [math.nan, math.nan]
        return [float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))]

    return {
        "macro": {m: interval(macro[:, j]) for j, m in enumerate(INTERVAL_METRICS)},
        "per_class": {
            c: {m: interval(per_class[:, j, i]) for j, m in enumerate(INTERVAL_METRICS)} for i, c in enumerate(classes)
        },
        "n_boot": int(n_boot),
        "level": level,
        "unit": "subject" if len(names) < len(true) else "row",
    }


def summarize(per_fold: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{target: {metric: {"mean", "std", "folds"}}}`` over folds (NaN folds left out)."""
    targets = per_fold[0].keys() if per_fold else []
    out: dict[str, dict[str, dict[str, float]]] = {}
    for target in targets:
        out[target] = {}
        for metric in METRICS:
            values = np.array([fold[target].get(metric, math.nan) for fold in per_fold], dtype=float)
            finite = values[~np.isnan(values)]
            out[target][metric] = {
                "mean": float(finite.mean()) if len(finite) else math.nan,
                "std": float(finite.std()) if len(finite) else math.nan,
                "folds": int(len(finite)),
            }
    return out
