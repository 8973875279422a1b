"""The model's spaces for a permutation test: tested effect, nuisance, residual checks."""
from __future__ import annotations

import numpy as np
from scipy import linalg

__all__ = ["partition_design", "orthonormal_basis", "drop_invariant_nuisance", "nonzero_variance"]


def orthonormal_basis(m: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis (n, rank) of the columns of ``m``."""
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
    q_x = orthonormal_basis(w)
    if q_x.shape[1] == 0:
        raise ValueError("contrast is zero on this design")
    c_null = linalg.null_space(c)
    q_z = orthonormal_basis(x @ c_null) if c_null.size else np.zeros((x.shape[0], 0))
    return q_x, q_z, w, rank


def drop_invariant_nuisance(q_z: np.ndarray, blocks: np.ndarray | None, scheme: str) -> np.ndarray:
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
    q_b = orthonormal_basis(np.eye(inv.max() + 1)[inv])
    u, s, _ = linalg.svd(q_z.T @ q_b, full_matrices=True)
    n_common = int(np.sum(s > 1 - 1e-9))
    if scheme != "within" and n_common < q_b.shape[1]:
        return q_z
    return q_z @ u[:, n_common:]


def nonzero_variance(Y: np.ndarray, design: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Voxels whose full-model residual sum of squares is above ``tol`` of their
    total sum of squares; the others (maps constant across the design there,
    all-zero voxels) would give t = c / 0, a huge t from rounding."""
    q_full = orthonormal_basis(design)
    resid = Y - q_full @ (q_full.T @ Y)
    rss = np.einsum("ij,ij->j", resid, resid)
    return rss > tol * np.einsum("ij,ij->j", Y, Y)
