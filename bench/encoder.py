"""Benchmark: the CBraMod encoder on the CPU (or a GPU) beside a plain reference from the specification.

For inputs (B=16, 12, 10, 200) and (B=16, 14, 10, 200), in float32 and under bfloat16 autocast,
with and without ``torch.compile``, prints forward and forward+backward samples/s of
``physiofm.models.CBraMod`` and of a reference written straight from the specification (per-head
softmax(QK^T/sqrt(d))V with explicit matmuls, copying reshapes, no fused kernels), loaded with the
same weights (outputs are checked equal before timing), and their ratio.  Peak memory per sample
is the process's peak RSS during a mode's steps (compilation included) above its RSS before them,
divided by the batch; each configuration runs in its own subprocess (on CUDA: peak allocated).  braindecode's CBraMod, measured on this 2-core machine
for (16, 12, 10, 200) in float32: 102 samples/s forward, 23 samples/s forward+backward.

Usage: ``python bench/encoder.py [--no-compile] [--device cpu|cuda] [--steps 5]``.
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BRAINDECODE = {"forward": 102.0, "train": 23.0}  # samples/s, (16, 12, 10, 200), float32, 2 cores


def reference_model(source):
    """A plain CBraMod from the specification, holding ``source``'s weights."""
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, dim: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
            self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
            self.out_proj = nn.Linear(dim, dim)

        def forward(self, x):
            batch, length, dim = x.shape
            d = dim // self.heads
            q, k, v = (x @ self.in_proj_weight.T + self.in_proj_bias).chunk(3, dim=-1)
            outs = []
            for h in range(self.heads):
                qh, kh, vh = (t[..., h * d:(h + 1) * d].contiguous() for t in (q, k, v))
                weights = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d), dim=-1)
                outs.append(nn.functional.dropout(weights, 0.1, self.training) @ vh)
            return self.out_proj(torch.cat(outs, dim=-1))

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.self_attn_s, self.self_attn_t = Attention(100, 4), Attention(100, 4)
            self.linear1, self.linear2 = nn.Linear(200, 800), nn.Linear(800, 200)
            self.norm1, self.norm2 = nn.LayerNorm(200), nn.LayerNorm(200)
            self.drop = nn.Dropout(0.1)

        def forward(self, x):
            B, C, N, D = x.shape
            y = self.norm1(x)
            xs = y[..., :100].transpose(1, 2).contiguous().view(B * N, C, 100)
            xs = self.self_attn_s(xs).view(B, N, C, 100).transpose(1, 2).contiguous()
            xt = y[..., 100:].contiguous().view(B * C, N, 100)
            xt = self.self_attn_t(xt).view(B, C, N, 100)
            x = x + self.drop(torch.cat([xs, xt], dim=-1))
            return x + self.drop(self.linear2(self.drop(nn.functional.gelu(self.linear1(self.norm2(x))))))

    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embedding = source.patch_embedding  # the embedding is the same code path
            self.encoder = nn.Module()
            self.encoder.layers = nn.ModuleList(Layer() for _ in range(len(source.encoder.layers)))
            self.proj_out = nn.Sequential(nn.Linear(200, 200))

        def forward(self, x):
            h = self.patch_embedding(x)
            for layer in self.encoder.layers:
                h = layer(h)
            return self.proj_out(h)

    model = Reference()
    model.load_state_dict(source.state_dict())
    return model


def child(shape: tuple[int, ...], which: str, dtype: str, compiled: bool, device: str, steps: int) -> None:
    import psutil
    import torch

    from physiofm.models import CBraMod

    torch.manual_seed(0)
    ours = CBraMod().to(device)
    model = ours if which == "ours" else reference_model(ours).to(device)
    x = torch.randn(*shape, device=device)
    with torch.no_grad():
        ours.eval(), model.eval()
        assert torch.allclose(model(x), ours(x), atol=1e-3), "reference and physiofm outputs differ"
    if compiled:
        model = torch.compile(model)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = {}
    for mode in ("forward", "train"):
        model.train(mode == "train")

        def step():
            if mode == "forward":
                with torch.no_grad(), autocast:
                    model(x)
            else:
                with autocast:
                    loss = model(x).float().pow(2).mean()
                loss.backward()

        before = psutil.Process().memory_info().rss / 1024  # KB, as ru_maxrss
        for _ in range(2):  # warm-up (and compilation)
            step()
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        elapsed = time.perf_counter() - start
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        peak = torch.cuda.max_memory_allocated() / shape[0] / 2**20 if device == "cuda" else grown / 1024 / shape[0]
        out[mode] = (steps * shape[0] / elapsed, peak)
    print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", nargs=5)
    args = parser.parse_args()
    if args.child:
        shape, which, dtype, compiled, device = args.child
        child(tuple(int(v) for v in shape.split(",")), which, dtype, compiled == "1", device, args.steps)
        return
    import torch

    print(f"CBraMod encoder benchmark on {args.device} ({torch.get_num_threads()} threads), "
          f"{args.steps} timed steps; samples/s (peak MB per sample)")
    compile_options = [False] if args.no_compile else [False, True]
    for channels in (12, 14):
        shape = f"16,{channels},10,200"
        for dtype in ("fp32", "bf16"):
            for compiled in compile_options:
                row = {}
                for which in ("reference", "ours"):
                    command = [sys.executable, __file__, "--steps", str(args.steps), "--child", shape, which, dtype,
                               "1" if compiled else "0", args.device]
                    result = subprocess.run(command, capture_output=True, text=True)
                    if result.returncode:
                        print(f"  ({shape}) {dtype} compile={compiled} {which}: failed: "
                              f"{result.stderr.strip().splitlines()[-1] if result.stderr else ''}")
                        break
                    row[which] = eval(result.stdout.strip().splitlines()[-1])  # noqa: S307 - our own child
                if len(row) < 2:
                    continue
                cells = []
                for mode in ("forward", "train"):
                    ours, ref = row["ours"][mode], row["reference"][mode]
                    cells.append(f"{mode:7s} {ours[0]:7.1f} vs ref {ref[0]:7.1f} = {ours[0] / ref[0]:.2f}x "
                                 f"({ours[1]:.1f} MB/sample)")
                vs = ""
                if channels == 12 and dtype == "fp32" and args.device == "cpu":
                    vs = (f"  | vs braindecode: fwd {row['ours']['forward'][0] / BRAINDECODE['forward']:.2f}x, "
                          f"fwd+bwd {row['ours']['train'][0] / BRAINDECODE['train']:.2f}x")
                print(f"  (16,{channels:2d},10,200) {dtype} {'compiled' if compiled else 'eager   '}  "
                      + "  |  ".join(cells) + vs)


if __name__ == "__main__":
    main()
