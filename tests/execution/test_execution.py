"""Execution layer: failure isolation, retries, resume, progress, schedulers (local, none, SLURM).

Task functions are injected, so these tests exercise the execution layer on a
small real numeric task (least squares on a per-subject array) independently of
the pipeline; one SLURM test runs the real pipeline through the CLI.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from fmri_pain.cli import add_execution_arguments, execution_spec_from_args, verbosity_from_args
from fmri_pain.execution import runner as execution
from fmri_pain.execution.backends import open_client, validate_scheduler
from fmri_pain.execution.failures import is_infrastructure_failure
from fmri_pain.execution.resume import subject_fingerprint
from fmri_pain.bids.derivatives import atomic_write, write_json
from fmri_pain.errors import InputError
from fmri_pain.bids.layout import Run
from fmri_pain.config.fields import SpecError
from fmri_pain.config.spec import AnalysisSpec

# Workers cannot import this test module by name: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_TIME, N_VOX = 60, 500


# --------------------------------------------------------------------------- tasks

def _design(n_time: int) -> np.ndarray:
    t = np.arange(n_time)
    return np.column_stack([np.ones(n_time), np.sin(2 * np.pi * t / 20.0), t / n_time])


def numeric_task(subject, runs, spec, output_dir, work_dir):
    """OLS betas of each run's array; writes them and where the task ran."""
    out = Path(output_dir) / f"sub-{subject}" / "func"
    outputs = []
    for run in runs:
        data = np.load(run.bold)
        beta, *_ = np.linalg.lstsq(_design(data.shape[0]), data, rcond=None)
        path = out / f"sub-{subject}_ses-{run.session}_beta.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, beta)
        outputs.append(path)
    where = out / f"sub-{subject}_where.json"
    write_json({"pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                "omp": os.environ.get("OMP_NUM_THREADS"),
                "malloc_trim": os.environ.get("MALLOC_TRIM_THRESHOLD_")}, where)
    return {"outputs": outputs + [where]}


def recording_task(subject, runs, spec, output_dir, work_dir):
    with open(Path(output_dir) / "ran.txt", "a") as fh:
        fh.write(subject + "\n")
    return numeric_task(subject, runs, spec, output_dir, work_dir)


def killer_task(subject, runs, spec, output_dir, work_dir):
    """Kills its own worker process in the middle of sub-02's first attempt."""
    marker = Path(output_dir) / f"killed-{subject}"
    if subject == "02" and not marker.exists():
        numeric_task(subject, runs[:1], spec, output_dir, work_dir)  # half the work done
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return numeric_task(subject, runs, spec, output_dir, work_dir)


def bad_input_task(subject, runs, spec, output_dir, work_dir):
    if subject == "03":
        raise InputError("BOLD has 3 dimensions, expected 4", subject=subject, path=runs[0].bold)
    return recording_task(subject, runs, spec, output_dir, work_dir)


def flaky_task(subject, runs, spec, output_dir, work_dir):
    marker = Path(output_dir) / f"flaky-{subject}"
    if subject == "01" and not marker.exists():
        marker.write_text("1")
        raise OSError(errno.ESTALE, "transient failure (e.g. NFS hiccup)")
    return numeric_task(subject, runs, spec, output_dir, work_dir)


def crashing_task(subject, runs, spec, output_dir, work_dir):
    with open(Path(output_dir) / "ran.txt", "a") as fh:
        fh.write(subject + "\n")
    if subject == "02":
        raise OSError(errno.EIO, "Input/output error", str(runs[0].confounds))
    return numeric_task(subject, runs, spec, output_dir, work_dir)


def deterministic_task(subject, runs, spec, output_dir, work_dir):
    """Fails the same way at every attempt: bugs, bad values, missing files, a full disk."""
    with open(Path(output_dir) / "ran.txt", "a") as fh:
        fh.write(subject + "\n")
    exc = {"01": SpecError("contrasts.evil: 'on.to_csv(...)' is not a valid contrast expression"),
           "02": ValueError("invalid contrast expression"),
           "03": FileNotFoundError(errno.ENOENT, "No such file or directory", str(runs[0].events)),
           "04": OSError(errno.ENOSPC, "No space left on device")}[subject]
    raise exc


def truncated_gzip_task(subject, runs, spec, output_dir, work_dir):
    """Reads a corrupted .nii.gz the way a stage would, without wrapping the error."""
    import nibabel as nib

    with open(Path(output_dir) / "ran.txt", "a") as fh:
        fh.write(subject + "\n")
    if subject == "04":
        bad = Path(runs[0].bold).with_name("corrupt_bold.nii.gz")
        bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
        nib.load(bad).get_fdata()
    return numeric_task(subject, runs, spec, output_dir, work_dir)


def interrupting_task(subject, runs, spec, output_dir, work_dir):
    if subject == "03":
        raise KeyboardInterrupt
    return recording_task(subject, runs, spec, output_dir, work_dir)


def lying_task(subject, runs, spec, output_dir, work_dir):
    return {"outputs": [Path(output_dir) / "never-written.nii.gz"]}


# --------------------------------------------------------------------------- data

def make_dataset(root: Path, subjects=("01", "02", "03", "04"), sessions=("scs", "dual")):
    """Per-subject arrays with known betas; returns runs_by_subject and the true betas."""
    rng = np.random.default_rng(0)
    runs_by_subject, truth = {}, {}
    for i, sub in enumerate(subjects):
        runs = []
        for ses in sessions:
            func = root / f"sub-{sub}" / f"ses-{ses}" / "func"
            func.mkdir(parents=True, exist_ok=True)
            beta = rng.normal(size=(3, N_VOX))
            data = _design(N_TIME) @ beta + 0.01 * rng.normal(size=(N_TIME, N_VOX))
            bold = func / f"sub-{sub}_ses-{ses}_task-stim_bold.npy"
            np.save(bold, data)
            events = func / f"sub-{sub}_ses-{ses}_task-stim_events.tsv"
            events.write_text("onset\tduration\ttrial_type\n0\t10\ton\n")
            confounds = func / f"sub-{sub}_ses-{ses}_desc-confounds_timeseries.tsv"
            confounds.write_text("trans_x\n" + "\n".join("0.0" for _ in range(N_TIME)) + "\n")
            runs.append(Run(subject=sub, session=ses, condition=ses.upper(), period=None,
                            task="stim", run=None, bold=bold, events=events, mask=None,
                            confounds=confounds, metadata={"RepetitionTime": 2.0}))
            truth[(sub, ses)] = beta
        runs_by_subject[sub] = runs
    return runs_by_subject, truth


def read_betas(output_dir: Path) -> dict:
    return {p.name: np.load(p) for p in sorted(Path(output_dir).glob("sub-*/func/*_beta.npy"))}


def ran(output_dir: Path) -> list[str]:
    path = Path(output_dir) / "ran.txt"
    return sorted(path.read_text().split()) if path.exists() else []


def spec_with(**execution_changes) -> AnalysisSpec:
    base = {"scheduler": "none", "retries": 1, "memory_per_worker": "1GiB"}
    return AnalysisSpec().replace(execution={**base, **execution_changes})


@pytest.fixture(scope="module")
def client():
    """One 2-worker LocalCluster for the module (configured like the real runs)."""
    spec = spec_with(scheduler="local", n_workers=2, threads_per_worker=1)
    with open_client(spec.execution, verbosity=0) as c:
        yield c


@pytest.fixture
def dataset(tmp_path):
    runs, truth = make_dataset(tmp_path / "bids")
    return runs, truth, tmp_path / "out"


# --------------------------------------------------------------------------- serial bookkeeping

def test_serial_run_computes_outputs_and_records(dataset):
    runs, truth, out = dataset
    summary = execution.run_participants(runs, spec_with(), out, task=numeric_task, verbosity=0)
    assert summary.exit_code == 0
    assert summary.succeeded == ["01", "02", "03", "04"]
    assert [o.status for o in summary.outcomes] == ["done"] * 4
    betas = read_betas(out)
    assert len(betas) == 8
    for (sub, ses), beta in truth.items():
        np.testing.assert_allclose(betas[f"sub-{sub}_ses-{ses}_beta.npy"], beta, atol=0.02)
    record = json.loads((out / "logs" / "sub-01_participant.json").read_text())
    assert record["fingerprint"] == subject_fingerprint(runs["01"], spec_with())
    assert "sub-01/func/sub-01_ses-scs_beta.npy" in record["outputs"]
    table = pd.read_csv(out / "logs" / "participant_latest.tsv", sep="\t")
    assert list(table["subject"]) == [1, 2, 3, 4]
    assert set(table["status"]) == {"done"}
    assert len(list((out / "logs").glob("participant_2*.tsv"))) == 1
    # BLAS pinned to threads_per_worker in the serial path too
    where = json.loads((out / "sub-01" / "func" / "sub-01_where.json").read_text())
    assert where["slurm_job_id"] is None


def test_input_error_is_isolated_not_retried_and_names_file(dataset):
    runs, _, out = dataset
    summary = execution.run_participants(runs, spec_with(retries=2), out,
                                         task=bad_input_task, verbosity=0)
    assert summary.exit_code == 1
    assert summary.failed == ["03"]
    assert summary.succeeded == ["01", "02", "04"]
    bad = summary.outcome("03")
    assert bad.attempts == 1  # input errors are never retried
    assert bad.path == str(runs["03"][0].bold)
    assert "3 dimensions" in bad.error
    table = pd.read_csv(summary.log_path, sep="\t", dtype=str)
    row = table[table["subject"] == "03"].iloc[0]
    assert row["status"] == "failed" and row["path"] == str(runs["03"][0].bold)
    assert "BOLD has 3 dimensions" in (out / "logs" / "sub-03_participant.log").read_text()
    assert not (out / "logs" / "sub-03_participant.json").exists()
    assert ran(out) == ["01", "02", "04"]
    assert "leaves out 1 subject(s) that failed: sub-03" in summary.left_out_message()


def test_crash_is_retried_then_reported_with_file(dataset):
    runs, _, out = dataset
    summary = execution.run_participants(runs, spec_with(retries=2), out,
                                         task=crashing_task, verbosity=0)
    assert summary.failed == ["02"]
    crash = summary.outcome("02")
    assert crash.attempts == 3  # a transient I/O error (EIO) is an infrastructure failure
    assert crash.error.startswith("OSError")
    assert crash.path == str(runs["02"][0].confounds)
    assert ran(out).count("02") == 3 and ran(out).count("01") == 1


def test_deterministic_errors_fail_once(dataset):
    """Spec errors, bad values, missing files and a full disk are not retried (issue 12.10)."""
    runs, _, out = dataset
    summary = execution.run_participants(runs, spec_with(retries=2), out,
                                         task=deterministic_task, verbosity=0)
    assert summary.failed == ["01", "02", "03", "04"]
    assert all(summary.outcome(s).attempts == 1 for s in summary.failed)
    assert ran(out) == ["01", "02", "03", "04"]  # each ran exactly once
    assert summary.outcome("01").error.startswith("SpecError: contrasts.evil")
    assert summary.outcome("03").path == str(runs["03"][0].events)


@pytest.mark.parametrize("exc, retried", [
    (MemoryError(), True), (TimeoutError("read timed out"), True),
    (ConnectionResetError(errno.ECONNRESET, "reset"), True), (OSError(errno.EIO, "I/O"), True),
    (OSError(errno.ESTALE, "stale NFS handle"), True),
    (InputError("bad"), False), (SpecError("bad key"), False), (ValueError("x"), False),
    (RuntimeError("x"), False), (KeyError("x"), False), (PermissionError(errno.EACCES, "no"), False),
    (FileNotFoundError(errno.ENOENT, "gone"), False), (OSError(errno.ENOSPC, "full"), False),
    (EOFError("truncated"), False),
])
def test_which_failures_are_retried(exc, retried):
    assert is_infrastructure_failure(exc) is retried


def test_unparseable_file_is_an_input_error(dataset):
    runs, _, out = dataset
    summary = execution.run_participants(runs, spec_with(retries=2), out,
                                         task=truncated_gzip_task, verbosity=0)
    assert summary.failed == ["04"]
    bad = summary.outcome("04")
    assert bad.attempts == 1  # a file that cannot be parsed is not retried
    assert bad.path.endswith("corrupt_bold.nii.gz")
    assert ran(out).count("04") == 1


def test_transient_failure_succeeds_on_retry(dataset):
    runs, _, out = dataset
    summary = execution.run_participants(runs, spec_with(retries=1), out,
                                         task=flaky_task, verbosity=0)
    assert summary.exit_code == 0
    assert summary.outcome("01").attempts == 2
    assert summary.outcome("02").attempts == 1


def test_no_retry_when_retries_zero(dataset):
    runs, _, out = dataset
    summary = execution.run_participants(runs, spec_with(retries=0), out,
                                         task=flaky_task, verbosity=0)
    assert summary.failed == ["01"]
    assert "transient failure" in summary.outcome("01").error


def test_task_reporting_missing_output_fails(dataset):
    runs, _, out = dataset
    summary = execution.run_participants({"01": runs["01"]}, spec_with(retries=0), out,
                                         task=lying_task, verbosity=0)
    assert summary.failed == ["01"]
    assert "do not exist" in summary.outcome("01").error


def test_layout_errors_are_reported(dataset):
    """Subjects the layout rejected appear in the table with their file; partial ones still run."""
    runs, _, out = dataset
    bad_sidecar = runs["02"][0].bold.with_suffix(".json")
    gone = {"05": [InputError("no valid run", subject="05", path=out.parent / "bids" / "sub-05")],
            "02": [InputError("TR 0 in sidecar", subject="02", path=bad_sidecar),
                   InputError("events.tsv has no 'on' trials", subject="02", path="x.tsv")]}
    summary = execution.run_participants(runs, spec_with(), out, task=recording_task,
                                         verbosity=0, input_errors=gone)
    assert [o.subject for o in summary.outcomes] == ["01", "02", "03", "04", "05"]
    assert summary.failed == ["05"] and summary.exit_code == 1
    assert summary.outcome("05").path.endswith("sub-05")
    partial = summary.outcome("02")
    assert partial.status == "done" and partial.path == str(bad_sidecar)
    assert "TR 0" in partial.error and "+1 more" in partial.error
    listed = pd.read_csv(out / "logs" / "participant_input_errors.tsv", sep="\t", dtype=str)
    assert len(listed) == 3 and set(listed["subject"]) == {"02", "05"}
    assert ran(out) == ["01", "02", "03", "04"]


def test_missing_input_file_fails_only_that_subject(dataset):
    runs, _, out = dataset
    runs["04"][1].events.unlink()
    summary = execution.run_participants(runs, spec_with(), out, task=recording_task, verbosity=0)
    assert summary.failed == ["04"]
    assert summary.outcome("04").path == str(runs["04"][1].events)
    assert ran(out) == ["01", "02", "03"]


# --------------------------------------------------------------------------- resume

def test_resume_skips_up_to_date_and_reruns_affected(dataset):
    runs, _, out = dataset
    spec = spec_with()
    first = execution.run_participants(runs, spec, out, task=recording_task, verbosity=0)
    assert ran(out) == ["01", "02", "03", "04"] and first.exit_code == 0
    (out / "ran.txt").unlink()

    # same command: nothing runs
    again = execution.run_participants(runs, spec, out, task=recording_task, verbosity=0)
    assert ran(out) == [] and [o.status for o in again.outcomes] == ["skipped"] * 4
    assert again.exit_code == 0

    # where it runs does not matter for resume
    execution.run_participants(runs, spec_with(retries=3, n_workers=7), out,
                               task=recording_task, verbosity=0)
    assert ran(out) == []

    # a changed input of one subject re-runs exactly that subject
    data = np.load(runs["02"][0].bold)
    np.save(runs["02"][0].bold, data * 2.0)
    execution.run_participants(runs, spec, out, task=recording_task, verbosity=0)
    assert ran(out) == ["02"]
    (out / "ran.txt").unlink()

    # a missing output re-runs its subject
    (out / "sub-03" / "func" / "sub-03_ses-dual_beta.npy").unlink()
    execution.run_participants(runs, spec, out, task=recording_task, verbosity=0)
    assert ran(out) == ["03"]
    (out / "ran.txt").unlink()

    # a changed analysis parameter re-runs everyone
    changed = spec.replace(first_level={"smoothing_fwhm": 8.0})
    execution.run_participants(runs, changed, out, task=recording_task, verbosity=0)
    assert ran(out) == ["01", "02", "03", "04"]
    (out / "ran.txt").unlink()

    # --force re-runs everyone
    execution.run_participants(runs, changed, out, task=recording_task, verbosity=0, force=True)
    assert ran(out) == ["01", "02", "03", "04"]


def test_interrupted_run_resumes_only_unfinished(dataset):
    runs, _, out = dataset
    with pytest.raises(KeyboardInterrupt):
        execution.run_participants(runs, spec_with(), out, task=interrupting_task, verbosity=0)
    assert ran(out) == ["01", "02"]
    latest = pd.read_csv(out / "logs" / "participant_latest.tsv", sep="\t", dtype=str)
    assert dict(zip(latest["subject"], latest["status"])) == {
        "01": "done", "02": "done", "03": "interrupted", "04": "interrupted"}
    (out / "ran.txt").unlink()
    summary = execution.run_participants(runs, spec_with(), out, task=recording_task, verbosity=0)
    assert ran(out) == ["03", "04"]
    assert [o.status for o in summary.outcomes] == ["skipped", "skipped", "done", "done"]


def test_corrupt_or_foreign_record_is_not_trusted(dataset):
    runs, _, out = dataset
    execution.run_participants(runs, spec_with(), out, task=recording_task, verbosity=0)
    (out / "ran.txt").unlink()
    (out / "logs" / "sub-01_participant.json").write_text('{"fingerprint": ')  # half-written
    record = json.loads((out / "logs" / "sub-02_participant.json").read_text())
    write_json({**record, "fingerprint": "0" * 64}, out / "logs" / "sub-02_participant.json")
    execution.run_participants(runs, spec_with(), out, task=recording_task, verbosity=0)
    assert ran(out) == ["01", "02"]


def test_fingerprint_hashes_each_file_once(dataset, monkeypatch):
    runs, _, _ = dataset
    calls = []
    from fmri_pain.bids import derivatives

    real = derivatives._hash_file
    monkeypatch.setattr(derivatives, "_hash_file", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(derivatives, "_HASH_CACHE", {})
    a = subject_fingerprint(runs["01"], spec_with())
    n = len(calls)
    b = subject_fingerprint(runs["01"], spec_with())
    assert a == b and len(calls) == n == 6  # bold, events, confounds of 2 runs, hashed once
    assert subject_fingerprint(runs["02"], spec_with()) != a


# --------------------------------------------------------------------------- progress and CLI

def test_plain_progress_lines_and_table(dataset, capsys):
    runs, _, out = dataset
    summary = execution.run_participants(runs, spec_with(), out, task=bad_input_task, verbosity=1)
    captured = capsys.readouterr()
    assert "sub-01 done (" in captured.err
    assert "sub-03 failed after 1 attempt(s)" in captured.err
    assert str(runs["03"][0].bold) in captured.err
    assert "3 done, 0 skipped (up to date), 1 failed of 4 subjects" in captured.out
    assert str(summary.log_path) in captured.out


def test_quiet_prints_only_failures(dataset, capsys):
    runs, _, out = dataset
    execution.run_participants(runs, spec_with(), out, task=bad_input_task, verbosity=0)
    captured = capsys.readouterr()
    assert "sub-01 done" not in captured.err + captured.out
    assert "sub-03" in captured.err


def test_cli_arguments_override_spec():
    parser = argparse.ArgumentParser()
    add_execution_arguments(parser)
    args = parser.parse_args(["--scheduler", "SLURM", "--queue", "short", "--account", "pain",
                              "--walltime", "04:00:00", "--job-cores", "4", "--job-memory", "16GiB",
                              "--job-extra=--gres=gpu:0", "--job-extra=--exclusive",
                              "--worker-python", "apptainer exec fmri.sif python",
                              "--retries", "3", "-q", "--force"])
    spec = execution_spec_from_args(AnalysisSpec(), args)
    ex = spec.execution
    assert (ex.scheduler, ex.queue, ex.account, ex.walltime, ex.job_cores, ex.job_memory) == (
        "slurm", "short", "pain", "04:00:00", 4, "16GiB")
    assert ex.job_extra_directives == ("--gres=gpu:0", "--exclusive")
    assert ex.worker_python == "apptainer exec fmri.sif python" and ex.retries == 3
    assert verbosity_from_args(args) == 0 and args.force
    assert verbosity_from_args(parser.parse_args(["-v"])) == 2
    # untouched options keep the spec's values
    assert ex.threads_per_worker == 1 and spec.first_level == AnalysisSpec().first_level
    unchanged = execution_spec_from_args(AnalysisSpec(), parser.parse_args([]))
    assert unchanged == AnalysisSpec()
    with pytest.raises(SpecError, match="scheduler"):
        execution_spec_from_args(AnalysisSpec(), parser.parse_args(["--scheduler", "lsf"]))
    with pytest.raises(SpecError, match="n-workers"):
        execution_spec_from_args(AnalysisSpec(), parser.parse_args(["--n-workers", "0"]))
    assert validate_scheduler("tcp://10.0.0.1:8786") == "tcp://10.0.0.1:8786"


def test_example_specs_load():
    from fmri_pain.config.spec import load_spec

    root = Path(__file__).resolve().parents[2] / "pipelines"
    slurm = load_spec(root / "slurm.yaml").execution
    assert slurm.scheduler == "slurm" and slurm.job_cores >= 1 and slurm.worker_python
    assert load_spec(root / "pbs.yaml").execution.scheduler == "pbs"
    assert load_spec(root / "local.yaml").execution.scheduler == "local"


def test_slurm_job_script_from_spec(tmp_path):
    from fmri_pain.execution import backends as _cluster

    spec = spec_with(scheduler="slurm", queue="short", account="pain", walltime="00:30:00",
                     job_cores=2, job_memory="3GiB", job_extra_directives=["--exclusive"],
                     worker_python="apptainer exec img.sif python", n_workers=1)
    cluster = _cluster.jobqueue_cluster(spec.execution, log_directory=tmp_path, scale=False)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p short", "#SBATCH -A pain", "#SBATCH -t 00:30:00",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --exclusive",
                 "export OMP_NUM_THREADS=2", "unset MALLOC_TRIM_THRESHOLD_",
                 "apptainer exec img.sif python -m distributed.cli.dask_worker"):
        assert line in script, (line, script)


# --------------------------------------------------------------------------- LocalCluster

def test_local_workers_environment(client):
    envs = client.run(lambda: (os.environ.get("OMP_NUM_THREADS"),
                               os.environ.get("OPENBLAS_NUM_THREADS"),
                               os.environ.get("MALLOC_TRIM_THRESHOLD_")))
    assert len(envs) == 2
    assert set(envs.values()) == {("1", "1", None)}


def test_local_equals_serial(client, tmp_path):
    runs, truth = make_dataset(tmp_path / "bids", subjects=("01", "02", "03"))
    serial = execution.run_participants(runs, spec_with(), tmp_path / "serial",
                                        task=numeric_task, verbosity=0)
    local = execution.run_participants(runs, spec_with(scheduler="local"), tmp_path / "local",
                                       task=numeric_task, verbosity=0, client=client)
    assert serial.exit_code == local.exit_code == 0
    a, b = read_betas(tmp_path / "serial"), read_betas(tmp_path / "local")
    assert a.keys() == b.keys() and len(a) == 6
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-12)
    workers = {o.worker for o in local.outcomes}
    assert all(w and "main" not in w for w in workers)
    pids = {json.loads((tmp_path / "local" / f"sub-{s}/func/sub-{s}_where.json").read_text())["pid"]
            for s in runs}
    assert os.getpid() not in pids


def test_killed_worker_is_retried_and_outputs_are_correct(client, dataset):
    runs, truth, out = dataset
    summary = execution.run_participants(runs, spec_with(scheduler="local", retries=1), out,
                                         task=killer_task, verbosity=0, client=client)
    assert (out / "killed-02").exists()  # the worker really died mid-subject
    assert summary.exit_code == 0, summary.format_table()
    assert summary.outcome("02").attempts == 2
    assert all(summary.outcome(s).attempts == 1 for s in ("01", "03", "04"))
    betas = read_betas(out)
    for (sub, ses), beta in truth.items():
        np.testing.assert_allclose(betas[f"sub-{sub}_ses-{ses}_beta.npy"], beta, atol=0.02)
    assert not list(out.rglob(".*.tmp*"))  # no half-written files left behind


def test_killed_worker_without_retries_fails_only_that_subject(client, dataset):
    runs, _, out = dataset
    summary = execution.run_participants(runs, spec_with(scheduler="local", retries=0), out,
                                         task=killer_task, verbosity=0, client=client)
    assert summary.failed == ["02"]
    assert "worker lost" in summary.outcome("02").error
    assert summary.succeeded == ["01", "03", "04"]


def test_local_input_error_isolated(client, dataset):
    runs, _, out = dataset
    summary = execution.run_participants(runs, spec_with(scheduler="local"), out,
                                         task=bad_input_task, verbosity=0, client=client)
    assert summary.failed == ["03"] and summary.exit_code == 1
    assert summary.outcome("03").path == str(runs["03"][0].bold)
    assert ran(out) == ["01", "02", "04"]


def test_open_client_none_and_local_sizes():
    with open_client(spec_with(scheduler="none").execution) as c:
        assert c is None
    with pytest.raises(SpecError):
        with open_client(spec_with(scheduler="htcondor").execution):
            pass


# --------------------------------------------------------------------------- SLURM

def _slurm_up(wait_s: float = 30.0) -> str | None:
    """None when a SLURM node is usable (waiting out transient states), else why not."""
    import time

    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "sinfo/sbatch not installed (run .ci/slurm-up.sh)"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True,
                                    text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"sinfo failed: {exc}"
        if states.returncode != 0:
            return f"SLURM controller not reachable: {states.stderr.strip()}"
        usable = ("idle", "mixed", "allocated", "completing")
        if any(s.startswith(usable) for s in states.stdout.split()):
            return None
        if time.monotonic() > deadline:
            return f"no usable SLURM node (states: {states.stdout.split()})"
        time.sleep(1.0)


@pytest.fixture
def slurm():
    reason = _slurm_up()
    if reason is not None:
        if os.environ.get("FMRI_PAIN_REQUIRE_SLURM") == "1":
            pytest.fail(f"FMRI_PAIN_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)


def test_slurm_runs_tasks_in_batch_jobs(slurm, tmp_path):
    runs, truth = make_dataset(tmp_path / "bids", subjects=("01", "02"))
    spec = spec_with(scheduler="slurm", job_cores=1, job_memory="2GiB", walltime="00:10:00",
                     n_workers=2, retries=1)
    summary = execution.run_participants(runs, spec, tmp_path / "slurm", task=numeric_task,
                                         verbosity=0)
    assert summary.exit_code == 0, summary.format_table()
    job_ids = set()
    for sub in runs:
        where = json.loads((tmp_path / "slurm" / f"sub-{sub}/func/sub-{sub}_where.json").read_text())
        assert where["slurm_job_id"], "task did not run inside a SLURM job"
        assert where["omp"] == "1" and where["malloc_trim"] is None
        job_ids.add(where["slurm_job_id"])
    assert all("/slurm-" in o.worker for o in summary.outcomes)
    assert list((tmp_path / "slurm" / "logs" / "jobs").glob("*.err"))  # batch job logs kept
    serial = execution.run_participants(runs, spec_with(), tmp_path / "serial",
                                        task=numeric_task, verbosity=0)
    assert serial.exit_code == 0
    a, b = read_betas(tmp_path / "serial"), read_betas(tmp_path / "slurm")
    assert a.keys() == b.keys() and len(a) == 4
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-12)


def _pipeline_missing() -> str | None:
    for module in ("fmri_pain.pipeline.participant", "fmri_pain.cli", "fmri_pain.simulate.dataset"):
        if importlib.util.find_spec(module) is None:
            return f"{module} not available yet"
    return None


@pytest.mark.skipif(_pipeline_missing() is not None, reason=str(_pipeline_missing()))
def test_slurm_pipeline_equals_local(slurm, tmp_path):
    """Participant level of 2 simulated subjects via the CLI: SLURM outputs == local outputs."""
    import nibabel as nib

    from fmri_pain.simulate.dataset import simulate_trial

    sim = simulate_trial(tmp_path / "sim", n_subjects=2, n_volumes=40, derivatives=True)
    bids, deriv = Path(sim.bids_dir), Path(sim.derivatives_dir)
    # 40 volumes: keep every volume and few regressors (censoring is not under test here)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("first_level:\n  confounds:\n    strategy: motion6\n    scrub: false\n")
    env = {**os.environ, "LOGNAME": os.environ.get("LOGNAME", "root")}
    outs = {}
    for sched in ("local", "slurm"):
        out = tmp_path / f"out-{sched}"
        cmd = [sys.executable, "-m", "fmri_pain.cli", str(bids), str(out), "participant",
               "--derivatives", str(deriv), "--spec", str(spec_file), "--scheduler", sched, "--n-workers", "2",
               "--job-memory", "3GiB", "--walltime", "00:20:00"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outs[sched] = out
    maps = sorted(p.relative_to(outs["local"]) for p in outs["local"].rglob("*_statmap.nii.gz"))
    assert maps
    assert maps == sorted(p.relative_to(outs["slurm"]) for p in outs["slurm"].rglob("*_statmap.nii.gz"))
    for rel in maps:
        a = nib.load(outs["local"] / rel).get_fdata()
        b = nib.load(outs["slurm"] / rel).get_fdata()
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=str(rel))
    records = [json.loads(p.read_text()) for p in (outs["slurm"] / "logs").glob("sub-*_participant.json")]
    assert len(records) == 2 and all("/slurm-" in r["worker"] for r in records)
