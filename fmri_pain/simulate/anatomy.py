"""Anatomy of the simulated brain: MNI grids and tissue maps from nilearn's shipped MNI152 files."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

# Corner and extent (mm) of nilearn's 1 mm MNI152 template; grids at other voxel sizes share the
# corner, so ``mni_grid(2)`` and ``mni_grid(4)`` equal nilearn's ``load_mni152_*(resolution=2|4)`` grids.
MNI_ORIGIN = np.array([-98.0, -134.0, -72.0])
MNI_EXTENT = np.array([197.0, 233.0, 189.0])


def mni_grid(voxel_size: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the MNI grid at ``voxel_size`` mm."""
    shape = tuple(int(np.ceil(e / voxel_size - 1e-6)) for e in MNI_EXTENT)
    affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = MNI_ORIGIN
    return shape, affine  # type: ignore[return-value]


@dataclass(frozen=True)
class Tissue:
    """Tissue probability maps and derived images on one MNI grid."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray  # probability-like brain fraction
    head: np.ndarray  # non-brain head tissue (scalp, skull marrow) fraction
    t1: np.ndarray  # T1-weighted template intensity (0..1)

    @property
    def brain_mask(self) -> np.ndarray:
        return self.brain > 0.5


@lru_cache(maxsize=1)
def _mni_1mm() -> dict[str, np.ndarray]:
    from nilearn import datasets

    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32)
    t1 = datasets.load_mni152_template(resolution=1).get_fdata(dtype=np.float32)
    # The brain mask is binary: soften it a little so CSF at the brain surface is partial-volumed.
    brain = np.clip(ndimage.gaussian_filter(brain, 0.7), 0.0, 1.0)
    gm = np.minimum(gm, brain)
    wm = np.minimum(wm, np.clip(brain - gm, 0.0, 1.0))
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    head = np.clip((t1 > 0.05).astype(np.float32) - brain, 0.0, 1.0)
    return {"gm": gm, "wm": wm, "csf": csf, "brain": brain, "head": head, "t1": t1}


def _downsample(vol: np.ndarray, factor: float, shape: tuple[int, int, int]) -> np.ndarray:
    """Sample a map at the centres of a grid ``factor`` times coarser sharing its corner (anti-aliased)."""
    if factor > 1:
        vol = ndimage.gaussian_filter(vol, 0.85 * factor / 2.355, truncate=3.0)
    idx = np.indices(shape, dtype=np.float32) * np.float32(factor)
    return ndimage.map_coordinates(vol, idx, order=1, mode="nearest").astype(np.float32)


@lru_cache(maxsize=4)
def tissue(voxel_size: float) -> Tissue:
    """Tissue maps on the MNI grid at ``voxel_size`` mm (cached per process).

    Grids of 4 mm and coarser are derived from the 2 mm maps, which keeps the 1 mm work to one pass.
    """
    shape, affine = mni_grid(voxel_size)
    if voxel_size >= 4.0:
        src, src_vs = tissue(2.0), 2.0
        maps = {k: _downsample(getattr(src, k), voxel_size / src_vs, shape)
                for k in ("gm", "wm", "csf", "brain", "head", "t1")}
    else:
        maps = {k: _downsample(v, voxel_size, shape) for k, v in _mni_1mm().items()}
    return Tissue(shape=shape, affine=affine, **maps)


def native_grid(voxel_size: float, margin_mm: float = 12.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """The raw EPI field of view: the MNI grid cropped to the brain plus a margin (same orientation/voxels)."""
    t = tissue(voxel_size)
    idx = np.argwhere(t.brain > 0.1)
    pad = int(np.ceil(margin_mm / voxel_size))
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad, np.array(t.shape) - 1)
    affine = t.affine.copy()
    affine[:3, 3] = t.affine[:3, :3] @ lo + t.affine[:3, 3]
    return tuple(int(v) for v in hi - lo + 1), affine  # type: ignore[return-value]


def epi_baseline(t: Tissue) -> np.ndarray:
    """T2*-weighted EPI baseline intensity (about 1000 in grey matter) in MNI space.

    Grey matter is brighter than white matter, CSF brightest; scalp fat is mostly suppressed; and the
    usual susceptibility signal loss sits over the orbitofrontal cortex and inferior temporal poles.
    """
    s0 = 1000.0 * t.gm + 780.0 * t.wm + 1350.0 * t.csf + 120.0 * t.head * t.t1
    xyz = _mm_coords(t.shape, t.affine)
    loss = np.ones(t.shape, dtype=np.float32)
    for centre, width, depth in (((0, 32, -22), 14.0, 0.75), ((-38, 8, -36), 10.0, 0.6), ((38, 8, -36), 10.0, 0.6)):
        d2 = sum((xyz[i] - centre[i]) ** 2 for i in range(3))
        loss *= 1.0 - depth * np.exp(-d2 / (2 * width**2))
    return (s0 * loss).astype(np.float32)


def _mm_coords(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    return xyz.reshape((3, *shape))

