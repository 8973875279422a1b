"""Parametric thresholds (FDR, Bonferroni-FWE, cluster extent) and labelled cluster tables.

The one home of FDR and Bonferroni in the package: on images (:func:`threshold_map`, nilearn's
semantics, what the group maps use) and on arrays of z (:func:`fdr_threshold`,
:func:`bonferroni_threshold`).
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm import threshold_stats_img
from nilearn.reporting import get_clusters_table
from scipy import stats

from fmri_pain.anatomy.labels import PEAK_ATLASES, label_coordinates
from fmri_pain.bids.naming import THRESHOLD_DESCS as HEIGHT_CONTROLS


def fdr_threshold(z: np.ndarray, q: float = 0.05, two_sided: bool = True) -> float:
    """Benjamini-Hochberg threshold on z (on ``|z|`` when two-sided).

    Voxels with a score at or above the returned value are declared; ``inf``
    when nothing survives.
    """
    z = np.asarray(z, dtype=float).ravel()
    z = z[np.isfinite(z)]
    if two_sided:
        z = np.abs(z)
    if z.size == 0:
        return np.inf
    z = np.sort(z)[::-1]
    p = stats.norm.sf(z) * (2 if two_sided else 1)
    ok = np.flatnonzero(p <= q * np.arange(1, p.size + 1) / p.size)
    if ok.size == 0:
        return np.inf
    return float(z[ok[-1]])


def bonferroni_threshold(n_voxels: int, alpha: float = 0.05, two_sided: bool = True) -> float:
    """Bonferroni threshold on z (on ``|z|`` when two-sided) for ``n_voxels`` tests."""
    if n_voxels < 1:
        raise ValueError("n_voxels must be positive")
    return float(stats.norm.isf(alpha / ((2 if two_sided else 1) * n_voxels)))


def threshold_map(z_img: nib.Nifti1Image, mask_img: nib.Nifti1Image | None, method: str,
                  alpha: float, cluster_threshold: int = 0,
                  two_sided: bool = False) -> tuple[nib.Nifti1Image, float]:
    """Threshold a z map with FDR or Bonferroni control (nilearn semantics).

    Parameters
    ----------
    z_img : Nifti1Image
        z statistic map.
    mask_img : Nifti1Image or None
        Voxels counted in the multiple-comparison correction.
    method : {"fdr", "fwe"}
        ``fwe`` is Bonferroni over the mask's voxels.
    alpha : float
        q for FDR, family-wise alpha for FWE.
    cluster_threshold : int
        Minimum cluster size in voxels.
    two_sided : bool
        Threshold both tails.

    Returns
    -------
    thresholded : Nifti1Image
        The z map with sub-threshold voxels set to 0.
    threshold : float
        The z threshold (``inf`` when FDR finds nothing).
    """
    if method not in HEIGHT_CONTROLS:
        raise ValueError(f"unknown threshold method {method!r}; use one of {list(HEIGHT_CONTROLS)}")
    try:
        with warnings.catch_warnings():
            # nilearn warns when FDR leaves no voxel: the result says so already
            warnings.filterwarnings("ignore", message=".*must not exceed.*")
            img, thr = threshold_stats_img(z_img, mask_img=mask_img, alpha=alpha,
                                           height_control=HEIGHT_CONTROLS[method],
                                           cluster_threshold=cluster_threshold,
                                           two_sided=two_sided)
    except ValueError:
        # nilearn raises when FDR finds no voxel; an empty map is the honest result.
        empty = nib.Nifti1Image(np.zeros(z_img.shape, dtype=np.float32), z_img.affine)
        return empty, float("inf")
    return img, float(thr)


def cluster_table(stat_img: nib.Nifti1Image, threshold: float, cluster_threshold: int = 0,
                  two_sided: bool = False, atlases: tuple[str, ...] = PEAK_ATLASES) -> pd.DataFrame:
    """nilearn's cluster table with the anatomical label of each peak.

    Returns
    -------
    DataFrame
        ``get_clusters_table`` columns (Cluster ID, X, Y, Z, Peak Stat,
        Cluster Size (mm3)) plus one label column per atlas. Empty (with
        those columns) when nothing survives.
    """
    columns = ["Cluster ID", "X", "Y", "Z", "Peak Stat", "Cluster Size (mm3)", *atlases]
    if not np.isfinite(threshold):
        return pd.DataFrame(columns=columns)
    with warnings.catch_warnings():
        # one tail without clusters is an ordinary outcome, not a warning
        warnings.filterwarnings("ignore", message="No clusters found")
        warnings.filterwarnings("ignore", message=".*must not exceed.*")
        table = get_clusters_table(stat_img, stat_threshold=threshold,
                                   cluster_threshold=cluster_threshold, two_sided=two_sided)
    if table.empty:
        return pd.DataFrame(columns=columns)
    labels = label_coordinates(table[["X", "Y", "Z"]].to_numpy(dtype=float), atlases)
    return pd.concat([table.reset_index(drop=True), labels], axis=1)
