"""Benchmark: optimisation steps/s of pretraining and fine-tuning (model + masking + loss + AdamW).

Pretraining: CBraMod (``--model``, by default ``cbramod-base``, the published size) on ECG batches
(16, 12, 10, 200) with dual masking and the masked MSE.  Fine-tuning: the fusion classifier (EEG
encoder on (16, 14, 10, 200) + ECG encoder on (16, 2, 10, 200), both of that size) with BCE on
three targets.  Both go through the training commands' own step
(:func:`physiofm.train.step.optimisation_step`: global mean, backward, clipping, AdamW, schedule).
Inputs are random tensors of the real shapes (the loader is measured by bench/loader.py).

``--dtype fp32,bf16`` (default: fp32 on the CPU, both on CUDA): full precision and/or bfloat16
autocast (the training commands' ``--precision``).  Each figure is steps/s and samples/s over
``--steps`` timed steps after two warm-up steps, with the 1-minute load average.  On CUDA it also
prints the peak memory of a step (``torch.cuda.max_memory_allocated``) and the share of the
device's peak bf16 dense throughput reached (FLOPs counted by ``torch.utils.flop_counter`` for one
step; ``--peak-tflops``, default 989: H100/H200 SXM), after a parity check: the pretraining
model's float32 forward on the GPU (TF32 off) against the CPU, same weights and input.

Usage: ``python bench/train_step.py [--device cpu|cuda] [--dtype fp32,bf16] [--steps 5]
[--model cbramod-base] [--layers N] [--peak-tflops 989]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from physiofm.models import MODEL_SIZES, DualMasking, FusionClassifier, create_model, masked_squared_error  # noqa: E402
from physiofm.train.loop import autocast, cosine_with_warmup  # noqa: E402
from physiofm.train.step import optimisation_step  # noqa: E402


def encoder(name: str, layers: int | None) -> torch.nn.Module:
    """A fresh encoder of the named size, with ``layers`` layers when given."""
    return create_model(name, **({"n_layer": layers} if layers else {}))


def pretrain_step(name: str, layers: int | None, device: torch.device, precision: str):
    model = encoder(name, layers).to(device)
    masking = DualMasking()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    scheduler = cosine_with_warmup(optimizer, 10, 1000)
    x = torch.randn(16, 12, 10, 200, device=device)
    generator = torch.Generator().manual_seed(0)

    def step():
        _, mask = masking(x, generator=generator)
        with autocast(device, precision):
            prediction = model(x, mask=mask)
        error, patches = masked_squared_error(prediction.float(), x, mask)
        optimisation_step(error, patches, model, optimizer, scheduler, 1.0, per_count=x.shape[-1])

    return step


def finetune_step(name: str, layers: int | None, device: torch.device, precision: str):
    model = FusionClassifier(eeg=encoder(name, layers), ecg=encoder(name, layers), n_targets=3).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = cosine_with_warmup(optimizer, 10, 1000)
    eeg, ecg = torch.randn(16, 14, 10, 200, device=device), torch.randn(16, 2, 10, 200, device=device)
    target = torch.randint(0, 2, (16, 3), device=device).float()

    def step():
        with autocast(device, precision):
            logits = model(eeg=eeg, ecg=ecg)
        error = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum")
        optimisation_step(error, torch.tensor(target.numel()), model, optimizer, scheduler, 1.0)

    return step


def flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def gpu_parity(name: str, layers: int | None, device: torch.device) -> None:
    """The pretraining model's float32 forward on the GPU (TF32 off) against the CPU."""
    torch.manual_seed(0)
    common.gpu_parity(encoder(name, layers), torch.randn(16, 12, 10, 200), device, label="  ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument(
        "--dtype", default=None, help="comma-separated fp32 and/or bf16 (default: fp32 on the CPU, both on CUDA)"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--model", default="cbramod-base", choices=list(MODEL_SIZES))
    parser.add_argument("--layers", type=int, default=None, help="override the model's number of layers")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak bf16 dense TFLOP/s (H100 SXM)")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtypes = [d.strip() for d in (args.dtype or ("fp32,bf16" if cuda else "fp32")).split(",") if d.strip()]
    if set(dtypes) - {"fp32", "bf16"}:
        raise SystemExit(f"--dtype takes fp32 and/or bf16, not {args.dtype!r}")
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    layers = args.layers or MODEL_SIZES[args.model]["n_layer"]
    where = torch.cuda.get_device_name(device) if cuda else f"the CPU ({torch.get_num_threads()} threads)"
    print(
        f"training steps on {where}, batch 16, {args.model}, {layers} layers, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if cuda:
        gpu_parity(args.model, args.layers, device)
    for name, make in (
        ("pretrain (ECG 12x10x200, dual masking)", pretrain_step),
        ("finetune (fusion EEG 14 + ECG 2 leads)", finetune_step),
    ):
        for precision in dtypes:
            torch.manual_seed(0)
            step = make(args.model, args.layers, device, precision)
            for _ in range(2):
                step()
            sync()
            if cuda:
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            rate = args.steps / (time.perf_counter() - start)
            line = f"  {name:40s} {precision}  {rate:7.2f} steps/s  {16 * rate:7.1f} samples/s"
            if cuda:
                peak = torch.cuda.max_memory_allocated(device)
                line += (
                    f"  peak memory {peak / 2**20:.0f} MiB ({(peak - before) / 2**20:.0f} MiB above weights and state)"
                    f"  {flops(step) * rate / 1e12 / args.peak_tflops:.1%} of peak bf16"
                )
            print(f"{line}  load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
