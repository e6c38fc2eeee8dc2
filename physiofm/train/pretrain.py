"""Dual-masking reconstruction pretraining of a CBraMod encoder from a store (ECG by default).

A run folder holds ``last.pt`` (model, optimiser, scheduler, data position, step; written every
``checkpoint_every`` steps and at the end), ``encoder.pt`` (the encoder's state_dict with the
checkpoint's key names, what fine-tuning loads), ``metrics.jsonl``, ``loss.png`` and
``config.json``.  Every random draw of step ``s`` comes from ``(seed, s)`` and the data
position is exact, so ``resume=True`` continues a killed run to the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from physiofm.models import CBraMod, DualMasking, masked_mse
from physiofm.train.loop import (
    JsonLog, TrainOptions, autocast, cosine_with_warmup, load_checkpoint, pick_device, plot_curve, save_checkpoint, seed_step,
)
from physiofm.train.stream import StreamingDataset


@dataclass
class PretrainConfig(TrainOptions):
    modality: str = "ecg"
    checkpoint_every: int = 100
    model: dict = field(default_factory=dict)
    masking: dict = field(default_factory=dict)


def _inputs(batch: dict, modality: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The signal, its present-channel mask (B, C) and valid-patch mask (B, N), padding excluded."""
    x = batch[modality].to(device)
    B, C, N, _ = x.shape
    present = batch["lead_mask"].to(device) if modality == "ecg" else torch.ones(B, C, dtype=torch.bool, device=device)
    present = present & ~batch["pad"].to(device)[:, None]
    valid = torch.arange(N, device=device)[None, :] < batch["n_patches"].to(device)[:, None]
    return x, present, valid


def pretrain(config: PretrainConfig) -> dict:
    """Run (or resume) pretraining; return a summary (steps, final loss, paths)."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    model = CBraMod(**config.model).to(device)
    masking = DualMasking(**config.masking)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    data = StreamingDataset(config.store, batch_size=config.batch_size, modalities=[config.modality],
                            seed=config.seed, num_workers=config.workers, storage_options=config.storage_options)
    per_epoch = data.batches_per_epoch
    total = config.max_steps or config.epochs * per_epoch
    scheduler = cosine_with_warmup(optimizer, min(config.warmup_steps, total // 2), total)
    log = JsonLog(out / "metrics.jsonl")
    step, epoch = 0, 0
    if config.resume and (out / "last.pt").exists():
        state = load_checkpoint(str(out / "last.pt"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch = state["step"], state["data"]["epoch"]
        data.load_state_dict(state["data"])
        log.truncate_after(step)
    else:
        log.truncate_after(-1)
        (out / "config.json").write_text(json.dumps(asdict(config), indent=2, sort_keys=True))

    def checkpoint(batches: int) -> None:
        save_checkpoint(str(out / "last.pt"), {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "step": step, "data": data.state_dict(batches), "config": asdict(config)})

    model.train()
    started, samples = time.perf_counter(), 0
    while step < total:
        consumed = 0
        for batch in data.loader():
            generator = seed_step(config.seed, step)
            x, present, valid = _inputs(batch, config.modality, device)
            _, mask = masking(x, lead_mask=present, patch_mask=valid, generator=generator)
            with autocast(device, config.precision):
                prediction = model(x, mask=mask)
            loss = masked_mse(prediction.float(), x, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            scheduler.step()
            step, consumed = step + 1, consumed + 1
            samples += int((~batch["pad"]).sum())
            log.write({"step": step, "epoch": epoch, "loss": round(loss.item(), 6), "grad_norm": round(float(grad_norm), 4),
                       "lr": scheduler.get_last_lr()[0], "masked": int(mask.sum())})
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
    torch.save(model.state_dict(), out / "encoder.pt")
    records = log.read()
    plot_curve(records, "loss", out / "loss.png", f"{config.modality} dual-masking pretraining")
    summary = {"steps": step, "final_loss": records[-1]["loss"] if records else None,
               "samples_per_s": samples / elapsed if elapsed else 0.0, "out": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
