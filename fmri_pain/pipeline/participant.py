"""One participant's unit of work, (runs, spec) -> files, and the participant level that runs it.

:func:`run_participant` is a pure function of its arguments so a scheduler can
ship it anywhere, retry it, and skip it when its outputs exist: preprocessing
when the runs are raw, the first level, the within-subject contrasts and the
subject report. :func:`run_participant_level` hands it to the execution layer
for every subject. :func:`validate_bids_input` runs the community's BIDS
validator on the input dataset once, before either level reads it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fmri_pain.bids.derivatives import SPACE
from fmri_pain.errors import InputError
from fmri_pain.execution.progress import report_stage
from fmri_pain.execution.runner import ExecutionSummary, run_participants
from fmri_pain.execution.stages import StageClock
from fmri_pain.glm.first_level.subject import FirstLevelSettings, first_level_subject
from fmri_pain.bids.runs import Run
from fmri_pain.bids.validator import ValidationReport, run_validator
from fmri_pain.report.subject import write_subject_report
from fmri_pain.config.spec import AnalysisSpec

LOGGER = logging.getLogger(__name__)

MAX_LISTED = 20
"""Kinds of validator error listed before the run stops (the validator itself lists them all)."""


def first_level_settings(spec: AnalysisSpec) -> FirstLevelSettings:
    """The sections and values of ``spec`` the first level reads."""
    return FirstLevelSettings(first_level=spec.first_level, events=spec.events,
                              conditions=tuple(spec.conditions), min_volumes=spec.min_volumes)


def needs_preprocessing(runs: list[Run]) -> bool:
    """Raw runs carry no confounds or brain mask; fMRIPrep-style ones do."""
    return any(r.confounds is None or r.mask is None for r in runs)


def run_participant(subject: str, runs: list[Run], spec: AnalysisSpec, output_dir: Path | str,
                    work_dir: Path | str | None = None) -> dict[str, Any]:
    """Run every participant-level stage for one subject.

    Parameters
    ----------
    subject : str
        Label without ``sub-``.
    runs : list of Run
        The subject's valid runs (raw or preprocessed).
    spec : AnalysisSpec
    output_dir : path
        Derivatives folder.
    work_dir : path, optional
        Nipype working directory (default ``OUTPUT_DIR/../work``).

    Returns
    -------
    dict
        ``outputs`` (written files), ``stages`` (one dict per stage: ``stage``, ``wall_s``,
        ``cpu_s``, ``peak_rss_mb``, ``children_peak_rss_mb``; see
        :data:`fmri_pain.execution.stages.STAGE_COLUMNS`), ``preprocessed``.
    """
    output_dir = Path(output_dir)
    if not runs:
        raise InputError("no valid runs", subject=subject)
    clock = StageClock()
    outputs: list[Path] = []
    preproc_section = None
    if needs_preprocessing(runs):
        if spec.space not in (None, SPACE):
            # an input error, so that it is never retried
            raise InputError(f"spec key space = {spec.space!r} names a template the project's own "
                             f"preprocessing does not register to (it writes {SPACE}); set it only to "
                             "choose among the spaces of --derivatives, or leave it null", subject=subject)
        # Imported here: the Nipype stack is only needed for raw input.
        from fmri_pain.preprocess import load_qc, preproc_report_section, preprocess_subject

        report_stage("preprocess", subject)
        with clock.stage("preprocess"):
            runs = preprocess_subject(runs, output_dir, work_dir, spec.preprocess)
            outputs.extend(p for r in runs for p in (r.bold, r.mask, r.confounds) if p is not None)
            preproc_section = preproc_report_section(load_qc(runs))

    report_stage("first level", subject)
    with clock.stage("first_level"):
        maps = first_level_subject(runs, first_level_settings(spec), output_dir,
                                   blas_threads=spec.execution.threads_per_worker)
        outputs.extend(Path(p) for p in maps.maps["path"])
        outputs.extend(maps.design_files)

    report_stage("report", subject)
    with clock.stage("report"):
        outputs.append(write_subject_report(subject, runs, maps, spec, output_dir, preproc_section))
    return {"outputs": [str(p) for p in outputs],
            "stages": [asdict(r) for r in clock.records],
            "preprocessed": preproc_section is not None}


def run_participant_level(runs_by_subject: Mapping[str, Sequence[Run]], spec: AnalysisSpec,
                          output_dir: Path | str, *, work_dir: Path | str | None = None,
                          force: bool = False, verbosity: int = 1, client: Any = None,
                          input_errors: Mapping[str, Sequence[InputError]] | None = None,
                          notes: Sequence[Mapping[str, Any]] | None = None,
                          stop_on_first_failure: bool = False) -> ExecutionSummary:
    """The participant level of every subject: :func:`run_participant` as the execution layer's task.

    Isolated, retried and resumable on the backend ``spec.execution`` names; the
    arguments are those of :func:`fmri_pain.execution.runner.run_participants`.
    """
    return run_participants(runs_by_subject, spec, output_dir, task=run_participant,
                            work_dir=work_dir, force=force, verbosity=verbosity, client=client,
                            input_errors=input_errors, notes=notes,
                            stop_on_first_failure=stop_on_first_failure)


def validate_bids_input(bids_dir: Path | str, *, skip: bool = False,
                        participant_label: Sequence[str] | None = None,
                        max_listed: int = MAX_LISTED) -> ValidationReport | None:
    """Run the official BIDS validator on the input dataset, once, before either level reads it.

    Its errors are printed, one line per kind of problem naming its files (at most
    ``max_listed`` lines). Errors of the dataset's top-level files (or of no file)
    stop the run: one :class:`~fmri_pain.errors.InputError` is raised (the CLI's
    exit code 2). Errors only in files under ``sub-<label>/`` do not: the report is
    returned, and :func:`~fmri_pain.bids.validator.subject_input_errors` gives the
    subjects that must fail (participant level) or be left out (group level) while
    the others go on. Warnings are logged: one line, and one line per kind at debug
    level (``-v``).

    Parameters
    ----------
    bids_dir : path
        The raw dataset (BIDS_DIR).
    skip : bool
        ``--skip-bids-validation``: do not run the validator (returns None).
    participant_label : sequence of str, optional
        ``--participant-label``: only these subjects' problems (and those of the
        dataset's top-level files) count, as in fMRIPrep.
    max_listed : int
        Lines of errors printed at most.

    Returns
    -------
    ValidationReport or None
        The validator's report (without errors, or with errors of subjects' files
        only); None when skipped.

    Raises
    ------
    InputError
        The dataset's top-level files have validator errors, or the validator
        cannot run (a :class:`~fmri_pain.bids.validator.ValidatorUnavailable`,
        saying how to install it or to skip validation).
    """
    if skip:
        LOGGER.info("BIDS validator not run (--skip-bids-validation)")
        return None
    report = run_validator(bids_dir).for_subjects(participant_label)
    errors, warnings = report.errors, report.warnings
    for issue in warnings:
        LOGGER.debug("BIDS validator warning: %s", issue.line())
    if not errors:
        if warnings:
            LOGGER.warning("BIDS validator (%s): no errors, %d kind(s) of warning (%s); -v or "
                           "`bids-validator-deno %s` lists them", report.describe(), len(warnings),
                           ", ".join(sorted({w.code for w in warnings})), bids_dir)
        else:
            LOGGER.info("BIDS validator (%s): no errors or warnings in %s", report.describe(), bids_dir)
        return report
    print(f"BIDS validator ({report.describe()}): {len(errors)} kind(s) of error "
          f"(and {len(warnings)} of warning) in {bids_dir}:")
    for line in report.lines("error", limit=max_listed):
        print(f"  - {line}")
    dataset, subjects = report.split_errors()
    if dataset:
        files = sorted({f for e in dataset for f in e.files})
        where = f"top-level file(s) {', '.join(files)}" if files else "the dataset as a whole"
        raise InputError(f"the BIDS validator found {len(dataset)} kind(s) of error in {where}, "
                         "listed above, so no subject can be trusted: fix them, or pass "
                         "--skip-bids-validation to run without the validator (fmri-pain's own "
                         "checks of the files it reads still run)", path=bids_dir)
    names = ", ".join(f"sub-{s}" for s in subjects)
    LOGGER.warning("BIDS validator: errors only in the files of %s (listed above): %s "
                   "(participant level: failed, exit code 2 at the end; group level: left out); "
                   "the other subjects go on", names,
                   "this subject is not analysed" if len(subjects) == 1
                   else "these subjects are not analysed")
    return report
