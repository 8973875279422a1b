"""Dask cluster construction for :mod:`fmri_pain.execution.runner` (private helpers).

Why the worker configuration differs from dask's defaults
---------------------------------------------------------
dask's nanny exports ``MALLOC_TRIM_THRESHOLD_=65536`` into every worker it
spawns (``distributed.nanny.pre-spawn-environ``). Setting *any* value of
``M_TRIM_THRESHOLD`` switches off glibc's dynamic mmap threshold, which then
stays at 128 KiB forever: every array above 128 KiB is a fresh ``mmap`` whose
pages are faulted in (and zeroed by the kernel) on first touch and returned on
``free``. A GLM on ~100 MB images allocates thousands of such temporaries, so a
dask worker took ~12x the minor page faults of the same code in a plain Python
process (measured: 106k vs 9k per subject-sized fit) and ran 30-40% slower with
two workers competing for the kernel's page zeroing and memory bandwidth.
With the variable unset, glibc raises the mmap threshold after the first frees
(up to 32 MiB) and reuses heap memory as a normal process does. Our tasks are
one subject per worker at a time, so the heap a worker keeps is reused by its
next subject; giving memory back to the OS buys nothing here.

BLAS/OpenMP threads are pinned to the worker's threads (``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``) through the same pre-spawn
environment, so two workers on two cores do not oversubscribe them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fmri_pain.config.execution import ExecutionSpec

logger = logging.getLogger("fmri_pain.execution.runner")

JOBQUEUE_SCHEDULERS = ("slurm", "pbs", "sge")
STAGE_TOPIC = "fmri-pain-stage"

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def worker_environ(threads: int, *, malloc_trim: bool = False) -> dict[str, str | None]:
    """Environment of a worker process: BLAS pinned to ``threads``.

    ``MALLOC_TRIM_THRESHOLD_: None`` removes dask's default (see module docstring);
    ``malloc_trim=True`` keeps dask's 65536 (for benchmarking the difference).
    """
    env: dict[str, str | None] = {var: str(threads) for var in _THREAD_VARS}
    env["MALLOC_TRIM_THRESHOLD_"] = "65536" if malloc_trim else None
    # nipype's SLURM plugin and some tools read LOGNAME; batch jobs may lack it.
    env["LOGNAME"] = os.environ.get("LOGNAME") or os.environ.get("USER") or "fmri-pain"
    return env


def dask_settings(execution: ExecutionSpec, *, malloc_trim: bool = False) -> dict[str, Any]:
    """dask config for clusters this package creates.

    * one task per worker thread at a time (``worker-saturation: 1.0``), so a
      worker's death only touches the subject it was running;
    * ``allowed-failures: 0``: a killed worker fails its task at once with
      ``KilledWorker``, and :func:`fmri_pain.execution.runner.run_participants` does the
      retrying itself (so it can count attempts and tell infrastructure failures
      from input errors);
    * the worker environment of :func:`worker_environ`.
    """
    env = worker_environ(execution.threads_per_worker, malloc_trim=malloc_trim)
    return {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.scheduler.worker-saturation": 1.0,
        "distributed.nanny.pre-spawn-environ": env,
        # Subjects take minutes; do not let work stealing move queued subjects around.
        "distributed.scheduler.work-stealing": False,
    }


@contextlib.contextmanager
def _preserve_environ() -> Iterator[None]:
    # The nanny writes its pre-spawn environment into *this* process's os.environ
    # before spawning; undo that so the client process (and later clusters) keep theirs.
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _memory_bytes(memory: str) -> int:
    from dask.utils import parse_bytes

    return int(parse_bytes(memory))


def local_cluster(execution: ExecutionSpec, *, malloc_trim: bool = False,
                  dashboard_address: str | None = ":0", local_directory: str | None = None):
    """A :class:`distributed.LocalCluster` sized to the machine and the spec.

    ``n_workers`` defaults to ``cores // threads_per_worker`` (at least 1), further
    capped by available memory / ``memory_per_worker``.
    """
    import dask
    import psutil
    from distributed import LocalCluster

    threads = max(1, execution.threads_per_worker)
    mem = _memory_bytes(execution.memory_per_worker)
    n_workers = execution.n_workers
    if n_workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        by_cpu = max(1, (cores or 1) // threads)
        by_mem = max(1, int(psutil.virtual_memory().total // max(mem, 1)))
        n_workers = max(1, min(by_cpu, by_mem))
    # The nanny reads `MALLOC_TRIM_THRESHOLD_` from os.environ before its config;
    # drop a value that an earlier default-configured cluster left in this process.
    remove = [] if malloc_trim else ["MALLOC_TRIM_THRESHOLD_"]
    with dask.config.set(dask_settings(execution, malloc_trim=malloc_trim)), _preserve_environ():
        for var in remove:
            os.environ.pop(var, None)
        for var in _THREAD_VARS:
            os.environ.pop(var, None)  # env would override the pre-spawn value
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            memory_limit=mem,
            processes=True,
            dashboard_address=dashboard_address,
            local_directory=local_directory,
        )
    return cluster


def jobqueue_cluster(execution: ExecutionSpec, *, log_directory: str | Path | None = None,
                     local_directory: str | None = None, scale: bool = True):
    """A dask-jobqueue cluster (SLURM, PBS or SGE) built from the spec.

    One dask worker process per batch job (``processes=1``) with
    ``execution.job_cores`` threads and ``execution.job_memory``; BLAS threads
    pinned to ``job_cores``. ``worker_python`` (e.g. ``apptainer exec IMG python``)
    is the command that starts the worker inside the job.
    """
    import dask
    import dask_jobqueue

    kind = execution.scheduler
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster,
           "sge": dask_jobqueue.SGECluster}[kind]
    threads = max(1, execution.job_cores)
    env = worker_environ(threads)
    pre_spawn = {k: v for k, v in env.items() if k != "LOGNAME"}
    exports = [f"export {k}={shlex.quote(v)}" for k, v in env.items() if v is not None]
    # The job's nanny reads its own dask config; pass ours through the environment
    # (a Python literal, so the upper-case keys keep their case).
    exports.append("export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="
                   + shlex.quote(repr(pre_spawn)))
    exports.append("unset MALLOC_TRIM_THRESHOLD_")
    kwargs: dict[str, Any] = dict(
        cores=threads,
        processes=1,
        memory=execution.job_memory,
        walltime=execution.walltime,
        queue=execution.queue,
        job_extra_directives=list(execution.job_extra_directives),
        job_script_prologue=exports,
        python=execution.worker_python or sys.executable,
        log_directory=str(log_directory) if log_directory else None,
    )
    if local_directory:
        kwargs["local_directory"] = local_directory
    if kind == "sge":
        kwargs["project"] = execution.account
    else:
        kwargs["account"] = execution.account
    with dask.config.set(dask_settings(execution)):
        cluster = cls(**kwargs)
    if scale:
        cluster.scale(jobs=max_batch_jobs(execution))
    return cluster


def max_batch_jobs(execution: ExecutionSpec) -> int:
    """Number of batch jobs (one worker each) to request."""
    max_jobs = max(1, execution.max_jobs)
    return min(execution.n_workers or max_jobs, max_jobs)


_STAGE_CALLBACK: Any = None


def set_stage_callback(callback: Any) -> None:
    """Route :func:`report_stage` calls made in this process (serial runs) to ``callback``."""
    global _STAGE_CALLBACK
    _STAGE_CALLBACK = callback


def report_stage(stage: str, subject: str | None = None) -> None:
    """Tell the client which stage a running participant task has reached.

    Cheap no-op outside a dask worker. Participant code may call it between
    stages (``report_stage("first level", "01")``) to drive the stage progress line.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        logger.debug("sub-%s: %s", subject, stage)
        if _STAGE_CALLBACK is not None:
            _STAGE_CALLBACK(subject, stage)
        return
    worker.log_event(STAGE_TOPIC, {"subject": subject, "stage": stage})
