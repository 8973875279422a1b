"""Where participant tasks run: one :class:`Backend` interface and a table of schedulers.

``--scheduler`` / ``execution.scheduler`` names a backend in :data:`BACKENDS`:

* ``local`` -- a :class:`distributed.LocalCluster` sized to the machine (default),
* ``none`` -- serially in this process (debugging), with the same bookkeeping,
* ``slurm`` / ``pbs`` / ``sge`` -- batch jobs through dask-jobqueue;

any other value with ``://`` is the address of a running dask scheduler
(:class:`AddressBackend`). A backend gives the runner a dask client (``None``:
run in this process), the threads a task may use, and sizes its cluster to the
work before tasks are submitted.

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
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from fmri_pain.config.execution import ExecutionSpec
from fmri_pain.config.fields import SpecError
from fmri_pain.execution.progress import emit

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


@contextlib.contextmanager
def _shutdown_logs(verbosity: int) -> Iterator[None]:
    # Closing a cluster whose work is done logs warnings such as "Worker process still
    # alive after 4.0 seconds, killing" (a busy machine): not news for the user below -vv.
    log = logging.getLogger("distributed")
    previous = log.level
    if verbosity < 3:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(previous)


def _memory_bytes(memory: str) -> int:
    from dask.utils import parse_bytes

    return int(parse_bytes(memory))


def local_cluster(execution: ExecutionSpec, *, malloc_trim: bool = False,
                  dashboard_address: str | None = ":0", local_directory: str | None = None,
                  verbosity: int = 1):
    """A :class:`distributed.LocalCluster` sized to the machine and the spec.

    ``n_workers`` defaults to ``cores // threads_per_worker`` (at least 1), further
    capped by available memory / ``memory_per_worker``. Below ``verbosity`` 3
    (``-vv``) the scheduler's, nannies' and workers' ``distributed`` loggers are
    set to WARNING (``silence_logs``); from 3 on they keep dask's levels.
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
            silence_logs=logging.WARNING if verbosity < 3 else False,
        )
    return cluster


def jobqueue_cluster(execution: ExecutionSpec, *, log_directory: str | Path | None = None,
                     local_directory: str | None = None, scale: bool = True):
    """A dask-jobqueue cluster (SLURM, PBS or SGE) built from the spec.

    One dask worker process per batch job (``processes=1``) with
    ``execution.job_cores`` threads and ``execution.job_memory``; BLAS threads
    pinned to ``job_cores``. ``worker_python`` (e.g. ``apptainer exec IMG python``)
    is the command that starts the worker inside the job. The cluster class is
    that of the :class:`JobqueueBackend` registered for ``execution.scheduler``.
    """
    import dask
    import dask_jobqueue

    backend = backend_for(execution)
    if not isinstance(backend, JobqueueBackend):
        raise SpecError(f"execution.scheduler = {execution.scheduler!r} is not a batch-job scheduler")
    cls = getattr(dask_jobqueue, backend.cluster_class)
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
    kwargs[backend.account_keyword] = execution.account
    with dask.config.set(dask_settings(execution)):
        cluster = cls(**kwargs)
    if scale:
        cluster.scale(jobs=max_batch_jobs(execution))
    return cluster


def max_batch_jobs(execution: ExecutionSpec) -> int:
    """Number of batch jobs (one worker each) to request."""
    max_jobs = max(1, execution.max_jobs)
    return min(execution.n_workers or max_jobs, max_jobs)


# --------------------------------------------------------------------------- backends

class Backend(ABC):
    """Where participant tasks run: the runner asks it for a client and the threads per task.

    Parameters
    ----------
    execution : ExecutionSpec
    scheduler : str
        ``execution.scheduler`` as validated by :func:`validate_scheduler`.
    """

    name: ClassVar[str]
    """The ``--scheduler`` value (the key in :data:`BACKENDS`)."""
    description: ClassVar[str]
    """What it does, for ``--scheduler``'s help."""

    def __init__(self, execution: ExecutionSpec, scheduler: str) -> None:
        self.execution = execution
        self.scheduler = scheduler

    @property
    def task_threads(self) -> int:
        """Threads (and BLAS threads) one participant task may use."""
        return self.execution.threads_per_worker

    @abstractmethod
    def client(self, *, log_dir: Path | str | None = None, verbosity: int = 1,
               malloc_trim: bool = False) -> contextlib.AbstractContextManager[Any]:
        """A dask client for the run, closed on exit; ``None``: run in this process."""

    def fit(self, client: Any, n_tasks: int) -> None:
        """Size the cluster behind ``client`` to ``n_tasks`` tasks before they are submitted."""


class SerialBackend(Backend):
    """Every task in this process, one after the other (debugging), with the same bookkeeping."""

    name = "none"
    description = "serial in-process"

    @contextlib.contextmanager
    def client(self, *, log_dir: Path | str | None = None, verbosity: int = 1,
               malloc_trim: bool = False) -> Iterator[None]:
        yield None


class DaskBackend(Backend):
    """Tasks on a dask cluster: the one :meth:`make_cluster` starts, else the scheduler address."""

    def make_cluster(self, *, log_dir: Path | str | None, malloc_trim: bool,
                     verbosity: int = 1) -> Any:
        """The cluster to start for the run, or None to connect to ``self.scheduler``."""
        return None

    def announce(self, client: Any, cluster: Any, verbosity: int) -> None:
        """Print where the run's scheduler and dashboard are."""
        what = self.scheduler if cluster is None else type(cluster).__name__
        emit(f"dask {what}: scheduler {client.scheduler.address}, "
             f"dashboard {client.dashboard_link}")

    @contextlib.contextmanager
    def client(self, *, log_dir: Path | str | None = None, verbosity: int = 1,
               malloc_trim: bool = False) -> Iterator[Any]:
        from distributed import Client

        cluster = self.make_cluster(log_dir=log_dir, malloc_trim=malloc_trim, verbosity=verbosity)
        try:
            client = Client(cluster) if cluster is not None else Client(self.scheduler)
        except BaseException:
            if cluster is not None:
                cluster.close()
            raise
        try:
            if verbosity >= 2:
                self.announce(client, cluster, verbosity)
            yield client
        finally:
            with _shutdown_logs(verbosity), contextlib.suppress(Exception):
                client.close()
                if cluster is not None:
                    cluster.close()


class LocalBackend(DaskBackend):
    """A :class:`distributed.LocalCluster` on this machine (see :func:`local_cluster`)."""

    name = "local"
    description = "LocalCluster on this machine (default)"

    def make_cluster(self, *, log_dir: Path | str | None, malloc_trim: bool,
                     verbosity: int = 1) -> Any:
        return local_cluster(self.execution, malloc_trim=malloc_trim, verbosity=verbosity)


class JobqueueBackend(DaskBackend):
    """Batch jobs through dask-jobqueue, one worker per job (see :func:`jobqueue_cluster`)."""

    description = "batch jobs via dask-jobqueue"
    cluster_class: ClassVar[str]
    """The dask_jobqueue cluster class."""
    account_keyword: ClassVar[str] = "account"
    """The keyword of that class that takes ``execution.account``."""

    @property
    def task_threads(self) -> int:
        return self.execution.job_cores

    def make_cluster(self, *, log_dir: Path | str | None, malloc_trim: bool,
                     verbosity: int = 1) -> Any:
        # Batch-job scripts and logs go under log_dir/jobs.
        jobs_dir = Path(log_dir) / "jobs" if log_dir else None
        if jobs_dir is not None:
            jobs_dir.mkdir(parents=True, exist_ok=True)
        return jobqueue_cluster(self.execution, log_directory=jobs_dir)

    def announce(self, client: Any, cluster: Any, verbosity: int) -> None:
        super().announce(client, cluster, verbosity)
        if verbosity >= 2:
            emit("batch job script:\n" + cluster.job_script())

    def fit(self, client: Any, n_tasks: int) -> None:
        # Never hold more jobs than there are subjects to run.
        cluster = getattr(client, "cluster", None)
        if cluster is not None and hasattr(cluster, "job_cls"):
            cluster.scale(jobs=min(max_batch_jobs(self.execution), n_tasks))


class SlurmBackend(JobqueueBackend):
    """SLURM batch jobs."""

    name = "slurm"
    cluster_class = "SLURMCluster"


class PBSBackend(JobqueueBackend):
    """PBS/Torque batch jobs."""

    name = "pbs"
    cluster_class = "PBSCluster"


class SGEBackend(JobqueueBackend):
    """SGE batch jobs."""

    name = "sge"
    cluster_class = "SGECluster"
    account_keyword = "project"


class AddressBackend(DaskBackend):
    """A dask scheduler that is already running, by address (``tcp://HOST:PORT``)."""

    name = "tcp://HOST:PORT"
    description = "a running scheduler's address"


BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (LocalBackend, SerialBackend, SlurmBackend, PBSBackend, SGEBackend)}
"""The named schedulers; any value with ``://`` is an :class:`AddressBackend`."""


def validate_scheduler(value: str) -> str:
    """Check a ``--scheduler`` value: local, none, slurm, pbs, sge or an address like tcp://HOST:PORT."""
    text = str(value).strip()
    if text.lower() in BACKENDS:
        return text.lower()
    if "://" in text:
        return text
    raise SpecError(f"execution.scheduler = {value!r} is not one of "
                    f"{list(BACKENDS)} or a scheduler address (tcp://HOST:PORT)")


def backend_for(execution: ExecutionSpec) -> Backend:
    """The backend of ``execution.scheduler``.

    Raises
    ------
    SpecError
        If the scheduler is neither a name in :data:`BACKENDS` nor an address.
    """
    scheduler = validate_scheduler(execution.scheduler)
    return BACKENDS.get(scheduler, AddressBackend)(execution, scheduler)


def describe_schedulers() -> str:
    """The ``--scheduler`` values and what each does, for the command line's help."""
    groups: dict[str, list[str]] = {}
    for name, backend in BACKENDS.items():
        groups.setdefault(backend.description, []).append(name)
    parts = [f"{'/'.join(names)}: {text}" for text, names in groups.items()]
    return "; ".join(parts) + f"; or {AddressBackend.description}"


@contextlib.contextmanager
def open_client(execution: ExecutionSpec, *, log_dir: Path | str | None = None,
                verbosity: int = 1, malloc_trim: bool = False) -> Iterator[Any]:
    """A dask client for ``execution.scheduler`` (None for ``none``), closed on exit.

    ``local`` starts a LocalCluster (dashboard link printed), ``slurm``/``pbs``/``sge``
    a dask-jobqueue cluster (batch-job scripts and logs under ``log_dir/jobs``),
    an address connects to a running scheduler. ``malloc_trim=True`` keeps dask's
    default worker ``MALLOC_TRIM_THRESHOLD_`` (only for benchmarking; see this
    module's docstring).
    """
    with backend_for(execution).client(log_dir=log_dir, verbosity=verbosity,
                                       malloc_trim=malloc_trim) as client:
        yield client
