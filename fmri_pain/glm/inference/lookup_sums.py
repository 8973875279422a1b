"""Many rearranged projections ``u_p' e`` at once, as sums of small precomputed tables.

A permutation test needs ``u_p' e_v`` for every rearrangement ``p`` and voxel
``v``, where ``u_p`` is the tested (or nuisance) basis vector carried through
the rearrangement. As one matrix product this costs ``n_samples``
multiply-adds per (p, v). But split the data rows into groups ``G``: on a
group, ``u_p`` takes few distinct values (at most ``2**|G|`` for sign flips,
``|G|!`` for shuffles inside a block of ``|G|`` maps), so

    u_p' e_v = sum over G of  T_G[id_G(p), v],   T_G = unique(u[:, G]) @ e[G]

and each (p, v) costs one addition per group instead of one multiply-add per
map. The tables are built per voxel tile (one small BLAS product per group)
and sized to stay in the core's L2 cache. :func:`plan_lookup` picks the
grouping with a cost model; a single group holding every row and every
rearrangement is the plain matrix product, so the plan never does worse than
that by the model's account.

Everything is float64: the sums differ from the direct product only by
rounding (about 1e-16 relative), so null distributions agree with nilearn's
to floating-point tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this keeps a numpy path
    numba = None

__all__ = ["LookupPlan", "plan_lookup", "build_tables", "scan_tile", "tile_width", "score_to_stat"]

# relative costs in the planner: one table-row addition per (rearrangement, group,
# basis row), one multiply-add per (table entry, group member, basis row) to build
_COST_LOOKUP = 1.0
_COST_BUILD = 1.0
_TABLE_BYTES = 1 << 20  # tables of one tile: about half of a 2 MB L2 cache
_LANES = 16  # independent running maxima, so the max reduction vectorises


@dataclass(frozen=True)
class LookupPlan:
    """How the rearranged basis is split into tables.

    Attributes
    ----------
    bounds : list of (start, stop)
        Data rows of each group, as ranges of the row order the plan was made for.
    vectors : list of ndarray, shape (n_entries_G, n_basis * (stop - start))
        The distinct restrictions of ``u_p`` to each group (basis-row major).
    ids : ndarray of int64, shape (n_perm, n_groups)
        Row of the stacked table each rearrangement takes from each group.
    n_basis : int
    """

    bounds: list[tuple[int, int]]
    vectors: list[np.ndarray]
    ids: np.ndarray
    n_basis: int

    @property
    def n_entries(self) -> int:
        return int(sum(v.shape[0] for v in self.vectors))


def _codes(columns: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer code of each rearrangement's values on some rows (equal values, equal code)."""
    _, inverse = np.unique(columns.reshape(columns.shape[0], -1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    return inverse, int(inverse.max()) + 1


def _greedy_groups(row_codes: list[tuple[np.ndarray, int]], cap: int
                   ) -> list[tuple[int, int, np.ndarray, int]]:
    """Consecutive row ranges, each grown while its distinct values stay <= cap."""
    groups = []
    start, (code, count) = 0, row_codes[0]
    for j in range(1, len(row_codes)):
        c_j, n_j = row_codes[j]
        joint, inverse = np.unique(code * n_j + c_j, return_inverse=True)
        if joint.size <= cap:
            code, count = inverse.ravel(), joint.size
            continue
        groups.append((start, j, code, count))
        start, (code, count) = j, row_codes[j]
    groups.append((start, len(row_codes), code, count))
    return groups


def plan_lookup(u: np.ndarray) -> LookupPlan:
    """Choose the row groups for rearranged basis vectors.

    Parameters
    ----------
    u : ndarray, shape (n_perm, n_basis, n_samples)
        ``u[p, j]`` is basis vector ``j`` carried through rearrangement ``p``
        (``u[p, j] @ e`` is its projection of the rearranged data). Rows that
        are permuted together (exchangeability blocks) should be adjacent.

    Returns
    -------
    LookupPlan
    """
    n_perm, n_basis, n = u.shape
    row_codes = [_codes(u[:, :, j]) for j in range(n)]
    best, best_cost = None, np.inf
    cap = 2
    while True:
        groups = _greedy_groups(row_codes, cap)
        cost = (_COST_LOOKUP * n_perm * len(groups) * n_basis
                + _COST_BUILD * sum(count * (stop - start) for start, stop, _, count in groups)
                * n_basis)
        if cost < best_cost:
            best, best_cost = groups, cost
        if len(groups) == 1 or cap >= n_perm:
            break
        cap *= 2
    bounds, vectors, ids, offset = [], [], [], 0
    for start, stop, code, count in best:
        first = np.zeros(count, dtype=np.int64)
        first[code[::-1]] = np.arange(n_perm)[::-1]  # first rearrangement with each code
        vectors.append(np.ascontiguousarray(u[first, :, start:stop]).reshape(count, -1))
        bounds.append((start, stop))
        ids.append(code + offset)
        offset += count
    return LookupPlan(bounds, vectors, np.ascontiguousarray(np.stack(ids, axis=1), dtype=np.int64),
                      n_basis)


def tile_width(plan: LookupPlan, n_voxels: int) -> int:
    """Voxels per tile so that one tile's tables fit the cache budget."""
    width = _TABLE_BYTES // (8 * plan.n_entries * plan.n_basis)
    return int(min(max(width, 64), max(n_voxels, 1)))


def build_tables(plan: LookupPlan, e_tile: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The stacked tables of one voxel tile, shape (n_entries, n_basis, n_tile).

    ``e_tile`` has the data rows in the plan's order.
    """
    n_basis, width = plan.n_basis, e_tile.shape[1]
    if out is None or out.size < plan.n_entries * n_basis * width:  # else reuse the buffer
        out = np.empty((plan.n_entries, n_basis, width))
    table = out.reshape(-1)[: plan.n_entries * n_basis * width].reshape(plan.n_entries, n_basis,
                                                                         width)
    offset = 0
    for (start, stop), vec in zip(plan.bounds, plan.vectors):
        size = stop - start
        count = vec.shape[0]
        # vec rows are basis-major: (count, n_basis, size)
        block = vec.reshape(count, n_basis, size)
        for j in range(n_basis):
            np.matmul(block[:, j], e_tile[start:stop], out=table[offset:offset + count, j])
        offset += count
    return table


# --------------------------------------------------------------------------- scan kernels
def _scan_numpy(table, ids, k, normalized, ss_e, df, two_sided, thr, maxes, count, stat_out,
                want_stat):
    acc = table[ids].sum(axis=1)  # (n_perm, n_basis, width)
    score, stat = _score_numpy(acc, k, normalized, ss_e, df, two_sided)
    np.maximum(maxes, score.max(axis=1), out=maxes)
    count += np.sum(score >= thr[None], axis=0)
    if want_stat:
        stat_out[...] = stat


def _score_numpy(acc, k, normalized, ss_e, df, two_sided):
    with np.errstate(divide="ignore", invalid="ignore"):
        if normalized:
            if k == 1:
                a = acc[:, 0]
                stat = a * np.sqrt(df / np.maximum(1.0 - a * a, 1e-300))
                return (np.abs(a) if two_sided else a), stat
            ss_x = np.sum(acc * acc, axis=1)
            return ss_x, ss_x / k * df / np.maximum(1.0 - ss_x, 1e-300)
        ss_x = np.sum(acc[:, :k] ** 2, axis=1)
        rss = np.maximum(ss_e[None] - ss_x - np.sum(acc[:, k:] ** 2, axis=1), 1e-300)
        stat = acc[:, 0] * np.sqrt(df / rss) if k == 1 else ss_x / k * df / rss
    return (np.abs(stat) if two_sided else stat), stat


if numba is not None:

    @numba.njit(cache=True, nogil=True)
    def _scan_numba(table, ids, k, normalized, ss_e, df, two_sided, thr, maxes, count, stat_out,
                    want_stat):
        n_perm, n_groups = ids.shape
        n_basis, width = table.shape[1], table.shape[2]
        acc = np.empty((n_basis, width))
        score = np.empty(width)
        lanes = np.empty(_LANES)
        n_full = width - width % _LANES
        for p in range(n_perm):
            for j in range(n_basis):  # sum of one table row per group
                a = acc[j]
                first = table[ids[p, 0], j]
                for v in range(width):
                    a[v] = first[v]
                for g in range(1, n_groups):
                    row = table[ids[p, g], j]
                    for v in range(width):
                        a[v] += row[v]
            sc = score
            if normalized and k == 1:
                a = acc[0]
                if want_stat:
                    for v in range(width):
                        stat_out[p, v] = a[v] * np.sqrt(df / max(1.0 - a[v] * a[v], 1e-300))
                if two_sided:
                    for v in range(width):
                        score[v] = abs(a[v])
                else:
                    sc = a  # the projection is the score
            elif normalized:
                for v in range(width):
                    ss_x = 0.0
                    for j in range(n_basis):
                        ss_x += acc[j, v] * acc[j, v]
                    score[v] = ss_x
                    if want_stat:
                        stat_out[p, v] = ss_x / k * df / max(1.0 - ss_x, 1e-300)
            else:
                for v in range(width):
                    ss_x = 0.0
                    for j in range(k):
                        ss_x += acc[j, v] * acc[j, v]
                    rss = ss_e[v] - ss_x
                    for j in range(k, n_basis):
                        rss -= acc[j, v] * acc[j, v]
                    rss = max(rss, 1e-300)
                    stat = acc[0, v] * np.sqrt(df / rss) if k == 1 else ss_x / k * df / rss
                    score[v] = abs(stat) if two_sided else stat
                    if want_stat:
                        stat_out[p, v] = stat
            # running maximum over voxels in independent lanes (vectorises), then exceedances
            best = maxes[p]
            if n_full:
                for lane in range(_LANES):
                    lanes[lane] = sc[lane]
                for v0 in range(0, n_full, _LANES):
                    for lane in range(_LANES):
                        s = sc[v0 + lane]
                        lanes[lane] = s if s > lanes[lane] else lanes[lane]
                for lane in range(_LANES):
                    best = lanes[lane] if lanes[lane] > best else best
            for v in range(n_full, width):
                best = sc[v] if sc[v] > best else best
            maxes[p] = best
            for v in range(width):
                count[v] += sc[v] >= thr[v]


def scan_tile(table: np.ndarray, ids: np.ndarray, *, k: int, normalized: bool, ss_e: np.ndarray,
              df: float, two_sided: bool, threshold: np.ndarray, maxes: np.ndarray,
              count: np.ndarray, stat_out: np.ndarray | None = None) -> None:
    """Scores of every rearrangement on one tile: running maxima and exceedance counts.

    Parameters
    ----------
    table : ndarray, shape (n_entries, n_basis, width)
        From :func:`build_tables`.
    ids : ndarray, shape (n_perm, n_groups)
        The plan's table rows of the rearrangements to scan.
    k : int
        Rows of the basis that span the tested effect (the rest are nuisance).
    normalized : bool
        The data columns have unit norm and there is no nuisance row: the
        score is the projection itself (``k == 1``) or its squared norm, a
        monotone function of t or F, so no division is needed per voxel.
    ss_e, df
        Residual sum of squares per voxel (unused when ``normalized``) and
        residual degrees of freedom.
    two_sided : bool
        Score ``|t|``.
    threshold : ndarray, shape (width,)
        Observed scores, less a relative tolerance for ties.
    maxes, count : ndarray
        Updated in place: max score per rearrangement, exceedances per voxel.
    stat_out : ndarray, shape (n_perm, width), optional
        Filled with the t or F values (for TFCE and clusters).
    """
    want = stat_out is not None
    out = stat_out if want else np.empty((1, 1))
    kernel = _scan_numba if numba is not None else _scan_numpy
    kernel(table, ids, k, normalized, ss_e, float(df), two_sided, threshold, maxes, count, out, want)


def score_to_stat(score: np.ndarray, k: int, df: float) -> np.ndarray:
    """Invert the normalised score: t from the projection (k == 1), F from its squared norm."""
    score = np.asarray(score, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if k == 1:
            return score * np.sqrt(df / np.maximum(1.0 - score * score, 1e-300))
        return score / k * df / np.maximum(1.0 - score, 1e-300)
