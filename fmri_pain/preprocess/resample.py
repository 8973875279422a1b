"""One-shot resampling of a BOLD series into MNI space.

For every output voxel ``p`` (MNI mm) and volume ``t`` the source location is
``inv(A_bold) @ M_t @ C @ N(p)``: ``N`` maps MNI to the anatomical (or, without
a T1w, straight to the EPI-reference) space, ``C`` maps anatomical to EPI
reference coordinates and ``M_t`` the reference to volume ``t`` (head motion).
``N(p)`` is computed once (affine or SyN field); the per-volume part is one
4x4 matrix, so each volume is interpolated exactly once.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def resample_series(
    data: np.ndarray,
    bold_affine: np.ndarray,
    ref_points: np.ndarray,
    motion: np.ndarray | None,
    order: int = 3,
    dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample every volume of ``data`` at EPI-reference points moved by the motion.

    Parameters
    ----------
    data : ndarray (x, y, z, t)
    bold_affine : ndarray (4, 4)
    ref_points : ndarray (n, 3)
        EPI-reference world coordinates of the output points (``C @ N(p)``).
    motion : ndarray (t, 4, 4) or None
        Pull matrices reference -> volume ``t``; None for a static image.
    order : int
        Spline order (3: cubic B-spline, like fMRIPrep's default quality).

    Returns
    -------
    values : ndarray (n, t)
        A Fortran-ordered view (each volume's samples contiguous).
    coverage : ndarray (n,) bool
        True where the point lies inside the BOLD field of view in every volume.
    """
    n_vol = data.shape[-1]
    inv_aff = np.linalg.inv(bold_affine)
    # volume-major: each volume's samples are one contiguous row (returned transposed, a view)
    out = np.empty((n_vol, ref_points.shape[0]), dtype=dtype)
    coverage = np.ones(ref_points.shape[0], dtype=bool)
    upper = np.asarray(data.shape[:3], dtype=float)[:, None] - 0.5
    # homogeneous points (4, n): one BLAS product per volume gives the (3, n) voxel coordinates
    # in the C-contiguous layout map_coordinates reads without a copy
    homog = np.empty((4, ref_points.shape[0]))
    homog[:3] = np.asarray(ref_points, dtype=float).T
    homog[3] = 1.0
    for t in range(n_vol):
        mat = inv_aff if motion is None else inv_aff @ motion[t]
        vox = mat[:3] @ homog
        coverage &= np.all((vox > -0.5) & (vox < upper), axis=0)
        vol = np.asarray(data[..., t], dtype=np.float64)
        if order > 1:
            vol = ndimage.spline_filter(vol, order=order, mode="nearest")
        out[t] = ndimage.map_coordinates(vol, vox, order=order, mode="nearest", prefilter=False)
    out[:, ~coverage] = 0.0
    return out.T, coverage


def to_volume(values: np.ndarray, index: np.ndarray, shape: tuple, order: str = "C") -> np.ndarray:
    """Scatter ``values`` (n, ...) at flat voxel ``index`` into an array of ``shape`` (+ trailing dims).

    ``index`` is in C order of ``shape``. ``order="F"`` returns the same values in a Fortran-ordered
    array: NIfTI's on-disk order, so nibabel writes it with one copy instead of a transposition.
    """
    trailing = values.shape[1:]
    n = int(np.prod(shape))
    if order == "C":
        vol = np.zeros((n,) + trailing, dtype=values.dtype)
        vol[index] = values
        return vol.reshape(tuple(shape) + trailing)
    if order != "F":
        raise ValueError(f"order must be 'C' or 'F', got {order!r}")
    findex = np.ravel_multi_index(np.unravel_index(index, shape), shape, order="F")
    vol = np.zeros((n,) + trailing, dtype=values.dtype, order="F")
    vol[findex] = values
    return vol.reshape(tuple(shape) + trailing, order="F")
