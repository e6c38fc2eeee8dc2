"""What pretraining and fine-tuning share around their loops: the launch, the schedule, one optimisation step."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from physiofm.train import distributed
from physiofm.train.loop import TrainOptions, cosine_with_warmup

Options = TypeVar("Options", bound=TrainOptions)


def launch(body: Callable[[Options, torch.device], dict], config: Options) -> dict:
    """``body(config, device)`` in a :func:`distributed.session` on ``config.device``.

    Under a ``torchrun`` launch (or with ``config.ddp``, which requires one) this is one rank
    of a data-parallel run, and ``body`` returns the same on every rank.
    """
    with distributed.session(config.device, require=config.ddp) as device:
        return body(config, device)


def schedule(
    optimizer: torch.optim.Optimizer, config: TrainOptions, per_epoch: int
) -> tuple[int, torch.optim.lr_scheduler.LambdaLR]:
    """The run's number of steps (``max_steps``, else ``epochs`` × ``per_epoch``) and its warm-up + cosine schedule."""
    total = config.max_steps or config.epochs * per_epoch
    return total, cosine_with_warmup(optimizer, min(config.warmup_steps, total // 2), total)


def optimisation_step(
    error: torch.Tensor,
    count: torch.Tensor,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    clip: float,
    per_count: int = 1,
) -> tuple[float, float, float]:
    """One step on the mean over all ranks; return that loss, the global count and the gradient norm.

    ``error`` is this rank's summed error (with its graph), ``count`` how many items it sums
    over, each ``per_count`` values (pretraining counts patches of 200 samples).  Both are
    summed over the ranks; as DDP averages the ranks' gradients, each rank back-propagates
    ``error × world size / global values``, so the step follows the gradient of the global
    mean.  The gradients of ``model`` are clipped to norm ``clip``, then the optimiser and the
    scheduler step.

    The scale stays on the device: the host reads nothing until the optimiser has stepped, and then
    once (loss, count and norm together), so on a GPU the backward pass and the optimiser are queued
    while the forward pass still runs.  The arithmetic is that of the host (float64 sums, the scale
    rounded to ``error``'s dtype as a Python float would be), so the step is the same bits.
    """
    count = torch.as_tensor(count, device=error.device)
    totals = distributed.all_sum(torch.stack([error.detach().double(), count.double()]))
    values = (totals[1] * per_count).clamp(min=1.0)
    loss = error * (distributed.world_size() / values).to(error.dtype)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    scheduler.step()
    total_error, total, norm = torch.stack([totals[0], totals[1], grad_norm.detach().double()]).tolist()
    return total_error / max(1.0, total * per_count), total, norm
