"""The ``execution`` section: where and how participant-level work runs."""

from __future__ import annotations

from pydantic import StrictInt, StrictStr

from fmri_pain.config.fields import MEMORY, WALLTIME, bounded, formed, spec_dataclass


@spec_dataclass
class ExecutionSpec:
    """Where and how participant-level tasks run."""

    scheduler: StrictStr = "local"
    """``local`` (dask LocalCluster), ``none`` (serial), ``slurm``/``pbs``/``sge`` or ``tcp://HOST:PORT``."""
    n_workers: StrictInt | None = bounded(None, 1, 1024)
    """Local workers (null: one per core)."""
    threads_per_worker: StrictInt = bounded(1, 1, 256)
    """Threads per worker; BLAS threads are pinned to it."""
    memory_per_worker: StrictStr = formed("4GiB", MEMORY)
    """Memory limit of a local worker."""
    retries: StrictInt = bounded(1, 0, 10)
    """Retries for infrastructure failures (killed workers); input errors are never retried."""
    queue: StrictStr | None = None
    """Batch queue / partition (SLURM, PBS, SGE)."""
    account: StrictStr | None = None
    """Batch account / project to charge."""
    walltime: StrictStr = formed("02:00:00", WALLTIME)
    """Wall-time limit of each batch job."""
    job_cores: StrictInt = bounded(1, 1, 1024)
    """Cores requested per batch job (one worker per job)."""
    job_memory: StrictStr = formed("8GiB", MEMORY)
    """Memory requested per batch job."""
    job_extra_directives: tuple[StrictStr, ...] = ()
    """Extra scheduler directives, e.g. ``--constraint=avx2``."""
    worker_python: StrictStr | None = None
    """Python used by batch-job workers, e.g. ``apptainer exec fmri-pain.sif python``."""
    max_jobs: StrictInt = bounded(8, 1, 10_000)
    """Most batch jobs submitted at once."""
