"""Scanning chunks of rearrangements: Freedman-Lane statistics, maxima, exceedances.

One work item of :func:`~fmri_pain.glm.inference.permutation.permutation_test`
is a chunk of rearrangements over a voxel range: their statistics come from
table lookups (:mod:`fmri_pain.glm.inference.lookup_sums`), and with TFCE or
clusters their whole maps are enhanced (:mod:`fmri_pain.glm.inference.tfce`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmri_pain.glm.inference import lookup_sums as lookup
from fmri_pain.glm.inference import tfce as _tfce
from fmri_pain.glm.inference.tfce_buckets import VoxelGrid, tfce_grid_max_count

__all__ = ["ScanData", "stat_from_parts", "rearranged_basis", "identity_like", "scan_chunk",
           "maps_null"]


def stat_from_parts(a: np.ndarray, b2: np.ndarray, ss_e: np.ndarray, df: float, k: int
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


def rearranged_basis(rows: np.ndarray, basis: np.ndarray, index: np.ndarray, signs: np.ndarray,
                      order: np.ndarray) -> np.ndarray:
    """``u[p, j]`` with ``u[p, j] @ e = basis[:, j]' P_p e``, columns in ``order``: (n_chunk, m, n)."""
    n_chunk, (n, n_basis) = rows.size, basis.shape
    u = np.zeros((n_chunk, n_basis, n))
    p_idx = np.arange(n_chunk)[:, None, None]
    j_idx = np.arange(n_basis)[None, :, None]
    u[p_idx, j_idx, index[rows][:, None, :]] = (signs[rows][:, :, None] * basis[None]).transpose(0, 2, 1)
    return u[:, :, order]


@dataclass
class ScanData:
    """What every chunk shares: data in plan order, observed scores, statistic options."""

    e: np.ndarray          # (n, n_vox) residualised data, rows in block order (unit columns if normalized)
    ss_e: np.ndarray
    k: int
    normalized: bool
    df: float
    two_sided: bool
    threshold: np.ndarray  # observed scores less a tie tolerance


def scan_chunk(engine: ScanData, rows: np.ndarray, plan: lookup.LookupPlan, voxels: slice,
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


def maps_null(part: dict, nbrs: np.ndarray, mask: np.ndarray, two_sided: bool,
              tfce_kw: dict | None, cluster_t: float | None, tfce_thr: np.ndarray | None,
              mass_thr: np.ndarray | None, grid: VoxelGrid | None = None) -> dict:
    """TFCE and cluster maxima of every rearranged statistic map of a chunk, and the
    voxels' exceedances of the observed TFCE and cluster mass (same thresholds).

    With a ``grid``, TFCE uses the level-bucket kernel
    (:mod:`fmri_pain.glm.inference.tfce_buckets`), otherwise the sorted one.
    """
    stat_full = part.pop("stat")
    if tfce_kw is not None and grid is not None:
        part["tfce_max"], part["tfce_count"] = tfce_grid_max_count(
            stat_full, grid, tfce_thr, two_sided=two_sided, **tfce_kw)
    elif tfce_kw is not None:
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


def identity_like(u: np.ndarray, u_id: np.ndarray, k: int, symmetric: bool,
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

