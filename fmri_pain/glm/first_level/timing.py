"""Where a first level's time goes: seconds per step, accumulated over a process.

Each step of the participant first level (``decompress``, ``smooth``, ``mask``,
``design``, ``fit``, ``contrasts``, ``write``) adds its wall time here; the
benchmark (``benchmarks/bench_first_level.py``) prints the breakdown. The cost
is one ``perf_counter`` pair per block or step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STEPS = ("decompress", "smooth", "mask", "design", "fit", "contrasts", "write")

_lock = threading.Lock()
_totals: dict[str, float] = {}


def add(name: str, seconds: float) -> None:
    """Add ``seconds`` to step ``name`` (thread-safe: decompression runs in a reader thread)."""
    with _lock:
        _totals[name] = _totals.get(name, 0.0) + seconds


@contextmanager
def step(name: str) -> Iterator[None]:
    """Time the block under ``name``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - start)


def totals() -> dict[str, float]:
    """Seconds per step so far (a copy)."""
    with _lock:
        return dict(_totals)


def reset() -> None:
    """Forget the totals."""
    with _lock:
        _totals.clear()
