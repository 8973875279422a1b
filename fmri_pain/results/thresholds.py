"""Re-thresholding stored maps and comparing two of them.

Pure functions on images and arrays, and the :class:`Rethresholding` methods of
:class:`~fmri_pain.results.api.Results` that apply them to the stored maps.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from fmri_pain.bids.naming import PARAMETRIC_METHODS
from fmri_pain.results.index import strip_label

P_STATS = ("logpfwe", "logp", "pfwe", "p")
"""``stat`` of stored p-value maps, in order of preference."""


def p_values(data: np.ndarray, stat: str) -> np.ndarray:
    """p values of a stored p map (``-log10 p`` when ``stat`` starts with ``logp``)."""
    return 10.0 ** -data if stat.startswith("logp") else data


def threshold_by_p(z_img: nib.Nifti1Image, p: np.ndarray, alpha: float = 0.05,
                   cluster_threshold: int = 0,
                   two_sided: bool = False) -> tuple[nib.Nifti1Image, float]:
    """Keep the z values whose p value is below ``alpha``.

    Parameters
    ----------
    z_img : Nifti1Image
        The z map.
    p : numpy.ndarray
        p values on the z map's grid (see :func:`p_values`).
    alpha : float
        Error rate.
    cluster_threshold : int
        Minimum cluster size in voxels (face-connected clusters of the kept voxels).
    two_sided : bool
        Keep negative z values too.

    Returns
    -------
    image : Nifti1Image
        z map, zero where not kept.
    threshold : float
        The smallest surviving ``|z|``, ``inf`` when nothing survives.
    """
    z = np.asarray(z_img.dataobj, dtype=float)
    keep = (p < alpha) & np.isfinite(z) & (z != 0)
    if not two_sided:
        keep &= z > 0
    data = np.where(keep, z, 0.0)
    if cluster_threshold > 0 and keep.any():
        from scipy import ndimage

        labels, _ = ndimage.label(keep)
        sizes = np.bincount(labels.ravel())
        data[(sizes[labels] < cluster_threshold) | (labels == 0)] = 0.0
    surviving = np.abs(data[data != 0])
    thr = float(surviving.min()) if surviving.size else float("inf")
    return nib.Nifti1Image(data.astype(np.float32), z_img.affine, z_img.header), thr


def best_p_map(candidates: Iterable[Any]) -> Any:
    """The preferred stored p map among rows with ``desc`` and ``stat``: FWE-corrected first,
    then by :data:`P_STATS`."""
    def rank(row: Any) -> tuple[int, int]:
        fwe = "fwe" in row.desc.lower() or row.stat.endswith("fwe")
        return (0 if fwe else 1, P_STATS.index(row.stat))

    return min(candidates, key=rank)


def analysis_mask(mask: nib.Nifti1Image | None, img: nib.Nifti1Image) -> nib.Nifti1Image:
    """``mask`` when it is on the image's grid, else the image's non-zero finite voxels."""
    if mask is not None and mask.shape[:3] == img.shape[:3] and np.allclose(mask.affine, img.affine):
        return nib.Nifti1Image((np.asarray(mask.dataobj) > 0).astype(np.uint8), img.affine)
    data = np.asarray(img.dataobj, dtype=float)
    return nib.Nifti1Image((np.isfinite(data) & (data != 0)).astype(np.uint8), img.affine)


def compare_arrays(a: np.ndarray, b: np.ndarray, affine: np.ndarray, threshold: float = 3.1,
                   two_sided: bool = False) -> dict[str, Any]:
    """Overlap and similarity of two maps on the same grid (see :meth:`Results.compare`)."""
    support = (a != 0) | (b != 0)
    if support.sum() < 2:
        correlation = float("nan")
    else:
        correlation = float(np.corrcoef(a[support], b[support])[0, 1])
    act_a = (np.abs(a) if two_sided else a) > threshold
    act_b = (np.abs(b) if two_sided else b) > threshold
    n_a, n_b, n_ab = int(act_a.sum()), int(act_b.sum()), int((act_a & act_b).sum())
    dice = 2 * n_ab / (n_a + n_b) if n_a + n_b else float("nan")
    peak_a = nib.affines.apply_affine(affine, np.unravel_index(np.argmax(a), a.shape))
    peak_b = nib.affines.apply_affine(affine, np.unravel_index(np.argmax(b), b.shape))
    return {
        "correlation": correlation, "dice": dice, "n_active_a": n_a, "n_active_b": n_b,
        "n_overlap": n_ab, "threshold": threshold,
        "peak_a": tuple(float(v) for v in peak_a), "peak_b": tuple(float(v) for v in peak_b),
        "peak_distance_mm": float(np.linalg.norm(peak_a - peak_b)),
    }


class Rethresholding:
    """Methods of :class:`~fmri_pain.results.api.Results` that re-threshold and compare its maps.

    They use the host's ``map``, ``maps``, ``mask`` and ``output_dir``.
    """

    def threshold(self, contrast: str, method: str = "fdr", alpha: float = 0.05,
                  cluster_threshold: int = 0, height: float | None = None,
                  two_sided: bool = False, subject: str | None = None,
                  desc: str | None = None) -> tuple[nib.Nifti1Image, float]:
        """Re-threshold a stored z map.

        Parameters
        ----------
        contrast : str
            Contrast name.
        method : str, default "fdr"
            ``fdr``, ``fwe`` / ``bonferroni`` (parametric, nilearn
            ``threshold_stats_img``), ``none`` (uncorrected p < alpha), or the
            desc of stored permutation maps: ``perm``, ``tfce``, ``cluster`` ...
            (uses the stored ``-log10 p`` map of that family, FWE-corrected
            when present).
        alpha : float, default 0.05
            Error rate.
        cluster_threshold : int, default 0
            Minimum cluster size in voxels.
        height : float, optional
            An explicit z threshold; overrides ``method`` / ``alpha``.
        two_sided : bool, default False
            Test both tails.
        subject : str, optional
            Threshold a subject's map instead of the group's.
        desc : str, optional
            Exact desc of the stored p map (non-parametric methods).

        Returns
        -------
        image : nibabel.Nifti1Image
            z map, zero below threshold.
        threshold : float
            The z threshold used (for stored p maps: the smallest surviving
            ``|z|``, ``inf`` when nothing survives).
        """
        from nilearn.glm import threshold_stats_img

        z_img = self.map(contrast, stat="z", subject=subject)
        mask_img = analysis_mask(self.mask(), z_img)
        if height is not None:
            return threshold_stats_img(z_img, mask_img=mask_img, threshold=height, height_control=None,
                                       cluster_threshold=cluster_threshold, two_sided=two_sided)
        key = method.lower()
        if key in PARAMETRIC_METHODS:
            return threshold_stats_img(z_img, mask_img=mask_img, alpha=alpha,
                                       height_control=PARAMETRIC_METHODS[key],
                                       cluster_threshold=cluster_threshold, two_sided=two_sided)
        p_path, stat = self._p_map(contrast, key, desc, subject)
        p = p_values(np.asarray(nib.load(p_path).dataobj, dtype=float), stat)
        return threshold_by_p(z_img, p, alpha=alpha, cluster_threshold=cluster_threshold,
                              two_sided=two_sided)

    def _p_map(self, contrast: str, method: str, desc: str | None, subject: str | None) -> tuple[Path, str]:
        level = "group" if subject is None else "subject"
        pool = self.maps(level=level, contrast=contrast)
        if subject is not None:
            pool = pool[pool["subject"] == strip_label(subject, "sub")]
        pool = pool[pool["stat"].isin(P_STATS) & pool["desc"].notna()]
        if desc is not None:
            pool = pool[pool["desc"] == desc]
        else:
            pool = pool[pool["desc"].str.lower().str.startswith(method)]
        if pool.empty:
            stored = self.maps(level=level, contrast=contrast)
            stored = stored[stored["stat"].isin(P_STATS)]
            have = sorted(f"desc={d}, stat={s}" for d, s in stored[["desc", "stat"]].itertuples(index=False))
            raise KeyError(
                f"no stored p-value map for method {method!r} (desc={desc!r}) of contrast {contrast!r} "
                f"in {self.output_dir}; stored p maps: {have or 'none'}; parametric methods: "
                f"{sorted(PARAMETRIC_METHODS)}. Permutation maps exist only when the group level ran with "
                "inference.enabled."
            )
        best = best_p_map(pool.itertuples(index=False))
        return Path(best.path), best.stat

    def compare(self, contrast_a: str, contrast_b: str, stat: str = "z", threshold: float = 3.1,
                subject: str | None = None, two_sided: bool = False) -> dict[str, Any]:
        """Compare two maps of the same level.

        Parameters
        ----------
        contrast_a, contrast_b : str
            Contrast names.
        stat : str, default "z"
        threshold : float, default 3.1
            Height above which voxels count as active (``|value|`` if ``two_sided``).
        subject : str, optional
            Compare a subject's maps instead of the group's.

        Returns
        -------
        dict
            ``correlation`` (Pearson over voxels non-zero in either map),
            ``dice`` (of the suprathreshold sets; NaN if both are empty),
            ``n_active_a``, ``n_active_b``, ``n_overlap``, ``peak_a`` / ``peak_b``
            (MNI mm of the maximum), ``peak_distance_mm``.
        """
        img_a = self.map(contrast_a, stat=stat, subject=subject)
        img_b = self.map(contrast_b, stat=stat, subject=subject)
        if img_a.shape != img_b.shape or not np.allclose(img_a.affine, img_b.affine):
            raise ValueError(f"maps of {contrast_a!r} and {contrast_b!r} are on different grids")
        a = np.nan_to_num(np.asarray(img_a.dataobj, dtype=float))
        b = np.nan_to_num(np.asarray(img_b.dataobj, dtype=float))
        return compare_arrays(a, b, img_a.affine, threshold=threshold, two_sided=two_sided)
