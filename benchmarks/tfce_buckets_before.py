"""Baseline for benchmarks/bench_tfce.py: the level-bucket TFCE kernel as it was before the
add-phase rework (added-neighbour bitset, skipping of neighbours adjacent to one already
joined, union-find indexed by add rank): its kernel functions verbatim; grid and height
helpers are the package's; not used by the engine.

With discrete heights (``dh="auto"`` or a step), a voxel's TFCE depends only
on its level (how many heights it reaches), so the voxels need not be sorted
by value: one counting pass puts them in buckets by level, and a weighted
union-find adds them bucket by bucket from the top level down, each bucket in
voxel order. The work arrays live over the mask's padded bounding box, where a
neighbour is a fixed offset away. Two structures are kept apart: a find
structure (path halving, no scores on it) answers "which component", and the
union tree (each absorbed root points to the root that absorbed it, with its
score's offset to that root's) holds the scores, resolved in one pass over
the absorbed roots in reverse merge order. The neighbours already added are
gathered from the find array (26 reads at 26-connectivity) without a branch
per neighbour.
"""
from __future__ import annotations

import numba
import numpy as np

from fmri_pain.glm.inference.tfce import heights, size_powers
from fmri_pain.glm.inference.tfce_buckets import VoxelGrid, _mode

__all__ = ["tfce_grid_max_count"]


@numba.njit(cache=True, nogil=True, inline="always")
def _root(v, find):
    """Root of ``v`` in the find structure, halving its path (scores are not kept on it)."""
    p = find[v]
    while p != v:
        g = find[p]
        find[v] = g
        v = g
        p = find[v]
    return v


@numba.njit(cache=True, nogil=True)
def _workspace(n_box, n_lev_max):
    """Work arrays over the box: find structure (-1: not yet added), union tree, size,
    pending level, level, accumulated score, offset to the tree parent's score; the add
    order, the absorbed roots in merge order; buckets; the gathered neighbours."""
    find = np.full(n_box, -1, dtype=np.int32)
    tree = np.empty(n_box, dtype=np.int32)
    size = np.empty(n_box, dtype=np.int32)
    pend = np.empty(n_box, dtype=np.int32)
    lvl = np.zeros(n_box, dtype=np.int32)
    acc = np.empty(n_box)
    rel = np.empty(n_box)
    order = np.empty(n_box, dtype=np.int32)
    absorbed = np.empty(n_box, dtype=np.int32)
    start = np.zeros(n_lev_max + 2, dtype=np.int64)
    nb = np.empty(32, dtype=np.int32)
    return find, tree, size, pend, lvl, acc, rel, order, absorbed, start, nb


@numba.njit(cache=True, nogil=True)
def _pass(values, sign, pos, offs, levels, cum, spow, out, ws):
    """Add ``sign * TFCE`` of the positive part of ``sign * values`` into ``out``."""
    find, tree, size, pend, lvl, acc, rel, order, absorbed, start, nb = ws
    n = values.shape[0]
    n_lev = levels.shape[0]
    inv_step = n_lev / levels[n_lev - 1]
    start[: n_lev + 2] = 0
    m = 0
    for v in range(n):
        x = sign * values[v]
        k = 0
        if x >= levels[0]:
            # number of heights <= x: a guess from the even spacing, then exact on ``levels``
            k = min(int(x * inv_step), n_lev)
            while k < n_lev and levels[k] <= x:
                k += 1
            while k > 0 and levels[k - 1] > x:
                k -= 1
        lvl[pos[v]] = k
        if k > 0:
            start[n_lev - k + 1] += 1  # buckets from the top level down
            m += 1
    if m == 0:
        return
    for b in range(1, n_lev + 1):
        start[b] += start[b - 1]
    for v in range(n):
        p = pos[v]
        k = lvl[p]
        if k > 0:
            order[start[n_lev - k]] = p
            start[n_lev - k] += 1
    k_nb = offs.shape[0]
    n_abs = 0
    for r in range(m):
        v = order[r]
        k = lvl[v]
        find[v] = v
        tree[v] = v
        size[v] = 1
        pend[v] = k
        acc[v] = 0.0
        ck = cum[k]
        # gather the neighbours added already without a branch per neighbour (about
        # half are not, in no predictable pattern)
        n_nb = 0
        for j in range(k_nb):
            u = find[v + offs[j]]
            nb[n_nb] = u
            n_nb += u >= 0
        rv = v  # root of v's component, kept current through the unions
        for j in range(n_nb):
            ru = nb[j]
            if ru == rv:
                continue
            ru = _root(ru, find)
            if ru == rv:
                continue
            # join at level k: each score first brought down to k with its old size
            acc[ru] += spow[size[ru]] * (cum[pend[ru]] - ck)
            pend[ru] = k
            acc[rv] += spow[size[rv]] * (cum[pend[rv]] - ck)
            pend[rv] = k
            if size[ru] < size[rv]:
                ru, rv = rv, ru
            tree[rv] = ru
            find[rv] = ru
            rel[rv] = acc[rv] - acc[ru]
            size[ru] += size[rv]
            absorbed[n_abs] = rv
            n_abs += 1
            rv = ru
        find[v] = rv
    # scores top-down over the union tree: a root's is its own, an absorbed node's is its
    # offset plus its tree parent's, final once the parent's is (parents are absorbed later)
    for r in range(m):
        v = order[r]
        if tree[v] == v:
            rel[v] = acc[v] + spow[size[v]] * cum[pend[v]]
    for i in range(n_abs - 1, -1, -1):
        x = absorbed[i]
        rel[x] += rel[tree[x]]
    for v in range(n):
        x = pos[v]
        if lvl[x] > 0:
            out[v] += sign * rel[x]
    for r in range(m):  # leave the find structure as found
        find[order[r]] = -1


@numba.njit(cache=True, nogil=True)
def _one(values, pos, offs, mode, dh, H, spow, two_sided, out, ws):
    """TFCE of one map into ``out`` (zeroed). mode 1: 100 heights, 2: steps of about dh."""
    out[:] = 0.0
    levels = heights(values, mode, dh, two_sided)
    n_steps = levels.shape[0]
    if n_steps == 0:
        return
    cum = np.zeros(n_steps + 1)
    for i in range(n_steps):
        cum[i + 1] = cum[i] + levels[i] ** H
    _pass(values, 1.0, pos, offs, levels, cum, spow, out, ws)
    if two_sided:
        _pass(values, -1.0, pos, offs, levels, cum, spow, out, ws)


@numba.njit(cache=True, nogil=True)
def _max_count_batch(stats, pos, offs, n_box, mode, dh, H, E, two_sided, thr, count, want_count):
    n = stats.shape[1]
    ws = _workspace(n_box, 1000)
    spow = size_powers(n, E)
    out = np.zeros(n)
    res = np.zeros(stats.shape[0])
    for i in range(stats.shape[0]):
        _one(stats[i], pos, offs, mode, dh, H, spow, two_sided, out, ws)
        mx = 0.0
        for v in range(n):
            a = abs(out[v])
            if a > mx:
                mx = a
            if want_count and a >= thr[v]:
                count[v] += 1
        res[i] = mx
    return res


def tfce_grid_max_count(stats: np.ndarray, grid: VoxelGrid, threshold: np.ndarray | None = None,
                        *, H: float = 2.0, E: float = 0.5, dh: float | str = "auto",
                        two_sided: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``max |TFCE|`` of each row of ``stats`` (n_maps, n_voxels), and per voxel the
    number of rows whose ``|TFCE|`` reaches ``threshold`` (None: not counted).

    Returns
    -------
    maxima : ndarray, shape (n_maps,)
    count : ndarray of int64, shape (n_voxels,), or None
    """
    stats = np.ascontiguousarray(stats, dtype=np.float64)
    stats = np.where(np.isfinite(stats), stats, 0.0)
    mode, step = _mode(dh)
    want = threshold is not None
    thr = np.ascontiguousarray(threshold, dtype=np.float64) if want else np.zeros(1)
    count = np.zeros(stats.shape[1], dtype=np.int64)
    res = _max_count_batch(stats, grid.pos, grid.offsets, grid.size, mode, step, float(H),
                           float(E), bool(two_sided), thr, count, want)
    return res, (count if want else None)
