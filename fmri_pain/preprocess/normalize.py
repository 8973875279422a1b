"""Spatial normalization on arrays: the T1w to MNI (with template brain extraction), the EPI reference to the T1w."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fmri_pain.preprocess.registration import Registration, map_points, register
from fmri_pain.preprocess.templates import _nilearn_1mm, downsample, on_grid, output_grid, template_t1
from fmri_pain.preprocess.transforms import grid_points


@dataclass
class T1wNormalization:
    """Result of :func:`normalize_t1w`: the brain on the T1w grid, the MNI -> T1w map, the brain in MNI."""

    brain: np.ndarray
    mask: np.ndarray
    reg: Registration
    std: np.ndarray
    std_affine: np.ndarray


def template_on_points(kind: str, points: np.ndarray) -> np.ndarray:
    """A nilearn template image evaluated (linear) at world points ``(..., 3)``."""
    data, aff = _nilearn_1mm(kind)
    vox = (points - aff[:3, 3]) @ np.linalg.inv(aff[:3, :3]).T
    return ndimage.map_coordinates(data, np.moveaxis(vox, -1, 0), order=1, mode="constant")


def normalize_t1w(t1: np.ndarray, affine: np.ndarray, kind: str = "affine", resolution: float = 3.0,
                  keep_dir: str | None = None) -> T1wNormalization:
    """Template-based brain extraction and normalization of a T1w to MNI152 (antspyx).

    The T1w is registered (with the template's dilated brain mask restricting
    the metric) and the template brain mask pulled back to the T1w defines
    the brain.  A second registration of the extracted brain (model ``kind``;
    non-linear transforms are kept in ``keep_dir``) refines the map.  The
    brain is also resampled to MNI at 2 mm (one interpolation) for reports.
    """
    tpl, tpl_aff = template_t1(resolution)
    tpl_mask = on_grid("brain", tpl.shape, tpl_aff) >= 0.5
    reg_mask = ndimage.binary_dilation(tpl_mask, iterations=2)
    reg = register(tpl, tpl_aff, t1, affine, kind="affine", fixed_mask=reg_mask)
    # template brain mask -> T1w grid: evaluate at the MNI point of each T1w voxel
    inv = np.linalg.inv(reg.matrix)
    mni_pts = grid_points(t1.shape, inv @ affine)
    mask_frac = template_on_points("brain", mni_pts)
    brain_mask = ndimage.binary_dilation(mask_frac >= 0.5, iterations=1)
    brain = t1 * brain_mask
    if kind != "affine":
        reg = register(tpl, tpl_aff, brain, affine, kind=kind, fixed_mask=reg_mask, keep_dir=keep_dir)
    else:
        reg = register(tpl, tpl_aff, brain, affine, kind="affine", fixed_mask=reg_mask)
    shape, aff = output_grid(2.0)
    pts = map_points(reg, grid_points(shape, aff).reshape(-1, 3))
    vox = (pts - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    std = ndimage.map_coordinates(brain, vox.T, order=1, mode="constant").reshape(shape)
    return T1wNormalization(brain=brain, mask=brain_mask, reg=reg, std=std, std_affine=aff)


def coregister_to_t1w(ref: np.ndarray, ref_affine: np.ndarray, t1w_brain: np.ndarray, t1w_affine: np.ndarray,
                      t1w_mask: np.ndarray | None = None, kind: str = "rigid",
                      resolution: float = 3.0) -> Registration:
    """EPI reference -> T1w brain (mutual information): the T1w -> EPI-reference pull map.

    The T1w is registered on a grid no finer than ``resolution`` (time grows with the fixed grid);
    its mask, dilated, restricts the metric.
    """
    t1_data, t1_aff = downsample(t1w_brain, t1w_affine, resolution)
    mask = None
    if t1w_mask is not None:
        m, _ = downsample(t1w_mask, t1w_affine, resolution)
        mask = ndimage.binary_dilation(m > 0.5, iterations=2)
    return register(t1_data, t1_aff, ref, ref_affine, kind=kind, fixed_mask=mask)


def register_to_template(ref: np.ndarray, ref_affine: np.ndarray, kind: str = "affine", resolution: float = 3.0,
                         keep_dir: str | None = None) -> Registration:
    """EPI reference -> MNI T1 template directly (SPM's EPI-template route): the MNI -> reference pull map."""
    tpl, tpl_aff = template_t1(resolution)
    mask = ndimage.binary_dilation(on_grid("brain", tpl.shape, tpl_aff) >= 0.5, iterations=2)
    return register(tpl, tpl_aff, ref, ref_affine, kind=kind, fixed_mask=mask, keep_dir=keep_dir)
