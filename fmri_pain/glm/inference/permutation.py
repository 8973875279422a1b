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

import logging
import os

import numpy as np
from scipy import stats

from fmri_pain.glm.inference import lookup_sums as lookup
from fmri_pain.glm.inference import tfce as _tfce
from fmri_pain.glm.inference.design import (
    drop_invariant_nuisance,
    nonzero_variance,
    partition_design,
)
from fmri_pain.glm.inference.rearrangements import (
    SCHEMES,
    count_rearrangements,
    rearrangements_to_use,
    scheme_for_basis,
    tie_labels,
)
from fmri_pain.glm.inference.resources import check_resources, estimate_resources
from fmri_pain.glm.inference.result import PermutationResult, p_at_or_above, p_from_null, tie_threshold
from fmri_pain.glm.inference.scan import (
    ScanData,
    identity_like,
    maps_null,
    rearranged_basis,
    scan_chunk,
    stat_from_parts,
)
from fmri_pain.glm.inference.tail import accelerate_result
from fmri_pain.glm.inference.tfce_buckets import buckets_apply, tfce_grid, voxel_grid
from fmri_pain.glm.inference.variance_groups import permutation_test_g

__all__ = ["ACCELERATIONS", "ZeroVarianceError", "permutation_test"]

ACCELERATIONS = ("none", "tail")
"""``accel`` of :func:`permutation_test`: plain permutation p-values, or tail-fitted FWE p-values."""

LOGGER = logging.getLogger(__name__)


class ZeroVarianceError(ValueError):
    """No voxel has residual variance: the maps are constant across the design."""



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
                     n_jobs: int = 1, accel: str = "none",
                     variance_groups: np.ndarray | None = None) -> PermutationResult:
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
    accel : {"none", "tail"}
        ``tail``: FWE p-values of max-t, TFCE and cluster mass from a
        generalised Pareto fit to the upper tail of their nulls, so they can
        go below ``1 / n_perm`` (PALM's ``-accel tail``; see
        :mod:`fmri_pain.glm.inference.tail`). Cluster extent keeps its
        permutation p-values.
    variance_groups : ndarray, shape (n_samples,), optional
        Variance group of every map (PALM's ``-vg``): the statistic is then G
        (:mod:`fmri_pain.glm.inference.variance_groups`, a slower separate path), the
        FWE is over max G and rearrangements keep every map in its group; TFCE
        enhances the z(G) maps; clusters are not computed (a recorded warning).

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
    if accel not in ACCELERATIONS:
        raise ValueError(f"accel must be one of {ACCELERATIONS}, got {accel!r}")
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
        scheme = scheme_for_basis(q_x, blocks)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown permutation scheme {scheme!r}; choose from {SCHEMES}")
    n_distinct = None
    if permutations is None:
        n_distinct = count_rearrangements(n, scheme, blocks=blocks, design=design)
        if n_distinct < 2:
            raise ValueError(f"the {scheme!r} scheme has a single rearrangement (the observed "
                             "data) on this design: no permutation test is possible")
    keep = nonzero_variance(np.asarray(Y, dtype=np.float64), design)
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
            random_state=random_state, n_jobs=n_jobs, accel=accel,
            variance_groups=variance_groups)
        return _expand(result, keep)
    if variance_groups is not None:
        if permutations is not None:
            raise ValueError("explicit rearrangements and variance groups cannot be combined: "
                             "the G path draws rearrangements that keep every map in its group")
        return _variance_group_test(Y, design, contrast, variance_groups, n_perm=n_perm,
                                    scheme=scheme, blocks=blocks, two_sided=two_sided,
                                    exhaustive=exhaustive, random_state=random_state, accel=accel,
                                    tfce=tfce, mask=mask, tfce_H=tfce_H, tfce_E=tfce_E,
                                    tfce_dh=tfce_dh, connectivity=connectivity,
                                    skipped=["cluster"] if cluster_threshold is not None else [])
    notes: list[str] = []
    is_exhaustive = False
    q_zr = drop_invariant_nuisance(q_z, blocks, scheme) if permutations is None else q_z
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
        index, signs, used = rearrangements_to_use(
            n, n_perm, scheme, n_distinct=n_distinct, exhaustive=is_exhaustive, blocks=blocks,
            design=design, random_state=random_state)
        notes += used
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
    stat_obs = stat_from_parts(q_x.T @ e, 0.0, ss_e, df, k)
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
    threshold = tie_threshold(score_run)
    engine = ScanData(e=np.ascontiguousarray(e[order]), ss_e=ss_e, k=k, normalized=normalized,
                     df=df, two_sided=two_sided, threshold=threshold)

    nbrs = _tfce.neighbour_table(mask, connectivity) if tfce or cluster_threshold else None
    tfce_kw = dict(H=tfce_H, E=tfce_E, dh=tfce_dh)
    # discrete heights: the level-bucket kernel (same maps to rounding, no sort per map)
    grid = voxel_grid(mask, connectivity) if tfce and buckets_apply(tfce_dh) else None
    if grid is not None:
        tfce_obs = tfce_grid(stat_obs, grid, two_sided=two_sided, **tfce_kw)
    else:
        tfce_obs = _tfce.tfce_masked(stat_obs, nbrs, two_sided=two_sided, mask=mask, **tfce_kw) \
            if tfce else None
    tfce_thr = tie_threshold(np.abs(tfce_obs)) if tfce else None
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
        mass_thr = np.where(size_obs > 0, tie_threshold(mass_obs), np.inf)

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
    ties = tie_labels(design, n)
    first = np.zeros(ties.max() + 1, dtype=np.int64)
    first[ties[::-1]] = np.arange(n)[::-1]
    basis = basis[first[ties]]  # tied rows carry bitwise-equal basis rows
    u_id = basis[order].T
    symmetric = two_sided or k > 1
    plans, identity_rows = [], []
    for i in range(0, n_perm, chunk_size):
        rows = np.arange(i, min(i + chunk_size, n_perm))
        u = rearranged_basis(rows, basis, index, signs, order)
        same = identity_like(u, u_id, k, symmetric)
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
            part = scan_chunk(engine, rows, plan, voxels, want_maps)
            if want_maps:
                part = maps_null(part, nbrs, mask, two_sided, tfce_kw if tfce else None, cluster_t,
                                 tfce_thr, mass_thr, grid)
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
        p_fwe=p_at_or_above(threshold, max_score), max_null=max_null, n_perm=n_perm,
        scheme=scheme, two_sided=two_sided,
        parameters=dict(n_perm=n_requested if scheme != "explicit" else n_perm, scheme=scheme, two_sided=two_sided, tfce=tfce,
                        tfce_H=tfce_H, tfce_E=tfce_E, tfce_dh=tfce_dh, connectivity=connectivity,
                        cluster_threshold=cluster_threshold, chunk_size=chunk_size,
                        exhaustive=is_exhaustive, accel=accel,
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
        result.p_tfce_fwe = p_at_or_above(tfce_thr, tfce_null)
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
        p_size[inside] = p_from_null(size_obs[inside], size_null)
        p_mass[inside] = p_at_or_above(mass_thr[inside], mass_null)
        p_mass_unc[inside] = (1.0 + mass_count[inside]) / (1.0 + n_perm)
        result.cluster_forming_threshold = cluster_t
        result.cluster_p_threshold = cluster_threshold
        result.cluster_size, result.cluster_mass = size_obs, mass_obs
        result.cluster_p_extent_fwe, result.cluster_p_mass_fwe = p_size, p_mass
        result.cluster_p_mass_uncorrected = p_mass_unc
        result.cluster_size_null, result.cluster_mass_null = size_null, mass_null
    if accel == "tail":
        accelerate_result(result)
    return result



def _variance_group_test(Y, design, contrast, variance_groups, *, skipped: list[str], accel: str,
                         **kwargs) -> PermutationResult:
    if len(np.asarray(variance_groups)) != Y.shape[0]:
        raise ValueError(f"variance_groups must have one label per map ({Y.shape[0]})")
    result = permutation_test_g(Y, design, contrast, variance_groups, **kwargs)
    if skipped:
        note = ("cluster-extent and cluster-mass inference are not computed with variance "
                "groups: max-G (and TFCE of the z(G) maps when asked) only")
        LOGGER.warning(note)
        result.warnings.append(note)
    # what ran (the spec's request stays under Parameters.inference)
    result.parameters.update(accel=accel, cluster_threshold=None)
    result.parameters.setdefault("tfce", False)
    return accelerate_result(result) if accel == "tail" else result


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
    for name in ("tfce", "cluster_size", "cluster_mass", "z"):
        setattr(result, name, full(getattr(result, name), 0.0))
    result.stat_df = full(result.stat_df, np.nan)
    n_out = int(keep.size - keep.sum())
    result.n_excluded = n_out
    note = (f"{n_out} of {keep.size} voxels have zero residual variance (constant across the "
            "maps there) and were not tested: stat 0 and p = 1 in the maps")
    LOGGER.warning(note)
    result.warnings.append(note)
    return result
