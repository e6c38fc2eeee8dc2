"""Benchmark: does the loader keep the device fed?  The training step's rate against what the loader delivers.

Builds a store of ``--records`` generated 10-s Challenge records (one 12×10×200 window each), then
measures, in one process, three rates in samples/s at batch ``--batch-size``:

* step    - the pretraining step alone (CBraMod ``--model``, dual masking, masked MSE, clipping,
            AdamW: the ``physiofm pretrain`` step, as ``bench/train_step.py`` times it) on one batch
            of the store's shape already on the device: what the device can consume;
* loader  - ``StreamingDataset(...).loader()`` with W workers (``--workers``), every batch moved to
            the device as the pretraining loop moves it (:func:`physiofm.train.pretrain._inputs`;
            pinned memory on CUDA, the loader's default), nothing computed: what the loader delivers;
* loop    - both: the pretraining loop of ``physiofm pretrain`` (loader → ``_inputs`` → masking →
            step), without its log and checkpoints.

Workers start, and the device warms up, before anything is timed (the loader's first epoch and the
first steps are not timed); per worker count and dtype, rounds of the step alone and of the loop
alternate, so that each pair sees the same load.  The loop is *fed* when it runs at the step's rate: the last columns
are loop / step (1.00: the loader keeps up; the loader is the ceiling when it is well under 1 and
the loader's rate is near the loop's) and loader / step (how much headroom the loader has).  On
the 2-core CPU machines here the step is hundreds of times slower than the loader, so the loop is
fed trivially, and workers compete with the step for the cores; the figure that matters is on a GPU
(``--device cuda``; ``--dtype fp32,bf16``: the training commands' ``--precision``, bf16 being
autocast).  The step and the loop are timed for each dtype, the loader once per worker count.

Usage: ``python bench/feed.py [--device cpu|cuda] [--dtype fp32,bf16] [--records 2000]
[--batch-size 64] [--workers 0,2] [--steps 20] [--model cbramod-base] [--layers N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from physiofm.models import MODEL_SIZES, DualMasking, create_model, masked_squared_error  # noqa: E402
from physiofm.train.data.stream import StreamingDataset  # noqa: E402
from physiofm.train.loop import autocast, cosine_with_warmup  # noqa: E402
from physiofm.train.pretrain import _inputs  # noqa: E402
from physiofm.train.step import optimisation_step  # noqa: E402


class Trainer:
    """The pretraining step of ``physiofm pretrain`` on a batch ``(x, present, valid)`` on the device."""

    def __init__(self, model: str, layers: int | None, device: torch.device, precision: str) -> None:
        torch.manual_seed(0)
        self.device, self.precision = device, precision
        self.model = create_model(model, **({"n_layer": layers} if layers else {})).to(device).train()
        self.masking = DualMasking()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=5e-4)
        self.scheduler = cosine_with_warmup(self.optimizer, 10, 1_000_000)
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, x: torch.Tensor, present: torch.Tensor, valid: torch.Tensor) -> float:
        _, mask = self.masking(x, lead_mask=present, patch_mask=valid, generator=self.generator)
        with autocast(self.device, self.precision):
            prediction = self.model(x, mask=mask)
        error, patches = masked_squared_error(prediction.float(), x, mask)
        loss, _, _ = optimisation_step(
            error, patches, self.model, self.optimizer, self.scheduler, 1.0, per_count=x.shape[-1]
        )
        return loss  # a float: the step has synchronised with the device, as the command's log does


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(dataset: StreamingDataset):
    """The loader's batches, epoch after epoch from epoch 0 (``set_epoch`` between them), forever."""
    loader, epoch = dataset.loader(), 0
    while True:
        dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def loader_rate(stream, device: torch.device, batches_per_round: int, rounds: int) -> list[float]:
    rates = []
    for _ in range(rounds):
        started, samples = time.perf_counter(), 0
        for _ in range(batches_per_round):
            batch = next(stream)
            _inputs(batch, "ecg", device)  # to the device, as the loop moves it
            samples += int((~batch["pad"]).sum())
        synchronise(device)
        rates.append(samples / (time.perf_counter() - started))
    return rates


def timed_steps(trainer: Trainer, take, steps: int, samples: int | None = None) -> float:
    """Samples/s of ``steps`` training steps, each on ``take()``: a batch from the loader, moved to the
    device by ``_inputs`` (``samples`` None: its real samples are counted), or the same inputs
    already there (``samples`` given)."""
    synchronise(trainer.device)
    started, total = time.perf_counter(), 0
    for _ in range(steps):
        item = take()
        if samples is None:
            trainer(*_inputs(item, "ecg", trainer.device))
            total += int((~item["pad"]).sum())
        else:
            trainer(*item)
            total += samples
    synchronise(trainer.device)
    return total / (time.perf_counter() - started)


def figure(rates: list[float]) -> str:
    return f"{max(rates):9.1f} [{statistics.median(rates):9.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--dtype", default="fp32", help="comma-separated fp32 and/or bf16 (autocast)")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="cbramod-base", choices=list(MODEL_SIZES))
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=None, help="build processes (default: all cores)")
    args = parser.parse_args()
    device = torch.device(args.device)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    if not dtypes or set(dtypes) - {"fp32", "bf16"}:
        raise SystemExit(f"--dtype takes fp32 and/or bf16, not {args.dtype!r}")

    from physiofm.store.build import build
    from physiofm.synth.ecg import synth_challenge

    work = Path(tempfile.mkdtemp(prefix="physiofm-feed-bench-"))
    try:
        started = time.perf_counter()
        raw = synth_challenge(work / "raw", n_records=args.records, seed=0, subsets=("georgia",))
        store = str(work / "store")
        samples = build(str(raw), store, jobs=args.jobs or os.cpu_count() or 1)["samples"]
        where = (
            torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        )
        layers = args.layers or MODEL_SIZES[args.model]["n_layer"]
        print(
            f"feed benchmark on {where} ({os.cpu_count()} cores), {args.model} ({layers} layers), "
            f"batch {args.batch_size}, store of {samples} samples built in {time.perf_counter() - started:.0f} s; "
            f"samples/s, best round [median] of {args.rounds}, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        trainers = {d: Trainer(args.model, args.layers, device, d) for d in dtypes}
        first = next(iter(StreamingDataset(store, batch_size=args.batch_size, modalities=["ecg"]).loader()))
        fixed = _inputs(first, "ecg", device)
        per_epoch = samples // args.batch_size
        for count in workers:
            dataset = StreamingDataset(store, batch_size=args.batch_size, modalities=["ecg"], num_workers=count)
            stream = batches(dataset)
            begun = time.perf_counter()
            for _ in range(per_epoch):  # the first epoch: workers' start-up, page cache
                next(stream)
            start_up = time.perf_counter() - begun
            delivered = loader_rate(stream, device, max(per_epoch, args.steps), args.rounds)
            print(f"  {count} workers: loader {figure(delivered)}  (first epoch {start_up:.1f} s)", flush=True)
            for dtype, trainer in trainers.items():
                for _ in range(5):  # warm-up: kernels chosen, allocator grown
                    trainer(*fixed)
                step, loop = [], []
                for _ in range(args.rounds):  # alternating, so that a pair sees the same load
                    step.append(timed_steps(trainer, lambda: fixed, args.steps, int((~first["pad"]).sum())))
                    loop.append(timed_steps(trainer, stream.__next__, args.steps))
                print(
                    f"    {dtype}: step alone {figure(step)}  loop {figure(loop)}  "
                    f"loop/step {max(loop) / max(step):5.2f}  loader/step {max(delivered) / max(step):7.2f}",
                    flush=True,
                )
            stream.close()
            dataset.loader().close()  # its workers stop now, before the next count's start
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
