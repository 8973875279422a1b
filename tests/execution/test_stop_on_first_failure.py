"""``stop_on_first_failure`` (fMRIPrep's ``--stop-on-first-crash``): no subject starts after a failure."""

from __future__ import annotations

import pandas as pd
import pytest

from fmri_pain.errors import InputError
from fmri_pain.execution import runner as execution
from tests.execution.test_execution import deterministic_task, make_dataset, ran, recording_task, spec_with


def fails_02(subject, runs, spec, output_dir, work_dir):
    if subject == "02":
        return deterministic_task(subject, runs, spec, output_dir, work_dir)  # ValueError, once
    return recording_task(subject, runs, spec, output_dir, work_dir)


@pytest.fixture
def dataset(tmp_path):
    runs, _ = make_dataset(tmp_path / "bids")
    return runs, tmp_path / "out"


def test_serial_stops_after_the_first_failure(dataset):
    runs, out = dataset
    summary = execution.run_participants(runs, spec_with(retries=2), out, task=fails_02,
                                         verbosity=0, stop_on_first_failure=True)
    assert ran(out) == ["01", "02"]  # 02 ran once (not retried), 03 and 04 never started
    assert [(o.subject, o.status) for o in summary.outcomes] == [
        ("01", "done"), ("02", "failed"), ("03", "not started"), ("04", "not started")]
    assert summary.exit_code == 1 and summary.failed == ["02", "03", "04"]
    assert "ValueError" in summary.outcome("02").error
    text = summary.format_table()
    assert "1 done, 0 skipped (up to date), 1 failed, 2 not started" in text
    table = pd.read_csv(summary.log_path, sep="\t", dtype=str)
    assert list(table["status"]) == ["done", "failed", "not started", "not started"]


def test_without_the_flag_every_subject_runs(dataset):
    runs, out = dataset
    summary = execution.run_participants(runs, spec_with(), out, task=fails_02, verbosity=0)
    assert ran(out) == ["01", "02", "03", "04"] and summary.failed == ["02"]


def test_an_input_failure_found_before_scheduling_stops_everything(dataset):
    runs, out = dataset
    bad = InputError("BOLD truncated", subject="03", path=runs["03"][0].bold)
    runs = {s: r for s, r in runs.items() if s != "03"}
    summary = execution.run_participants(runs, spec_with(), out, task=recording_task, verbosity=0,
                                         input_errors={"03": [bad]}, stop_on_first_failure=True)
    assert ran(out) == []
    assert [(o.subject, o.status) for o in summary.outcomes] == [
        ("01", "not started"), ("02", "not started"), ("03", "failed"), ("04", "not started")]


def test_distributed_stops_submitting_after_the_first_failure(dataset):
    from distributed import Client

    runs, out = dataset
    # One worker thread: subjects go one at a time, so nothing is in flight when 02 fails.
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        summary = execution.run_participants(runs, spec_with(scheduler="local"), out, task=fails_02,
                                             verbosity=0, client=client, stop_on_first_failure=True)
    assert ran(out) == ["01", "02"]
    assert [o.status for o in summary.outcomes] == ["done", "failed", "not started", "not started"]
