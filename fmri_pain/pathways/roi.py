"""ROI effects: per subject x session, the ON > OFF effect in every pathway node."""

from __future__ import annotations

from collections.abc import Callable

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.errors import InputError
from fmri_pain.pathways.atlas import PathwayAtlas, atlas_on_grid
from fmri_pain.pathways.nodes import normalise_pain_side

ID_COLUMNS = ("subject", "session", "condition", "period", "sequence")
REQUIRED_COLUMNS = ("subject", "condition", "effect")


def load_map(path, subject, session=None, kind: str = "effect") -> nib.Nifti1Image:
    """Load a first-level map (unreadable: an :class:`InputError` naming the file and subject)."""
    where = f"sub-{subject}" + (f" ses-{session}" if session not in (None, "") and not pd.isna(session) else "")
    try:
        img = nib.load(str(path))
        img.get_fdata(dtype=np.float32)  # force the read: catches empty/truncated files
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise InputError(f"cannot read the {kind} map {path} of {where}: {exc}") from exc
    if img.ndim > 3 and img.shape[3] != 1:
        raise InputError(f"the {kind} map {path} of {where} is 4D {img.shape}; expected one volume")
    return img


def node_values(effect: np.ndarray, variance: np.ndarray | None, labels: np.ndarray,
                indices) -> pd.DataFrame:
    """Mean and median effect, mean variance and voxel count per node label.

    Voxels outside the map's brain mask (non-finite, or zero variance) are ignored.

    Returns
    -------
    DataFrame indexed by label with columns effect, effect_median, variance, n_voxels.
    """
    effect = effect.reshape(labels.shape)
    valid = np.isfinite(effect)
    if variance is not None:
        variance = variance.reshape(labels.shape)
        valid &= np.isfinite(variance) & (variance > 0)
    else:
        valid &= effect != 0
    rows = {}
    for index in indices:
        sel = (labels == index) & valid
        n = int(sel.sum())
        if n == 0:
            rows[index] = (np.nan, np.nan, np.nan, 0)
            continue
        values = effect[sel]
        var = float(np.mean(variance[sel])) if variance is not None else np.nan
        rows[index] = (float(values.mean()), float(np.median(values)), var, n)
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["effect", "effect_median", "variance", "n_voxels"])


def extract_roi_effects(maps: pd.DataFrame, atlas_for: Callable[[str], PathwayAtlas],
                        *, default_pain_side: str = "right") -> pd.DataFrame:
    """Node effects of every subject x session map, in long format.

    Parameters
    ----------
    maps : DataFrame
        One row per subject x session: subject, session, condition, period,
        sequence, effect (path of the ON > OFF effect map), variance (path or
        missing), plus covariate columns (pain_side, pain_relief, ...).
    atlas_for : callable
        ``pain_side -> PathwayAtlas`` (cached by the caller); the atlas is put on
        each map's grid when the grids differ.
    default_pain_side : str
        Used where ``pain_side`` is missing.

    Returns
    -------
    DataFrame
        Columns subject, session, condition, period, sequence, node, pathway,
        hemisphere, effect (mean), effect_median, variance (mean voxel variance:
        the variance of the node mean if the voxels were fully correlated),
        n_voxels, then the covariates of ``maps``.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in maps.columns]
    if missing:
        raise ValueError(f"the maps table lacks columns {missing}")
    maps = maps.reset_index(drop=True).copy()
    for col in ID_COLUMNS:
        if col not in maps.columns:
            maps[col] = np.nan
    covariates = [c for c in maps.columns if c not in ID_COLUMNS + ("effect", "variance")]
    grids: dict[tuple, PathwayAtlas] = {}
    frames = []
    for _, row in maps.iterrows():
        side = normalise_pain_side(row.get("pain_side"), default_pain_side)
        eff_img = load_map(row["effect"], row["subject"], row["session"], "effect")
        var = None
        if "variance" in maps.columns and not pd.isna(row["variance"]):
            var_img = load_map(row["variance"], row["subject"], row["session"], "variance")
            if var_img.shape[:3] != eff_img.shape[:3]:
                raise InputError(f"variance map {row['variance']} of sub-{row['subject']} has shape "
                                 f"{var_img.shape[:3]}, its effect map {eff_img.shape[:3]}")
            var = var_img.get_fdata(dtype=np.float32)
        key = (side, eff_img.shape[:3], eff_img.affine.round(4).tobytes())
        if key not in grids:
            grids[key] = atlas_on_grid(atlas_for(side), eff_img)
        atlas = grids[key]
        labels = np.asarray(atlas.img.dataobj)
        values = node_values(eff_img.get_fdata(dtype=np.float32), var, labels, atlas.nodes["index"])
        values = atlas.nodes.set_index("index")[["name", "pathway", "hemisphere"]].join(values)
        values = values.rename(columns={"name": "node"}).reset_index(drop=True)
        for col in ID_COLUMNS:
            values.insert(ID_COLUMNS.index(col), col, row[col])
        for col in covariates:
            values[col] = row[col]
        frames.append(values)
    out = pd.concat(frames, ignore_index=True)
    out["subject"] = out["subject"].astype(str)
    return out
