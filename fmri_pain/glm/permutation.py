"""Permutation inference for the general linear model (Freedman-Lane).

With the nuisance-residualised data ``e = R_Z Y`` and a rearrangement ``P``
(signs and/or a row permutation), the Freedman-Lane statistic only needs
``Q_x' P e`` (effect of interest), ``Q_Z' P e`` (nuisance refit) and
``||P e||^2 = ||e||^2``, where ``Q_x`` and ``Q_Z`` are orthonormal bases of the
contrast space and of the reduced (nuisance) model. The rows ``q' P`` of all
rearrangements are evaluated against every voxel by
:mod:`fmri_pain.glm.lookup_sums` (sums of small precomputed tables, tiled
over voxels so they stay in cache). Nuisance directions that every
rearrangement maps back into the nuisance space (e.g. subject indicators under
within-subject shuffles) add nothing and are dropped, which keeps the subject +
condition + period model as cheap as a one-sample test; with no nuisance left,
t (F) is a monotone function of the projection of unit-norm data, so the scan
compares projections and converts only the maxima.

The conventions follow Winkler et al. 2014 (NeuroImage 92:381) and PALM;
p-values are ``(1 + #{null >= observed}) / (1 + n_perm)`` as in nilearn's
``permuted_ols``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg, stats

from fmri_pain.glm import lookup_sums as lookup
from fmri_pain.glm import tfce as _tfce

__all__ = [
    "SCHEMES",
    "PermutationResult",
    "permutation_test",
    "draw_rearrangements",
    "nilearn_rearrangements",
    "fwe_threshold",
    "partition_design",
]

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
    parameters: dict = field(default_factory=dict)

    @property
    def t(self) -> np.ndarray:
        """The observed statistic (t, or F for a multi-row contrast)."""
        return self.stat

    def logp(self, name: str) -> np.ndarray:
        """``-log10`` of a p map: ``uncorrected``, ``fwe``, ``tfce_fwe``,
        ``cluster_extent_fwe`` or ``cluster_mass_fwe``."""
        attr = {"uncorrected": "p_uncorrected", "fwe": "p_fwe", "tfce_fwe": "p_tfce_fwe",
                "cluster_extent_fwe": "cluster_p_extent_fwe",
                "cluster_mass_fwe": "cluster_p_mass_fwe"}[name]
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


def _p_from_null(scores: np.ndarray, null: np.ndarray) -> np.ndarray:
    """``(1 + #{null >= score}) / (1 + n)`` for every score.

    Ties are judged with a relative tolerance of 1e-12: the observed and the
    rearranged statistics are computed along different paths (rounding).
    """
    null = np.sort(np.asarray(null, dtype=float))
    scores = np.asarray(scores, dtype=float)
    n_ge = null.size - np.searchsorted(null, scores - 1e-12 * np.abs(scores), side="left")
    return (1.0 + n_ge) / (1.0 + null.size)


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
               tfce_kw: dict | None, cluster_t: float | None) -> dict:
    """TFCE and cluster maxima of every rearranged statistic map of a chunk."""
    stat_full = part.pop("stat")
    if tfce_kw is not None:
        part["tfce_max"] = _tfce.tfce_max(stat_full, nbrs, two_sided=two_sided, mask=mask, **tfce_kw)
    if cluster_t is not None:
        sm = np.array([_tfce.max_cluster_measures(s, cluster_t, nbrs, two_sided=two_sided, mask=mask)
                       for s in stat_full]).reshape(-1, 2)
        part["size_max"], part["mass_max"] = sm[:, 0], sm[:, 1]
    return part


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
                     chunk_size: int | None = None, memory_limit_mb: float = 512.0,
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
        TFCE options (see :func:`fmri_pain.glm.tfce.tfce_masked`);
        ``connectivity`` also defines clusters.
    cluster_threshold : float, optional
        Cluster-forming threshold as an uncorrected parametric p-value
        (e.g. 0.001), converted with the model's degrees of freedom.
    permutations : (index, signs), optional
        Explicit rearrangements, shape (n_perm, n_samples) each: the data row
        ``i`` becomes ``signs[p, i] * e[index[p, i]]``. Overrides ``n_perm``,
        ``scheme`` and ``random_state``.
    chunk_size : int, optional
        Rearrangements planned and scanned together (default: fit
        ``memory_limit_mb``: their whole statistic maps with TFCE or
        clusters, only their rearranged bases otherwise).
    random_state : int or Generator, optional
    n_jobs : int
        Work items (chunks of rearrangements; voxel ranges when only max-t is
        needed) run in that many threads (joblib; a ``joblib.parallel_config``
        backend such as dask is honoured).

    Returns
    -------
    PermutationResult
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
    if permutations is None:
        index, signs = draw_rearrangements(n, n_perm, scheme, blocks=blocks, random_state=random_state)
    else:
        index, signs = (np.asarray(a) for a in permutations)
        if index.shape != signs.shape or index.ndim != 2 or index.shape[1] != n:
            raise ValueError(f"permutations must be two arrays of shape (n_perm, {n})")
        scheme = "explicit"
        index = index.astype(np.int64)
        signs = signs.astype(np.float64)
    n_perm = index.shape[0]
    if n_perm < 1:
        raise ValueError("at least one rearrangement is needed (n_perm >= 1)")

    # observed model, in float64
    e = np.asarray(Y, dtype=np.float64)
    if q_z.shape[1]:
        e = e - q_z @ (q_z.T @ e)
    ss_e = np.einsum("ij,ij->j", e, e)
    q_zr = _drop_invariant_nuisance(q_z, blocks, scheme) if scheme != "explicit" else q_z
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
    engine = _Engine(e=np.ascontiguousarray(e[order]), ss_e=ss_e, k=k, normalized=normalized,
                     df=df, two_sided=two_sided,
                     threshold=score_run - 1e-12 * np.abs(score_run))

    nbrs = _tfce.neighbour_table(mask, connectivity) if tfce or cluster_threshold else None
    tfce_kw = dict(H=tfce_H, E=tfce_E, dh=tfce_dh)
    tfce_obs = _tfce.tfce_masked(stat_obs, nbrs, two_sided=two_sided, mask=mask, **tfce_kw) \
        if tfce else None
    cluster_t = None
    if cluster_threshold is not None:
        if not 0 < cluster_threshold < 1:
            raise ValueError("cluster_threshold is an uncorrected p-value in (0, 1)")
        if k == 1:
            cluster_t = float(stats.t.isf(cluster_threshold / (2 if two_sided else 1), df))
        else:
            cluster_t = float(stats.f.isf(cluster_threshold, k, df))

    # Work items: (rearrangements, voxel range). TFCE and clusters need whole maps,
    # so chunks of rearrangements bounded by memory; max-t alone splits voxels.
    want_maps = tfce or cluster_t is not None
    n_workers = 1 if n_jobs == 1 else (n_jobs if n_jobs > 0 else (os.cpu_count() or 1))
    n_basis = k + q_zr.shape[1]
    if chunk_size is None:  # whole maps per rearrangement, or only the rearranged basis
        per_perm = 8.0 * n_vox * 2 if want_maps else 8.0 * 4 * n_basis * n
        chunk_size = int(max(1, memory_limit_mb * 2**20 // per_perm))
        if want_maps and n_workers > 1:  # give every worker something to do
            chunk_size = max(1, min(chunk_size, -(-n_perm // n_workers)))
    chunk_size = min(chunk_size, n_perm)
    basis = np.hstack([q_x, q_zr])
    plans = [(rows, lookup.plan_lookup(_rearranged_basis(rows, basis, index, signs, order)))
             for rows in (np.arange(i, min(i + chunk_size, n_perm))
                          for i in range(0, n_perm, chunk_size))]
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
                part = _maps_null(part, nbrs, mask, two_sided, tfce_kw if tfce else None, cluster_t)
            return part

    if n_workers == 1 or len(items) == 1:
        parts = [run(*item) for item in items]
    else:
        import joblib

        parts = joblib.Parallel(n_jobs=n_jobs, prefer="threads")(
            joblib.delayed(run)(*item) for item in items)

    max_null = np.full(n_perm, -np.inf)
    count = np.zeros(n_vox)
    for part in parts:
        max_null[part["rows"]] = np.maximum(max_null[part["rows"]], part["max"])
        count[part["voxels"]] += part["count"]
    if normalized:
        max_null = lookup.score_to_stat(max_null, k, df)
    result = PermutationResult(
        stat=stat_obs, stat_type=stat_type, df=(float(k), df),
        p_uncorrected=(1.0 + count) / (1.0 + n_perm),
        p_fwe=_p_from_null(score_obs, max_null), max_null=max_null, n_perm=n_perm,
        scheme=scheme, two_sided=two_sided,
        parameters=dict(n_perm=n_perm, scheme=scheme, two_sided=two_sided, tfce=tfce,
                        tfce_H=tfce_H, tfce_E=tfce_E, tfce_dh=tfce_dh, connectivity=connectivity,
                        cluster_threshold=cluster_threshold, chunk_size=chunk_size,
                        random_state=random_state if isinstance(random_state, (int, type(None)))
                        else repr(random_state)))
    if tfce:
        tfce_null = np.empty(n_perm)
        for part in parts:
            tfce_null[part["rows"]] = part["tfce_max"]
        result.tfce, result.tfce_max_null = tfce_obs, tfce_null
        result.p_tfce_fwe = _p_from_null(np.abs(tfce_obs), tfce_null)
    if cluster_t is not None:
        size_null, mass_null = np.empty(n_perm), np.empty(n_perm)
        for part in parts:
            size_null[part["rows"]] = part["size_max"]
            mass_null[part["rows"]] = part["mass_max"]
        size, mass = _tfce.cluster_measures(stat_obs, cluster_t, nbrs, two_sided=two_sided, mask=mask)
        inside = size > 0
        p_size, p_mass = np.ones(n_vox), np.ones(n_vox)
        p_size[inside] = _p_from_null(size[inside], size_null)
        p_mass[inside] = _p_from_null(mass[inside], mass_null)
        result.cluster_forming_threshold = cluster_t
        result.cluster_p_threshold = cluster_threshold
        result.cluster_size, result.cluster_mass = size, mass
        result.cluster_p_extent_fwe, result.cluster_p_mass_fwe = p_size, p_mass
        result.cluster_size_null, result.cluster_mass_null = size_null, mass_null
    return result
