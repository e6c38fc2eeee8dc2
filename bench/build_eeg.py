"""Benchmark: `physiofm build eeg` against the upstream preparation of TUEG (CBraMod's script), two recording lengths.

Generates TUH-layout archives (TUEG layout: the three montages mixed, 23 EEG + 7 other channels,
250/256/400 Hz, 1-s EDF records) with the same number of recordings at two lengths and, in the
same run, turns each into CBraMod's samples (19 channels, 200 Hz, 0.3-75 Hz, notch 60 Hz, first
and last 60 s dropped, 30-s samples, max |x| < 100 µV) three ways:

* upstream - written the way ``preprocessing/preprocessing_tueg_for_pretraining.py`` does it:
             ``mne.io.read_raw_edf(preload=True)``, pick the 19 channels, ``raw.resample(200)``,
             ``raw.filter(0.3, 75)``, ``raw.notch_filter(60)``, ``raw.to_data_frame()``, cut, one
             pickle file per kept sample, one process;
* build-1  - ``physiofm build eeg`` (``tuh-eeg`` layout, default ``tueg`` recipe) with one process;
* build-N  - the same with all cores (``--jobs N``).

Each variant runs in its own process; times are of the whole process (interpreter start and
imports included) and peak memory is the peak summed PSS of the process tree, sampled every 20 ms
(:func:`common.measure_command`); variants run in ``--rounds`` rounds alternating their order, each
figure with its load average, the ratios from each variant's best round.
Usage: ``python bench/build_eeg.py [--records 8] [--minutes 10 40] [--rounds 2]``.
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

ORDER = ("FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T3", "T4", "T5", "T6",
         "FZ", "CZ", "PZ")  # fmt: skip


def upstream(src: Path, out: Path) -> int:
    """CBraMod's TUEG preparation, as its script does it (pickles instead of LMDB puts: one writer)."""
    import pickle

    import mne
    import numpy as np

    out.mkdir(parents=True)
    samples = 0
    for path in sorted(src.rglob("*.edf")):
        raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
        suffix = "LE" if "02_tcp_le" in str(path) else "REF"
        wanted = [f"EEG {name}-{suffix}" for name in ORDER]
        if not all(name in raw.ch_names for name in wanted):
            continue
        raw.pick(wanted)
        raw.reorder_channels(wanted)
        raw.resample(200, verbose="error")
        raw.filter(l_freq=0.3, h_freq=75, verbose="error")
        raw.notch_filter(60, verbose="error")
        eeg_array = raw.to_data_frame().values
        points, chs = eeg_array.shape
        if points < 300 * 200:
            continue
        a = points % (30 * 200)
        eeg_array = eeg_array[60 * 200 : -(a + 60 * 200), 1:]
        eeg_array = eeg_array.reshape(-1, 30, 200, chs - 1).transpose(0, 3, 1, 2)
        for i, sample in enumerate(eeg_array):
            if np.max(np.abs(sample)) < 100:
                with open(out / f"{path.stem}_{i}.pkl", "wb") as handle:
                    pickle.dump(sample, handle)
                samples += 1
    return samples


def run_build(src: Path, out: Path, jobs: int) -> int:
    from physiofm.store.build import build

    return build(str(src), str(out), fmt="tuh-eeg", kind="eeg", jobs=jobs)["samples"]


def child(variant: str, src: Path, out: Path) -> None:
    start = time.perf_counter()
    samples = upstream(src, out) if variant == "upstream" else run_build(src, out, int(variant.split("-")[1]))
    print({"samples": samples, "seconds": time.perf_counter() - start})


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def measure(variant: str, src: Path, out: Path) -> dict:
    run = measure_command([sys.executable, __file__, "--child", variant, "--src", str(src), "--out", str(out)])
    return {**run["result"], "process_s": run["seconds"], "cpu_s": run["cpu_s"], "peak_mb": run["peak_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=8)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 40.0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all variants, alternating their order")
    parser.add_argument("--child")
    parser.add_argument("--src")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.src), Path(args.out))
        return

    from physiofm.synth.eeg import synth_tuh_eeg

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    variants = ["upstream", "build-1", f"build-{cores}"] if cores > 1 else ["upstream", "build-1"]
    best = variants[-1]
    print(f"physiofm build eeg benchmark: {cores} cores, TUEG layout, {args.records} recordings per length, "
          f"250/256/400 Hz, 30 channels")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="physiofm-bench-eeg-"))
    peaks: dict[str, list[float]] = {v: [] for v in variants}
    try:
        for minutes in args.minutes:
            started = time.perf_counter()
            src = synth_tuh_eeg(work / f"raw{minutes:g}", n_records=args.records, seed=0, layout="tueg",
                                minutes=(minutes, minutes))  # fmt: skip
            size = sum(p.stat().st_size for p in src.rglob("*.edf")) / 2**20
            print(f"\n{args.records} recordings of {minutes:g} min generated in {time.perf_counter() - started:.1f} s "
                  f"({size:.0f} MB of EDF)")  # fmt: skip
            runs: dict[str, list[dict]] = {v: [] for v in variants}
            for round_ in range(args.rounds):  # alternating order: a drifting load hits every variant alike
                for variant in variants if round_ % 2 == 0 else variants[::-1]:
                    out = work / f"{variant}-{minutes:g}"
                    before = _load()
                    runs[variant].append(r := measure(variant, src, out))
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"  round {round_ + 1} {variant:9s} {r['process_s']:7.2f} s whole process "
                          f"({r['seconds']:6.2f} s of work)  {r['samples']:5d} samples  "
                          f"{r['samples'] / r['process_s']:6.1f} samples/s  cpu {r['cpu_s']:6.1f} s  "
                          f"peak {r['peak_mb']:6.0f} MB  "
                          f"load {before:.1f} -> {_load():.1f}")  # fmt: skip
            results = {v: min(rs, key=lambda r: r["process_s"]) for v, rs in runs.items()}
            for variant in variants:
                peaks[variant].append(results[variant]["peak_mb"])
            print(f"  best of {args.rounds} round(s) each (load: other processes on {cores} cores slow every variant)")
            up = results["upstream"]
            print(f"  ratio {best} / upstream, whole process : {up['process_s'] / results[best]['process_s']:.2f}x "
                  f"(aim >= 5)")  # fmt: skip
            print(
                f"  ratio build-1 / upstream, whole process  : {up['process_s'] / results['build-1']['process_s']:.2f}x"
            )
            print(f"  ratio build-1 / upstream, CPU seconds    : {up['cpu_s'] / results['build-1']['cpu_s']:.2f}x")
            if results[best]["samples"] != up["samples"]:
                print(f"  samples differ: build {results[best]['samples']}, upstream {up['samples']} "
                      "(filters differ in their edges: FFT Butterworth vs MNE's FIR)")  # fmt: skip
        if len(args.minutes) > 1:
            print(f"\npeak memory from {args.minutes[0]:g} to {args.minutes[-1]:g} min recordings "
                  f"({args.minutes[-1] / args.minutes[0]:g}x longer):")  # fmt: skip
            for variant in variants:
                low, high = peaks[variant][0], peaks[variant][-1]
                print(f"  {variant:9s} {low:6.0f} MB -> {high:6.0f} MB  ({high / low:.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
