"""Baseline for benchmarks/bench_tfce.py: the level-bucket TFCE kernel as it was before its
levels moved out of the box (6646bb1: each voxel's level kept in a box-sized array, read back
through the voxel's box position when bucketing, adding and scoring): its kernel functions
verbatim; grid, height and argument helpers are the package's; not used by the engine.

See :mod:`fmri_pain.glm.inference.tfce_buckets` for the method (level buckets, the find
structure and union tree, the added-neighbour bitset).
"""
from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from fmri_pain.glm.inference.tfce import heights, size_powers
from fmri_pain.glm.inference.tfce_buckets import VoxelGrid, _kernel_grid, _mode

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
    """Work arrays over the box: the added bitset (64 voxels a word, spare words at the end),
    find structure (-1: not yet added), union tree, size, pending level, level, accumulated
    score, offset to the tree parent's score; the add order, the absorbed roots in merge
    order; buckets; the neighbours to look up."""
    added = np.zeros(n_box // 64 + 3, dtype=np.uint64)
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
    return added, find, tree, size, pend, lvl, acc, rel, order, absorbed, start, nb


@numba.njit(cache=True, nogil=True, inline="always")
def _buckets(values, sign, pos, levels, lvl, order, start):
    """Each voxel's level into ``lvl``, the voxels above the first height into ``order``
    bucket by bucket from the top level down; returns how many there are."""
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
        return 0
    for b in range(1, n_lev + 1):
        start[b] += start[b - 1]
    for v in range(n):
        p = pos[v]
        k = lvl[p]
        if k > 0:
            order[start[n_lev - k]] = p
            start[n_lev - k] += 1
    return m


@numba.njit(cache=True, nogil=True, inline="always")
def _join(ru, rv, k, ck, find, tree, size, pend, acc, rel, cum, spow):
    """Join the components of roots ``ru`` and ``rv`` at level ``k`` (``ck = cum[k]``);
    returns the absorbed root (its tree parent is the new root)."""
    # each score first brought down to k with its old size
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
    return rv


@numba.njit(cache=True, nogil=True, inline="always")
def _new_component(v, k, find, tree, size, pend, acc):
    """Voxel ``v`` added at level ``k`` as a component of its own."""
    find[v] = v
    tree[v] = v
    size[v] = 1
    pend[v] = k
    acc[v] = 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _join_neighbours(v, k, n_nb, n_abs, ws, cum, spow):
    """Join the new voxel ``v`` (level ``k``) with the components of the ``n_nb`` added
    neighbours gathered in ``ws``'s ``nb``; returns the count of absorbed roots."""
    added, find, tree, size, pend, lvl, acc, rel, order, absorbed, start, nb = ws
    ck = cum[k]
    rv = v  # root of v's component, kept current through the unions
    for j in range(n_nb):
        ru = nb[j]
        if ru == rv:
            continue
        ru = _root(ru, find)
        if ru == rv:
            continue
        absorbed[n_abs] = _join(ru, rv, k, ck, find, tree, size, pend, acc, rel, cum, spow)
        rv = tree[absorbed[n_abs]]
        n_abs += 1
    find[v] = rv
    return n_abs


@numba.njit(cache=True, nogil=True, inline="always")
def _scores(sign, pos, m, n_abs, ws, cum, spow, out):
    """Every added voxel's score into ``out`` (times ``sign``); resets the find structure."""
    added, find, tree, size, pend, lvl, acc, rel, order, absorbed, start, nb = ws
    # top-down over the union tree: a root's score is its own, an absorbed node's is its
    # offset plus its tree parent's, final once the parent's is (parents are absorbed later)
    for r in range(m):
        v = order[r]
        if tree[v] == v:
            rel[v] = acc[v] + spow[size[v]] * cum[pend[v]]
    for i in range(n_abs - 1, -1, -1):
        x = absorbed[i]
        rel[x] += rel[tree[x]]
    for v in range(pos.shape[0]):
        x = pos[v]
        if lvl[x] > 0:
            out[v] += sign * rel[x]
    for r in range(m):  # leave the find structure as found
        find[order[r]] = -1


@numba.njit(cache=True, nogil=True)
def _pass_bits(values, sign, g, levels, cum, spow, out, ws):
    """Add ``sign * TFCE`` of the positive part of ``sign * values`` into ``out``, the added
    neighbours from the bitset (18- and 26-connectivity); ``g``: see :func:`_kernel_grid`."""
    pos, cube, rows, singles, nbr_bits, adjacent, first, offs, by_bits = g
    added, find, tree, size, pend, lvl, acc, rel, order, absorbed, start, nb = ws
    m = _buckets(values, sign, pos, levels, lvl, order, start)
    one = np.uint64(1)
    n_abs = 0
    for r in range(m):
        v = order[r]
        k = lvl[v]
        _new_component(v, k, find, tree, size, pend, acc)
        # the added voxels of the 3x3x3 cube as a 27-bit pattern, from the bitset (in
        # cache, unlike the find array), three bits a row
        pat = 0
        for i in range(rows.shape[0]):
            ri = rows[i]
            q = v + cube[3 * ri]
            w = q >> 6
            o = np.uint64(q & 63)
            bits3 = (added[w] >> o) | ((added[w + 1] << one) << (np.uint64(63) - o))
            pat |= np.int64(bits3 & np.uint64(7)) << (3 * ri)
        for i in range(singles.shape[0]):
            b = singles[i]
            q = v + cube[b]
            pat |= np.int64((added[q >> 6] >> np.uint64(q & 63)) & one) << b
        pat &= nbr_bits
        # Two added voxels that are neighbours are in one component already (the later one
        # joined the earlier when it was added), so once a neighbour is looked up, the added
        # neighbours adjacent to it are in the same component: they are not looked up.
        # Faces first, as they rule out the most.
        n_nb = 0
        while pat != 0:
            f = pat & first
            j = trailing_zeros(f if f != 0 else pat)
            pat &= ~adjacent[j] & ~(1 << j)
            nb[n_nb] = find[v + cube[j]]
            n_nb += 1
        added[v >> 6] |= one << np.uint64(v & 63)
        n_abs = _join_neighbours(v, k, n_nb, n_abs, ws, cum, spow)
    _scores(sign, pos, m, n_abs, ws, cum, spow, out)
    added[:] = 0  # leave the bitset as found


@numba.njit(cache=True, nogil=True)
def _pass_direct(values, sign, g, levels, cum, spow, out, ws):
    """As :func:`_pass_bits`, the added neighbours read from the find array (6-connectivity:
    no two neighbours are adjacent, nothing to skip)."""
    pos, offs = g[0], g[7]
    added, find, tree, size, pend, lvl, acc, rel, order, absorbed, start, nb = ws
    m = _buckets(values, sign, pos, levels, lvl, order, start)
    k_nb = offs.shape[0]
    n_abs = 0
    for r in range(m):
        v = order[r]
        k = lvl[v]
        _new_component(v, k, find, tree, size, pend, acc)
        # gather the neighbours added already without a branch per neighbour (about half
        # are not, in no predictable pattern)
        n_nb = 0
        for j in range(k_nb):
            u = find[v + offs[j]]
            nb[n_nb] = u
            n_nb += u >= 0
        n_abs = _join_neighbours(v, k, n_nb, n_abs, ws, cum, spow)
    _scores(sign, pos, m, n_abs, ws, cum, spow, out)


@numba.njit(cache=True, nogil=True)
def _one(values, g, mode, dh, H, spow, two_sided, out, ws):
    """TFCE of one map into ``out`` (zeroed). mode 1: 100 heights, 2: steps of about dh."""
    out[:] = 0.0
    levels = heights(values, mode, dh, two_sided)
    n_steps = levels.shape[0]
    if n_steps == 0:
        return
    cum = np.zeros(n_steps + 1)
    for i in range(n_steps):
        cum[i + 1] = cum[i] + levels[i] ** H
    if g[8]:
        _pass_bits(values, 1.0, g, levels, cum, spow, out, ws)
        if two_sided:
            _pass_bits(values, -1.0, g, levels, cum, spow, out, ws)
    else:
        _pass_direct(values, 1.0, g, levels, cum, spow, out, ws)
        if two_sided:
            _pass_direct(values, -1.0, g, levels, cum, spow, out, ws)


@numba.njit(cache=True, nogil=True)
def _max_count_batch(stats, g, n_box, mode, dh, H, E, two_sided, thr, count, want_count):
    n = stats.shape[1]
    ws = _workspace(n_box, 1000)
    spow = size_powers(n, E)
    out = np.zeros(n)
    res = np.zeros(stats.shape[0])
    for i in range(stats.shape[0]):
        _one(stats[i], g, mode, dh, H, spow, two_sided, out, ws)
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
    res = _max_count_batch(stats, _kernel_grid(grid), grid.size, mode, step, float(H), float(E),
                           bool(two_sided), thr, count, want)
    return res, (count if want else None)
