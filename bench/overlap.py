"""Benchmark: `physiofm overlap` of two large stores, by its index (no comparison of all pairs).

Makes two sets of ``--windows`` synthetic fingerprints (default 800,000 each, the size of
MIMIC-IV-ECG), as a manifest would hold them: two sketched leads per window, each a band-limited
Gaussian signal at the sketch rate (3-9 Hz at 20 Hz, the band real sketches have), quantised like
:func:`physiofm.preprocess.fingerprint.quantise`.  ``--copies`` windows of A are planted in B as
near copies (the sketch plus noise, correlation about 0.99, what a 100-Hz copy of a 500-Hz record
gives) and as many again as weak look-alikes (correlation about 0.85, under the 0.97 threshold:
they must not be reported).  Then :func:`physiofm.store.overlap.compare` is timed, whole and by
step (LSH keys, candidate join, verification); recall of the planted copies, false pairs and the
candidates verified are reported with the all-pairs count the index avoids.

Band-limited noise is the easy case for an index (unrelated windows correlate near 0); real ECG
windows resemble one another more, which adds candidates, not missed copies.  ``--ecg N`` also
sketches N generated 12-lead ECGs (:func:`physiofm.synth.signals.ecg_12lead`, one template
morphology at steady rates: harder than real data) against N others and reports the candidate
rate per pair, to scale from.

Usage: ``python bench/overlap.py [--windows 800000] [--copies 2000] [--ecg 0]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from physiofm.preprocess import fingerprint as F  # noqa: E402
from physiofm.store import overlap as O  # noqa: E402

LENGTH = F.sketch_length(10.0)


def band_noise(rng: np.random.Generator, n: int, chunk: int = 100_000) -> np.ndarray:
    """(n, SLOTS, L) float32 Gaussian signals limited to the sketch band, unit variance."""
    gain = F._gain(LENGTH, F.SKETCH_HZ, LENGTH).astype(np.float32)
    out = np.empty((n, F.SLOTS, LENGTH), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        spectrum = (
            rng.standard_normal((m, F.SLOTS, len(gain)), dtype=np.float32)
            + 1j * rng.standard_normal((m, F.SLOTS, len(gain)), dtype=np.float32)
        ) * gain
        x = np.fft.irfft(spectrum, n=LENGTH, axis=-1).astype(np.float32)
        x /= x.std(axis=-1, keepdims=True)
        out[start : start + m] = x
    return out


def quantised(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * F.SCALE), -127, 127).astype(np.int8)


def with_noise(rng: np.random.Generator, x: np.ndarray, rho: float) -> np.ndarray:
    """Signals correlating ``rho`` with ``x`` (band-limited noise added)."""
    noise = band_noise(rng, len(x))
    y = rho * x + np.sqrt(1 - rho**2) * noise
    return y / y.std(axis=-1, keepdims=True)


def fingerprints(name: str, values: np.ndarray) -> O.Fingerprints:
    n = len(values)
    ids = pl.DataFrame(
        {
            "row": np.arange(n, dtype=np.uint32),
            "key": [f"{name}{i:07d}_w0000" for i in range(n)],
            "dataset": name,
            "record_id": [f"{name}{i:07d}" for i in range(n)],
            "subject_id": None,
            "window_index": 0,
            "fp_signal": None,
        },
        schema_overrides={"subject_id": pl.String, "fp_signal": pl.String, "window_index": pl.Int32},
    )
    leads = np.tile(np.array([1, 7], dtype=np.int16), (n, 1))  # II and V2
    return O.Fingerprints(name, ids, leads, values, "manifest")


def ecg_rate(n: int, seed: int) -> dict:
    """Candidates per window pair between sketches of two sets of n generated ECGs."""
    from physiofm.preprocess.leads import STANDARD_LEADS
    from physiofm.synth.signals import ecg_12lead

    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(2):
        x = ecg_12lead(n, 200, 10, rng)
        present = np.ones((n, 12), dtype=bool)
        chosen = F.slots(present, list(STANDARD_LEADS))
        leads, values = F.window_sketches(x, 200.0, chosen[0])
        sets.append((leads, values))
    rows_a, rows_b, stats = O.candidates(sets[0], sets[1])
    corr, _ = O.verify(sets[0], sets[1], rows_a, rows_b)
    return {
        "ecg_records": n,
        "ecg_candidates": stats["candidates"],
        "ecg_candidates_per_pair": stats["candidates"] / n**2,
        "ecg_above_threshold": int((corr >= O.THRESHOLD).sum()),
        "ecg_max_corr": float(corr.max()) if len(corr) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=800_000)
    parser.add_argument("--copies", type=int, default=2000)
    parser.add_argument("--ecg", type=int, default=0, help="also measure the candidate rate on N generated ECGs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n = args.windows

    started = time.perf_counter()
    a = band_noise(rng, n)
    b = band_noise(rng, n)
    source = rng.choice(n, 2 * args.copies, replace=False)
    target = rng.choice(n, 2 * args.copies, replace=False)
    copies, alike = slice(0, args.copies), slice(args.copies, None)
    b[target[copies]] = with_noise(rng, a[source[copies]], 0.99)
    b[target[alike]] = with_noise(rng, a[source[alike]], 0.85)
    fa, fb = fingerprints("a", quantised(a)), fingerprints("b", quantised(b))
    del a, b
    made = time.perf_counter() - started
    print(f"made 2 × {n:,} fingerprints in {made:.1f} s", flush=True)

    t0 = time.perf_counter()
    keys_a = F.band_keys(fa.leads, fa.values)
    t1 = time.perf_counter()
    print(f"LSH keys of one store: {t1 - t0:.1f} s", flush=True)
    rows_a, rows_b, stats = O.candidates((fa.leads, fa.values), (fb.leads, fb.values))
    t2 = time.perf_counter()
    corr, _ = O.verify((fa.leads, fa.values), (fb.leads, fb.values), rows_a, rows_b)
    t3 = time.perf_counter()
    del keys_a
    print(
        f"keys of both + candidate join: {t2 - t1:.1f} s; verification of {len(rows_a):,}: {t3 - t2:.1f} s", flush=True
    )

    t4, c4 = time.perf_counter(), time.process_time()
    report = O.compare(fa, fb)
    whole, cpu = time.perf_counter() - t4, time.process_time() - c4
    found = {
        (int(r[1:]), int(s[1:]))
        for r, s in zip(report.pairs["a_record_id"].to_list(), report.pairs["b_record_id"].to_list())
    }
    planted = set(zip(source[copies].tolist(), target[copies].tolist()))
    weak = set(zip(source[alike].tolist(), target[alike].tolist()))
    result = {
        "windows_per_store": n,
        "compare_seconds": round(whole, 1),
        "compare_cpu_seconds": round(cpu, 1),  # all threads: the figure a loaded machine inflates least
        "candidates": report.summary["index_candidates"],
        "all_pairs": n * n,
        "planted_copies": len(planted),
        "recall": len(found & planted) / len(planted),
        "weak_reported": len(found & weak),
        "false_pairs": len(found - planted - weak),
        "skipped_keys": report.summary["index_skipped_keys"],
    }
    if args.ecg:
        result.update(ecg_rate(args.ecg, args.seed + 1))
    print(result)


if __name__ == "__main__":
    main()
