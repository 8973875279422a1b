"""Where a first level's time goes: seconds per step, accumulated over a process.

Each step of the participant first level (``decompress``, ``smooth`` (the
masking included), ``design``, ``fit``, ``contrasts``, ``write``) adds its wall time and the CPU
time of its thread here; the benchmark (``benchmarks/bench_first_level.py``)
prints the breakdown. The cost is one clock pair per block or step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STEPS = ("decompress", "smooth", "design", "fit", "contrasts", "write")

_lock = threading.Lock()
_totals: dict[str, float] = {}
_cpu: dict[str, float] = {}


def clocks() -> tuple[float, float]:
    """(wall, this thread's CPU) seconds now: the start of a step for :func:`add`."""
    return time.perf_counter(), time.thread_time()


def add(name: str, start: tuple[float, float]) -> None:
    """Add the time since ``start`` (:func:`clocks`) to step ``name``.

    Thread-safe: decompression runs in a reader thread (its CPU is that thread's).
    """
    wall, cpu = time.perf_counter() - start[0], time.thread_time() - start[1]
    with _lock:
        _totals[name] = _totals.get(name, 0.0) + wall
        _cpu[name] = _cpu.get(name, 0.0) + cpu


@contextmanager
def step(name: str, process_cpu: bool = False) -> Iterator[None]:
    """Time the block under ``name``.

    ``process_cpu``: count the whole process's CPU time meanwhile, not this
    thread's (for a step that runs its work in threads of its own).
    """
    if not process_cpu:
        start = clocks()
        try:
            yield
        finally:
            add(name, start)
        return
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        with _lock:
            _totals[name] = _totals.get(name, 0.0) + time.perf_counter() - wall
            _cpu[name] = _cpu.get(name, 0.0) + time.process_time() - cpu


def totals() -> dict[str, float]:
    """Wall seconds per step so far (a copy)."""
    with _lock:
        return dict(_totals)


def cpu_totals() -> dict[str, float]:
    """CPU seconds per step so far (of the threads that ran it; a copy)."""
    with _lock:
        return dict(_cpu)


def reset() -> None:
    """Forget the totals."""
    with _lock:
        _totals.clear()
        _cpu.clear()
