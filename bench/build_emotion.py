"""Benchmark: `physiofm build emotion` on a DREAMER-sized file, beside TorchEEG's DREAMER cache.

Generates a DREAMER-layout file (23 subjects x 18 clips x 60-s stimuli, 61-s baselines; about
800 MB as TorchEEG sees it) and, in the same run, times:

* physiofm - ``physiofm build emotion RAW STORE --jobs 2``, the command a user runs: EEG *and* ECG,
             resampled to 200 Hz, filtered, 10-s windows, tar shards + Zarr + Parquet, whole process;
* TorchEEG - ``DREAMERDataset(chunk_size=1280, num_worker=2)`` building its LMDB cache of the same
             file (EEG only, 10-s chunks at 128 Hz), whole process.  TorchEEG 1.1.3 needs its own
             environment (``numpy<2``, ``scipy==1.10.1``, ``pandas<3``): pass its interpreter with
             ``--torcheeg-python``; without it the peer is skipped and said so.

Each runs in its own subprocess, in ``--rounds`` rounds alternating their order, every figure with
the load average it ran under; times are of the whole process; peak memory is the peak summed PSS of
its process tree (pages shared by forked workers counted once).  Each run's outputs are removed when it
ends.  The speed-up is printed for the best round of each and for the median round (see
``bench/build_ecg.py`` on rounds that are faster than usual).
Usage: ``python bench/build_emotion.py [--subjects 23] [--clip-seconds 60] [--torcheeg-python PATH] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import measure_command  # noqa: E402

TORCHEEG = """
import sys, time
start = time.perf_counter()
from torcheeg.datasets import DREAMERDataset
dataset = DREAMERDataset(mat_path=sys.argv[1] + "/DREAMER.mat", io_path=sys.argv[2], chunk_size=1280,
                         num_worker=2, verbose=False)
print({"seconds": time.perf_counter() - start, "samples": len(dataset)})
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=23)
    parser.add_argument("--clip-seconds", type=float, default=60.0)
    parser.add_argument("--torcheeg-python", help="python of an environment with torcheeg 1.1.3")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both, alternating their order")
    args = parser.parse_args()

    from physiofm.synth.emotion import synth_dreamer

    work = Path(tempfile.mkdtemp(prefix="physiofm-bench-emotion-"))
    try:
        started = time.perf_counter()
        src = synth_dreamer(work / "raw", subjects=args.subjects, seed=0, clip_seconds=args.clip_seconds)
        size = (src / "DREAMER.mat").stat().st_size
        print(
            f"DREAMER layout: {args.subjects} subjects x 18 clips x {args.clip_seconds:g} s, "
            f"{size / 2**20:.0f} MB on disk (compressed), generated in {time.perf_counter() - started:.0f} s"
        )

        def load() -> float:
            return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

        def ours() -> dict:
            shutil.rmtree(work / "store", ignore_errors=True)
            command = [
                sys.executable,
                "-m",
                "physiofm",
                "build",
                "emotion",
                str(src),
                str(work / "store"),
                "--jobs",
                "2",
            ]
            run = measure_command(command, cwd=ROOT, literal=False)
            run["result"] = {"samples": json.loads((work / "store" / "build.json").read_text())["counts"]["samples"]}
            shutil.rmtree(work / "store")  # before the next variant's pause
            return run

        def peer() -> dict:
            shutil.rmtree(work / "torcheeg", ignore_errors=True)
            run = measure_command([args.torcheeg_python, "-c", TORCHEEG, str(src), str(work / "torcheeg")], cwd=work)
            shutil.rmtree(work / "torcheeg")
            return run

        variants = {"physiofm": ours, "TorchEEG": peer} if args.torcheeg_python else {"physiofm": ours}
        if not args.torcheeg_python:
            print("  TorchEEG: skipped (no --torcheeg-python given)")
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        names = list(variants)
        for round_ in range(args.rounds):  # alternating order: a load that drifts hits both alike
            for name in names if round_ % 2 == 0 else names[::-1]:
                before = load()
                run = variants[name]()
                run["load"] = (before, load())
                runs[name].append(run)
                what = "EEG+ECG, 2 jobs" if name == "physiofm" else "EEG only, 2 workers"
                print(
                    f"  round {round_ + 1} {name:8s} ({what:19s}) {run['seconds']:6.1f} s whole process   "
                    f"cpu {run['cpu_s']:6.1f} s   peak {run['peak_mb']:6.0f} MB   {run['result']['samples']} samples   "
                    f"load {run['load'][0]:.1f} -> {run['load'][1]:.1f}"
                )
        if args.torcheeg_python:
            for round_, (a, b) in enumerate(zip(runs["physiofm"], runs["TorchEEG"])):
                print(f"  round {round_ + 1}: speed-up physiofm / TorchEEG {b['seconds'] / a['seconds']:.1f}x")
            best = {name: min(r["seconds"] for r in rs) for name, rs in runs.items()}
            peak = {name: min(r["peak_mb"] for r in rs) for name, rs in runs.items()}
            print(
                f"  best of {args.rounds}: speed-up physiofm / TorchEEG, whole process {best['TorchEEG'] / best['physiofm']:.1f}x"
                f"  (aim >= 10)   memory ratio {peak['physiofm'] / peak['TorchEEG']:.2f}"
            )
            median = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
            print(
                f"  median of {args.rounds}: speed-up physiofm / TorchEEG {median['TorchEEG'] / median['physiofm']:.1f}x"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
