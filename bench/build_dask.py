"""Benchmark: `physiofm build ecg` on a Dask cluster against the local process pool, and a MIMIC-IV-ECG projection.

Generates a MIMIC-IV-ECG-layout archive (WFDB format 16, 12 leads, 500 Hz, 10 s) and, in the
same run, builds it four ways, each in its own subprocess:

* local-1, local-N  - the default executor: a local process pool of 1 and N processes;
* dask-1, dask-N    - ``--executor dask-local``: a Dask ``LocalCluster`` of 1 and N
                      single-threaded worker processes (scheduler, nannies and workers on this
                      machine).  The timed build is the second on the cluster; the cluster's
                      start-up and the first build (fresh workers: imports, first-touch memory)
                      are reported apart.

A rate is records read over the build's wall time; peak memory is the summed PSS of the
variant's process tree (client, scheduler, nannies, workers).  The client's CPU time per record
shows how much the one process that cannot scale out does (local-1 does all the work there).  The projection multiplies what was
measured here (seconds per record in one worker, store bytes per record, samples per shard) out
to MIMIC-IV-ECG's 800,035 records.  Usage: ``python bench/build_dask.py [--records 2000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import measure_command  # noqa: E402

MIMIC_RECORDS = 800_035  # MIMIC-IV-ECG v1.0: 10-s 12-lead records


def _warm() -> None:
    import physiofm.corpora.mimic  # noqa: F401
    import physiofm.preprocess.ecg  # noqa: F401
    import physiofm.store.build  # noqa: F401


def child(variant: str, src: Path, out: Path) -> None:
    from physiofm.store.build import build

    kind, workers = variant.split("-")
    _warm()  # the client's imports are not per-record work
    started = time.perf_counter()
    if kind == "local":
        cpu = time.process_time()
        build_start = time.perf_counter()
        summary = build(str(src), str(out), jobs=int(workers))
        startup = first = 0.0
    else:
        from physiofm.store.executors import open_executor

        with open_executor("dask-local", int(workers)) as executor:
            executor._client.run(_warm)
            startup = time.perf_counter() - started
            first = time.perf_counter()
            build(str(src), str(out) + "-first", executor=executor)  # fresh workers: first-touch costs
            first = time.perf_counter() - first
            cpu = time.process_time()
            build_start = time.perf_counter()
            summary = build(str(src), str(out), executor=executor)
    seconds = time.perf_counter() - build_start
    print(
        {
            "records": summary["records_read"],
            "samples": summary["samples"],
            "shards": summary["shards"],
            "seconds": seconds,
            "startup": startup,
            "first": first,
            "client_cpu": time.process_time() - cpu,
        }
    )


def store_bytes(out: Path) -> dict[str, int]:
    sizes = {"wds": 0, "zarr": 0, "tables": 0}
    for path in out.rglob("*"):
        if path.is_file():
            part = path.relative_to(out).parts[0]
            sizes[part if part in sizes else "tables"] += path.stat().st_size
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--child")
    parser.add_argument("--src")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.src), Path(args.out))
        return

    from physiofm.synth.ecg import synth_mimic_iv_ecg

    cores = len(os.sched_getaffinity(0))
    print(
        f"physiofm build on Dask vs the local pool: {cores} cores, MIMIC-IV-ECG layout, "
        f"12 leads, 500 Hz, 10 s, {args.records} records, load average {os.getloadavg()[0]:.2f}"
    )
    work = Path(tempfile.mkdtemp(prefix="physiofm-bench-dask-"))
    try:
        src = synth_mimic_iv_ecg(work / "raw", n_records=args.records, seed=0)
        raw_bytes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        results, sizes = {}, None
        for variant in ("local-1", f"local-{cores}", "dask-1", f"dask-{cores}"):
            out = work / variant
            run = measure_command([sys.executable, __file__, "--child", variant, "--src", str(src), "--out", str(out)])
            r = {**run["result"], "peak_mb": run["peak_mb"]}
            r["rate"] = r["records"] / r["seconds"]
            results[variant] = r
            if sizes is None:
                sizes = store_bytes(out)
                build_info = json.loads((out / "build.json").read_text())
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(str(out) + "-first", ignore_errors=True)
            extra = (
                (
                    f"  (cluster start {r['startup']:.1f} s; first build on fresh workers "
                    f"{r['records'] / r['first']:.0f} records/s)"
                )
                if variant.startswith("dask")
                else ""
            )
            print(
                f"  {variant:8s} {r['rate']:7.0f} records/s  {r['seconds']:6.2f} s  peak {r['peak_mb']:5.0f} MB  "
                f"client CPU {1e3 * r['client_cpu'] / r['records']:.2f} ms/record{extra}"
            )
        local_n, dask_1, dask_n = results[f"local-{cores}"], results["dask-1"], results[f"dask-{cores}"]
        print(f"  ratio dask-1 / local-1            : {dask_1['rate'] / results['local-1']['rate']:.2f}x")
        print(f"  ratio dask-{cores} / local-{cores}            : {dask_n['rate'] / local_n['rate']:.2f}x")
        print(
            f"  ratio dask-{cores} / dask-1 (scaling)     : {dask_n['rate'] / dask_1['rate']:.2f}x on {cores} cores "
            f"(the client and scheduler share them)"
        )

        n = results["local-1"]["records"]
        per_record = {k: v / n for k, v in sizes.items()}
        shard_size = build_info["recipe"]["output"]["shard_size"]
        total = MIMIC_RECORDS * sum(per_record.values())
        seconds_per_record = 1 / dask_1["rate"]
        samples = MIMIC_RECORDS * results["local-1"]["samples"] / n
        print(
            f"\nProjection to MIMIC-IV-ECG ({MIMIC_RECORDS:,} records; recipe dtype {build_info['dtype']}, "
            f"shard_size {shard_size}), from this run:"
        )
        print(f"  source read: {raw_bytes / n / 1e3:.0f} kB/record -> {MIMIC_RECORDS * raw_bytes / n / 1e9:.0f} GB")
        print(
            f"  store: {sum(per_record.values()) / 1e3:.0f} kB/record (tar {per_record['wds'] / 1e3:.0f}, "
            f"zarr {per_record['zarr'] / 1e3:.0f}, tables {per_record['tables'] / 1e3:.2f}) -> {total / 1e9:.0f} GB"
        )
        print(
            f"  {samples:,.0f} samples in {-(-samples // shard_size):,.0f} tar shards of "
            f"{shard_size * sizes['wds'] / results['local-1']['samples'] / 1e6:.0f} MB, and as many Zarr tasks"
        )
        client = dask_n["client_cpu"] / dask_n["records"]
        print(
            f"  one Dask worker: {1e3 * seconds_per_record:.1f} ms/record -> "
            f"{MIMIC_RECORDS * seconds_per_record / 3600:.1f} worker-hours of CPU"
        )
        print(
            f"  the client: {1e3 * client:.2f} ms CPU/record -> {MIMIC_RECORDS * client / 60:.1f} min in all "
            f"(at most that much is serial: listing, results, Parquet tables)"
        )
        io = raw_bytes / n + sum(per_record.values()) + per_record["wds"]  # read, write, tar re-read (Zarr)
        print(f"  I/O: {io / 1e3:.0f} kB/record, {io / seconds_per_record / 1e6:.0f} MB/s per busy worker")
        for workers in (2, 8, 32, 128):
            hours = MIMIC_RECORDS * (seconds_per_record / workers + client) / 3600
            print(f"    {workers:4d} workers (one core each): {hours:6.2f} h, if the store's I/O keeps up")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
