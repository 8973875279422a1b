"""Head-motion estimation: rigid realignment of every volume to a reference.

A vectorised Gauss-Newton (inverse-compositional) rigid registration in the
spirit of SPM's ``spm_realign``: the reference is smoothed once, its gradient
gives fixed "steepest-descent" images on a sub-sampled set of points, and every
volume costs a handful of trilinear look-ups at those points.  Two passes: to a
single steady-state volume, then to the mean of the realigned series.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nipype.algorithms.confounds import is_outlier
from scipy import ndimage

from fmri_pain.preprocess.transforms import apply_affine, rigid_matrix, rigid_params, volume_center


@dataclass
class RealignResult:
    """Output of :func:`realign`.

    Attributes
    ----------
    matrices : ndarray, shape (n_volumes, 4, 4)
        Pull matrices (reference world -> volume world), see :mod:`.transforms`.
    params : ndarray, shape (n_volumes, 6)
        ``trans_x, trans_y, trans_z`` (mm), ``rot_x, rot_y, rot_z`` (rad).
    reference : ndarray, 3D
        Mean of the realigned steady-state volumes (the EPI reference, "boldref").
    center : ndarray, shape (3,)
        Rotation centre of the parameters (mm).
    """

    matrices: np.ndarray
    params: np.ndarray
    reference: np.ndarray
    center: np.ndarray


def detect_nonsteady(data: np.ndarray, mask: np.ndarray | None = None, max_volumes: int = 50) -> int:
    """Number of initial non-steady-state volumes (fMRIPrep / nipype rule).

    The global signal of the first ``max_volumes`` volumes is tested with
    nipype's ``is_outlier`` (modified z-score > 3.5, counted from the start).
    """
    if data.ndim != 4:
        raise ValueError("detect_nonsteady needs a 4D array")
    if mask is None:
        mean = data.mean(axis=-1)
        mask = mean > np.percentile(mean, 50)
    gs = data[mask][:, :max_volumes].mean(axis=0)
    return int(is_outlier(gs))


def _sample_points(ref: np.ndarray, step: int) -> np.ndarray:
    """Voxel indices (n, 3) of sub-sampled points in and around the head."""
    thr = 0.1 * np.percentile(ref, 99)
    head = ndimage.binary_dilation(ref > thr, iterations=2)
    border = np.zeros_like(head)
    border[2:-2, 2:-2, 1:-1] = True  # points too close to the edge leave the FOV under motion
    keep = head & border
    grid = np.zeros_like(keep)
    grid[::step, ::step, ::step] = True
    idx = np.argwhere(keep & grid)
    if len(idx) < 100:  # tiny images: use every voxel
        idx = np.argwhere(keep)
    return idx


def _steepest_descent(ref: np.ndarray, affine: np.ndarray, idx: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Jacobian (n, 6) of the reference intensity w.r.t. the rigid parameters at identity."""
    grads_vox = np.stack([g[tuple(idx.T)] for g in np.gradient(ref)], axis=1)  # d/di, d/dj, d/dk
    # world gradient: g_w = inv(A)^T g_vox
    g = grads_vox @ np.linalg.inv(affine[:3, :3])
    u = apply_affine(affine, idx) - center
    rot = np.stack([
        g[:, 1] * -u[:, 2] + g[:, 2] * u[:, 1],   # d/d rx: (0, -uz, uy)
        g[:, 0] * u[:, 2] - g[:, 2] * u[:, 0],    # d/d ry: (uz, 0, -ux)
        -g[:, 0] * u[:, 1] + g[:, 1] * u[:, 0],   # d/d rz: (-uy, ux, 0)
    ], axis=1)
    return np.concatenate([g, rot], axis=1)


def _register_series(
    coeffs: np.ndarray,
    ref: np.ndarray,
    affine: np.ndarray,
    center: np.ndarray,
    sigma: np.ndarray,
    n_iter: int,
    step: int,
    init: np.ndarray | None = None,
) -> np.ndarray:
    """Register each volume to ``ref``; returns (n, 4, 4) pull matrices.

    ``coeffs`` (n, x, y, z): the cubic B-spline coefficients of the smoothed volumes
    (:func:`_spline_coefficients`), computed once for both passes.
    """
    idx = _sample_points(ref, step)
    sd = _steepest_descent(ref, affine, idx, center)
    hess = sd.T @ sd
    hess_inv = np.linalg.inv(hess + 1e-9 * np.trace(hess) * np.eye(6))
    ref_vals = ref[tuple(idx.T)]
    pts_world = apply_affine(affine, idx)
    inv_aff = np.linalg.inv(affine)
    # parameter scales for the convergence test: 0.005 mm, and the angle moving 0.005 mm at 65 mm
    tol = np.array([5e-3] * 3 + [5e-3 / 65.0] * 3)
    n_vol = coeffs.shape[0]
    mats = np.empty((n_vol, 4, 4))
    current = np.eye(4)
    for t in range(n_vol):
        vol = coeffs[t]
        mat = init[t].copy() if init is not None else current.copy()
        for _ in range(n_iter):
            coords = apply_affine(inv_aff @ mat, pts_world).T
            warped = ndimage.map_coordinates(vol, coords, order=3, mode="nearest", prefilter=False)
            dq = hess_inv @ (sd.T @ (warped - ref_vals))
            mat = mat @ np.linalg.inv(rigid_matrix(dq, center))
            if np.all(np.abs(dq) < tol):
                break
        mats[t] = mat
        current = mat
    return mats


def _spline_coefficients(vols: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients (float64) of each volume of ``vols`` (x, y, z, t), as (t, x, y, z).

    Volume-major, so each volume's coefficients are contiguous for ``map_coordinates``.
    """
    out = np.empty((vols.shape[-1],) + vols.shape[:3])
    for t in range(vols.shape[-1]):
        ndimage.spline_filter(vols[..., t], order=3, output=out[t], mode="nearest")
    return out


def resample_volume(vol: np.ndarray, affine: np.ndarray, matrix: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample ``vol`` onto its own grid through the pull ``matrix`` (world -> world)."""
    inv_aff = np.linalg.inv(affine)
    full = inv_aff @ matrix @ affine
    return ndimage.affine_transform(vol, full[:3, :3], full[:3, 3], order=order, mode="nearest")


def realign(
    data: np.ndarray,
    affine: np.ndarray,
    *,
    ref_index: int = 0,
    fwhm: float = 5.0,
    n_iter: int = 12,
    step: int = 2,
    two_pass: bool = True,
    exclude: int = 0,
    max_mean_volumes: int = 50,
) -> RealignResult:
    """Estimate head motion of a 4D series.

    Parameters
    ----------
    data : ndarray (x, y, z, t)
    affine : ndarray (4, 4)
        Voxel-to-world matrix of the series.
    ref_index : int
        Volume used as the first-pass reference (a steady-state volume).
    fwhm : float
        Smoothing (mm) applied before estimation (SPM uses 5 mm).
    n_iter : int
        Maximal Gauss-Newton iterations per volume.
    step : int
        Sub-sampling of the estimation points (voxels).
    two_pass : bool
        Re-register to the mean of the first-pass realigned series.
    exclude : int
        Initial non-steady-state volumes, left out of the mean reference.
    max_mean_volumes : int
        The reference is the mean of at most about this many evenly spaced volumes.

    Returns
    -------
    RealignResult
    """
    if data.ndim != 4:
        raise ValueError(f"realign needs a 4D series, got shape {data.shape}")
    data = np.asarray(data, dtype=np.float32)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    sigma = fwhm / 2.3548 / zooms
    smoothed = np.empty_like(data)
    for t in range(data.shape[-1]):
        ndimage.gaussian_filter(data[..., t], sigma, output=smoothed[..., t], mode="nearest")
    center = volume_center(data.shape, affine)
    coeffs = _spline_coefficients(smoothed)
    mats = _register_series(coeffs, smoothed[..., ref_index], affine, center, sigma, n_iter, step)
    steady = slice(exclude, None) if exclude < data.shape[-1] - 1 else slice(None)

    def _mean(volumes: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        idx = list(range(data.shape[-1])[steady])
        # an evenly spaced subset is enough for a reference and keeps long runs cheap
        idx = idx[:: max(1, len(idx) // max_mean_volumes)]
        acc = np.zeros(volumes.shape[:3], dtype=np.float64)
        for t in idx:
            acc += resample_volume(volumes[..., t], affine, matrices[t])
        return (acc / len(idx)).astype(np.float32)

    if two_pass:
        ref2 = _mean(smoothed, mats)
        mats = _register_series(coeffs, ref2, affine, center, sigma, n_iter, step, init=mats)
    del coeffs
    reference = _mean(data, mats)
    params = np.array([rigid_params(m, center) for m in mats])
    return RealignResult(matrices=mats, params=params, reference=reference, center=center)


def framewise_displacement(params: np.ndarray, radius: float = 50.0) -> np.ndarray:
    """Power et al. (2012) framewise displacement; the first value is NaN (fMRIPrep's n/a)."""
    params = np.asarray(params, dtype=float)
    diff = np.abs(np.diff(params, axis=0))
    fd = diff[:, :3].sum(axis=1) + radius * diff[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def rms_displacement(matrices: np.ndarray, center: np.ndarray, radius: float = 80.0) -> np.ndarray:
    """Jenkinson (1999) relative RMS displacement between consecutive volumes (fMRIPrep ``rmsd``)."""
    out = [np.nan]
    for prev, cur in zip(matrices[:-1], matrices[1:]):
        rel = cur @ np.linalg.inv(prev) - np.eye(4)
        a = rel[:3, :3]
        t = rel[:3, 3] + a @ center
        out.append(np.sqrt(radius**2 / 5.0 * np.trace(a.T @ a) + t @ t))
    return np.asarray(out)
