"""The ``execution`` section: where and how participant-level work runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from fmri_pain.config.fields import MEMORY, WALLTIME, bounded

@dataclass(frozen=True)
class ExecutionSpec:
    """Where and how participant-level tasks run."""

    scheduler: str = "local"
    """``local`` (dask LocalCluster), ``none`` (serial), ``slurm``/``pbs``/``sge`` or ``tcp://HOST:PORT``."""
    n_workers: int | None = bounded(None, 1, 1024)
    """Local workers (null: one per core)."""
    threads_per_worker: int = bounded(1, 1, 256)
    """Threads per worker; BLAS threads are pinned to it."""
    memory_per_worker: str = field(default="4GiB", metadata={"pattern": MEMORY})
    """Memory limit of a local worker."""
    retries: int = bounded(1, 0, 10)
    """Retries for infrastructure failures (killed workers); input errors are never retried."""
    queue: str | None = None
    """Batch queue / partition (SLURM, PBS, SGE)."""
    account: str | None = None
    """Batch account / project to charge."""
    walltime: str = field(default="02:00:00", metadata={"pattern": WALLTIME})
    """Wall-time limit of each batch job."""
    job_cores: int = bounded(1, 1, 1024)
    """Cores requested per batch job (one worker per job)."""
    job_memory: str = field(default="8GiB", metadata={"pattern": MEMORY})
    """Memory requested per batch job."""
    job_extra_directives: tuple[str, ...] = ()
    """Extra scheduler directives, e.g. ``--constraint=avx2``."""
    worker_python: str | None = None
    """Python used by batch-job workers, e.g. ``apptainer exec fmri-pain.sif python``."""
    max_jobs: int = bounded(8, 1, 10_000)
    """Most batch jobs submitted at once."""
