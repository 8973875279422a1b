"""The MNI152 template and tissue masks that nilearn ships, on any grid.

nilearn's files are ``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``: the ICBM 2009a
symmetric release, TemplateFlow's ``MNI152NLin2009aSym`` (see ``fmri_pain.bids.derivatives.SPACE``).
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from fmri_pain.preprocess.transforms import apply_affine, grid_points

#: What the ``Template`` of a SpatialReference record says.
TEMPLATE_DESCRIPTION = ("nilearn's bundled MNI152 T1 template, ICBM 2009a nonlinear symmetric "
                        "(mni_icbm152_t1_tal_nlin_sym_09a, 1 mm, 197 x 233 x 189 voxels from "
                        "(-98, -134, -72) mm), resampled to the output grid")

#: nilearn's 1 mm template: 197 x 233 x 189 voxels from (-98, -134, -72) mm.
_ORIGIN = np.array([-98.0, -134.0, -72.0])
_EXTENT = np.array([197.0, 233.0, 189.0])


@functools.lru_cache(maxsize=4)
def _nilearn_1mm(kind: str) -> tuple[np.ndarray, np.ndarray]:
    from nilearn import datasets

    loader = {
        "t1": datasets.load_mni152_template,
        "brain": datasets.load_mni152_brain_mask,
        "gm": datasets.load_mni152_gm_mask,
        "wm": datasets.load_mni152_wm_mask,
    }[kind]
    img = loader(resolution=1)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine.copy()


def output_grid(voxel_size: float | tuple) -> tuple[tuple[int, int, int], np.ndarray]:
    """MNI grid covering nilearn's template bounding box at ``voxel_size`` mm.

    The corner voxel sits at (-98, -134, -72) mm, as in nilearn's templates,
    so integer resolutions reproduce nilearn's (and fMRIPrep-like) grids.
    """
    zooms = np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
    shape = tuple(int(np.ceil(e / z - 1e-6)) for e, z in zip(_EXTENT, zooms))
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = _ORIGIN
    return shape, affine  # type: ignore[return-value]


def on_grid(kind: str, shape: tuple, affine: np.ndarray, order: int = 1) -> np.ndarray:
    """Cached :func:`_on_grid` (returns a read-only array)."""
    return _on_grid_cached(kind, tuple(int(n) for n in shape[:3]),
                           tuple(map(float, np.asarray(affine, dtype=float).ravel())), order)


@functools.lru_cache(maxsize=32)
def _on_grid_cached(kind: str, shape: tuple, affine_flat: tuple, order: int) -> np.ndarray:
    out = _on_grid(kind, shape, np.asarray(affine_flat).reshape(4, 4), order)
    out.setflags(write=False)
    return out


def _on_grid(kind: str, shape: tuple, affine: np.ndarray, order: int = 1) -> np.ndarray:
    """A template image (``t1``, ``brain``, ``gm``, ``wm``) resampled to a grid (float32).

    Downsampling averages first (Gaussian of the target voxel size) so that
    binary masks become partial-volume fractions.
    """
    data, src_aff = _nilearn_1mm(kind)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    sigma = np.where(zooms > 1.5, zooms / 2.3548, 0.0)  # in 1 mm source voxels
    if np.any(sigma > 0):
        data = ndimage.gaussian_filter(data, sigma)
    vox = apply_affine(np.linalg.inv(src_aff), grid_points(shape, affine))
    out = ndimage.map_coordinates(data, np.moveaxis(vox, -1, 0), order=order, mode="constant", cval=0.0)
    return out.astype(np.float32)


def template_t1(resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """The T1 template (skull-stripped) at ``resolution`` mm on :func:`output_grid`."""
    shape, affine = output_grid(resolution)
    return on_grid("t1", shape, affine), affine


def downsample(data: np.ndarray, affine: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth and resample a volume to (about) ``voxel_size`` mm when it is finer than that."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    factor = np.maximum(voxel_size / zooms, 1.0)
    if np.all(factor < 1.2):
        return data, affine
    new_shape = tuple(int(np.ceil(n / f)) for n, f in zip(data.shape[:3], factor))
    smoothed = ndimage.gaussian_filter(np.asarray(data, dtype=np.float32), 
                                     np.sqrt(factor**2 - 1) / 2.3548)
    out = ndimage.affine_transform(smoothed, np.diag(factor), output_shape=new_shape, order=1, mode="nearest")
    new_aff = affine.copy()
    new_aff[:3, :3] = affine[:3, :3] * factor
    return out, new_aff


def tissue_masks(shape: tuple, affine: np.ndarray) -> dict[str, np.ndarray]:
    """Brain, WM and CSF masks on a grid from nilearn's MNI152 masks.

    CSF is the part of the brain mask that is neither grey nor white matter
    (nilearn ships no CSF map).  WM and CSF keep only voxels with >= 90 %
    partial volume (>= 50 % if that leaves fewer than 20 voxels), the
    equivalent of fMRIPrep's erosion at the BOLD resolution.
    """
    brain = on_grid("brain", shape, affine)
    gm = on_grid("gm", shape, affine)
    wm = on_grid("wm", shape, affine)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)

    def _strict(frac: np.ndarray) -> np.ndarray:
        for thr in (0.9, 0.75, 0.5):
            mask = frac >= thr
            if mask.sum() >= 20:
                return mask
        return frac >= 0.5

    return {"brain": brain >= 0.5, "wm": _strict(wm), "csf": _strict(csf), "gm": gm >= 0.5}
