"""What the training commands share: device, optimiser and schedule, precision, checkpoints, logs."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physiofm.io import atomic_write, url_to_fs


@dataclass
class TrainOptions:
    """What both training commands take (``--epochs``, ``--max-steps``, ``--batch-size``, ``--lr``, …).

    ``batch_size`` is per process: a run over N processes (:mod:`physiofm.train.distributed`)
    takes N × ``batch_size`` samples per optimisation step.
    """

    store: str
    out: str
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 10
    clip: float = 1.0
    workers: int = 0
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    resume: bool = False
    storage_options: dict = field(default_factory=dict)
    ddp: bool = False  # require a torchrun launch (one is used when detected anyway)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bf16 autocast where supported (``auto``: on CUDA devices with bf16), else full precision."""
    use = precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else contextlib.nullcontext()


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float = 0.02
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` of the peak at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_step(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """Seed every random stream for optimisation step ``step``; return a generator for masks.

    Seeding per step (rather than once) makes a resumed run draw exactly what an
    uninterrupted one draws, whatever happened before the checkpoint.  Under data-parallel
    training each ``rank`` draws its own masks and dropout from ``(seed, step, rank)``, as
    one process would for different samples; rank 0 draws what a single process draws.
    """
    value = (seed * 1_000_003 + step + rank * 0x9E3779B97F4A7C15) % 2**63
    torch.manual_seed(value)
    random.seed(value)
    np.random.seed(value % 2**32)
    return torch.Generator().manual_seed(value)


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (local path or URL)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    fs, target = url_to_fs(path)
    with atomic_write(fs, target) as handle:
        handle.write(buffer.getvalue())


def load_checkpoint(path: str) -> dict[str, Any]:
    fs, target = url_to_fs(path)
    with fs.open(target, "rb") as handle:
        return torch.load(io.BytesIO(handle.read()), map_location="cpu", weights_only=False)


class JsonLog:
    """Metrics, one JSON object per line; a resumed run drops lines past its checkpoint.

    Each line is flushed as it is written (``tail -f`` shows it) but made durable only by
    :meth:`sync`, which the training loop calls before it writes a checkpoint: an fsync a step
    costs 0.4-1 ms on a local disk here, more on network disks, against GPU steps of tens of ms.
    A machine that crashes loses at most the lines after the last checkpoint, which a resumed run
    drops anyway.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def sync(self) -> None:
        """Make every line written so far durable (fsync)."""
        if self.path.exists():
            with open(self.path, "rb") as handle:
                os.fsync(handle.fileno())

    def truncate_after(self, step: int) -> None:
        if self.path.exists():
            kept = [
                line for line in self.path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step
            ]
            self.path.write_text("".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line] if self.path.exists() else []
