"""The group GLM end to end: subject maps in, every crossover model they support fitted and written.

Reads the participant level's subject maps (``sub-XX/func/*_statmap.nii.gz``) and the trial
layout (conditions, periods, covariates); chooses the routes (one-sample per contrast,
repeated measures, paired differences), fits them, thresholds and writes ``group/``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids.derivatives import provenance, statmap_path, write_nifti
from fmri_pain.bids.runs import Run
from fmri_pain.errors import InputError
from fmri_pain.config.events import EventsSpec
from fmri_pain.config.first_level import FirstLevelSpec
from fmri_pain.config.group import BetweenSubjectsTest, GroupSpec
from fmri_pain.glm.second_level.between_subjects import BETWEEN_ROUTES, between_subjects_design
from fmri_pain.glm.second_level.carryover_shift import SHIFT_COLUMNS, carryover_shift, shift_record
from fmri_pain.glm.second_level.collect import (check_first_level_parameters, collect_subject_maps,
                                                common_space, defined_contrasts, keep_defined_contrasts)
from fmri_pain.glm.second_level.effect_sizes import write_effect_size_maps
from fmri_pain.glm.second_level.models import (GroupDesign, compute_group_contrast, covariate_label,
                                               fit_second_level, group_mask, load_subject_map,
                                               needs_flip, one_sample_design, paired_design,
                                               repeated_measures_design)
from fmri_pain.glm.second_level.outputs import (GroupMap, GroupResult, model_record, section_record,
                                                spatial_reference, write_contrast_maps, write_design,
                                                write_group_mask, write_thresholded_map)
from fmri_pain.glm.second_level.sequence import sequence_design, subject_sequences, write_subject_means
from fmri_pain.glm.second_level.site import add_site
from fmri_pain.glm.second_level.thresholds import cluster_table, threshold_map
from fmri_pain.trial import CONDITIONS, difference_contrasts, trial_contrasts

LOGGER = logging.getLogger(__name__)


def run_group(output_dir: Path | str, runs: list[Run], spec: GroupSpec, *,
              conditions: tuple[str, ...] = CONDITIONS, task: str | None = None,
              space: str | None = None, first_level: FirstLevelSpec | None = None,
              events: EventsSpec | None = None,
              excluded: Mapping[str, str] | None = None) -> GroupResult:
    """Fit and write every group-level model the available subject maps support.

    Parameters
    ----------
    output_dir : path
        The derivatives folder holding the participant level's outputs.
    runs : list of Run
        The dataset's runs (for conditions, periods and covariates).
    spec : GroupSpec
        The ``group`` section: covariates, thresholds, smoothing, mirroring.
    conditions : tuple of str
        The spec's conditions, in contrast order.
    task : str, optional
        The task analysed (None: that of the first run).
    space : str, optional
        Analyse only the subject maps in this template space (None: the one space they share).
    first_level, events : FirstLevelSpec, EventsSpec, optional
        The current first-level sections (default: their defaults): their contrasts are the
        ones analysed, and the subject maps' recorded parameters are checked against them.
    excluded : mapping of str to str, optional
        Subject -> why it must be left out (its input files were rejected): its maps
        are not used, whatever OUTPUT_DIR holds, and a warning names it with the reason.

    Returns
    -------
    GroupResult
    """
    first_level = first_level or FirstLevelSpec()
    events = events or EventsSpec()
    output_dir = Path(output_dir)
    task = task or runs[0].task
    log = _Decisions()
    maps = collect_subject_maps(output_dir, runs, task, space)
    for subject, reason in sorted((excluded or {}).items()):
        log.warn(f"sub-{subject} left out: {reason}")
        if not maps.empty:
            maps = maps[maps["subject"] != subject].reset_index(drop=True)
    expected = sorted({r.subject for r in runs} - set(excluded or {}))
    if maps.empty:
        raise InputError(f"no subject maps of task {task!r}" + (f" in space {space}" if space else "")
                         + ": run the participant level first", path=output_dir)
    maps = keep_defined_contrasts(maps, defined_contrasts(conditions, first_level.contrasts), log.warn)
    recorded = check_first_level_parameters(maps, first_level, events, log.warn)
    space = common_space(maps)
    subjects = sorted(maps["subject"].unique())
    left_out = [s for s in expected if s not in subjects]
    if left_out:
        log.warn(f"subjects without subject maps left out: {', '.join(f'sub-{s}' for s in left_out)}")

    flip_to = spec.flip_to_pain_side
    sides = maps["pain_side"] if "pain_side" in maps else pd.Series(None, index=maps.index)
    maps = maps.assign(flip=[needs_flip(s, flip_to) for s in sides])
    mirrored = sorted(maps.loc[maps["flip"], "subject"].unique())
    if mirrored:
        LOGGER.info("mirroring the maps of %s so that every patient's pain is on the %s",
                    ", ".join(f"sub-{s}" for s in mirrored), flip_to)
    mask_img = group_mask([load_subject_map(p, f) for p, f in
                           zip(maps["effect"], maps["flip"])])
    mask_path = write_group_mask(mask_img, output_dir, task, space)
    fitter = _GroupFit(output_dir, task, spec, mask_img, log, space)

    present = tuple(c for c in conditions if (maps.get("condition") == c).any()) \
        if "condition" in maps else ()
    contrasts = trial_contrasts(conditions)
    differences = difference_contrasts(contrasts)
    condition_labels = {c.lower() for c in conditions}

    for contrast, rows in maps.groupby("contrast", sort=True):
        if contrast in differences:
            continue  # differences come from the repeated-measures and paired routes
        if len(rows) < 2:
            log.warn(f"contrast {contrast}: only {len(rows)} subject map(s); no group map")
            continue
        notes: list[str] = []
        covs = (_available_covariates(rows, spec.covariates, notes)
                if contrast in condition_labels else ())
        design = add_site(one_sample_design(rows, covs), spec.site_column)
        fitter.fit_and_write(rows, design, {"intercept": contrast} | {
            f"by{covariate_label(c)}": f"{contrast}By{covariate_label(c)}" for c in covs},
            notes=notes)

    for test in spec.between_subjects:
        _between_subjects(maps, test, fitter)

    if len(present) >= 2:
        cond_rows = maps[maps["condition"].isin(present)
                         & (maps["contrast"] == maps["condition"].str.lower())]
        notes = []
        covs = _available_covariates(cond_rows, spec.covariates, notes)
        design = add_site(repeated_measures_design(cond_rows, conditions, contrasts, covs,
                                                   carryover=spec.carryover), spec.site_column)
        extra = {}
        if spec.carryover:
            shift = _carryover_shift(cond_rows, design, conditions, contrasts, covs, fitter)
            extra = {r.contrast: {"CarryoverShift": shift_record(r)} for _, r in shift.iterrows()}
            fitter.carryover_shift = shift
        fitter.fit_and_write(cond_rows, design,
                             {name: name for name in design.contrasts}, notes=notes, extra=extra)
        if spec.carryover:
            _sequence_test(cond_rows, fitter)
        for name, con in differences.items():
            rows = maps[maps["contrast"] == name]
            if len(rows) < 3:
                if len(rows):
                    log.warn(f"paired {name}: only {len(rows)} subject difference map(s); "
                             "no paired map")
                continue
            rows = rows.assign(period_difference=_period_difference(rows, con, maps))
            notes = []
            design = add_site(paired_design(rows, _available_covariates(rows, spec.covariates, notes)),
                              spec.site_column)
            fitter.fit_and_write(rows, design, {"intercept": name}, folder="paired", notes=notes)

    return GroupResult(output_dir, task, fitter.written, subjects, left_out, mask_path,
                       fitter.designs, maps, log.messages, recorded, mirrored,
                       carryover_shift=fitter.carryover_shift)


def _between_subjects(maps: pd.DataFrame, test: BetweenSubjectsTest, fitter: "_GroupFit") -> None:
    """One ``group.between_subjects`` test, on its contrast or on every contrast (BSM dataset node)."""
    contrasts = [test.contrast] if test.contrast else sorted(maps["contrast"].unique())
    for contrast in contrasts:
        rows = maps[maps["contrast"] == contrast]
        label = test.name if test.contrast else contrast + test.name[0].upper() + test.name[1:]
        where = f"between-subjects test {label} ({test.design} on {test.column})"
        if rows.empty:
            fitter.log.warn(f"{where} not fitted: no subject maps of contrast {contrast}")
            continue
        try:
            design, notes = between_subjects_design(rows, test, fitter.spec.covariates)
        except ValueError as exc:
            fitter.log.warn(f"{where} not fitted: {exc}")
            continue
        try:
            design = add_site(design, fitter.spec.site_column)
        except ValueError as exc:
            notes.append(f"site not modelled: {exc}")
        fitter.fit_and_write(design.rows, design, {test.name: label}, notes=notes)


def _carryover_shift(rows: pd.DataFrame, design: GroupDesign, conditions, contrasts, covs,
                     fitter: "_GroupFit") -> pd.DataFrame:
    """The condition contrasts' effect shift when carry-over enters the repeated model."""
    without = repeated_measures_design(rows, conditions, contrasts, covs)
    if len(rows) <= np.linalg.matrix_rank(design.design.to_numpy()):
        return pd.DataFrame(columns=list(SHIFT_COLUMNS))  # the model is not fitted (warned)
    images = [load_subject_map(p, f) for p, f in zip(rows["effect"], rows["flip"])]
    return carryover_shift(images, design, without, fitter.mask_img, fitter.spec.smoothing_fwhm)


def _sequence_test(cond_rows: pd.DataFrame, fitter: "_GroupFit") -> None:
    """The between-subject sequence route: subject-mean maps, one-way F across sequences."""
    known, notes = subject_sequences(cond_rows)
    site = fitter.spec.site_column
    per_site = {site: (site, "first")} if site and site in known else {}
    per_subject = (known.groupby("subject", sort=True)
                   .agg(sequence=("sequence", "first"), n_conditions=("condition", "nunique"),
                        **per_site)
                   .reset_index())
    if len(per_subject) < 3:
        fitter.log.warn(f"sequence model not fitted: {len(per_subject)} subject(s) with a sequence")
        return
    images = {s: [load_subject_map(p, f) for p, f in zip(g["effect"], g["flip"])]
              for s, g in known.groupby("subject", sort=True)}
    if per_subject["n_conditions"].nunique() > 1:
        notes.append("subject means over unequal numbers of conditions (drop-outs): "
                     + ", ".join(f"sub-{r.subject} ({r.n_conditions})" for r in
                                 per_subject.itertuples() if r.n_conditions < per_subject[
                                     "n_conditions"].max()))
    mirrored = sorted(known.loc[known["flip"].astype(bool), "subject"].unique())
    if mirrored:
        notes.append("subject means of maps mirrored left-right for "
                     + ", ".join(f"sub-{s}" for s in mirrored))
    rows = write_subject_means(per_subject, images, output_dir=fitter.output_dir,
                               task=fitter.task, space=fitter.space)
    design = sequence_design(rows)
    if design.contrasts:
        try:  # site indicators, and whole subjects permuted within site (exchangeability)
            design = add_site(design, site)
        except ValueError as exc:
            notes.append(f"site not modelled in the sequence test: {exc}")
    if not design.contrasts:
        for note in [*notes, *design.notes]:
            fitter.log.warn(f"sequence model: {note}")
        return
    fitter.fit_and_write(rows, design, {"sequenceF": "sequenceF"}, notes=notes)


class _Decisions:
    """Warnings that change the analysis: logged and kept for the report and sidecars."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def warn(self, message: str) -> None:
        LOGGER.warning("group level: %s", message)
        self.messages.append(message)


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


class _GroupFit:
    """Fits group designs; writes their maps, thresholded maps, tables and designs."""

    def __init__(self, output_dir: Path, task: str, spec: GroupSpec,
                 mask_img: nib.Nifti1Image, log: _Decisions, space: str | None) -> None:
        self.output_dir = output_dir
        self.space = space
        self.task = task
        self.spec = spec
        self.mask_img = mask_img
        self.log = log
        self.written: list[GroupMap] = []
        self.designs: dict[str, Path] = {}
        self.carryover_shift: pd.DataFrame | None = None

    def fit_and_write(self, rows: pd.DataFrame, design: GroupDesign,
                      names: dict[str, str], folder: str | None = None,
                      notes: list[str] | None = None, extra: dict | None = None) -> None:
        images, flips = list(rows["effect"]), list(rows["flip"])
        label = names.get("intercept") or (next(iter(names.values())) if design.route in BETWEEN_ROUTES
                                           else design.route)
        where = f"{design.route} model ({label if design.route != 'repeated' else 'conditions'})"
        notes = [*(notes or []), *design.notes]
        for note in notes:
            self.log.warn(f"{where}: {note}")
        if len(images) <= np.linalg.matrix_rank(design.design.to_numpy()):
            self.log.warn(f"{where} not fitted: {len(images)} maps leave no residual degrees of "
                          f"freedom for {design.design.shape[1]} regressors")
            return
        model = fit_second_level([load_subject_map(p, f) for p, f in zip(images, flips)],
                                 design, self.mask_img, self.spec.smoothing_fwhm)
        subjects = sorted(rows["subject"].unique())
        mirrored = sorted({s for s, f in zip(rows["subject"], flips) if f})
        where_to = {"output_dir": self.output_dir, "task": self.task, "space": self.space}
        self.designs[f"{design.route}:{label}"] = write_design(
            design, model_record(design, next(iter(design.contrasts)), subjects, mirrored, notes),
            names, label=label, folder=folder, **where_to)
        for key, name in names.items():
            if key not in design.contrasts:
                continue
            stat_maps = compute_group_contrast(model, design, key)
            stat_type = design.stat_type(key)
            sidecar = provenance(images, {"group": section_record(self.spec)},
                                 dataset=self.output_dir,
                                 **model_record(design, key, subjects, mirrored, notes),
                                 SpatialReference=spatial_reference(self.space, self.mask_img,
                                                                    any(flips)),
                                 **(extra or {}).get(key, {}))
            paths = write_contrast_maps(stat_maps, stat_type, sidecar, contrast=name,
                                        folder=folder, **where_to)
            if design.route in BETWEEN_ROUTES:  # group.between_subjects promises effect, t, z and p
                paths["p"] = write_nifti(stat_maps["p"], statmap_path(contrast=name, stat="p", **where_to),
                                         {**sidecar, "StatisticType": "p", "Description": sidecar[
                                             "Description"] + " p: one-sided, of t > 0 (nilearn)."})
            if stat_type == "t":  # the effect in PSC, and dz and Hedges' g where they apply
                paths |= write_effect_size_maps(stat_maps, design, key, sidecar, contrast=name,
                                                folder=folder, **where_to)
            entry = GroupMap(name, key, design.route, stat_type, paths, design, images, flips,
                             subjects=subjects, warnings=list(notes))
            if folder is None:
                threshold_and_write(entry, stat_maps["z"], self.mask_img, self.spec, sidecar,
                                    **where_to)
            self.written.append(entry)


def threshold_and_write(entry: GroupMap, z_img: nib.Nifti1Image, mask_img: nib.Nifti1Image,
                        spec: GroupSpec, sidecar: dict, *, output_dir: Path, task: str,
                        space: str | None) -> None:
    """Threshold a group z map at FDR and Bonferroni-FWE, write both with their cluster tables.

    Fills ``entry.paths`` (``z_fdr``, ``z_fwe``), ``entry.thresholds`` and ``entry.clusters``.
    """
    two_sided = entry.stat_type == "t"
    for method, alpha in (("fdr", spec.fdr_q), ("fwe", spec.fwe_alpha)):
        img, thr = threshold_map(z_img, mask_img, method, alpha, spec.min_cluster_size, two_sided)
        table = cluster_table(z_img, thr, spec.min_cluster_size, two_sided)
        entry.paths[f"z_{method}"] = write_thresholded_map(
            img, thr, table, sidecar, method=method, alpha=alpha, two_sided=two_sided,
            min_cluster_size=spec.min_cluster_size, output_dir=output_dir,
            contrast=entry.contrast, task=task, space=space)
        entry.thresholds[method] = thr
        entry.clusters[method] = table
