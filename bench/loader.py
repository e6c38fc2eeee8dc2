"""Benchmark: samples/s that `StreamingDataset` delivers as batched tensors, against raw reads of the same bytes.

Builds a store of ``--records`` 10-s Challenge records (one 12×10×200 float32 window each) in a
temporary folder, then, in the same run:

* raw     - every shard file read with plain ``open().read()`` (the baseline), and also in 1-MiB pieces
            into a reused buffer (a stricter bound: no fresh pages, the buffer stays in cache);
* local   - a full epoch of ``StreamingDataset(...).loader()`` over the local shards, with 0, 1 and 2
            DataLoader workers (worker start-up included: workers are started once per epoch);
* s3 raw  - every shard fetched with ``s3fs`` from a moto server on loopback (started here): whole, and
            in the ranged requests of ``block_size`` bytes that the loader makes (moto serves a range in
            time proportional to the whole object, so it is the fair baseline);
* s3      - a full epoch from that server, with 0 and 2 workers.

Each figure is the best of ``--repeats`` runs; raw reads are repeated next to each measurement.
Usage: ``python bench/loader.py [--records 3000] [--batch-size 64] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def best_rate(samples: int, run: Callable[[], int], repeats: int) -> float:
    """Samples per second of the fastest of ``repeats`` runs (``run`` returns the samples it delivered)."""
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        delivered = run()
        elapsed = time.perf_counter() - started
        if delivered != samples:
            raise SystemExit(f"delivered {delivered} samples, expected {samples}")
        best = max(best, delivered / elapsed)
    return best


def epoch(store: str, batch_size: int, workers: int, storage_options: dict | None = None) -> Callable[[], int]:
    from physiofm.train.data.stream import StreamingDataset

    dataset = StreamingDataset(store, batch_size=batch_size, num_workers=workers, storage_options=storage_options)
    runs = iter(range(1_000_000))

    def run() -> int:
        dataset.set_epoch(next(runs))
        return sum(int((~batch["pad"]).sum()) for batch in dataset.loader())

    return run


def start_moto() -> tuple[ThreadedMotoServer, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import logging

    import s3fs

    from physiofm.store.build import build
    from physiofm.synth.ecg import synth_challenge
    from physiofm.train.data.s3 import BLOCK_SIZE

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="physiofm-loader-bench-"))
    server = None
    try:
        started = time.perf_counter()
        raw = synth_challenge(work / "raw", n_records=args.records, seed=0, subsets=("georgia",))
        summary = build(str(raw), str(work / "store"), jobs=os.cpu_count() or 1, shard_size=args.shard_size)
        shards = sorted((work / "store" / "wds").glob("*.tar"))
        samples, size = summary["samples"], sum(p.stat().st_size for p in shards)
        print(
            f"loader benchmark: {os.cpu_count()} cores, {samples} samples (12×10×200 float32) in {len(shards)} "
            f"shards, {size / 2**20:.0f} MiB, batch {args.batch_size}; store built in "
            f"{time.perf_counter() - started:.0f} s"
        )

        def read_whole() -> int:
            for path in shards:
                with open(path, "rb") as handle:
                    handle.read()
            return samples

        def read_pieces() -> int:
            for path in shards:
                with open(path, "rb") as handle:
                    while handle.read(1 << 20):
                        pass
            return samples

        rates: dict[str, float] = {}
        whole, pieces = [], []
        for workers in (0, 1, 2):
            whole.append(best_rate(samples, read_whole, args.repeats))
            pieces.append(best_rate(samples, read_pieces, args.repeats))
            rates[f"local, {workers} workers"] = best_rate(
                samples, epoch(str(work / "store"), args.batch_size, workers), args.repeats
            )
        raw_rate, piece_rate = max(whole), max(pieces)

        server, endpoint = start_moto()
        options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("bench")
        fs.put(str(work / "store"), "bench/store", recursive=True)
        remote = [f"bench/store/wds/{p.name}" for p in shards]

        def read_s3(block: int) -> Callable[[], int]:
            def run() -> int:
                for path, shard in zip(remote, shards):
                    length = shard.stat().st_size
                    for start in range(0, length, block):
                        fs.cat_file(path, start=start, end=min(start + block, length))
                return samples

            return run

        s3_whole = best_rate(samples, read_s3(size), args.repeats)
        s3_raw = best_rate(samples, read_s3(BLOCK_SIZE), args.repeats)
        for workers in (0, 2):
            rates[f"s3, {workers} workers"] = best_rate(
                samples, epoch("s3://bench/store", args.batch_size, workers, options), args.repeats
            )

        gib = size / samples / 2**30
        print(f"\n  {'raw open().read()':22s} {raw_rate:9.0f} samples/s  {raw_rate * gib:5.2f} GiB/s")
        print(f"  {'raw 1-MiB reads':22s} {piece_rate:9.0f} samples/s  {piece_rate * gib:5.2f} GiB/s")
        print(f"  {'s3 raw, whole objects':22s} {s3_whole:9.0f} samples/s  {s3_whole * gib:5.2f} GiB/s")
        print(f"  {'s3 raw, 8-MiB ranges':22s} {s3_raw:9.0f} samples/s  {s3_raw * gib:5.2f} GiB/s")
        for name, rate in rates.items():
            if name.startswith("local"):
                ratios = (
                    f"/ raw open().read(): {rate / raw_rate:.2f} (aim >= 0.5), / 1-MiB reads: {rate / piece_rate:.2f}"
                )
            else:
                ratios = f"/ s3 raw ranges: {rate / s3_raw:.2f}, / raw open().read(): {rate / raw_rate:.2f}"
            print(f"  {name:22s} {rate:9.0f} samples/s  {ratios}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
