"""Fine-tuning and evaluation of encoders on any labelled store, under a subject-wise protocol.

Targets (:mod:`physiofm.train.labels`): binary columns (emotion ``valence`` → ``valence_high``),
one multi-label list column (PTB-XL ``ptbxl_superclass`` …, Challenge ``dx``) or one multi-class
column.  The label vocabulary is resolved once from the whole manifest (or given as ``classes``)
and written to the run as ``labels.json`` before any fold; a resumed run must find the same.

Protocols (:mod:`physiofm.train.protocols`): ``loso``, ``kfold-subject``, ``kfold-trial`` and
``ptbxl`` (folds 1–8 / 9 / 10).  Each fold's training rows keep a validation split
(``val_fraction`` of its subjects, or PTB-XL's fold 9) that chooses the checkpoint (or the
head's regularisation) and the decision threshold of each class; the test rows are scored once,
with the selected model.

Modes: ``full`` trains encoders and head end to end (streaming the store; ``freeze`` may hold a
branch fixed); ``linear`` and ``frozen-mlp`` freeze every encoder, embed each usable row once
(mean-pooled features, :func:`physiofm.train.embed.pooled_embeddings`), standardise each
feature on the fold's training rows and fit a linear head (L-BFGS, its L2 strength chosen on
validation) or an MLP head (AdamW, best validation checkpoint) on them.

A run is a grid of *cells*: the encoder as given (``pretrained`` when any weights are given,
else ``random``), each ``baselines`` entry (``random``: the same architecture randomly
initialised, same mode; ``scratch``: randomly initialised and trained ``full``, i.e. supervised
from scratch), each of ``label_fractions`` (nested subject-wise subsets of every fold's training
rows, :func:`~physiofm.train.protocols.label_subsets`; validation stays whole) and ``seeds``
seeds (subset, initialisation and order).  The primary cell (the encoder as given, the largest
fraction, the first seed) lives in the run folder itself: ``folds/<fold>.json``,
``results.json``, ROC PNGs; the others in ``cells/<name>/`` with the same files.  The run's
``results.json`` adds ``evaluation``: per encoder, mode and fraction, pooled test macro ROC-AUC,
PR-AUC and F1 (mean ± sd over seeds) with a bootstrap 95 % interval over test subjects of
their seed mean, beside the mean over folds; ``label_efficiency.png`` draws macro ROC-AUC
against label fraction, one line per encoder.  Folds a resumed run already finished are reused.

Per fold: per-class metrics at 0.5 (``metrics``), F1 and accuracies at the validation
thresholds (``tuned``), their macro means, the predictions and rows.  Per cell: mean and
spread over folds (``summary``: F1 and accuracies at the validation thresholds; folds whose
test set holds one class leave their AUC out and are counted) and ``pooled`` metrics over all
test predictions with their intervals.

Under ``torchrun`` (:mod:`physiofm.train.distributed`) every fold runs on all ranks: the full mode
trains in ``DistributedDataParallel`` on disjoint shares of the fold's training rows, each
rank predicts its share of the validation and test rows, and the predictions are gathered to
every rank before any decision or metric; frozen modes embed in shares and fit the head on
rank 0.  Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from physiofm.models import FusionClassifier
from physiofm.store.layout import Layout
from physiofm.train import distributed
from physiofm.train.data.stream import StreamingDataset
from physiofm.train.embed import load_encoder, pooled_embeddings
from physiofm.train.labels import LABELS_FILE, LabelSpec, read_labels, resolve_labels, write_labels
from physiofm.train.loop import TrainOptions, autocast, seed_step
from physiofm.train.metrics import (
    bootstrap_ci,
    choose_threshold,
    evaluate,
    point_scores,
    roc_auc,
    summarize,
)
from physiofm.train.plots import plot_roc
from physiofm.train.protocols import label_subsets, make_folds, subjects
from physiofm.train.step import launch, optimisation_step, schedule

MODES = ("full", "frozen-mlp", "linear")
BASELINES = ("random", "scratch")
L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # the linear probe's L2 strengths, chosen on validation
ROC_PLOTS = 12  # classes drawn as ROC PNGs at most


@dataclass
class FinetuneConfig(TrainOptions):
    modalities: tuple[str, ...] = ("eeg", "ecg")
    targets: tuple[str, ...] = ("valence", "arousal", "dominance")
    label_kind: str = "auto"  # auto | binary | multilabel | multiclass
    classes: tuple[str, ...] = ()  # a fixed vocabulary (default: every class of the whole manifest)
    min_count: int = 1  # classes held by fewer rows of the manifest are left out of the vocabulary
    drop_empty: bool = True  # multi-label rows with an empty list are left out
    protocol: str = "kfold-subject"
    folds: int = 5
    val_fraction: float = 0.2
    mode: str = "full"
    label_fractions: tuple[float, ...] = (1.0,)
    seeds: int = 1
    baselines: tuple[str, ...] = ("random",)
    eeg_weights: str | None = None
    ecg_weights: str | None = None
    epochs: int = 10
    lr: float = 1e-4
    head_lr: float = 1e-3
    pooling: str = "mean"
    freeze: tuple[str, ...] = ()
    eeg_model: dict = field(default_factory=dict)
    ecg_model: dict = field(default_factory=dict)
    segment: str = "stimulus"
    eval_every: int = 0  # steps between validation passes (0: about 8 per run, at most one per epoch)
    patience: int = 0  # stop after this many validation passes without improvement (0: never)
    bootstrap: int = 1000  # resamples of the bootstrap intervals (0: none)
    modality_dropout: float = 0.0  # fusion: per training sample, drop one branch with this probability


@dataclass(frozen=True)
class Cell:
    """One configuration of a run: an encoder variant, a mode, a label fraction and a seed."""

    encoder: str  # pretrained | random | scratch
    mode: str
    fraction: float
    seed: int
    weights: tuple[tuple[str, str | None], ...]  # (modality, weights or None)

    @property
    def name(self) -> str:
        return f"{self.encoder}-{self.mode}-f{self.fraction:g}-s{self.seed}"

    @property
    def frozen(self) -> bool:
        return self.mode != "full"


def _weights(config: FinetuneConfig) -> dict[str, str | None]:
    return {m: (config.eeg_weights if m == "eeg" else config.ecg_weights) for m in config.modalities}


def cells(config: FinetuneConfig) -> list[Cell]:
    """The run's cells, the primary one first (the encoder as given, the largest fraction, the first seed)."""
    if config.mode not in MODES:
        raise ValueError(f"unknown mode {config.mode!r}; choose one of {', '.join(MODES)}")
    unknown = sorted(set(config.baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {', '.join(BASELINES)}")
    if config.seeds < 1:
        raise ValueError("seeds must be at least 1")
    weights = _weights(config)
    given = "pretrained" if any(weights.values()) else "random"
    variants = [(given, config.mode, tuple(weights.items()))]
    none = tuple((m, None) for m in config.modalities)
    if "random" in config.baselines and given == "pretrained":
        variants.append(("random", config.mode, none))
    if "scratch" in config.baselines and not (given == "random" and config.mode == "full"):
        variants.append(("scratch", "full", none))
    fractions = sorted(set(config.label_fractions), reverse=True)
    seeds = [config.seed + i for i in range(config.seeds)]
    return [Cell(e, mode, f, s, w) for e, mode, w in variants for f in fractions for s in seeds]


# ---- models ------------------------------------------------------------------------------------


def _sizes(config: FinetuneConfig) -> dict[str, dict]:
    """The encoder size per modality: a pretrained encoder's own (so its random twin matches), else the asked one."""
    sizes = {}
    for modality, weights in _weights(config).items():
        asked = config.eeg_model if modality == "eeg" else config.ecg_model
        if weights is None:
            sizes[modality] = dict(asked)
        else:
            sizes[modality] = dict(load_encoder(weights, asked).config)
    return sizes


def _encoders(cell: Cell, sizes: dict[str, dict], seed: int) -> dict:
    torch.manual_seed(seed)
    return {m: load_encoder(w, sizes[m] if w is None else {**sizes[m]}, seed=seed + 31 * i)
            for i, (m, w) in enumerate(cell.weights)}  # fmt: skip


def _build_model(
    config: FinetuneConfig, device: torch.device, fold_index: int, cell: Cell, sizes: dict, n_outputs: int
) -> FusionClassifier:
    seed = cell.seed * 7919 + fold_index
    encoders = _encoders(cell, sizes, seed)
    torch.manual_seed(seed)
    model = FusionClassifier(
        eeg=encoders.get("eeg"),
        ecg=encoders.get("ecg"),
        n_targets=n_outputs,
        pooling=config.pooling,
        freeze_eeg="eeg" in config.freeze,
        freeze_ecg="ecg" in config.freeze,
        modality_dropout=config.modality_dropout,
    )
    return model.to(device)


def _optimizer(model: FusionClassifier, config: FinetuneConfig) -> torch.optim.Optimizer:
    encoders = [p for name, p in model.named_parameters() if p.requires_grad and name.startswith(("eeg.", "ecg."))]
    head = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith(("eeg.", "ecg."))]
    return torch.optim.AdamW(
        [{"params": encoders, "lr": config.lr}, {"params": head, "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )


def _forward(model: torch.nn.Module, batch: dict, config: FinetuneConfig, device: torch.device) -> torch.Tensor:
    inputs = {m: batch[m].to(device, non_blocking=True) for m in config.modalities}  # pinned by the loader
    if "ecg" in inputs and "lead_mask" in batch:
        inputs["ecg_lead_mask"] = batch["lead_mask"].to(device, non_blocking=True)
    return model(**inputs, keep=~batch["pad"].to(device, non_blocking=True))


def _dataset(config: FinetuneConfig, rows: np.ndarray, shuffle: bool, seed: int) -> StreamingDataset:
    return StreamingDataset(
        config.store,
        batch_size=config.batch_size,
        modalities=list(config.modalities),
        rows=rows,
        shuffle=shuffle,
        seed=seed,
        num_workers=config.workers,
        storage_options=config.storage_options,
    )


# ---- the task: labels by store row, loss and probabilities ------------------------------------


class Task:
    """The labels of a run by store row, and what its kind needs: the loss, probabilities, a validation score."""

    def __init__(self, spec: LabelSpec, store_rows: np.ndarray, labels: np.ndarray) -> None:
        self.spec = spec
        self.table = np.full((int(store_rows.max()) + 1 if len(store_rows) else 0, spec.n_outputs), np.nan, np.float32)
        self.table[store_rows] = labels

    @property
    def multiclass(self) -> bool:
        return self.spec.kind == "multiclass"

    def labels(self, rows: np.ndarray) -> np.ndarray:
        return self.table[np.asarray(rows, dtype=np.int64)]

    def error(
        self, logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This batch's summed loss and the count it sums over (labelled values, or rows for multi-class)."""
        if self.multiclass:
            known = keep & ~torch.isnan(target).any(dim=1)
            index = torch.nan_to_num(target).argmax(dim=1)
            loss = torch.nn.functional.cross_entropy(logits, index, reduction="none")
            return (loss * known).sum(), known.sum()
        known = keep[:, None] & ~torch.isnan(target)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.nan_to_num(target), reduction="none")
        return (loss * known).sum(), known.sum()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1) if self.multiclass else torch.sigmoid(logits)

    def score(self, true: np.ndarray, prob: np.ndarray) -> float:
        """Model selection: macro ROC-AUC over classes (both labels present), else minus the mean loss."""
        aucs = [roc_auc(true[k, i], prob[k, i]) for i in range(true.shape[1]) if (k := ~np.isnan(true[:, i])).any()]
        finite = [a for a in aucs if not math.isnan(a)]
        if finite:
            return float(np.mean(finite))
        p = np.clip(prob, 1e-7, 1 - 1e-7)
        if self.multiclass:
            known = ~np.isnan(true).any(axis=1)
            return float(np.mean(np.log(p[known][true[known].astype(bool)]))) if known.any() else 0.0
        known = ~np.isnan(true)
        y = np.nan_to_num(true)
        return float(np.mean((y * np.log(p) + (1 - y) * np.log(1 - p))[known])) if known.any() else 0.0

    def thresholds(self, true: np.ndarray, prob: np.ndarray) -> list[float]:
        if self.multiclass or not len(true):
            return [0.5] * self.spec.n_outputs
        return [choose_threshold(true[:, i], prob[:, i]) for i in range(self.spec.n_outputs)]

    def decisions(self, prob: np.ndarray, thresholds) -> np.ndarray:
        if self.multiclass:
            return np.eye(self.spec.n_outputs, dtype=bool)[prob.argmax(axis=1)] if len(prob) else prob.astype(bool)
        return prob >= np.asarray(thresholds, float)[None, :]


# ---- full mode: encoders and head end to end, streaming -----------------------------------------


def _predict(model, config, task, rows, device) -> tuple[np.ndarray, np.ndarray]:
    """(rows, probabilities) of ``rows`` from every rank, in rank order."""
    model.eval()
    probabilities, got = [], []
    with torch.no_grad():
        for batch in _dataset(config, rows, False, 0).loader():
            keep = ~batch["pad"]
            with autocast(device, config.precision):
                logits = _forward(model, batch, config, device)
            probabilities.append(task.probabilities(logits.float()).cpu()[keep])
            got.append(batch["row"][keep])
    prob = torch.cat(probabilities).numpy() if probabilities else np.zeros((0, task.spec.n_outputs), np.float32)
    rows = torch.cat(got).numpy() if got else np.zeros(0, np.int64)
    return distributed.all_concat(rows), distributed.all_concat(prob)


def _train_full(config, cell, sizes, task, fold_index, train_rows, val_rows, device) -> dict:
    rank = distributed.rank()
    model = _build_model(config, device, fold_index, cell, sizes, task.spec.n_outputs)
    optimizer = _optimizer(model, config)
    net = distributed.wrap(model, device)
    train = _dataset(config, train_rows, True, cell.seed + fold_index)
    total, scheduler = schedule(optimizer, config, train.batches_per_epoch)
    every = config.eval_every or max(1, min(train.batches_per_epoch, total // 8))
    step, epoch, losses, history = 0, 0, [], []
    best, best_state, stale, stopped = -math.inf, None, 0, False
    model.train()
    while step < total:
        train.set_epoch(epoch)
        for batch in train.loader():
            seed_step(cell.seed + 104_729 * fold_index, step, rank)
            keep = ~batch["pad"].to(device, non_blocking=True)
            target = torch.from_numpy(task.labels(batch["row"].clamp(min=0).numpy())).to(device)
            with autocast(device, config.precision):
                logits = _forward(net, batch, config, device)
            error, count = task.error(logits.float(), target, keep)
            loss, _, _ = optimisation_step(error, count, model, optimizer, scheduler, config.clip)
            losses.append(loss)
            step += 1
            if len(val_rows) and (step % every == 0 or step == total):
                rows, prob = _predict(model, config, task, val_rows, device)
                score = task.score(task.labels(rows), prob)
                history.append({"step": step, "score": score})
                if score > best:
                    best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
                else:
                    stale += 1
                model.train()
                stopped = bool(config.patience and stale >= config.patience)  # every rank saw the same scores
            if step >= total or stopped:
                break
        if stopped:
            break
        epoch += 1
    if best_state is not None:
        model.load_state_dict(best_state)
    chosen = max(history, key=lambda h: h["score"])["step"] if history else step
    return {
        "model": model,
        "steps": step,
        "final_loss": float(np.mean(losses[-5:])) if losses else None,
        "selection": {"by": "validation macro ROC-AUC (else log-likelihood)", "step": chosen,
                      "score": best if history else None, "history": history},
    }  # fmt: skip


# ---- frozen modes: heads on pooled embeddings ------------------------------------------------------


@contextlib.contextmanager
def _one_thread():
    """Heads on embeddings are tiny: one thread is faster than a team (whose barriers stall on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit_linear(x, y, task, l2, seed, steps=100) -> torch.nn.Module:
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], y.shape[1])
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, history_size=10,
                                  line_search_fn="strong_wolfe")  # fmt: skip
    keep = torch.ones(len(x), dtype=torch.bool)

    def closure():
        optimizer.zero_grad()
        error, count = task.error(head(x), y, keep)
        loss = error / count.clamp(min=1) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def _fit_mlp(x, y, xv, yv, task, config, seed) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 200), torch.nn.ELU(), torch.nn.Dropout(0.1),
                               torch.nn.Linear(200, y.shape[1]))  # fmt: skip
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.head_lr, weight_decay=config.weight_decay)
    per_epoch = max(1, -(-len(x) // config.batch_size))
    total, scheduler = schedule(optimizer, config, per_epoch)
    every = config.eval_every or max(1, min(per_epoch, total // 8))
    generator = torch.Generator().manual_seed(seed)
    keep = torch.ones(config.batch_size, dtype=torch.bool)
    best, best_state, history, step = -math.inf, None, [], 0
    while step < total:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.batch_size):
            pick = order[start : start + config.batch_size]
            head.train()
            error, count = task.error(head(x[pick]), y[pick], keep[: len(pick)])
            loss = error / count.clamp(min=1)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), config.clip)
            optimizer.step()
            scheduler.step()
            step += 1
            if len(xv) and (step % every == 0 or step == total):
                head.eval()
                with torch.no_grad():
                    score = task.score(yv.numpy(), task.probabilities(head(xv)).numpy())
                history.append({"step": step, "score": score})
                if score > best:
                    best, best_state = score, copy.deepcopy(head.state_dict())
            if step >= total:
                break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    chosen = max(history, key=lambda h: h["score"])["step"] if history else step
    return head, {"by": "validation macro ROC-AUC (else log-likelihood)", "step": chosen,
                  "score": best if history else None, "history": history, "steps": step}  # fmt: skip


def _frozen_fold(config, cell, task, features, fold_index, train_rows, val_rows, test_rows) -> dict:
    """Standardise on the training rows, fit the head, choose on validation; probabilities of val and test."""
    rows, values = features
    position = {int(r): i for i, r in enumerate(rows.tolist())}

    def take(selected):
        index = np.array([position[int(r)] for r in selected], dtype=np.int64)
        return values[index], task.labels(selected)

    xt, yt = take(train_rows)
    xv, yv = take(val_rows)
    xs, ys = take(test_rows)
    mean, std = xt.mean(axis=0), xt.std(axis=0) + 1e-6
    xt, xv, xs = (torch.from_numpy(((a - mean) / std).astype(np.float32)) for a in (xt, xv, xs))
    yt_t = torch.from_numpy(yt)
    seed = cell.seed * 7919 + fold_index
    if cell.mode == "linear":
        fits = []
        for l2 in L2_GRID if len(val_rows) else (1e-3,):
            head = _fit_linear(xt, yt_t, task, l2, seed)
            with torch.no_grad():
                score = task.score(yv, task.probabilities(head(xv)).numpy()) if len(val_rows) else None
            fits.append((score, l2, head))
        score, l2, head = max(fits, key=lambda f: -math.inf if f[0] is None else f[0]) if len(val_rows) else fits[0]
        selection = {"by": "validation macro ROC-AUC (else log-likelihood)", "l2": l2, "score": score,
                     "grid": [{"l2": f[1], "score": f[0]} for f in fits]}  # fmt: skip
        steps = 1
    else:
        head, selection = _fit_mlp(xt, yt_t, xv, torch.from_numpy(yv), task, config, seed)
        steps = selection.pop("steps")
    with torch.no_grad():
        keep = torch.ones(len(xt), dtype=torch.bool)
        error, count = task.error(head(xt), yt_t, keep)
        train_loss = float(error / count.clamp(min=1))
        val_prob = task.probabilities(head(xv)).numpy()
        test_prob = task.probabilities(head(xs)).numpy()
    return {"steps": steps, "final_loss": train_loss, "selection": selection,
            "val": (np.asarray(val_rows), val_prob), "test": (np.asarray(test_rows), test_prob)}  # fmt: skip


# ---- one fold ----------------------------------------------------------------------------------


def _fold_result(task: Task, trained: dict, val, test) -> dict:
    val_rows, val_prob = val
    test_rows, test_prob = test
    val_true, test_true = task.labels(val_rows), task.labels(test_rows)
    thresholds = task.thresholds(val_true, val_prob)
    scored = evaluate(test_true, test_prob, task.spec.classes, task.spec.kind, thresholds)
    return {
        "metrics": scored["per_class"],
        "tuned": scored["tuned"],
        "macro": scored["macro"],
        "thresholds": thresholds,
        "selection": trained["selection"],
        "steps": trained["steps"],
        "final_loss": trained["final_loss"],
        "rows": np.asarray(test_rows).tolist(),
        "prob": np.asarray(test_prob).tolist(),
        "true": test_true.tolist(),
        "val_rows": np.asarray(val_rows).tolist(),
    }


def run_fold(
    config: FinetuneConfig,
    fold_index: int,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    device: torch.device,
    val_rows: np.ndarray | None = None,
    cell: Cell | None = None,
    task: Task | None = None,
    sizes: dict | None = None,
    features: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Train on ``train_rows`` (store rows), choose on ``val_rows``, evaluate on ``test_rows``; return metrics and
    test predictions.  Under a process group every rank calls this for the same fold and gets the same result."""
    val_rows = np.zeros(0, np.int64) if val_rows is None else np.asarray(val_rows, np.int64)
    cell = cell or cells(config)[0]
    sizes = sizes if sizes is not None else _sizes(config)
    if task is None:
        manifest = _manifest(config)
        spec = resolve_labels(manifest, config.targets, config.label_kind, config.classes, config.min_count,
                              config.drop_empty)  # fmt: skip
        task = Task(spec, manifest["row"].to_numpy(), spec.encode(manifest))
    if cell.frozen:
        if features is None:
            features = _features(config, cell, sizes, np.concatenate([train_rows, val_rows, test_rows]), device)
        fitted = None
        if distributed.rank() == 0:
            with _one_thread():
                fitted = _frozen_fold(config, cell, task, features, fold_index, train_rows, val_rows, test_rows)
        fitted = distributed.broadcast(fitted)
        return _fold_result(task, fitted, fitted["val"], fitted["test"])
    trained = _train_full(config, cell, sizes, task, fold_index, train_rows, val_rows, device)
    model = trained.pop("model")
    val = (
        _predict(model, config, task, val_rows, device)
        if len(val_rows)
        else (val_rows, np.zeros((0, task.spec.n_outputs)))
    )
    test = _predict(model, config, task, test_rows, device)
    return _fold_result(task, trained, val, test)


def _features(
    config: FinetuneConfig, cell: Cell, sizes: dict, rows: np.ndarray, device
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled embeddings of ``rows`` from the cell's (frozen) encoders, one modality after the other."""
    encoders = _encoders(cell, sizes, cell.seed * 7919)
    got, parts = pooled_embeddings(
        config.store, encoders, np.unique(rows), batch_size=config.batch_size, device=device,
        precision=config.precision, workers=config.workers, storage_options=config.storage_options,
    )  # fmt: skip
    return got, np.concatenate([parts[m] for m in config.modalities], axis=1)


# ---- a run ---------------------------------------------------------------------------------------


def _manifest(config: FinetuneConfig) -> pl.DataFrame:
    manifest = Layout(config.store, config.storage_options).read_table("manifest").with_row_index("row")
    if "segment" in manifest.columns and config.segment:
        manifest = manifest.filter(pl.col("segment") == config.segment)
    return manifest


def _labels(config: FinetuneConfig, manifest: pl.DataFrame, out: Path) -> LabelSpec:
    spec = resolve_labels(manifest, config.targets, config.label_kind, config.classes, config.min_count,
                          config.drop_empty)  # fmt: skip
    if (out / LABELS_FILE).exists() and config.resume:
        saved = read_labels(out)
        if not saved.same_task(spec):
            raise ValueError(
                f"{out / LABELS_FILE} holds another label vocabulary ({list(saved.classes)}) than this run's "
                f"({list(spec.classes)}): give --classes to fix it, or use another --out"
            )
        spec = saved
    return spec


def _strata(spec: LabelSpec, labels: np.ndarray) -> np.ndarray | None:
    """Per-row classes that the validation split should keep: the label of a single binary target or of a
    multi-class one (None for several targets and multi-label tasks: their validation is drawn plainly)."""
    if spec.kind == "multiclass":
        return np.where(np.isnan(labels).any(axis=1), -1, np.nan_to_num(labels).argmax(axis=1))
    if spec.n_outputs == 1:
        return np.where(np.isnan(labels[:, 0]), -1, labels[:, 0]).astype(np.int64)
    return None


def finetune(config: FinetuneConfig) -> dict:
    """Run every cell and fold (skipping folds a resumed run already finished); return the run's results,
    the same on every rank of a data-parallel launch (:func:`physiofm.train.step.launch`)."""
    return launch(_finetune, config)


def _finetune(config: FinetuneConfig, device: torch.device) -> dict:
    out = Path(config.out)
    main = distributed.rank() == 0
    grid = cells(config)
    sizes = _sizes(config)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(config), indent=2, sort_keys=True))
        from physiofm.store.overlap import pretraining_overlap

        # a warning when the store shares recordings with the stores the weights' run was pretrained on
        pretraining_overlap(config.store, [w for w in _weights(config).values() if w], config.storage_options)
    manifest = _manifest(config)
    spec = _labels(config, manifest, out)  # on every rank: all of them stop on a mismatch
    labels = spec.encode(manifest)
    usable = ~np.isnan(labels).all(axis=1)
    manifest, labels = manifest.filter(pl.Series(usable)), labels[usable]
    if manifest.height == 0:
        raise ValueError(f"no row of {config.store} has a label for {list(config.targets)}")
    if main:
        write_labels(spec, out)
    task = Task(spec, manifest["row"].to_numpy(), labels)
    folds = make_folds(manifest, config.protocol, k=config.folds, seed=config.seed, val_fraction=config.val_fraction,
                       strata=_strata(spec, labels))  # fmt: skip
    store_rows = manifest["row"].to_numpy()
    who = subjects(manifest).to_numpy()
    subject_of = dict(zip(store_rows.tolist(), who.tolist()))
    started = time.perf_counter()
    subsets: dict[tuple[int, int], dict[float, np.ndarray]] = {}
    features: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    finished: dict[Cell, dict[str, dict]] = {}
    for number, cell in enumerate(grid):
        folder = out if number == 0 else out / "cells" / cell.name
        if main:
            (folder / "folds").mkdir(parents=True, exist_ok=True)
        per_fold = {}
        for index, fold in enumerate(folds):
            path = folder / "folds" / f"{fold.name}.json"
            if distributed.broadcast(config.resume and path.exists()):
                per_fold[fold.name] = distributed.broadcast(json.loads(path.read_text()) if main else None)
                continue
            key = (index, cell.seed)
            if key not in subsets:
                subsets[key] = label_subsets(manifest, fold.train, config.label_fractions, seed=cell.seed)
            train = store_rows[subsets[key][cell.fraction]]
            val, test = store_rows[fold.val], store_rows[fold.test]
            cached = None
            if cell.frozen:
                random = any(w is None for _, w in cell.weights)
                cache = (cell.weights, cell.seed if random else None)
                if cache not in features:
                    features[cache] = _features(config, cell, sizes, store_rows, device)
                cached = features[cache]
            result = run_fold(config, index, train, test, device, val_rows=val, cell=cell, task=task, sizes=sizes,
                              features=cached)  # fmt: skip
            result["subjects_test"] = sorted({subject_of[r] for r in store_rows[fold.test].tolist()})
            result["subjects_val"] = sorted({subject_of[r] for r in val.tolist()})
            result["sizes"] = {"train": int(len(train)), "val": int(len(val)), "test": int(len(test)),
                               "train_available": int(len(fold.train))}  # fmt: skip
            if main:
                path.write_text(json.dumps(result))
            per_fold[fold.name] = result
        finished[cell] = per_fold
        results = _cell_results(config, cell, spec, per_fold, subject_of, time.perf_counter() - started)
        if main:
            (folder / "results.json").write_text(json.dumps(results, indent=2))
            if number == 0:
                _plot_rocs(per_fold, spec, folder)
    primary = grid[0]
    results = _cell_results(config, primary, spec, finished[primary], subject_of, time.perf_counter() - started)
    results["cells"] = {cell.name: "." if i == 0 else f"cells/{cell.name}" for i, cell in enumerate(grid)}
    results["evaluation"] = _evaluation(config, spec, finished, subject_of)
    if main:
        (out / "results.json").write_text(json.dumps(results, indent=2))
        if len(grid) > 1:
            plot_label_efficiency(results["evaluation"], out / "label_efficiency.png")
    return distributed.broadcast(results)


def _plot_rocs(per_fold: dict, spec: LabelSpec, folder: Path) -> None:
    names = tuple(c.replace("/", "_") for c in spec.classes[:ROC_PLOTS])
    plot_roc(per_fold, names, folder)


def _pooled(per_fold: dict[str, dict], task_kind: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every fold's test (rows, true, prob, decisions at that fold's thresholds), sorted by row."""
    rows = np.concatenate([np.asarray(r["rows"], np.int64) for r in per_fold.values()])
    true = np.concatenate([np.asarray(r["true"], float).reshape(-1, n) for r in per_fold.values()])
    prob = np.concatenate([np.asarray(r["prob"], float).reshape(-1, n) for r in per_fold.values()])
    decided = []
    for r in per_fold.values():
        p = np.asarray(r["prob"], float).reshape(-1, n)
        if task_kind == "multiclass":
            decided.append(np.eye(n, dtype=bool)[p.argmax(axis=1)] if len(p) else p.astype(bool))
        else:
            decided.append(p >= np.asarray(r.get("thresholds", [0.5] * n), float)[None, :])
    decisions = np.concatenate(decided)
    order = np.argsort(rows, kind="stable")
    return rows[order], true[order], prob[order], decisions[order]


def _cell_results(config, cell: Cell, spec: LabelSpec, per_fold: dict, subject_of: dict, seconds: float) -> dict:
    merged = []
    for r in per_fold.values():
        tuned = r.get("tuned", {})
        merged.append({c: {**m, **{k: v for k, v in tuned.get(c, {}).items() if k != "threshold"}}
                       for c, m in r["metrics"].items()})  # fmt: skip
    rows, true, prob, decisions = _pooled(per_fold, spec.kind, spec.n_outputs)
    pooled = point_scores(true, prob, decisions, spec.classes)
    if config.bootstrap:
        groups = np.array([subject_of.get(int(r), str(r)) for r in rows.tolist()])
        pooled["ci"] = bootstrap_ci(true, prob, groups, spec.classes, decisions, config.bootstrap, seed=config.seed)
    pooled["n"] = int(len(rows))
    return {
        "modalities": list(config.modalities),
        "targets": list(spec.classes),
        "labels": spec.to_json(),
        "protocol": config.protocol,
        "mode": cell.mode,
        "encoder": cell.encoder,
        "cell": cell.name,
        "label_fraction": cell.fraction,
        "seed": cell.seed,
        "folds": {
            name: {
                k: v
                for k, v in r.items()
                if k in ("metrics", "tuned", "macro", "thresholds", "steps", "final_loss", "subjects_test", "sizes")
            }
            for name, r in per_fold.items()
        },  # fmt: skip
        "summary": summarize(merged),
        "macro": summarize([{"macro": r["macro"]} for r in per_fold.values()])["macro"],
        "pooled": pooled,
        "threshold": "F1, accuracy and balanced accuracy at each class's threshold chosen on validation",
        "seconds": seconds,
        "world_size": distributed.world_size(),
    }


def _evaluation(config, spec: LabelSpec, finished: dict[Cell, dict], subject_of: dict) -> list[dict]:
    """Per encoder, mode and fraction: pooled macro metrics over seeds, their interval, the per-fold mean."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in finished:
        groups.setdefault((cell.encoder, cell.mode, cell.fraction), []).append(cell)
    table = []
    for (encoder, mode, fraction), members in groups.items():
        pooled = [_pooled(finished[c], spec.kind, spec.n_outputs) for c in members]
        rows, true = pooled[0][0], pooled[0][1]
        if any(not np.array_equal(p[0], rows) for p in pooled):
            raise RuntimeError("seeds of one cell tested different rows")
        probs, decisions = [p[2] for p in pooled], [p[3] for p in pooled]
        per_seed = [point_scores(true, p, d)["macro"] for p, d in zip(probs, decisions)]
        entry = {"encoder": encoder, "mode": mode, "fraction": fraction, "seeds": [c.seed for c in members],
                 "train_rows": float(np.mean([sum(r["sizes"]["train"] for r in finished[c].values()) for c in members])),
                 "pooled": {}, "per_fold": {}}  # fmt: skip
        for metric in ("roc_auc", "pr_auc", "f1"):
            values = np.array([s[metric] for s in per_seed], float)
            entry["pooled"][metric] = {"mean": float(np.nanmean(values)) if np.isfinite(values).any() else math.nan,
                                       "std": float(np.nanstd(values)) if np.isfinite(values).any() else math.nan,
                                       "values": values.tolist()}  # fmt: skip
            folds = np.array([r["macro"][metric] for c in members for r in finished[c].values()], float)
            finite = folds[np.isfinite(folds)]
            entry["per_fold"][metric] = {"mean": float(finite.mean()) if len(finite) else math.nan,
                                         "std": float(finite.std()) if len(finite) else math.nan,
                                         "folds": int(len(finite))}  # fmt: skip
        if config.bootstrap:
            who = np.array([subject_of.get(int(r), str(r)) for r in rows.tolist()])
            entry["ci"] = bootstrap_ci(true, probs, who, spec.classes, decisions, config.bootstrap, config.seed)[
                "macro"
            ]
        table.append(entry)
    return table


# ---- reading runs --------------------------------------------------------------------------------


def plot_label_efficiency(evaluation: list[dict], path: Path, metric: str = "roc_auc") -> None:
    """Pooled test macro ``metric`` against label fraction (log axis), one line per encoder and mode, with the
    bootstrap interval as error bars."""
    from physiofm.train.plots import figure

    names = {"pretrained": "pretrained", "random": "random-initialised", "scratch": "supervised from scratch"}
    lines: dict[str, list[dict]] = {}
    for entry in evaluation:
        lines.setdefault(f"{names.get(entry['encoder'], entry['encoder'])} ({entry['mode']})", []).append(entry)
    with figure(path, (5.5, 4)) as axes:
        for label, entries in lines.items():
            entries = sorted(entries, key=lambda e: e["fraction"])
            x = [e["fraction"] for e in entries]
            y = [e["pooled"][metric]["mean"] for e in entries]
            ci = [e.get("ci", {}).get(metric, [math.nan, math.nan]) for e in entries]
            low = [max(0.0, v - c[0]) if not math.isnan(c[0]) else 0.0 for v, c in zip(y, ci)]
            high = [max(0.0, c[1] - v) if not math.isnan(c[1]) else 0.0 for v, c in zip(y, ci)]
            axes.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=label)
        axes.set_xscale("log")
        fractions = sorted({e["fraction"] for e in evaluation})
        axes.set_xticks(fractions, [f"{f:.0%}" if f >= 0.01 else f"{f:.1%}" for f in fractions])
        axes.minorticks_off()
        axes.set_xlabel("fraction of training labels")
        axes.set_ylabel(f"macro {metric.replace('_', '-').upper()} (pooled test)")
        axes.set_title("label efficiency (95 % bootstrap intervals)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)


def _read(run: str) -> dict:
    return json.loads((Path(run) / "results.json").read_text())


def comparison(runs: list[str], per_class: int = 6) -> list[dict]:
    """One row per fine-tuning run (its primary cell): mean ± spread over folds per target (for up to
    ``per_class`` targets), the mean of those AUCs, and the pooled macro AUC with its interval."""
    rows = []
    for run in runs:
        results = _read(run)
        row = {"run": Path(run).name, "modalities": "+".join(results["modalities"]), "protocol": results["protocol"],
               "mode": results.get("mode", "full"), "encoder": results.get("encoder", "")}  # fmt: skip
        aucs = []
        summary = results["summary"]
        for target, metrics in summary.items():
            if len(summary) <= per_class:
                for metric, stats in metrics.items():
                    row[f"{target}.{metric}"] = (stats["mean"], stats["std"])
            aucs.append(metrics["roc_auc"]["mean"])
        finite = [a for a in aucs if a is not None and not math.isnan(a)]
        row["mean_auc"] = float(np.mean(finite)) if finite else float("nan")
        pooled = results.get("pooled", {})
        row["pooled_auc"] = pooled.get("macro", {}).get("roc_auc", math.nan)
        row["pooled_auc_ci"] = tuple(pooled.get("ci", {}).get("macro", {}).get("roc_auc", (math.nan, math.nan)))
        row["classes"] = len(summary)
        rows.append(row)
    return rows


def evaluation_rows(runs: list[str]) -> list[dict]:
    """Every run's ``evaluation`` entries (encoder × mode × label fraction), with the run's name."""
    out = []
    for run in runs:
        for entry in _read(run).get("evaluation", []):
            out.append({"run": Path(run).name, **entry})
    return out


__all__ = ["BASELINES", "MODES", "Cell", "FinetuneConfig", "cells", "comparison", "evaluation_rows", "finetune",
           "plot_label_efficiency", "run_fold"]  # fmt: skip
