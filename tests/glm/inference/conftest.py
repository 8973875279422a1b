"""Fixtures of the inference tests: the 21 real pain maps at 2 mm."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

PAIN21 = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "pain21"


@pytest.fixture(scope="session")
def pain21():
    """``(Y, mask)``: the maps (21, n_voxels) over the voxels where every map is non-zero."""
    if not (PAIN21 / "mask.nii.gz").exists():
        pytest.skip("pain21 data not available")
    mask = np.asarray(nib.load(PAIN21 / "mask.nii.gz").dataobj) > 0
    Y = np.stack([np.asarray(nib.load(PAIN21 / f"contrast_pain_{i:02d}.nii.gz").dataobj,
                             dtype=np.float64)[mask] for i in range(1, 22)])
    keep = np.all(Y != 0, axis=0) & np.all(np.isfinite(Y), axis=0)
    mask[mask] = keep
    return Y[:, keep], mask
