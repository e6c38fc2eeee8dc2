"""Fine-tuning of the fusion classifier on an emotion store, under a subject-wise protocol.

For each fold of the protocol (:mod:`physiofm.train.protocols`, computed from the manifest)
a fresh classifier is built (encoders loaded from ``eeg_weights`` / ``ecg_weights`` when
given: a pretraining run folder or its ``encoder.pt`` brings its own size, which
``eeg_model`` / ``ecg_model`` may repeat but not contradict; other files are built at that
size), trained on the fold's training rows, and evaluated on its test rows.  The run folder
gets ``folds/<fold>.json`` per finished fold (a resumed run skips those), ``results.json``
(per fold and target: ROC-AUC, F1, accuracy, balanced accuracy; their mean and spread) and one
ROC-curve PNG per target.  ``modalities`` selects EEG-only, ECG-only or fusion with the same code.

Under ``torchrun`` (:mod:`physiofm.train.distributed`) the folds run one after the other, each
with all ranks: the classifier trains in ``DistributedDataParallel`` on disjoint shares of the
fold's training rows (the loss is the BCE mean over all ranks' labelled samples), each rank
predicts its share of the test rows, and the predictions of all ranks are gathered to every
rank before the metrics, so they cover the whole test set, as in one process.  Only rank 0
writes files; a fold finished by a run over another number of processes is reused as it is.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from physiofm.models import CBraMod, FusionClassifier, load_pretrained
from physiofm.store.layout import Layout
from physiofm.train import distributed
from physiofm.train.data.stream import StreamingDataset
from physiofm.train.loop import TrainOptions, autocast, seed_step
from physiofm.train.metrics import binary_metrics, summarize
from physiofm.train.plots import plot_roc
from physiofm.train.protocols import make_folds
from physiofm.train.step import launch, optimisation_step, schedule


@dataclass
class FinetuneConfig(TrainOptions):
    modalities: tuple[str, ...] = ("eeg", "ecg")
    targets: tuple[str, ...] = ("valence", "arousal", "dominance")
    protocol: str = "kfold-subject"
    folds: int = 5
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


def _encoder(modality: str, config: FinetuneConfig) -> CBraMod | None:
    if modality not in config.modalities:
        return None
    weights = config.eeg_weights if modality == "eeg" else config.ecg_weights
    size = config.eeg_model if modality == "eeg" else config.ecg_model
    return CBraMod(**size) if weights is None else load_pretrained(weights, **size)


def _build_model(config: FinetuneConfig, device: torch.device, fold_index: int) -> FusionClassifier:
    torch.manual_seed(config.seed * 7919 + fold_index)
    model = FusionClassifier(
        eeg=_encoder("eeg", config),
        ecg=_encoder("ecg", config),
        n_targets=len(config.targets),
        pooling=config.pooling,
        freeze_eeg="eeg" in config.freeze,
        freeze_ecg="ecg" in config.freeze,
    )
    return model.to(device)


def _optimizer(model: FusionClassifier, config: FinetuneConfig) -> torch.optim.Optimizer:
    encoders = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("head")]
    head = [p for name, p in model.named_parameters() if p.requires_grad and name.startswith("head")]
    return torch.optim.AdamW(
        [{"params": encoders, "lr": config.lr}, {"params": head, "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )


def _forward(model: torch.nn.Module, batch: dict, config: FinetuneConfig, device: torch.device) -> torch.Tensor:
    inputs = {m: batch[m].to(device) for m in config.modalities}
    return model(**inputs)


def _dataset(config: FinetuneConfig, rows: np.ndarray, labels: list[str], shuffle: bool, seed: int) -> StreamingDataset:
    return StreamingDataset(
        config.store,
        batch_size=config.batch_size,
        modalities=list(config.modalities),
        labels=labels,
        rows=rows,
        shuffle=shuffle,
        seed=seed,
        num_workers=config.workers,
        storage_options=config.storage_options,
    )


def run_fold(
    config: FinetuneConfig, fold_index: int, train_rows: np.ndarray, test_rows: np.ndarray, device: torch.device
) -> dict:
    """Train on ``train_rows`` and evaluate on ``test_rows``; return metrics and test predictions.

    Under a process group every rank calls this for the same fold and gets the same result.
    """
    labels = [f"{t}_high" for t in config.targets]
    rank = distributed.rank()
    model = _build_model(config, device, fold_index)
    optimizer = _optimizer(model, config)
    net = distributed.wrap(model, device)
    train = _dataset(config, train_rows, labels, True, config.seed + fold_index)
    total, scheduler = schedule(optimizer, config, train.batches_per_epoch)
    criterion = torch.nn.BCEWithLogitsLoss(reduction="none")
    step, epoch, losses = 0, 0, []
    model.train()
    while step < total:
        train.set_epoch(epoch)
        for batch in train.loader():
            seed_step(config.seed + 104_729 * fold_index, step, rank)
            keep = ~batch["pad"].to(device)
            target = batch["labels"].to(device)
            known = keep[:, None] & ~torch.isnan(target)
            with autocast(device, config.precision):
                logits = _forward(net, batch, config, device)
            error = (criterion(logits.float(), torch.nan_to_num(target)) * known).sum()
            loss, _, _ = optimisation_step(error, known.sum(), model, optimizer, scheduler, config.clip)
            losses.append(loss)
            step += 1
            if step >= total:
                break
        epoch += 1
    model.eval()
    probabilities, truth, rows = [], [], []
    with torch.no_grad():
        for batch in _dataset(config, test_rows, labels, False, 0).loader():
            keep = ~batch["pad"]
            with autocast(device, config.precision):
                logits = _forward(model, batch, config, device)
            probabilities.append(torch.sigmoid(logits.float()).cpu()[keep])
            truth.append(batch["labels"][keep])
            rows.append(batch["row"][keep])
    # every rank predicted its share of the test rows: gather all of them (in rank order) for the metrics
    prob = distributed.all_concat(torch.cat(probabilities).numpy())
    true = distributed.all_concat(torch.cat(truth).numpy())
    rows = distributed.all_concat(torch.cat(rows).numpy())
    metrics = {
        t: binary_metrics(true[:, i], prob[:, i])
        for i, t in enumerate(config.targets)
        if not np.isnan(true[:, i]).any()
    }
    return {
        "metrics": metrics,
        "steps": step,
        "final_loss": float(np.mean(losses[-5:])) if losses else None,
        "rows": rows.tolist(),
        "prob": prob.tolist(),
        "true": true.tolist(),
    }


def _manifest(config: FinetuneConfig) -> pl.DataFrame:
    manifest = Layout(config.store, config.storage_options).read_table("manifest")
    if "segment" in manifest.columns and config.segment:
        manifest = manifest.with_row_index("row").filter(pl.col("segment") == config.segment)
    else:
        manifest = manifest.with_row_index("row")
    return manifest


def finetune(config: FinetuneConfig) -> dict:
    """Run every fold of the protocol (skipping folds a resumed run already finished); return the results,
    the same on every rank of a data-parallel launch (:func:`physiofm.train.step.launch`)."""
    return launch(_finetune, config)


def _finetune(config: FinetuneConfig, device: torch.device) -> dict:
    out = Path(config.out)
    main = distributed.rank() == 0
    (out / "folds").mkdir(parents=True, exist_ok=True)
    if main:
        (out / "config.json").write_text(json.dumps(asdict(config), indent=2, sort_keys=True))
    manifest = _manifest(config)
    folds = make_folds(manifest, config.protocol, k=config.folds, seed=config.seed)
    store_rows = manifest["row"].to_numpy()
    per_fold, started = {}, time.perf_counter()
    for index, fold in enumerate(folds):
        path = out / "folds" / f"{fold.name}.json"
        if distributed.broadcast(config.resume and path.exists()):
            per_fold[fold.name] = distributed.broadcast(json.loads(path.read_text()) if main else None)
            continue
        result = run_fold(config, index, store_rows[fold.train], store_rows[fold.test], device)
        result["subjects_test"] = sorted(set(manifest["subject_id"].gather(fold.test)))
        if main:
            path.write_text(json.dumps(result))
        per_fold[fold.name] = result
    summary = summarize([r["metrics"] for r in per_fold.values()])
    results = {
        "modalities": list(config.modalities),
        "targets": list(config.targets),
        "protocol": config.protocol,
        "folds": {
            name: {k: v for k, v in r.items() if k in ("metrics", "steps", "final_loss", "subjects_test")}
            for name, r in per_fold.items()
        },
        "summary": summary,
        "seconds": time.perf_counter() - started,
        "world_size": distributed.world_size(),
    }
    if main:
        (out / "results.json").write_text(json.dumps(results, indent=2))
        plot_roc(per_fold, config.targets, out)
    return distributed.broadcast(results)


def comparison(runs: list[str]) -> list[dict]:
    """Mean ± spread of each metric per target for several fine-tuning runs (for a table)."""
    rows = []
    for run in runs:
        results = json.loads((Path(run) / "results.json").read_text())
        row = {"run": Path(run).name, "modalities": "+".join(results["modalities"]), "protocol": results["protocol"]}
        aucs = []
        for target, metrics in results["summary"].items():
            for metric, stats in metrics.items():
                row[f"{target}.{metric}"] = (stats["mean"], stats["std"])
            aucs.append(metrics["roc_auc"]["mean"])
        row["mean_auc"] = float(np.nanmean(aucs)) if aucs else float("nan")
        rows.append(row)
    return rows
