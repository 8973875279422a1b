"""Maps of responders vs non-responders per condition: nilearn fit and permutation test.

For each condition, the subject maps of that condition (mirrored to the pain side as
in the other group models) enter the two-group design of
:mod:`fmri_pain.glm.second_level.responder_design`; nilearn's ``SecondLevelModel``
gives the parametric t / z / p / effect / variance maps of
``respondersMinusNonResponders``, and the permutation engine (scheme ``permute``:
whole subjects' maps exchanged between the groups, Freedman-Lane, max-|t| FWE) its
``desc-perm`` maps. The contrast is named ``<condition>RespondersMinusNonResponders``
(e.g. ``scsRespondersMinusNonResponders``) in the group folder. A condition whose
groups have fewer than two subjects is skipped with the reason in
``group/pathways/responder_maps.tsv``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids.derivatives import provenance, space_of, statmap_path, write_nifti, write_tsv
from fmri_pain.bids.naming import pathway_table_name
from fmri_pain.bids.nifti import masked_maps
from fmri_pain.glm.inference.maps import write_permutation_maps
from fmri_pain.glm.inference.permutation import permutation_test
from fmri_pain.glm.inference.result import PermutationResult
from fmri_pain.glm.second_level.models import (
    GroupDesign,
    compute_group_contrast,
    fit_second_level,
    load_subject_map,
)
from fmri_pain.glm.second_level.outputs import GroupResult
from fmri_pain.glm.second_level.responder_design import CONTRAST, responder_design

LOGGER = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("condition", "contrast", "n_responders", "n_non_responders", "n_without_status",
                   "max_abs_t", "min_p_fwe", "n_rearrangements", "exhaustive", "status", "reason")


@dataclass
class ResponderMapsOutput:
    """What the responder map route wrote."""

    paths: dict[str, dict[str, Path]] = field(default_factory=dict)
    """condition -> map key (``t``, ``z``, ``p``, ``effect``, ``variance``, ``z_fwe`` ...) -> file."""
    summary: Path | None = None
    """``group/pathways/responder_maps.tsv``: one row per condition, written or skipped and why."""
    skipped: list[str] = field(default_factory=list)


def responder_map_inference(images: list[nib.Nifti1Image], rows: pd.DataFrame, mask_img: nib.Nifti1Image,
                            *, n_perm: int, seed: int = 0, n_jobs: int = 1
                            ) -> tuple[GroupDesign, dict[str, nib.Nifti1Image], PermutationResult | None]:
    """Fit and permutation-test the responder contrast on one condition's maps.

    Parameters
    ----------
    images : list of Nifti1Image
        One map per row of ``rows``, on the mask's grid.
    rows : DataFrame
        subject and boolean ``responder`` per map.
    mask_img : Nifti1Image
    n_perm : int
        Random relabellings (0: parametric maps only); all distinct ones when there are no more.

    Returns
    -------
    design : GroupDesign
    maps : dict
        nilearn's ``t``, ``z``, ``p``, ``effect``, ``variance`` maps.
    result : PermutationResult or None
    """
    design = responder_design(rows)
    model = fit_second_level(images, design, mask_img=mask_img)
    maps = compute_group_contrast(model, design, CONTRAST)
    result = None
    if n_perm > 0:
        Y = masked_maps(images, mask_img)
        result = permutation_test(Y, design.design.to_numpy(), design.contrasts[CONTRAST], n_perm=n_perm,
                                  scheme="permute", two_sided=True,
                                  mask=np.asanyarray(mask_img.dataobj).astype(bool),
                                  random_state=seed, n_jobs=n_jobs)
    return design, maps, result


def contrast_label(condition: str) -> str:
    """``SCS`` -> ``scsRespondersMinusNonResponders``."""
    return condition.lower() + CONTRAST[0].upper() + CONTRAST[1:]


def run_responder_maps(group: GroupResult, status: pd.DataFrame, *, n_perm: int, seed: int = 0,
                       alpha: float = 0.05, n_jobs: int = 1) -> ResponderMapsOutput:
    """Responder-vs-non-responder maps for every condition of ``status``.

    Parameters
    ----------
    group : GroupResult
        The parametric group level (subject maps, mask, mirrored subjects, task).
    status : DataFrame
        subject, condition, responder (``responders.tsv`` of the pathway analysis).
    n_perm, seed, n_jobs
        Permutations (the ``responders.map_permutations`` key), seed and threads of the engine.
    alpha : float
        FWE level of the thresholded ``desc-perm`` z map.
    """
    out = ResponderMapsOutput()
    mask_img = nib.load(group.mask)
    space = space_of(group.mask)
    maps_table = group.subject_maps.dropna(subset=["condition"])
    status = status.assign(subject=status["subject"].astype(str))
    rows_out = []
    for condition in dict.fromkeys(status["condition"].astype(str)):
        label = contrast_label(condition)
        cond_maps = maps_table[(maps_table["condition"].astype(str) == condition)
                               & (maps_table["contrast"] == condition.lower())]
        merged = cond_maps.assign(subject=cond_maps["subject"].astype(str)).merge(
            status[status["condition"].astype(str) == condition][["subject", "responder"]],
            on="subject", how="left")
        without = int(merged["responder"].isna().sum())
        merged = merged.dropna(subset=["responder"]).reset_index(drop=True)
        merged["responder"] = merged["responder"].astype(bool)
        row = {"condition": condition, "contrast": label, "n_responders": int(merged["responder"].sum()),
               "n_non_responders": int((~merged["responder"]).sum()), "n_without_status": without}
        try:
            flips = [s in group.mirrored for s in merged["subject"]]
            images = [load_subject_map(p, f) for p, f in zip(merged["effect"], flips)]
            design, maps, result = responder_map_inference(images, merged, mask_img, n_perm=n_perm,
                                                           seed=seed, n_jobs=n_jobs)
        except ValueError as exc:
            reason = f"{condition}: responder maps not computed: {exc}"
            LOGGER.warning(reason)
            out.skipped.append(reason)
            rows_out.append({**row, "status": "skipped", "reason": str(exc)})
            continue
        subjects = list(merged["subject"])
        sidecar = provenance(list(merged["effect"]), {"n_perm": n_perm, "seed": seed}, dataset=group.output_dir,
                             Description=f"{condition} ON > OFF maps of responders minus non-responders "
                                         "(two-group cell-means model, nilearn SecondLevelModel, "
                                         "ordinary least squares per voxel)",
                             ModelRoute=design.route, DesignColumns=list(design.design.columns),
                             ContrastWeights=design.contrasts[CONTRAST].tolist(),
                             DegreesOfFreedom=design.residual_dof,
                             Subjects=[f"sub-{s}" for s in subjects],
                             Responders=[f"sub-{s}" for s, r in zip(subjects, merged["responder"]) if r],
                             MirroredSubjects=[f"sub-{s}" for s, f in zip(subjects, flips) if f],
                             SubjectsWithoutStatus=without)
        paths = {}
        for stat, img in maps.items():
            path = statmap_path(group.output_dir, contrast=label, stat=stat, task=group.task, space=space)
            path.parent.mkdir(parents=True, exist_ok=True)
            paths[stat] = write_nifti(img, path, sidecar={**sidecar, "StatisticType": stat})
        t = np.asanyarray(maps["t"].dataobj)[np.asanyarray(mask_img.dataobj).astype(bool)]
        row.update(max_abs_t=float(np.nanmax(np.abs(t))) if t.size else np.nan, status="written", reason="")
        if result is not None:
            paths.update(write_permutation_maps(
                result, mask_img, group.output_dir, contrast=label, task=group.task, space=space,
                alpha=alpha, sidecar={**sidecar, "Description": sidecar["Description"] + "; permutation "
                                      "test: whole subjects' maps exchanged between the groups (scheme "
                                      "permute), max-|t| FWE"}))
            row.update(min_p_fwe=float(result.p_fwe.min()), n_rearrangements=result.n_rearrangements,
                       exhaustive=bool(result.exhaustive))
        out.paths[condition] = paths
        rows_out.append(row)
    if rows_out:
        out.summary = write_tsv(pd.DataFrame(rows_out, columns=list(SUMMARY_COLUMNS)),
                                Path(group.output_dir) / "group" / "pathways" / pathway_table_name("responder_maps"),
                                sidecar={"Description": "responder-vs-non-responder maps per condition: "
                                                        "written, or skipped and why",
                                         "min_p_fwe": {"Description": "smallest max-|t| FWE p of the "
                                                                      "permutation test"}})
    return out
