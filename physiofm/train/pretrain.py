"""Dual-masking reconstruction pretraining of a CBraMod encoder from a store (ECG by default).

A run folder holds ``last.pt`` (model, optimiser, scheduler, data position, step; written every
``checkpoint_every`` steps and at the end), ``encoder.pt`` (the encoder's state_dict with the
checkpoint's key names and its size in the metadata, :func:`physiofm.models.save_encoder`:
what fine-tuning loads, at that size), ``metrics.jsonl``, ``loss.png`` and ``config.json``.
Every random draw of step ``s`` comes from ``(seed, s)`` and the data position is exact, so
``resume=True`` continues a killed run to the same weights as an uninterrupted one.

Under ``torchrun`` (:mod:`physiofm.train.distributed`) every process trains a replica in
``DistributedDataParallel`` on its own share of each epoch (disjoint slots of the same
length, so all ranks take the same number of steps); masks and dropout come from
``(seed, step, rank)``.  The loss of a step is the masked MSE over all ranks' masked patches
(each rank's squared errors divided by the global count, so the averaged gradient is that of
the global mean), and that is what the log shows.  Only rank 0 writes files; the checkpoint
holds the unwrapped model (the keys of a one-process run) and the data position, which is the
same on every rank; resuming needs the same number of processes (else a ValueError says so).
The summary adds ``world_size``, the real samples each rank took (``samples_per_rank``) and
whether all ranks ended with bit-identical weights (``weights_in_sync``).

Several stores (``store`` a list, ``physiofm pretrain STORE STORE …``) are one stream
(:class:`physiofm.train.data.index.Mixture`): an epoch is as many samples as the stores hold
together, drawn from each in proportion to its size, or to ``mix``, exact over ranks × workers
and resumable as one store is.  They must hold the same modality with the same sample shape.
Each line of ``metrics.jsonl`` then has ``source_samples`` (the real samples of each store in that
step, over all ranks) and the summary ``samples_per_source`` (store → samples, the whole run).

Masking (``masking``: :class:`physiofm.models.DualMasking`'s options) has DualMasking's defaults
(``inter_unit``: :data:`physiofm.models.masking.DEFAULT_INTER_UNIT`); on EEG the limb group does not
apply (``inter_unit`` is ``lead``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from physiofm.models import CBraMod, DualMasking, masked_squared_error, save_encoder
from physiofm.train import distributed
from physiofm.train.data.stream import StreamingDataset
from physiofm.train.loop import JsonLog, TrainOptions, autocast, load_checkpoint, save_checkpoint, seed_step
from physiofm.train.plots import plot_curve
from physiofm.train.step import launch, optimisation_step, schedule


@dataclass
class PretrainConfig(TrainOptions):
    store: str | list[str]  # one store, or several mixed (see the module docstring)
    mix: list[float] | None = None  # weights per store (normalised); None: in proportion to their sizes
    exclude: list[str] = field(default_factory=list)  # stores whose recordings (and subjects) are left out
    modality: str = "ecg"
    checkpoint_every: int = 100
    model: dict = field(default_factory=dict)
    masking: dict = field(default_factory=dict)


def _inputs(batch: dict, modality: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The signal on ``device``, its present-channel mask (B, C) and valid-patch mask (B, N), padding excluded.

    ECG has the manifest's lead mask; an EEG channel a recording lacks is stored as exact zeros
    (``eeg_channel_mask`` false), so a channel that is zero throughout its sample is absent: it is
    neither masked nor reconstructed.  The two masks stay on the CPU, where the masking draws from
    its generator (the same masks on any device), computed from the batch before it moves; the signal
    is copied asynchronously (the loader pins its batches on CUDA).  So on a GPU nothing here, nor in
    the masking, waits for the device.
    """
    signal = batch[modality]
    B, C, N, _ = signal.shape
    present = batch["lead_mask"] if modality == "ecg" else signal.abs().amax(dim=(-2, -1)) > 0
    present = present.bool() & ~batch["pad"][:, None]
    valid = torch.arange(N)[None, :] < batch["n_patches"][:, None]
    return signal.to(device, non_blocking=True), present, valid


def masking_options(config: PretrainConfig) -> dict:
    """``config.masking`` for :class:`DualMasking` (its defaults otherwise); the limb group is ECG's, never EEG's."""
    options = dict(config.masking)
    if config.modality != "ecg":
        if config.masking.get("inter_unit", "lead") != "lead":
            raise ValueError(
                f"inter_unit {config.masking['inter_unit']!r} groups ECG limb leads: not for {config.modality}"
            )
        options["inter_unit"] = "lead"
    return options


def excluded_rows(config: PretrainConfig, out: Path | None = None):
    """``rows`` for the dataset: per store, the manifest rows left once every recording that ``config.exclude``'s
    stores also hold is dropped, with its subject where the ids allow (:func:`physiofm.store.overlap.kept_rows`);
    None without ``exclude``.  What was dropped is written to ``out/exclusion.json``."""
    if not config.exclude:
        return None
    from physiofm.store.overlap import kept_rows

    stores = config.store if isinstance(config.store, list) else [config.store]
    kept = [kept_rows(store, list(config.exclude), config.storage_options) for store in stores]
    if out is not None:
        (out / "exclusion.json").write_text(json.dumps([summary for _, summary in kept], indent=2))
    rows = [rows for rows, _ in kept]
    return rows if isinstance(config.store, list) else rows[0]


def pretrain(config: PretrainConfig) -> dict:
    """Run (or resume) pretraining; return a summary (steps, final loss, paths), the same on every rank
    of a data-parallel launch (:func:`physiofm.train.step.launch`)."""
    return launch(_pretrain, config)


def _pretrain(config: PretrainConfig, device: torch.device) -> dict:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    torch.manual_seed(config.seed)
    model = CBraMod(**config.model).to(device)
    masking = DualMasking(**masking_options(config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    kept = excluded_rows(config, out if main else None)
    data = StreamingDataset(
        config.store,
        batch_size=config.batch_size,
        modalities=[config.modality],
        seed=config.seed,
        num_workers=config.workers,
        rank=rank,
        world_size=world,
        storage_options=config.storage_options,
        mix=config.mix,
        rows=kept,
    )
    total, scheduler = schedule(optimizer, config, data.batches_per_epoch)
    sources = data.mixture.bases if len(data.mixture.bases) > 1 else []
    log = JsonLog(out / "metrics.jsonl")
    step, epoch = 0, 0
    if distributed.broadcast(config.resume and (out / "last.pt").exists()):
        state = load_checkpoint(str(out / "last.pt"))
        saved_world = state["data"].get("world_size", 1)
        if saved_world != world:
            raise ValueError(
                f"{out / 'last.pt'} was written by a run over {saved_world} process(es), this one has "
                f"{world}: the data position depends on the number of processes, so resume with "
                f"{saved_world} (torchrun --nproc_per_node …) or start a new run folder"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch = state["step"], state["data"]["epoch"]
        data.load_state_dict(state["data"])
        if main:
            log.truncate_after(step)
    elif main:
        log.truncate_after(-1)
        (out / "config.json").write_text(json.dumps(asdict(config), indent=2, sort_keys=True))
    net = distributed.wrap(model, device)

    def checkpoint(batches: int) -> None:
        if main:
            log.sync()  # every line up to this step is on disk before the checkpoint that keeps them
            save_checkpoint(
                str(out / "last.pt"),
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "data": data.state_dict(batches),
                    "config": asdict(config),
                },
            )

    model.train()
    started, samples = time.perf_counter(), 0
    while step < total:
        consumed = 0
        for batch in data.loader():
            generator = seed_step(config.seed, step, rank)
            x, present, valid = _inputs(batch, config.modality, device)
            _, mask = masking(x, lead_mask=present, patch_mask=valid, generator=generator)
            with autocast(device, config.precision):
                prediction = net(x, mask=mask)
            error, patches = masked_squared_error(prediction.float(), x, mask)
            loss, masked, grad_norm = optimisation_step(
                error, patches, model, optimizer, scheduler, config.clip, per_count=x.shape[-1]
            )
            step, consumed = step + 1, consumed + 1
            samples += int((~batch["pad"]).sum())
            record = {
                "step": step,
                "epoch": epoch,
                "loss": round(loss, 6),
                "grad_norm": round(float(grad_norm), 4),
                "lr": scheduler.get_last_lr()[0],
                "masked": int(masked),
            }
            if sources:  # real samples of each store in this step, over all ranks
                taken = torch.bincount(batch["source"][~batch["pad"]], minlength=len(sources))
                record["source_samples"] = distributed.all_sum(taken).tolist()
            if main:
                log.write(record)
            if step % config.checkpoint_every == 0 or step == total:
                checkpoint(consumed)
            if step >= total:
                break
        else:
            epoch += 1
            data.set_epoch(epoch)
            continue
        break
    elapsed = time.perf_counter() - started
    per_rank = distributed.all_gather(samples)
    summary = {
        "steps": step,
        "final_loss": None,
        "samples_per_s": sum(per_rank) / elapsed if elapsed else 0.0,
        "out": str(out),
        "world_size": world,
        "samples_per_rank": per_rank,
        "weights_in_sync": distributed.in_sync(model),
    }
    if main:
        save_encoder(model, out / "encoder.pt")
        records = log.read()
        plot_curve(records, "loss", out / "loss.png", f"{config.modality} dual-masking pretraining")
        summary["final_loss"] = records[-1]["loss"] if records else None
        if sources:
            totals = [
                sum(r["source_samples"][i] for r in records if "source_samples" in r) for i in range(len(sources))
            ]
            summary["samples_per_source"] = {base.url: total for base, total in zip(sources, totals)}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return distributed.broadcast(summary)
