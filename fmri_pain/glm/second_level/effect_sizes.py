"""Standardised effect-size maps of the group contrasts: dz and Hedges' g, beside the effect in PSC.

For a t contrast ``c`` of a group design ``X`` fitted by ordinary least squares, nilearn gives
the effect ``c'b`` and its variance ``sigma^2 c'(X'X)^-1 c``. The residual variance ``sigma^2``
follows, and under the model one subject's contrast value (its difference map, or its
condition map in a one-sample test) has standard deviation ``sigma ||c||`` for the contrasts
handled here, so

``dz = c'b / (sigma ||c||) = t sqrt(c'(X'X)^-1 c) / ||c||``.

- one-sample route (intercept, no covariates): ``dz = mean / sd = t / sqrt(n)``, Cohen's d of
  the subjects' maps; with covariates, the covariate-adjusted mean over the residual SD.
- paired route: the period-adjusted mean difference over the residual SD of the subjects'
  difference maps (``t / sqrt(n)`` when the period difference is not modelled).
- repeated route (subject + condition + period): a difference of conditions over the SD of one
  subject's difference implied by the within-subject residual variance, ``sigma ||c||``; with two
  conditions and no period term this is exactly ``mean(d) / sd(d)`` of the subject differences.

Hedges' g is ``J dz`` with ``J = 1 - 3 / (4 df - 1)``, ``df`` the residual degrees of freedom of
the design (the df of ``sigma``): ``n - 1`` for a one-sample test without covariates, one less
per covariate or period-difference column, ``(n - 1)(k - 1) - (periods - 1)`` for a complete
repeated design of k conditions. Covariate slopes (``by<Covariate>``), ``periodLinear`` and F
contrasts get no standardised map: they are not means of subject contrast values.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from fmri_pain.bids.derivatives import statmap_path, write_nifti
from fmri_pain.glm.second_level.models import GroupDesign

EFFECT_UNITS = "percent signal change"
"""Units of the group effect maps: the first-level effects are in percent of the voxel mean."""


def hedges_correction(df: float) -> float:
    """Hedges' small-sample bias factor ``J = 1 - 3 / (4 df - 1)`` (NaN for ``df < 1``)."""
    return 1.0 - 3.0 / (4.0 * df - 1.0) if df >= 1 else float("nan")


def standardisable(design: GroupDesign, key: str) -> bool:
    """Whether contrast ``key`` of ``design`` is a mean of subject contrast values (see module)."""
    if design.stat_type(key) != "t":
        return False
    weights = np.asarray(design.contrasts[key], dtype=float)
    used = [c for c, w in zip(design.design.columns, weights) if w != 0]
    if design.route in ("one-sample", "paired"):
        return used == ["intercept"]
    conditions = {str(c) for c in design.rows.get("condition", [])}
    return bool(used) and set(used) <= conditions and bool(np.isclose(weights.sum(), 0.0))


def standardised_effect(effect: np.ndarray, variance: np.ndarray, weights: np.ndarray,
                        design_matrix: np.ndarray) -> np.ndarray:
    """dz of a t contrast: the effect over the model's SD of one subject's contrast value.

    Parameters
    ----------
    effect, variance : ndarray
        The contrast estimate ``c'b`` and its variance ``sigma^2 c'(X'X)^-1 c``, voxel-wise.
    weights : ndarray, shape (n_regressors,)
        The contrast ``c``.
    design_matrix : ndarray, shape (n_maps, n_regressors)
        The design ``X``.

    Returns
    -------
    ndarray
        ``effect / (sigma ||c||)``; 0 where the variance is not positive (outside the mask).
    """
    weights = np.asarray(weights, dtype=float)
    x = np.asarray(design_matrix, dtype=float)
    leverage = float(weights @ np.linalg.pinv(x.T @ x) @ weights)
    effect = np.asarray(effect, dtype=float)
    variance = np.asarray(variance, dtype=float)
    ok = np.isfinite(variance) & (variance > 0) & np.isfinite(effect)
    sigma = np.sqrt(np.where(ok, variance, 1.0) / leverage)
    return np.where(ok, effect / (sigma * np.linalg.norm(weights)), 0.0)


def effect_size_maps(stat_maps: dict[str, nib.Nifti1Image], design: GroupDesign,
                     key: str) -> dict[str, nib.Nifti1Image]:
    """``dz`` and ``hedgesg`` images of contrast ``key`` from its ``effect`` and ``variance`` maps."""
    effect, variance = stat_maps["effect"], stat_maps["variance"]
    dz = standardised_effect(np.asanyarray(effect.dataobj), np.asanyarray(variance.dataobj),
                             design.contrasts[key], design.design.to_numpy(dtype=float))
    g = hedges_correction(design.residual_dof) * dz
    return {name: nib.Nifti1Image(data.astype(np.float32), effect.affine)
            for name, data in (("dz", dz), ("hedgesg", g))}


def _records(design: GroupDesign, key: str) -> dict[str, dict]:
    df = design.residual_dof
    norm = float(np.linalg.norm(np.asarray(design.contrasts[key], dtype=float)))
    sd = ("sigma ||c||, sigma the residual SD of the model and ||c|| = "
          f"{norm:.4g} the norm of the contrast weights")
    dz = {"Description": "within-subject standardised effect dz: the contrast's mean effect over "
                         "the SD of one subject's contrast value implied by the model",
          "Formula": f"dz = effect / ({sd}) = t sqrt(c'(X'X)^-1 c) / ||c||"
                     + (" = t / sqrt(n) (mean / SD of the subjects' maps)"
                        if design.design.shape[1] == 1 else ""),
          "DegreesOfFreedom": df, "Units": "dimensionless (standard deviations)"}
    j = hedges_correction(df)
    g = {"Description": "Hedges' g: dz corrected for its small-sample bias",
         "Formula": f"g = J dz, J = 1 - 3 / (4 df - 1) = {j:.6g}, df = {df} (residual degrees of "
                    "freedom of the design: the df of sigma)",
         "DegreesOfFreedom": df, "HedgesJ": j, "Units": "dimensionless (standard deviations)"}
    effect = {"Description": "the contrast's group mean effect (c'b)", "Units": EFFECT_UNITS,
              "DegreesOfFreedom": df}
    return {"effect": effect, "dz": dz, "hedgesg": g}


def write_effect_size_maps(stat_maps: dict[str, nib.Nifti1Image], design: GroupDesign, key: str,
                           sidecar: dict, *, output_dir: Path, contrast: str, task: str,
                           space: str | None, folder: str | None = None) -> dict[str, Path]:
    """Write ``stat-effect`` (PSC), ``stat-dz`` and ``stat-hedgesg`` of a t contrast, with sidecars.

    Only ``stat-effect`` is written for contrasts :func:`standardisable` rejects.

    Returns
    -------
    dict
        ``{"effect": path[, "dz": path, "hedgesg": path]}``.
    """
    images = {"effect": stat_maps["effect"]}
    if standardisable(design, key):
        images |= effect_size_maps(stat_maps, design, key)
    records = _records(design, key)
    paths = {}
    for stat, img in images.items():
        path = statmap_path(output_dir, contrast=contrast, stat=stat, task=task, space=space,
                            desc=folder)
        if folder:
            path = path.parent / folder / path.name
        paths[stat] = write_nifti(img, path, {**sidecar, "ModelDescription": sidecar.get("Description"),
                                              "StatisticType": stat, **records[stat]})
    return paths
