"""Benchmark: `physiofm build emotion` on a DREAMER-sized file, beside TorchEEG's DREAMER cache.

Generates a DREAMER-layout file (23 subjects x 18 clips x 60-s stimuli, 61-s baselines; about
800 MB as TorchEEG sees it) and, in the same run, times:

* physiofm - ``build(..., kind="emotion", jobs=2)``: EEG *and* ECG, resampled to 200 Hz, filtered,
             10-s windows, tar shards + Zarr + Parquet, whole process;
* TorchEEG - ``DREAMERDataset(chunk_size=1280, num_worker=2)`` building its LMDB cache of the same
             file (EEG only, 10-s chunks at 128 Hz), whole process.  TorchEEG 1.1.3 needs its own
             environment (``numpy<2``, ``scipy==1.10.1``, ``pandas<3``): pass its interpreter with
             ``--torcheeg-python``; without it the peer is skipped and said so.

Each runs in its own subprocess; peak memory is the peak summed PSS of its process tree
(pages shared by forked workers counted once).
Usage: ``python bench/build_emotion.py [--subjects 23] [--clip-seconds 60] [--torcheeg-python PATH]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import measure_command  # noqa: E402

PHYSIOFM = """
import sys, time
from physiofm.store.build import build
start = time.perf_counter()
summary = build(sys.argv[1], sys.argv[2], kind="emotion", jobs=2)
print({"seconds": time.perf_counter() - start, "samples": summary["samples"]})
"""

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
        ours = measure_command([sys.executable, "-c", PHYSIOFM, str(src), str(work / "store")], cwd=ROOT)
        print(
            f"  physiofm (EEG+ECG, 2 jobs)   {ours['seconds']:6.1f} s   peak {ours['peak_mb']:6.0f} MB   "
            f"{ours['result']['samples']} paired samples"
        )
        if not args.torcheeg_python:
            print("  TorchEEG: skipped (no --torcheeg-python given)")
            return
        peer = measure_command([args.torcheeg_python, "-c", TORCHEEG, str(src), str(work / "torcheeg")], cwd=work)
        print(
            f"  TorchEEG (EEG only, 2 workers) {peer['seconds']:6.1f} s   peak {peer['peak_mb']:6.0f} MB   "
            f"{peer['result']['samples']} EEG samples"
        )
        print(
            f"  speed-up physiofm / TorchEEG  {peer['seconds'] / ours['seconds']:.1f}x  (aim >= 5)   "
            f"memory ratio {ours['peak_mb'] / peer['peak_mb']:.2f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
