"""Benchmark: the CBraMod encoder beside a plain reference written from the specification.

For inputs (B=16, 12, 10, 200) and (16, 14, 10, 200), in float32 and under bfloat16 autocast,
prints forward (eval, inference mode) and forward+backward (train mode, dropout on, loss = mean
square of the output) samples/s of ``physiofm.models.CBraMod`` and of the reference, and the
ratio ours/reference.  ``--compile`` adds ``torch.compile``'d models (float32, first shape only:
compiling the forward and the training graphs of both models takes several minutes on 2 cores).

The reference follows method.md §2.2 literally: the ``.contiguous().view`` reshapes of the
upstream code, and per-head attention as explicit ``softmax(Q Kᵀ / sqrt(d)) V`` with plain
matmuls (no ``nn.MultiheadAttention``, no SDPA), no mask (none is timed).  For
(16, 12, 10, 200) float32, the same code with ``nn.MultiheadAttention`` (as upstream CBraMod and
braindecode compute it) runs too.  All hold the same weights; outputs are checked equal first.

Timing: the models alternate step by step (``--repeats`` training steps each, three times as
many forward steps); a rate is the batch over the *fastest* step (the machine may be shared:
the fastest step is the least disturbed), with the median in brackets.  A ratio ours/other is
the median over rounds of the paired step-time ratio (adjacent steps see the same load); the
ratio to braindecode divides our fastest rate by its fixed figure.  Peak memory per
sample: the peak of live CPU tensor bytes allocated during one step (what was alive before it,
weights and input, not counted), from ``torch.profiler``'s allocation events, divided by the
batch.  braindecode's CBraMod, measured on this 2-core machine for (16, 12, 10, 200) in
float32: 102 samples/s forward, 23 samples/s forward+backward.

Usage: ``python bench/encoder.py [--compile] [--threads N] [--repeats R] [--bf16-repeats R]``.
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

from physiofm.models import create_model  # noqa: E402

BRAINDECODE = {"forward": 102.0, "train": 23.0}  # samples/s, (16, 12, 10, 200), float32, 2 cores
SHAPES = ((16, 12, 10, 200), (16, 14, 10, 200))
MODES = ("forward", "train")


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


class MultiheadSelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` called as the upstream code (and braindecode) call it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, x, x, need_weights=False)[0]


class ReferenceLayer(nn.Module):
    def __init__(
        self, attention: str, d_model: int = 200, nhead: int = 8, dim_feedforward: int = 800, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if attention == "mha":
            self.self_attn_s = MultiheadSelfAttention(d_model // 2, nhead // 2, dropout=dropout, batch_first=True)
            self.self_attn_t = MultiheadSelfAttention(d_model // 2, nhead // 2, dropout=dropout, batch_first=True)
        else:
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


class ReferenceEmbedding(nn.Module):
    def __init__(self, d_model: int = 200) -> None:
        super().__init__()
        self.positional_encoding = nn.Sequential(nn.Conv2d(d_model, d_model, (19, 7), (1, 1), (9, 3), groups=d_model))
        self.mask_encoding = nn.Parameter(torch.zeros(200), requires_grad=False)
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
        self.spectral_proj = nn.Sequential(nn.Linear(101, d_model), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, N, P = x.shape
        x = x.contiguous().view(B, 1, C * N, P)
        emb = self.proj_in(x).permute(0, 2, 1, 3).contiguous().view(B, C, N, 200)
        spectral = torch.abs(torch.fft.rfft(x.contiguous().view(B * C * N, P), dim=-1, norm="forward"))
        emb = emb + self.spectral_proj(spectral.contiguous().view(B, C, N, 101))
        return emb + self.positional_encoding(emb.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Reference(nn.Module):
    """CBraMod straight from the specification (same state_dict names as ours).

    ``attention="explicit"``: per-head plain matmuls; ``"mha"``: ``nn.MultiheadAttention``, as the
    upstream code and braindecode run it.
    """

    def __init__(self, attention: str = "explicit", n_layer: int = 12) -> None:
        super().__init__()
        self.patch_embedding = ReferenceEmbedding()
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(ReferenceLayer(attention) for _ in range(n_layer))
        self.proj_out = nn.Sequential(nn.Linear(200, 200))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embedding(x)
        for layer in self.encoder.layers:
            h = layer(h)
        return self.proj_out(h)


def make_step(model: nn.Module, x: torch.Tensor, mode: str, bf16: bool) -> Callable[[], None]:
    """One forward (eval, inference mode) or forward+backward (train) step of ``model`` on ``x``."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

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


def peak_bytes(step: Callable[[], None]) -> int:
    """Peak of live CPU tensor bytes allocated during ``step`` (torch.profiler allocation events)."""
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


def measure(shape: tuple[int, ...], bf16: bool, compiled: bool, repeats: int, upstream: bool) -> dict:
    """Rates (best, median), speed-up of ours over each model and peak memory, per model and mode."""
    torch.manual_seed(0)
    ours = create_model("cbramod-base")
    models: dict[str, nn.Module] = {"ours": ours, "reference": Reference()}
    if upstream:
        models["upstream"] = Reference(attention="mha")
    x = torch.randn(*shape)
    with torch.inference_mode():
        expected = ours.eval()(x)
        for name, model in models.items():
            model.load_state_dict(ours.state_dict())
            gap = (model.eval()(x) - expected).abs().max().item()
            if gap > 1e-3:
                raise AssertionError(f"{name} and ours differ by {gap:.2e}")
    if compiled:
        models = {name: torch.compile(model) for name, model in models.items()}
    result = {}
    for mode in MODES:
        steps = {name: make_step(model.train(mode == "train"), x, mode, bf16) for name, model in models.items()}
        for name, step in steps.items():
            if compiled:
                step()  # compilation
            result[name, mode] = {"mb": peak_bytes(step) / shape[0] / 2**20}  # also the warm-up
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(repeats * (3 if mode == "forward" else 1)):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
        for name, spent in times.items():
            result[name, mode].update(
                best=shape[0] / min(spent),
                median=shape[0] / statistics.median(spent),
                speedup=statistics.median(a / b for a, b in zip(spent, times["ours"])),
            )
    return result


def report(shape: tuple[int, ...], dtype: str, compiled: bool, result: dict) -> None:
    label = f"({', '.join(map(str, shape))}) {dtype} {'compiled' if compiled else 'eager'}"
    for mode in MODES:
        ours, ref = result["ours", mode], result["reference", mode]
        line = (
            f"{label:34s} {mode:7s} ours {ours['best']:6.1f} [{ours['median']:5.1f}]  "
            f"ref {ref['best']:6.1f} [{ref['median']:5.1f}]  ours/ref {ref['speedup']:4.2f}x  "
            f"peak MB/sample ours {ours['mb']:4.1f} ref {ref['mb']:4.1f}"
        )
        if ("upstream", mode) in result:
            up = result["upstream", mode]
            line += f"  | upstream-MHA {up['best']:6.1f} [{up['median']:5.1f}] ours/it {up['speedup']:4.2f}x"
        if shape[1] == 12 and dtype == "fp32":
            line += f"  | ours/braindecode({BRAINDECODE[mode]:.0f}) {ours['best'] / BRAINDECODE[mode]:4.2f}x"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile'd models, float32, first shape (compiling takes minutes)",
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--repeats",
        type=int,
        default=8,
        help="timed forward+backward steps per model (float32); forward steps: 3x as many",
    )
    parser.add_argument("--bf16-repeats", type=int, default=1, help="the same under bfloat16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(
        f"CBraMod encoder on the CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f}; samples/s from the fastest of the timed steps [median]",
        flush=True,
    )
    configs = [(shape, dtype, False) for dtype in ("fp32", "bf16") for shape in SHAPES]
    if args.compile:
        configs.insert(len(SHAPES), (SHAPES[0], "fp32", True))
    for shape, dtype, compiled in configs:
        repeats = args.repeats if dtype == "fp32" else args.bf16_repeats
        upstream = dtype == "fp32" and not compiled and shape == SHAPES[0]
        try:
            result = measure(shape, dtype == "bf16", compiled, repeats, upstream)
        except Exception as error:  # a compile failure is reported, not fatal
            print(f"{shape} {dtype} compiled={compiled}: failed: {type(error).__name__}: {error}", flush=True)
            traceback.print_exc(limit=2, file=sys.stdout)
            continue
        report(shape, dtype, compiled, result)
    print(f"done in {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
