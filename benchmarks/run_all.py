"""Run every benchmark in turn (``make benchmarks``); each prints its own ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = [
    ["bench_first_level.py"],
    ["bench_inference.py"],
    ["bench_tfce.py"],
    ["bench_tail.py"],
    ["bench_decoding.py"],
    ["bench_reml.py"],
    ["bench_preprocess.py"],
    ["bench_execution.py", "--workload", "pipeline"],
    ["bench_trial.py", "--subjects", "8", "16"],
]


def main() -> int:
    folder = Path(__file__).resolve().parent
    failed = []
    for args in BENCHMARKS:
        print(f"\n=== {' '.join(args)} ===", flush=True)
        if subprocess.call([sys.executable, str(folder / args[0]), *args[1:]]) != 0:
            failed.append(args[0])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
