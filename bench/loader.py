"""Benchmark: samples/s that `StreamingDataset` delivers as batched tensors, against plain webdataset and raw reads.

Builds a store of ``--records`` 10-s Challenge records (one 12×10×200 window each) in a temporary
folder, float32 and float16 (the same records), then measures, in the same process and
*alternating* (one epoch of every configuration per round, ``--repeats`` rounds, so that each
sees the same load):

* raw        - every shard file read with plain ``open().read()`` (the bytes the loader reads);
* webdataset - plain webdataset, the way its docs batch: ``WebDataset(shards).decode()
               .to_tuple("ecg.npy").batched(B)`` in a ``DataLoader(batch_size=None)`` with 0, 1
               and 2 workers (no shuffling, which only flatters it);
* ours       - ``StreamingDataset(...).loader()`` (shuffled, exact epochs) with 0, 1 and 2 workers:
               batches assembled in the workers in reused shared-memory slots, persistent workers
               (their start-up is in the first epoch, which is not timed; it is printed);
* per-sample - the same dataset in a plain ``DataLoader(dataset, batch_size=None, num_workers=2)``:
               the pre-issue-16 path (a fresh shared-memory tensor per batch and per field);
* float16    - ours and webdataset on the float16 store (ours still yields float32);
* s3         - unless ``--no-s3``: every shard fetched with ``s3fs`` from a moto server on loopback
               in the ranged requests the loader makes, and ours from that server with 0 and 2 workers.

Each figure is the best round's samples/s, the median in brackets, with the 1-minute load
average when the best round ran.  The ratios the issue asks for are printed last: ours with 2
workers over ours with 0, and ours (best worker count) over webdataset (its best worker count).
Usage: ``python bench/loader.py [--records 3000] [--batch-size 64] [--repeats 5] [--no-s3]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Runs:
    """Rates (samples/s) of alternating runs per configuration, with the load when each ran."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.rates: dict[str, list[tuple[float, float]]] = {}

    def time(self, name: str, run: Callable[[], int]) -> None:
        started = time.perf_counter()
        delivered = run()
        elapsed = time.perf_counter() - started
        if delivered != self.samples:
            raise SystemExit(f"{name}: delivered {delivered} samples, expected {self.samples}")
        self.rates.setdefault(name, []).append((delivered / elapsed, os.getloadavg()[0]))

    def best(self, name: str) -> float:
        return max(rate for rate, _ in self.rates[name])

    def line(self, name: str, bytes_per_sample: float) -> str:
        rates = self.rates[name]
        rate, load = max(rates)
        median = statistics.median(r for r, _ in rates)
        return (
            f"  {name:34s} {rate:8.0f} [{median:6.0f}] samples/s  {rate * bytes_per_sample / 2**30:5.2f} GiB/s"
            f"  load {load:4.1f}"
        )


def ours(store: str, batch_size: int, workers: int, storage_options: dict | None = None) -> Callable[[], int]:
    from physiofm.train.data.stream import StreamingDataset

    dataset = StreamingDataset(store, batch_size=batch_size, num_workers=workers, storage_options=storage_options)
    loader = dataset.loader()
    epochs = iter(range(1_000_000))

    def run() -> int:
        dataset.set_epoch(next(epochs))
        return sum(int((~batch["pad"]).sum()) for batch in loader)

    return run


def per_sample(store: str, batch_size: int, workers: int) -> Callable[[], int]:
    from torch.utils.data import DataLoader

    from physiofm.train.data.stream import StreamingDataset

    dataset = StreamingDataset(store, batch_size=batch_size, num_workers=workers)

    def run() -> int:
        loader = DataLoader(dataset, batch_size=None, num_workers=workers)
        return sum(int((~batch["pad"]).sum()) for batch in loader)

    return run


def webdataset(shards: list[Path], batch_size: int, workers: int) -> Callable[[], int]:
    import webdataset as wds
    from torch.utils.data import DataLoader

    urls = [str(p) for p in shards]

    def run() -> int:
        dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
        loader = DataLoader(
            dataset.to_tuple("ecg.npy").batched(batch_size, partial=True), batch_size=None, num_workers=workers
        )
        return sum(len(ecg) for (ecg,) in loader)

    return run


def start_moto():
    from moto.server import ThreadedMotoServer

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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-s3", action="store_true", help="skip the loopback S3 part")
    args = parser.parse_args()

    import logging

    from physiofm.store.build import build
    from physiofm.synth.ecg import synth_challenge

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="physiofm-loader-bench-"))
    server = None
    try:
        started = time.perf_counter()
        raw = synth_challenge(work / "raw", n_records=args.records, seed=0, subsets=("georgia",))
        stores = {}
        for dtype in ("float32", "float16"):
            summary = build(
                str(raw), str(work / dtype), jobs=os.cpu_count() or 1, shard_size=args.shard_size, dtype=dtype
            )
            stores[dtype] = str(work / dtype)
        shards = {d: sorted((work / d / "wds").glob("*.tar")) for d in stores}
        samples = summary["samples"]
        size = {d: sum(p.stat().st_size for p in shards[d]) for d in stores}
        B = args.batch_size
        print(
            f"loader benchmark: {os.cpu_count()} cores, {samples} samples (12×10×200) in {len(shards['float32'])} "
            f"shards ({size['float32'] / 2**20:.0f} MiB float32, {size['float16'] / 2**20:.0f} MiB float16), "
            f"batch {B}, {args.repeats} alternating rounds; stores built in {time.perf_counter() - started:.0f} s, "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )

        def read_whole(paths: list[Path]) -> Callable[[], int]:
            def run() -> int:
                for path in paths:
                    with open(path, "rb") as handle:
                        handle.read()
                return samples

            return run

        configs: dict[str, Callable[[], int]] = {"raw open().read()": read_whole(shards["float32"])}
        for workers in (0, 1, 2):
            configs[f"webdataset .decode(), {workers} workers"] = webdataset(shards["float32"], B, workers)
        for workers in (0, 1, 2):
            configs[f"ours, {workers} workers"] = ours(stores["float32"], B, workers)
        configs["per-sample path, 2 workers"] = per_sample(stores["float32"], B, 2)
        configs["raw open().read(), float16"] = read_whole(shards["float16"])
        configs["webdataset, float16, 2 workers"] = webdataset(shards["float16"], B, 2)
        for workers in (0, 2):
            configs[f"ours, float16, {workers} workers"] = ours(stores["float16"], B, workers)

        runs = Runs(samples)
        for name, run in configs.items():  # warm-up: page cache, imports, persistent workers' start-up
            started = time.perf_counter()
            run()
            if name.startswith("ours") and not name.endswith(" 0 workers"):
                print(f"  first epoch of {name} (workers' start-up included): {time.perf_counter() - started:.2f} s")
        for _ in range(args.repeats):
            for name, run in configs.items():
                runs.time(name, run)

        if not args.no_s3:
            import s3fs

            from physiofm.train.data.s3 import BLOCK_SIZE

            server, endpoint = start_moto()
            options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            fs = s3fs.S3FileSystem(**options)
            fs.mkdir("bench")
            fs.put(stores["float32"], "bench/store", recursive=True)
            remote = [(f"bench/store/wds/{p.name}", p.stat().st_size) for p in shards["float32"]]

            def read_s3() -> int:
                for path, length in remote:
                    for start in range(0, length, BLOCK_SIZE):
                        fs.cat_file(path, start=start, end=min(start + BLOCK_SIZE, length))
                return samples

            s3 = {"s3 raw, 8-MiB ranges": read_s3}
            for workers in (0, 2):
                s3[f"s3 ours, {workers} workers"] = ours("s3://bench/store", B, workers, options)
            for run in s3.values():
                run()
            for _ in range(max(1, args.repeats // 2)):
                for name, run in s3.items():
                    runs.time(name, run)

        per = {d: size[d] / samples for d in stores}
        print()
        for name in runs.rates:
            print(runs.line(name, per["float16" if "float16" in name else "float32"]))
        wds_best = max(runs.best(f"webdataset .decode(), {w} workers") for w in (0, 1, 2))
        ours_best = max(runs.best(f"ours, {w} workers") for w in (0, 1, 2))
        zero, two = runs.best("ours, 0 workers"), runs.best("ours, 2 workers")
        raw_rate = runs.best("raw open().read()")
        print(
            f"\n  ours 2 workers / ours 0 workers: {two / zero:.2f} (aim >= 1)\n"
            f"  ours (best of 0-2 workers) / webdataset .decode() (best of 0-2 workers): {ours_best / wds_best:.2f} "
            f"(aim >= 2)\n"
            f"  ours 2 workers / webdataset 2 workers: {two / runs.best('webdataset .decode(), 2 workers'):.2f}\n"
            f"  ours 2 workers / per-sample path 2 workers: {two / runs.best('per-sample path, 2 workers'):.2f}\n"
            f"  ours 2 workers / raw open().read(): {two / raw_rate:.2f}\n"
            f"  float16: ours 2 workers / webdataset 2 workers: "
            f"{runs.best('ours, float16, 2 workers') / runs.best('webdataset, float16, 2 workers'):.2f}; "
            f"ours float16 / float32 (2 workers): {runs.best('ours, float16, 2 workers') / two:.2f}"
        )
        if not args.no_s3:
            s3_raw = runs.best("s3 raw, 8-MiB ranges")
            for workers in (0, 2):
                print(
                    f"  s3 ours {workers} workers / s3 raw ranges: {runs.best(f's3 ours, {workers} workers') / s3_raw:.2f}"
                )
        print(f"  load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
