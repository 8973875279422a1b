"""What the group level writes: group maps, thresholded maps, cluster tables, designs, sidecars.

Also the records of what was written (:class:`GroupMap`, :class:`GroupResult`) that the
permutation stage and the report read.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.anatomy.labels import PEAK_ATLASES, SOURCE_SPACES
from fmri_pain.bids.derivatives import (bids_filename, software_versions, statmap_path, write_json, write_nifti,
                                        write_tsv)
from fmri_pain.glm.second_level.models import GroupDesign, load_subject_map


@dataclass
class GroupMap:
    """One group-level contrast as written: where, how, from what."""

    contrast: str
    key: str
    route: str
    stat_type: str
    paths: dict[str, Path]
    design: GroupDesign
    images: list[Path]
    flips: list[bool]
    thresholds: dict[str, float] = field(default_factory=dict)
    clusters: dict[str, pd.DataFrame] = field(default_factory=dict)
    subjects: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def dof(self) -> int | list[int]:
        """Degrees of freedom of the statistic (t: residual df; F: [numerator, denominator])."""
        return self.design.degrees_of_freedom(self.key)

    @property
    def n_maps(self) -> int:
        """Number of input maps."""
        return len(self.images)

    def load_images(self) -> list[nib.Nifti1Image]:
        """The input maps as analysed (mirrored for patients whose pain side was flipped)."""
        return [load_subject_map(p, f) for p, f in zip(self.images, self.flips)]


@dataclass
class GroupResult:
    """Everything the group level wrote, for reports and later stages."""

    output_dir: Path
    task: str
    maps: list[GroupMap]
    subjects: list[str]
    left_out: list[str]
    mask: Path
    designs: dict[str, Path]
    subject_maps: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    """Every decision that changed the analysis from the one the spec asks for, in order."""
    first_level: dict[str, Any] | None = None
    """The first-level spec sections (``first_level``, ``events``) the subject maps were made
    with, as recorded in their sidecars (None when not recorded)."""
    mirrored: list[str] = field(default_factory=list)
    """Subjects whose maps were mirrored left-right."""
    carryover_shift: pd.DataFrame | None = None
    """With ``group.carryover``: per condition contrast, how much its effect map moves when
    carry-over enters the repeated model (:mod:`~fmri_pain.glm.second_level.carryover_shift`)."""

    @property
    def warnings_by_map(self) -> dict[str, list[str]]:
        """Warnings of each written map (``route:contrast``), for reports."""
        return {f"{m.route}:{m.contrast}": m.warnings for m in self.maps if m.warnings}


def section_record(section: Any) -> dict[str, Any]:
    """A spec section as the plain JSON-able dict recorded under a sidecar's ``Parameters``.

    The same values as that section in :meth:`~fmri_pain.config.spec.AnalysisSpec.to_dict`.
    """
    return json.loads(json.dumps(dataclasses.asdict(section), default=str))


def model_record(design: GroupDesign, key: str, subjects: list[str], mirrored: list[str],
                 warnings: list[str]) -> dict[str, Any]:
    """The sidecar fields that describe a group map's model (CamelCase, as BIDS).

    Parameters
    ----------
    design : GroupDesign
    key : str
        The contrast of ``design.contrasts``.
    subjects, mirrored : list of str
        Subjects whose maps entered; those mirrored left-right.
    warnings : list of str
        Decisions that changed this model from the one the spec asks for.
    """
    weights = np.asarray(design.contrasts[key], dtype=float)
    return {
        "Description": _DESCRIPTIONS[design.route],
        "ModelRoute": design.route,
        "ModelTerms": design.terms,
        "Estimator": (f"nilearn {software_versions().get('nilearn', '?')} SecondLevelModel: "
                      "ordinary least squares, one model per voxel"),
        "DesignColumns": [str(c) for c in design.design.columns],
        "ContrastWeights": weights.tolist(),
        "ContrastStatistic": design.stat_type(key),
        "DegreesOfFreedom": design.degrees_of_freedom(key),
        "NumberOfSubjects": len(subjects),
        "NumberOfMaps": len(design.design),
        "Subjects": [f"sub-{s}" for s in subjects],
        "Covariates": design.covariates,
        **({"Sites": {str(site): design.sites.count(site) for site in sorted(set(design.sites))},
            "SiteModelled": any(str(c).startswith("site-") for c in design.design.columns)}
           if design.sites else {}),
        "MirroredSubjects": [f"sub-{s}" for s in mirrored],
        "Warnings": list(warnings),
    }


def spatial_reference(space: str | None, mask_img: nib.Nifti1Image, mirrored: bool) -> dict:
    """The ``SpatialReference`` sidecar field of a group map: space, grid, resampling done."""
    zooms = [round(float(z), 4) for z in mask_img.header.get_zooms()[:3]]
    record = {"Space": space, "Grid": {"Shape": list(mask_img.shape[:3]), "VoxelSizeMm": zooms},
              "Resampling": "none: every subject map is on this grid (maps on other grids are refused)"}
    if mirrored:
        record["Resampling"] += "; maps mirrored left-right were resampled back onto it (linear)"
        if space and space.endswith("Asym"):
            record["Resampling"] += (f"; {space} is asymmetric, so a mirrored voxel lands at the mirror "
                                     "position, not exactly on its homologue")
    return record


def write_group_mask(mask_img: nib.Nifti1Image, output_dir: Path, task: str,
                     space: str | None) -> Path:
    """``group/task-<task>[_space-<space>]_desc-group_mask.nii.gz``."""
    return write_nifti(mask_img, output_dir / "group" / bids_filename(
        {"task": task, "space": space, "desc": "group"}, "mask", ".nii.gz"))


def write_design(design: GroupDesign, record: dict[str, Any], names: dict[str, str], *,
                 output_dir: Path, task: str, space: str | None, label: str,
                 folder: str | None = None) -> Path:
    """The design matrix TSV (with subject, condition, period), its sidecar and ``statmap.json``.

    ``statmap.json`` (same entities as the design) holds the model-level metadata as nilearn's
    ``save_glm_to_bids`` writes it: ``Description`` and ``ModelParameters``.

    Parameters
    ----------
    record : dict
        :func:`model_record` of the design (its per-contrast fields are left out).
    names : dict
        Design contrast key -> output contrast name (the sidecar's ``Contrasts``).
    label : str
        The ``contrast-`` entity (unused for the repeated-measures design).
    folder : str, optional
        Sub-folder of ``group/`` (and ``desc-``), e.g. ``paired``.
    """
    group_dir = output_dir / "group" / (folder or "")
    path = group_dir / bids_filename(
        {"task": task, "space": space,
         "contrast": label if design.route != "repeated" else None,
         "desc": "repeated" if design.route == "repeated" else folder}, "design", ".tsv")
    record = dict(record)
    for field_name in ("ContrastWeights", "ContrastStatistic", "DegreesOfFreedom"):
        record.pop(field_name)
    record |= {"ResidualDegreesOfFreedom": design.residual_dof,
               "Contrasts": {names.get(k, k): np.asarray(w).tolist()
                             for k, w in design.contrasts.items()}}
    write_tsv(pd.concat([design.rows.reset_index(drop=True)[["subject"] + [
        c for c in ("condition", "period") if c in design.rows]], design.design], axis=1),
        path, sidecar=record)
    # the model-level metadata nilearn's save_glm_to_bids writes beside the design
    write_json({"Description": record["Description"],
                "ModelParameters": {k: v for k, v in record.items() if k != "Description"}},
               path.with_name(path.name[: -len("_design.tsv")] + "_statmap.json"))
    return path


def write_contrast_maps(stat_maps: dict[str, nib.Nifti1Image], stat_type: str, sidecar: dict, *,
                        output_dir: Path, contrast: str, task: str, space: str | None,
                        folder: str | None = None) -> dict[str, Path]:
    """The maps nilearn's ``save_glm_to_bids`` writes for a contrast, each with its sidecar.

    ``stat-t`` (or ``stat-F``), ``stat-z``, ``stat-p`` and ``stat-variance``; for an F
    contrast also ``stat-effect`` (a t contrast's ``stat-effect`` is written, with its units,
    by :func:`~fmri_pain.glm.second_level.effect_sizes.write_effect_size_maps`).

    Returns
    -------
    dict
        ``{stat_type: path, "z": path, "p": path, "variance": path[, "effect": path]}``.
    """
    paths = {}
    stats = (stat_type, "z", "p", "variance") + (("effect",) if stat_type == "F" else ())
    for stat in stats:
        if stat not in stat_maps:
            continue
        path = statmap_path(output_dir, contrast=contrast, stat=stat, task=task,
                            space=space, desc=folder)
        if folder:
            path = path.parent / folder / path.name
        meta = {**sidecar, "StatisticType": stat, **_MAP_RECORDS[stat_type].get(stat, {})}
        if stat == "z":
            meta["ConvertedFrom"] = (f"{stat_type} statistic with the same degrees of "
                                     "freedom, through its p value")
        paths[stat] = write_nifti(stat_maps[stat], path, meta)
    return paths


_MAP_RECORDS: dict[str, dict[str, dict[str, str]]] = {
    "t": {"p": {"StatisticDescription": "one-sided p value of the t statistic (upper tail), "
                                        "as nilearn computes it; z = Phi^-1(1 - p)"},
          "variance": {"StatisticDescription": "variance of the contrast estimate c'b "
                                               "(stat-effect): sigma^2 c'(X'X)^-1 c"}},
    "F": {"p": {"StatisticDescription": "p value of the F statistic (upper tail)"},
          "variance": {"StatisticDescription": "residual variance sigma^2 of the model (nilearn's "
                                               "F-contrast variance): F = sum(effect^2) / "
                                               "rows / variance"},
          "effect": {"StatisticDescription": "one volume per contrast row: the whitened contrast "
                                             "estimate (C (X'X)^-1 C')^(-1/2) C b, as nilearn "
                                             "computes it"}},
}


def write_thresholded_map(img: nib.Nifti1Image, threshold: float, clusters: pd.DataFrame,
                          sidecar: dict, *, method: str, alpha: float, two_sided: bool,
                          min_cluster_size: int, output_dir: Path, contrast: str, task: str,
                          space: str | None) -> Path:
    """A thresholded z map (``desc-fdr`` / ``desc-fwe``) and its labelled cluster table.

    The sidecar's ``Threshold`` records the method, alpha and z threshold (null, with
    the reason, when no voxel survives).
    """
    path = statmap_path(output_dir, contrast=contrast, stat="z", task=task, space=space, desc=method)
    write_nifti(img, path, {**sidecar, "StatisticType": "z", "Threshold": {
        "Method": _THRESHOLD_METHODS[method], "Alpha": alpha,
        "ZThreshold": threshold if np.isfinite(threshold) else None,
        "TwoSided": two_sided, "MinClusterSize": min_cluster_size,
        "Description": "ZThreshold null: no voxel survives, the map is empty"
        if not np.isfinite(threshold) else "voxels with |z| below ZThreshold set to 0"
        if two_sided else "voxels with z below ZThreshold set to 0"}})
    write_tsv(clusters, path.with_name(path.name.replace("_stat-z_statmap.nii.gz", "_clusters.tsv")),
              sidecar={"LabelAtlases": {a: SOURCE_SPACES[a] for a in PEAK_ATLASES},
                       "SpaceMismatch": f"peaks in {space} are labelled at the same MNI "
                                        "coordinates in each atlas's own template, without "
                                        "registration between templates (a few mm locally)"})
    return path


_THRESHOLD_METHODS = {"fdr": "FDR (Benjamini-Hochberg) on the z map's p values",
                      "fwe": "Bonferroni over the group mask's voxels"}

_DESCRIPTIONS = {
    "one-sample": "One-sample test over subjects (intercept; covariates mean-centred).",
    "repeated": "Repeated-measures crossover model on all subject x condition maps "
                "(terms as fitted: see ModelTerms).",
    "sequence": "Between-subject sequence test: each subject's mean condition map, one indicator "
                "per treatment sequence (cell means); sequenceF tests every difference.",
    "paired": "Paired route: one-sample test of within-subject difference maps "
              "(terms as fitted: see ModelTerms).",
    "two-group": "Between-subject two-group test (group.between_subjects): one map per subject, one "
                 "indicator per group (cell means), t test of the first group minus the second; "
                 "covariates mean-centred.",
    "covariate": "Between-subject covariate test (group.between_subjects): one map per subject, "
                 "intercept + the mean-centred covariate, t test of its slope; other covariates "
                 "mean-centred.",
}
