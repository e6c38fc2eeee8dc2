"""Benchmark: opening a large store for training (``StoreIndex.load``), with and without column projection.

Builds a small ECG store, then a copy whose manifest is ``--copies`` times as long (the rows repeated,
keys made unique; ``shards.parquet`` and ``build.json`` as they are: loading reads neither the shards
nor the arrays), like an archive of MIMIC-IV-ECG's size.  Each variant runs in its own process,
alternating, ``--rounds`` times; printed: wall time of ``StoreIndex.load`` and the process's peak memory.

* ``projected``: ``StoreIndex.load`` as it is: only the manifest columns it uses are read;
* ``all columns``: the same call with every column read (what it did before), the baseline.

Usage: ``python bench/index_load.py [--copies 200] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import measure_command  # noqa: E402

CHILD = """
import sys, time
from physiofm.train.data import index
if sys.argv[2] == "all":
    index._needed = lambda columns, *rest: list(columns)
started = time.perf_counter()
loaded = index.StoreIndex.load(sys.argv[1], labels=["age"], filters={"q_flat": False})
print({"seconds": time.perf_counter() - started, "samples": len(loaded)})
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import polars as pl

    from physiofm.store.build import build
    from physiofm.synth.ecg import synth_challenge

    work = Path(tempfile.mkdtemp(prefix="physiofm-bench-index-"))
    try:
        src = synth_challenge(work / "raw", n_records=4000, seed=0, subsets=("georgia",))
        build(str(src), str(work / "store"), jobs=2)
        big = work / "big"
        shutil.copytree(work / "store", big, ignore=shutil.ignore_patterns("wds", "zarr"))
        manifest = pl.read_parquet(work / "store" / "manifest.parquet")
        copies = [manifest.with_columns(pl.col("key") + f"-{i}") for i in range(args.copies)]
        pl.concat(copies).write_parquet(big / "manifest.parquet")
        rows = manifest.height * args.copies
        info = json.loads((big / "build.json").read_text())
        print(
            f"StoreIndex.load of a manifest of {rows:,} rows ({len(manifest.columns)} columns, "
            f"{(big / 'manifest.parquet').stat().st_size / 2**20:.0f} MB on disk; {info['dataset']})"
        )
        runs: dict[str, list[dict]] = {"projected": [], "all": []}
        for round_ in range(args.rounds):
            for variant in ("projected", "all") if round_ % 2 == 0 else ("all", "projected"):
                run = measure_command([sys.executable, "-c", CHILD, str(big), variant])
                runs[variant].append(run)
                print(
                    f"  round {round_ + 1} {variant:9s} load {run['result']['seconds']:5.2f} s   "
                    f"process {run['seconds']:5.2f} s   peak {run['peak_mb']:6.0f} MB   "
                    f"{run['result']['samples']:,} samples"
                )
        load = {v: statistics.median(r["result"]["seconds"] for r in rs) for v, rs in runs.items()}
        peak = {v: statistics.median(r["peak_mb"] for r in rs) for v, rs in runs.items()}
        print(
            f"  medians: load {load['projected']:.2f} s vs {load['all']:.2f} s with all columns "
            f"({load['all'] / load['projected']:.1f}x); peak memory {peak['projected']:.0f} MB vs {peak['all']:.0f} MB "
            f"({peak['projected'] / peak['all']:.2f})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
