"""Benchmark: `physiofm build ecg` against a naive peer-style script and the compute floor.

Generates Challenge-format archives (12 leads, 500 Hz, 10 s) of two sizes and, in the same run,
times three ways of turning each into 200-Hz band-passed windows:

* naive  - how peers write it: serial, float64, FFT resampling (scipy.signal.resample),
           per-lead filtfilt, one ``.npy`` file per window;
* floor  - the compute floor: the same records read, resampled and filtered by vectorised
           numpy/scipy calls (physiofm's readers and transforms) in one process, nothing written;
* build  - ``physiofm.store.build.build`` with everything written (tar shards, Zarr,
           Parquet manifests), with 1 process and with all cores.

Each variant runs in its own subprocess; peak memory is the peak summed PSS of that process
and its children (shared pages counted once), sampled every 20 ms.  Usage: ``python bench/build_ecg.py [--sizes 1000 2000]``.
"""

from __future__ import annotations

import argparse
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


def naive(src: Path, out: Path) -> int:
    import numpy as np
    import scipy.io
    from scipy import signal

    out.mkdir(parents=True)
    b, a = signal.butter(4, [0.5, 45.0], btype="bandpass", fs=200)
    count = 0
    for header in sorted(src.rglob("*.hea")):
        lines = header.read_text().splitlines()
        n_sig, fs, n = (int(float(x)) for x in lines[0].split()[1:4])
        gains = np.array([float(line.split()[2].split("/")[0]) for line in lines[1 : 1 + n_sig]])
        x = scipy.io.loadmat(str(header.with_suffix(".mat")))["val"].astype(np.float64) / gains[:, None]
        x = signal.resample(x, int(n * 200 / fs), axis=1)
        for lead in range(n_sig):
            x[lead] = signal.filtfilt(b, a, x[lead])
        for w in range(x.shape[1] // 2000):
            np.save(out / f"{header.stem}_{w}.npy", x[:, w * 2000 : (w + 1) * 2000].reshape(n_sig, 10, 200))
        count += 1
    return count


def floor(src: Path) -> int:
    import numpy as np

    from physiofm.corpora import challenge
    from physiofm.preprocess import transforms as T

    items = challenge.list_items(str(src))
    count = 0
    for start in range(0, len(items), 64):
        records = list(challenge.read(str(src), items[start : start + 64]))
        x = np.stack([r.signals["ecg"].data for r in records])
        T.bandpass(T.resample(x, 500, 200), 200, 0.5, 45.0)
        count += len(records)
    return count


def run_build(src: Path, out: Path, jobs: int) -> int:
    from physiofm.store.build import build

    return build(str(src), str(out), jobs=jobs)["records_read"]


def child(args: argparse.Namespace) -> None:
    src, out = Path(args.src), Path(args.out)
    start = time.perf_counter()
    if args.variant == "naive":
        count = naive(src, out)
    elif args.variant == "floor":
        count = floor(src)
    else:
        count = run_build(src, out, int(args.variant.split("-")[1]))
    print({"records": count, "seconds": time.perf_counter() - start})


def measure(variant: str, src: Path, out: Path) -> dict:
    """Run one variant in a subprocess: its own timing (imports excluded) and its peak memory."""
    run = measure_command([sys.executable, __file__, "--child", variant, "--src", str(src), "--out", str(out)])
    result = run["result"]
    return {**result, "rate": result["records"] / result["seconds"], "peak_mb": run["peak_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--child")
    parser.add_argument("--src")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        args.variant = args.child
        child(args)
        return

    from physiofm.synth.ecg import synth_challenge

    cores = os.cpu_count() or 1
    print(f"physiofm build ecg benchmark: {cores} cores, Challenge format, 12 leads, 500 Hz, 10 s")
    variants = ["naive", "floor", "build-1", f"build-{cores}"]
    work = Path(tempfile.mkdtemp(prefix="physiofm-bench-"))
    try:
        for size in args.sizes:
            started = time.perf_counter()
            src = synth_challenge(work / f"raw{size}", n_records=size, seed=0, subsets=("georgia",))
            print(
                f"\n{size} records generated in {time.perf_counter() - started:.1f} s "
                f"({sum(p.stat().st_size for p in src.rglob('*')) / 2**20:.0f} MB)"
            )
            results = {}
            for variant in variants:
                results[variant] = measure(variant, src, work / f"{variant}-{size}")
                shutil.rmtree(work / f"{variant}-{size}", ignore_errors=True)
                r = results[variant]
                print(f"  {variant:8s} {r['rate']:8.0f} records/s  {r['seconds']:6.2f} s  peak {r['peak_mb']:6.0f} MB")
            best = results[f"build-{cores}"]["rate"]
            print(f"  ratio build-{cores} / naive          : {best / results['naive']['rate']:.2f}x  (aim >= 2)")
            print(
                f"  ratio build-{cores} / (floor x {cores})    : "
                f"{best / (results['floor']['rate'] * cores):.2f}  (aim >= 0.70)"
            )
            print(f"  ratio build-1 / floor            : {results['build-1']['rate'] / results['floor']['rate']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
