"""What a participant-level run tells the user while it runs: the progress bar or lines, and task stages."""

from __future__ import annotations

import datetime
import logging
import shutil
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fmri_pain.execution.task import SubjectOutcome

# The logger name the execution layer's log lines have always carried.
logger = logging.getLogger("fmri_pain.execution.runner")

STAGE_TOPIC = "fmri-pain-stage"


class Progress:
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
                emit(message, level)

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


def emit(message: str, level: int = logging.INFO) -> None:
    """Print a time-stamped progress line to stderr."""
    # Progress lines are the user-facing output of a run: always to stderr (plain,
    # one line each, so they read well in batch logs), whatever logging is set up.
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


_STAGE_CALLBACK: Callable[[str | None, str], None] | None = None


def set_stage_callback(callback: Callable[[str | None, str], None] | None) -> None:
    """Route :func:`report_stage` calls made in this process (serial runs) to ``callback``."""
    global _STAGE_CALLBACK
    _STAGE_CALLBACK = callback


def report_stage(stage: str, subject: str | None = None) -> None:
    """Tell the client which stage a running participant task has reached.

    Cheap no-op outside a dask worker. Participant code may call it between
    stages (``report_stage("first level", "01")``) to drive the stage progress line.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        logger.debug("sub-%s: %s", subject, stage)
        if _STAGE_CALLBACK is not None:
            _STAGE_CALLBACK(subject, stage)
        return
    worker.log_event(STAGE_TOPIC, {"subject": subject, "stage": stage})
