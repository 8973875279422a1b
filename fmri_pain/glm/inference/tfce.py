"""Threshold-free cluster enhancement and cluster measures on masked maps.

Maps are 1-D arrays over the voxels of a 3-D boolean mask (C order, as
``nilearn.masking.apply_mask`` returns them). Connectivity is encoded once per
mask as a neighbour table (:func:`neighbour_table`), so each map is processed
without rebuilding 3-D volumes.

TFCE uses a single pass over the supra-zero voxels sorted by decreasing value
with a weighted union-find: cluster sizes at every height are known at once,
and each component's contribution is added lazily when its size changes
(``acc += size**E * (C[h_prev] - C[h_now])`` with ``C`` the cumulative height
weight), so one map costs O(n log n) instead of one connected-component
labelling per threshold. The threshold-loop implementation (what nilearn
does) is kept as :func:`tfce_reference` for testing and as the fallback when
numba is not installed. At discrete heights the permutation engine runs the
level-bucket kernel of :mod:`fmri_pain.glm.inference.tfce_buckets` (no sort,
the same maps to rounding); this sorted kernel does the exact integral and is
that kernel's reference.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

try:  # numba makes the union-find passes compiled; without it we fall back to scipy loops
    import numba

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None
    _HAVE_NUMBA = False

__all__ = [
    "neighbour_table",
    "tfce_masked",
    "tfce_max",
    "tfce_max_count",
    "tfce_scores",
    "tfce_reference",
    "cluster_labels",
    "cluster_measures",
    "max_cluster_measures",
]

_CONNECTIVITY = {6: 1, 18: 2, 26: 3}


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in _CONNECTIVITY:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
    return ndimage.generate_binary_structure(3, _CONNECTIVITY[connectivity])


def neighbour_table(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """In-mask neighbours of every in-mask voxel.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
    connectivity : {6, 18, 26}
        Faces, faces + edges, or faces + edges + corners.

    Returns
    -------
    ndarray of int32, shape (n_voxels, n_offsets)
        Masked index of each neighbour, ``-1`` where the neighbour lies outside
        the mask (or the volume).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D, got shape {mask.shape}")
    struct = _structure(connectivity)
    offsets = [tuple(o) for o in np.argwhere(struct) - 1 if any(o)]
    index = np.full(np.array(mask.shape) + 2, -1, dtype=np.int64)
    index[1:-1, 1:-1, 1:-1][mask] = np.arange(int(mask.sum()))
    coords = np.argwhere(mask) + 1
    table = np.empty((len(coords), len(offsets)), dtype=np.int32)
    for j, (dx, dy, dz) in enumerate(offsets):
        table[:, j] = index[coords[:, 0] + dx, coords[:, 1] + dy, coords[:, 2] + dz]
    return table


def _levels(h_max: float, dh: float | str | None) -> np.ndarray | None:
    """Heights of the discrete TFCE sum (None = exact integral).

    ``"auto"`` uses 100 steps up to the map maximum (fslmaths, nilearn); a
    float uses ``round(h_max / dh)`` steps clipped to [10, 1000] as nilearn does.
    """
    if dh is None or (not isinstance(dh, str) and dh == 0):
        return None
    if dh == "auto":
        n_steps = 100
    else:
        n_steps = int(min(max(round(h_max / float(dh)), 10), 1000))
    return np.linspace(0.0, h_max, n_steps + 1)[1:]


# --------------------------------------------------------------------------- numba kernels
if _HAVE_NUMBA:

    @numba.njit(cache=True, nogil=True)
    def _find(v, parent, rel, stack):
        root = v
        depth = 0
        while parent[root] != root:
            stack[depth] = root
            depth += 1
            root = parent[root]
        running = 0.0
        for i in range(depth - 1, -1, -1):  # top of the path first
            node = stack[i]
            running += rel[node]
            rel[node] = running
            parent[node] = root
        return root

    @numba.njit(cache=True, nogil=True)
    def size_powers(n, E):
        """``s**E`` for sizes ``s`` = 0..n."""
        spow = np.empty(n + 1)
        for s in range(n + 1):
            spow[s] = s ** E
        return spow

    @numba.njit(cache=True, nogil=True, inline="always")
    def merge(ru, rv, k, parent, size, pend, acc, rel, cum, spow):
        """Join the components of roots ``ru`` and ``rv`` at level ``k``; returns the new root.

        Each component's score is first brought down to level ``k`` with its old
        size (``acc += size**E * (cum[pending level] - cum[k])``, ``spow[s] = s**E``);
        the absorbed root keeps its score's offset to the new root in ``rel``.
        """
        acc[ru] += spow[size[ru]] * (cum[pend[ru]] - cum[k])
        pend[ru] = k
        acc[rv] += spow[size[rv]] * (cum[pend[rv]] - cum[k])
        pend[rv] = k
        if size[ru] < size[rv]:
            ru, rv = rv, ru
        parent[rv] = ru
        rel[rv] = acc[rv] - acc[ru]
        size[ru] += size[rv]
        return ru

    @numba.njit(cache=True, nogil=True)
    def _tfce_pass(values, nbrs, levels, use_levels, H, E, out, sign):
        """Add ``sign * TFCE`` of the positive part of ``values`` into ``out``."""
        n = values.shape[0]
        idx = np.nonzero(values > 0)[0]
        m = idx.shape[0]
        if m == 0:
            return
        vals = values[idx]
        order = np.argsort(-vals, kind="mergesort")
        lvl = np.empty(n, dtype=np.int64)
        if use_levels:
            n_lev = levels.shape[0]
            cum = np.zeros(n_lev + 1)
            for i in range(n_lev):
                cum[i + 1] = cum[i] + levels[i] ** H
            for j in range(m):
                lvl[idx[j]] = np.searchsorted(levels, vals[j], side="right")
        else:  # exact integral: each voxel is its own height
            cum = np.zeros(m + 1)
            for r in range(m):
                v = idx[order[r]]
                rank = m - r  # ascending rank 1..m
                lvl[v] = rank
                cum[rank] = values[v] ** (H + 1.0) / (H + 1.0)
        parent = np.full(n, -1, dtype=np.int64)
        size = np.zeros(n, dtype=np.int64)
        spow = size_powers(m, E)
        acc = np.zeros(n)
        rel = np.zeros(n)
        pend = np.zeros(n, dtype=np.int64)
        stack = np.empty(m + 1, dtype=np.int64)
        k_nb = nbrs.shape[1]
        for r in range(m):
            v = idx[order[r]]
            k = lvl[v]
            if k == 0:  # below the first height: never counted
                break
            parent[v] = v
            size[v] = 1
            pend[v] = k
            rv = v  # root of v's component, kept current through the unions
            for j in range(k_nb):
                u = nbrs[v, j]
                if u < 0 or parent[u] < 0:
                    continue
                ru = _find(u, parent, rel, stack)
                if ru != rv:
                    rv = merge(ru, rv, k, parent, size, pend, acc, rel, cum, spow)
        for r in range(m):
            v = idx[order[r]]
            if parent[v] == v:
                acc[v] += spow[size[v]] * cum[pend[v]]
        for r in range(m):
            v = idx[order[r]]
            if parent[v] < 0:
                continue
            root = _find(v, parent, rel, stack)
            val = acc[root]
            if root != v:
                val += rel[v]
            out[v] += sign * val

    @numba.njit(cache=True, nogil=True)
    def heights(values, mode, dh, two_sided):
        """The discrete TFCE heights of a map, up to its maximum (of ``|values|`` when
        two-sided): mode 1: 100 steps, 2: steps of about ``dh``; mode 0 (exact
        integral): one placeholder. Empty when the map has nothing above 0."""
        h_max = 0.0
        for v in values:
            a = abs(v) if two_sided else v
            if a > h_max:
                h_max = a
        if h_max <= 0.0:
            return np.zeros(0)
        if mode == 0:
            return np.zeros(1)
        n_steps = 100
        if mode == 2:
            n_steps = int(min(max(round(h_max / dh), 10), 1000))
        return np.linspace(0.0, h_max, n_steps + 1)[1:]

    @numba.njit(cache=True, nogil=True)
    def _tfce_one(values, nbrs, mode, dh, H, E, two_sided, out):
        """TFCE of one map into ``out`` (zeroed). mode 0: exact, 1: 100 steps, 2: steps of dh."""
        out[:] = 0.0
        levels = heights(values, mode, dh, two_sided)
        if levels.shape[0] == 0:
            return
        _tfce_pass(values, nbrs, levels, mode != 0, H, E, out, 1.0)
        if two_sided:
            _tfce_pass(-values, nbrs, levels, mode != 0, H, E, out, -1.0)

    @numba.njit(cache=True, nogil=True)
    def _tfce_max_batch(stats, nbrs, mode, dh, H, E, two_sided):
        """max |TFCE| of every row of ``stats`` (n_maps, n_voxels)."""
        out = np.zeros(stats.shape[1])
        res = np.zeros(stats.shape[0])
        for i in range(stats.shape[0]):
            _tfce_one(np.ascontiguousarray(stats[i]), nbrs, mode, dh, H, E, two_sided, out)
            m = 0.0
            for x in out:
                if abs(x) > m:
                    m = abs(x)
            res[i] = m
        return res

    @numba.njit(cache=True, nogil=True)
    def _tfce_max_count_batch(stats, nbrs, mode, dh, H, E, two_sided, thr, count):
        """max |TFCE| of every row, and per voxel the rows with |TFCE| >= thr (into count)."""
        out = np.zeros(stats.shape[1])
        res = np.zeros(stats.shape[0])
        for i in range(stats.shape[0]):
            _tfce_one(np.ascontiguousarray(stats[i]), nbrs, mode, dh, H, E, two_sided, out)
            m = 0.0
            for v in range(out.shape[0]):
                a = abs(out[v])
                if a > m:
                    m = a
                if a >= thr[v]:
                    count[v] += 1
            res[i] = m
        return res

    @numba.njit(cache=True, nogil=True)
    def _label_supra(supra, nbrs):
        """Union-find labels (root index, -1 outside) of the True voxels."""
        n = supra.shape[0]
        parent = np.full(n, -1, dtype=np.int64)
        rel = np.zeros(n)
        stack = np.empty(n + 1, dtype=np.int64)
        size = np.zeros(n, dtype=np.int64)
        for v in range(n):
            if not supra[v]:
                continue
            parent[v] = v
            size[v] = 1
            rv = v
            for j in range(nbrs.shape[1]):
                u = nbrs[v, j]
                if u < 0 or parent[u] < 0:
                    continue
                ru = _find(u, parent, rel, stack)
                if ru == rv:
                    continue
                if size[ru] < size[rv]:
                    ru, rv = rv, ru
                parent[rv] = ru
                size[ru] += size[rv]
                rv = ru
        labels = np.full(n, -1, dtype=np.int64)
        for v in range(n):
            if parent[v] >= 0:
                labels[v] = _find(v, parent, rel, stack)
        return labels


# --------------------------------------------------------------------------- TFCE
def tfce_masked(values: np.ndarray, nbrs: np.ndarray, *, H: float = 2.0, E: float = 0.5,
                dh: float | str | None = "auto", two_sided: bool = True,
                mask: np.ndarray | None = None) -> np.ndarray:
    """TFCE of one masked map (1-D, ``n_voxels``) given its neighbour table.

    Parameters
    ----------
    values : ndarray, shape (n_voxels,)
        Statistic map over the mask voxels.
    nbrs : ndarray, shape (n_voxels, n_offsets)
        From :func:`neighbour_table`.
    H, E : float
        Height and extent exponents (Smith & Nichols 2009).
    dh : "auto", float or None
        ``"auto"``: 100 heights up to the map maximum, summed without the
        ``dh`` factor (fslmaths / nilearn convention). A float: steps of about
        ``dh``. ``None`` (or 0): the exact integral ``int_0^t e(h)^E h^H dh``.
    two_sided : bool
        Also enhance the negative part (returned as negative scores); the
        heights of both signs are taken up to ``max |values|`` as nilearn does.
    mask : ndarray of bool, optional
        Only needed for the scipy fallback when numba is missing.

    Returns
    -------
    ndarray of float64, shape (n_voxels,)
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    out = np.zeros(values.shape[0], dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, 0.0)
    if not _HAVE_NUMBA:
        if mask is None:
            raise RuntimeError("numba is not installed: pass mask= to use the scipy fallback")
        return tfce_reference(values, mask, H=H, E=E, dh=dh, two_sided=two_sided,
                              connectivity=_connectivity_of(nbrs))
    mode, step = _mode(dh)
    _tfce_one(values, nbrs, mode, step, float(H), float(E), bool(two_sided), out)
    return out


def _mode(dh: float | str | None) -> tuple[int, float]:
    if dh is None or (not isinstance(dh, str) and dh == 0):
        return 0, 0.0
    if dh == "auto":
        return 1, 0.0
    if isinstance(dh, str) or dh < 0:
        raise ValueError(f"dh must be 'auto', a positive float or None, got {dh!r}")
    return 2, float(dh)


def tfce_max(stats: np.ndarray, nbrs: np.ndarray, *, H: float = 2.0, E: float = 0.5,
             dh: float | str | None = "auto", two_sided: bool = True,
             mask: np.ndarray | None = None) -> np.ndarray:
    """``max |TFCE|`` of each row of ``stats`` (n_maps, n_voxels), in one compiled call."""
    stats = np.ascontiguousarray(stats, dtype=np.float64)
    if not _HAVE_NUMBA:
        return np.array([np.abs(tfce_masked(s, nbrs, H=H, E=E, dh=dh, two_sided=two_sided,
                                            mask=mask)).max() for s in stats])
    stats = np.where(np.isfinite(stats), stats, 0.0)
    mode, step = _mode(dh)
    return _tfce_max_batch(stats, nbrs, mode, step, float(H), float(E), bool(two_sided))


def tfce_max_count(stats: np.ndarray, nbrs: np.ndarray, threshold: np.ndarray, *,
                   H: float = 2.0, E: float = 0.5, dh: float | str | None = "auto",
                   two_sided: bool = True, mask: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`tfce_max` of each row, and per voxel the number of rows whose ``|TFCE|``
    reaches ``threshold`` (n_voxels,): the uncorrected TFCE exceedances."""
    stats = np.ascontiguousarray(stats, dtype=np.float64)
    threshold = np.ascontiguousarray(threshold, dtype=np.float64)
    if not _HAVE_NUMBA:
        maps = np.abs(np.array([tfce_masked(s, nbrs, H=H, E=E, dh=dh, two_sided=two_sided,
                                            mask=mask) for s in stats])).reshape(-1, stats.shape[1])
        return maps.max(axis=1, initial=0.0), np.sum(maps >= threshold[None], axis=0)
    stats = np.where(np.isfinite(stats), stats, 0.0)
    mode, step = _mode(dh)
    count = np.zeros(stats.shape[1], dtype=np.int64)
    res = _tfce_max_count_batch(stats, nbrs, mode, step, float(H), float(E), bool(two_sided),
                                threshold, count)
    return res, count


def _connectivity_of(nbrs: np.ndarray) -> int:
    return {6: 6, 18: 18, 26: 26}[nbrs.shape[1]]


def tfce_scores(stat3d: np.ndarray, mask: np.ndarray, *, H: float = 2.0, E: float = 0.5,
                dh: float | str | None = "auto", connectivity: int = 26,
                two_sided: bool = True) -> np.ndarray:
    """TFCE of a 3-D statistic map inside ``mask`` (single union-find pass).

    See :func:`tfce_masked` for the parameters. Returns a 3-D float64 array
    (zero outside the mask).
    """
    mask = np.asarray(mask, dtype=bool)
    stat3d = np.asarray(stat3d)
    if stat3d.shape != mask.shape:
        raise ValueError(f"stat map shape {stat3d.shape} differs from mask shape {mask.shape}")
    nbrs = neighbour_table(mask, connectivity)
    out = np.zeros(mask.shape)
    out[mask] = tfce_masked(stat3d[mask], nbrs, H=H, E=E, dh=dh, two_sided=two_sided, mask=mask)
    return out


def tfce_reference(values: np.ndarray, mask: np.ndarray, *, H: float = 2.0, E: float = 0.5,
                   dh: float | str | None = "auto", two_sided: bool = True,
                   connectivity: int = 26) -> np.ndarray:
    """Threshold-loop TFCE (one ``scipy.ndimage.label`` per height).

    Same conventions as :func:`tfce_masked`; ``values`` is 1-D over ``mask``.
    The exact-integral mode (``dh=None``) is not available here.
    """
    mask = np.asarray(mask, dtype=bool)
    struct = _structure(connectivity)
    values = np.asarray(values, dtype=np.float64)
    h_max = float(np.max(np.abs(values)) if two_sided else np.max(values, initial=0.0))
    out = np.zeros(values.shape[0])
    levels = _levels(h_max, dh) if h_max > 0 else None
    if levels is None:
        if h_max > 0:
            raise ValueError("tfce_reference needs discrete heights (dh='auto' or a float)")
        return out
    vol = np.zeros(mask.shape)
    for sign in ((1.0, -1.0) if two_sided else (1.0,)):
        vol[mask] = sign * values
        for h in levels:
            labels, _ = ndimage.label(vol >= h, struct)
            lab = labels[mask]
            counts = np.bincount(lab)
            hit = lab > 0
            out[hit] += sign * counts[lab[hit]] ** E * h**H
    return out


# --------------------------------------------------------------------------- clusters
def cluster_labels(supra: np.ndarray, nbrs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Connected components of the True voxels: a label per voxel, -1 elsewhere.

    Labels are arbitrary non-negative integers (a representative voxel index).
    """
    supra = np.ascontiguousarray(supra, dtype=bool)
    if _HAVE_NUMBA:
        return _label_supra(supra, nbrs)
    if mask is None:
        raise RuntimeError("numba is not installed: pass mask= to use the scipy fallback")
    vol = np.zeros(mask.shape, dtype=bool)
    vol[mask] = supra
    labels, _ = ndimage.label(vol, _structure(_connectivity_of(nbrs)))
    return labels[mask].astype(np.int64) - 1


def cluster_measures(values: np.ndarray, threshold: float, nbrs: np.ndarray, *,
                     two_sided: bool = True, mask: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel size and mass of the cluster each voxel belongs to.

    Clusters are formed by ``values > threshold`` (and, two-sided,
    ``values < -threshold`` separately); mass is ``sum(|value| - threshold)``
    over the cluster, as in nilearn. Voxels outside clusters get 0.
    """
    values = np.asarray(values, dtype=np.float64)
    size = np.zeros(values.shape[0])
    mass = np.zeros(values.shape[0])
    for sign in ((1.0, -1.0) if two_sided else (1.0,)):
        x = sign * values
        supra = x > threshold
        if not supra.any():
            continue
        lab = cluster_labels(supra, nbrs, mask)
        hit = lab >= 0
        counts = np.bincount(lab[hit], minlength=values.shape[0])
        masses = np.bincount(lab[hit], weights=x[hit] - threshold, minlength=values.shape[0])
        size[hit] = counts[lab[hit]]
        mass[hit] = masses[lab[hit]]
    return size, mass


def max_cluster_measures(values: np.ndarray, threshold: float, nbrs: np.ndarray, *,
                         two_sided: bool = True, mask: np.ndarray | None = None
                         ) -> tuple[float, float]:
    """Largest cluster size and mass of a map (0, 0 when nothing survives)."""
    size, mass = cluster_measures(values, threshold, nbrs, two_sided=two_sided, mask=mask)
    return float(size.max(initial=0.0)), float(mass.max(initial=0.0))
