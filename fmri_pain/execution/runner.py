"""Participant-level execution: one task per subject through a backend, with retries, resume and a report.

Each subject is one task (for the pipeline: preprocessing + first level +
within-subject contrasts; Nipype runs inside the task with its own plugin).
Tasks are mapped over subjects on the backend ``execution.scheduler`` names
(:mod:`fmri_pain.execution.backends`: a local dask cluster, batch jobs, a
running scheduler, or serially in this process), each wrapped by
:func:`fmri_pain.execution.task.execute_subject`.

A subject that fails is retried only when the failure is the infrastructure's
(see :func:`fmri_pain.execution.failures.is_infrastructure_failure`: a killed
worker, a lost connection, a ``MemoryError``, a transient I/O error such as
``EIO``/``ESTALE``/a timeout), then reported; every other subject finishes.
Everything deterministic fails once: input errors
(:class:`fmri_pain.errors.InputError`), spec errors, files that cannot be
parsed, missing or unreadable files, a full disk, and every other exception
(``ValueError``, ``RuntimeError`` ...: the same code on the same input fails the
same way again). The run ends with a table (subject, status, duration, error,
file at fault) printed and written to ``OUTPUT/logs/participant_<time>.tsv``.
With ``stop_on_first_failure`` (fMRIPrep's ``--stop-on-first-crash``) no subject is
started after the first failure; those left have the status ``not started``.

Resume (:mod:`fmri_pain.execution.resume`): a subject whose record of an
earlier success matches its fingerprint and whose outputs all exist is skipped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import functools
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fmri_pain.bids.derivatives import write_text, write_text_if_changed, write_tsv
from fmri_pain.bids.runs import Run
from fmri_pain.errors import InputError
from fmri_pain.execution.backends import Backend, backend_for
from fmri_pain.execution.failures import is_infrastructure_failure, one_line, path_from_exception
from fmri_pain.execution.progress import STAGE_TOPIC, Progress, emit, set_stage_callback
from fmri_pain.execution.resume import SpecLike, subject_fingerprint, up_to_date_record
from fmri_pain.execution.stages import stage_rows, write_stage_log
from fmri_pain.execution.task import SubjectOutcome, Task, execute_subject, where

__all__ = ["ExecutionSummary", "run_participants"]

NOT_STARTED = "not started"
"""Status of a subject left out because an earlier one failed (``stop_on_first_failure``)."""

_TABLE_COLUMNS = ["subject", "status", "duration_s", "attempts", "worker", "error", "path",
                  "notes", "log"]


@dataclass
class ExecutionSummary:
    """Outcomes of a participant-level run.

    ``notes`` holds the dataset scan's notes (``subject``, ``kind``, ``path``,
    ``message`` dicts: drop-outs, ignored files), printed under the table.
    """

    outcomes: list[SubjectOutcome]
    log_path: Path | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)
    stage_log: Path | None = None
    """``logs/participant_stages_<time>.tsv``: wall, CPU, peak memory of each subject's stages."""

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
            df = df[df["status"].isin(["failed", "interrupted", NOT_STARTED])]
        df = df.fillna("")
        n_done = sum(o.status == "done" for o in self.outcomes)
        n_skip = sum(o.status == "skipped" for o in self.outcomes)
        n_left = sum(o.status == NOT_STARTED for o in self.outcomes)
        left = f", {n_left} not started (stopped after the first failure)" if n_left else ""
        head = (f"participant level: {n_done} done, {n_skip} skipped (up to date), "
                f"{len(self.failed) - n_left} failed{left} of {len(self.outcomes)} subjects")
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


def run_participants(runs_by_subject: Mapping[str, Sequence[Run]], spec: SpecLike,
                     output_dir: Path | str, *, task: Task,
                     work_dir: Path | str | None = None, force: bool = False,
                     verbosity: int = 1, client: Any = None,
                     input_errors: Mapping[str, Sequence[InputError]] | None = None,
                     notes: Sequence[Mapping[str, Any]] | None = None,
                     stop_on_first_failure: bool = False) -> ExecutionSummary:
    """Run the participant level for every subject, isolated, retried and resumable.

    Parameters
    ----------
    runs_by_subject : mapping
        Subject label -> its Run records.
    spec : AnalysisSpec
        Handed to the task as is. The runner reads only ``spec.execution`` (the
        backend, retries, threads) and, for the resume fingerprint, the other
        parameters of ``spec.to_dict()``.
    output_dir : path
        Derivatives folder; logs go to ``output_dir/logs``.
    task : callable
        The unit of work, ``task(subject, runs, spec, output_dir, work_dir) ->
        {"outputs": [...]}`` (the pipeline's is
        :func:`fmri_pain.pipeline.participant.run_participant`, bound by
        :func:`fmri_pain.pipeline.participant.run_participant_level`). Must be
        picklable for distributed schedulers.
    work_dir : path, optional
        Passed to the task (Nipype working directory).
    force : bool
        Re-run subjects whose outputs are up to date.
    verbosity : int
        0 quiet (failures only), 1 progress, 2 verbose.
    client : distributed.Client, optional
        Use this client. Without one, the backend of ``spec.execution.scheduler``
        opens one for the duration of the call (none for ``scheduler: none``).
    input_errors : mapping, optional
        Subject -> problems found while validating the dataset
        (``TrialLayout.failed_subjects``). A subject without runs to analyse is
        reported as failed with them; one with valid runs left is analysed and
        its table row names the excluded files.
    notes : sequence of dict, optional
        The dataset scan's notes (``TrialLayout.notes``: drop-outs, ignored
        files): each subject's go into its row's ``notes`` column, all are
        printed under the table.
    stop_on_first_failure : bool
        Start no subject after one has failed (after its retries); subjects
        already running finish. A subject failed by ``input_errors`` counts, so
        then none starts. The others are reported with status ``not started``.

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
        record = None if force else up_to_date_record(output_dir, subject, fingerprint)
        if record is not None:
            outcomes[subject] = SubjectOutcome(
                subject, "skipped", duration_s=float(record.get("duration_s", 0.0)),
                worker=record.get("worker"), outputs=list(record.get("outputs", [])),
                log=str(log_dir / f"sub-{subject}_participant.log"))
        else:
            todo.append((subject, fingerprint))

    progress = Progress(total=len(runs_by_subject), initial=len(outcomes), verbosity=verbosity)
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

    stop = stop_on_first_failure
    try:
        if todo and not (stop and any(o.status == "failed" for o in outcomes.values())):
            backend = backend_for(spec.execution)
            with (contextlib.nullcontext(client) if client is not None
                  else backend.client(log_dir=log_dir, verbosity=verbosity)) as active:
                run = _run_serial if active is None else functools.partial(_run_distributed, active)
                run(backend, task, todo, runs_by_subject, spec, output_dir, work_dir,
                    outcomes, progress, stop_on_failure=stop)
        for subject, _ in todo:  # left by stop_on_first_failure
            if subject not in outcomes:
                outcomes[subject] = SubjectOutcome(subject, NOT_STARTED,
                                                   error="not started: an earlier subject failed "
                                                         "(stop on first failure)")
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
            progress: Progress, verbosity: int, problems: Mapping[str, list[InputError]],
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
            rows = [row for o in ordered for row in stage_rows(o.stages, level="participant",
                                                                subject=o.subject, worker=o.worker)]
            if rows:
                summary.stage_log = write_stage_log(rows, log_dir, "participant", started)
    except OSError as exc:
        emit(f"warning: cannot write the subject table under {log_dir}: "
              f"{exc.strerror or exc}", logging.WARNING)
    if verbosity >= 1:
        print(summary.format_table(), flush=True)
    elif summary.failed:
        print(summary.format_table(failed_only=True), file=sys.stderr, flush=True)
    return summary


def _tsv_text(df: pd.DataFrame) -> str:
    return df.to_csv(sep="\t", index=False, na_rep="n/a")


def _run_serial(backend: Backend, task: Task, todo: list[tuple[str, str]], runs_by_subject,
                spec: SpecLike, output_dir: Path, work_dir: Path | None,
                outcomes: dict[str, SubjectOutcome], progress: Progress, *,
                stop_on_failure: bool = False) -> None:
    """Run the subjects one after the other in this process; retry infrastructure failures."""
    set_stage_callback(progress.stage)
    try:
        for subject, fingerprint in todo:
            if stop_on_failure and any(o.status == "failed" for o in outcomes.values()):
                break
            attempt = 1
            while True:
                progress.stage(subject, "running")
                try:
                    result = execute_subject(task, subject, runs_by_subject[subject], spec,
                                             output_dir, work_dir, fingerprint, attempt,
                                             backend.task_threads, progress.verbosity)
                except Exception as exc:  # noqa: BLE001 -- the next subjects are still attempted
                    result = {"subject": subject, "status": "failed",
                              "retry": is_infrastructure_failure(exc), "error": one_line(exc),
                              "path": path_from_exception(exc), "duration_s": 0.0,
                              "worker": where(), "outputs": [], "log": None}
                if (result["status"] == "failed" and result["retry"]
                        and attempt <= backend.execution.retries):
                    progress.retry(subject, attempt, result["error"])
                    attempt += 1
                    continue
                outcomes[subject] = SubjectOutcome.from_result(result, attempt)
                progress.finished(outcomes[subject])
                break
    finally:
        set_stage_callback(None)


def _run_distributed(client: Any, backend: Backend, task: Task, todo: list[tuple[str, str]],
                     runs_by_subject, spec: SpecLike, output_dir: Path, work_dir: Path | None,
                     outcomes: dict[str, SubjectOutcome], progress: Progress, *,
                     stop_on_failure: bool = False) -> None:
    """Submit subjects as worker threads free up; retry infrastructure failures.

    At most as many subjects are in flight as the cluster has worker threads.
    The scheduler would otherwise hand several subjects to one worker at once
    (a handful of long tasks is not "root-ish", so dask does not queue them), and
    a worker's death would fail subjects that had not even started there.
    """
    from distributed import wait

    backend.fit(client, len(todo))
    threads = backend.task_threads
    fingerprints = dict(todo)
    token = f"{os.getpid()}-{time.time_ns()}"

    def submit(subject: str, attempt: int):
        return client.submit(
            execute_subject, task, subject, list(runs_by_subject[subject]), spec, output_dir,
            work_dir, fingerprints[subject], attempt, threads, progress.verbosity,
            pure=False, key=f"participant-sub-{subject}-{attempt}-{token}",
        )

    def capacity() -> int:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:  # noqa: BLE001 -- scheduler briefly unreachable: keep going slowly
            return 1

    with contextlib.suppress(Exception):
        client.subscribe_topic(STAGE_TOPIC,
                               lambda event: progress.stage(event[1].get("subject"),
                                                            event[1].get("stage", "")))
    waiting: collections.deque[tuple[str, int]] = collections.deque((s, 1) for s, _ in todo)
    live: dict[str, tuple[Any, str, int]] = {}
    try:
        while waiting or live:
            if stop_on_failure and any(o.status == "failed" for o in outcomes.values()):
                waiting.clear()  # reported as not started; the running ones finish
                if not live:
                    break
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
                              "error": f"worker lost: {one_line(exc)}", "path": None,
                              "duration_s": 0.0, "worker": None, "outputs": [],
                              "log": str(output_dir / "logs" / f"sub-{subject}_participant.log")}
                fut.release()
                if (result["status"] == "failed" and result["retry"]
                        and attempt <= backend.execution.retries):
                    progress.retry(subject, attempt, result["error"])
                    waiting.appendleft((subject, attempt + 1))
                    continue
                outcomes[subject] = SubjectOutcome.from_result(result, attempt)
                progress.finished(outcomes[subject])
    except KeyboardInterrupt:
        client.cancel([f for f, _, _ in live.values()])
        raise
    finally:
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(STAGE_TOPIC)
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
            write_text("\n".join(lines) + "\n", folder / f"{name}.log")


