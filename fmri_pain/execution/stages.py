"""Per-stage wall time, CPU time and peak memory, and the stage table written under ``logs/``.

A :class:`StageClock` measures the stages of one run (a subject's task, the
group level) in the process that runs them, with :func:`resource.getrusage`:
CPU time of this process (all its threads) and of its children that have been
waited for (command-line tools), and the resident-memory high-water marks of
both. The rows go to a TSV with a JSON sidecar describing every column
(:data:`STAGE_COLUMNS`).
"""

from __future__ import annotations

import contextlib
import datetime
import resource
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fmri_pain.bids.derivatives import write_tsv

STAGE_COLUMNS: dict[str, str] = {
    "level": "participant or group",
    "subject": "subject label without 'sub-' (participant level; n/a for the group level)",
    "stage": "stage name, in the order the stages ran; 'total' is the whole run of the level "
             "(group) or of the subject's task (participant), stages and what lies between them",
    "wall_s": "elapsed (wall-clock) seconds of the stage",
    "cpu_s": "CPU seconds (user + system) used during the stage by the process that ran it, "
             "all its threads, plus the child processes it waited for; on a dask worker running "
             "several tasks at once this includes the other tasks' threads",
    "peak_rss_mb": "resident-memory high-water mark (MiB) of the process that ran the stage, "
                   "from its start to the end of the stage (getrusage ru_maxrss: it never "
                   "decreases, so a stage's value is at least that of the stage before)",
    "children_peak_rss_mb": "largest resident-memory high-water mark (MiB) of any child process "
                            "waited for so far (getrusage RUSAGE_CHILDREN; 0: none)",
    "worker": "host/worker that ran the stage (host/main: the command's own process)",
}
"""The columns of the stage table and what they mean (written to its JSON sidecar)."""


@dataclass
class StageRecord:
    """One stage's measurements (see :data:`STAGE_COLUMNS`)."""

    stage: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    children_peak_rss_mb: float


def _usage() -> tuple[float, float, float]:
    """CPU seconds (self + children), peak RSS MiB of self and of the children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    # ru_maxrss is in KiB on Linux
    return cpu, own.ru_maxrss / 1024.0, children.ru_maxrss / 1024.0


class StageClock:
    """Measure consecutive stages of one run; ``records`` holds them in order, then the total."""

    def __init__(self) -> None:
        self.records: list[StageRecord] = []
        self._wall0 = time.perf_counter()
        self._cpu0 = _usage()[0]

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Measure the ``with`` block as stage ``name`` (recorded also when it raises)."""
        wall, cpu = time.perf_counter(), _usage()[0]
        try:
            yield
        finally:
            self.records.append(self._record(name, wall, cpu))

    def total(self) -> StageRecord:
        """The whole run so far, from the clock's creation: the ``total`` row."""
        return self._record("total", self._wall0, self._cpu0)

    def seconds(self) -> dict[str, float]:
        """Stage name -> wall seconds (a stage run twice: summed)."""
        out: dict[str, float] = {}
        for r in self.records:
            out[r.stage] = out.get(r.stage, 0.0) + r.wall_s
        return out

    @staticmethod
    def _record(name: str, wall: float, cpu: float) -> StageRecord:
        now_cpu, peak, children = _usage()
        return StageRecord(name, time.perf_counter() - wall, now_cpu - cpu, peak, children)


def stage_rows(records: Sequence[StageRecord | Mapping[str, Any]], *, level: str,
               subject: str | None = None, worker: str | None = None) -> list[dict[str, Any]]:
    """Rows of the stage table (:data:`STAGE_COLUMNS`) for one run's records."""
    rows = []
    for r in records:
        values = asdict(r) if isinstance(r, StageRecord) else dict(r)
        rows.append({"level": level, "subject": subject, **values, "worker": worker})
    return rows


def write_stage_table(rows: Sequence[Mapping[str, Any]], path: Path | str) -> Path:
    """Write the stage table as TSV (``n/a`` for missing values) with its JSON sidecar.

    Returns
    -------
    Path
        The TSV written; the sidecar is the same name with ``.json``.
    """
    path = Path(path)
    table = pd.DataFrame(list(rows), columns=list(STAGE_COLUMNS))
    for column in ("wall_s", "cpu_s", "peak_rss_mb", "children_peak_rss_mb"):
        table[column] = table[column].astype(float).round(3)
    sidecar: dict[str, dict[str, str]] = {name: {"Description": text}
                                          for name, text in STAGE_COLUMNS.items()}
    for column in ("wall_s", "cpu_s"):
        sidecar[column]["Units"] = "s"
    for column in ("peak_rss_mb", "children_peak_rss_mb"):
        sidecar[column]["Units"] = "MiB"
    return write_tsv(table, path, sidecar)


def write_stage_log(rows: Sequence[Mapping[str, Any]], log_dir: Path | str, level: str,
                    started: datetime.datetime) -> Path:
    """``log_dir/<level>_stages_<YYYYmmdd-HHMMSS>.tsv`` and ``<level>_stages_latest.tsv`` (+ sidecars).

    Returns
    -------
    Path
        The time-stamped table.
    """
    log_dir = Path(log_dir)
    path = write_stage_table(rows, log_dir / f"{level}_stages_{started:%Y%m%d-%H%M%S}.tsv")
    write_stage_table(rows, log_dir / f"{level}_stages_latest.tsv")
    return path
