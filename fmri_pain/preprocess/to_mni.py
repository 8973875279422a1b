"""A run to MNI in one interpolation: motion, coregistration and normalization composed per output voxel."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fmri_pain.preprocess.registration import Registration, map_points
from fmri_pain.preprocess.resample import resample_series, to_volume
from fmri_pain.preprocess.templates import on_grid, output_grid
from fmri_pain.preprocess.transforms import apply_affine, grid_points


@dataclass
class RunInMNI:
    """Result of :func:`run_to_mni`: the series, brain mask and EPI reference on the MNI grid ``affine``."""

    bold: np.ndarray
    mask: np.ndarray
    boldref: np.ndarray
    affine: np.ndarray


def run_to_mni(data: np.ndarray, affine: np.ndarray, voxel_size: tuple[float, float, float],
               motion: np.ndarray, coreg: Registration, std: Registration | None,
               boldref: np.ndarray, boldref_affine: np.ndarray, boldref_mask: np.ndarray,
               mask_affine: np.ndarray, order: int = 3) -> RunInMNI:
    """Resample a run ``data`` (x, y, z, t) to the MNI grid of ``voxel_size``, each volume once.

    Parameters
    ----------
    data, affine : the (slice-time corrected) native series and its grid.
    voxel_size : the output grid's voxel size (mm).
    motion : ndarray (t, 4, 4)
        Per-volume pull matrices EPI reference -> volume.
    coreg : the T1w -> EPI-reference map, or with ``std=None`` the MNI -> EPI-reference map
        (EPI-template route).
    std : the MNI -> T1w map (T1w route) or None.
    boldref, boldref_affine, boldref_mask, mask_affine : the native EPI reference and its brain mask,
        taken to MNI through the same static chain (no motion).
    order : spline order of the series' interpolation.

    Only a generous box around the template brain is computed (background stays 0); the mask is the
    native mask's, within the resampled coverage and the template brain.
    """
    shape, aff = output_grid(voxel_size)
    brain_frac = on_grid("brain", shape, aff)
    region = ndimage.binary_dilation(brain_frac > 0.01, iterations=2)
    index = np.flatnonzero(region.ravel())
    pts = grid_points(shape, aff).reshape(-1, 3)[index]
    ref_pts = map_points(coreg, pts) if std is None else apply_affine(coreg.matrix, map_points(std, pts))
    if motion.shape[0] != data.shape[-1]:
        raise ValueError(f"{data.shape[-1]} volumes but {motion.shape[0]} motion matrices")
    values, coverage = resample_series(data, affine, ref_pts, motion, order=order)
    bold = to_volume(values, index, shape, order="F")  # NIfTI's order: written without a transposition
    del values
    ref_vals, _ = resample_series(boldref[..., None], boldref_affine, ref_pts, None, order=order)
    ref_std = to_volume(ref_vals[:, 0], index, shape)
    mvals, _ = resample_series(boldref_mask[..., None], mask_affine, ref_pts, None, order=1)
    mask = to_volume(((mvals[:, 0] >= 0.5) & coverage).astype(np.uint8), index, shape)
    mask &= (brain_frac >= 0.5).astype(np.uint8)
    return RunInMNI(bold=bold, mask=mask, boldref=ref_std, affine=aff)
