"""Read a BIDS dataset (and fMRIPrep-style derivatives) into validated Run records: the TrialLayout."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fmri_pain.bids import readers as _bids
from fmri_pain.bids.checks import (Candidate, attach_events, bids_name_problem, check_files,
                                   check_duplicate_conditions, check_tr, lacks_tr, well_placed)
from fmri_pain.bids.filters import RunSelection
from fmri_pain.bids.fmriprep import attach_derivatives, derivative_index
from fmri_pain.bids.readers import Problem
from fmri_pain.bids.runs import Run
from fmri_pain.bids.sessions import (assign_condition, condition_lookup, raw_condition,
                                     read_participants, read_sessions, subject_sequence)
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.errors import InputError, LayoutErrors

logger = logging.getLogger(__name__)


@dataclass
class TrialLayout:
    """The runs of a dataset that passed validation, and every problem found.

    Policy: an error makes its *run* invalid; the subject's other valid runs
    are kept (the subject is then in both :attr:`subjects` and
    :attr:`failed_subjects`). Problems that concern the whole subject (a bad
    label, an unreadable ``sequence``) invalidate all its runs. Missing
    sessions (drop-outs) are not problems.

    Attributes
    ----------
    runs : list of Run
        Valid runs, sorted by subject, session, run.
    errors : list of InputError
        Every problem found, each naming its subject (``None`` for
        dataset-level problems) and its file.
    subjects : list of str
        Subjects with at least one valid run, sorted.
    failed_subjects : dict of str to list of InputError
        Subjects with at least one problem.
    warnings : list of str
        Things ignored on purpose (unexpected files, unset header TR ...).
    notes : list of dict
        What a user should see although nothing failed, one dict per item
        (``subject``, ``kind``, ``path``, ``message``): ``drop-out`` (a subject
        without a session of some condition) and ``ignored file`` (a BOLD-like
        file that is not a valid BIDS name or place). See :meth:`notes_table`.
    mode : {"trial", "single"}
        ``trial`` when sessions map to the spec's conditions; ``single`` for a
        one-condition study (condition = task name).
    task : str
    n_volumes : dict of Path to int
        Volumes per valid BOLD file (empty with ``check_data=False``).
    """

    runs: list[Run]
    errors: list[InputError]
    subjects: list[str]
    failed_subjects: dict[str, list[InputError]]
    bids_dir: Path
    derivatives_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)
    mode: str = "trial"
    task: str | None = None
    n_volumes: dict[Path, int] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)

    def notes_table(self) -> pd.DataFrame:
        """:attr:`notes` as a table: subject, kind, path, message."""
        return pd.DataFrame(self.notes, columns=list(NOTE_COLUMNS))

    def runs_for(self, subject: str) -> list[Run]:
        """Valid runs of one subject (``"01"`` or ``"sub-01"``)."""
        subject = _bids.strip_prefix(subject, "sub-")
        return [r for r in self.runs if r.subject == subject]

    def conditions_for(self, subject: str) -> list[str]:
        """Conditions with at least one valid run for a subject, in run order."""
        return list(dict.fromkeys(r.condition for r in self.runs_for(subject)))

    def summary(self) -> pd.DataFrame:
        """One row per valid run: subject, session, condition, period, task, run, n_volumes, tr."""
        rows = [{
            "subject": r.subject, "session": r.session, "condition": r.condition,
            "period": r.period, "task": r.task, "run": r.run,
            "n_volumes": self.n_volumes.get(r.bold), "tr": r.metadata.get("RepetitionTime"),
        } for r in self.runs]
        cols = ["subject", "session", "condition", "period", "task", "run", "n_volumes", "tr"]
        return pd.DataFrame(rows, columns=cols)

    def raise_for_errors(self) -> None:
        """Raise :class:`~fmri_pain.errors.LayoutErrors` if any problem was found."""
        if self.errors:
            raise LayoutErrors(self.errors)


NOTE_COLUMNS = ("subject", "kind", "path", "message")


def _note(subject: str | None, kind: str, path: Path | str | None, message: str) -> dict[str, Any]:
    return {"subject": subject, "kind": kind, "path": str(path) if path is not None else None,
            "message": message}


# ---- the loader ---------------------------------------------------------------

def load_layout(bids_dir: Path | str, derivatives: Path | str | None = None, *,
                spec: AnalysisSpec | None = None,
                participant_label: list[str] | None = None,
                check_data: bool = True, n_jobs: int = 1,
                selection: RunSelection | None = None) -> TrialLayout:
    """Read a BIDS dataset (optionally with fMRIPrep-style derivatives) into runs.

    Parameters
    ----------
    bids_dir : path
        Raw BIDS dataset (events, sidecars, sessions.tsv, participants.tsv).
    derivatives : path, optional
        fMRIPrep-style derivatives: ``*_space-<space>_desc-preproc_bold`` (``spec.space``, or
        the one space a run has when it is null),
        ``*_desc-brain_mask``, ``*_desc-confounds_timeseries.tsv`` (or the
        older ``_desc-confounds_regressors.tsv``). Without it the raw BOLD is
        used and mask/confounds are None.
    spec : AnalysisSpec, optional
        Conditions, task, space, ON event and minimum run length.
    participant_label : list of str, optional
        Subjects to load (``"01"`` or ``"sub-01"``); default all.
    check_data : bool
        Open the images. The analysed BOLD is streamed once, volume by volume
        (memory bounded): 0-byte, unreadable, truncated or corrupt (gzip
        length/CRC) files, 3D images, fewer than ``spec.min_volumes``
        volumes, NaN/inf anywhere, header pixdim[4] vs ``RepetitionTime``.
        Also: onsets against the run length, mask shape/affine/emptiness,
        confounds rows vs volumes, and a cheap completeness check (header +
        gzip trailer size) of the raw BOLD behind a derivative and of the
        T1w. With False no image or confounds file is opened (fast; for
        layouts of placeholder images); stages then meet unreadable files
        themselves. Events, sidecars, labels and conditions are always checked.
    n_jobs : int
        Threads used for the data checks (decompression releases the GIL).
    selection : RunSelection, optional
        Session labels and the ``bold`` / ``t1w`` queries of a BIDS filter file
        (:mod:`fmri_pain.bids.filters`); default every run. Runs it leaves out
        are neither analysed nor drop-outs: a subject or condition without
        selected runs gets a ``not selected`` note (a subject asked for by
        ``participant_label`` without any selected run is an error); a session
        label no BOLD file carries is an error; a selection that leaves no run
        at all raises.

    Returns
    -------
    TrialLayout

    Notes
    -----
    *Condition* of a session: sessions.tsv ``condition``, else the session
    label, matched case-insensitively to ``spec.conditions``. If no session
    of any subject maps to a condition (no sessions, test/retest, other
    tasks), the dataset is a one-condition study: ``condition`` is the task
    name (``TrialLayout.mode == "single"``). Otherwise (``"trial"``) a session
    that maps to no condition, a session-less run, two sessions mapping to
    the same condition, and events without ``spec.events.on_trial_type`` are errors.
    *Period*: sessions.tsv ``period``, else the position of the condition in
    participants.tsv ``sequence``; both given and different is an error.
    *Covariates*: every other participants.tsv and sessions.tsv column.
    *Drop-outs*: subjects with fewer sessions keep what they have; a subject
    folder without any BOLD of the task is skipped with a warning (an error
    if it was asked for by ``participant_label``).
    *Unexpected files* (wrong folder, unknown suffixes, other tasks, figures,
    logs) are ignored; BOLD-like files in the wrong place are listed in
    ``warnings``. Event ends after the scan (a cut last block) only warn.
    *Labels* from participants.tsv, folders, sessions.tsv and
    ``participant_label`` must be alphanumeric; nothing else is ever used to
    build a path.

    Raises
    ------
    InputError
        Only for problems that leave nothing to analyse: the dataset folder
        does not exist or cannot be indexed, or the task is missing or
        ambiguous. Everything else is collected in ``TrialLayout.errors``.
    """
    spec = spec or AnalysisSpec()
    bids_dir = Path(os.path.abspath(Path(bids_dir).expanduser()))
    if not bids_dir.is_dir():
        raise InputError("BIDS dataset folder does not exist", path=bids_dir)
    deriv_dir = (Path(os.path.abspath(Path(derivatives).expanduser()))
                 if derivatives is not None else None)
    warnings: list[str] = []
    errors: list[InputError] = []

    raw = _index(bids_dir, derivative=False)
    deriv = None
    if deriv_dir is not None:
        if not deriv_dir.is_dir():
            raise InputError("derivatives folder does not exist", path=deriv_dir)
        if not (deriv_dir / "dataset_description.json").is_file():
            warnings.append(f"{deriv_dir}: no dataset_description.json; indexed as derivatives anyway")
        deriv = _index(deriv_dir, derivative=True)

    # Subjects: folders and participants.tsv rows, labels validated before any path is built.
    participants = read_participants(bids_dir, errors)
    folder_subjects: list[str] = []
    for d in sorted(bids_dir.iterdir()):
        if d.is_dir() and d.name.startswith("sub-"):
            label = d.name[4:]
            if _bids.is_label(label):
                folder_subjects.append(label)
            else:
                errors.append(InputError(
                    f"subject folder {d.name!r}: participant labels must be alphanumeric",
                    subject=label, path=d))
    selected = _select(participant_label, folder_subjects, bids_dir, errors)

    # BOLD files in their proper place: sub-X/[ses-Y/]func/sub-X_[ses-Y_]..._bold.nii[.gz]
    bolds = []
    notes: list[dict[str, Any]] = []
    for f in raw.get(suffix="bold", extension=list(_bids.NIFTI_EXT)):
        path = Path(f.path)
        ents = _bids.entities(f)
        subject_label = ents.get("subject") if ents.get("subject") in folder_subjects else None
        if not well_placed(path, ents, bids_dir):
            why = "not in sub-<label>/[ses-<label>/]func/ with a matching name"
            warnings.append(f"{path}: ignored ({why})")
            notes.append(_note(subject_label, "ignored file", path, f"ignored: {why}"))
            continue
        problem = bids_name_problem(path.name)
        if problem is not None:  # e.g. ..._foo-bar_bold.nii.gz: pybids would take it for a run
            warnings.append(f"{path}: ignored (not a BIDS file name: {problem})")
            notes.append(_note(subject_label, "ignored file", path,
                               f"ignored: not a BIDS file name ({problem})"))
            continue
        if ents.get("subject") not in folder_subjects:
            continue
        if not ents.get("task"):
            warnings.append(f"{path}: ignored (no task entity)")
            continue
        bolds.append((path, ents))
    selection = selection or RunSelection()
    bolds, excluded = _apply_selection(selection, bolds, bids_dir, errors, warnings, notes)
    task = _choose_task(spec, bolds, bids_dir)
    bolds = [(p, e) for p, e in bolds if e["task"] == task]
    excluded = [(p, e) for p, e in excluded if e["task"] == task]

    # Sessions and the study mode (decided over all subjects, not just the selected ones, and
    # over the runs the selection keeps).
    sessions = {s: read_sessions(bids_dir, s) for s in folder_subjects}
    lookup = condition_lookup(spec)
    trial_mode = any(
        raw_condition(sessions[e["subject"]], e.get("session")) is not None
        and raw_condition(sessions[e["subject"]], e.get("session")).lower() in lookup
        for _, e in bolds
    )
    mode = "trial" if trial_mode else "single"
    if not trial_mode:
        logger.info("no session maps to %s: one-condition study of task %s", spec.conditions, task)

    events_files = raw.get(suffix="events", extension=".tsv")
    raw_json = raw.get(suffix="bold", extension=".json")
    deriv_files = derivative_index(deriv) if deriv is not None else None

    candidates: list[Candidate] = []
    for subject in selected:
        sub_bolds = sorted((p, e) for p, e in bolds if e["subject"] == subject)
        sess = sessions[subject]
        errors.extend(sess.errors)
        if not sub_bolds:
            msg = f"no BOLD run of task {task!r}"
            left_out = any(e["subject"] == subject for _, e in excluded)
            if left_out:
                msg += f" selected ({selection.describe()})"
            if participant_label is not None:  # asked for explicitly: an error
                errors.append(InputError(msg, subject=subject, path=bids_dir / f"sub-{subject}"))
            elif left_out:
                warnings.append(f"{bids_dir / f'sub-{subject}'}: {msg}; subject skipped")
                notes.append(_note(subject, "not selected", bids_dir / f"sub-{subject}",
                                   f"{msg}: subject skipped"))
            else:  # e.g. dropped out before the first scan
                warnings.append(f"{bids_dir / f'sub-{subject}'}: {msg}; subject skipped")
                notes.append(_note(subject, "drop-out", bids_dir / f"sub-{subject}",
                                   f"{msg}: subject skipped"))
            continue
        subject_errors: list[InputError] = []
        prow = participants.get(subject, {})
        sequence = subject_sequence(subject, prow, spec, trial_mode, bids_dir, subject_errors)
        anat = _anat(raw, subject, bids_dir, selection)
        cands = []
        for path, ents in sub_bolds:
            c = Candidate(subject=subject, session=ents.get("session"), task=task,
                           run=int(ents["run"]) if ents.get("run") is not None else None,
                           raw_bold=path, ents=ents, sequence=sequence)
            c.covariates = {k: _bids.plain(v) for k, v in prow.items() if k != "participant_id"}
            assign_condition(c, sess, spec, trial_mode, bids_dir)
            attach_events(c, events_files, bids_dir, spec, trial_mode)
            c.metadata = _metadata(c, raw_json, bids_dir)
            if deriv_files is not None:
                attach_derivatives(c, deriv_files, bids_dir, deriv_dir, spec, warnings)
            else:
                c.bold = path
            check_tr(c)
            cands.append(c)
        check_duplicate_conditions(cands, sess.path, trial_mode, bids_dir)
        if subject_errors:
            errors.extend(subject_errors)
            for c in cands:  # a subject-wide problem invalidates every run
                c.blocked = True
        for c in cands:
            c.covariates.update(c.covariates.pop("_session", {}))
            c.anat = anat
        candidates.extend(cands)

    bad_anat: set[Path] = set()
    if check_data:
        todo = [c for c in candidates if c.bold is not None and not lacks_tr(c)]

        def check(c: Candidate) -> None:
            check_files(c, spec.min_volumes, spec.first_level.confounds)

        if n_jobs > 1 and len(todo) > 1:
            with ThreadPoolExecutor(n_jobs) as pool:
                list(pool.map(check, todo))
        else:
            for c in todo:
                check(c)
        # A broken T1w is reported but does not invalidate the runs (anat is then None).
        for subject, anat in dict.fromkeys((c.subject, c.anat) for c in candidates if c.anat):
            try:
                _bids.inspect_image(anat, "quick")
            except Problem as exc:
                errors.append(InputError(f"T1w: {exc}", subject=subject, path=anat))
                bad_anat.add(anat)

    runs: list[Run] = []
    n_volumes: dict[Path, int] = {}
    for c in candidates:
        errors.extend(c.errors)
        warnings.extend(c.warnings)
        if c.anat in bad_anat:
            c.anat = None
        if c.errors or c.blocked:
            continue
        runs.append(Run(
            subject=c.subject, session=c.session, condition=c.condition, period=c.period,
            task=c.task, run=c.run, bold=c.bold, events=c.events, mask=c.mask,
            confounds=c.confounds, metadata=c.metadata, sequence=c.sequence,
            anat=c.anat, covariates=c.covariates))
        if c.n_volumes is not None:
            n_volumes[c.bold] = c.n_volumes
    runs.sort(key=lambda r: (r.subject, r.session or "", r.run or 0, str(r.bold)))

    if trial_mode:  # drop-outs: conditions without any BOLD of the subject (not errors)
        for subject in dict.fromkeys(c.subject for c in candidates):
            found = {c.condition for c in candidates if c.subject == subject}
            unselected = _excluded_conditions(subject, excluded, sessions[subject], lookup)
            not_selected = [k for k in spec.conditions if k not in found and k in unselected]
            if not_selected and found - {None}:
                notes.append(_note(subject, "not selected", bids_dir / f"sub-{subject}",
                                   f"session(s) of {', '.join(not_selected)} left out by the "
                                   f"selection ({selection.describe()})"))
            missing = [k for k in spec.conditions if k not in found and k not in unselected]
            if missing and found - {None}:
                notes.append(_note(subject, "drop-out", bids_dir / f"sub-{subject}",
                                   f"no session of {', '.join(missing)}: analysed with "
                                   f"{len(spec.conditions) - len(missing)} of "
                                   f"{len(spec.conditions)} conditions"))
    notes.sort(key=lambda n: (n["subject"] or "", n["kind"], n["path"] or ""))

    failed: dict[str, list[InputError]] = defaultdict(list)
    for e in errors:
        if e.subject is not None:
            failed[e.subject].append(e)
    for e in errors:
        logger.debug("%s", e)
    for w in warnings:
        logger.debug("%s", w)
    return TrialLayout(
        runs=runs, errors=errors, subjects=sorted({r.subject for r in runs}),
        failed_subjects=dict(failed), bids_dir=bids_dir, derivatives_dir=deriv_dir,
        warnings=warnings, mode=mode, task=task, n_volumes=n_volumes, notes=notes)


# ---- dataset level ------------------------------------------------------------

def _index(root: Path, derivative: bool):
    try:
        return _bids.index(root, derivative=derivative)
    except Exception as exc:  # pybids raises many exception types
        kind = "derivatives" if derivative else "BIDS dataset"
        raise InputError(f"cannot index {kind}: {type(exc).__name__}: {exc}", path=root) from exc


def _select(participant_label, folder_subjects, bids_dir, errors) -> list[str]:
    if participant_label is None:
        return list(folder_subjects)
    if isinstance(participant_label, str):
        participant_label = [participant_label]
    selected = []
    for raw_label in participant_label:
        label = _bids.strip_prefix(raw_label, "sub-")
        if not _bids.is_label(label):
            errors.append(InputError(
                f"participant label {raw_label!r} is not alphanumeric (give e.g. 01 or sub-01)",
                subject=label, path=bids_dir))
        elif label not in folder_subjects:
            errors.append(InputError(
                f"participant label {raw_label!r} not found; available: "
                + ", ".join(folder_subjects), subject=label, path=bids_dir))
        elif label not in selected:
            selected.append(label)
    return selected


def _choose_task(spec: AnalysisSpec, bolds, bids_dir: Path) -> str:
    tasks = sorted({e["task"] for _, e in bolds})
    if spec.task is not None:
        if spec.task not in tasks:
            raise InputError(
                f"no BOLD run of task {spec.task!r}; tasks found: {', '.join(tasks) or 'none'}",
                path=bids_dir)
        return spec.task
    if len(tasks) != 1:
        raise InputError(
            f"the spec names no task and the dataset has {len(tasks)}: "
            f"{', '.join(tasks) or 'none'}; set 'task' in the analysis spec", path=bids_dir)
    return tasks[0]


def _apply_selection(selection: RunSelection, bolds, bids_dir: Path, errors: list[InputError],
                     warnings: list[str], notes: list[dict[str, Any]]):
    """Split ``bolds`` into the selected runs and the left-out ones; unknown sessions are errors."""
    if selection.ignored:
        msg = (f"queries {', '.join(selection.ignored)} ignored: fmri-pain reads no such files")
        warnings.append(f"{selection.source}: {msg}")
        notes.append(_note(None, "ignored filter", selection.source, msg))
    if not selection.active:
        return bolds, []
    available = sorted({e["session"] for _, e in bolds if e.get("session")})
    for label in selection.sessions or ():
        if label not in available:
            errors.append(InputError(f"session label {label!r} not found; available: "
                                     + (", ".join(available) or "none (no sessions)"), path=bids_dir))
    kept = [(p, e) for p, e in bolds if selection.keeps_bold(e)]
    if bolds and not kept:
        there = f"; sessions in the dataset: {', '.join(available) or 'none'}" if selection.sessions else ""
        raise InputError(f"no BOLD run is selected by {selection.describe()}{there}", path=bids_dir)
    msg = f"{len(kept)} of {len(bolds)} BOLD runs selected ({selection.describe()})"
    logger.info("%s", msg)
    notes.append(_note(None, "selection", selection.source, msg))
    return kept, [(p, e) for p, e in bolds if not selection.keeps_bold(e)]


def _excluded_conditions(subject: str, excluded, sessions, lookup: dict[str, str]) -> set[str]:
    """Conditions of a subject's runs that the selection left out."""
    out = set()
    for _, ents in excluded:
        if ents["subject"] == subject:
            text = raw_condition(sessions, ents.get("session"))
            if text is not None and text.lower() in lookup:
                out.add(lookup[text.lower()])
    return out


def _anat(raw, subject: str, bids_dir: Path, selection: RunSelection) -> Path | None:
    files = sorted(Path(f.path) for f in raw.get(subject=subject, suffix="T1w",
                                                   extension=list(_bids.NIFTI_EXT))
                   if selection.keeps_t1w(_bids.entities(f)))
    files = [f for f in files if f.parent.name == "anat"]
    # Prefer the session-less T1w, then the first session's.
    files.sort(key=lambda p: (len(p.relative_to(bids_dir).parts), str(p)))
    return files[0] if files else None


def _metadata(c: Candidate, raw_json, bids_dir) -> dict:
    meta: dict = {}
    for path in _bids.nearest(raw_json, c.ents, c.raw_bold.parent, bids_dir):
        c.merge_sidecar(meta, path)
    return meta
