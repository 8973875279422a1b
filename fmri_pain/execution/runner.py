"""Participant-level execution: one dask task per subject, with retries, resume and a report.

Each subject is one task (preprocessing + first level + within-subject
contrasts; Nipype runs inside the task with its own plugin). Tasks are mapped
over subjects with dask on

* ``local`` -- a :class:`distributed.LocalCluster` sized to the machine (default),
* ``slurm`` / ``pbs`` / ``sge`` -- batch jobs through dask-jobqueue,
* ``tcp://HOST:PORT`` -- an existing dask scheduler,
* ``none`` -- serially in this process (debugging), with the same bookkeeping.

A subject that fails is retried only when the failure is the infrastructure's
(see :func:`is_infrastructure_failure`: a killed worker, a lost connection, a
``MemoryError``, a transient I/O error such as ``EIO``/``ESTALE``/a timeout),
then reported; every other subject finishes. Everything deterministic fails
once: input errors (:class:`fmri_pain.errors.InputError`), spec errors, files
that cannot be parsed, missing or unreadable files, a full disk, and every
other exception (``ValueError``, ``RuntimeError`` ...: the same code on the same
input fails the same way again). The run ends
with a table (subject, status, duration, error, file at fault) printed and
written to ``OUTPUT/logs/participant_<time>.tsv``.

Resume: after a subject succeeds, ``OUTPUT/logs/sub-XX_participant.json``
records a fingerprint (sha256 of the subject's input files, the run records,
the analysis parameters and the package version) and the outputs. A re-run
skips a subject whose record matches and whose outputs all exist.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import errno
import hashlib
import json
import logging
import os
import re
import resource
import shutil
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fmri_pain._version import __version__
from fmri_pain.execution import clusters as _cluster
from fmri_pain.bids.derivatives import sha256_file, write_json, write_text_if_changed, write_tsv
from fmri_pain.errors import InputError
from fmri_pain.bids.runs import Run
from fmri_pain.config.execution import ExecutionSpec
from fmri_pain.config.fields import SpecError
from fmri_pain.config.spec import AnalysisSpec

logger = logging.getLogger("fmri_pain.execution.runner")

__all__ = [
    "SubjectOutcome", "ExecutionSummary", "run_participants", "open_client",
    "add_execution_arguments", "execution_spec_from_args", "subject_fingerprint",
    "validate_scheduler", "report_stage", "verbosity_from_args", "is_infrastructure_failure",
]

report_stage = _cluster.report_stage

Task = Callable[..., Mapping[str, Any]]

_INPUT_ROLES = ("bold", "events", "mask", "confounds", "anat")
_STATUS_ORDER = {"failed": 0, "interrupted": 1, "done": 2, "skipped": 3}
_TABLE_COLUMNS = ["subject", "status", "duration_s", "attempts", "worker", "error", "path",
                  "notes", "log"]


# --------------------------------------------------------------------------- results

@dataclass
class SubjectOutcome:
    """What happened to one subject.

    Attributes
    ----------
    subject : str
        Label without ``sub-``.
    status : {"done", "skipped", "failed", "interrupted"}
        ``skipped``: outputs and provenance of an earlier run matched.
    duration_s : float
        Wall time of the last attempt (of the earlier run for ``skipped``).
    attempts : int
        Number of attempts made in this run (0 for ``skipped``).
    error : str or None
        One-line error of the last attempt.
    path : str or None
        The file at fault, when known.
    worker : str or None
        ``host/worker`` (plus ``slurm-<job>`` inside a SLURM job) of the last attempt.
    outputs : list of str
    log : str or None
        Per-subject log file (task output and tracebacks).
    peak_rss_mb : float or None
        Peak resident memory of the worker process that ran the last attempt.
    notes : str or None
        What the dataset scan noticed about the subject without failing it
        (a drop-out, an ignored file), ``; ``-separated.
    """

    subject: str
    status: str
    duration_s: float = 0.0
    attempts: int = 0
    error: str | None = None
    path: str | None = None
    worker: str | None = None
    outputs: list[str] = field(default_factory=list)
    log: str | None = None
    peak_rss_mb: float | None = None
    notes: str | None = None


@dataclass
class ExecutionSummary:
    """Outcomes of a participant-level run.

    ``notes`` holds the dataset scan's notes (``subject``, ``kind``, ``path``,
    ``message`` dicts: drop-outs, ignored files), printed under the table.
    """

    outcomes: list[SubjectOutcome]
    log_path: Path | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def succeeded(self) -> list[str]:
        """Subjects with usable outputs (done in this run or skipped as up to date)."""
        return [o.subject for o in self.outcomes if o.status in ("done", "skipped")]

    @property
    def failed(self) -> list[str]:
        """Subjects without usable outputs."""
        return [o.subject for o in self.outcomes if o.status not in ("done", "skipped")]

    @property
    def exit_code(self) -> int:
        """0 when every subject succeeded, 1 otherwise."""
        return 1 if self.failed else 0

    def outcome(self, subject: str) -> SubjectOutcome:
        for o in self.outcomes:
            if o.subject == subject:
                return o
        raise KeyError(subject)

    def table(self) -> pd.DataFrame:
        """One row per subject: subject, status, duration_s, attempts, worker, error, path, log."""
        rows = [{c: getattr(o, c) for c in _TABLE_COLUMNS} for o in self.outcomes]
        df = pd.DataFrame(rows, columns=_TABLE_COLUMNS)
        df["duration_s"] = df["duration_s"].astype(float).round(1)
        return df

    def format_table(self, failed_only: bool = False) -> str:
        """The table as terminal text."""
        df = self.table().drop(columns=["log"])
        if failed_only:
            df = df[df["status"].isin(["failed", "interrupted"])]
        df = df.fillna("")
        n_done = sum(o.status == "done" for o in self.outcomes)
        n_skip = sum(o.status == "skipped" for o in self.outcomes)
        head = (f"participant level: {n_done} done, {n_skip} skipped (up to date), "
                f"{len(self.failed)} failed of {len(self.outcomes)} subjects")
        body = df.to_string(index=False, max_colwidth=100) if len(df) else ""
        tail = f"\nlog: {self.log_path}" if self.log_path else ""
        if self.notes and not failed_only:
            lines = [f"  {'sub-' + n['subject'] + ' ' if n.get('subject') else ''}{n['kind']}: "
                     f"{n['message']}" + (f" [{n['path']}]" if n.get("path") else "")
                     for n in self.notes]
            tail = "\nnotes (nothing failed):\n" + "\n".join(lines) + tail
        return f"{head}\n{body}{tail}".rstrip()

    def left_out_message(self) -> str | None:
        """A sentence naming the subjects the group level must leave out, or None."""
        if not self.failed:
            return None
        names = ", ".join(f"sub-{s}" for s in self.failed)
        return f"group level leaves out {len(self.failed)} subject(s) that failed: {names}"


# --------------------------------------------------------------------------- fingerprints

def _spec_parameters(spec: AnalysisSpec) -> dict[str, Any]:
    # Where a subject runs does not change what it computes: leave `execution`
    # out, so switching --scheduler or worker counts does not invalidate a resume.
    params = spec.to_dict()
    params.pop("execution", None)
    return params


def subject_fingerprint(runs: Sequence[Run], spec: AnalysisSpec) -> str:
    """sha256 over the subject's input files, run records, analysis parameters and version.

    Raises
    ------
    InputError
        If an input file of a run cannot be read.
    """
    records = []
    for run in sorted(runs, key=lambda r: (r.session or "", r.task, r.run or 0, str(r.bold))):
        files = {}
        for role in _INPUT_ROLES:
            path = getattr(run, role)
            if path is None:
                continue
            try:
                files[role] = sha256_file(path)
            except OSError as exc:
                raise InputError(f"cannot read {role} file: {exc.strerror or exc}",
                                 subject=run.subject, path=path) from exc
        records.append({
            "entities": run.entities, "condition": run.condition, "period": run.period,
            "sequence": run.sequence, "metadata": run.metadata, "covariates": run.covariates,
            "files": files,
        })
    payload = {"runs": records, "parameters": _spec_parameters(spec), "version": __version__}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def record_path(output_dir: Path | str, subject: str) -> Path:
    """``OUTPUT/logs/sub-XX_participant.json``: the resume record of a subject."""
    return Path(output_dir) / "logs" / f"sub-{subject}_participant.json"


def _is_up_to_date(output_dir: Path, subject: str, fingerprint: str) -> dict | None:
    path = record_path(output_dir, subject)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != fingerprint:
        return None
    outputs = [_resolve_output(output_dir, p) for p in record.get("outputs", [])]
    if not all(p.exists() for p in outputs):
        return None
    return record


def _resolve_output(output_dir: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else output_dir / p


def _relative_output(output_dir: Path, path: Path | str) -> str:
    p = Path(path)
    try:
        return str(p.resolve().relative_to(output_dir.resolve()))
    except ValueError:
        return str(p.resolve())


# --------------------------------------------------------------------------- the task wrapper

class _ThreadFileHandler(logging.FileHandler):
    """Log records of one thread only (a worker may run several subjects at once)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=False)
        self._thread = threading.get_ident()
        self.failed = False
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread or self.failed:
            return
        try:
            super().emit(record)
        except Exception:  # noqa: BLE001 -- e.g. OSError(ENOSPC) from a subclass or a stream
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 -- logging's name
        # A full disk must not stop the subject (nor print logging's traceback):
        # say it once and stop writing this file.
        if not self.failed:
            self.failed = True
            exc = sys.exc_info()[1]
            _emit(f"warning: cannot write log file {self.baseFilename}: "
                  f"{getattr(exc, 'strerror', None) or exc}; the subject goes on without it",
                  logging.WARNING)


def _open_log(log_file: Path) -> _ThreadFileHandler | None:
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        return _ThreadFileHandler(log_file)
    except OSError as exc:
        _emit(f"warning: cannot open log file {log_file}: {exc.strerror or exc}; "
              f"the subject goes on without it", logging.WARNING)
        return None


def _where() -> str:
    host = socket.gethostname()
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):
        name = "main"
    where = f"{host}/{name}"
    if os.environ.get("SLURM_JOB_ID"):
        where += f"/slurm-{os.environ['SLURM_JOB_ID']}"
    return where


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux; children covers subprocesses (nipype command lines).
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def _path_from_exception(exc: BaseException) -> str | None:
    for candidate in (getattr(exc, "path", None), getattr(exc, "filename", None)):
        if candidate:
            return str(candidate)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        return _path_from_exception(cause)
    return None


def _parse_errors() -> tuple[type[BaseException], ...]:
    import gzip
    import zlib

    errors: list[type[BaseException]] = [EOFError, gzip.BadGzipFile, zlib.error,
                                          json.JSONDecodeError, UnicodeDecodeError]
    with contextlib.suppress(ImportError):
        from nibabel.filebasedimages import ImageFileError
        from nibabel.spatialimages import HeaderDataError

        errors += [ImageFileError, HeaderDataError]
    with contextlib.suppress(ImportError):
        errors += [pd.errors.ParserError, pd.errors.EmptyDataError]
    return tuple(errors)


_PARSE_ERRORS = _parse_errors()


def _mentioned_input(text: str, runs: Sequence[Run]) -> str | None:
    """The first input file of ``runs`` whose path (or name) appears in a traceback."""
    candidates = [Path(p) for run in runs for p in (getattr(run, r) for r in _INPUT_ROLES) if p]
    for path in candidates:
        if str(path) in text:
            return str(path)
    for path in candidates:
        if path.name in text:
            return str(path)
    return None


_PATH_RE = re.compile(r"""(/[^\s'"`]+?\.(?:nii\.gz|nii|tsv|json|gz|mat|txt|npy))(?=$|[\s'"`:,;)])""")


_QUOTED_PATH_RE = re.compile(r"""["'](/[^"']+?\.(?:nii\.gz|nii|tsv|json|gz|mat|txt|npy))["']""")


def _path_in_message(message: str) -> str | None:
    match = _QUOTED_PATH_RE.search(message) or _PATH_RE.search(message)
    return match.group(1) if match else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def execute_subject(task: Task, subject: str, runs: Sequence[Run], spec: AnalysisSpec,
                    output_dir: Path, work_dir: Path | None, fingerprint: str,
                    attempt: int = 1, threads: int | None = None) -> dict[str, Any]:
    """Run ``task`` for one subject and write its resume record; never raises ``Exception``.

    Runs where the task runs (a dask worker or this process). Returns a plain
    dict (status, error, path, retry, outputs, duration_s, worker, peak_rss_mb)
    so that nothing unpicklable crosses the wire.
    """
    output_dir = Path(output_dir)
    log_dir = output_dir / "logs"
    log_file = log_dir / f"sub-{subject}_participant.log"
    handler = _open_log(log_file)
    root = logging.getLogger()
    if handler is not None:
        root.addHandler(handler)
    previous_level = root.level
    where = _where()
    if not where.split("/")[1] == "main" and (root.level > logging.INFO or root.level == 0):
        # On a worker the root logger has no console handler: lower it so the subject's
        # log file gets INFO lines. In this process (serial) the user's level stands.
        root.setLevel(logging.INFO)
    base = {"subject": subject, "worker": where, "log": str(log_file), "attempt": attempt}
    start = time.perf_counter()
    try:
        logger.info("sub-%s: attempt %d on %s (pid %d)", subject, attempt, where, os.getpid())
        from threadpoolctl import threadpool_limits

        n_threads = threads or spec.execution.threads_per_worker
        with threadpool_limits(limits=max(1, n_threads)):
            result = task(subject, list(runs), spec, output_dir, work_dir)
        outputs = [Path(p) for p in (result or {}).get("outputs", [])]
        missing = [p for p in outputs if not _resolve_output(output_dir, str(p)).exists()]
        if missing:
            raise RuntimeError(f"task reported {len(missing)} output(s) that do not exist, "
                               f"first: {missing[0]}")
        duration = time.perf_counter() - start
        rel = [_relative_output(output_dir, p) for p in outputs]
        write_json({
            "subject": subject, "fingerprint": fingerprint, "outputs": rel,
            "duration_s": round(duration, 3), "worker": where, "attempt": attempt,
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            "version": __version__,
        }, record_path(output_dir, subject))
        logger.info("sub-%s: done in %.1f s, %d output(s)", subject, duration, len(rel))
        return {**base, "status": "done", "outputs": rel, "duration_s": duration,
                "error": None, "path": None, "retry": False, "peak_rss_mb": _peak_rss_mb()}
    except InputError as exc:
        logger.error("sub-%s: input error\n%s", subject, traceback.format_exc())
        return {**base, "status": "failed", "retry": False,
                "error": getattr(exc, "reason", None) or str(exc),
                "path": str(exc.path) if exc.path else _path_from_exception(exc),
                "duration_s": time.perf_counter() - start, "outputs": [],
                "peak_rss_mb": _peak_rss_mb()}
    except Exception as exc:  # noqa: BLE001 -- every failure is reported, none escapes
        text = traceback.format_exc()
        logger.error("sub-%s: attempt %d failed\n%s", subject, attempt, text)
        path = (_path_from_exception(exc) or _mentioned_input(text, runs)
                or _path_in_message(str(exc)))
        return {**base, "status": "failed", "retry": is_infrastructure_failure(exc),
                "error": _one_line(exc), "path": path, "duration_s": time.perf_counter() - start,
                "outputs": [], "peak_rss_mb": _peak_rss_mb()}
    finally:
        root.setLevel(previous_level)
        if handler is not None:
            root.removeHandler(handler)
            with contextlib.suppress(Exception):
                handler.close()


# errno values of an OSError that a retry cannot cure.
_DETERMINISTIC_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOENT", "EACCES", "EPERM", "EISDIR", "ENOTDIR", "ENOSPC",
                                      "EDQUOT", "EROFS", "ENAMETOOLONG", "ELOOP", "EEXIST",
                                      "EINVAL", "EFBIG", "ENOTEMPTY")
    if hasattr(errno, name))


def is_infrastructure_failure(exc: BaseException) -> bool:
    """Whether a failed participant task is worth retrying.

    Retried: ``MemoryError`` (the worker may have shared its memory with other
    tasks), ``TimeoutError``/``ConnectionError`` and other ``OSError`` with a
    transient errno (``EIO``, ``ESTALE``, ``EAGAIN``, ``EBUSY`` ...: file-system
    and network hiccups). A killed worker or a lost connection never gets here:
    the dask future fails and :func:`run_participants` retries it.

    Not retried, because the same code on the same input fails the same way:
    :class:`~fmri_pain.errors.InputError`, :class:`~fmri_pain.config.spec.SpecError`,
    files that cannot be parsed, ``OSError`` with ``ENOENT``, ``EACCES``,
    ``ENOSPC``, ``EROFS`` ... and every other exception (``ValueError``,
    ``RuntimeError``, ``KeyError`` ...).
    """
    if isinstance(exc, (InputError, SpecError)) or isinstance(exc, _PARSE_ERRORS):
        return False
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno not in _DETERMINISTIC_ERRNOS
    return False


# --------------------------------------------------------------------------- progress

class _Progress:
    """A tqdm bar on a terminal, plain log lines otherwise; verbosity 0/1/2."""

    def __init__(self, total: int, initial: int, verbosity: int) -> None:
        self.verbosity = verbosity
        self.bar = None
        self._lock = threading.Lock()
        if verbosity >= 1 and _stderr_is_tty():
            from tqdm.auto import tqdm

            columns = shutil.get_terminal_size((100, 24)).columns
            self.bar = tqdm(total=total, initial=initial, unit="subject", file=sys.stderr,
                            desc="participants", ncols=columns if columns >= 40 else 100)

    def line(self, message: str, level: int = logging.INFO) -> None:
        if level < logging.WARNING and self.verbosity < 1:
            return
        with self._lock:
            if self.bar is not None:
                self.bar.write(message, file=sys.stderr)
            else:
                _emit(message, level)

    def finished(self, outcome: SubjectOutcome) -> None:
        if outcome.status == "failed":
            where = f" [{outcome.path}]" if outcome.path else ""
            self.line(f"sub-{outcome.subject} failed after {outcome.attempts} attempt(s) "
                      f"({outcome.duration_s:.1f} s): {outcome.error}{where}", logging.WARNING)
        elif self.bar is None or self.verbosity >= 2:
            self.line(f"sub-{outcome.subject} {outcome.status} ({outcome.duration_s:.1f} s)")
        if self.bar is not None:
            with self._lock:
                self.bar.update(1)

    def retry(self, subject: str, attempt: int, error: str | None) -> None:
        self.line(f"sub-{subject}: attempt {attempt} failed ({error}); retrying", logging.WARNING)

    def stage(self, subject: str | None, stage: str) -> None:
        if self.bar is not None:
            with self._lock:
                self.bar.set_postfix_str(f"sub-{subject}: {stage}" if subject else stage)
        if self.verbosity >= 2 and self.bar is None:
            self.line(f"sub-{subject}: {stage}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _emit(message: str, level: int = logging.INFO) -> None:
    # Progress lines are the user-facing output of a run: always to stderr (plain,
    # one line each, so they read well in batch logs), whatever logging is set up.
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the runner

def _default_task() -> Task:
    from fmri_pain.pipeline.participant import run_participant

    return run_participant


def _outcome(result: Mapping[str, Any], attempts: int) -> SubjectOutcome:
    return SubjectOutcome(
        subject=result["subject"], status=result["status"],
        duration_s=float(result.get("duration_s") or 0.0), attempts=attempts,
        error=result.get("error"), path=result.get("path"), worker=result.get("worker"),
        outputs=list(result.get("outputs") or []), log=result.get("log"),
        peak_rss_mb=result.get("peak_rss_mb"),
    )


def run_participants(runs_by_subject: Mapping[str, Sequence[Run]], spec: AnalysisSpec,
                     output_dir: Path | str, *, task: Task | None = None,
                     work_dir: Path | str | None = None, force: bool = False,
                     verbosity: int = 1, client: Any = None,
                     input_errors: Mapping[str, Sequence[InputError]] | None = None,
                     notes: Sequence[Mapping[str, Any]] | None = None,
                     ) -> ExecutionSummary:
    """Run the participant level for every subject, isolated, retried and resumable.

    Parameters
    ----------
    runs_by_subject : mapping
        Subject label -> its Run records.
    spec : AnalysisSpec
        ``spec.execution`` chooses the scheduler and retries.
    output_dir : path
        Derivatives folder; logs go to ``output_dir/logs``.
    task : callable, optional
        ``task(subject, runs, spec, output_dir, work_dir) -> {"outputs": [...]}``;
        default :func:`fmri_pain.pipeline.participant.run_participant`. Must be picklable
        for distributed schedulers.
    work_dir : path, optional
        Passed to the task (Nipype working directory).
    force : bool
        Re-run subjects whose outputs are up to date.
    verbosity : int
        0 quiet (failures only), 1 progress, 2 verbose.
    client : distributed.Client, optional
        Use this client. Without one, a client is opened from ``spec.execution``
        for the duration of the call (none for ``scheduler: none``).
    input_errors : mapping, optional
        Subject -> problems found while validating the dataset
        (``TrialLayout.failed_subjects``). A subject without runs to analyse is
        reported as failed with them; one with valid runs left is analysed and
        its table row names the excluded files.
    notes : sequence of dict, optional
        The dataset scan's notes (``TrialLayout.notes``: drop-outs, ignored
        files): each subject's go into its row's ``notes`` column, all are
        printed under the table.

    Returns
    -------
    ExecutionSummary
        Also printed (verbosity >= 1, else only failures) and written to
        ``output_dir/logs/participant_<YYYYmmdd-HHMMSS>.tsv`` and ``participant_latest.tsv``
        (not written by a run in which every subject was up to date).
    """
    output_dir = Path(output_dir)
    log_dir = output_dir / "logs"
    with contextlib.suppress(OSError):  # unwritable: each write below says so
        log_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(work_dir) if work_dir is not None else None
    task = task or _default_task()
    started = datetime.datetime.now()

    outcomes: dict[str, SubjectOutcome] = {}
    todo: list[tuple[str, str]] = []
    problems = {s: list(errs) for s, errs in (input_errors or {}).items() if errs and s}
    runs_by_subject = {s: list(r) for s, r in runs_by_subject.items()}
    for subject in sorted(set(problems) - {s for s, r in runs_by_subject.items() if r}):
        runs_by_subject.pop(subject, None)
        outcomes[subject] = SubjectOutcome(subject, "failed", error=_describe(problems[subject]),
                                           path=_first_path(problems[subject]))
    for subject in sorted(runs_by_subject):
        runs = runs_by_subject[subject]
        try:
            fingerprint = subject_fingerprint(runs, spec)
        except InputError as exc:
            outcomes[subject] = SubjectOutcome(subject, "failed", error=exc.reason,
                                               path=str(exc.path) if exc.path else None)
            continue
        record = None if force else _is_up_to_date(output_dir, subject, fingerprint)
        if record is not None:
            outcomes[subject] = SubjectOutcome(
                subject, "skipped", duration_s=float(record.get("duration_s", 0.0)),
                worker=record.get("worker"), outputs=list(record.get("outputs", [])),
                log=str(log_dir / f"sub-{subject}_participant.log"))
        else:
            todo.append((subject, fingerprint))

    progress = _Progress(total=len(runs_by_subject), initial=len(outcomes), verbosity=verbosity)
    for o in outcomes.values():
        if o.status == "failed":
            progress.finished(o)
    for subject, errors in sorted(problems.items()):
        if subject in runs_by_subject:
            progress.line(f"sub-{subject}: {len(errors)} run(s) excluded, analysing the rest: "
                          f"{_describe(errors)} [{_first_path(errors)}]", logging.WARNING)
    if verbosity >= 1 and outcomes:
        n_skip = sum(o.status == "skipped" for o in outcomes.values())
        if n_skip:
            progress.line(f"{n_skip} subject(s) up to date, skipped (use --force to re-run)")

    try:
        if todo:
            if client is None and spec.execution.scheduler != "none":
                with open_client(spec.execution, log_dir=log_dir, verbosity=verbosity) as own:
                    _run_distributed(own, task, todo, runs_by_subject, spec, output_dir,
                                     work_dir, outcomes, progress)
            elif client is None:
                _run_serial(task, todo, runs_by_subject, spec, output_dir, work_dir,
                            outcomes, progress)
            else:
                _run_distributed(client, task, todo, runs_by_subject, spec, output_dir,
                                 work_dir, outcomes, progress)
    except KeyboardInterrupt:
        for subject, _ in todo:
            outcomes.setdefault(subject, SubjectOutcome(subject, "interrupted",
                                                        error="run interrupted"))
        _finish(outcomes, log_dir, started, progress, verbosity, problems, notes)
        raise
    return _finish(outcomes, log_dir, started, progress, verbosity, problems, notes)


def _describe(errors: Sequence[InputError]) -> str:
    texts = [getattr(e, "reason", None) or str(e) for e in errors]
    more = f" (+{len(texts) - 1} more problem(s), see logs/participant_input_errors.tsv)" \
        if len(texts) > 1 else ""
    return texts[0] + more


def _first_path(errors: Sequence[InputError]) -> str | None:
    return next((str(e.path) for e in errors if getattr(e, "path", None)), None)


def _finish(outcomes: dict[str, SubjectOutcome], log_dir: Path, started: datetime.datetime,
            progress: _Progress, verbosity: int, problems: Mapping[str, list[InputError]],
            notes: Sequence[Mapping[str, Any]] | None = None) -> ExecutionSummary:
    progress.close()
    notes = [dict(n) for n in notes or []]
    for subject, o in outcomes.items():
        mine = [f"{n['kind']}: {n['message']}" for n in notes if n.get("subject") == subject]
        o.notes = "; ".join(mine) or None
    for subject, errors in problems.items():
        o = outcomes.get(subject)
        if o is not None and o.status in ("done", "skipped") and o.error is None:
            # Analysed with its valid runs; the row still names what was left out.
            o.error = "run(s) excluded: " + _describe(errors)
            o.path = _first_path(errors)
    ordered = [outcomes[s] for s in sorted(outcomes)]
    summary = ExecutionSummary(ordered, notes=notes)
    path = log_dir / f"participant_{started:%Y%m%d-%H%M%S}.tsv"
    # The table is printed whatever happens to the files (a full disk, say). A run
    # that had nothing to do (every subject up to date) writes nothing.
    try:
        if problems:
            rows = [{"subject": s, "path": str(e.path) if getattr(e, "path", None) else None,
                     "error": getattr(e, "reason", None) or str(e)}
                    for s, errs in sorted(problems.items()) for e in errs]
            write_text_if_changed(_tsv_text(pd.DataFrame(rows, columns=["subject", "path", "error"])),
                                  log_dir / "participant_input_errors.tsv")
        if any(o.status != "skipped" for o in ordered):
            table = summary.table()
            write_tsv(table, path)
            write_tsv(table, log_dir / "participant_latest.tsv")
            summary.log_path = path
    except OSError as exc:
        _emit(f"warning: cannot write the subject table under {log_dir}: "
              f"{exc.strerror or exc}", logging.WARNING)
    if verbosity >= 1:
        print(summary.format_table(), flush=True)
    elif summary.failed:
        print(summary.format_table(failed_only=True), file=sys.stderr, flush=True)
    return summary


def _tsv_text(df: pd.DataFrame) -> str:
    return df.to_csv(sep="\t", index=False, na_rep="n/a")


def _run_serial(task: Task, todo: list[tuple[str, str]], runs_by_subject, spec: AnalysisSpec,
                output_dir: Path, work_dir: Path | None, outcomes: dict[str, SubjectOutcome],
                progress: _Progress) -> None:
    _cluster.set_stage_callback(progress.stage)
    try:
        for subject, fingerprint in todo:
            attempt = 1
            while True:
                progress.stage(subject, "running")
                try:
                    result = execute_subject(task, subject, runs_by_subject[subject], spec,
                                             output_dir, work_dir, fingerprint, attempt)
                except Exception as exc:  # noqa: BLE001 -- the next subjects are still attempted
                    result = {"subject": subject, "status": "failed",
                              "retry": is_infrastructure_failure(exc), "error": _one_line(exc),
                              "path": _path_from_exception(exc), "duration_s": 0.0,
                              "worker": _where(), "outputs": [], "log": None}
                if result["status"] == "failed" and result["retry"] and attempt <= spec.execution.retries:
                    progress.retry(subject, attempt, result["error"])
                    attempt += 1
                    continue
                outcomes[subject] = _outcome(result, attempt)
                progress.finished(outcomes[subject])
                break
    finally:
        _cluster.set_stage_callback(None)


def _run_distributed(client: Any, task: Task, todo: list[tuple[str, str]], runs_by_subject,
                     spec: AnalysisSpec, output_dir: Path, work_dir: Path | None,
                     outcomes: dict[str, SubjectOutcome], progress: _Progress) -> None:
    """Submit subjects as worker threads free up; retry infrastructure failures.

    At most as many subjects are in flight as the cluster has worker threads.
    The scheduler would otherwise hand several subjects to one worker at once
    (a handful of long tasks is not "root-ish", so dask does not queue them), and
    a worker's death would fail subjects that had not even started there.
    """
    from distributed import wait

    cluster = getattr(client, "cluster", None)
    if cluster is not None and hasattr(cluster, "job_cls"):
        # Batch jobs: never hold more jobs than there are subjects to run.
        cluster.scale(jobs=min(_cluster.max_batch_jobs(spec.execution), len(todo)))
    threads = (spec.execution.job_cores if spec.execution.scheduler in _cluster.JOBQUEUE_SCHEDULERS
               else spec.execution.threads_per_worker)
    fingerprints = dict(todo)
    token = f"{os.getpid()}-{time.time_ns()}"

    def submit(subject: str, attempt: int):
        return client.submit(
            execute_subject, task, subject, list(runs_by_subject[subject]), spec, output_dir,
            work_dir, fingerprints[subject], attempt, threads,
            pure=False, key=f"participant-sub-{subject}-{attempt}-{token}",
        )

    def capacity() -> int:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:  # noqa: BLE001 -- scheduler briefly unreachable: keep going slowly
            return 1

    with contextlib.suppress(Exception):
        client.subscribe_topic(_cluster.STAGE_TOPIC,
                               lambda event: progress.stage(event[1].get("subject"),
                                                            event[1].get("stage", "")))
    waiting: collections.deque[tuple[str, int]] = collections.deque((s, 1) for s, _ in todo)
    live: dict[str, tuple[Any, str, int]] = {}
    try:
        while waiting or live:
            room = capacity() - len(live)
            while waiting and room > 0:
                subject, attempt = waiting.popleft()
                fut = submit(subject, attempt)
                live[fut.key] = (fut, subject, attempt)
                room -= 1
            try:
                done, _ = wait([f for f, _, _ in live.values()], timeout=0.5,
                               return_when="FIRST_COMPLETED")
            except (TimeoutError, asyncio.TimeoutError):
                continue
            for fut in done:
                _, subject, attempt = live.pop(fut.key)
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 -- killed worker, lost connection ...
                    result = {"subject": subject, "status": "failed", "retry": True,
                              "error": f"worker lost: {_one_line(exc)}", "path": None,
                              "duration_s": 0.0, "worker": None, "outputs": [],
                              "log": str(output_dir / "logs" / f"sub-{subject}_participant.log")}
                fut.release()
                if (result["status"] == "failed" and result["retry"]
                        and attempt <= spec.execution.retries):
                    progress.retry(subject, attempt, result["error"])
                    waiting.appendleft((subject, attempt + 1))
                    continue
                outcomes[subject] = _outcome(result, attempt)
                progress.finished(outcomes[subject])
    except KeyboardInterrupt:
        client.cancel([f for f, _, _ in live.values()])
        raise
    finally:
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(_cluster.STAGE_TOPIC)
        _save_worker_logs(client, output_dir / "logs" / "workers")


def _save_worker_logs(client: Any, folder: Path) -> None:
    try:
        logs = client.get_worker_logs()
    except Exception:  # noqa: BLE001 -- a missing worker log must not fail the run
        return
    for address, records in (logs or {}).items():
        name = "".join(c if c.isalnum() or c in "-." else "_" for c in str(address))
        lines = [f"{level}\t{message}" for level, message in records]
        with contextlib.suppress(OSError):
            from fmri_pain.bids.derivatives import write_text

            write_text("\n".join(lines) + "\n", folder / f"{name}.log")


# --------------------------------------------------------------------------- clients

_NAMED_SCHEDULERS = ("local", "none") + _cluster.JOBQUEUE_SCHEDULERS


def validate_scheduler(value: str) -> str:
    """Check a ``--scheduler`` value: local, none, slurm, pbs, sge or an address like tcp://HOST:PORT."""
    text = str(value).strip()
    if text.lower() in _NAMED_SCHEDULERS:
        return text.lower()
    if "://" in text:
        return text
    raise SpecError(f"execution.scheduler = {value!r} is not one of "
                    f"{list(_NAMED_SCHEDULERS)} or a scheduler address (tcp://HOST:PORT)")


@contextlib.contextmanager
def open_client(execution: ExecutionSpec, *, log_dir: Path | str | None = None,
                verbosity: int = 1, malloc_trim: bool = False) -> Iterator[Any]:
    """A dask client for ``execution.scheduler`` (None for ``none``), closed on exit.

    ``local`` starts a LocalCluster (dashboard link printed), ``slurm``/``pbs``/``sge``
    a dask-jobqueue cluster (batch-job scripts and logs under ``log_dir/jobs``),
    an address connects to a running scheduler. ``malloc_trim=True`` keeps dask's
    default worker ``MALLOC_TRIM_THRESHOLD_`` (only for benchmarking; see
    :mod:`fmri_pain.execution.clusters`).
    """
    kind = validate_scheduler(execution.scheduler)
    if kind == "none":
        yield None
        return
    from distributed import Client

    cluster = None
    if kind == "local":
        cluster = _cluster.local_cluster(execution, malloc_trim=malloc_trim)
    elif kind in _cluster.JOBQUEUE_SCHEDULERS:
        jobs_dir = Path(log_dir) / "jobs" if log_dir else None
        if jobs_dir is not None:
            jobs_dir.mkdir(parents=True, exist_ok=True)
        cluster = _cluster.jobqueue_cluster(execution, log_directory=jobs_dir)
    try:
        client = Client(cluster) if cluster is not None else Client(kind)
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    try:
        if verbosity >= 1:
            what = kind if cluster is None else type(cluster).__name__
            _emit(f"dask {what}: scheduler {client.scheduler.address}, "
                  f"dashboard {client.dashboard_link}")
            if kind in _cluster.JOBQUEUE_SCHEDULERS and verbosity >= 2:
                _emit("batch job script:\n" + cluster.job_script())
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


# --------------------------------------------------------------------------- CLI

def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the execution options (all default to the analysis spec's values)."""
    g = parser.add_argument_group("execution", "where participant tasks run "
                                  "(defaults: the spec's `execution` section)")
    g.add_argument("--scheduler", metavar="{local,none,slurm,pbs,sge,tcp://HOST:PORT}",
                   help="local: LocalCluster on this machine (default); none: serial in-process; "
                        "slurm/pbs/sge: batch jobs via dask-jobqueue; or a running scheduler's address")
    g.add_argument("--n-workers", type=int, help="local workers / batch jobs (default: machine size)")
    g.add_argument("--threads-per-worker", type=int, help="threads (and BLAS threads) per local worker")
    g.add_argument("--memory", dest="memory_per_worker", help="memory limit per local worker, e.g. 4GiB")
    g.add_argument("--retries", type=int, help="retries after infrastructure failures (input errors never)")
    g.add_argument("--queue", help="batch queue / SLURM partition")
    g.add_argument("--account", help="batch account / project")
    g.add_argument("--walltime", help="batch job wall time, e.g. 02:00:00")
    g.add_argument("--job-cores", type=int, help="cores per batch job (one worker per job)")
    g.add_argument("--job-memory", help="memory per batch job, e.g. 8GiB")
    g.add_argument("--job-extra", dest="job_extra_directives", action="append", metavar="DIRECTIVE",
                   help="extra batch directive, repeatable (e.g. --job-extra=--gres=gpu:0)")
    g.add_argument("--max-jobs", type=int, help="maximum concurrent batch jobs")
    g.add_argument("--worker-python", help="python command of batch workers, "
                                           "e.g. 'apptainer exec fmri-pain.sif python'")
    g.add_argument("--force", action="store_true", default=False,
                   help="re-run subjects whose outputs are up to date")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="per-subject and per-stage lines (repeat for debug logging)")
    g.add_argument("-q", "--quiet", action="count", default=0,
                   help="no progress; only failures and errors")


_ARG_FIELDS = ("scheduler", "n_workers", "threads_per_worker", "memory_per_worker", "retries",
               "queue", "account", "walltime", "job_cores", "job_memory",
               "job_extra_directives", "max_jobs", "worker_python")


def verbosity_from_args(args: argparse.Namespace) -> int:
    """0 quiet, 1 progress (default), 2 verbose, from ``--verbose``/``--quiet`` counts."""
    return 1 + int(getattr(args, "verbose", 0) or 0) - int(getattr(args, "quiet", 0) or 0)


def execution_spec_from_args(spec: AnalysisSpec, args: argparse.Namespace) -> AnalysisSpec:
    """``spec`` with the execution options given on the command line applied (validated)."""
    changes = {name: getattr(args, name) for name in _ARG_FIELDS
               if getattr(args, name, None) is not None}
    if "scheduler" in changes:
        changes["scheduler"] = validate_scheduler(changes["scheduler"])
    if "job_extra_directives" in changes:
        changes["job_extra_directives"] = list(changes["job_extra_directives"])
    for name in ("n_workers", "threads_per_worker", "job_cores", "max_jobs"):
        if name in changes and changes[name] < 1:
            raise SpecError(f"--{name.replace('_', '-')} must be at least 1, got {changes[name]}")
    if "retries" in changes and changes["retries"] < 0:
        raise SpecError(f"--retries must be >= 0, got {changes['retries']}")
    if not changes:
        return spec
    execution = {**asdict(spec.execution), **changes}
    return spec.replace(execution=execution)
