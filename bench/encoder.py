"""Benchmark: the CBraMod encoder beside braindecode's CBraMod and a plain reference, in one process.

For inputs (B=16, 12, 10, 200) and (16, 14, 10, 200), prints forward (eval, inference mode) and
forward+backward (train mode, dropout on, loss = mean square of the output) samples/s of
``physiofm.models.CBraMod`` and of two other models holding the same weights:

* ``braindecode``: braindecode's ``CBraMod`` (``braindecode/models/cbramod.py``, v1.x, with
  ``return_encoder_output=True`` so that both end at ``proj_out``), ported line by line: its
  ``einops.rearrange`` calls written as the permute/reshape they perform, ``nn.MultiheadAttention``
  (``batch_first``, ``need_weights=False``) as it calls it, ``nn.GELU``, ``nn.Dropout``.
  braindecode itself does not install here (its dependencies), so the port is what is timed;
  the ratio ours/braindecode is the median of paired step-time ratios (adjacent steps see the
  same load), not a figure from another day;
* ``reference``: method.md §2.2 literally, per-head attention as explicit
  ``softmax(Q Kᵀ / sqrt(d)) V`` with plain matmuls.

Outputs are checked equal first (max abs difference < 1e-3).  ``--compile`` adds
``torch.compile``'d ours and braindecode (first shape, the first dtype; compiling forward and
training graphs takes minutes on 2 cores).

Timing: the models alternate step by step (``--repeats`` training steps each, three times as
many forward steps); a rate is the batch over the *fastest* step (the least disturbed on a
shared machine), with the median in brackets; the 1-minute load average is printed beside each
line.  Peak memory per sample: on the CPU, the peak of live tensor bytes allocated during one
step (``torch.profiler`` allocation events; weights and input not counted); on CUDA,
``torch.cuda.max_memory_allocated`` during one step above what was allocated before it.

``--device cuda``: the same on the GPU (``--dtype fp32,bf16``: float32, and bfloat16 autocast),
with the share of the device's peak bf16 dense throughput reached (FLOPs counted by
``torch.utils.flop_counter`` for one step, ``--peak-tflops``, default 989: H100/H200 SXM), and a
parity check first: the same weights' float32 forward on the GPU (TF32 off) against the CPU.

Usage: ``python bench/encoder.py [--device cpu|cuda] [--dtype fp32,bf16] [--compile] [--threads N]
[--repeats R] [--bf16-repeats R] [--shapes 16x12x10x200,...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from physiofm.models import create_model  # noqa: E402

SHAPES = ((16, 12, 10, 200), (16, 14, 10, 200))
MODES = ("forward", "train")


# ---- braindecode's CBraMod, ported (braindecode/models/cbramod.py) -----------------------------------


class BraindecodeLayer(nn.Module):
    """braindecode's ``CrissCrossTransformerEncoderLayer`` (``norm_first=True``, ``batch_first=True``)."""

    def __init__(self, d_model: int = 200, nhead: int = 8, dim_feedforward: int = 800, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn_s = nn.MultiheadAttention(d_model // 2, nhead // 2, dropout=dropout, batch_first=True)
        self.self_attn_t = nn.MultiheadAttention(d_model // 2, nhead // 2, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.activation = nn.GELU()

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        x = src
        x = x + self._sa_block(self.norm1(x))
        return x + self._ff_block(self.norm2(x))

    def _sa_block(self, x: torch.Tensor) -> torch.Tensor:
        bz, ch_num, patch_num, patch_size = x.shape
        xs = x[:, :, :, : patch_size // 2]
        xt = x[:, :, :, patch_size // 2 :]
        xs = xs.permute(0, 2, 1, 3).reshape(bz * patch_num, ch_num, patch_size // 2)  # b c n p2 -> (b n) c p2
        xt = xt.reshape(bz * ch_num, patch_num, patch_size // 2)  # b c n p2 -> (b c) n p2
        xs = self.self_attn_s(xs, xs, xs, attn_mask=None, key_padding_mask=None, need_weights=False)[0]
        xs = xs.reshape(bz, patch_num, ch_num, patch_size // 2).permute(0, 2, 1, 3)  # (b n) c p2 -> b c n p2
        xt = self.self_attn_t(xt, xt, xt, attn_mask=None, key_padding_mask=None, need_weights=False)[0]
        xt = xt.reshape(bz, ch_num, patch_num, patch_size // 2)  # (b c) n p2 -> b c n p2
        return self.dropout1(torch.concat((xs, xt), dim=3))

    def _ff_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class BraindecodeEmbedding(nn.Module):
    """braindecode's ``_PatchEmbedding``."""

    def __init__(self, patch_size: int = 200, d_model: int = 200, drop_prob: float = 0.1) -> None:
        super().__init__()
        self.d_model = d_model
        self.positional_encoding = nn.Sequential(nn.Conv2d(d_model, d_model, (19, 7), (1, 1), (9, 3), groups=d_model))
        self.mask_encoding = nn.Parameter(torch.zeros(patch_size), requires_grad=False)
        self.proj_in = nn.Sequential(
            nn.Conv2d(1, 25, (1, 49), (1, 25), (0, 24)),
            nn.GroupNorm(5, 25),
            nn.GELU(),
            nn.Conv2d(25, 25, (1, 3), (1, 1), (0, 1)),
            nn.GroupNorm(5, 25),
            nn.GELU(),
            nn.Conv2d(25, 25, (1, 3), (1, 1), (0, 1)),
            nn.GroupNorm(5, 25),
            nn.GELU(),
        )
        self.spectral_proj = nn.Sequential(nn.Linear(101, d_model), nn.Dropout(drop_prob))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bz, ch_num, patch_num, patch_size = x.shape
        if mask is None:
            mask_x = x
        else:
            mask_x = x.clone()
            mask_x[mask == 1] = self.mask_encoding
        mask_x = mask_x.reshape(bz, 1, ch_num * patch_num, patch_size)  # b c n p -> b 1 (c n) p
        patch_emb = self.proj_in(mask_x)
        d, p2 = patch_emb.shape[1], patch_emb.shape[3]
        patch_emb = (  # b d (c n) p2 -> b c n (d p2)
            patch_emb.reshape(bz, d, ch_num, patch_num, p2)
            .permute(0, 2, 3, 1, 4)
            .reshape(bz, ch_num, patch_num, d * p2)
        )
        mask_x = mask_x.reshape(bz * ch_num * patch_num, patch_size)  # b 1 (c n) p -> (b c n) p
        spectral = torch.fft.rfft(mask_x, dim=-1, norm="forward")
        spectral = torch.abs(spectral).reshape(bz, ch_num, patch_num, 101)  # (b c n) p -> b c n p
        patch_emb = patch_emb + self.spectral_proj(spectral)
        positional = self.positional_encoding(patch_emb.permute(0, 3, 1, 2))  # b c n p -> b p c n
        return patch_emb + positional.permute(0, 2, 3, 1)  # b p c n -> b c n p


class Braindecode(nn.Module):
    """braindecode's ``CBraMod(return_encoder_output=True)`` on (B, C, N, 200) patches (its input
    (B, C, N*200) goes through a ``Rearrange`` view first)."""

    def __init__(self, n_layer: int = 12) -> None:
        super().__init__()
        self.patch_embedding = BraindecodeEmbedding()
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(BraindecodeLayer() for _ in range(n_layer))
        self.proj_out = nn.Sequential(nn.Linear(200, 200))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.patch_embedding(x, mask)
        for layer in self.encoder.layers:
            feats = layer(feats)
        return self.proj_out(feats)


# ---- the plain reference from the specification -------------------------------------------------------


class ReferenceAttention(nn.Module):
    """Multi-head self-attention over (batch, sequence, dim), per head, with plain matmuls."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        d = dim // self.heads
        q, k, v = (x @ self.in_proj_weight.T + self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.contiguous().view(batch, length, self.heads, d).transpose(1, 2).contiguous() for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
        out = F.dropout(weights, self.dropout, self.training) @ v  # (batch, heads, length, d)
        return self.out_proj(out.transpose(1, 2).contiguous().view(batch, length, dim))


class ReferenceLayer(nn.Module):
    def __init__(self, d_model: int = 200, nhead: int = 8, dim_feedforward: int = 800, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn_s = ReferenceAttention(d_model // 2, nhead // 2, dropout)
        self.self_attn_t = ReferenceAttention(d_model // 2, nhead // 2, dropout)
        self.linear1, self.linear2 = nn.Linear(d_model, dim_feedforward), nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, N, D = x.shape
        h = self.norm1(x)
        xs = h[..., : D // 2].transpose(1, 2).contiguous().view(B * N, C, D // 2)
        xs = self.self_attn_s(xs).view(B, N, C, D // 2).transpose(1, 2).contiguous()
        xt = h[..., D // 2 :].contiguous().view(B * C, N, D // 2)
        xt = self.self_attn_t(xt).view(B, C, N, D // 2)
        x = x + self.dropout1(torch.cat((xs, xt), dim=3))
        return x + self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(x))))))


class Reference(Braindecode):
    """CBraMod straight from the specification (same state_dict names as ours)."""

    def __init__(self, n_layer: int = 12) -> None:
        super().__init__(n_layer)
        self.encoder.layers = nn.ModuleList(ReferenceLayer() for _ in range(n_layer))


# ---- timing -------------------------------------------------------------------------------------------


def make_step(model: nn.Module, x: torch.Tensor, mode: str, bf16: bool) -> Callable[[], None]:
    """One forward (eval, inference mode) or forward+backward (train) step of ``model`` on ``x``."""
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16)

    def forward() -> None:
        with torch.inference_mode(), autocast:
            model(x)

    def train() -> None:
        model.zero_grad(set_to_none=True)
        with autocast:
            loss = model(x).float().pow(2).mean()
        loss.backward()

    return forward if mode == "forward" else train


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop lines)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak of bytes allocated during ``step`` above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    live = peak = 0
    for event in sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"]):
        live += int(event["args"]["Bytes"])
        peak = max(peak, live)
    return peak


def step_flops(step: Callable[[], None]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def build_models(device: torch.device, compiled: bool) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    ours = create_model("cbramod-base")
    models: dict[str, nn.Module] = {"ours": ours, "braindecode": Braindecode(), "reference": Reference()}
    for model in models.values():
        model.load_state_dict(ours.state_dict())
        model.to(device)
    if compiled:
        models = {name: torch.compile(model) for name, model in models.items() if name != "reference"}
    return models


def check_equal(models: dict[str, nn.Module], x: torch.Tensor) -> None:
    with torch.inference_mode():
        expected = models["ours"].eval()(x)
        for name, model in models.items():
            gap = (model.eval()(x) - expected).abs().max().item()
            if gap > 1e-3:
                raise AssertionError(f"{name} and ours differ by {gap:.2e}")


def gpu_parity(device: torch.device, shape: tuple[int, ...]) -> None:
    """Float32 forward of the same weights on the GPU (TF32 off) against the CPU."""
    torch.manual_seed(0)
    common.gpu_parity(create_model("cbramod-base"), torch.randn(*shape), device)


def measure(
    shape: tuple[int, ...], device: torch.device, bf16: bool, compiled: bool, repeats: int, peak_tflops: float
) -> dict:
    """Rates (best, median), speed-up of ours over each model and peak memory, per model and mode."""
    models = build_models(device, compiled)
    x = torch.randn(*shape, device=device)
    check_equal(models, x)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    result = {}
    for mode in MODES:
        steps = {name: make_step(model.train(mode == "train"), x, mode, bf16) for name, model in models.items()}
        for name, step in steps.items():
            step()  # warm-up (and compilation)
            result[name, mode] = {"mb": peak_bytes(step, device) / shape[0] / 2**20}
            if device.type == "cuda":
                result[name, mode]["flops"] = step_flops(step)
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(repeats * (3 if mode == "forward" else 1)):
            for name, step in steps.items():
                sync()
                start = time.perf_counter()
                step()
                sync()
                times[name].append(time.perf_counter() - start)
        for name, spent in times.items():
            entry = result[name, mode]
            entry.update(
                best=shape[0] / min(spent),
                median=shape[0] / statistics.median(spent),
                speedup=statistics.median(a / b for a, b in zip(spent, times["ours"])),
                load=os.getloadavg()[0],
            )
            if "flops" in entry:
                entry["peak_share"] = entry["flops"] / min(spent) / (peak_tflops * 1e12)
    return result


def report(shape: tuple[int, ...], dtype: str, compiled: bool, device: torch.device, result: dict) -> None:
    label = f"({', '.join(map(str, shape))}) {dtype} {'compiled' if compiled else 'eager'}"
    for mode in MODES:
        ours = result["ours", mode]
        line = f"{label:34s} {mode:7s} ours {ours['best']:7.1f} [{ours['median']:6.1f}] samples/s"
        for name in ("braindecode", "reference"):
            if (name, mode) in result:
                other = result[name, mode]
                line += f"  {name} {other['best']:7.1f} [{other['median']:6.1f}] ours/it {other['speedup']:4.2f}x"
        line += "  peak MB/sample " + " ".join(
            f"{name} {result[name, mode]['mb']:.1f}" for name in ("ours", "braindecode") if (name, mode) in result
        )
        if device.type == "cuda":
            line += f"  {ours['peak_share']:.1%} of peak bf16 (ours)"
        print(f"{line}  load {ours['load']:.1f}", flush=True)


def parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.lower().split("x"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--dtype", default="fp32,bf16", help="comma-separated: fp32 and/or bf16 (autocast)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models (first shape)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--repeats", type=int, default=8, help="timed forward+backward steps per model (fp32); forward: 3x as many"
    )
    parser.add_argument("--bf16-repeats", type=int, default=None, help="the same under bf16 (default: 1 on the CPU)")
    parser.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES))
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak bf16 dense TFLOP/s (H100/H200)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    if set(dtypes) - {"fp32", "bf16"}:
        raise SystemExit(f"--dtype takes fp32 and/or bf16, not {args.dtype!r}")
    shapes = [parse_shape(s) for s in args.shapes.split(",")]
    torch.set_num_threads(args.threads)
    bf16_repeats = args.bf16_repeats or (1 if device.type == "cpu" else args.repeats)
    started = time.perf_counter()
    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"the CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"CBraMod encoder on {where}, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}; "
        f"samples/s from the fastest of the timed steps [median]",
        flush=True,
    )
    if device.type == "cuda":
        gpu_parity(device, shapes[0])
    configs = [(shape, dtype, False) for dtype in dtypes for shape in shapes]
    if args.compile:
        configs.insert(len(shapes), (shapes[0], dtypes[0], True))
    for shape, dtype, compiled in configs:
        repeats = args.repeats if dtype == "fp32" else bf16_repeats
        try:
            result = measure(shape, device, dtype == "bf16", compiled, repeats, args.peak_tflops)
        except Exception as error:  # a compile failure is reported, not fatal
            print(f"{shape} {dtype} compiled={compiled}: failed: {type(error).__name__}: {error}", flush=True)
            traceback.print_exc(limit=2, file=sys.stdout)
            continue
        report(shape, dtype, compiled, device, result)
    print(f"done in {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
