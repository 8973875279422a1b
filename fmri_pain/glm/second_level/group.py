"""The group level: collect subject maps, fit the crossover models, threshold, write.

Reads the participant level's subject maps (``sub-XX/func/*_statmap.nii.gz``)
and the trial layout (conditions, periods, covariates); writes ``group/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.anatomy.labels import PEAK_ATLASES, SOURCE_SPACES
from fmri_pain.bids.derivatives import (provenance, sidecar_path, software_versions, statmap_path,
                                        write_nifti, write_tsv)
from fmri_pain.bids.naming import bids_filename
from fmri_pain.errors import InputError
from fmri_pain.glm.second_level.models import (GroupDesign, compute_group_contrast, covariate_label,
                                        fit_second_level, group_mask, load_subject_map,
                                        needs_flip, one_sample_design, paired_design,
                                        repeated_measures_design)
from fmri_pain.glm.second_level.thresholds import cluster_table, threshold_map
from fmri_pain.bids.runs import Run
from fmri_pain.config.spec import AnalysisSpec
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

    @property
    def warnings_by_map(self) -> dict[str, list[str]]:
        """Warnings of each written map (``route:contrast``), for reports."""
        return {f"{m.route}:{m.contrast}": m.warnings for m in self.maps if m.warnings}


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
    table = table.merge(extra, on=["subject", "contrast"], how="left")
    # Subject-level values (participants.tsv: pain_side, age ...) also describe the maps that
    # combine sessions (differences, spec contrasts), so those are mirrored like the others.
    session_level = {"condition", "period", "session"}
    for column in [c for c in extra.columns if c not in session_level | {"subject", "contrast"}]:
        per_subject = extra.dropna(subset=[column]).groupby("subject")[column]
        constant = per_subject.agg(lambda v: v.iloc[0] if v.nunique() == 1 else None).dropna()
        missing = table[column].isna()
        if missing.any():
            table.loc[missing, column] = table.loc[missing, "subject"].map(constant)
    return table


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
    log = _Decisions()
    maps = collect_subject_maps(output_dir, runs, task, spec.space)
    expected = sorted({r.subject for r in runs})
    if maps.empty:
        raise RuntimeError(f"no subject maps under {output_dir}: run the participant level first")
    maps = _defined_contrasts_only(maps, spec, log)
    first_level = check_first_level_parameters(maps, spec, log)
    space = _one_space(maps)
    subjects = sorted(maps["subject"].unique())
    left_out = [s for s in expected if s not in subjects]
    if left_out:
        log.warn(f"subjects without subject maps left out: {', '.join(f'sub-{s}' for s in left_out)}")

    flip_to = spec.group.flip_to_pain_side
    sides = maps["pain_side"] if "pain_side" in maps else pd.Series(None, index=maps.index)
    maps = maps.assign(flip=[needs_flip(s, flip_to) for s in sides])
    mirrored = sorted(maps.loc[maps["flip"], "subject"].unique())
    if mirrored:
        LOGGER.info("mirroring the maps of %s so that every patient's pain is on the %s",
                    ", ".join(f"sub-{s}" for s in mirrored), flip_to)
    mask_img = group_mask([load_subject_map(p, f) for p, f in
                           zip(maps["effect"], maps["flip"])])
    mask_path = write_nifti(mask_img, output_dir / "group" / bids_filename(
        {"task": task, "space": space, "desc": "group"}, "mask", ".nii.gz"))
    writer = _GroupWriter(output_dir, task, spec, mask_img, log, space)

    conditions = tuple(c for c in spec.conditions if (maps.get("condition") == c).any()) \
        if "condition" in maps else ()
    contrasts = trial_contrasts(spec.conditions)
    differences = difference_contrasts(contrasts)
    condition_labels = {c.lower() for c in spec.conditions}

    for contrast, rows in maps.groupby("contrast", sort=True):
        if contrast in differences:
            continue  # differences come from the repeated-measures and paired routes
        if len(rows) < 2:
            log.warn(f"contrast {contrast}: only {len(rows)} subject map(s); no group map")
            continue
        notes: list[str] = []
        covs = (_available_covariates(rows, spec.group.covariates, notes)
                if contrast in condition_labels else ())
        design = one_sample_design(rows, covs)
        writer.fit_and_write(rows, design, {"intercept": contrast} | {
            f"by{covariate_label(c)}": f"{contrast}By{covariate_label(c)}" for c in covs},
            notes=notes)

    if len(conditions) >= 2:
        cond_rows = maps[maps["condition"].isin(conditions)
                         & (maps["contrast"] == maps["condition"].str.lower())]
        notes = []
        covs = _available_covariates(cond_rows, spec.group.covariates, notes)
        design = repeated_measures_design(cond_rows, spec.conditions, contrasts, covs)
        writer.fit_and_write(cond_rows, design,
                             {name: name for name in design.contrasts}, notes=notes)
        for name, con in differences.items():
            rows = maps[maps["contrast"] == name]
            if len(rows) < 3:
                if len(rows):
                    log.warn(f"paired {name}: only {len(rows)} subject difference map(s); "
                             "no paired map")
                continue
            rows = rows.assign(period_difference=_period_difference(rows, con, maps))
            notes = []
            design = paired_design(rows, _available_covariates(rows, spec.group.covariates, notes))
            writer.fit_and_write(rows, design, {"intercept": name}, folder="paired", notes=notes)

    return GroupResult(output_dir, task, writer.written, subjects, left_out, mask_path,
                       writer.designs, maps, log.messages, first_level, mirrored)


class _Decisions:
    """Warnings that change the analysis: logged and kept for the report and sidecars."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def warn(self, message: str) -> None:
        LOGGER.warning("group level: %s", message)
        self.messages.append(message)


def defined_contrasts(spec: AnalysisSpec) -> set[str]:
    """Subject-level contrast names the current spec defines (the group level uses only these)."""
    contrasts = trial_contrasts(spec.conditions)
    return ({"stim"} | {c.lower() for c in spec.conditions} | set(difference_contrasts(contrasts))
            | set(spec.first_level.contrasts))


def _defined_contrasts_only(maps: pd.DataFrame, spec: AnalysisSpec, log: _Decisions) -> pd.DataFrame:
    defined = defined_contrasts(spec)
    stale = sorted(set(maps["contrast"]) - defined)
    if stale:
        log.warn(f"subject maps of contrast(s) {', '.join(stale)} are not defined by the current "
                 "spec (left over from an earlier participant run?): not analysed")
    kept = maps[maps["contrast"].isin(defined)]
    if kept.empty:
        raise InputError(f"none of the subject maps' contrasts ({', '.join(stale)}) is defined by "
                         "the current spec: run the participant level with this spec")
    return kept


FIRST_LEVEL_SECTIONS = ("first_level", "events")
"""Spec sections whose values shape the subject maps (recorded under ``Parameters``)."""


def first_level_fingerprint(record: dict[str, Any] | None) -> str:
    """Short sha256 of the first-level spec sections a map was made with (``unrecorded`` if none)."""
    if record is None:
        return "unrecorded"
    text = json.dumps(record, sort_keys=True, allow_nan=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _recorded_first_level(path: Path) -> dict[str, Any] | None:
    try:
        params = json.loads(sidecar_path(path).read_text()).get("Parameters", {})
    except (OSError, ValueError, AttributeError):
        return None
    record = {k: params[k] for k in FIRST_LEVEL_SECTIONS if isinstance(params, dict) and k in params}
    return record or None


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def check_first_level_parameters(maps: pd.DataFrame, spec: AnalysisSpec,
                                 log: _Decisions | None = None) -> dict[str, Any] | None:
    """The first-level parameters every subject map was made with; error if subjects differ.

    Parameters
    ----------
    maps : DataFrame
        :func:`collect_subject_maps` rows (``subject``, ``effect`` paths).
    spec : AnalysisSpec
        The current spec; a difference from the recorded parameters is a warning
        (the methods describe what the maps were made with).
    log : optional
        Receives that warning.

    Returns
    -------
    dict or None
        The recorded ``first_level`` and ``events`` sections (None if not recorded).

    Raises
    ------
    InputError
        Subjects whose maps were made with different first-level parameters:
        one line naming the subjects of each version and the keys that differ.
    """
    records: dict[str, dict[str, Any] | None] = {}
    by_print: dict[str, list[str]] = {}
    for subject, path in zip(maps["subject"], maps["effect"]):
        record = _recorded_first_level(Path(path))
        fp = first_level_fingerprint(record)
        records.setdefault(fp, record)
        if subject not in by_print.setdefault(fp, []):
            by_print[fp].append(subject)
    if len(by_print) > 1:
        versions = sorted(by_print.items(), key=lambda kv: -len(kv[1]))
        base = records[versions[0][0]] or {}
        keys = sorted({k for fp, _ in versions[1:] for k in _differences(base, records[fp] or {})})
        groups = " vs ".join(f"{', '.join(f'sub-{s}' for s in sorted(set(subs)))} ({fp})"
                             for fp, subs in versions)
        raise InputError(f"subject maps were made with different first-level parameters "
                         f"({', '.join(keys) or 'not recorded for some'}): {groups}; re-run the "
                         "participant level of these subjects with one spec")
    record = next(iter(records.values()), None)
    current = {k: spec.to_dict()[k] for k in FIRST_LEVEL_SECTIONS}
    if record is not None and log is not None:
        changed = _differences(record, current)
        if changed:
            log.warn(f"the subject maps were made with first-level parameters that differ from the "
                     f"current spec ({', '.join(changed)}): the group level and its methods use "
                     "those of the maps; re-run the participant level to apply the spec")
    elif record is None and log is not None:
        log.warn("the subject maps' sidecars record no first-level parameters: the methods "
                 "text describes the current spec")
    return record


def _available_covariates(rows: pd.DataFrame, covariates: tuple[str, ...],
                          notes: list[str]) -> tuple[str, ...]:
    """Covariates with a numeric value for every row; each one left out is noted in ``notes``."""
    usable = []
    for cov in covariates:
        if cov not in rows:
            notes.append(f"covariate {cov} left out: not a column of sessions.tsv / participants.tsv")
            continue
        numeric = pd.to_numeric(rows[cov], errors="coerce")
        if numeric.notna().all():
            usable.append(cov)
        else:
            missing = sorted({f"sub-{s}" for s in rows.loc[numeric.isna().to_numpy(), "subject"]})
            notes.append(f"covariate {cov} left out: missing or not numeric for {', '.join(missing)}")
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
                 mask_img: nib.Nifti1Image, log: _Decisions, space: str | None) -> None:
        self.output_dir = output_dir
        self.space = space
        self.task = task
        self.spec = spec
        self.mask_img = mask_img
        self.log = log
        self.written: list[GroupMap] = []
        self.designs: dict[str, Path] = {}

    def fit_and_write(self, rows: pd.DataFrame, design: GroupDesign,
                      names: dict[str, str], folder: str | None = None,
                      notes: list[str] | None = None) -> None:
        images, flips = list(rows["effect"]), list(rows["flip"])
        label = names.get("intercept") or design.route
        where = f"{design.route} model ({label if design.route != 'repeated' else 'conditions'})"
        notes = [*(notes or []), *design.notes]
        for note in notes:
            self.log.warn(f"{where}: {note}")
        if len(images) <= np.linalg.matrix_rank(design.design.to_numpy()):
            self.log.warn(f"{where} not fitted: {len(images)} maps leave no residual degrees of "
                          f"freedom for {design.design.shape[1]} regressors")
            return
        model = fit_second_level([load_subject_map(p, f) for p, f in zip(images, flips)],
                                 design, self.mask_img, self.spec.group.smoothing_fwhm)
        group_dir = self.output_dir / "group" / (folder or "")
        design_path = group_dir / bids_filename(
            {"task": self.task, "space": self.space,
             "contrast": label if design.route != "repeated" else None,
             "desc": "repeated" if design.route == "repeated" else folder}, "design", ".tsv")
        subjects = sorted(rows["subject"].unique())
        mirrored = sorted({s for s, f in zip(rows["subject"], flips) if f})
        design_record = model_record(design, next(iter(design.contrasts)), subjects, mirrored, notes)
        for field_name in ("ContrastWeights", "ContrastStatistic", "DegreesOfFreedom"):
            design_record.pop(field_name)
        write_tsv(pd.concat([design.rows.reset_index(drop=True)[["subject"] + [
            c for c in ("condition", "period") if c in design.rows]], design.design], axis=1),
            design_path, sidecar={**design_record, "ResidualDegreesOfFreedom": design.residual_dof,
                                  "Contrasts": {names.get(k, k): np.asarray(w).tolist()
                                                for k, w in design.contrasts.items()}})
        self.designs[f"{design.route}:{label}"] = design_path
        for key, name in names.items():
            if key not in design.contrasts:
                continue
            stat_maps = compute_group_contrast(model, design, key)
            stat_type = design.stat_type(key)
            sidecar = provenance(images, {"group": self.spec.to_dict()["group"]},
                                 dataset=self.output_dir,
                                 **model_record(design, key, subjects, mirrored, notes),
                                 SpatialReference=_spatial_reference(self.space, self.mask_img,
                                                                     any(flips)))
            paths = {}
            for stat in (stat_type, "z"):
                path = statmap_path(self.output_dir, contrast=name, stat=stat, task=self.task,
                                    space=self.space, desc=folder)
                if folder:
                    path = path.parent / folder / path.name
                meta = {**sidecar, "StatisticType": stat}
                if stat == "z":
                    meta["ConvertedFrom"] = (f"{stat_type} statistic with the same degrees of "
                                             "freedom, through its p value")
                paths[stat] = write_nifti(stat_maps[stat], path, meta)
            entry = GroupMap(name, key, design.route, stat_type, paths, design, images, flips,
                             subjects=subjects, warnings=list(notes))
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
            write_nifti(img, path, {**sidecar, "StatisticType": "z", "Threshold": {
                "Method": _THRESHOLD_METHODS[method], "Alpha": alpha,
                "ZThreshold": thr if np.isfinite(thr) else None,
                "TwoSided": two_sided, "MinClusterSize": group.min_cluster_size,
                "Description": "ZThreshold null: no voxel survives, the map is empty"
                if not np.isfinite(thr) else "voxels with |z| below ZThreshold set to 0"
                if two_sided else "voxels with z below ZThreshold set to 0"}})
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
        "MirroredSubjects": [f"sub-{s}" for s in mirrored],
        "Warnings": list(warnings),
    }


_THRESHOLD_METHODS = {"fdr": "FDR (Benjamini-Hochberg) on the z map's p values",
                      "fwe": "Bonferroni over the group mask's voxels"}

_DESCRIPTIONS = {
    "one-sample": "One-sample test over subjects (intercept; covariates mean-centred).",
    "repeated": "Repeated-measures crossover model on all subject x condition maps "
                "(terms as fitted: see ModelTerms).",
    "paired": "Paired route: one-sample test of within-subject difference maps "
              "(terms as fitted: see ModelTerms).",
}
