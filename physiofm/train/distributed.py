"""Data-parallel training over processes (``torchrun``): launch detection, set-up, collectives.

``torchrun --nproc_per_node N -m physiofm pretrain …`` (or ``finetune``) starts N processes
with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set;
:func:`session` sees them and joins the process group: ``nccl`` on CUDA (each process on GPU
``LOCAL_RANK``), ``gloo`` on the CPU.  Without them a run is one ordinary process, unless
``require`` (``--ddp``) asks for a launch, which then fails with :class:`DistributedError`.
A group the caller initialised already is used as it is, and left to the caller.

The helpers below work in both cases (one process: identities), so the training code has one
path.  They all are collectives: every rank must call them, in the same order.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from physiofm.train.loop import pick_device

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A distributed run was asked for but cannot be set up, or the ranks disagree."""


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher setting its variables)."""
    return all(name in os.environ for name in LAUNCH_ENV)


def active() -> bool:
    """Whether a process group is initialised (this process is one rank of several)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the group (0 without one)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (the one that writes files and prints), or a process outside any launch.

    Also right before and after :func:`session`, from the launch's ``RANK``.
    """
    if active():
        return dist.get_rank() == 0
    return not launched() or int(os.environ["RANK"]) == 0


@contextmanager
def session(device: str = "auto", require: bool = False) -> Iterator[torch.device]:
    """Join the launch's process group (when launched) for the ``with`` block; yield this rank's device.

    ``device``: as :func:`physiofm.train.loop.pick_device`; under a launch a CUDA device becomes
    ``cuda:LOCAL_RANK``.  ``require``: fail unless launched (``--ddp``).  The group made here is
    destroyed on leaving, after a barrier so that no rank leaves while rank 0 still writes.
    """
    if require and not (launched() or active()):
        missing = [name for name in LAUNCH_ENV if name not in os.environ]
        raise DistributedError(
            "--ddp needs a distributed launch, e.g. `torchrun --nproc_per_node 2 -m physiofm pretrain|finetune …`; "
            f"this process lacks {', '.join(missing)}"
        )
    chosen = pick_device(device)
    if chosen.type == "cuda" and (launched() or active()):
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
        torch.cuda.set_device(chosen)
    owned = launched() and not active()
    if owned:
        if not dist.is_available():
            raise DistributedError("this torch build has no torch.distributed")
        if chosen.type == "cuda":
            dist.init_process_group("nccl", device_id=chosen)
        else:
            dist.init_process_group("gloo")
    try:
        yield chosen
        if owned:
            barrier()
    finally:
        if owned:
            dist.destroy_process_group()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` under a process group (else itself).

    Gradients are then averaged over the ranks in ``backward``; save ``model`` (the unwrapped
    module), whose state_dict keys are those of a single-process run.
    """
    if not active():
        return model
    # A weight with a size-1 axis (the depthwise positional convolution) gets gradients with another, equally
    # valid stride on that axis; DDP then copies them into its buckets and warns each step: harmless.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def barrier() -> None:
    if active():
        dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over the ranks (a detached copy, on ``value``'s device)."""
    total = value.detach().clone()
    if active():
        moved = total.to(_collective_device())
        dist.all_reduce(moved)
        total = moved.to(value.device)
    return total


def all_gather(value: Any) -> list[Any]:
    """``value`` of every rank (any picklable object: arrays of any length), in rank order."""
    if not active():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_concat(array: np.ndarray) -> np.ndarray:
    """The ranks' arrays concatenated along the first axis, in rank order (lengths may differ)."""
    return np.concatenate(all_gather(np.asarray(array)))


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (so that all take the same decision)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """A SHA-256 of a state_dict's names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def in_sync(model: torch.nn.Module) -> bool:
    """Whether every rank holds bit-identical weights (always True for one process)."""
    return len(set(all_gather(fingerprint(model.state_dict())))) == 1
