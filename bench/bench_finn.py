"""Benchmark `make finn-check`: FINN v0.10.1's build steps up to its estimate reports on the
exported model, and its five executable graphs on the 1000 BIN files, with .venv and .venv-finn
already built (built first, untimed). Target: at most 60 s on 2 cores.

  python bench/bench_finn.py [--repeats 3]

Runs in this checkout, as the target does: it writes metrics/finn_check.json and reports/finn_check_layers.json.
Prints every run's wall time, the median, and the time the check itself reported."""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["make", "-s", "setup", "finn-venv"], cwd=REPO, check=True, capture_output=True)
    times = []
    for i in range(args.repeats):
        start = time.perf_counter()
        run = subprocess.run(["make", "-s", "finn-check"], cwd=REPO, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if run.returncode != 0:
            raise SystemExit(f"make finn-check failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        summary = next((ln for ln in run.stdout.splitlines() if ln.startswith("FINN (")), "")
        check_s = re.search(r"\((\d+) s\)$", summary)
        print(f"run {i + 1}: make finn-check {times[-1]:.1f} s (the check itself: {check_s.group(1) if check_s else '?'} s)")
    print(summary)
    print(f"median of {len(times)}: {statistics.median(times):.1f} s (target <= 60 s)")


if __name__ == "__main__":
    main()
