"""The first level's own threads, within the worker's thread budget.

A participant-level worker has ``execution.threads_per_worker`` threads
(``blas_threads`` of :func:`~fmri_pain.glm.first_level.subject.first_level_subject`).
With a budget of ``n > 1`` the stage's independent pieces (blocks of volumes
to smooth, voxel chunks to fit, maps to compress) run in ``n`` Python threads,
BLAS limited to one thread meanwhile (BLAS, zlib and numpy's loops release
the GIL). Beside them, two short helper threads run while the design is built
and the BOLD read: the inputs' checksums (``fit.checksum_inputs_meanwhile``)
and the design plot (``design_plot.DesignPlot``). With a budget of 1
everything runs in the caller's thread (and the BOLD reader's), in order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from threadpoolctl import threadpool_limits

T = TypeVar("T")
R = TypeVar("R")


def budget(threads: int | None) -> int:
    """A thread budget as a count of at least 1 (``None`` or less than 1: 1)."""
    return max(1, int(threads or 1))


@contextmanager
def one_blas_thread(threads: int) -> Iterator[None]:
    """BLAS at one thread while ``threads > 1`` Python threads call it (no change otherwise)."""
    if budget(threads) > 1:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    else:
        yield


def thread_map(fn: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``[fn(x) for x in items]``, in ``threads`` threads at one BLAS thread each.

    Parameters
    ----------
    fn : callable
    items : iterable
        Consumed lazily: at most ``threads`` items are being processed or waiting,
        so a stream of large blocks holds at most that many in memory.
    threads : int
        The thread budget; 1 calls ``fn`` in the caller's thread, in order.

    Returns
    -------
    list
        The results in the order of ``items``. The first exception raised by
        ``fn`` is raised here (after the pieces already started have finished).
    """
    n = budget(threads)
    if n == 1:
        return [fn(x) for x in items]
    results: list[R] = []
    pending: deque[Future] = deque()
    with one_blas_thread(n), ThreadPoolExecutor(max_workers=n, thread_name_prefix="first-level") as pool:
        try:
            for x in items:
                if len(pending) >= n:
                    results.append(pending.popleft().result())
                pending.append(pool.submit(fn, x))
            while pending:
                results.append(pending.popleft().result())
        finally:
            for f in pending:
                f.cancel()
    return results


def thread_drain(fn: Callable[[T], None], items: Iterable[T], threads: int) -> None:
    """Call ``fn`` on every item in ``threads`` threads that each draw the next item themselves.

    Unlike :func:`thread_map` the iterator is advanced in the pool's threads
    (one at a time, under a lock), so producing an item (decompressing the next
    block of a file) is part of a thread's work: at most ``threads`` threads
    compute and at most ``threads`` items are held. Results are not kept
    (``fn`` stores them); the first exception, of ``fn`` or of the iterator, is
    raised here after the other threads stopped drawing.

    Parameters
    ----------
    fn : callable
    items : iterable
    threads : int
        The thread budget; 1 runs everything in the caller's thread, in order.
    """
    n = budget(threads)
    if n == 1:
        for x in items:
            fn(x)
        return
    iterator = iter(items)
    lock = threading.Lock()
    failed = threading.Event()
    done = object()

    def draw() -> object:
        with lock:
            if failed.is_set():
                return done
            return next(iterator, done)

    def work() -> None:
        try:
            while (x := draw()) is not done:
                fn(x)  # type: ignore[arg-type]
        except BaseException:
            failed.set()
            raise

    with one_blas_thread(n), ThreadPoolExecutor(max_workers=n, thread_name_prefix="first-level") as pool:
        futures = [pool.submit(work) for _ in range(n)]
    for f in futures:
        f.result()
