"""What a run tells the user while it runs: the participant bar (subjects) or lines, task stages, and the group level's stage bar."""

from __future__ import annotations

import contextlib
import datetime
import logging
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from fmri_pain.execution.stages import StageClock

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

            self.bar = tqdm(total=total, initial=initial, unit="subject", file=sys.stderr,
                            desc="participants", ncols=_columns())

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


class StageProgress:
    """Progress through a fixed list of stages, each measured (:class:`StageClock`).

    On a terminal (verbosity >= 1) a tqdm bar with one step per stage, the
    running stage as its postfix; otherwise one plain line per stage when it
    starts (``[12:00:00] group level 2/5: permutations``), no ANSI codes, and at
    verbosity >= 2 a line when it ends, with its wall time.

    Parameters
    ----------
    stages : sequence of str
        The stages that will run, in order.
    verbosity : int
        0 quiet (nothing), 1 progress, 2 verbose.
    what : str
        The bar's label and the lines' prefix.
    """

    def __init__(self, stages: Sequence[str], verbosity: int, what: str = "group level") -> None:
        self.stages = list(stages)
        self.verbosity = verbosity
        self.what = what
        self.clock = StageClock()
        self.bar = None
        if verbosity >= 1 and _stderr_is_tty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(self.stages), unit="stage", file=sys.stderr, desc=what,
                            ncols=_columns())

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run the ``with`` block as stage ``name``: shown when it starts, measured, counted when done."""
        position = self.stages.index(name) + 1 if name in self.stages else len(self.clock.records) + 1
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        elif self.verbosity >= 1:
            emit(f"{self.what} {position}/{len(self.stages)}: {name}")
        with self.clock.stage(name):
            yield
        if self.bar is not None:
            self.bar.update(1)
        elif self.verbosity >= 2:
            emit(f"{self.what} {position}/{len(self.stages)}: {name} done "
                 f"({self.clock.records[-1].wall_s:.1f} s)")

    def close(self) -> None:
        """Close the bar (if any)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _columns() -> int:
    columns = shutil.get_terminal_size((100, 24)).columns
    return columns if columns >= 40 else 100


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
