"""Start-up cost: ``import physiofm`` and ``physiofm --help`` against a bare interpreter, in fresh processes.

Each figure is the median wall time of ``--repeat`` runs of a fresh ``python``; the baseline
(``python -c pass``) is measured in the same loop, alternating, so machine load hits all alike.
Also prints what a heavy import would cost (``import physiofm.store.build``) for scale.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "import physiofm": [sys.executable, "-c", "import physiofm"],
    "physiofm --help": [sys.executable, "-m", "physiofm", "--help"],
    "import physiofm.store.build (for scale)": [sys.executable, "-c", "import physiofm.store.build"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeat):
        for name, command in CASES.items():
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"{'case':44s} {'median s':>9s} {'minus baseline':>15s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:44s} {median:9.3f} {median - base:15.3f}")


if __name__ == "__main__":
    main()
