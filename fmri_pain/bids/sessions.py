"""participants.tsv and sessions.tsv: which condition, period and covariates each run has."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fmri_pain.bids import readers as _bids
from fmri_pain.bids.checks import Candidate
from fmri_pain.bids.readers import Problem
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.errors import InputError
from fmri_pain.trial import parse_sequence, period_in_sequence


@dataclass
class SessionInfo:
    """A subject's sessions.tsv: rows by session label, its path and the problems found in it."""

    table: dict[str, dict]          # session label -> sessions.tsv row
    path: Path | None               # the sessions.tsv
    errors: list[InputError]


def condition_lookup(spec: AnalysisSpec) -> dict[str, str]:
    """Lower-cased condition name -> the spec's spelling."""
    return {c.lower(): c for c in spec.conditions}


def read_participants(bids_dir: Path, errors: list[InputError]) -> dict[str, dict]:
    """participants.tsv rows by subject label; bad or repeated labels are appended to ``errors``."""
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


def read_sessions(bids_dir: Path, subject: str) -> SessionInfo:
    """A subject's sessions.tsv (empty when there is none)."""
    path = bids_dir / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    if not path.is_file():
        return SessionInfo({}, None, [])
    try:
        df = _bids.read_tsv(path, required=("session_id",))
    except Problem as exc:
        return SessionInfo({}, path, [InputError(str(exc), subject=subject, path=path)])
    table, errs = {}, []
    for i, row in df.iterrows():
        label = _bids.strip_prefix(row["session_id"] if isinstance(row["session_id"], str) else "",
                                   "ses-")
        if not _bids.is_label(label):
            errs.append(InputError(f"row {i + 2}: session_id {row['session_id']!r} is not "
                                   "'ses-' + an alphanumeric label", subject=subject, path=path))
            continue
        table[label] = row.to_dict()
    return SessionInfo(table, path, errs)


def raw_condition(sess: SessionInfo, session: str | None) -> str | None:
    """Condition text of a session: sessions.tsv ``condition``, else the label."""
    if session is None:
        return None
    value = _bids.plain(sess.table.get(session, {}).get("condition"))
    return str(value) if value is not None else session


def subject_sequence(subject: str, prow: dict, spec: AnalysisSpec, trial_mode: bool, bids_dir: Path,
                     errs: list[InputError]) -> str | None:
    """The subject's treatment sequence from participants.tsv, canonical (``SCS-DRGS-DUAL``) in a trial."""
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


def assign_condition(c: Candidate, sess: SessionInfo, spec: AnalysisSpec, trial_mode: bool,
                     bids_dir: Path) -> None:
    """Set the run's condition, period and session covariates, or fail it."""
    row = sess.table.get(c.session, {}) if c.session is not None else {}
    c.covariates["_session"] = {k: _bids.plain(v) for k, v in row.items()
                                if k not in ("session_id", "condition", "period")}
    if not trial_mode:
        c.condition = c.task
    elif c.session is None:
        c.fail("run has no session, so its condition cannot be told "
               f"(expected ses-<{'|'.join(x.lower() for x in spec.conditions)}>)")
    else:
        text = raw_condition(sess, c.session)
        canon = condition_lookup(spec).get(text.lower())
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
