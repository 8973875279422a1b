"""One subject's first level: fit each run, then session / condition fixed effects and contrasts.

The orchestration only: runs are fitted by :func:`~fmri_pain.glm.first_level.fit.fit_run`,
combined with :mod:`~fmri_pain.glm.first_level.fixed_effects`, and written by
:mod:`~fmri_pain.glm.first_level.outputs` per the output contract (see
:func:`first_level_subject`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from fmri_pain.bids import derivatives as drv
from fmri_pain.bids.runs import Run, subject_of
from fmri_pain.config.events import EventsSpec
from fmri_pain.config.first_level import FirstLevelSpec
from fmri_pain.errors import InputError
from fmri_pain.glm.first_level import timing
from fmri_pain.glm.first_level.events import STIM
from fmri_pain.glm.first_level.fit import RunFit, fit_run
from fmri_pain.glm.first_level.fixed_effects import EffectMaps, fixed_effects, linear_combination
from fmri_pain.glm.first_level.outputs import SubjectWriter, write_design
from fmri_pain.trial import condition_label, difference_contrasts, trial_contrasts


@dataclass(frozen=True)
class FirstLevelSettings:
    """What the first level reads of the analysis spec: two sections and two top-level values.

    Attributes
    ----------
    first_level : FirstLevelSpec
        The ``first_level`` section (design, noise model, smoothing, nuisance model, contrasts).
    events : EventsSpec
        The ``events`` section (ON / OFF trial types).
    conditions : tuple of str
        The trial's condition names: runs whose condition is one of them (case-insensitively)
        get per-condition maps and the within-subject differences.
    min_volumes : int
        Fewest volumes a run may keep after censoring.
    """

    first_level: FirstLevelSpec
    events: EventsSpec
    conditions: tuple[str, ...]
    min_volumes: int


@dataclass
class SubjectMaps:
    """What the first level wrote for one subject.

    Attributes
    ----------
    subject : str
    maps : DataFrame
        One row per written map: subject, session, condition, period, contrast,
        stat, path, level (run/session/condition/subject), run, dof.
    design_files : list of Path
        Design matrix TSV and PNG of every run.
    qc : DataFrame
        Per run: subject, session, run, condition, n_volumes, n_censored, dof, strategy,
        n_motion, n_drift, n_other, nuisance_fraction.
    warnings : list of str
        Every warning the runs' fits recorded (also in the design sidecars).
    """

    subject: str
    maps: pd.DataFrame
    design_files: list[Path] = field(default_factory=list)
    qc: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: list[str] = field(default_factory=list)


def _combine(fits: list[RunFit], name: str) -> tuple[EffectMaps, np.ndarray] | None:
    """Fixed effects of contrast ``name`` over runs, on the intersection of their masks."""
    fits = [f for f in fits if name in f.contrasts]
    if not fits:
        return None
    common = np.logical_and.reduce([f.mask for f in fits])
    if len(fits) == 1:
        return fits[0].contrasts[name], fits[0].mask
    effects, variances = [], []
    for f in fits:
        sel = common[f.mask]
        effects.append(f.contrasts[name].effect[sel])
        variances.append(f.contrasts[name].variance[sel])
    return fixed_effects(effects, variances, dofs=[f.contrasts[name].dof for f in fits]), common


def _unique(values: list[Any]) -> Any:
    values = list(dict.fromkeys(values))
    return values[0] if len(values) == 1 else None


def _canonical_condition(condition: str, conditions: tuple[str, ...]) -> str | None:
    lookup = {c.lower(): c for c in conditions}
    return lookup.get(str(condition).lower())


def first_level_subject(runs: list[Run], settings: FirstLevelSettings, output_dir: Path | str,
                        write_design_png: bool = True, *, blas_threads: int = 1) -> SubjectMaps:
    """First level of one subject: run GLMs, session and condition fixed effects, contrasts.

    Writes, under ``output_dir`` (BIDS derivatives, JSON sidecar with provenance
    beside each file):

    * per run: ``sub-XX[_ses-YY]_task-T[_run-R]_design.tsv`` and ``.png``;
    * per session: ``contrast-stim`` (and each spec contrast) ``stat-{effect,variance,z}``
      in ``sub-XX/ses-YY/func`` (fixed effects over the session's runs);
      session-less datasets with several runs get per-run maps (``run-R``) instead;
    * trial mode (runs whose condition is one of ``settings.conditions``): per condition
      ``contrast-{scs,drgs,dual}`` in ``sub-XX/func`` (fixed effects over that
      condition's runs) and the within-subject differences (``dualMinusScs`` ...)
      the subject's conditions support;
    * subject level in ``sub-XX/func``: ``contrast-stim`` over all runs (one-condition
      studies) and every spec contrast over all runs.

    Parameters
    ----------
    runs : list of Run
        All runs of one subject.
    settings : FirstLevelSettings
        The spec sections and values the first level reads.
    output_dir : path
    write_design_png : bool
        Also plot the design matrices.
    blas_threads : int
        The worker's threads (``execution.threads_per_worker``): BLAS threads of the
        fits, or (when more than 1) the threads smoothing blocks, fitting voxel
        chunks and writing maps, one BLAS thread each, the design plots drawn in a
        thread of their own (:mod:`~fmri_pain.glm.first_level.threads`).

    Returns
    -------
    SubjectMaps

    Raises
    ------
    InputError
        Bad inputs (named with subject and file).
    """
    subject = subject_of(runs)
    output_dir = Path(output_dir)
    task = _unique([r.task for r in runs]) or runs[0].task
    runs = sorted(runs, key=lambda r: (r.session or "", r.run or 0))
    # BLAS threads = the worker's threads: multi-threaded OpenBLAS on these small
    # matrices is slower, badly so when cores are shared (pinv 100x slower here).
    with threadpool_limits(limits=max(1, int(blas_threads)), user_api="blas"):
        fits = [fit_run(run, settings.first_level, settings.events, settings.min_volumes,
                        threads=blas_threads, plot_design=write_design_png) for run in runs]
    # design TSV / PNG, fixed effects, maps and sidecars
    with timing.step("write", process_cpu=blas_threads > 1):
        # maps are named by the template space of the BOLD they come from, never a constant
        try:
            space = drv.data_space([r.bold for r in runs], "the runs")
        except ValueError as exc:
            raise InputError(str(exc), subject=subject) from None
        writer = SubjectWriter(output_dir, settings.first_level, settings.events, subject, task, space,
                               models={f.run: f.model for f in fits}, threads=blas_threads)
        design_files: list[Path] = []
        for fit in fits:
            design_files += write_design(fit, output_dir, writer, png=write_design_png)
        names = list(dict.fromkeys(n for f in fits for n in f.contrasts))
        first_weights = {n: next(f.weights[n] for f in fits if n in f.weights) for n in names}
        _write_sessions(writer, fits, names, first_weights)
        in_trial = _write_conditions(writer, fits, tuple(settings.conditions), first_weights)
        # subject level over all runs: stim for one-condition studies, spec contrasts always
        for name in [n for n in names if n != STIM or not in_trial]:
            combined = _combine(fits, name)
            if combined is None:
                continue
            writer.write(combined[0], combined[1], fits[0].affine, contrast=name, level="subject",
                         runs=[f.run for f in fits if name in f.contrasts],
                         condition=_unique([f.run.condition for f in fits]),
                         weights=first_weights[name])
    return SubjectMaps(subject=subject, maps=writer.table(), design_files=design_files,
                       qc=_qc_table(subject, fits), warnings=[w for f in fits for w in f.warnings])


def _qc_table(subject: str, fits: list[RunFit]) -> pd.DataFrame:
    """:attr:`SubjectMaps.qc`: one row per run."""
    return pd.DataFrame([{"subject": subject, "session": f.run.session, "run": f.run.run,
                          "condition": f.run.condition, "n_volumes": f.n_volumes,
                          "n_censored": f.n_censored, "dof": f.dof,
                          "strategy": f.model.get("ConfoundsStrategy"),
                          "n_motion": f.model.get("NuisanceRegressors", {}).get("Motion"),
                          "n_drift": f.model.get("NuisanceRegressors", {}).get("Drift"),
                          "n_other": f.model.get("NuisanceRegressors", {}).get("Other"),
                          "nuisance_fraction": f.model.get("NuisanceDofFraction")} for f in fits])


def _write_sessions(writer: SubjectWriter, fits: list[RunFit], names: list[str],
                    first_weights: dict[str, dict[str, float]]) -> None:
    """Session level: fixed effects over each session's runs (run level for session-less multi-run data)."""
    by_session: dict[str | None, list[RunFit]] = defaultdict(list)
    for fit in fits:
        by_session[fit.run.session].append(fit)
    for session, sfits in by_session.items():
        groups = [sfits] if session is not None else ([[f] for f in sfits] if len(sfits) > 1 else [])
        for group in groups:
            for name in names:
                combined = _combine(group, name)
                if combined is None:
                    continue
                maps, mask = combined
                single = session is None
                writer.write(maps, mask, group[0].affine, contrast=name,
                             level="run" if single else "session", runs=[f.run for f in group],
                             session=session, run=group[0].run.run if single else None,
                             condition=_unique([f.run.condition for f in group]),
                             period=_unique([f.run.period for f in group]),
                             weights=first_weights[name])


def _write_conditions(writer: SubjectWriter, fits: list[RunFit], conditions: tuple[str, ...],
                      first_weights: dict[str, dict[str, float]]) -> bool:
    """Trial mode: each condition's ON > OFF over its runs, and the within-subject differences.

    Returns whether any run belonged to one of ``conditions`` (condition maps were written).
    """
    by_condition: dict[str, list[RunFit]] = defaultdict(list)
    for fit in fits:
        cond = _canonical_condition(fit.run.condition, conditions)
        if cond is not None:
            by_condition[cond].append(fit)
    cond_maps: dict[str, tuple[EffectMaps, np.ndarray]] = {}
    for cond, cfits in by_condition.items():
        combined = _combine(cfits, STIM)
        if combined is None:
            continue
        cond_maps[cond] = combined
        writer.write(combined[0], combined[1], cfits[0].affine, contrast=condition_label(cond),
                     level="condition", runs=[f.run for f in cfits],
                     session=None, condition=cond,
                     period=_unique([f.run.period for f in cfits]),
                     weights=first_weights[STIM], description=f"{cond} ON > OFF")
    if not cond_maps:
        return False
    affine = fits[0].affine
    for name, con in difference_contrasts(trial_contrasts(conditions)).items():
        used = con.used_conditions
        if not all(c in cond_maps for c in used):
            continue
        common = np.logical_and.reduce([cond_maps[c][1] for c in used])
        effects = {c: cond_maps[c][0].effect[common[cond_maps[c][1]]] for c in used}
        variances = {c: cond_maps[c][0].variance[common[cond_maps[c][1]]] for c in used}
        dofs = {c: cond_maps[c][0].dof for c in used}
        maps = linear_combination(effects, variances, con.as_dict(), dofs)
        writer.write(maps, common, affine, contrast=name, level="subject",
                     runs=[f.run for c in used for f in by_condition[c]],
                     weights=con.as_dict(), description=con.description)
    return True
