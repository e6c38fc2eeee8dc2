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
    """PSS where the OS reports it (pages shared by forked workers counted once), else RSS.

    Read from ``/proc/PID/smaps_rollup`` (one summed line) where it exists: psutil's
    ``memory_full_info`` parses the whole ``smaps``, which for a process holding a GB took long
    enough, every 20 ms on two cores, to add half to an 8-s build's time."""
    try:
        with open(f"/proc/{process.pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return process.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return process.memory_info().rss


def measure_command(command: list[str], cwd: Path | None = None, literal: bool = True) -> dict:
    """Run ``command``; return its wall time, its CPU time (user + system of the process and its
    descendants: what other processes' load does not inflate much; ``sys_s`` the system part), the peak
    memory of its process tree (summed PSS, MB, sampled every 20 ms or, where a sample is slow, less often) and the Python
    literal it printed last (``result``; None with ``literal=False``, for a command that prints text)."""
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
            begun = time.perf_counter()
            try:
                peak = max(peak, sum(_memory(p) for p in [parent, *parent.children(recursive=True)]))
            except psutil.Error:
                pass
            # Reading PSS makes the kernel walk every page of the tree: ~35 ms for a GB held by three
            # processes.  Sampling every 20 ms regardless took most of a core from a 2-core machine
            # (an 8.5-s build took 13 s); now the sampler uses at most 1/20 of a core.
            time.sleep(max(0.02, 20 * (time.perf_counter() - begun)))

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
        "sys_s": after.ru_stime - used.ru_stime,
        "peak_mb": peak / 2**20,
        "result": ast.literal_eval(stdout.strip().splitlines()[-1]) if literal else None,
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
