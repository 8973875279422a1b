"""How much the condition contrasts' effect maps move when carry-over enters the model.

Both repeated-measures models (with and without the carry-over term) are fitted to
the same maps; per condition contrast, the shift map is the effect with carry-over
minus the effect without, summarised within the group mask (median and maximum of
its absolute value, next to the median absolute effect for scale).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.glm.second_level.carryover import COLUMN_PREFIX
from fmri_pain.glm.second_level.models import GroupDesign, fit_second_level

SHIFT_COLUMNS = ("contrast", "median_abs_shift", "max_abs_shift", "median_abs_effect_without",
                 "n_voxels")


def carryover_shift(images: list[nib.Nifti1Image], with_carryover: GroupDesign,
                    without_carryover: GroupDesign, mask_img: nib.Nifti1Image,
                    smoothing_fwhm: float | None = None) -> pd.DataFrame:
    """Per t contrast shared by both designs (the condition differences): shift summary.

    Parameters
    ----------
    images : list of Nifti1Image
        The maps both designs describe (same rows).
    with_carryover, without_carryover : GroupDesign
        The repeated-measures designs with and without the carry-over columns.
    mask_img : Nifti1Image
        The group mask (the summaries are over its voxels).

    Returns
    -------
    DataFrame with columns ``SHIFT_COLUMNS``; empty when the first design has no
    carry-over column.
    """
    if not any(str(c).startswith(COLUMN_PREFIX) for c in with_carryover.design.columns):
        return pd.DataFrame(columns=list(SHIFT_COLUMNS))
    mask = np.asanyarray(mask_img.dataobj).astype(bool)
    models = [fit_second_level(images, d, mask_img, smoothing_fwhm)
              for d in (with_carryover, without_carryover)]
    rows = []
    for name, weights in with_carryover.contrasts.items():
        if (with_carryover.stat_type(name) != "t" or name not in without_carryover.contrasts
                or name.startswith("period")):
            continue
        effects = [np.asanyarray(m.compute_contrast(d.contrasts[name], second_level_stat_type="t",
                                                    output_type="effect_size").dataobj)[mask]
                   for m, d in zip(models, (with_carryover, without_carryover))]
        shift = np.abs(effects[0] - effects[1])
        rows.append({"contrast": name, "median_abs_shift": float(np.median(shift)),
                     "max_abs_shift": float(shift.max()),
                     "median_abs_effect_without": float(np.median(np.abs(effects[1]))),
                     "n_voxels": int(mask.sum())})
    return pd.DataFrame(rows, columns=list(SHIFT_COLUMNS))


def shift_record(row: pd.Series) -> dict:
    """The ``CarryoverShift`` sidecar field of one contrast's maps."""
    return {"Description": "effect with carry-over in the model minus the effect without, "
                           "absolute value over the group mask",
            "MedianAbsShift": float(row["median_abs_shift"]),
            "MaxAbsShift": float(row["max_abs_shift"]),
            "MedianAbsEffectWithoutCarryover": float(row["median_abs_effect_without"])}
