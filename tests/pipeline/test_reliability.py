"""CLI and execution reliability (issue 16 items 2, 3, 5, 6, 7): inputs are never written
into, errors are one line, one run per output folder, nothing silent."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from fmri_pain.execution import runner as execution
from fmri_pain.cli import check_output_dir, main
from fmri_pain.bids.derivatives import write_dataset_description
from fmri_pain.bids.output_lock import LOCK_NAME, OutputLock, OutputLocked
from tests.execution.test_execution import make_dataset, recording_task, spec_with


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _fmriprep(folder: Path) -> bytes:
    folder.mkdir(parents=True)
    text = json.dumps({"Name": "fMRIPrep output", "BIDSVersion": "1.4.0",
                       "DatasetType": "derivative", "GeneratedBy": [{"Name": "fMRIPrep"}]})
    (folder / "dataset_description.json").write_text(text)
    return text.encode()


# --------------------------------------------------------------------------- no input overwritten

def test_output_equal_to_or_inside_derivatives_is_refused(tmp_path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    deriv = tmp_path / "fmriprep"
    original = _fmriprep(deriv)
    for out in (deriv, deriv / "fmri-pain"):
        code = main([str(bids), str(out), "participant", "--derivatives", str(deriv)])
        assert code == 2
        line = _one_line(capsys.readouterr().err)
        assert "--derivatives folder" in line and str(deriv) in line
    assert (deriv / "dataset_description.json").read_bytes() == original
    assert sorted(p.name for p in deriv.iterdir()) == ["dataset_description.json"]


def test_output_inside_the_raw_dataset_is_refused_except_its_derivatives(tmp_path, capsys):
    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True)
    for out in (bids, bids / "sub-01", bids / "code" / "out"):
        assert main([str(bids), str(out), "participant"]) == 2
        assert str(out) in _one_line(capsys.readouterr().err)
    assert sorted(p.name for p in bids.iterdir()) == ["sub-01"]
    check_output_dir(bids / "derivatives" / "fmri-pain", bids)  # as BIDS intends: allowed
    check_output_dir(tmp_path / "out", bids / "derivatives" / "x", None)


def test_own_outputs_may_be_the_derivatives_and_work_dir_inside_inputs_warns(tmp_path, caplog):
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    write_dataset_description(out, bids)  # the toolkit's own (preprocessed) outputs
    check_output_dir(out, bids, out)
    with caplog.at_level(logging.WARNING, logger="fmri_pain"):
        check_output_dir(out, bids, None, bids / "work")
        check_output_dir(out, bids, None, tmp_path / "work")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "inside the raw dataset" in warnings[0]


def test_permute_refuses_to_write_beside_its_input_maps(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "group").mkdir(parents=True)
    maps = [out / "group" / f"m{i}.nii.gz" for i in range(3)]
    for m in maps:
        m.write_bytes(b"placeholder")
    code = main(["permute", str(out), *map(str, maps), "--mask", str(maps[0])])
    assert code == 2
    assert "where permute writes" in _one_line(capsys.readouterr().err)
    assert sorted(p.name for p in (out / "group").iterdir()) == ["m0.nii.gz", "m1.nii.gz", "m2.nii.gz"]


# --------------------------------------------------------------------------- one line, no traceback

def test_unwritable_output_dir_is_one_line(tmp_path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main([str(bids), str(blocker / "out"), "participant"])
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert "cannot be written into" in line and str(blocker / "out") in line


def test_group_before_participant_says_run_participant_first(sim_trial, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(sim_trial.bids_dir), str(out), "group"]) == 2
    assert "participant` first" in _one_line(capsys.readouterr().err)
    assert not out.exists()
    out.mkdir()
    assert main([str(sim_trial.bids_dir), str(out), "group", "--scheduler", "none"]) == 2
    captured = capsys.readouterr()
    assert "participant` first" in captured.err and "Traceback" not in captured.err
    assert not (out / LOCK_NAME).exists()  # released on error


def test_spec_that_is_not_utf8_is_one_line(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes("first_level:\n  smoothing_fwhm: 6 # \u00b5m\n".encode("latin-1"))
    code = main([str(tmp_path), str(tmp_path / "out"), "participant", "--spec", str(spec)])
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert "spec.yaml" in line


def test_unexpected_exception_is_one_line_and_the_traceback_goes_to_a_file(
        tmp_path, capsys, monkeypatch):
    import fmri_pain.cli as cli

    def crash(args):
        return 1 // 0

    monkeypatch.setattr(cli, "_bids_app", crash)
    code = main([str(tmp_path), str(tmp_path / "out"), "participant"])
    assert code == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("fmri-pain: unexpected error: ZeroDivisionError: integer division")
    log = Path(line.split("traceback in ")[1])
    assert log.parent == tmp_path / "out" / "logs"
    assert "Traceback" in log.read_text() and "1 // 0" in log.read_text()


def test_full_disk_log_handler_does_not_stop_the_run(tmp_path, capsys, monkeypatch):
    """The per-subject log handler fails with ENOSPC: every subject is still attempted,
    the table is printed, no traceback; the table files failing too is one warning."""
    runs, _ = make_dataset(tmp_path / "bids")
    out = tmp_path / "out"

    def full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logging.FileHandler, "emit", full)
    summary = execution.run_participants(runs, spec_with(retries=1), out,
                                         task=recording_task, verbosity=1)
    captured = capsys.readouterr()
    assert summary.succeeded == ["01", "02", "03", "04"] and summary.exit_code == 0
    assert (out / "ran.txt").read_text().split() == ["01", "02", "03", "04"]  # each once
    assert "participant level: 4 done" in captured.out
    assert captured.err.count("cannot write log file") == 4
    assert "Traceback" not in captured.out + captured.err

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(execution, "write_tsv", no_space)
    summary = execution.run_participants(runs, spec_with(), out, task=recording_task,
                                         verbosity=1, force=True)
    captured = capsys.readouterr()
    assert summary.exit_code == 0 and "participant level: 4 done" in captured.out
    assert "cannot write the subject table" in captured.err and "Traceback" not in captured.err


# --------------------------------------------------------------------------- one run per folder

_HOLDER = textwrap.dedent("""
    import pathlib, sys, time
    from fmri_pain.bids.output_lock import OutputLock
    lock = OutputLock(sys.argv[1], command="holder-run").acquire()
    pathlib.Path(sys.argv[2]).write_text("held")
    while not pathlib.Path(sys.argv[3]).exists():
        time.sleep(0.05)
    lock.release()
""")


def _start_holder(out: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    held, release = tmp_path / "held", tmp_path / "release"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), str(held), str(release)])
    deadline = time.monotonic() + 60
    while not held.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "holder did not start"
        time.sleep(0.05)
    return proc, release


def test_second_run_into_a_locked_output_names_host_and_pid(tmp_path, capsys):
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    proc, release = _start_holder(out, tmp_path)
    try:
        assert main([str(bids), str(out), "participant"]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"PID {proc.pid}" in line and socket.gethostname() in line and "holder-run" in line
        assert not (out / "dataset_description.json").exists()  # the second run wrote nothing
    finally:
        release.write_text("go")
        proc.wait(timeout=60)
    assert not (out / LOCK_NAME).exists()
    with OutputLock(out) as lock:
        assert lock.taken_over is None


def test_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "out"
    proc, _ = _start_holder(out, tmp_path)
    proc.kill()
    proc.wait(timeout=60)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid
    with caplog.at_level(logging.WARNING, logger="fmri_pain"):
        with OutputLock(out) as lock:
            assert lock.taken_over["pid"] == proc.pid
            assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert any("stale lock" in r.getMessage() and str(proc.pid) in r.getMessage()
               for r in caplog.records)
    assert not (out / LOCK_NAME).exists()


def test_lock_of_another_host_is_stale_only_without_heartbeat(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"host": "node17.cluster", "pid": 4242,
                                             "started": "2026-01-01T00:00:00", "command": "x"}))
    with pytest.raises(OutputLocked, match="node17.cluster, PID 4242"):
        OutputLock(out, stale_after=3600).acquire()
    old = time.time() - 7200
    os.utime(out / LOCK_NAME, (old, old))
    lock = OutputLock(out, stale_after=3600, heartbeat=0.05).acquire()
    try:
        assert lock.taken_over["host"] == "node17.cluster"
        os.utime(out / LOCK_NAME, (old, old))
        time.sleep(0.3)  # the holder's heartbeat refreshes its record
        assert time.time() - (out / LOCK_NAME).stat().st_mtime < 5
    finally:
        lock.release()


_KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from fmri_pain.bids.derivatives import atomic_write
    with atomic_write(Path(sys.argv[1])) as tmp:
        tmp.write_bytes(b"half a map")
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_next_run_removes_temporaries_of_a_killed_run(tmp_path, capsys):
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    target = out / "sub-01" / "func" / "sub-01_task-stim_contrast-stim_stat-z_statmap.nii.gz"
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target)])
    assert proc.returncode == -9
    orphans = list(target.parent.glob(".*.tmp.nii.gz"))
    assert len(orphans) == 1 and not target.exists()
    keep = out / "sub-01" / "func" / ".hidden_but_not_ours.nii.gz"
    keep.write_text("x")
    assert main([str(bids), str(out), "group"]) == 2  # the empty dataset is then an error
    captured = capsys.readouterr()
    assert "removed 1 temporary file(s)" in captured.err
    assert not orphans[0].exists() and keep.exists()


def test_rerun_with_nothing_to_do_writes_nothing(tmp_path):
    runs, _ = make_dataset(tmp_path / "bids")
    out = tmp_path / "out"

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    write_dataset_description(out, tmp_path / "bids")
    execution.run_participants(runs, spec_with(), out, task=recording_task, verbosity=0)
    before = snapshot()
    time.sleep(0.01)
    write_dataset_description(out, tmp_path / "bids")
    again = execution.run_participants(runs, spec_with(), out, task=recording_task, verbosity=0)
    assert [o.status for o in again.outcomes] == ["skipped"] * 4
    assert snapshot() == before
    write_dataset_description(out, tmp_path / "elsewhere")  # changed content is written
    assert "elsewhere" in (out / "dataset_description.json").read_text()


# --------------------------------------------------------------------------- nothing silent

def _trial_with_dropout_and_stray(sim_trial, root: Path) -> Path:
    bids = root / "bids"
    top = str(sim_trial.bids_dir)
    shutil.copytree(sim_trial.bids_dir, bids,
                    ignore=lambda d, names: [n for n in names if d == top and n.startswith("sub-")
                                             and n not in ("sub-01", "sub-02")])
    shutil.rmtree(bids / "sub-02" / "ses-drgs")
    sessions = bids / "sub-02" / "sub-02_sessions.tsv"
    sessions.write_text("".join(line for line in sessions.read_text().splitlines(True)
                                if "drgs" not in line.lower()))
    func = bids / "sub-01" / "ses-scs" / "func"
    bold = next(func.glob("*_bold.nii.gz"))
    shutil.copy(bold, func / bold.name.replace("_bold", "_foo-bar_bold"))
    return bids


def test_dropout_and_stray_file_are_noted_in_summary_tsv_and_report(sim_trial, tmp_path, capsys):
    from fmri_pain.cli import write_dataset_notes
    from fmri_pain.bids.layout import load_layout
    from fmri_pain.report.group import _dataset_notes

    bids = _trial_with_dropout_and_stray(sim_trial, tmp_path)
    layout = load_layout(bids, check_data=False)
    # the stray file is not taken for a second SCS run
    assert [(r.subject, r.condition) for r in layout.runs] == [
        ("01", "DRGS"), ("01", "DUAL"), ("01", "SCS"), ("02", "DUAL"), ("02", "SCS")]
    notes = layout.notes_table()
    assert list(notes["kind"]) == ["ignored file", "drop-out"]
    assert notes["path"].iloc[0].endswith("_foo-bar_bold.nii.gz")
    assert "'foo-bar' is not a BIDS entity" in notes["message"].iloc[0]
    assert notes["message"].iloc[1] == "no session of DRGS: analysed with 2 of 3 conditions"

    runs, _ = make_dataset(tmp_path / "arrays", subjects=("01", "02"))
    out = tmp_path / "out"
    summary = execution.run_participants(runs, spec_with(), out, task=recording_task,
                                         verbosity=1, notes=layout.notes)
    printed = capsys.readouterr().out
    assert "sub-02 drop-out: no session of DRGS" in printed
    assert "sub-01 ignored file: ignored: not a BIDS file name" in printed
    table = pd.read_csv(summary.log_path, sep="\t", dtype=str).set_index("subject")
    assert table.loc["02", "notes"].startswith("drop-out: no session of DRGS")
    assert "foo-bar" in table.loc["01", "notes"]

    path = write_dataset_notes(out, layout)
    html = str(_dataset_notes(out))
    assert "_foo-bar_bold.nii.gz" in html and "no session of DRGS" in html
    mtime = path.stat().st_mtime_ns
    write_dataset_notes(out, layout)
    assert path.stat().st_mtime_ns == mtime
