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
The levels are the exception: they are kept per masked voxel in mask order,
written and read in sequence, and the add loop takes a voxel's level from its
bucket, so no box-sized level array is scattered to and gathered from.

Two structures are kept apart: a find structure (path halving, no scores on
it) answers "which component", and the union tree (each absorbed root points
to the root that absorbed it, with its score's offset to that root's) holds
the scores. Every voxel's TFCE is then one pass over the absorbed roots in
reverse merge order (score = offset + tree parent's score), not a walk up
each voxel's path.

Which neighbours of a voxel being added are there already: at 18- and
26-connectivity they are read from a bitset of the added voxels over the box
(one bit a voxel, small enough to stay in cache, where the find array is
not), as a 27-bit pattern of the 3x3x3 cube, three bits a row. Two added
voxels that are neighbours are always in one component (the later one joined
the earlier when it was added), so once one neighbour has been looked up, the
added neighbours adjacent to it need not be: their bits are cleared (faces
first, as they are adjacent to the most), and the find array is read only
for the rest, about two a voxel instead of up to 26. At 6-connectivity no
two neighbours are adjacent, nothing can be skipped, and the six find entries
are read directly, without a branch per neighbour.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

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
    cube: np.ndarray
    """Flat offsets of the 27 voxels of the 3x3x3 cube around a voxel, ``(dz, dy, dx)`` in
    C order: bit ``b`` of a neighbourhood pattern stands for ``cube[b]`` (int64, 27)."""
    rows: np.ndarray
    """Indices (0-8) of the cube's 3-voxel rows ``(dz, dy)`` that hold two neighbours or
    more, read three bits at once: row ``i`` gives the pattern bits ``3 i`` to ``3 i + 2``
    (int64)."""
    singles: np.ndarray
    """Pattern bits of the neighbours in the other rows, read one at a time (int64)."""
    nbr_bits: int
    """Pattern bits of the neighbours under the connectivity."""
    adjacent: np.ndarray
    """Per cube bit, the pattern bits of the neighbours adjacent to it (int64, 27)."""
    first: int
    """Pattern bits of the neighbours with the most adjacent neighbours (the faces at 18- and
    26-connectivity), visited first as they rule out the most others."""


def voxel_grid(mask: np.ndarray, connectivity: int = 26) -> VoxelGrid:
    """Neighbour addressing through the mask's bounding box padded by one voxel.

    The masked neighbours of voxel ``v`` are the box positions
    ``pos[v] + offsets`` that hold a masked voxel; the kernels keep their work
    arrays over the box, where neighbours are close in memory and voxels
    outside the mask are never set (unlike the rows of a neighbour table,
    which cost an extra indirection per neighbour). The neighbourhood is also
    described as a 27-bit pattern over the 3x3x3 cube (``cube``, ``rows``,
    ``nbr_bits``, ``adjacent``, ``first``), for kernels that gather it from a
    bitset over the box.
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
    cube = np.array(list(np.ndindex(3, 3, 3))) - 1
    is_nbr = np.abs(cube).sum(1) <= rank
    is_nbr[13] = False  # the voxel itself
    diff = np.abs(cube[:, None] - cube[None])
    adj = ((diff.sum(2) <= rank) & (diff.max(2) <= 1) & is_nbr[None]
           & ~np.eye(27, dtype=bool))
    adj_bits = (adj * (1 << np.arange(27))).sum(1).astype(np.int64)
    n_adj = adj[is_nbr].sum(1)
    first = sum(1 << int(b) for b in np.flatnonzero(is_nbr) if adj[b].sum() == n_adj.max())
    in_row = is_nbr.reshape(9, 3).sum(1)
    rows = np.flatnonzero(in_row >= 2).astype(np.int64)
    singles = np.flatnonzero(is_nbr & np.repeat(in_row < 2, 3)).astype(np.int64)
    return VoxelGrid(pos, (cube[is_nbr] @ strides).astype(np.int64), int(padded.size),
                     (cube @ strides).astype(np.int64), rows, singles,
                     int((is_nbr * (1 << np.arange(27))).sum()), adj_bits, int(first))


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
def _workspace(n_box, n_vox, n_lev_max):
    """Work arrays over the box: the added bitset (64 voxels a word, spare words at the end),
    find structure (-1: not yet added), union tree, size, pending level; per masked voxel
    (in mask order, read in sequence) its level; over the box again the accumulated score
    and the offset to the tree parent's score; the add order, the absorbed roots in merge
    order; buckets; the neighbours to look up."""
    added = np.zeros(n_box // 64 + 3, dtype=np.uint64)
    find = np.full(n_box, -1, dtype=np.int32)
    tree = np.empty(n_box, dtype=np.int32)
    size = np.empty(n_box, dtype=np.int32)
    pend = np.empty(n_box, dtype=np.int32)
    lvl = np.zeros(n_vox, dtype=np.int32)
    acc = np.empty(n_box)
    rel = np.empty(n_box)
    order = np.empty(n_box, dtype=np.int32)
    absorbed = np.empty(n_box, dtype=np.int32)
    start = np.zeros(n_lev_max + 2, dtype=np.int64)
    nb = np.empty(32, dtype=np.int32)
    return added, find, tree, size, pend, lvl, acc, rel, order, absorbed, start, nb


@numba.njit(cache=True, nogil=True, inline="always")
def _buckets(values, sign, pos, levels, lvl, order, start):
    """Each voxel's level into ``lvl`` (mask order), the box positions of the voxels above the
    first height into ``order`` bucket by bucket from the top level down; returns how many
    there are. ``start[b]`` is left at the end of bucket ``b`` (level ``n_levels - b``)."""
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
        lvl[v] = k
        if k > 0:
            start[n_lev - k + 1] += 1  # buckets from the top level down
            m += 1
    if m == 0:
        return 0
    for b in range(1, n_lev + 1):
        start[b] += start[b - 1]
    for v in range(n):
        k = lvl[v]
        if k > 0:
            order[start[n_lev - k]] = pos[v]
            start[n_lev - k] += 1
    return m


@numba.njit(cache=True, nogil=True, inline="always")
def _bucket_of(r, bucket, start):
    """The bucket of add rank ``r`` (level ``n_levels - bucket``), from that of rank ``r - 1``:
    :func:`_buckets` leaves ``start[b]`` at the end of bucket ``b``, so no level is looked up."""
    while r >= start[bucket]:
        bucket += 1
    return bucket


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
        if lvl[v] > 0:
            out[v] += sign * rel[pos[v]]
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
    n_lev = levels.shape[0]
    bucket = 0
    for r in range(m):
        bucket = _bucket_of(r, bucket, start)
        k = n_lev - bucket
        v = order[r]
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
    n_lev = levels.shape[0]
    bucket = 0
    for r in range(m):
        bucket = _bucket_of(r, bucket, start)
        k = n_lev - bucket
        v = order[r]
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
def _one_map(values, g, n_box, mode, dh, H, E, two_sided):
    n = values.shape[0]
    out = np.zeros(n)
    _one(values, g, mode, dh, H, size_powers(n, E), two_sided, out, _workspace(n_box, n, 1000))
    return out


@numba.njit(cache=True, nogil=True)
def _max_count_batch(stats, g, n_box, mode, dh, H, E, two_sided, thr, count, want_count):
    n = stats.shape[1]
    ws = _workspace(n_box, n, 1000)
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


def _kernel_grid(grid: VoxelGrid) -> tuple:
    """The grid as the kernels take it; the bitset gather at 18- and 26-connectivity."""
    return (grid.pos, grid.cube, grid.rows, grid.singles, np.int64(grid.nbr_bits),
            grid.adjacent, np.int64(grid.first), grid.offsets, grid.offsets.shape[0] > 6)


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
    return _one_map(values, _kernel_grid(grid), grid.size, mode, step, float(H), float(E),
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
    res = _max_count_batch(stats, _kernel_grid(grid), grid.size, mode, step, float(H), float(E),
                           bool(two_sided), thr, count, want)
    return res, (count if want else None)
