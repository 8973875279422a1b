"""TFCE at discrete heights by level buckets: the fast kernel of the permutation engine.

With discrete heights (``dh="auto"`` or a step), a voxel's TFCE depends only
on its level (how many heights it reaches), so the voxels need not be sorted
by value: one counting pass puts them in buckets by level, and a weighted
union-find (the scheme of :mod:`fmri_pain.glm.inference.tfce`'s ``merge``)
adds them bucket by bucket from the top level down, each bucket in voxel
order. Voxels of one level join at the same height, so their order inside a
bucket changes the result only by rounding (about 1e-14 relative). The work
arrays live over the mask's padded bounding box (:func:`voxel_grid`), where a
neighbour is a fixed offset away and is read with one load; they are
allocated once per batch of maps and only the entries a map touched are reset.

Two structures are kept apart: a find structure (path halving, no scores on
it) answers "which component", and the union tree (each absorbed root points
to the root that absorbed it, with its score's offset to that root's) holds
the scores. Every voxel's TFCE is then one pass over the absorbed roots in
reverse merge order (score = offset + tree parent's score), not a walk up
each voxel's path. The neighbours already added are gathered without a
branch per neighbour, as about half of them are not added yet, in no pattern
a branch predictor could learn.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from fmri_pain.glm.inference.tfce import heights, size_powers

__all__ = ["VoxelGrid", "voxel_grid", "buckets_apply", "tfce_grid", "tfce_grid_max_count"]


class VoxelGrid(NamedTuple):
    """The mask's voxels addressed in its padded bounding box (see :func:`voxel_grid`)."""

    pos: np.ndarray
    """Flat position of each masked voxel in the padded box (int64, n_voxels)."""
    offsets: np.ndarray
    """Flat offsets of the neighbours (int64)."""
    size: int
    """Voxels of the padded box."""


def voxel_grid(mask: np.ndarray, connectivity: int = 26) -> VoxelGrid:
    """Neighbour addressing through the mask's bounding box padded by one voxel.

    The masked neighbours of voxel ``v`` are the box positions
    ``pos[v] + offsets`` that hold a masked voxel; the kernels keep their work
    arrays over the box, where neighbours are close in memory and voxels
    outside the mask are never set (unlike the rows of a neighbour table,
    which cost an extra indirection per neighbour).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D, got shape {mask.shape}")
    if connectivity not in (6, 18, 26):
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
    if mask.any():
        lo = np.argwhere(mask).min(0)
        hi = np.argwhere(mask).max(0) + 1
        mask = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    padded = np.pad(mask, 1)
    pos = np.flatnonzero(padded.ravel()).astype(np.int64)
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
    rank = {6: 1, 18: 2, 26: 3}[connectivity]
    steps = np.array([o for o in np.ndindex(3, 3, 3) if 0 < np.abs(np.array(o) - 1).sum() <= rank]) - 1
    return VoxelGrid(pos, (steps @ strides).astype(np.int64), int(padded.size))


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
def _one_map(values, pos, offs, n_box, mode, dh, H, E, two_sided):
    out = np.zeros(values.shape[0])
    _one(values, pos, offs, mode, dh, H, size_powers(values.shape[0], E), two_sided, out,
         _workspace(n_box, 1000))
    return out


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


def buckets_apply(dh: float | str | None) -> bool:
    """Whether the heights ``dh`` are discrete (the bucket kernel applies)."""
    return dh == "auto" or (not isinstance(dh, str) and dh is not None and dh > 0)


def _mode(dh: float | str) -> tuple[int, float]:
    if dh == "auto":
        return 1, 0.0
    if isinstance(dh, str) or dh is None or not dh > 0:
        raise ValueError(f"the bucket kernel needs discrete heights (dh='auto' or a positive "
                         f"float), got {dh!r}")
    return 2, float(dh)


def tfce_grid(values: np.ndarray, grid: VoxelGrid, *, H: float = 2.0, E: float = 0.5,
              dh: float | str = "auto", two_sided: bool = True) -> np.ndarray:
    """TFCE of one masked map (1-D over the mask voxels) at discrete heights.

    Same conventions and result (to rounding) as
    :func:`fmri_pain.glm.inference.tfce.tfce_masked`; ``dh`` must be
    ``"auto"`` or a positive step (the exact integral needs the sorted kernel).

    Returns
    -------
    ndarray of float64, shape (n_voxels,)
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    values = np.where(np.isfinite(values), values, 0.0)
    mode, step = _mode(dh)
    return _one_map(values, grid.pos, grid.offsets, grid.size, mode, step, float(H), float(E),
                    bool(two_sided))


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
