"""Benchmark: `physiofm validate`, default check against ``--deep``, and ``--deep`` over 1 and N jobs.

Builds a Challenge-format store of a few thousand samples (recipe shard size, 1000 by default) and
times, in this one process run: indexes only (``sample=0``: tables hashed, two listings), the default
(``sample=64``: one shard read with its Zarr objects), and ``--deep`` (every shard and Zarr object
hashed, every sample compared) with one job, with ``--jobs`` processes and with ``--jobs`` threads;
ratios are against the one-job deep run, and the machine's own ceiling is measured (``jobs``
processes of pure-Python work against one), since a shared VM may give less than its core count.  Bytes read are the check's own count
(``sections.checked["bytes read"]``: tables, shards and Zarr objects hashed; Zarr rows read for the
comparison come on top).  The store fits in the page cache, so these are CPU figures, not disk
figures.  The projection to a 100k-sample store scales what grows with the store (the Parquet
tables for the default, everything for ``--deep``) and keeps what does not (the shards the default
reads).  Usage: ``python bench/validate.py [--records 4000] [--jobs 2] [--samples 100000]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from physiofm.store.build import build  # noqa: E402
from physiofm.store.validate import validate  # noqa: E402
from physiofm.synth.ecg import synth_challenge  # noqa: E402


def measure(store: Path, repeat: int, **options) -> tuple[float, int, str]:
    """Best time of ``repeat`` runs, the bytes one run hashes, and what it says it read."""
    best, report = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        report = validate(str(store), **options)
        best = min(best, time.perf_counter() - started)
        assert report.ok, report.problems
    return best, int(report.sections["checked"]["bytes read"]), report.read


def _burn(seconds: float) -> int:
    """Pure-Python CPU work for about ``seconds`` (no I/O, no shared state)."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += sum(i * i for i in range(1000))
    return n


def capacity(jobs: int, seconds: float = 1.0) -> float:
    """How many times the work of one process ``jobs`` processes do in the same time on this machine."""
    if jobs <= 1:
        return 1.0
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        list(pool.map(_burn, [0.05] * jobs))  # start the workers
        single = sum(pool.map(_burn, [seconds]))
        together = sum(pool.map(_burn, [seconds] * jobs))
    return together / single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--samples", type=int, default=100_000, help="store size to project to")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="jobs of the parallel runs")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each deep check (best is kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw, store = Path(tmp) / "raw", Path(tmp) / "store"
        started = time.perf_counter()
        synth_challenge(raw, n_records=args.records, seed=0)
        summary = build(str(raw), str(store), jobs=args.jobs)
        print(
            f"store: {summary['samples']:,} samples in {summary['shards']} shards "
            f"(built in {time.perf_counter() - started:.0f} s); {os.cpu_count()} cores, jobs {args.jobs}"
        )
        n = summary["samples"]
        size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        tables = sum(p.stat().st_size for p in store.glob("*.parquet"))
        validate(str(store), deep=True, jobs=1)  # warm-up: imports, page cache
        runs = {
            "indexes only (sample=0)": measure(store, 3, sample=0, jobs=1),
            "default (sample=64)": measure(store, 3),
        }
        deep = {
            "deep, 1 job": {"jobs": 1},
            f"deep, {args.jobs} processes": {"jobs": args.jobs, "pool": "process"},
            f"deep, {args.jobs} threads": {"jobs": args.jobs, "pool": "thread"},
        }
        best: dict[str, tuple[float, int, str]] = {}
        for _ in range(args.repeat):  # interleaved, best of each: a shared machine's noise hits all alike
            for name, options in deep.items():
                figures = measure(store, 1, deep=True, **options)
                best[name] = min(best.get(name, figures), figures)
        runs.update(best)
        machine = capacity(args.jobs)
        one = runs["deep, 1 job"][0]
        print(f"{'check':<26}{'seconds':>9}{'MB hashed':>11}{'samples/s':>11}{'vs 1 job':>10}")
        for name, (seconds, read, _) in runs.items():
            ratio = f"{one / seconds:9.2f}x" if name.startswith("deep") else ""
            print(f"{name:<26}{seconds:9.2f}{read / 1e6:11.1f}{n / seconds:11.0f}{ratio:>10}")
        print(
            f"\nthis machine: {args.jobs} processes of pure-Python work do {machine:.2f}x the work of one "
            f"(the ceiling of any {args.jobs}-job speed-up here); deep with {args.jobs} processes reaches "
            f"{one / runs[f'deep, {args.jobs} processes'][0] / machine:.0%} of it"
        )
        print(f"\ndefault says: {runs['default (sample=64)'][2]}")
        print(f"deep says:    {runs[f'deep, {args.jobs} processes'][2]}")
        (t_index, r_index, _), (t_default, r_default, _) = runs["indexes only (sample=0)"], runs["default (sample=64)"]
        t_deep, r_deep, _ = runs[f"deep, {args.jobs} processes"]
        scale = args.samples / n
        print(
            f"\nstore {size / 1e6:.0f} MB, tables {tables / 1e6:.2f} MB; "
            f"deep ({args.jobs} processes) / default time: {t_deep / t_default:.1f}x"
        )
        print(f"projection to {args.samples:,} samples (x{scale:.0f}):")
        print(
            f"  default: hashes ~{(r_index * scale + r_default - r_index) / 1e6:.0f} MB "
            f"(tables x{scale:.0f}, one shard as now) in ~{t_index * scale + t_default - t_index:.1f} s"
        )
        print(f"  deep:    hashes ~{r_deep * scale / 1e9:.1f} GB in ~{t_deep * scale:.0f} s with {args.jobs} processes")


if __name__ == "__main__":
    main()
