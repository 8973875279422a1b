"""BIDS dataset -> Run records, with validation that names file and subject."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmri_pain.bids import readers as _bids
from fmri_pain.bids.readers import Problem
from fmri_pain.config.contrast_expressions import parse_contrast
from fmri_pain.errors import InputError, LayoutErrors
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.trial import parse_sequence, period_in_sequence


@dataclass(frozen=True)
class Run:
    """One functional run of one subject in one session: the unit every stage consumes.

    Attributes
    ----------
    subject : str
        Label without ``sub-``.
    session : str or None
        Label without ``ses-``; None for session-less datasets.
    condition : str
        Canonical condition (``SCS``/``DRGS``/``DUAL``); the task name in a
        one-condition study.
    period : int or None
        Treatment period (1-based), None if unknown.
    task : str
    run : int or None
    bold : Path
        Preprocessed MNI BOLD when derivatives are used, else the raw BOLD.
    events : Path or None
        ``events.tsv`` from the raw dataset.
    mask : Path or None
        Brain mask from the derivatives.
    confounds : Path or None
        Confounds TSV from the derivatives.
    metadata : dict
        Merged JSON sidecar (``RepetitionTime``, ``SliceTiming`` ...).
    sequence : str or None
        Treatment sequence, e.g. ``SCS-DRGS-DUAL``.
    anat : Path or None
        The subject's raw T1w, if any.
    covariates : dict
        sessions.tsv and participants.tsv columns for this run.
    """

    subject: str
    session: str | None
    condition: str
    period: int | None
    task: str
    run: int | None
    bold: Path
    events: Path | None
    mask: Path | None
    confounds: Path | None
    metadata: dict = field(default_factory=dict, hash=False, compare=False)
    sequence: str | None = None
    anat: Path | None = None
    covariates: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def tr(self) -> float:
        """Repetition time in seconds."""
        return float(self.metadata["RepetitionTime"])

    @property
    def entities(self) -> dict[str, Any]:
        """BIDS entities of the run, without empty ones."""
        ents = {"sub": self.subject, "ses": self.session, "task": self.task, "run": self.run}
        return {k: v for k, v in ents.items() if v is not None}

    @property
    def label(self) -> str:
        """Short human-readable identifier, e.g. ``sub-01 ses-scs run-1``."""
        return " ".join(f"{k}-{v}" for k, v in self.entities.items() if k != "task")


# ---------------------------------------------------------------------------
# Loader and validation
# ---------------------------------------------------------------------------

logger = logging.getLogger(__name__)

TR_RTOL = 1e-3
"""Relative tolerance between ``RepetitionTime`` and the NIfTI header's pixdim[4]."""


def subject_of(runs) -> str:
    """The one subject label shared by ``runs``; ValueError when empty or mixed."""
    subjects = {r.subject for r in runs}
    if len(subjects) != 1:
        raise ValueError(f"expected the runs of one subject, got {sorted(subjects) or 'none'}")
    return subjects.pop()


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

# Entities a raw BOLD file name may carry (BIDS 1.8 func), in their order.
_RAW_BOLD_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "part",
                      "chunk")


def _bids_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid raw BOLD file name, or None."""
    stem = name
    for ext in _bids.NIFTI_EXT:
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    parts = stem.split("_")
    if parts[-1] != "bold":
        return "no _bold suffix"
    order = []
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if not sep or not value or key not in _RAW_BOLD_ENTITIES:
            return f"{part!r} is not a BIDS entity of a BOLD file name"
        order.append(_RAW_BOLD_ENTITIES.index(key))
    if order != sorted(set(order)):
        return "entities out of BIDS order or repeated"
    return None


def _note(subject: str | None, kind: str, path: Path | str | None, message: str) -> dict[str, Any]:
    return {"subject": subject, "kind": kind, "path": str(path) if path is not None else None,
            "message": message}


# ---- internal records -------------------------------------------------------

@dataclass
class _Candidate:
    """A run being assembled; it becomes a :class:`Run` if ``errors`` stays empty."""

    subject: str
    session: str | None
    task: str
    run: int | None
    raw_bold: Path
    ents: dict
    bold: Path | None = None
    events: Path | None = None
    mask: Path | None = None
    confounds: Path | None = None
    metadata: dict = field(default_factory=dict)
    condition: str | None = None
    period: int | None = None
    sequence: str | None = None
    covariates: dict = field(default_factory=dict)
    events_df: pd.DataFrame | None = None
    errors: list[InputError] = field(default_factory=list)
    n_volumes: int | None = None
    anat: Path | None = None
    warnings: list[str] = field(default_factory=list)
    tr_source: Path | None = None
    """The sidecar that set ``RepetitionTime``."""
    raw_tr: tuple[float, Path] | None = None
    """RepetitionTime of the raw sidecars and its file, when derivatives override it."""
    blocked: bool = False
    """A subject-wide problem (reported once) invalidates this run."""

    def fail(self, message: str, path: Path | str | None = None) -> None:
        self.errors.append(InputError(message, subject=self.subject,
                                      path=path if path is not None else self.bold or self.raw_bold))


@dataclass
class _SessionInfo:
    table: dict[str, dict]          # session label -> sessions.tsv row
    path: Path | None               # the sessions.tsv
    errors: list[InputError]


def _condition_lookup(spec: AnalysisSpec) -> dict[str, str]:
    return {c.lower(): c for c in spec.conditions}


# ---- the loader ---------------------------------------------------------------

def load_layout(bids_dir: Path | str, derivatives: Path | str | None = None, *,
                spec: AnalysisSpec | None = None,
                participant_label: list[str] | None = None,
                check_data: bool = True, n_jobs: int = 1) -> TrialLayout:
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
    participants = _read_participants(bids_dir, errors)
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
        if not _well_placed(path, ents, bids_dir):
            why = "not in sub-<label>/[ses-<label>/]func/ with a matching name"
            warnings.append(f"{path}: ignored ({why})")
            notes.append(_note(subject_label, "ignored file", path, f"ignored: {why}"))
            continue
        problem = _bids_name_problem(path.name)
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
    task = _choose_task(spec, bolds, bids_dir)
    bolds = [(p, e) for p, e in bolds if e["task"] == task]

    # Sessions and the study mode (decided over all subjects, not just the selected ones).
    sessions = {s: _read_sessions(bids_dir, s) for s in folder_subjects}
    lookup = _condition_lookup(spec)
    trial_mode = any(
        _raw_condition(sessions[e["subject"]], e.get("session")) is not None
        and _raw_condition(sessions[e["subject"]], e.get("session")).lower() in lookup
        for _, e in bolds
    )
    mode = "trial" if trial_mode else "single"
    if not trial_mode:
        logger.info("no session maps to %s: one-condition study of task %s", spec.conditions, task)

    events_files = raw.get(suffix="events", extension=".tsv")
    raw_json = raw.get(suffix="bold", extension=".json")
    deriv_files = _deriv_index(deriv) if deriv is not None else None

    candidates: list[_Candidate] = []
    for subject in selected:
        sub_bolds = sorted((p, e) for p, e in bolds if e["subject"] == subject)
        sess = sessions[subject]
        errors.extend(sess.errors)
        if not sub_bolds:
            msg = f"no BOLD run of task {task!r}"
            if participant_label is not None:  # asked for explicitly: an error
                errors.append(InputError(msg, subject=subject, path=bids_dir / f"sub-{subject}"))
            else:  # e.g. dropped out before the first scan
                warnings.append(f"{bids_dir / f'sub-{subject}'}: {msg}; subject skipped")
                notes.append(_note(subject, "drop-out", bids_dir / f"sub-{subject}",
                                   f"{msg}: subject skipped"))
            continue
        subject_errors: list[InputError] = []
        prow = participants.get(subject, {})
        sequence = _subject_sequence(subject, prow, spec, trial_mode, bids_dir, subject_errors)
        anat = _anat(raw, subject, bids_dir)
        cands = []
        for path, ents in sub_bolds:
            c = _Candidate(subject=subject, session=ents.get("session"), task=task,
                           run=int(ents["run"]) if ents.get("run") is not None else None,
                           raw_bold=path, ents=ents, sequence=sequence)
            c.covariates = {k: _bids.plain(v) for k, v in prow.items() if k != "participant_id"}
            _assign_condition(c, sess, spec, trial_mode, bids_dir)
            _attach_events(c, events_files, bids_dir, spec, trial_mode)
            c.metadata = _metadata(c, raw_json, bids_dir)
            if deriv_files is not None:
                _attach_derivatives(c, deriv_files, bids_dir, deriv_dir, spec, warnings)
            else:
                c.bold = path
            _check_tr(c)
            cands.append(c)
        _check_duplicate_conditions(cands, sess, trial_mode, bids_dir)
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
        todo = [c for c in candidates if c.bold is not None and not _fatal(c)]
        if n_jobs > 1 and len(todo) > 1:
            with ThreadPoolExecutor(n_jobs) as pool:
                list(pool.map(lambda c: _check_data(c, spec), todo))
        else:
            for c in todo:
                _check_data(c, spec)
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
            missing = [k for k in spec.conditions if k not in found]
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


def _read_participants(bids_dir: Path, errors: list[InputError]) -> dict[str, dict]:
    path = bids_dir / "participants.tsv"
    if not path.is_file():
        return {}
    try:
        df = _bids.read_tsv(path, required=("participant_id",))
    except Problem as exc:
        errors.append(InputError(str(exc), path=path))
        return {}
    out: dict[str, dict] = {}
    for i, row in df.iterrows():
        raw_id = row["participant_id"]
        label = _bids.strip_prefix(raw_id if isinstance(raw_id, str) else "", "sub-")
        if not _bids.is_label(label):
            errors.append(InputError(
                f"row {i + 2}: participant_id {raw_id!r} is not 'sub-' + an alphanumeric label",
                subject=label or None, path=path))
            continue
        if label in out:
            errors.append(InputError(f"participant_id sub-{label} listed twice", subject=label,
                                     path=path))
            continue
        out[label] = row.to_dict()
    return out


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


def _well_placed(path: Path, ents: dict, root: Path) -> bool:
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return False
    sub, ses = ents.get("subject"), ents.get("session")
    if not _bids.is_label(str(sub)) or (ses is not None and not _bids.is_label(str(ses))):
        return False
    want = [f"sub-{sub}"] + ([f"ses-{ses}"] if ses is not None else []) + ["func"]
    prefix = f"sub-{sub}_" + (f"ses-{ses}_" if ses is not None else "")
    return list(parts[:-1]) == want and parts[-1].startswith(prefix)


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


# ---- subject level ------------------------------------------------------------

def _read_sessions(bids_dir: Path, subject: str) -> _SessionInfo:
    path = bids_dir / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    if not path.is_file():
        return _SessionInfo({}, None, [])
    try:
        df = _bids.read_tsv(path, required=("session_id",))
    except Problem as exc:
        return _SessionInfo({}, path, [InputError(str(exc), subject=subject, path=path)])
    table, errs = {}, []
    for i, row in df.iterrows():
        label = _bids.strip_prefix(row["session_id"] if isinstance(row["session_id"], str) else "",
                                   "ses-")
        if not _bids.is_label(label):
            errs.append(InputError(f"row {i + 2}: session_id {row['session_id']!r} is not "
                                   "'ses-' + an alphanumeric label", subject=subject, path=path))
            continue
        table[label] = row.to_dict()
    return _SessionInfo(table, path, errs)


def _raw_condition(sess: _SessionInfo, session: str | None) -> str | None:
    """Condition text of a session: sessions.tsv ``condition``, else the label."""
    if session is None:
        return None
    value = _bids.plain(sess.table.get(session, {}).get("condition"))
    return str(value) if value is not None else session


def _subject_sequence(subject, prow, spec, trial_mode, bids_dir, errs) -> str | None:
    value = _bids.plain(prow.get("sequence"))
    if value is None or not trial_mode:
        return str(value) if value is not None else None
    try:
        seq = parse_sequence(str(value), spec.conditions)
    except ValueError as exc:
        errs.append(InputError(f"sequence: {exc}", subject=subject, path=bids_dir / "participants.tsv"))
        return None
    if len(set(seq)) != len(seq):
        errs.append(InputError(f"sequence {value!r} repeats a condition", subject=subject,
                               path=bids_dir / "participants.tsv"))
        return None
    return "-".join(seq)


def _anat(raw, subject: str, bids_dir: Path) -> Path | None:
    files = sorted(Path(f.path) for f in raw.get(subject=subject, suffix="T1w",
                                                   extension=list(_bids.NIFTI_EXT)))
    files = [f for f in files if f.parent.name == "anat"]
    # Prefer the session-less T1w, then the first session's.
    files.sort(key=lambda p: (len(p.relative_to(bids_dir).parts), str(p)))
    return files[0] if files else None


def _assign_condition(c: _Candidate, sess: _SessionInfo, spec, trial_mode, bids_dir) -> None:
    row = sess.table.get(c.session, {}) if c.session is not None else {}
    c.covariates["_session"] = {k: _bids.plain(v) for k, v in row.items()
                                if k not in ("session_id", "condition", "period")}
    if not trial_mode:
        c.condition = c.task
    elif c.session is None:
        c.fail("run has no session, so its condition cannot be told "
               f"(expected ses-<{'|'.join(x.lower() for x in spec.conditions)}>)")
    else:
        text = _raw_condition(sess, c.session)
        canon = _condition_lookup(spec).get(text.lower())
        if canon is not None:
            c.condition = canon
        elif _bids.plain(row.get("condition")) is not None:
            c.fail(f"session ses-{c.session}: condition {text!r} is not one of "
                   f"{', '.join(spec.conditions)}", sess.path)
        else:
            c.fail(f"session label ses-{c.session} is not a condition ({', '.join(spec.conditions)})"
                   " and no sessions.tsv 'condition' is given",
                   bids_dir / f"sub-{c.subject}" / f"ses-{c.session}")
    # Period: sessions.tsv, else the position of the condition in the sequence.
    tsv_period = _bids.plain(row.get("period"))
    if isinstance(tsv_period, float) and tsv_period.is_integer():
        tsv_period = int(tsv_period)
    if tsv_period is not None:
        if not isinstance(tsv_period, int) or tsv_period < 1:
            c.fail(f"session ses-{c.session}: period {row.get('period')!r} is not a positive integer",
                   sess.path)
            return
        c.period = tsv_period
    if trial_mode and c.sequence and c.condition:
        seq_period = period_in_sequence(c.condition, tuple(c.sequence.split("-")))
        if seq_period is None:
            c.fail(f"condition {c.condition} of ses-{c.session} is not in the sequence "
                   f"{c.sequence}", bids_dir / "participants.tsv")
        elif c.period is None:
            c.period = seq_period
        elif c.period != seq_period:
            c.fail(f"session ses-{c.session}: period {c.period} in sessions.tsv but "
                   f"{seq_period} from the sequence {c.sequence} in participants.tsv", sess.path)


def _check_duplicate_conditions(cands, sess: _SessionInfo, trial_mode, bids_dir) -> None:
    if not trial_mode:
        return
    by_cond: dict[str, set] = defaultdict(set)
    for c in cands:
        if c.condition is not None and c.session is not None:
            by_cond[c.condition].add(c.session)
    for cond, labels in by_cond.items():
        if len(labels) > 1:
            names = ", ".join(f"ses-{s}" for s in sorted(labels))
            for c in cands:
                if c.condition == cond:
                    c.fail(f"sessions {names} all map to condition {cond}",
                           sess.path or bids_dir / f"sub-{c.subject}")


def _attach_events(c: _Candidate, events_files, bids_dir, spec, trial_mode) -> None:
    found = _bids.nearest(events_files, c.ents, c.raw_bold.parent, bids_dir)
    if not found:
        c.fail("no events.tsv for this run",
               c.raw_bold.parent / _bids.expected_name(c.raw_bold, "events.tsv"))
        return
    path = c.events = found[-1]
    try:
        df = _bids.read_tsv(path, required=("onset", "duration", "trial_type"))
    except Problem as exc:
        c.fail(str(exc), path)
        return
    if df.empty:
        c.fail("no events", path)
        return
    for col in ("onset", "duration"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)))
        if bad.size:
            c.fail(f"non-numeric or missing {col} in row(s) {_rows(bad)}", path)
            return
        neg = np.flatnonzero(values.to_numpy() < 0)
        if neg.size:
            c.fail(f"negative {col} in row(s) {_rows(neg)}", path)
            return
        df[col] = values
    missing_tt = np.flatnonzero(df["trial_type"].isna().to_numpy())
    if missing_tt.size:
        c.fail(f"missing trial_type in row(s) {_rows(missing_tt)}", path)
        return
    types = set(df["trial_type"].astype(str))
    if trial_mode:
        for name in (spec.events.on_trial_type, spec.events.off_trial_type):
            if name is not None and name not in types:
                hint = [t for t in types if t.lower() == name.lower()]
                c.fail(f"no event of trial_type {name!r} (found: {', '.join(sorted(types))})"
                       + (f"; names are case-sensitive, did you mean {hint[0]!r}?" if hint else ""),
                       path)
    for name, expression in spec.first_level.contrasts.items():
        missing = [t for t in parse_contrast(expression) if t not in types]
        if missing:
            found = ", ".join(sorted(types)[:10]) + (f" +{len(types) - 10} more" if len(types) > 10 else "")
            c.fail(f"contrast {name!r} of the spec needs trial type(s) {', '.join(map(repr, missing))}"
                   f" that this run lacks (found: {found})", path)
    c.events_df = df


def _rows(idx) -> str:
    """1-based TSV line numbers (header is line 1) of the first few bad rows."""
    shown = ", ".join(str(int(i) + 2) for i in idx[:5])
    return shown + (f" (+{len(idx) - 5} more)" if len(idx) > 5 else "")


def _metadata(c: _Candidate, raw_json, bids_dir) -> dict:
    meta: dict = {}
    for path in _bids.nearest(raw_json, c.ents, c.raw_bold.parent, bids_dir):
        _merge_sidecar(c, meta, path)
    return meta


def _merge_sidecar(c: _Candidate, meta: dict, path: Path) -> None:
    try:
        data = _bids.read_json(path)
    except Problem as exc:
        c.fail(str(exc), path)
        return
    if "RepetitionTime" in data:
        c.tr_source = path
    meta.update(data)


def _deriv_index(deriv) -> dict[str, list]:
    ext = list(_bids.NIFTI_EXT)
    return {
        "bold": deriv.get(suffix="bold", desc="preproc", extension=ext),
        "mask": deriv.get(suffix="mask", desc="brain", extension=ext),
        "confounds": (deriv.get(suffix="timeseries", desc="confounds", extension=".tsv")
                      + deriv.get(suffix="regressors", desc="confounds", extension=".tsv")),
        "json": deriv.get(suffix="bold", extension=".json"),
    }


#: The space chosen among several when the spec's ``space`` is null.
FMRIPREP_DEFAULT_SPACE = "MNI152NLin2009cAsym"


def _attach_derivatives(c: _Candidate, files, bids_dir: Path, deriv_dir: Path, spec,
                        warnings) -> None:
    key = _bids.run_key(c.ents)
    func_dir = deriv_dir / c.raw_bold.parent.relative_to(bids_dir)

    def matches(f, space):
        e = _bids.entities(f)
        return _bids.run_key(e) == key and e.get("space") == space

    spaces = sorted({str(_bids.entities(f).get("space")) for f in files["bold"]
                     if _bids.run_key(_bids.entities(f)) == key and _bids.entities(f).get("space")})
    # space null: the one template space this run has in the derivatives (fMRIPrep's default
    # among several, said in a warning)
    space = spec.space if spec.space is not None else (spaces[0] if len(spaces) == 1 else None)
    if spec.space is None and len(spaces) > 1:
        if FMRIPREP_DEFAULT_SPACE not in spaces:
            c.fail(f"preprocessed BOLD in several template spaces ({', '.join(spaces)}) for this run; "
                   "set 'space' in the spec to choose one", func_dir / c.raw_bold.name)
            return
        space = FMRIPREP_DEFAULT_SPACE
        warnings.append(f"{c.raw_bold.name}: preprocessed BOLD in spaces {', '.join(spaces)}; using "
                        f"{space} (fMRIPrep's default); set 'space' in the spec to choose another")
    bolds = sorted((f for f in files["bold"] if matches(f, space)),
                   key=lambda f: (_bids.entities(f).get("res") is not None, f.path))
    if not bolds:
        if space is None:  # name the file after the space the rest of the derivatives are in
            found = {_bids.entities(f).get("space") for f in files["bold"]} - {None}
            space = found.pop() if len(found) == 1 else "<space>"
        expected = func_dir / _bids.expected_name(
            c.raw_bold, f"space-{space}_desc-preproc_bold.nii.gz")
        c.fail("no preprocessed BOLD in the derivatives for this run"
               + (f" (spaces found: {', '.join(spaces)}; set 'space' in the spec)" if spaces else ""),
               expected)
        return
    if len(bolds) > 1:
        warnings.append(f"{c.raw_bold.name}: {len(bolds)} preprocessed BOLD files in space "
                        f"{space}; using {Path(bolds[0].path).name}")
    chosen = bolds[0]
    c.bold = Path(chosen.path)
    res = _bids.entities(chosen).get("res")
    masks = [f for f in files["mask"] if matches(f, space)
             and _bids.entities(f).get("res") == res]
    if masks:
        c.mask = Path(sorted(m.path for m in masks)[0])
    else:
        warnings.append(f"{c.bold}: no brain mask in the derivatives; stages will compute one")
    confounds = sorted((f for f in files["confounds"]
                        if _bids.run_key(_bids.entities(f)) == key),
                       key=lambda f: (f.get_entities()["suffix"] != "timeseries", f.path))
    if confounds:
        c.confounds = Path(confounds[0].path)
    elif spec.first_level.confounds.strategy != "none":
        c.fail("no confounds TSV in the derivatives for this run (confounds strategy "
               f"{spec.first_level.confounds.strategy!r})",
               func_dir / _bids.expected_name(c.raw_bold, "desc-confounds_timeseries.tsv"))
    # Derivative sidecars override the raw ones; a different TR is a contradiction.
    raw_tr, raw_source = c.metadata.get("RepetitionTime"), c.tr_source
    for path in _bids.nearest(files["json"], _bids.entities(chosen), c.bold.parent, deriv_dir):
        _merge_sidecar(c, c.metadata, path)
    new_tr = c.metadata.get("RepetitionTime")
    if _is_number(raw_tr) and raw_source is not None:
        c.raw_tr = (float(raw_tr), raw_source)
        if _is_number(new_tr) and not np.isclose(raw_tr, new_tr, rtol=TR_RTOL, atol=0):
            c.fail(f"RepetitionTime {raw_tr:g} s here but {new_tr:g} s in the derivative sidecar "
                   f"{c.tr_source.name}", raw_source)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def _check_tr(c: _Candidate) -> None:
    tr = c.metadata.get("RepetitionTime")
    sidecar = c.raw_bold.parent / _bids.expected_name(c.raw_bold, "bold.json")
    if tr is None:
        c.fail("RepetitionTime missing from the BOLD JSON sidecar(s)", sidecar)
    elif isinstance(tr, bool) or not isinstance(tr, (int, float)) or not tr > 0:
        c.fail(f"RepetitionTime {tr!r} is not a positive number", sidecar)


def _fatal(c: _Candidate) -> bool:
    """Errors that make the data checks meaningless (no TR to compare against)."""
    return not _is_number(c.metadata.get("RepetitionTime"))


# ---- data checks -------------------------------------------------------------

def _check_timing(c: _Candidate, n: int, tr: float) -> None:
    length = n * tr
    ev = c.events_df
    late = np.flatnonzero(ev["onset"].to_numpy() >= length)
    if late.size:
        c.fail(f"onset(s) at or beyond the end of the run ({n} volumes x {tr:g} s = {length:g} s)"
               f" in row(s) {_rows(late)}", c.events)
    long = np.flatnonzero(ev["duration"].to_numpy() > length)
    if long.size:
        c.fail(f"duration(s) longer than the run ({length:g} s) in row(s) {_rows(long)}", c.events)
    # A last block cut by the end of the scan is common and harmless: warn only.
    over = np.flatnonzero((ev["onset"] + ev["duration"]).to_numpy() > length + tr)
    if over.size and not late.size and not long.size:
        c.warnings.append(f"{c.events}: event(s) in row(s) {_rows(over)} end after the run "
                          f"({length:g} s); they are truncated by the model")


def _check_data(c: _Candidate, spec: AnalysisSpec) -> None:
    try:
        info = _bids.inspect_image(c.bold, "full")
    except Problem as exc:
        c.fail(str(exc), c.bold)
        return
    if len(info.shape) != 4:
        c.fail(f"BOLD must be 4D, got shape {info.shape}", c.bold)
        return
    n = c.n_volumes = info.n_volumes
    tr = float(c.metadata["RepetitionTime"])
    if n < spec.min_volumes:
        c.fail(f"only {n} volumes; at least {spec.min_volumes} are required (spec.min_volumes)",
               c.bold)
    if info.n_nonfinite:
        vols = ", ".join(map(str, info.nonfinite_volumes[:5]))
        more = "..." if len(info.nonfinite_volumes) > 5 else ""
        c.fail(f"{info.n_nonfinite} NaN/inf value(s) in {len(info.nonfinite_volumes)} volume(s) "
               f"(0-based: {vols}{more})", c.bold)
    if info.tr is not None and not np.isclose(info.tr, tr, rtol=TR_RTOL, atol=0):
        if info.tr == 1.0:
            # nibabel's default zooms are 1: an unset header, not a contradiction.
            logger.info("%s: header pixdim[4] = 1 (unset?); using RepetitionTime %s", c.bold, tr)
        else:
            where = f" ({c.tr_source.name})" if c.tr_source is not None else ""
            c.fail(f"RepetitionTime {tr:g} s in the sidecar{where} disagrees with the header's "
                   f"pixdim[4] = {info.tr:g} s", c.bold)
    if c.events_df is not None:
        _check_timing(c, n, tr)
    if c.bold != c.raw_bold:
        # The raw BOLD is not analysed, but a broken or mismatched one is still bad input.
        try:
            raw_info = _bids.inspect_image(c.raw_bold, "quick")
        except Problem as exc:
            c.fail(f"raw BOLD: {exc}", c.raw_bold)
        else:
            if raw_info.n_volumes != n:
                c.fail(f"raw BOLD has {raw_info.n_volumes} volumes but the preprocessed one {n}",
                       c.raw_bold)
            if (raw_info.tr is not None and raw_info.tr != 1.0 and c.raw_tr is not None
                    and not np.isclose(raw_info.tr, c.raw_tr[0], rtol=TR_RTOL, atol=0)):
                c.fail(f"raw BOLD header pixdim[4] = {raw_info.tr:g} s but RepetitionTime "
                       f"{c.raw_tr[0]:g} s in {c.raw_tr[1].name}", c.raw_bold)
    if c.mask is not None:
        try:
            minfo = _bids.inspect_image(c.mask, "header")
            mask = _bids.load_mask(c.mask)
        except Problem as exc:
            c.fail(str(exc), c.mask)
        else:
            if mask.shape != tuple(info.shape[:3]):
                c.fail(f"mask shape {mask.shape} differs from the BOLD's {info.shape[:3]}", c.mask)
            elif not np.allclose(minfo.affine, info.affine, atol=1e-3):
                c.fail("mask affine differs from the BOLD's", c.mask)
            elif not mask.any():
                c.fail("mask is empty", c.mask)
    if c.confounds is not None:
        try:
            conf = _bids.read_tsv(c.confounds)
        except Problem as exc:
            c.fail(str(exc), c.confounds)
        else:
            if len(conf) != n:
                c.fail(f"{len(conf)} rows but the BOLD has {n} volumes", c.confounds)
            _check_confound_columns(c, conf, spec)


MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def _check_confound_columns(c: _Candidate, conf: pd.DataFrame, spec: AnalysisSpec) -> None:
    """The columns the confounds strategy needs exist and the motion estimates are finite."""
    strategy = spec.first_level.confounds
    if strategy.strategy == "none":
        return
    need = list(MOTION)
    if strategy.strategy == "acompcor":
        need += [f"a_comp_cor_{i:02d}" for i in range(strategy.n_acompcor)]
    missing = [col for col in need if col not in conf.columns]
    if missing:
        c.fail(f"missing confound column(s) {missing} needed by strategy "
               f"{strategy.strategy!r}", c.confounds)
        return
    values = conf[list(MOTION)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        c.fail(f"missing or non-numeric motion estimates in row(s) {_rows(bad)}", c.confounds)
