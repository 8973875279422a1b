"""The per-subject task wrapper: runs one subject's unit of work, isolated, and says what happened.

:func:`execute_subject` runs where the task runs (a dask worker or this
process): it writes the subject's log file, limits BLAS threads, checks the
outputs the task reports, writes the resume record, and turns every failure
into a plain result dict; :class:`SubjectOutcome` is that result on the client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fmri_pain.bids.runs import Run
from fmri_pain.errors import InputError
from fmri_pain.execution.failures import (is_infrastructure_failure, mentioned_input, one_line,
                                          path_from_exception, path_in_message)
from fmri_pain.execution.console import mute_library_consoles
from fmri_pain.execution.progress import emit
from fmri_pain.execution.resume import SpecLike, relative_output, resolve_output, write_record
from fmri_pain.execution.stages import StageClock

# The logger name the per-subject log files have always shown.
logger = logging.getLogger("fmri_pain.execution.runner")

Task = Callable[..., Mapping[str, Any]]
"""``task(subject, runs, spec, output_dir, work_dir) -> {"outputs": [...]}``."""


@dataclass
class SubjectOutcome:
    """What happened to one subject.

    Attributes
    ----------
    subject : str
        Label without ``sub-``.
    status : {"done", "skipped", "failed", "interrupted", "not started"}
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
    stages : list of dict
        The last attempt's stages as the task measured them, then its ``total``
        (:data:`fmri_pain.execution.stages.STAGE_COLUMNS`); empty for ``skipped``.
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
    stages: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_result(cls, result: Mapping[str, Any], attempts: int) -> SubjectOutcome:
        """The outcome of the result dict of :func:`execute_subject` after ``attempts`` attempts."""
        return cls(
            subject=result["subject"], status=result["status"],
            duration_s=float(result.get("duration_s") or 0.0), attempts=attempts,
            error=result.get("error"), path=result.get("path"), worker=result.get("worker"),
            outputs=list(result.get("outputs") or []), log=result.get("log"),
            peak_rss_mb=result.get("peak_rss_mb"), stages=list(result.get("stages") or []),
        )


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
            emit(f"warning: cannot write log file {self.baseFilename}: "
                 f"{getattr(exc, 'strerror', None) or exc}; the subject goes on without it",
                 logging.WARNING)


def _open_log(log_file: Path) -> _ThreadFileHandler | None:
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        return _ThreadFileHandler(log_file)
    except OSError as exc:
        emit(f"warning: cannot open log file {log_file}: {exc.strerror or exc}; "
             f"the subject goes on without it", logging.WARNING)
        return None


def where() -> str:
    """``host/worker`` of the running task (``host/main`` in this process), plus ``/slurm-<job>``."""
    host = socket.gethostname()
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):
        name = "main"
    here = f"{host}/{name}"
    if os.environ.get("SLURM_JOB_ID"):
        here += f"/slurm-{os.environ['SLURM_JOB_ID']}"
    return here


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux; children covers subprocesses (nipype command lines).
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def execute_subject(task: Task, subject: str, runs: Sequence[Run], spec: SpecLike,
                    output_dir: Path, work_dir: Path | None, fingerprint: str,
                    attempt: int, threads: int, verbosity: int = 1) -> dict[str, Any]:
    """Run ``task`` for one subject and write its resume record; never raises ``Exception``.

    Runs where the task runs (a dask worker or this process). ``spec`` is handed
    to the task as is; BLAS is limited to ``threads`` threads; the libraries'
    console handlers in this process follow ``verbosity``
    (:func:`fmri_pain.execution.console.mute_library_consoles`). Returns a plain
    dict (status, error, path, retry, outputs, duration_s, worker, peak_rss_mb,
    stages: the task's stage rows, then the attempt's ``total``) so that nothing
    unpicklable crosses the wire.
    """
    output_dir = Path(output_dir)
    log_dir = output_dir / "logs"
    log_file = log_dir / f"sub-{subject}_participant.log"
    handler = _open_log(log_file)
    root = logging.getLogger()
    if handler is not None:
        root.addHandler(handler)
    previous_level = root.level
    here = where()
    if not here.split("/")[1] == "main" and (root.level > logging.INFO or root.level == 0):
        # On a worker the root logger has no console handler: lower it so the subject's
        # log file gets INFO lines. In this process (serial) the user's level stands.
        root.setLevel(logging.INFO)
    base = {"subject": subject, "worker": here, "log": str(log_file), "attempt": attempt}
    mute_library_consoles(verbosity)
    clock = StageClock()
    stages: list[dict[str, Any]] = []

    def measured() -> list[dict[str, Any]]:
        return [*stages, asdict(clock.total())]

    start = time.perf_counter()
    try:
        logger.info("sub-%s: attempt %d on %s (pid %d)", subject, attempt, here, os.getpid())
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=max(1, threads)):
            result = task(subject, list(runs), spec, output_dir, work_dir)
        stages = [dict(r) for r in (result or {}).get("stages", []) if isinstance(r, Mapping)]
        outputs = [Path(p) for p in (result or {}).get("outputs", [])]
        missing = [p for p in outputs if not resolve_output(output_dir, str(p)).exists()]
        if missing:
            raise RuntimeError(f"task reported {len(missing)} output(s) that do not exist, "
                               f"first: {missing[0]}")
        duration = time.perf_counter() - start
        rel = [relative_output(output_dir, p) for p in outputs]
        write_record(output_dir, subject, fingerprint, rel, duration, here, attempt)
        logger.info("sub-%s: done in %.1f s, %d output(s)", subject, duration, len(rel))
        return {**base, "status": "done", "outputs": rel, "duration_s": duration,
                "error": None, "path": None, "retry": False, "peak_rss_mb": _peak_rss_mb(),
                "stages": measured()}
    except InputError as exc:
        logger.error("sub-%s: input error\n%s", subject, traceback.format_exc())
        return {**base, "status": "failed", "retry": False,
                "error": getattr(exc, "reason", None) or str(exc),
                "path": str(exc.path) if exc.path else path_from_exception(exc),
                "duration_s": time.perf_counter() - start, "outputs": [],
                "peak_rss_mb": _peak_rss_mb(), "stages": measured()}
    except Exception as exc:  # noqa: BLE001 -- every failure is reported, none escapes
        text = traceback.format_exc()
        logger.error("sub-%s: attempt %d failed\n%s", subject, attempt, text)
        path = (path_from_exception(exc) or mentioned_input(text, runs)
                or path_in_message(str(exc)))
        return {**base, "status": "failed", "retry": is_infrastructure_failure(exc),
                "error": one_line(exc), "path": path, "duration_s": time.perf_counter() - start,
                "outputs": [], "peak_rss_mb": _peak_rss_mb(), "stages": measured()}
    finally:
        root.setLevel(previous_level)
        if handler is not None:
            root.removeHandler(handler)
            with contextlib.suppress(Exception):
                handler.close()
