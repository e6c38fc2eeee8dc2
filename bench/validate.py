"""Benchmark: `physiofm validate` default check against ``--deep`` on a generated store.

Builds a Challenge-format store of a few thousand samples (recipe shard size, 1000 by default) and
times, in this process, three checks: indexes only (``sample=0``), the default (``sample=64``: one
shard read) and ``--deep`` (every shard hashed and compared with Zarr).  Bytes read are the
process's ``read_chars`` (Linux).  The projection to a 100k-sample store scales what grows with the
store (the Parquet tables for the default, everything for ``--deep``) and keeps what does not (the
shards the default reads).  Usage: ``python bench/validate.py [--records 4000] [--samples 100000]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from physiofm.store.build import build  # noqa: E402
from physiofm.store.validate import validate  # noqa: E402
from physiofm.synth.ecg import synth_challenge  # noqa: E402


def measure(store: Path, repeat: int, **options) -> tuple[float, int]:
    """Best time of ``repeat`` runs and the bytes one run reads."""
    process = psutil.Process()
    best, read = float("inf"), 0
    for _ in range(repeat):
        before = process.io_counters().read_chars
        started = time.perf_counter()
        report = validate(str(store), **options)
        best = min(best, time.perf_counter() - started)
        read = process.io_counters().read_chars - before
        assert report.ok, report.problems
    return best, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--samples", type=int, default=100_000, help="store size to project to")
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw, store = Path(tmp) / "raw", Path(tmp) / "store"
        started = time.perf_counter()
        synth_challenge(raw, n_records=args.records, seed=0)
        summary = build(str(raw), str(store), jobs=args.jobs)
        print(
            f"store: {summary['samples']} samples in {summary['shards']} shards "
            f"(built in {time.perf_counter() - started:.0f} s)"
        )
        n = summary["samples"]
        size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        tables = sum((store / f"{t}.parquet").stat().st_size for t in ("manifest", "shards", "rejects"))
        validate(str(store), sample=0)  # warm-up: imports, page cache
        runs = {
            "indexes only (sample=0)": measure(store, 3, sample=0),
            "default (sample=64)": measure(store, 3),
            "deep": measure(store, 1, deep=True),
        }
        print(f"{'check':<26}{'seconds':>9}{'MB read':>10}{'samples/s':>11}")
        for name, (seconds, read) in runs.items():
            print(f"{name:<26}{seconds:9.2f}{read / 1e6:10.1f}{n / seconds:11.0f}")
        (t_index, r_index), (t_default, r_default), (t_deep, r_deep) = runs.values()
        scale = args.samples / n
        print(
            f"\nstore {size / 1e6:.0f} MB, tables {tables / 1e6:.2f} MB; deep / default time: {t_deep / t_default:.1f}x"
        )
        print(f"projection to {args.samples} samples (x{scale:.0f}):")
        print(
            f"  default: reads ~{(r_index * scale + r_default - r_index) / 1e6:.0f} MB "
            f"(tables x{scale:.0f}, one shard as now) in ~{t_index * scale + t_default - t_index:.1f} s"
        )
        print(f"  deep:    reads ~{r_deep * scale / 1e9:.1f} GB in ~{t_deep * scale:.0f} s")


if __name__ == "__main__":
    main()
