"""Fast NIfTI reading: ISA-L gzip and masked stacks of 3-D maps."""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

try:  # ISA-L inflates gzip two to three times faster than zlib; optional
    from isal import igzip
except ImportError:  # pragma: no cover - depends on the environment
    igzip = None

__all__ = ["igzip", "load_in_memory", "masked_maps"]

ImageLike = str | Path | nib.Nifti1Image


def load_in_memory(path: str | Path) -> nib.Nifti1Image:
    """Read a whole ``.nii``/``.nii.gz`` file into memory (ISA-L for gzip when installed)."""
    path = Path(path)
    if igzip is None or not path.name.endswith(".gz"):
        img = nib.load(path)
        return nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)
    with open(path, "rb") as fobj:
        raw = igzip.decompress(fobj.read())
    return nib.Nifti1Image.from_stream(io.BytesIO(raw))


def masked_maps(images: Sequence[ImageLike], mask_img: nib.Nifti1Image,
                dtype: type = np.float64) -> np.ndarray:
    """(n_maps, n_voxels) array of 3-D maps inside a mask (C order of the mask's voxels).

    The maps must be on the mask's grid (shape and affine); an unreadable or
    misaligned map raises ``ValueError`` naming it.
    """
    mask = np.asanyarray(mask_img.dataobj).astype(bool)
    out = np.empty((len(images), int(mask.sum())), dtype=dtype)
    for i, item in enumerate(images):
        name = "image %d" % i if isinstance(item, nib.Nifti1Image) else str(item)
        try:
            img = item if isinstance(item, nib.Nifti1Image) else load_in_memory(item)
            data = np.asanyarray(img.dataobj)
        except Exception as exc:  # nibabel and gzip raise many types for bad files
            raise ValueError(f"cannot read map {name}: {exc}") from exc
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.shape != mask.shape:
            raise ValueError(f"map {name} (shape {data.shape}) is not on the mask's grid "
                             f"(shape {mask.shape}); resample it first")
        if not np.allclose(img.affine, mask_img.affine, atol=1e-3):
            raise ValueError(f"map {name} (affine {np.round(img.affine[:3], 4).tolist()}) is not "
                             f"on the mask's grid (affine {np.round(mask_img.affine[:3], 4).tolist()},"
                             " same shape); resample it first")
        out[i] = data[mask]
    return out
