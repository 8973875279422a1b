"""The run-level GLM on arrays: nilearn's AR(1) (or OLS) ``run_glm``, vectorised.

Same OLS residuals, Yule-Walker coefficient, truncation to 1/100 bins, whitening
and pseudo-inverse per bin as :func:`nilearn.glm.first_level.run_glm`, without
its per-voxel Python loops, per-bin result objects and string labels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import scipy.linalg as spl

from fmri_pain.glm.first_level.fixed_effects import EffectMaps, z_from_effect
from fmri_pain.glm.first_level.threads import thread_map

AR_BINS = 100  # nilearn's run_glm default
_VOXEL_CHUNK = 8192


@dataclass
class GLMResults:
    """A fitted run-level GLM over voxels.

    Attributes
    ----------
    beta : ndarray, shape (n_regressors, n_voxels)
    dispersion : ndarray, shape (n_voxels,)
        Whitened residual sum of squares / (n_scans - n_regressors), as nilearn.
    labels : ndarray of int, shape (n_voxels,)
        Index of each voxel's AR bin in ``rho`` / ``normalized_cov``.
    rho : ndarray, shape (n_bins,)
        AR(1) coefficient of each bin (0 for OLS).
    normalized_cov : ndarray, shape (n_bins, n_regressors, n_regressors)
        ``pinv(wX) @ pinv(wX).T`` of each bin.
    df_residuals : float
        n_scans - rank(X).
    """

    beta: np.ndarray
    dispersion: np.ndarray
    labels: np.ndarray
    rho: np.ndarray
    normalized_cov: np.ndarray
    df_residuals: float

    def contrast(self, con_val: np.ndarray) -> EffectMaps:
        """t contrast ``con_val`` (padded with zeros to the number of regressors)."""
        con_val = np.asarray(con_val, dtype=float).ravel()
        p = self.beta.shape[0]
        if con_val.size > p:
            raise ValueError(f"contrast has {con_val.size} weights for {p} regressors")
        con_val = np.pad(con_val, (0, p - con_val.size))
        effect = con_val @ self.beta
        per_bin = np.einsum("i,kij,j->k", con_val, self.normalized_cov, con_val)
        variance = self.dispersion * per_bin[self.labels]
        return EffectMaps(effect, variance, z_from_effect(effect, variance, self.df_residuals),
                          float(self.df_residuals))


def ar1_glm(Y: np.ndarray, X: np.ndarray, noise_model: str = "ar1", bins: int = AR_BINS,
            signal_scaling: bool = False, dtype: type = np.float32,
            chunk_size: int = _VOXEL_CHUNK, threads: int = 1) -> GLMResults:
    """Fit nilearn's run-level GLM (``run_glm``) to a data matrix, vectorised.

    Same estimates as :func:`nilearn.glm.first_level.run_glm` with
    ``noise_model="ar1"`` (or ``"ols"``): OLS residuals give a per-voxel
    Yule-Walker AR(1) coefficient, truncated to ``1/bins`` steps; voxels of a
    bin share the whitened design (first row unchanged, as nilearn) and its
    pseudo-inverse. Voxels are processed in chunks (voxel-major, sorted by bin
    so each bin is a contiguous block). Pseudo-inverses and covariances are
    float64; the products with the data run in ``dtype``.

    Parameters
    ----------
    Y : ndarray, shape (n_scans, n_voxels)
    X : ndarray, shape (n_scans, n_regressors)
    noise_model : {"ar1", "ols"}
    bins : int
        AR(1) coefficients are truncated to multiples of ``1 / bins``.
    signal_scaling : bool
        Scale each voxel to percent of its mean first (nilearn's
        ``mean_scaling``, ``FirstLevelModel(signal_scaling=0)``).
    dtype : numpy dtype
        Precision of the data products: float32 (default; twice as fast, relative
        error ~1e-6, far below fMRI noise) or float64 (nilearn's arithmetic).
    chunk_size : int
        Voxels per chunk.
    threads : int
        Thread budget: chunks are fitted in this many threads, one BLAS thread
        each (:func:`~fmri_pain.glm.first_level.threads.thread_map`); the same
        values as with 1.

    Returns
    -------
    GLMResults
    """
    if noise_model not in ("ar1", "ols"):
        raise ValueError(f"noise_model must be 'ar1' or 'ols', got {noise_model!r}")
    X = np.asarray(X, dtype=np.float64)
    n, p = X.shape
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ValueError(f"Y of shape {Y.shape} does not match X with {n} rows")
    n_vox = Y.shape[1]
    eps = np.abs(X).sum() * np.finfo(np.float64).eps
    df_residuals = n - np.linalg.matrix_rank(X, eps)
    denom = n - p  # nilearn's dispersion divides by n - n_columns
    mean = np.maximum(Y.mean(axis=0, dtype=np.float64), 1.0) if signal_scaling else None
    Xd = X.astype(dtype)

    models: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}
    lock = threading.Lock()  # one pseudo-inverse per bin when chunks run in threads

    def model(key: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        with lock:
            return _model(key)

    def _model(key: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        if key not in models:
            rho = key * 1.0 / bins
            wX = X.copy()
            if rho != 0.0:
                wX[1:] = wX[1:] - rho * X[:-1]
            calc = spl.pinv(wX)
            models[key] = (wX.astype(dtype), calc.astype(dtype), calc @ calc.T, rho)
        return models[key]

    beta = np.empty((p, n_vox))
    dispersion = np.empty(n_vox)
    keys = np.zeros(n_vox, dtype=np.int64)
    ols_calc = model(0)[1]

    def fit_chunk(start: int) -> None:
        stop = min(start + chunk_size, n_vox)
        Yc = np.array(Y[:, start:stop].T, dtype=dtype, order="C")  # (voxels, scans)
        if mean is not None:
            Yc /= mean[start:stop, None].astype(dtype)
            Yc -= 1
            Yc *= 100
        if noise_model == "ar1":
            resid = Yc - (Yc @ ols_calc.T) @ Xd.T
            r0 = np.einsum("ij,ij->i", resid, resid) / n
            r1 = np.einsum("ij,ij->i", resid[:, :-1], resid[:, 1:]) / (n - 1)
            del resid
            with np.errstate(invalid="ignore", divide="ignore"):
                rho = np.where(r0 > 0, r1 / r0, 0.0)
            chunk_keys = (rho * bins).astype(np.int64)  # truncation toward 0, as nilearn
            order = np.argsort(chunk_keys, kind="stable")
            Yc = Yc[order]
            sorted_keys = chunk_keys[order]
        else:
            chunk_keys = sorted_keys = np.zeros(stop - start, dtype=np.int64)
            order = np.arange(stop - start)
        keys[start:stop] = chunk_keys
        bounds = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1, len(sorted_keys)]
        beta_c = np.empty((stop - start, p))
        disp_c = np.empty(stop - start)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            wX, calc, _, rho_k = model(int(sorted_keys[lo]))
            wY = Yc[lo:hi]  # whitened and turned into residuals in place
            if rho_k != 0.0:
                wY[:, 1:] -= dtype(rho_k) * wY[:, :-1]
            b = wY @ calc.T
            wY -= b @ wX.T
            beta_c[lo:hi] = b
            disp_c[lo:hi] = np.einsum("ij,ij->i", wY, wY) / denom
        beta[:, start + order] = beta_c.T
        dispersion[start + order] = disp_c

    thread_map(fit_chunk, range(0, n_vox, chunk_size), threads)
    order_keys = sorted(models)
    return GLMResults(
        beta=beta,
        dispersion=dispersion,
        labels=np.searchsorted(order_keys, keys),
        rho=np.array([models[k][3] for k in order_keys]),
        normalized_cov=np.stack([models[k][2] for k in order_keys]),
        df_residuals=float(df_residuals),
    )
