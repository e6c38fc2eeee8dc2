"""Shared by the benchmarks: run a command, time it, and sample the peak memory (PSS) of its process tree."""

from __future__ import annotations

import ast
import os
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
    """Run ``command``; return its wall time, the peak memory of its process tree (summed PSS, MB,
    sampled every 20 ms) and the Python literal it printed last (``result``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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
    done.set()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"{command[:3]} failed with exit code {proc.returncode}")
    return {"seconds": seconds, "peak_mb": peak / 2**20, "result": ast.literal_eval(stdout.strip().splitlines()[-1])}
