"""The first level's thread budget: results in order, never more threads than the budget."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from fmri_pain.glm.first_level import bold
from fmri_pain.glm.first_level.bold import load_masked_bold
from fmri_pain.glm.first_level.model import ar1_glm
from fmri_pain.glm.first_level.threads import budget, one_blas_thread, thread_drain, thread_map

from .test_bold_reader import _write_bold


def test_budget_is_at_least_one():
    assert [budget(None), budget(0), budget(-2), budget(1), budget(3)] == [1, 1, 1, 1, 3]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_map_keeps_order_and_the_budget(threads):
    lock = threading.Lock()
    active, peak, names = [0], [0], set()
    produced, consumed = [0], [0]

    def items():
        for i in range(12):
            produced[0] += 1
            # items are drawn lazily: never more than the budget ahead of the finished ones
            assert produced[0] - consumed[0] <= threads + 1
            yield i

    def work(i: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            names.add(threading.current_thread().name)
        time.sleep(0.005 * (12 - i) / 12)  # later items finish sooner: order must still hold
        with lock:
            active[0] -= 1
            consumed[0] += 1
        return i * i

    assert thread_map(work, items(), threads) == [i * i for i in range(12)]
    assert peak[0] <= threads
    if threads == 1:
        assert names == {threading.current_thread().name}
    else:
        assert threading.current_thread().name not in names and len(names) <= threads


def test_thread_map_raises_the_workers_error():
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("bad item 3")
        return i

    with pytest.raises(ValueError, match="bad item 3"):
        thread_map(work, range(8), 2)


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_drain_draws_in_its_threads_and_keeps_the_budget(threads):
    lock = threading.Lock()
    active, peak, seen, drawn_by = [0], [0], [], set()

    def items():
        for i in range(10):
            drawn_by.add(threading.current_thread().name)
            yield i

    def work(i: int) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.003)
        with lock:
            active[0] -= 1
            seen.append(i)

    thread_drain(work, items(), threads)
    assert sorted(seen) == list(range(10)) and peak[0] <= threads
    assert (threading.current_thread().name in drawn_by) == (threads == 1)
    if threads == 1:
        assert seen == list(range(10))


@pytest.mark.parametrize("where", ["fn", "iterator"])
def test_thread_drain_raises_the_first_error(where):
    def items():
        for i in range(20):
            if where == "iterator" and i == 5:
                raise OSError("truncated at 5")
            yield i

    def work(i: int) -> None:
        if where == "fn" and i == 5:
            raise ValueError("bad item 5")

    with pytest.raises(ValueError if where == "fn" else OSError, match="5"):
        thread_drain(work, items(), 2)


def test_one_blas_thread_only_when_threads_share_blas():
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not blas:
        pytest.skip("no BLAS library loaded")
    before = [lib["num_threads"] for lib in blas]
    with one_blas_thread(2):
        assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib["user_api"] == "blas")
    with one_blas_thread(1):
        assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before


def test_ar1_glm_in_threads_equals_one_thread():
    rng = np.random.default_rng(5)
    X = np.c_[rng.standard_normal((60, 4)), np.ones(60)]
    Y = (100 + rng.standard_normal((60, 700)) + np.linspace(0, 3, 60)[:, None]).astype(np.float32)
    one = ar1_glm(Y, X, signal_scaling=True, chunk_size=128)
    two = ar1_glm(Y, X, signal_scaling=True, chunk_size=128, threads=2)
    for a, b in [(one.beta, two.beta), (one.dispersion, two.dispersion), (one.labels, two.labels),
                 (one.rho, two.rho), (one.normalized_cov, two.normalized_cov)]:
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(one.labels)) > 3  # several AR bins, shared by the threads


def test_smoothing_in_threads_equals_one_thread(tmp_path, monkeypatch):
    path, mask, _ = _write_bold(tmp_path)
    monkeypatch.setattr(bold, "_BLOCK_VOLUMES", 4)  # 37 volumes: 10 blocks over the threads
    Y1, m1, _ = load_masked_bold(path, mask, 6.0)
    Y2, m2, _ = load_masked_bold(path, mask, 6.0, threads=2)
    np.testing.assert_array_equal(Y1, Y2)
    np.testing.assert_array_equal(m1, m2)


def test_checksums_computed_meanwhile_equal_hashlib(tmp_path):
    import hashlib

    from fmri_pain.bids import derivatives as drv
    from fmri_pain.bids.runs import Run
    from fmri_pain.glm.first_level.fit import checksum_inputs_meanwhile

    path, mask, _ = _write_bold(tmp_path)
    run = Run(subject="01", session=None, condition="stim", period=None, task="stim", run=None,
              bold=path, events=tmp_path / "missing_events.tsv", mask=mask, confounds=None,
              metadata={})
    checksum_inputs_meanwhile(run).join()  # a missing file is left to the provenance
    cached = {k[0] for k in drv._HASH_CACHE}
    assert {str(path.resolve()), str(mask.resolve())} <= cached  # warmed by the thread
    for p in (path, mask):
        assert drv.sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_step_with_process_cpu_counts_the_pool_threads():
    from fmri_pain.glm.first_level import timing

    def spin(_: int) -> None:
        end = time.thread_time() + 0.03
        while time.thread_time() < end:
            pass

    timing.reset()
    with timing.step("own"):
        thread_map(spin, range(4), 2)
    with timing.step("process", process_cpu=True):
        thread_map(spin, range(4), 2)
    cpu = timing.cpu_totals()
    assert cpu["process"] >= 0.11 > 0.05 > cpu["own"]  # 4 x 30 ms in the pool, ~0 in this thread
