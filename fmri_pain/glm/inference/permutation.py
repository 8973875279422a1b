"""Permutation inference for the general linear model (Freedman-Lane).

With the nuisance-residualised data ``e = R_Z Y`` and a rearrangement ``P``
(signs and/or a row permutation), the Freedman-Lane statistic only needs
``Q_x' P e`` (effect of interest), ``Q_Z' P e`` (nuisance refit) and
``||P e||^2 = ||e||^2``, where ``Q_x`` and ``Q_Z`` are orthonormal bases of the
contrast space and of the reduced (nuisance) model. The rows ``q' P`` of all
rearrangements are evaluated against every voxel by
:mod:`fmri_pain.glm.inference.lookup_sums` (sums of small precomputed tables, tiled
over voxels so they stay in cache). Nuisance directions that every
rearrangement maps back into the nuisance space (e.g. subject indicators under
within-subject shuffles) add nothing and are dropped, which keeps the subject +
condition + period model as cheap as a one-sample test; with no nuisance left,
t (F) is a monotone function of the projection of unit-norm data, so the scan
compares projections and converts only the maxima.

The conventions follow Winkler et al. 2014 (NeuroImage 92:381) and PALM;
p-values are ``(1 + #{null >= observed}) / (1 + n_perm)`` as in nilearn's
``permuted_ols``. When the distinct rearrangements are no more than
``n_perm + 1`` they are all enumerated, each exactly once, the identity being
the observed statistic (an exact test, as PALM does); rows with identical
design values are tied, so shuffles that only swap them are not counted twice.
Observed and rearranged statistics are compared in one representation (the
scan's score), with the same threshold for the uncorrected and the FWE p, and
rearrangements that leave the data's statistic unchanged (the identity, the
global sign flip of a two-sided test, swaps of tied rows) are counted as ties
exactly, so FWE p >= uncorrected p and no p is below ``MinimumAttainableP``.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg, stats

from fmri_pain.glm.inference import lookup_sums as lookup
from fmri_pain.glm.inference import tfce as _tfce

__all__ = [
    "SCHEMES",
    "PermutationResult",
    "ResourceError",
    "ResourceEstimate",
    "ZeroVarianceError",
    "permutation_test",
    "draw_rearrangements",
    "auto_scheme",
    "count_rearrangements",
    "enumerate_rearrangements",
    "estimate_resources",
    "check_resources",
    "nilearn_rearrangements",
    "fwe_threshold",
    "partition_design",
]

LOGGER = logging.getLogger(__name__)

SCHEMES = ("signflip", "permute", "within", "block-signflip", "within+signflip", "auto")


# --------------------------------------------------------------------------- results
@dataclass
class PermutationResult:
    """Outcome of :func:`permutation_test` (all maps are 1-D over voxels).

    p-values are stored as p (not -log10 p); use :meth:`logp`.
    """

    stat: np.ndarray
    stat_type: str
    df: tuple[float, float]
    p_uncorrected: np.ndarray
    p_fwe: np.ndarray
    max_null: np.ndarray
    n_perm: int
    scheme: str
    two_sided: bool
    tfce: np.ndarray | None = None
    p_tfce_fwe: np.ndarray | None = None
    tfce_max_null: np.ndarray | None = None
    cluster_forming_threshold: float | None = None
    cluster_p_threshold: float | None = None
    cluster_size: np.ndarray | None = None
    cluster_mass: np.ndarray | None = None
    cluster_p_extent_fwe: np.ndarray | None = None
    cluster_p_mass_fwe: np.ndarray | None = None
    cluster_size_null: np.ndarray | None = None
    cluster_mass_null: np.ndarray | None = None
    p_tfce_uncorrected: np.ndarray | None = None
    cluster_p_mass_uncorrected: np.ndarray | None = None
    parameters: dict = field(default_factory=dict)
    n_distinct: int | None = None
    """Distinct rearrangements of the scheme (None for explicit rearrangements)."""
    exhaustive: bool = False
    """All distinct rearrangements were used, each once (the p-values are exact)."""
    n_identity: int = 0
    """Rearrangements in the null equivalent to the observed one (identity, global flip)."""
    n_excluded: int = 0
    """Voxels left out for zero residual variance (stat 0, p = 1 there)."""
    warnings: list[str] = field(default_factory=list)

    @property
    def n_rearrangements(self) -> int:
        """Rearrangements the p-values are computed over, the observed one included."""
        return self.n_perm + 1

    @property
    def min_p(self) -> float:
        """The smallest p-value these rearrangements can give."""
        return (1.0 + self.n_identity) / (1.0 + self.n_perm)

    def sidecar_fields(self) -> dict:
        """Strict-JSON sidecar keys describing the rearrangements used."""
        n_distinct = self.n_distinct
        if n_distinct is not None and n_distinct > 2**53:  # beyond exact JSON integers
            n_distinct = float(n_distinct) if n_distinct < 1e308 else None
        return {"NumberOfDistinctRearrangements": n_distinct,
                "NumberOfPermutations": self.n_rearrangements,
                "Exhaustive": bool(self.exhaustive),
                "MinimumAttainableP": self.min_p,
                "PermutationScheme": self.scheme,
                "VoxelsExcludedZeroVariance": int(self.n_excluded),
                "PermutationWarnings": list(self.warnings)}

    @property
    def t(self) -> np.ndarray:
        """The observed statistic (t, or F for a multi-row contrast)."""
        return self.stat

    def logp(self, name: str) -> np.ndarray:
        """``-log10`` of a p map: ``uncorrected``, ``fwe``, ``tfce_fwe``,
        ``cluster_extent_fwe`` or ``cluster_mass_fwe``."""
        attr = {"uncorrected": "p_uncorrected", "fwe": "p_fwe", "tfce_fwe": "p_tfce_fwe",
                "tfce_uncorrected": "p_tfce_uncorrected",
                "cluster_extent_fwe": "cluster_p_extent_fwe",
                "cluster_mass_fwe": "cluster_p_mass_fwe",
                "cluster_mass_uncorrected": "cluster_p_mass_uncorrected"}[name]
        p = getattr(self, attr)
        if p is None:
            raise ValueError(f"{name} p-values were not computed")
        return -np.log10(p)

    def threshold(self, alpha: float = 0.05, kind: str = "stat") -> float:
        """FWE critical value: a voxel/cluster is significant if its score
        (``|stat|`` when two-sided) exceeds it. ``kind``: stat, tfce, size, mass."""
        null = {"stat": self.max_null, "tfce": self.tfce_max_null,
                "size": self.cluster_size_null, "mass": self.cluster_mass_null}[kind]
        if null is None:
            raise ValueError(f"no {kind} null distribution was computed")
        return fwe_threshold(null, alpha)

    def summary(self, alpha: float = 0.05) -> dict:
        """Numbers for a report: thresholds and counts of significant voxels."""
        score = np.abs(self.stat) if self.two_sided else self.stat
        out = {"scheme": self.scheme, "n_perm": self.n_perm, "stat_type": self.stat_type,
               "n_rearrangements": self.n_rearrangements, "n_distinct": self.sidecar_fields()[
                   "NumberOfDistinctRearrangements"], "exhaustive": bool(self.exhaustive),
               "min_p": self.min_p, "n_voxels_excluded": int(self.n_excluded),
               "df": list(self.df), "two_sided": self.two_sided, "alpha": alpha,
               "max_stat": float(np.nanmax(score)),
               "fwe_threshold": self.threshold(alpha),
               "n_voxels_fwe": int(np.sum(self.p_fwe < alpha)),
               "n_voxels_uncorrected": int(np.sum(self.p_uncorrected < alpha))}
        if self.tfce is not None:
            out.update(tfce_fwe_threshold=self.threshold(alpha, "tfce"),
                       n_voxels_tfce_fwe=int(np.sum(self.p_tfce_fwe < alpha)))
        if self.cluster_size is not None:
            out.update(cluster_forming_threshold=self.cluster_forming_threshold,
                       cluster_p_threshold=self.cluster_p_threshold,
                       cluster_extent_threshold=self.threshold(alpha, "size"),
                       cluster_mass_threshold=self.threshold(alpha, "mass"),
                       n_voxels_cluster_extent_fwe=int(np.sum(self.cluster_p_extent_fwe < alpha)),
                       n_voxels_cluster_mass_fwe=int(np.sum(self.cluster_p_mass_fwe < alpha)))
        return out


def fwe_threshold(max_null: np.ndarray, alpha: float = 0.05) -> float:
    """Critical value of a max-statistic null distribution.

    Scores strictly above it have ``(1 + #{null >= score}) / (1 + n) <= alpha``.
    """
    null = np.sort(np.asarray(max_null, dtype=float))[::-1]
    j = int(math.floor(alpha * (null.size + 1) + 1e-9)) - 1  # nulls allowed at or above
    if j >= null.size:
        return -np.inf
    if j < 0:
        return np.inf
    return float(null[j])


def _tie_threshold(scores: np.ndarray) -> np.ndarray:
    """Scores less a relative tolerance of 1e-12: a rearranged score at or above
    it ties with or beats the observed one (they are computed along different
    paths, so exact ties differ by rounding)."""
    scores = np.asarray(scores, dtype=float)
    return scores - 1e-12 * np.abs(scores)


def _p_at_or_above(threshold: np.ndarray, null: np.ndarray) -> np.ndarray:
    """``(1 + #{null >= threshold}) / (1 + n)`` for every threshold."""
    null = np.sort(np.asarray(null, dtype=float))
    n_ge = null.size - np.searchsorted(null, np.asarray(threshold, dtype=float), side="left")
    return (1.0 + n_ge) / (1.0 + null.size)


def _p_from_null(scores: np.ndarray, null: np.ndarray) -> np.ndarray:
    """``(1 + #{null >= score}) / (1 + n)`` for every score, ties within 1e-12 relative."""
    return _p_at_or_above(_tie_threshold(scores), null)


# --------------------------------------------------------------------------- design
def _orth(m: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    if m.size == 0 or m.shape[1] == 0:
        return np.zeros((m.shape[0], 0))
    u, s, _ = linalg.svd(m, full_matrices=False)
    keep = s > tol * max(1.0, s[0]) if s.size else np.zeros(0, bool)
    return u[:, keep]


def partition_design(design: np.ndarray, contrast: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Split a design into the tested space and the nuisance space.

    Returns ``(q_x, q_z, w, rank)``: orthonormal bases of the effect of
    interest (n, k) and of the reduced model ``Z = X null(C)`` (n, r), the
    contrast weights on the data ``w = pinv(X)' c'`` (n, k; ``c' beta_hat =
    w' y``), and the rank of the full design.
    """
    x = np.asarray(design, dtype=np.float64)
    c = np.atleast_2d(np.asarray(contrast, dtype=np.float64))
    if x.ndim != 2:
        raise ValueError(f"design must be 2-D (n_samples, n_regressors), got shape {x.shape}")
    if c.shape[1] != x.shape[1]:
        raise ValueError(f"contrast has {c.shape[1]} weights but the design has {x.shape[1]} columns")
    pinv_x = linalg.pinv(x)
    if np.abs(c - c @ pinv_x @ x).max() > 1e-8 * max(1.0, np.abs(c).max()):
        raise ValueError("contrast is not estimable with this design (it is not in the row space)")
    rank = int(np.linalg.matrix_rank(x))
    w = pinv_x.T @ c.T
    q_x = _orth(w)
    if q_x.shape[1] == 0:
        raise ValueError("contrast is zero on this design")
    c_null = linalg.null_space(c)
    q_z = _orth(x @ c_null) if c_null.size else np.zeros((x.shape[0], 0))
    return q_x, q_z, w, rank


def _drop_invariant_nuisance(q_z: np.ndarray, blocks: np.ndarray | None, scheme: str) -> np.ndarray:
    """Nuisance directions that some rearrangement can move out of span(Z).

    Directions of span(Z) that are constant within blocks are left unchanged
    by within-block shuffles, so their refit term ``q' P e = q' e`` is zero
    (``e`` is orthogonal to Z). With whole-block sign flips this holds only
    when every block indicator lies in span(Z) (e.g. subject columns).
    """
    if q_z.shape[1] == 0 or blocks is None or scheme not in ("within", "block-signflip",
                                                           "within+signflip"):
        return q_z
    _, inv = np.unique(blocks, return_inverse=True)
    q_b = _orth(np.eye(inv.max() + 1)[inv])
    u, s, _ = linalg.svd(q_z.T @ q_b, full_matrices=True)
    n_common = int(np.sum(s > 1 - 1e-9))
    if scheme != "within" and n_common < q_b.shape[1]:
        return q_z
    return q_z @ u[:, n_common:]


# --------------------------------------------------------------------------- rearrangements
def draw_rearrangements(n_samples: int, n_perm: int, scheme: str, *, blocks: np.ndarray | None = None,
                        random_state: int | np.random.Generator | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Random rearrangements: ``(index, signs)`` of shape (n_perm, n_samples).

    The rearranged data are ``signs[p, i] * e[index[p, i]]``.
    ``signflip``: independent signs; ``permute``: free permutation;
    ``within``: permutation inside each block; ``block-signflip``: one sign
    per block; ``within+signflip``: both of the last two.
    """
    rng = np.random.default_rng(random_state)
    index = np.broadcast_to(np.arange(n_samples), (n_perm, n_samples)).copy()
    signs = np.ones((n_perm, n_samples))
    if scheme in ("within", "block-signflip", "within+signflip"):
        if blocks is None:
            raise ValueError(f"scheme {scheme!r} needs exchangeability blocks (blocks=)")
        _, inv = np.unique(blocks, return_inverse=True)
        members = [np.flatnonzero(inv == b) for b in range(inv.max() + 1)]
    if scheme == "signflip":
        signs = rng.choice([-1.0, 1.0], size=(n_perm, n_samples))
    elif scheme == "permute":
        index = rng.permuted(index, axis=1)
    if scheme in ("within", "within+signflip"):
        for rows in members:
            index[:, rows] = rng.permuted(np.broadcast_to(rows, (n_perm, rows.size)), axis=1)
    if scheme in ("block-signflip", "within+signflip"):
        flips = rng.choice([-1.0, 1.0], size=(n_perm, len(members)))
        signs = flips[:, inv]
    if scheme not in SCHEMES or scheme == "auto":
        raise ValueError(f"unknown permutation scheme {scheme!r}; choose from {SCHEMES[:-1]}")
    return index, signs


def _tie_labels(design: np.ndarray | None, n_samples: int) -> np.ndarray:
    """Label of each row's design values: rows with equal labels are tied."""
    if design is None:
        return np.arange(n_samples)
    _, inv = np.unique(np.asarray(design, dtype=np.float64), axis=0, return_inverse=True)
    return inv.ravel()


def _block_members(blocks: np.ndarray | None, n_samples: int) -> tuple[list[np.ndarray], np.ndarray]:
    if blocks is None:
        return [np.arange(n_samples)], np.zeros(n_samples, dtype=np.int64)
    _, inv = np.unique(blocks, return_inverse=True)
    inv = inv.ravel()
    return [np.flatnonzero(inv == b) for b in range(inv.max() + 1)], inv


def _multinomial(labels: np.ndarray) -> int:
    """Distinct orderings of a sequence with repeated values: m! / prod(count!)."""
    counts = np.unique(labels, return_counts=True)[1]
    out = math.factorial(int(labels.size))
    for c in counts:
        out //= math.factorial(int(c))
    return out


def count_rearrangements(n_samples: int, scheme: str, *, blocks: np.ndarray | None = None,
                         design: np.ndarray | None = None) -> int:
    """Number of distinct rearrangements of a scheme, the identity included.

    ``signflip``: ``2**n``; ``block-signflip``: ``2**n_blocks``; ``permute``
    and ``within``: the orderings of each block (the whole sample for
    ``permute``) that differ in the design rows they put at each position,
    ``m! / prod(t!)`` per block of ``m`` rows with tie groups of ``t``
    identical design rows; ``within+signflip``: the product of both.
    """
    if scheme not in SCHEMES or scheme == "auto":
        raise ValueError(f"unknown permutation scheme {scheme!r}; choose from {SCHEMES[:-1]}")
    if scheme in ("within", "block-signflip", "within+signflip") and blocks is None:
        raise ValueError(f"scheme {scheme!r} needs exchangeability blocks (blocks=)")
    if scheme == "signflip":
        return 2 ** n_samples
    members, _ = _block_members(None if scheme == "permute" else blocks, n_samples)
    ties = _tie_labels(design, n_samples)
    n_shuffles = math.prod(_multinomial(ties[rows]) for rows in members)
    if scheme == "block-signflip":
        return 2 ** len(members)
    if scheme == "within+signflip":
        return n_shuffles * 2 ** len(members)
    return n_shuffles


def _multiset_orderings(labels: np.ndarray) -> np.ndarray:
    """Every distinct ordering of ``labels`` (rows), the given order first."""
    m = labels.size
    if np.unique(labels).size == m:
        out = labels[np.array(list(itertools.permutations(range(m))), dtype=np.int64).reshape(-1, m)]
    else:  # next lexicographic permutation: each distinct ordering once
        seq = sorted(labels.tolist())
        rows = [tuple(seq)]
        while True:
            i = m - 2
            while i >= 0 and seq[i] >= seq[i + 1]:
                i -= 1
            if i < 0:
                break
            j = m - 1
            while seq[j] <= seq[i]:
                j -= 1
            seq[i], seq[j] = seq[j], seq[i]
            seq[i + 1:] = reversed(seq[i + 1:])
            rows.append(tuple(seq))
        out = np.array(rows, dtype=np.int64).reshape(-1, m)
    first = int(np.flatnonzero(np.all(out == labels[None], axis=1))[0])
    out[[0, first]] = out[[first, 0]]
    return out


def _orderings_to_index(orderings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Row index arrays (local) realising each ordering of the tie labels.

    Position ``d`` must receive a row whose label is ``orderings[r, d]``; rows
    of one label are assigned in order, so the identity ordering gives the
    identity index.
    """
    sort_o = np.argsort(orderings, axis=1, kind="stable")
    sort_l = np.argsort(labels, kind="stable")
    index = np.empty_like(orderings)
    index[:, sort_l] = sort_o
    return index


def enumerate_rearrangements(n_samples: int, scheme: str, *, blocks: np.ndarray | None = None,
                             design: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct rearrangement once, the identity first: ``(index, signs)``.

    Same conventions as :func:`draw_rearrangements`; the count is
    :func:`count_rearrangements` (shuffles that only swap rows with identical
    design values are listed once).
    """
    count = count_rearrangements(n_samples, scheme, blocks=blocks, design=design)
    members, inv = _block_members(None if scheme == "permute" else blocks, n_samples)
    index = np.arange(n_samples)[None].copy()
    signs = np.ones((1, n_samples))
    if scheme in ("permute", "within", "within+signflip"):
        ties = _tie_labels(design, n_samples)
        per_block = [rows[_orderings_to_index(_multiset_orderings(ties[rows]), ties[rows])]
                     for rows in members]
        combos = np.indices([p.shape[0] for p in per_block]).reshape(len(per_block), -1).T
        index = np.empty((combos.shape[0], n_samples), dtype=np.int64)
        for b, (rows, perms) in enumerate(zip(members, per_block)):
            index[:, rows] = perms[combos[:, b]]
        signs = np.ones(index.shape)
    if scheme in ("signflip", "block-signflip", "within+signflip"):
        n_units = n_samples if scheme == "signflip" else len(members)
        bits = (np.arange(2 ** n_units, dtype=np.int64)[:, None] >> np.arange(n_units)) & 1
        flips = 1.0 - 2.0 * bits
        flips = flips if scheme == "signflip" else flips[:, inv]
        n_shuffles = index.shape[0]
        index = np.repeat(index, flips.shape[0], axis=0)
        signs = np.tile(flips, (n_shuffles, 1))
    assert index.shape[0] == count
    return index.astype(np.int64), signs


# --------------------------------------------------------------------------- resources
class ResourceError(ValueError):
    """The permutation stage would need more memory than the machine has."""


class ZeroVarianceError(ValueError):
    """No voxel has residual variance: the maps are constant across the design."""


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
_SECONDS_PER_TFCE_VOXEL = 5e-7   # union-find TFCE, per voxel and map (both signs)
_SECONDS_PER_CLUSTER_VOXEL = 2.5e-7


def estimate_resources(n_samples: int, n_voxels: int, n_perm: int, *, n_basis: int = 1,
                       tfce: bool = False, clusters: bool = False, n_jobs: int = 1,
                       memory_limit_mb: float = 512.0) -> ResourceEstimate:
    """Memory and time of :func:`permutation_test` before it starts.

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


def nilearn_rearrangements(n_samples: int, n_perm: int, *, intercept_test: bool,
                           random_state: int | np.random.RandomState | None = None,
                           n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The rearrangements ``nilearn.mass_univariate.permuted_ols`` draws.

    Reproduces its random stream (a seed per job, cumulative sign swaps or
    cumulative shuffles of the design rows) so both engines can be run on the
    very same permutations; ``n_jobs`` must equal the effective number of
    jobs nilearn uses (``min(n_jobs, cpu_count)``).
    """
    rng = np.random.RandomState(random_state) if not isinstance(random_state, np.random.RandomState) \
        else random_state
    if n_perm > n_jobs:
        chunks = np.asarray([n_perm / n_jobs] * n_jobs, dtype=int)
        chunks[-1] += n_perm % n_jobs
    else:
        chunks = np.ones(n_perm, dtype=int)
    index, signs = [], []
    for n_chunk in chunks:
        sub = np.random.RandomState(rng.randint(1, np.iinfo(np.int32).max - 1))
        sign = np.ones(n_samples)
        composite = np.arange(n_samples)
        for _ in range(n_chunk):
            if intercept_test:
                sign = sign * (sub.randint(2, size=(n_samples, 1)) * 2 - 1)[:, 0]
                index.append(np.arange(n_samples))
                signs.append(sign.copy())
            else:
                composite = composite[sub.permutation(n_samples)]
                # nilearn shuffles the design rows; the same fit shuffles the data inversely
                index.append(np.argsort(composite))
                signs.append(np.ones(n_samples))
    return np.asarray(index), np.asarray(signs, dtype=float)


# --------------------------------------------------------------------------- engine
def _stat_from_parts(a: np.ndarray, b2: np.ndarray, ss_e: np.ndarray, df: float, k: int
                     ) -> np.ndarray:
    """t (k == 1) or F from ``a = Q_x'Pe`` (k, ...), ``||Q_z'Pe||^2`` and ``||e||^2``."""
    ss_x = np.sum(a * a, axis=0) if k > 1 else a[0] * a[0]
    rss = ss_e - b2 - ss_x
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma2 = np.maximum(rss, 0.0) / df
        if k == 1:
            stat = a[0] / np.sqrt(sigma2)
        else:
            stat = (ss_x / k) / sigma2
    return np.where(ss_e > 0, stat, 0.0)


def _rearranged_basis(rows: np.ndarray, basis: np.ndarray, index: np.ndarray, signs: np.ndarray,
                      order: np.ndarray) -> np.ndarray:
    """``u[p, j]`` with ``u[p, j] @ e = basis[:, j]' P_p e``, columns in ``order``: (n_chunk, m, n)."""
    n_chunk, (n, n_basis) = rows.size, basis.shape
    u = np.zeros((n_chunk, n_basis, n))
    p_idx = np.arange(n_chunk)[:, None, None]
    j_idx = np.arange(n_basis)[None, :, None]
    u[p_idx, j_idx, index[rows][:, None, :]] = (signs[rows][:, :, None] * basis[None]).transpose(0, 2, 1)
    return u[:, :, order]


@dataclass
class _Engine:
    """What every chunk shares: data in plan order, observed scores, statistic options."""

    e: np.ndarray          # (n, n_vox) residualised data, rows in block order (unit columns if normalized)
    ss_e: np.ndarray
    k: int
    normalized: bool
    df: float
    two_sided: bool
    threshold: np.ndarray  # observed scores less a tie tolerance


def _process_chunk(engine: _Engine, rows: np.ndarray, plan: lookup.LookupPlan, voxels: slice,
                   want_maps: bool) -> dict:
    """Max score per rearrangement and exceedances per voxel over a voxel range."""
    n_vox = voxels.stop - voxels.start
    maxes = np.full(rows.size, -np.inf)
    count = np.zeros(n_vox, dtype=np.int64)
    stat_full = np.empty((rows.size, n_vox)) if want_maps else None
    width = lookup.tile_width(plan, n_vox)
    table = None
    for start in range(voxels.start, voxels.stop, width):
        blk = slice(start, min(start + width, voxels.stop))
        local = slice(blk.start - voxels.start, blk.stop - voxels.start)
        table = lookup.build_tables(plan, engine.e[:, blk], out=table)
        lookup.scan_tile(table, plan.ids, k=engine.k, normalized=engine.normalized,
                         ss_e=engine.ss_e[blk], df=engine.df, two_sided=engine.two_sided,
                         threshold=engine.threshold[blk], maxes=maxes, count=count[local],
                         stat_out=stat_full[:, local] if want_maps else None)
    return {"rows": rows, "voxels": voxels, "max": maxes, "count": count, "stat": stat_full}


def _maps_null(part: dict, nbrs: np.ndarray, mask: np.ndarray, two_sided: bool,
               tfce_kw: dict | None, cluster_t: float | None, tfce_thr: np.ndarray | None,
               mass_thr: np.ndarray | None) -> dict:
    """TFCE and cluster maxima of every rearranged statistic map of a chunk, and the
    voxels' exceedances of the observed TFCE and cluster mass (same thresholds)."""
    stat_full = part.pop("stat")
    if tfce_kw is not None:
        part["tfce_max"], part["tfce_count"] = _tfce.tfce_max_count(
            stat_full, nbrs, tfce_thr, two_sided=two_sided, mask=mask, **tfce_kw)
    if cluster_t is not None:
        sm = np.zeros((stat_full.shape[0], 2))
        count = np.zeros(stat_full.shape[1], dtype=np.int64)
        for i, s in enumerate(stat_full):
            size, mass = _tfce.cluster_measures(s, cluster_t, nbrs, two_sided=two_sided, mask=mask)
            sm[i] = size.max(initial=0.0), mass.max(initial=0.0)
            count += mass >= mass_thr
        part["size_max"], part["mass_max"], part["mass_count"] = sm[:, 0], sm[:, 1], count
    return part


def _identity_like(u: np.ndarray, u_id: np.ndarray, k: int, symmetric: bool,
                   tol: float = 1e-12) -> np.ndarray:
    """Rearrangements whose statistic is the observed one for any data.

    The statistic depends on the tested projections ``a`` (rows ``:k`` of
    the rearranged basis) and on the norm of the nuisance refit (rows
    ``k:``): ``a`` must be the identity's (or its negative, when the
    statistic is symmetric: two-sided t, F) and each nuisance row the
    identity's up to its sign. Equal means within ``tol`` (the basis is
    orthonormal): a design's symmetric values (e.g. +-1/sqrt(n) of two equal
    groups) come out of the SVD equal only to rounding.
    """
    def close(a, b, axes):
        return np.all(np.abs(a - b) <= tol, axis=axes)

    ux, ux_id = u[:, :k], u_id[None, :k]
    same = close(ux, ux_id, (1, 2))
    if symmetric:
        same |= close(ux, -ux_id, (1, 2))
    uz, uz_id = u[:, k:], u_id[None, k:]
    if uz.shape[1]:
        same &= np.all(close(uz, uz_id, 2) | close(uz, -uz_id, 2), axis=1)
    return same


def auto_scheme(design: np.ndarray, contrast: np.ndarray, blocks: np.ndarray | None = None) -> str:
    """The scheme ``scheme="auto"`` picks for this design, contrast and blocks."""
    return _auto_scheme(partition_design(design, contrast)[0], blocks)


def _auto_scheme(q_x: np.ndarray, blocks: np.ndarray | None) -> str:
    if blocks is None:
        const = np.ones((q_x.shape[0], 1)) / math.sqrt(q_x.shape[0])
        in_const = q_x.shape[1] == 1 and abs(float(const[:, 0] @ q_x[:, 0])) > 1 - 1e-9
        return "signflip" if in_const else "permute"
    _, inv = np.unique(blocks, return_inverse=True)
    q_b = _orth(np.eye(inv.max() + 1)[inv])
    between = np.allclose(q_b @ (q_b.T @ q_x), q_x, atol=1e-9)
    return "block-signflip" if between else "within"


def permutation_test(Y: np.ndarray, design: np.ndarray, contrast: np.ndarray, *,
                     n_perm: int = 5000, scheme: str = "auto", blocks: np.ndarray | None = None,
                     two_sided: bool = False, mask: np.ndarray | None = None,
                     tfce: bool = False, tfce_H: float = 2.0, tfce_E: float = 0.5,
                     tfce_dh: float | str | None = "auto", connectivity: int = 26,
                     cluster_threshold: float | None = None,
                     permutations: tuple[np.ndarray, np.ndarray] | None = None,
                     exhaustive: bool = True,
                     chunk_size: int | None = None, memory_limit_mb: float = 512.0,
                     check_memory: bool = True,
                     random_state: int | np.random.Generator | None = None,
                     n_jobs: int = 1) -> PermutationResult:
    """Freedman-Lane permutation test of one t or F contrast, with FWE control.

    Parameters
    ----------
    Y : ndarray, shape (n_samples, n_voxels)
        Maps (rows) over voxels; NaNs are not allowed.
    design : ndarray, shape (n_samples, n_regressors)
    contrast : ndarray, shape (n_regressors,) for a t test or (k, n_regressors) for F
    n_perm : int
        Number of random rearrangements (the observed one is not among them).
        When the scheme has no more than ``n_perm + 1`` distinct
        rearrangements (:func:`count_rearrangements`), all of them are used
        instead, each once (``exhaustive``), with a recorded warning when
        ``n_perm`` asked for more than exist.
    scheme : {"auto", "signflip", "permute", "within", "block-signflip", "within+signflip"}
        ``auto``: without blocks, sign flips for an intercept-like effect and
        free permutation otherwise; with blocks, within-block shuffles for an
        effect that varies within blocks and whole-block sign flips otherwise.
    blocks : ndarray, shape (n_samples,), optional
        Exchangeability blocks (e.g. subject labels of the condition maps).
    two_sided : bool
        Score ``|t|`` (ignored for F).
    mask : ndarray of bool (X, Y, Z), optional
        Needed for TFCE and cluster inference; ``Y`` columns are its True
        voxels in C order.
    tfce, tfce_H, tfce_E, tfce_dh, connectivity
        TFCE options (see :func:`fmri_pain.glm.inference.tfce.tfce_masked`);
        ``connectivity`` also defines clusters.
    cluster_threshold : float, optional
        Cluster-forming threshold as an uncorrected parametric p-value
        (e.g. 0.001), converted with the model's degrees of freedom.
    permutations : (index, signs), optional
        Explicit rearrangements, shape (n_perm, n_samples) each: the data row
        ``i`` becomes ``signs[p, i] * e[index[p, i]]``. Overrides ``n_perm``,
        ``scheme`` and ``random_state``.
    exhaustive : bool
        Enumerate the distinct rearrangements when they fit ``n_perm``
        (False: always draw ``n_perm`` at random).
    chunk_size : int, optional
        Rearrangements planned and scanned together (default: fit
        ``memory_limit_mb``: their whole statistic maps with TFCE or
        clusters, only their rearranged bases otherwise).
    check_memory : bool
        Refuse (:class:`ResourceError`) before drawing when
        :func:`estimate_resources` exceeds the machine's available memory.
    random_state : int or Generator, optional
    n_jobs : int
        Work items (chunks of rearrangements; voxel ranges when only max-t is
        needed) run in that many threads (joblib; a ``joblib.parallel_config``
        backend such as dask is honoured).

    Returns
    -------
    PermutationResult
        Voxels whose residual variance is zero (maps constant across the
        design there) are not tested: stat 0, p = 1, counted in ``n_excluded``
        and named in ``warnings``.
    """
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y must be 2-D (n_samples, n_voxels), got shape {Y.shape}")
    n, n_vox = Y.shape
    design = np.asarray(design, dtype=np.float64)
    if design.shape[0] != n:
        raise ValueError(f"design has {design.shape[0]} rows but Y has {n} maps")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y contains NaN or infinite values; mask them out first")
    if blocks is not None:
        blocks = np.asarray(blocks)
        if blocks.shape != (n,):
            raise ValueError(f"blocks must have one label per map ({n}), got shape {blocks.shape}")
    if (tfce or cluster_threshold is not None) and mask is None:
        raise ValueError("TFCE and cluster inference need the 3-D mask (mask=)")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if int(mask.sum()) != n_vox:
            raise ValueError(f"mask has {int(mask.sum())} voxels but Y has {n_vox} columns")

    q_x, q_z, _, rank = partition_design(design, contrast)
    k = q_x.shape[1]
    df = float(n - rank)
    if df <= 0:
        raise ValueError(f"no residual degrees of freedom ({n} maps, design rank {rank})")
    two_sided = bool(two_sided and k == 1)
    if scheme == "auto":
        scheme = _auto_scheme(q_x, blocks)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown permutation scheme {scheme!r}; choose from {SCHEMES}")
    n_distinct = None
    if permutations is None:
        n_distinct = count_rearrangements(n, scheme, blocks=blocks, design=design)
        if n_distinct < 2:
            raise ValueError(f"the {scheme!r} scheme has a single rearrangement (the observed "
                             "data) on this design: no permutation test is possible")
    keep = _nonzero_variance(np.asarray(Y, dtype=np.float64), design)
    if not keep.all():
        if not keep.any():
            raise ZeroVarianceError("every voxel has zero residual variance (the maps are "
                                    "constant across the design there): nothing to test")
        inner_mask = None
        if mask is not None:
            inner_mask = mask.copy()
            inner_mask[mask] = keep
        result = permutation_test(
            Y[:, keep], design, contrast, n_perm=n_perm, scheme=scheme, blocks=blocks,
            two_sided=two_sided, mask=inner_mask, tfce=tfce, tfce_H=tfce_H, tfce_E=tfce_E,
            tfce_dh=tfce_dh, connectivity=connectivity, cluster_threshold=cluster_threshold,
            permutations=permutations, exhaustive=exhaustive, chunk_size=chunk_size,
            memory_limit_mb=memory_limit_mb, check_memory=check_memory,
            random_state=random_state, n_jobs=n_jobs)
        return _expand(result, keep)
    notes: list[str] = []
    is_exhaustive = False
    q_zr = _drop_invariant_nuisance(q_z, blocks, scheme) if permutations is None else q_z
    n_basis = k + q_zr.shape[1]
    want_maps = tfce or cluster_threshold is not None
    if permutations is None:
        is_exhaustive = exhaustive and n_distinct - 1 <= n_perm
        n_eval = n_distinct - 1 if is_exhaustive else n_perm
        if n_eval >= 1 and check_memory:
            estimate = estimate_resources(n, n_vox, n_eval, n_basis=n_basis, tfce=tfce,
                                          clusters=cluster_threshold is not None, n_jobs=n_jobs,
                                          memory_limit_mb=memory_limit_mb)
            LOGGER.log(logging.INFO if estimate.seconds > 60 else logging.DEBUG,
                       "permutation test (%s, %d maps x %d voxels): %s", scheme, n, n_vox,
                       estimate.describe())
            check_resources(estimate)
        if is_exhaustive:
            index, signs = enumerate_rearrangements(n, scheme, blocks=blocks, design=design)
            index, signs = index[1:], signs[1:]  # the identity is the observed statistic
            if n_perm >= n_distinct:
                notes.append(f"n_perm = {n_perm} exceeds the {n_distinct} distinct rearrangements "
                             f"({scheme}): all {n_distinct} were used once each, the observed "
                             "one included (exact test)")
        else:
            index, signs = draw_rearrangements(n, n_perm, scheme, blocks=blocks,
                                               random_state=random_state)
    else:
        index, signs = (np.asarray(a) for a in permutations)
        if index.shape != signs.shape or index.ndim != 2 or index.shape[1] != n:
            raise ValueError(f"permutations must be two arrays of shape (n_perm, {n})")
        scheme = "explicit"
        index = index.astype(np.int64)
        signs = signs.astype(np.float64)
    n_requested, n_perm = n_perm, index.shape[0]
    if n_perm < 1:
        raise ValueError("at least one rearrangement is needed (n_perm >= 1)")
    for note in notes:
        LOGGER.warning(note)

    # observed model, in float64
    e = np.asarray(Y, dtype=np.float64)
    if q_z.shape[1]:
        e = e - q_z @ (q_z.T @ e)
    ss_e = np.einsum("ij,ij->j", e, e)
    stat_obs = _stat_from_parts(q_x.T @ e, 0.0, ss_e, df, k)
    stat_type = "t" if k == 1 else "F"
    score_obs = np.abs(stat_obs) if two_sided else stat_obs
    # Without a nuisance refit, t (F) is a monotone function of the projection
    # (its squared norm) of unit-norm data: the scan then needs no division.
    normalized = q_zr.shape[1] == 0
    if normalized:
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.where(ss_e > 0, e / np.sqrt(ss_e), 0.0)
        a_obs = q_x.T @ e
        score_run = (np.abs(a_obs[0]) if two_sided else a_obs[0]) if k == 1 else np.sum(a_obs ** 2, 0)
    else:
        score_run = score_obs
    order = (np.argsort(np.unique(blocks, return_inverse=True)[1].ravel(), kind="stable")
             if blocks is not None else np.arange(n))  # rows shuffled together stay adjacent
    # one threshold (in the scan's score space) for the uncorrected and the FWE p-values
    threshold = _tie_threshold(score_run)
    engine = _Engine(e=np.ascontiguousarray(e[order]), ss_e=ss_e, k=k, normalized=normalized,
                     df=df, two_sided=two_sided, threshold=threshold)

    nbrs = _tfce.neighbour_table(mask, connectivity) if tfce or cluster_threshold else None
    tfce_kw = dict(H=tfce_H, E=tfce_E, dh=tfce_dh)
    tfce_obs = _tfce.tfce_masked(stat_obs, nbrs, two_sided=two_sided, mask=mask, **tfce_kw) \
        if tfce else None
    tfce_thr = _tie_threshold(np.abs(tfce_obs)) if tfce else None
    cluster_t = mass_thr = None
    if cluster_threshold is not None:
        if not 0 < cluster_threshold < 1:
            raise ValueError("cluster_threshold is an uncorrected p-value in (0, 1)")
        if k == 1:
            cluster_t = float(stats.t.isf(cluster_threshold / (2 if two_sided else 1), df))
        else:
            cluster_t = float(stats.f.isf(cluster_threshold, k, df))
        size_obs, mass_obs = _tfce.cluster_measures(stat_obs, cluster_t, nbrs, two_sided=two_sided,
                                                    mask=mask)
        mass_thr = np.where(size_obs > 0, _tie_threshold(mass_obs), np.inf)

    # Work items: (rearrangements, voxel range). TFCE and clusters need whole maps,
    # so chunks of rearrangements bounded by memory; max-t alone splits voxels.
    n_workers = 1 if n_jobs == 1 else (n_jobs if n_jobs > 0 else (os.cpu_count() or 1))
    if chunk_size is None:  # whole maps per rearrangement, or only the rearranged basis
        per_perm = 8.0 * n_vox * 2 if want_maps else 8.0 * 4 * n_basis * n
        chunk_size = int(max(1, memory_limit_mb * 2**20 // per_perm))
        if want_maps and n_workers > 1:  # give every worker something to do
            chunk_size = max(1, min(chunk_size, -(-n_perm // n_workers)))
    chunk_size = min(chunk_size, n_perm)
    basis = np.hstack([q_x, q_zr])
    ties = _tie_labels(design, n)
    first = np.zeros(ties.max() + 1, dtype=np.int64)
    first[ties[::-1]] = np.arange(n)[::-1]
    basis = basis[first[ties]]  # tied rows carry bitwise-equal basis rows
    u_id = basis[order].T
    symmetric = two_sided or k > 1
    plans, identity_rows = [], []
    for i in range(0, n_perm, chunk_size):
        rows = np.arange(i, min(i + chunk_size, n_perm))
        u = _rearranged_basis(rows, basis, index, signs, order)
        same = _identity_like(u, u_id, k, symmetric)
        identity_rows.append(rows[same])
        if not same.all():
            plans.append((rows[~same], lookup.plan_lookup(u[~same])))
    identity_rows = np.concatenate(identity_rows)
    n_pieces = 1 if want_maps or n_workers == 1 else 4 * n_workers
    edges = np.linspace(0, n_vox, n_pieces + 1).astype(int)
    items = [(rows, plan, slice(int(a), int(b))) for rows, plan in plans
             for a, b in zip(edges[:-1], edges[1:]) if b > a]
    # BLAS stays single-threaded: the table products are small; parallelism is over items
    from threadpoolctl import threadpool_limits

    def run(rows, plan, voxels):
        with threadpool_limits(1):
            part = _process_chunk(engine, rows, plan, voxels, want_maps)
            if want_maps:
                part = _maps_null(part, nbrs, mask, two_sided, tfce_kw if tfce else None, cluster_t,
                                  tfce_thr, mass_thr)
            return part

    if n_workers == 1 or len(items) <= 1:
        parts = [run(*item) for item in items]
    else:
        import joblib

        parts = joblib.Parallel(n_jobs=n_jobs, prefer="threads")(
            joblib.delayed(run)(*item) for item in items)

    # rearrangements equivalent to the identity tie with the observed data exactly
    n_identity = identity_rows.size
    max_score = np.full(n_perm, -np.inf)
    max_score[identity_rows] = score_run.max()
    count = np.full(n_vox, float(n_identity))
    for part in parts:
        max_score[part["rows"]] = np.maximum(max_score[part["rows"]], part["max"])
        count[part["voxels"]] += part["count"]
    max_null = lookup.score_to_stat(max_score, k, df) if normalized else max_score
    if normalized and n_identity:  # reported maxima of the identity: the observed maximum
        max_null[identity_rows] = score_obs.max()
    result = PermutationResult(
        stat=stat_obs, stat_type=stat_type, df=(float(k), df),
        p_uncorrected=(1.0 + count) / (1.0 + n_perm),
        p_fwe=_p_at_or_above(threshold, max_score), max_null=max_null, n_perm=n_perm,
        scheme=scheme, two_sided=two_sided,
        parameters=dict(n_perm=n_requested if scheme != "explicit" else n_perm, scheme=scheme, two_sided=two_sided, tfce=tfce,
                        tfce_H=tfce_H, tfce_E=tfce_E, tfce_dh=tfce_dh, connectivity=connectivity,
                        cluster_threshold=cluster_threshold, chunk_size=chunk_size,
                        exhaustive=is_exhaustive,
                        random_state=random_state if isinstance(random_state, (int, type(None)))
                        else repr(random_state)),
        n_distinct=n_distinct, exhaustive=is_exhaustive, n_identity=int(n_identity),
        warnings=notes)
    if tfce:
        tfce_null = np.empty(n_perm)
        tfce_count = np.full(n_vox, float(n_identity))
        tfce_null[identity_rows] = np.abs(tfce_obs).max()
        for part in parts:
            tfce_null[part["rows"]] = part["tfce_max"]
            tfce_count += part["tfce_count"]
        result.tfce, result.tfce_max_null = tfce_obs, tfce_null
        result.p_tfce_fwe = _p_at_or_above(tfce_thr, tfce_null)
        result.p_tfce_uncorrected = (1.0 + tfce_count) / (1.0 + n_perm)
    if cluster_t is not None:
        size_null, mass_null = np.empty(n_perm), np.empty(n_perm)
        size_null[identity_rows] = size_obs.max(initial=0.0)
        mass_null[identity_rows] = mass_obs.max(initial=0.0)
        mass_count = np.where(size_obs > 0, float(n_identity), 0.0)
        for part in parts:
            size_null[part["rows"]] = part["size_max"]
            mass_null[part["rows"]] = part["mass_max"]
            mass_count += part["mass_count"]
        inside = size_obs > 0
        p_size, p_mass, p_mass_unc = np.ones(n_vox), np.ones(n_vox), np.ones(n_vox)
        p_size[inside] = _p_from_null(size_obs[inside], size_null)
        p_mass[inside] = _p_at_or_above(mass_thr[inside], mass_null)
        p_mass_unc[inside] = (1.0 + mass_count[inside]) / (1.0 + n_perm)
        result.cluster_forming_threshold = cluster_t
        result.cluster_p_threshold = cluster_threshold
        result.cluster_size, result.cluster_mass = size_obs, mass_obs
        result.cluster_p_extent_fwe, result.cluster_p_mass_fwe = p_size, p_mass
        result.cluster_p_mass_uncorrected = p_mass_unc
        result.cluster_size_null, result.cluster_mass_null = size_null, mass_null
    return result


def _nonzero_variance(Y: np.ndarray, design: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Voxels whose full-model residual sum of squares is above ``tol`` of their
    total sum of squares; the others (maps constant across the design there,
    all-zero voxels) would give t = c / 0, a huge t from rounding."""
    q_full = _orth(design)
    resid = Y - q_full @ (q_full.T @ Y)
    rss = np.einsum("ij,ij->j", resid, resid)
    return rss > tol * np.einsum("ij,ij->j", Y, Y)


def _expand(result: PermutationResult, keep: np.ndarray) -> PermutationResult:
    """A result over all voxels from one over ``keep``: stat 0 and p = 1 elsewhere."""
    def full(values, fill):
        if values is None:
            return None
        out = np.full(keep.size, fill, dtype=float)
        out[keep] = values
        return out

    result.stat = full(result.stat, 0.0)
    for name in ("p_uncorrected", "p_fwe", "p_tfce_fwe", "p_tfce_uncorrected",
                 "cluster_p_extent_fwe", "cluster_p_mass_fwe", "cluster_p_mass_uncorrected"):
        setattr(result, name, full(getattr(result, name), 1.0))
    for name in ("tfce", "cluster_size", "cluster_mass"):
        setattr(result, name, full(getattr(result, name), 0.0))
    n_out = int(keep.size - keep.sum())
    result.n_excluded = n_out
    note = (f"{n_out} of {keep.size} voxels have zero residual variance (constant across the "
            "maps there) and were not tested: stat 0 and p = 1 in the maps")
    LOGGER.warning(note)
    result.warnings.append(note)
    return result
