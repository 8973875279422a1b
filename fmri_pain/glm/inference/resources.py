"""What a permutation test will cost (memory, time) before it starts, and the guard."""
from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ResourceError", "ResourceEstimate", "estimate_resources", "check_resources"]


class ResourceError(ValueError):
    """The permutation stage would need more memory than the machine has."""


@dataclass(frozen=True)
class ResourceEstimate:
    """Memory (bytes) and time (seconds, on one core of a current CPU) of a permutation test."""

    n_perm: int
    memory_bytes: float
    seconds: float

    def describe(self) -> str:
        return (f"{self.n_perm} rearrangements to evaluate need about {self.memory_bytes / 2**30:.2f} GiB "
                f"of memory and {_duration(self.seconds)}")


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} seconds"


# rough costs (within a factor of a few) measured on this project's 2-core machine,
# numba kernels on one thread: 18000 voxels, 1000 sign flips of 20 maps in 0.13 s,
# 1000 within-subject shuffles of 24 maps in 0.66 s, 200 TFCE + cluster maps in 2.7 s
_SECONDS_PER_LOOKUP = 2.5e-9     # one table-row addition per voxel, group and basis row
# TFCE: the bucket kernel, 192,885 voxels at 26-connectivity in 23 ms of CPU per map
# (one-sided, on a loaded machine; both signs cost about twice as much)
_SECONDS_PER_TFCE_VOXEL = 2e-7   # bucket-kernel TFCE, per voxel and map (both signs)
_SECONDS_PER_CLUSTER_VOXEL = 2.5e-7


def estimate_resources(n_samples: int, n_voxels: int, n_perm: int, *, n_basis: int = 1,
                       tfce: bool = False, clusters: bool = False, n_jobs: int = 1,
                       memory_limit_mb: float = 512.0) -> ResourceEstimate:
    """Memory and time of :func:`~fmri_pain.glm.inference.permutation.permutation_test` before it starts.

    Parameters
    ----------
    n_samples, n_voxels : int
        Maps and voxels tested.
    n_perm : int
        Rearrangements evaluated (after exhaustive enumeration, if any).
    n_basis : int
        Columns of the tested effect plus the nuisance refit.
    tfce, clusters : bool
        Whole rearranged maps are kept per chunk and enhanced.
    n_jobs : int
        Parallel workers (each holds a chunk of maps).
    memory_limit_mb : float
        The engine's per-chunk budget.

    Returns
    -------
    ResourceEstimate
        ``memory_bytes``: the rearrangements (index, signs and drawing
        temporaries), their table ids, the null arrays, the data copies and
        the chunk buffers; ``seconds``: table lookups plus TFCE/cluster
        passes, divided over ``n_jobs``.
    """
    n_perm, n, v = int(n_perm), int(n_samples), int(n_voxels)
    workers = max(1, n_jobs if n_jobs > 0 else (os.cpu_count() or 1))
    per_perm = 8.0 * (4 * n + n + 9)  # index, signs, draw temporaries, table ids, null arrays
    data = 8.0 * 3 * n * v + 8.0 * 24 * v
    chunks = min(memory_limit_mb * 2**20, (16.0 * v if tfce or clusters else 32.0 * n_basis * n)
                 * n_perm) * (workers if tfce or clusters else 1)
    memory = per_perm * n_perm + data + chunks + 64 * 2**20
    n_groups = max(1.0, n / 4.0)  # the planner's groups: about 6 rows (sign flips), 3 (shuffles)
    seconds = _SECONDS_PER_LOOKUP * n_perm * v * n_basis * n_groups
    if tfce:
        seconds += _SECONDS_PER_TFCE_VOXEL * n_perm * v
    if clusters:
        seconds += _SECONDS_PER_CLUSTER_VOXEL * n_perm * v
    return ResourceEstimate(n_perm, float(memory), float(seconds / workers))


def check_resources(estimate: ResourceEstimate, available_bytes: float | None = None) -> None:
    """Raise :class:`ResourceError` when the estimate does not fit the available memory.

    ``available_bytes`` defaults to psutil's available memory of the machine.
    """
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    if estimate.memory_bytes > available_bytes:
        raise ResourceError(f"{estimate.describe()}; only {available_bytes / 2**30:.2f} GiB of "
                            "memory are available: lower the number of permutations")

