"""The group level: collect subject maps, fit the crossover models, threshold, write.

Reads the participant level's subject maps (``sub-XX/func/*_statmap.nii.gz``)
and the trial layout (conditions, periods, covariates); writes ``group/``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.derivatives import bids_filename, provenance, statmap_path, write_nifti, write_tsv
from fmri_pain.anatomy import PEAK_ATLASES, SOURCE_SPACES
from fmri_pain.errors import InputError
from fmri_pain.glm.second_level import (GroupDesign, compute_group_contrast, covariate_label,
                                        fit_second_level, group_mask, load_subject_map,
                                        needs_flip, one_sample_design, paired_design,
                                        repeated_measures_design)
from fmri_pain.glm.thresholds import cluster_table, threshold_map
from fmri_pain.layout import Run
from fmri_pain.spec import AnalysisSpec
from fmri_pain.trial import difference_contrasts, trial_contrasts

LOGGER = logging.getLogger(__name__)

_SUBJECT_MAP = re.compile(
    r"^sub-(?P<subject>[a-zA-Z0-9]+)_task-(?P<task>[a-zA-Z0-9]+)(?:_space-(?P<space>[a-zA-Z0-9]+))?"
    r"_contrast-(?P<contrast>[a-zA-Z0-9]+)_stat-(?P<stat>effect|variance|z)_statmap\.nii\.gz$"
)


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


def collect_subject_maps(output_dir: Path, runs: list[Run], task: str,
                         space: str | None = None) -> pd.DataFrame:
    """Subject-level maps written by the participant level, with their design information.

    Parameters
    ----------
    space : str, optional
        Keep only maps in this template space; None keeps every space (the ``space``
        column tells them apart: :func:`run_group` refuses to mix them).

    Returns
    -------
    DataFrame
        One row per subject x contrast: ``subject``, ``contrast``, ``space``, ``effect``,
        ``variance``, ``z`` (paths), plus ``condition``, ``period``,
        ``sequence`` and covariates for per-condition maps.
    """
    records = {}
    for path in sorted(Path(output_dir).glob("sub-*/func/sub-*_statmap.nii.gz")):
        match = _SUBJECT_MAP.match(path.name)
        if not match or match["task"] != task or (space is not None and match["space"] != space):
            continue
        key = (match["subject"], match["contrast"], match["space"])
        records.setdefault(key, {"subject": key[0], "contrast": key[1],
                                 "space": key[2]})[match["stat"]] = path
    table = pd.DataFrame(list(records.values()))
    if table.empty:
        return table
    table = table.dropna(subset=["effect", "variance"])
    info = {}
    for run in runs:
        label = run.condition.lower() if run.condition != run.task else "stim"
        info[(run.subject, label)] = {"condition": run.condition, "period": run.period,
                                      "sequence": run.sequence, "session": run.session,
                                      **run.covariates}
    extra = pd.DataFrame([{"subject": s, "contrast": c, **v} for (s, c), v in info.items()])
    if extra.empty:
        return table
    return table.merge(extra, on=["subject", "contrast"], how="left")


def run_group(output_dir: Path | str, runs: list[Run], spec: AnalysisSpec) -> GroupResult:
    """Fit and write every group-level model the available subject maps support.

    Parameters
    ----------
    output_dir : path
        The derivatives folder holding the participant level's outputs.
    runs : list of Run
        The dataset's runs (for conditions, periods and covariates).
    spec : AnalysisSpec

    Returns
    -------
    GroupResult
    """
    output_dir = Path(output_dir)
    task = spec.task or runs[0].task
    maps = collect_subject_maps(output_dir, runs, task, spec.space)
    expected = sorted({r.subject for r in runs})
    if maps.empty:
        raise RuntimeError(f"no subject maps under {output_dir}: run the participant level first")
    space = _one_space(maps)
    subjects = sorted(maps["subject"].unique())
    left_out = [s for s in expected if s not in subjects]
    if left_out:
        LOGGER.warning("group level leaves out subjects without maps: %s", ", ".join(left_out))

    flip_to = spec.group.flip_to_pain_side
    sides = maps["pain_side"] if "pain_side" in maps else pd.Series(None, index=maps.index)
    maps = maps.assign(flip=[needs_flip(s, flip_to) for s in sides])
    if maps["flip"].any():
        LOGGER.info("mirroring the maps of %s so that every patient's pain is on the %s",
                    ", ".join(f"sub-{s}" for s in sorted(maps.loc[maps["flip"], "subject"].unique())),
                    flip_to)
    mask_img = group_mask([load_subject_map(p, f) for p, f in
                           zip(maps["effect"], maps["flip"])])
    mask_path = write_nifti(mask_img, output_dir / "group" / bids_filename(
        {"task": task, "space": space, "desc": "group"}, "mask", ".nii.gz"))
    writer = _GroupWriter(output_dir, task, spec, mask_img, space)

    conditions = tuple(c for c in spec.conditions if (maps.get("condition") == c).any()) \
        if "condition" in maps else ()
    contrasts = trial_contrasts(spec.conditions)
    differences = difference_contrasts(contrasts)
    condition_labels = {c.lower() for c in spec.conditions}

    for contrast, rows in maps.groupby("contrast", sort=True):
        if contrast in differences:
            continue  # differences come from the repeated-measures and paired routes
        covs = _available_covariates(rows, spec.group.covariates) if contrast in condition_labels else ()
        design = one_sample_design(rows, covs)
        if len(rows) < 2:
            LOGGER.warning("contrast %s: only %d subject map(s), skipped", contrast, len(rows))
            continue
        writer.fit_and_write(rows, design, {"intercept": contrast} | {
            f"by{covariate_label(c)}": f"{contrast}By{covariate_label(c)}" for c in covs})

    if len(conditions) >= 2:
        cond_rows = maps[maps["condition"].isin(conditions)
                         & (maps["contrast"] == maps["condition"].str.lower())]
        covs = _available_covariates(cond_rows, spec.group.covariates)
        design = repeated_measures_design(cond_rows, spec.conditions, contrasts, covs)
        writer.fit_and_write(cond_rows, design,
                             {name: name for name in design.contrasts})
        for name, con in differences.items():
            rows = maps[maps["contrast"] == name]
            if len(rows) < 3:
                continue
            rows = rows.assign(period_difference=_period_difference(rows, con, maps))
            design = paired_design(rows, _available_covariates(rows, spec.group.covariates))
            writer.fit_and_write(rows, design, {"intercept": name}, folder="paired")

    return GroupResult(output_dir, task, writer.written, subjects, left_out, mask_path,
                       writer.designs, maps)


def _available_covariates(rows: pd.DataFrame, covariates: tuple[str, ...]) -> tuple[str, ...]:
    usable = []
    for cov in covariates:
        if cov not in rows:
            LOGGER.warning("covariate %s not found in sessions.tsv / participants.tsv", cov)
            continue
        if pd.to_numeric(rows[cov], errors="coerce").notna().all():
            usable.append(cov)
        else:
            LOGGER.warning("covariate %s has missing values here; left out of this model", cov)
    return tuple(usable)


def _period_difference(rows: pd.DataFrame, contrast, maps: pd.DataFrame) -> list[float]:
    """Weighted period of each subject's conditions under a difference contrast."""
    periods = maps.dropna(subset=["condition"]).set_index(["subject", "condition"])["period"]
    out = []
    for subject in rows["subject"]:
        value = 0.0
        for cond, weight in contrast.as_dict().items():
            period = periods.get((subject, cond))
            if period is None or pd.isna(period):
                value = np.nan
                break
            value += weight * float(period)
        out.append(value)
    return out


def _one_space(maps: pd.DataFrame) -> str | None:
    """The template space of all subject maps, and one grid; maps in different ones are refused."""
    labels = maps["space"].fillna("<none>")
    spaces = labels.unique()
    if len(spaces) > 1:
        which = "; ".join(
            f"{s}: " + ", ".join(f"sub-{x}" for x in sorted(maps.loc[labels == s, "subject"].unique()))
            for s in sorted(spaces))
        raise InputError(f"subject maps in different template spaces ({which}); refusing to mix them at "
                         "the group level: set 'space' in the spec to analyse one of them")
    grids = {}
    for path in maps["effect"]:
        img = nib.load(path)
        grids.setdefault((img.shape[:3], tuple(np.round(img.affine, 4).ravel())), Path(path).name)
    if len(grids) > 1:
        names = ", ".join(f"{name} {shape}" for (shape, _), name in grids.items())
        raise InputError(f"subject maps on different grids of one space ({names}); the group level does "
                         "not resample them: run the participant level at one resolution")
    space = spaces[0]
    return None if space == "<none>" else space


def _spatial_reference(space: str | None, mask_img: nib.Nifti1Image, mirrored: bool) -> dict:
    zooms = [round(float(z), 4) for z in mask_img.header.get_zooms()[:3]]
    record = {"Space": space, "Grid": {"Shape": list(mask_img.shape[:3]), "VoxelSizeMm": zooms},
              "Resampling": "none: every subject map is on this grid (maps on other grids are refused)"}
    if mirrored:
        record["Resampling"] += "; maps mirrored left-right were resampled back onto it (linear)"
        if space and space.endswith("Asym"):
            record["Resampling"] += (f"; {space} is asymmetric, so a mirrored voxel lands at the mirror "
                                     "position, not exactly on its homologue")
    return record


class _GroupWriter:
    """Fits group designs and writes maps, thresholded maps, tables and designs."""

    def __init__(self, output_dir: Path, task: str, spec: AnalysisSpec,
                 mask_img: nib.Nifti1Image, space: str | None) -> None:
        self.output_dir = output_dir
        self.space = space
        self.task = task
        self.spec = spec
        self.mask_img = mask_img
        self.written: list[GroupMap] = []
        self.designs: dict[str, Path] = {}

    def fit_and_write(self, rows: pd.DataFrame, design: GroupDesign,
                      names: dict[str, str], folder: str | None = None) -> None:
        images, flips = list(rows["effect"]), list(rows["flip"])
        if len(images) <= np.linalg.matrix_rank(design.design.to_numpy()):
            LOGGER.warning("%s model (%s) skipped: %d maps leave no residual degrees of "
                           "freedom for %d regressors", design.route, ", ".join(names.values()),
                           len(images), design.design.shape[1])
            return
        model = fit_second_level([load_subject_map(p, f) for p, f in zip(images, flips)],
                                 design, self.mask_img, self.spec.group.smoothing_fwhm)
        group_dir = self.output_dir / "group" / (folder or "")
        label = names.get("intercept") or design.route
        design_path = group_dir / bids_filename(
            {"task": self.task, "space": self.space,
             "contrast": label if design.route != "repeated" else None,
             "desc": "repeated" if design.route == "repeated" else folder}, "design", ".tsv")
        write_tsv(pd.concat([design.rows.reset_index(drop=True)[["subject"] + [
            c for c in ("condition", "period") if c in design.rows]], design.design], axis=1),
            design_path)
        self.designs[f"{design.route}:{label}"] = design_path
        inputs = {Path(p).name: p for p in images}
        for key, name in names.items():
            if key not in design.contrasts:
                continue
            stat_maps = compute_group_contrast(model, design, key)
            stat_type = design.stat_type(key)
            sidecar = provenance(inputs, {
                "route": design.route, "design_columns": list(design.design.columns),
                "contrast": np.asarray(design.contrasts[key]).tolist(), "stat_type": stat_type,
                "n_maps": len(images), "group": self.spec.to_dict()["group"],
                "mirrored_subjects": sorted({s for s, f in zip(rows["subject"], flips) if f})},
                Description=_DESCRIPTIONS[design.route],
                SpatialReference=_spatial_reference(self.space, self.mask_img, any(flips)))
            paths = {}
            for stat in (("F" if stat_type == "F" else "t"), "z"):
                path = statmap_path(self.output_dir, contrast=name, stat=stat, task=self.task,
                                    space=self.space, desc=folder)
                if folder:
                    path = path.parent / folder / path.name
                paths[stat] = write_nifti(stat_maps[stat], path, sidecar)
            entry = GroupMap(name, key, design.route, stat_type, paths, design, images, flips)
            if folder is None:
                self._threshold(entry, stat_maps["z"], sidecar)
            self.written.append(entry)

    def _threshold(self, entry: GroupMap, z_img: nib.Nifti1Image, sidecar: dict) -> None:
        group = self.spec.group
        two_sided = entry.stat_type == "t"
        for method, alpha in (("fdr", group.fdr_q), ("fwe", group.fwe_alpha)):
            img, thr = threshold_map(z_img, self.mask_img, method, alpha,
                                     group.min_cluster_size, two_sided)
            path = statmap_path(self.output_dir, contrast=entry.contrast, stat="z",
                                task=self.task, space=self.space, desc=method)
            write_nifti(img, path, {**sidecar, "Threshold": {
                "method": method, "alpha": alpha, "z_threshold": thr, "two_sided": two_sided,
                "min_cluster_size": group.min_cluster_size}})
            table = cluster_table(z_img, thr, group.min_cluster_size, two_sided)
            write_tsv(table, path.with_name(path.name.replace("_stat-z_statmap.nii.gz",
                                                              "_clusters.tsv")),
                      sidecar={"LabelAtlases": {a: SOURCE_SPACES[a] for a in PEAK_ATLASES},
                               "SpaceMismatch": f"peaks in {self.space} are labelled at the same MNI "
                                                "coordinates in each atlas's own template, without "
                                                "registration between templates (a few mm locally)"})
            entry.paths[f"z_{method}"] = path
            entry.thresholds[method] = thr
            entry.clusters[method] = table


_DESCRIPTIONS = {
    "one-sample": "One-sample test over subjects (intercept; covariates mean-centred).",
    "repeated": "Repeated-measures crossover model: condition + subject + period (+ covariates) "
                "on all subject x condition maps.",
    "paired": "Paired route: one-sample test of within-subject difference maps, "
              "adjusted for the period difference.",
}
