"""Machine probe: do two threads run as fast as one each (two cores), or share one core?

Run from the project root::

    .venv/bin/python benchmarks/probe_cores.py

Three compiled loops, each timed alone and then as two copies at once in two
threads: arithmetic only (a dependent chain of multiply-adds), a pointer chase
through 256 KB (in a core's L2 cache) and one through 64 MB (main memory, one
miss at a time). Two hyperthreads of one core slow the arithmetic loop down
when both run (x1.3-2); two cores do not (x1.0). The memory loops tell whether
the two threads' caches or memory path get in each other's way. A kernel whose
CPU time per item rises when run in two threads while these ratios stay near 1
is limited by what it shares that these loops do not use, e.g. the L3 cache
(the TFCE kernel's work arrays, ~16 MB a thread on pain21).
"""
from __future__ import annotations

import os
import threading
import time

import numba
import numpy as np


@numba.njit(nogil=True)
def _arithmetic(n: int) -> float:
    x, y = 1.0, 0.5
    for _ in range(n):
        x = x * 1.0000001 + 1e-9
        y = y * 0.9999999 + x * 1e-12
    return x + y


@numba.njit(nogil=True)
def _chase(following: np.ndarray, n: int) -> int:
    p = 0
    for _ in range(n):
        p = following[p]
    return p


def _cycle(n: int, rng: np.random.Generator) -> np.ndarray:
    """A single random cycle through ``n`` slots: each read depends on the one before."""
    order = rng.permutation(n)
    following = np.empty(n, dtype=np.int64)
    following[order[:-1]] = order[1:]
    following[order[-1]] = order[0]
    return following


def _alone_and_paired(work) -> tuple[float, float]:
    t0 = time.perf_counter()
    work()
    alone = time.perf_counter() - t0
    times: list[float] = []

    def run() -> None:
        t = time.perf_counter()
        work()
        times.append(time.perf_counter() - t)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return alone, max(times)


def main() -> None:
    rng = np.random.default_rng(0)
    in_l2, in_memory = _cycle(1 << 15, rng), _cycle(1 << 23, rng)
    _arithmetic(10), _chase(in_l2, 10), _chase(in_memory, 10)  # compile
    loops = {"arithmetic": lambda: _arithmetic(200_000_000),
             "chase 256 KB": lambda: _chase(in_l2, 100_000_000),
             "chase 64 MB": lambda: _chase(in_memory, 10_000_000)}
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for name, work in loops.items():
        alone, paired = _alone_and_paired(work)
        print(f"  {name:13s} alone {alone:5.2f} s, two at once {paired:5.2f} s each: "
              f"x{paired / alone:.2f}")


if __name__ == "__main__":
    main()
