"""Variance groups: the G statistic and its permutation test (PALM's ``-vg``).

When observations come from groups with different residual variances (sites of a
multi-centre trial), t and F assume one variance for all. Winkler et al. (2014,
NeuroImage 92:381, "Permutation inference for the general linear model", eqs. 5-7)
generalise the Aspin-Welch v statistic to any GLM contrast of rank ``s``:

    G = psi' C (C' (M' W M)^-1 C)^-1 C' psi / (Lambda s)

with ``psi`` the ordinary least-squares estimate, ``W`` diagonal with, for every
observation ``n`` of variance group ``g``, ``W_nn = sum_{n' in g} R_n'n' / (e_g' e_g)``
(``R = I - M M^+`` the residual-forming matrix, ``e_g`` the residuals of group ``g``:
``1 / W_nn`` is that group's residual variance), and

    Lambda = 1 + 2 (s - 1) / (s (s + 2)) * B,
    B = sum_g (1 / sum_{n in g} R_nn) (1 - sum_{n in g} W_nn / trace(W))^2.

For ``s = 1`` (a t contrast) ``G = c' psi / sqrt(c' (M' W M)^-1 c)``: Welch's t for two
groups whose variance groups are the groups, and ordinary t with one variance group
(then G = F for ``s > 1``). Its approximate degrees of freedom are
``nu = 2 (s - 1) / (3 (Lambda - 1)) = s (s + 2) / (3 B)`` (``1 / B`` for ``s = 1``: the
Welch-Satterthwaite df); G is referred to t(nu) (``s = 1``) or F(s, nu) to give the z maps,
as PALM does. The FWE p-values are over max G (max |G| two-sided); TFCE, when asked, enhances
the z(G) maps (G's df vary between voxels, z puts them on one scale) with its own max-TFCE
null. Cluster-extent and cluster-mass inference are not computed on this path.

Rearrangements keep every observation in its variance group (otherwise the groups'
variances would be exchanged): sign flips of single observations or whole blocks always
do; shuffles must stay within blocks nested in the variance groups (a free permutation
becomes a permutation within variance groups). Freedman-Lane as in the main engine:
the nuisance-residualised data are rearranged and the full model is refitted (the
nuisance part of the rearranged data does not change G, so it is left out).
"""
from __future__ import annotations

import logging

import numpy as np
from scipy import stats

from fmri_pain.glm.inference import tfce as _tfce
from fmri_pain.glm.inference.design import orthonormal_basis, partition_design
from fmri_pain.glm.inference.rearrangements import (
    SCHEMES,
    count_rearrangements,
    rearrangements_to_use,
    scheme_for_basis,
)
from fmri_pain.glm.inference.result import PermutationResult, p_at_or_above, tie_threshold

__all__ = ["g_statistic", "g_to_z", "check_groups", "permutation_test_g"]

LOGGER = logging.getLogger(__name__)

_SHUFFLES = ("permute", "within", "within+signflip")


def _group_index(variance_groups: np.ndarray) -> tuple[np.ndarray, int]:
    _, inv = np.unique(np.asarray(variance_groups), return_inverse=True)
    return inv.ravel(), int(inv.max()) + 1


def _model_basis(design: np.ndarray, contrast: np.ndarray) -> tuple[np.ndarray, int]:
    """Orthonormal basis (n, r) of the design, the contrast's space first; its rank ``s``.

    The first ``s`` columns span the contrast's data weights ``pinv(M)' C'``, the others the
    reduced model ``M null(C)``: G on this basis with the contrast ``[I_s 0]`` equals G of
    ``C`` on ``M`` (both are invariant to reparametrising the model). For ``s = 1`` the first
    column points along the weights, so the sign of G is that of ``c' psi``.
    """
    q_x, q_z, w, _ = partition_design(design, contrast)
    if q_x.shape[1] == 1 and float(w[:, 0] @ q_x[:, 0]) < 0:
        q_x = -q_x
    return np.hstack([q_x, q_z]), q_x.shape[1]


def check_groups(design: np.ndarray, variance_groups: np.ndarray) -> np.ndarray:
    """Residual degrees of freedom ``sum_{n in g} R_nn`` of every variance group.

    Raises
    ------
    ValueError
        A group has (numerically) none: its variance cannot be estimated (e.g. a site
        with one subject, whose site indicator fits it exactly).
    """
    q = orthonormal_basis(np.asarray(design, dtype=np.float64))
    r_diag = 1.0 - np.einsum("ij,ij->i", q, q)
    inv, n_groups = _group_index(variance_groups)
    traces = np.bincount(inv, weights=r_diag, minlength=n_groups)
    labels = np.unique(np.asarray(variance_groups))
    empty = [str(labels[g]) for g in range(n_groups) if traces[g] < 1e-6]
    if empty:
        raise ValueError(f"variance group(s) {', '.join(empty)} have no residual degrees of "
                         "freedom under this design: their variance cannot be estimated")
    return traces


def g_statistic(data: np.ndarray, basis: np.ndarray, s: int, variance_groups: np.ndarray, *,
                _general: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """G and its degrees of freedom nu for data of shape (..., n, n_voxels).

    Parameters
    ----------
    data : ndarray, shape (..., n, n_voxels)
        Maps (rows), possibly a stack of rearranged copies.
    basis : ndarray, shape (n, r)
        Orthonormal basis of the design, the tested space's ``s`` columns first
        (as :func:`permutation_test_g` builds it).
    s : int
        Rank of the contrast.
    variance_groups : ndarray, shape (n,)
        Group label of each row.
    _general : bool
        Use the general per-voxel solve also for two groups (tests compare both).

    Returns
    -------
    G, nu : ndarray, shape (..., n_voxels)
        0 and nan where a group's residuals are all zero.
    """
    inv, n_groups = _group_index(variance_groups)
    data = np.asarray(data, dtype=np.float64)
    lead, (n, n_vox) = data.shape[:-2], data.shape[-2:]
    y = data.reshape(-1, n, n_vox)
    r = basis.shape[1]
    coef = np.einsum("nr,pnv->prv", basis, y)
    resid = y - np.einsum("nr,prv->pnv", basis, coef)
    r_diag = 1.0 - np.einsum("nr,nr->n", basis, basis)
    traces = np.bincount(inv, weights=r_diag, minlength=n_groups)[None, :, None]
    sizes = np.bincount(inv, minlength=n_groups).astype(float)[None, :, None]
    member = np.eye(n_groups)[inv]                                          # (n, G)
    rss = np.einsum("ng,pnv->pgv", member, resid * resid)                   # (P, G, v)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = traces / rss                                # W_nn: 1 / the group's residual variance
        valid = np.all(np.isfinite(w), axis=1)                                  # (P, v)
        w = np.where(valid[:, None, :], w, 1.0)
        blocks = np.einsum("ng,ni,nj->gij", member, basis, basis)  # B_g'B_g, summing to I
        if n_groups == 2 and not _general:
            # B'WB = w2 I + (w1 - w2) A1 with A1 = V diag(lam) V' (the basis is orthonormal), so
            # its inverse is V diag(1 / (w2 + (w1 - w2) lam)) V': O(r) per voxel, no solve
            lam, vecs = np.linalg.eigh(blocks[0])
            inv_eig = 1.0 / (w[:, 1, :, None] + (w[:, 0, :, None] - w[:, 1, :, None]) * lam)
            cov = np.einsum("ij,pvj,kj->pvik", vecs[:s], inv_eig, vecs[:s])
        else:
            gram = np.einsum("pgv,gij->pvij", w, blocks)
            unit = np.zeros((r, s))
            unit[:s] = np.eye(s)
            cov = np.linalg.solve(gram, np.broadcast_to(unit, gram.shape[:-1] + (s,)))[..., :s, :]
        a = np.transpose(coef[:, :s, :], (0, 2, 1))                             # (P, v, s)
        if s == 1:
            g = a[..., 0] / np.sqrt(cov[..., 0, 0])
        else:
            quad = np.einsum("pvi,pvi->pv", a, np.linalg.solve(cov, a[..., None])[..., 0])
        share = sizes * w / np.sum(sizes * w, axis=1, keepdims=True)
        b = np.sum((1.0 - share) ** 2 / traces, axis=1)                         # (P, v)
        if s > 1:
            g = quad / ((1.0 + 2.0 * (s - 1) / (s * (s + 2)) * b) * s)
        # one group: B = 0 and G is t (F) with the residual df
        nu = (s * (s + 2) / (3.0 * b) if n_groups > 1
              else np.broadcast_to(np.round(traces.sum(), 9), b.shape))
    g = np.where(valid, g, 0.0).reshape(lead + (n_vox,))
    return g, np.where(valid, nu, np.nan).reshape(lead + (n_vox,))


def g_to_z(g: np.ndarray, nu: np.ndarray, s: int) -> np.ndarray:
    """z with the tail probability of G under t(nu) (``s = 1``, signed) or F(s, nu)."""
    g = np.asarray(g, dtype=float)
    nu = np.where(np.isfinite(nu), nu, 1.0)
    tiny = np.finfo(float).tiny  # |z| stays finite (about 37.5) where the tail underflows
    if s == 1:
        return np.sign(g) * stats.norm.isf(np.maximum(stats.t.sf(np.abs(g), nu), tiny))
    return stats.norm.isf(np.maximum(stats.f.sf(g, s, nu), tiny))


def _identity_like(index: np.ndarray, signs: np.ndarray, basis: np.ndarray, groups: np.ndarray,
                   symmetric: bool, tol: float = 1e-12) -> int:
    """Rearrangements whose G is the observed one for any data (they tie with it).

    Sufficient condition: every map lands on a row with the same (or, when the statistic is
    symmetric, every map on the negated) design basis row and the same variance group --
    the identity, the global sign flip of a two-sided test, swaps of tied rows. Counting
    them makes ``MinimumAttainableP`` the smallest p these rearrangements can give.
    """
    moved = signs[:, :, None] * basis[index]
    same_group = np.all(groups[index] == groups[None], axis=1)
    same = np.all(np.abs(moved - basis[None]) <= tol, axis=(1, 2))
    if symmetric:
        same |= np.all(np.abs(moved + basis[None]) <= tol, axis=(1, 2))
    return int(np.sum(same & same_group))


def permutation_test_g(Y: np.ndarray, design: np.ndarray, contrast: np.ndarray,
                       variance_groups: np.ndarray, *, n_perm: int = 5000, scheme: str = "auto",
                       blocks: np.ndarray | None = None, two_sided: bool = False,
                       exhaustive: bool = True, chunk_voxels: int = 4096,
                       tfce: bool = False, mask: np.ndarray | None = None, tfce_H: float = 2.0,
                       tfce_E: float = 0.5, tfce_dh: float | str | None = "auto",
                       connectivity: int = 26,
                       random_state: int | np.random.Generator | None = None
                       ) -> PermutationResult:
    """Freedman-Lane permutation test of one contrast with the G statistic and max-G FWE.

    Parameters
    ----------
    Y : ndarray, shape (n_samples, n_voxels)
    design : ndarray, shape (n_samples, n_regressors)
    contrast : ndarray, shape (n_regressors,) or (s, n_regressors)
    variance_groups : ndarray, shape (n_samples,)
        Variance group of every row (e.g. its site).
    n_perm, scheme, blocks, two_sided, exhaustive, random_state
        As :func:`~fmri_pain.glm.inference.permutation.permutation_test`. A free
        permutation (``permute``, or ``auto`` choosing it) becomes a permutation within
        the variance groups; shuffles within ``blocks`` need every block inside one group.
    chunk_voxels : int
        Voxels evaluated together (memory: about ``n_perm_chunk x chunk_voxels x r^2``).
    tfce, mask, tfce_H, tfce_E, tfce_dh, connectivity
        TFCE (:func:`~fmri_pain.glm.inference.tfce.tfce_masked`) of the z(G) maps, observed
        and rearranged, with its own max-TFCE FWE p: G's df vary between voxels, so TFCE
        integrates z, where every voxel is on one scale (``mask``: the 3-D mask of ``Y``'s
        columns).

    Returns
    -------
    PermutationResult
        ``stat`` is G, ``z`` its z map, ``stat_df`` its per-voxel df nu, ``df`` =
        ``(s, median nu)``; ``variance_groups`` records the groups.

    Raises
    ------
    ValueError
        A group without residual degrees of freedom, blocks that cross variance
        groups under a shuffling scheme, or a single rearrangement.
    """
    Y = np.asarray(Y, dtype=np.float64)
    n, n_vox = Y.shape
    design = np.asarray(design, dtype=np.float64)
    groups = np.asarray(variance_groups)
    if groups.shape != (n,):
        raise ValueError(f"variance_groups must have one label per map ({n}), got {groups.shape}")
    if design.shape[0] != n:
        raise ValueError(f"design has {design.shape[0]} rows but Y has {n} maps")
    check_groups(design, groups)
    basis, s = _model_basis(design, contrast)
    q_x, q_z = basis[:, :s], basis[:, s:]
    two_sided = bool(two_sided and s == 1)
    notes: list[str] = []
    if scheme == "auto":
        scheme = scheme_for_basis(q_x, blocks)
    if scheme not in SCHEMES or scheme == "auto":
        raise ValueError(f"unknown permutation scheme {scheme!r}; choose from {SCHEMES[:-1]}")
    if scheme == "permute":
        scheme, blocks = "within", groups
        if np.unique(groups).size > 1:
            notes.append("free permutation restricted to permutations within variance groups")
    if scheme in _SHUFFLES:
        ginv, _ = _group_index(groups)
        binv, n_blocks = _group_index(blocks)
        crossing = [b for b in range(n_blocks) if np.unique(ginv[binv == b]).size > 1]
        if crossing:
            raise ValueError(f"{len(crossing)} exchangeability block(s) span several variance "
                             "groups: shuffles within them would exchange the groups' variances")
    n_distinct = count_rearrangements(n, scheme, blocks=blocks, design=design)
    if n_distinct < 2:
        raise ValueError(f"the {scheme!r} scheme has a single rearrangement on this design")
    is_exhaustive = exhaustive and n_distinct - 1 <= n_perm
    index, signs, used = rearrangements_to_use(
        n, n_perm, scheme, n_distinct=n_distinct, exhaustive=is_exhaustive, blocks=blocks,
        design=design, random_state=random_state)
    notes += used
    n_requested, n_eval = n_perm, index.shape[0]
    n_identity = _identity_like(index, signs, basis, groups, symmetric=two_sided or s > 1)

    e = Y - q_z @ (q_z.T @ Y) if q_z.shape[1] else Y
    g_obs, nu_obs = g_statistic(e, basis, s, groups)
    score_obs = np.abs(g_obs) if two_sided else g_obs
    threshold = tie_threshold(score_obs)
    max_null = np.full(n_eval, -np.inf)
    count = np.zeros(n_vox)
    tfce_kw = dict(H=tfce_H, E=tfce_E, dh=tfce_dh, two_sided=two_sided, mask=mask)
    if tfce:
        if mask is None or int(np.sum(mask)) != n_vox:
            raise ValueError("TFCE needs the 3-D mask of the voxels (mask=)")
        nbrs = _tfce.neighbour_table(mask, connectivity)
        tfce_obs = _tfce.tfce_masked(g_to_z(g_obs, nu_obs, s), nbrs, **tfce_kw)
        tfce_thr = tie_threshold(np.abs(tfce_obs))
        tfce_null, tfce_count = np.empty(n_eval), np.zeros(n_vox)
    width = max(1, min(chunk_voxels, n_vox))
    per_perm = max(1, int(2**26 // (8 * n * width * basis.shape[1])))
    for p0 in range(0, n_eval, per_perm):
        rows = slice(p0, min(p0 + per_perm, n_eval))
        z_maps = np.empty((rows.stop - rows.start, n_vox)) if tfce else None
        for v0 in range(0, n_vox, width):
            vox = slice(v0, min(v0 + width, n_vox))
            stack = signs[rows][:, :, None] * e[:, vox][index[rows]]   # (P, n, v)
            g, nu = g_statistic(stack, basis, s, groups)
            score = np.abs(g) if two_sided else g
            max_null[rows] = np.maximum(max_null[rows], score.max(axis=1))
            count[vox] += np.sum(score >= threshold[vox], axis=0)
            if tfce:
                z_maps[:, vox] = g_to_z(g, nu, s)
        if tfce:  # TFCE of the rearranged z(G) maps, whole maps at a time
            tfce_null[rows], counted = _tfce.tfce_max_count(z_maps, nbrs, tfce_thr, **tfce_kw)
            tfce_count += counted
    z = g_to_z(g_obs, nu_obs, s)
    finite_nu = nu_obs[np.isfinite(nu_obs)]
    labels, sizes = np.unique(groups, return_counts=True)
    record = {"Statistic": "G (Winkler et al. 2014, NeuroImage 92:381; Aspin-Welch v for rank 1)",
              "Groups": {str(k): int(v) for k, v in zip(labels, sizes)},
              "DegreesOfFreedomMin": float(finite_nu.min()) if finite_nu.size else None,
              "DegreesOfFreedomMedian": float(np.median(finite_nu)) if finite_nu.size else None,
              "DegreesOfFreedomMax": float(finite_nu.max()) if finite_nu.size else None,
              "ZConversion": ("G referred to t(nu)" if s == 1 else "G referred to F(s, nu)")
              + " with nu = s (s + 2) / (3 B), per voxel"}
    for note in notes:
        LOGGER.warning(note)
    result = PermutationResult(
        stat=g_obs, stat_type="t" if s == 1 else "F",
        df=(float(s), float(np.median(finite_nu)) if finite_nu.size else float(n - basis.shape[1])),
        p_uncorrected=(1.0 + count) / (1.0 + n_eval),
        p_fwe=p_at_or_above(threshold, max_null), max_null=max_null, n_perm=n_eval,
        scheme=scheme, two_sided=two_sided,
        parameters=dict(n_perm=n_requested, scheme=scheme, two_sided=two_sided,
                        exhaustive=is_exhaustive, statistic="G",
                        random_state=random_state if isinstance(random_state, (int, type(None)))
                        else repr(random_state)),
        n_distinct=n_distinct, exhaustive=is_exhaustive, n_identity=n_identity, warnings=notes,
        z=z, stat_df=nu_obs, variance_groups=record)
    if tfce:
        result.tfce, result.tfce_max_null = tfce_obs, tfce_null
        result.p_tfce_fwe = p_at_or_above(tfce_thr, tfce_null)
        result.p_tfce_uncorrected = (1.0 + tfce_count) / (1.0 + n_eval)
        result.parameters.update(tfce=True, tfce_H=tfce_H, tfce_E=tfce_E, tfce_dh=tfce_dh,
                                 connectivity=connectivity, tfce_on="z(G)")
    return result
