"""Images in, maps out for the permutation engine: masked maps to a test, results to NIfTI maps.

The engine itself (Freedman-Lane for t and F contrasts; sign flips, free and within-block
permutations, whole-block sign flips) is :mod:`fmri_pain.glm.inference.permutation`, TFCE and
clusters :mod:`fmri_pain.glm.inference.tfce`. This module is the thin image layer: maps as
NIfTI images named after the output contract (``desc-perm``, ``desc-tfce``, ...).

Examples
--------
>>> res = permutation_test(Y, design, contrast, n_perm=5000, blocks=subjects,
...                        mask=mask, tfce=True, cluster_threshold=0.001)  # doctest: +SKIP
>>> images = permutation_maps(res, mask_img)                              # doctest: +SKIP

or, from files to images in one call (what nilearn's ``non_parametric_inference`` does):

>>> res, images = permutation_inference(paths, design, [1, 0], mask_img, n_perm=5000)  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np
from scipy import stats

from fmri_pain.glm.inference.permutation import permutation_test
from fmri_pain.glm.inference.result import PermutationResult

__all__ = ["stat_to_z", "MAP_ENTITIES", "permutation_maps", "write_permutation_maps",
           "permutation_inference"]

# map key -> (desc, stat) entities of the output file name
MAP_ENTITIES: dict[str, tuple[str, str]] = {
    "logp_uncorrected": ("permUncorrected", "logp"),
    "logp_fwe": ("perm", "logp"),
    "z_fwe": ("perm", "z"),
    "tfce": ("tfce", "tfce"),
    "logp_tfce_fwe": ("tfce", "logp"),
    "z_tfce_fwe": ("tfce", "z"),
    "logp_cluster_extent_fwe": ("clusterExtent", "logp"),
    "logp_cluster_mass_fwe": ("clusterMass", "logp"),
}
# every -log10 p map has its p map beside it (stat-p, 10**-logp), as nilearn names p maps
MAP_ENTITIES |= {key.replace("logp", "p", 1): (desc, "p")
                 for key, (desc, stat) in list(MAP_ENTITIES.items()) if stat == "logp"}


def stat_to_z(stat: np.ndarray, stat_type: str, df: tuple[float, float]) -> np.ndarray:
    """Convert t or F values to z with matching (one-sided) tail probability."""
    stat = np.asarray(stat, dtype=float)
    if stat_type == "t":  # through the upper tail of |t|, where precision is kept
        return np.sign(stat) * stats.norm.isf(stats.t.sf(np.abs(stat), df[1]))
    return stats.norm.isf(stats.f.sf(stat, df[0], df[1]))


def _unmask(values: np.ndarray, mask_img: nib.Nifti1Image, fill: float = 0.0) -> nib.Nifti1Image:
    mask = np.asarray(mask_img.dataobj).astype(bool)
    vol = np.full(mask.shape, fill, dtype=np.float32)
    vol[mask] = values
    img = nib.Nifti1Image(vol, mask_img.affine)
    img.header.set_xyzt_units("mm", "sec")
    return img


def permutation_maps(result: PermutationResult, mask_img: nib.Nifti1Image, *,
                     alpha: float = 0.05, z: np.ndarray | None = None) -> dict[str, nib.Nifti1Image]:
    """Images of a permutation result (keys of :data:`MAP_ENTITIES` plus ``stat`` and ``z``).

    Each ``logp_*`` map has its ``p_*`` map (10**-logp inside the mask, 1 outside).

    ``z_fwe`` and ``z_tfce_fwe`` are z maps zeroed where the max-stat (or
    TFCE) FWE p is not below ``alpha``; ``z`` defaults to the observed
    statistic converted to z with its parametric degrees of freedom (``result.z`` when set).
    """
    mask = np.asarray(mask_img.dataobj).astype(bool)
    if int(mask.sum()) != result.stat.size:
        raise ValueError(f"mask has {int(mask.sum())} voxels, result has {result.stat.size}")
    if z is None:  # the G statistic carries its own z (per-voxel df)
        z = result.z if result.z is not None else stat_to_z(result.stat, result.stat_type, result.df)
    z = np.asarray(z)
    maps = {"stat": result.stat, "z": z, "logp_uncorrected": result.logp("uncorrected"),
            "logp_fwe": result.logp("fwe"), "z_fwe": np.where(result.p_fwe < alpha, z, 0.0)}
    if result.tfce is not None:
        maps.update(tfce=result.tfce, logp_tfce_fwe=result.logp("tfce_fwe"),
                    z_tfce_fwe=np.where(result.p_tfce_fwe < alpha, z, 0.0))
    if result.cluster_p_extent_fwe is not None:
        maps.update(logp_cluster_extent_fwe=result.logp("cluster_extent_fwe"),
                    logp_cluster_mass_fwe=result.logp("cluster_mass_fwe"))
    images = {key: _unmask(val, mask_img) for key, val in maps.items()}
    for key in [k for k in maps if k.startswith("logp_")]:  # p = 10**-logp, 1 outside the mask
        images[key.replace("logp", "p", 1)] = _unmask(10.0 ** -np.asarray(maps[key], dtype=float),
                                                      mask_img, fill=1.0)
    return images


def write_permutation_maps(result: PermutationResult, mask_img: nib.Nifti1Image,
                           output_dir: Path | str, *, contrast: str, task: str | None = None,
                           space: str | None = None, alpha: float = 0.05,
                           z: np.ndarray | None = None,
                           sidecar: Mapping[str, Any] | None = None,
                           images: Mapping[str, nib.Nifti1Image] | None = None) -> dict[str, Path]:
    """Write :func:`permutation_maps` under ``OUTPUT/group`` with contract names.

    e.g. ``group/task-stim_space-..._contrast-dualMinusScs_desc-perm_stat-logp_statmap.nii.gz``.
    The statistic itself is left to the caller (it writes ``stat-t``/``stat-z``).
    ``space``: the template the maps are in (None: no ``space-`` entity, the
    template being unknown). Each sidecar gets the permutation parameters, the
    summary numbers and :meth:`PermutationResult.sidecar_fields` (number of
    distinct rearrangements, permutations used, exhaustive, smallest attainable p).
    ``images``: :func:`permutation_maps` of the result, when already made.
    """
    from fmri_pain.bids.derivatives import camel_keys, statmap_path, write_nifti

    if images is None:
        images = permutation_maps(result, mask_img, alpha=alpha, z=z)
    meta = dict(sidecar or {})  # provenance() keeps parameters under "Parameters"
    # n_perm (asked) stays in Parameters; NumberOfPermutations (used) comes from sidecar_fields
    summary = {key: (None if isinstance(val, float) and not np.isfinite(val) else val)
               for key, val in result.summary(alpha).items() if key != "n_perm"}
    meta = {**meta, "Parameters": {**meta.get("Parameters", {}), **result.parameters},
            **result.sidecar_fields(), "PermutationSummary": camel_keys(summary)}
    if any(val is None for key, val in summary.items() if key.endswith("threshold")):
        meta["PermutationSummaryNote"] = ("a null threshold: no voxel (cluster) can reach FWE "
                                          f"p < {alpha:g} with these rearrangements")
    written = {}
    for key, img in images.items():
        if key not in MAP_ENTITIES:
            continue
        desc, stat = MAP_ENTITIES[key]
        path = statmap_path(output_dir, contrast=contrast, stat=stat, task=task, desc=desc,
                            space=space)
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = ({"StatisticDescription": f"p = 10^-logp of the desc-{desc} stat-logp map; "
                                          "1 outside the mask"} if stat == "p" else {})
        written[key] = write_nifti(img, path, sidecar={**meta, "StatisticType": stat, **extra})
    return written


def permutation_inference(images: Sequence[str | Path | nib.Nifti1Image], design: np.ndarray,
                          contrast: np.ndarray, mask_img: nib.Nifti1Image, *, alpha: float = 0.05,
                          **kwargs: Any) -> tuple[PermutationResult, dict[str, nib.Nifti1Image]]:
    """Permutation test of maps given as files or images; the maps as images.

    Parameters
    ----------
    images : sequence of paths or Nifti1Image
        One 3-D map per design row, on the mask's grid.
    design, contrast
        As :func:`permutation_test`.
    mask_img : Nifti1Image
        Voxels to test (non-zero).
    alpha : float
        For the thresholded z maps of :func:`permutation_maps`.
    **kwargs
        Passed to :func:`permutation_test` (``n_perm``, ``tfce``, ``n_jobs`` ...).

    Returns
    -------
    result : PermutationResult
    maps : dict of Nifti1Image
        :func:`permutation_maps` of the result.
    """
    from fmri_pain.bids.nifti import masked_maps

    Y = masked_maps(images, mask_img)
    mask = np.asanyarray(mask_img.dataobj).astype(bool)
    result = permutation_test(Y, design, contrast, mask=mask, **kwargs)
    return result, permutation_maps(result, mask_img, alpha=alpha)
