"""Shared by the benchmarks: run a command, time it, and sample the peak memory (PSS) of its process tree."""

from __future__ import annotations

import ast
import os
import resource
import subprocess
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def _memory(process: psutil.Process) -> int:
    """PSS where the OS reports it (pages shared by forked workers counted once), else RSS."""
    try:
        return process.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return process.memory_info().rss


def measure_command(command: list[str], cwd: Path | None = None) -> dict:
    """Run ``command``; return its wall time, its CPU time (user + system of the process and its
    descendants: what other processes' load does not inflate much), the peak memory of its process
    tree (summed PSS, MB, sampled every 20 ms) and the Python literal it printed last (``result``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=cwd)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak = max(peak, sum(_memory(p) for p in [parent, *parent.children(recursive=True)]))
            except psutil.Error:
                pass
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, _ = proc.communicate()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the process and every descendant it waited for
    cpu = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    done.set()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"{command[:3]} failed with exit code {proc.returncode}")
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_mb": peak / 2**20,
        "result": ast.literal_eval(stdout.strip().splitlines()[-1]),
    }


def gpu_parity(model, x, device, label: str = "") -> None:
    """Print how far ``model``'s float32 forward of ``x`` on ``device`` (TF32 off) is from the CPU's."""
    import torch

    model = model.eval()
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.inference_mode():
            cpu = model(x)
            gpu = model.to(device)(x.to(device)).cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    gap, scale = (gpu - cpu).abs().max().item(), cpu.abs().max().item()
    verdict = "ok" if gap <= 1e-3 * max(1.0, scale) else "MISMATCH"
    print(f"{label}GPU-vs-CPU float32 forward parity {tuple(x.shape)}: max |gpu - cpu| {gap:.2e} "
          f"(outputs up to {scale:.2f}): {verdict}", flush=True)  # fmt: skip
