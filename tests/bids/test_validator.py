"""The official BIDS validator on the input: its report parsed, broken datasets named, exit 2, skippable."""

from __future__ import annotations

import json
import re
import shutil
import stat
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from fmri_pain.bids import validator as bv
from fmri_pain.bids.validator import (ValidatorUnavailable, find_validator, parse_report,
                                      run_validator, subject_input_errors, subject_of)
from fmri_pain.cli import main
from fmri_pain.errors import InputError

BOLD = "sub-01/ses-scs/func/sub-01_ses-scs_task-stim_run-1_bold"
STRAY = "sub-02/ses-dual/func/sub-02_ses-dual_task-stim_foo-1_bold.nii.gz"


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """The layout tests' tiny valid trial, broken twice: one BOLD run without RepetitionTime
    (moved from the dataset's sidecar into every other run's) and a BOLD file with an entity
    BIDS does not have (``foo-1``)."""
    from tests.bids.test_layout import write_trial

    bids, _ = write_trial(tmp_path_factory.mktemp("broken"), n_subjects=2)
    top = bids / "task-stim_bold.json"
    meta = json.loads(top.read_text())
    tr = meta.pop("RepetitionTime")
    top.write_text(json.dumps(meta))
    for bold in bids.rglob("*_bold.nii.gz"):
        if not str(bold).endswith(f"{BOLD}.nii.gz"):
            bold.with_name(bold.name.replace(".nii.gz", ".json")).write_text(
                json.dumps({"RepetitionTime": tr}))
    shutil.copy(bids / "sub-02/ses-dual/func/sub-02_ses-dual_task-stim_run-1_bold.nii.gz", bids / STRAY)
    return bids


def _one_line(err: str) -> str:
    """The one error line for the user (log records may precede it), without a traceback."""
    lines = [line for line in err.splitlines() if line.startswith("fmri-pain:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_report_is_parsed_into_records_by_kind():
    payload = {
        "issues": {
            "issues": [
                {"code": "SIDECAR_KEY_RECOMMENDED", "subCode": "Manufacturer", "severity": "warning",
                 "location": "/sub-01/anat/sub-01_T1w.nii.gz",
                 "issueMessage": "Field description: Manufacturer of the equipment."},
                {"code": "SIDECAR_KEY_REQUIRED", "subCode": "RepetitionTime", "severity": "error",
                 "location": "/sub-02/func/sub-02_task-x_bold.nii.gz",
                 "issueMessage": "Field description: The time in seconds between\nvolumes."},
                {"code": "SIDECAR_KEY_REQUIRED", "subCode": "RepetitionTime", "severity": "error",
                 "location": "/sub-01/func/sub-01_task-x_bold.nii.gz"},
                {"code": "FILENAME_MISMATCH", "severity": "error", "location": "/sub-01/func/a_bold.nii.gz",
                 "issueMessage": "Expected filename: sub-01_task-x_bold.nii.gz"},
                {"code": "MISSING_DATASET_DESCRIPTION", "severity": "error",
                 "affects": ["/dataset_description.json"]},
                {"code": "SOMETHING", "severity": "ignore", "location": "/x"},
            ],
            "codeMessages": {
                "SIDECAR_KEY_REQUIRED": "A data file's JSON sidecar is missing a key listed as required.",
                "SIDECAR_KEY_RECOMMENDED": "A data file's JSON sidecar is missing a key\nlisted as recommended.",
                "FILENAME_MISMATCH": "The filename is not formatted correctly. This could result from ...",
            },
        },
        "summary": {"schemaVersion": "1.2.7"},
    }
    report = parse_report(payload, "/data/bids", version="9.9")
    assert [(i.severity, i.code, i.key) for i in report.issues] == [
        ("error", "SIDECAR_KEY_REQUIRED", "RepetitionTime"), ("error", "FILENAME_MISMATCH", None),
        ("error", "MISSING_DATASET_DESCRIPTION", None),
        ("warning", "SIDECAR_KEY_RECOMMENDED", "Manufacturer")]
    tr = report.errors[0]
    assert tr.files == ("sub-01/func/sub-01_task-x_bold.nii.gz", "sub-02/func/sub-02_task-x_bold.nii.gz")
    assert tr.message == "A data file's JSON sidecar is missing a key listed as required"
    assert report.errors[1].message == ("The filename is not formatted correctly "
                                        "(Expected filename: sub-01_task-x_bold.nii.gz)")
    assert report.errors[2].files == ("dataset_description.json",)
    assert report.errors[2].message == "MISSING_DATASET_DESCRIPTION"  # no meaning given: the code
    assert report.warnings[0].message == "A data file's JSON sidecar is missing a key listed as recommended"
    assert not report.valid and report.describe() == "bids-validator-deno 9.9, schema 1.2.7"
    assert tr.line(max_files=1) == ("SIDECAR_KEY_REQUIRED (RepetitionTime): A data file's JSON sidecar "
                                    "is missing a key listed as required: "
                                    "sub-01/func/sub-01_task-x_bold.nii.gz and 1 more file(s)")
    lines = report.lines("error", limit=2)
    assert len(lines) == 3 and lines[2].startswith("... and 1 more kind(s) of error")
    # --participant-label 02: other subjects' files leave their issues; the dataset's stay
    only = report.for_subjects(["sub-02"])
    assert [(i.code, i.files) for i in only.issues] == [
        ("SIDECAR_KEY_REQUIRED", ("sub-02/func/sub-02_task-x_bold.nii.gz",)),
        ("MISSING_DATASET_DESCRIPTION", ("dataset_description.json",))]
    assert report.for_subjects(["3"]).errors == [report.errors[2]] and report.for_subjects(None) is report
    with pytest.raises(ValidatorUnavailable, match="no issue list"):
        parse_report({"issues": {"issues": "nope"}}, "/data/bids")


def test_the_official_validator_names_the_broken_files(broken):
    report = run_validator(broken)
    assert report.version == bv.validator_version() and report.version[0].isdigit()
    assert report.schema_version
    by_kind = {(i.code, i.key): i.files for i in report.errors}
    assert f"{BOLD}.nii.gz" in by_kind[("SIDECAR_KEY_REQUIRED", "RepetitionTime")]
    assert by_kind[("ENTITY_NOT_IN_RULE", None)] == (STRAY,)
    # nothing else is wrong with the simulated dataset
    assert {f for files in by_kind.values() for f in files} == {f"{BOLD}.nii.gz", STRAY}


def test_errors_are_split_into_the_dataset_s_and_each_subject_s():
    report = parse_report({"issues": {"issues": [
        {"code": "SIDECAR_KEY_REQUIRED", "subCode": "RepetitionTime", "severity": "error",
         "location": "/sub-01/func/sub-01_task-x_bold.nii.gz"},
        {"code": "SIDECAR_KEY_REQUIRED", "subCode": "RepetitionTime", "severity": "error",
         "location": "/sub-02/ses-a/func/sub-02_ses-a_task-x_bold.nii.gz"},
        {"code": "JSON_KEY_REQUIRED", "subCode": "BIDSVersion", "severity": "error",
         "location": "/dataset_description.json"},
        {"code": "EMPTY_FILE", "severity": "error",
         "affects": ["/sub-02_task-x_bold.json", "/sub-03/sub-03_sessions.tsv"]},
        {"code": "NO_FILE", "severity": "error"},
        {"code": "SIDECAR_KEY_RECOMMENDED", "severity": "warning", "location": "/sub-04/anat/x.nii.gz"},
    ]}}, "/data/bids", version="9.9")
    dataset, subjects = report.split_errors()
    # a file at the root named like a subject is the dataset's; an issue naming no file too
    assert [(i.code, i.files) for i in dataset] == [
        ("JSON_KEY_REQUIRED", ("dataset_description.json",)),
        ("EMPTY_FILE", ("sub-02_task-x_bold.json",)), ("NO_FILE", ())]
    assert {s: [(i.code, i.files) for i in issues] for s, issues in subjects.items()} == {
        "01": [("SIDECAR_KEY_REQUIRED", ("sub-01/func/sub-01_task-x_bold.nii.gz",))],
        "02": [("SIDECAR_KEY_REQUIRED", ("sub-02/ses-a/func/sub-02_ses-a_task-x_bold.nii.gz",))],
        "03": [("EMPTY_FILE", ("sub-03/sub-03_sessions.tsv",))]}  # warnings never fail a subject
    errors = subject_input_errors(replace(report, issues=tuple(
        i for i in report.issues if i.code == "SIDECAR_KEY_REQUIRED")))
    assert sorted(errors) == ["01", "02"]
    (err,) = errors["02"]
    assert err.subject == "02"
    assert err.path == Path("/data/bids/sub-02/ses-a/func/sub-02_ses-a_task-x_bold.nii.gz")
    assert err.reason == ("BIDS validator: SIDECAR_KEY_REQUIRED (RepetitionTime): SIDECAR_KEY_REQUIRED")
    assert subject_input_errors(None) == {}
    assert [subject_of(p) for p in ("sub-01/a.nii", "/sub-x/y/z", "sub-01_a.json", "sub-/a",
                                    "derivatives/sub-01/a")] == ["01", "x", None, None, None]


def test_subject_errors_leave_those_subjects_out_of_the_boilerplate(broken, tmp_path, capsys):
    out = tmp_path / "out"
    # both subjects' own files have errors: each is left out, so nothing is left to describe
    assert main([str(broken), str(out), "participant", "--boilerplate"]) == 2
    captured = capsys.readouterr()
    assert "no valid run to describe" in _one_line(captured.err)
    assert "4 kind(s) of error (and " in captured.out
    assert "SIDECAR_KEY_REQUIRED (RepetitionTime)" in captured.out and STRAY in captured.out
    assert f"left out of the boilerplate: sub-02: {broken / STRAY}: BIDS validator: " in captured.err
    assert not (out / "logs" / "CITATION.md").exists()
    # only the selected subject's problems count, as in fMRIPrep
    assert main([str(broken), str(out), "participant", "--boilerplate", "--participant-label", "01"]) == 2
    captured = capsys.readouterr()
    assert f"{BOLD}.nii.gz" in captured.out and "sub-02" not in captured.out


def test_a_top_level_error_stops_either_level_up_front(broken, tmp_path, capsys):
    bids = tmp_path / "bids"
    shutil.copytree(broken, bids)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "tiny"}))  # no BIDSVersion
    out = tmp_path / "out"
    for level in ("participant", "group"):
        assert main([str(bids), str(out), level, "--scheduler", "none"]) == 2
        captured = capsys.readouterr()
        line = _one_line(captured.err)
        assert "top-level file(s) dataset_description.json" in line and str(bids) in line
        assert "--skip-bids-validation" in line and "JSON_KEY_REQUIRED (BIDSVersion)" in captured.out
        assert STRAY in captured.out  # the subjects' errors are listed too
        assert not (out / "logs").exists() and not (out / "dataset_description.json").exists()


def test_skip_bids_validation_skips_it(broken, tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the validator ran")

    monkeypatch.setattr("fmri_pain.pipeline.participant.run_validator", fail)
    out = tmp_path / "out"
    code = main([str(broken), str(out), "participant", "--boilerplate", "--skip-bids-validation",
                 "--quiet"])
    assert code == 0
    assert (out / "logs" / "CITATION.md").is_file()


def test_missing_validator_says_how_to_install_or_skip(broken, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bv.shutil, "which", lambda name: None)
    monkeypatch.setattr(bv.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(ValidatorUnavailable, match="pip install bids-validator-deno"):
        find_validator()
    assert main([str(broken), str(tmp_path / "out"), "participant", "--boilerplate"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "not installed" in line and "--skip-bids-validation" in line


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_validator_that_hangs_crashes_or_writes_no_json_is_one_clear_error(broken, tmp_path):
    hang = _script(tmp_path / "hang", "import time; time.sleep(30)")
    with pytest.raises(ValidatorUnavailable, match=r"did not finish within 0.5 s"):
        run_validator(broken, executable=hang, timeout=0.5)
    crash = _script(tmp_path / "crash", "import sys; sys.stderr.write('boom: no schema\\n'); sys.exit(1)")
    with pytest.raises(ValidatorUnavailable, match=r"exit code 1\): boom: no schema"):
        run_validator(broken, executable=crash)
    garbage = _script(tmp_path / "garbage", "import sys; print('not json'); sys.exit(16)")
    with pytest.raises(ValidatorUnavailable, match="no JSON report"):
        run_validator(broken, executable=garbage)
    with pytest.raises(InputError, match="not a folder"):
        run_validator(tmp_path / "missing")


# --------------------------------------------------------------------------- one bad subject, end to end
BAD_SIDECAR = "sub-02/ses-scs/func/sub-02_ses-scs_task-stim_run-1_bold.json"
BAD_STRAY = "sub-02/ses-dual/func/sub-02_ses-dual_task-stim_foo-1_bold.nii.gz"
Z_MAP = "sub-{s}/func/sub-{s}_task-stim_space-MNI152NLin2009aSym_contrast-dualMinusScs_stat-z_statmap.nii.gz"


@pytest.fixture(scope="module")
def one_bad_subject(tmp_path_factory):
    """Three simulated subjects (8 mm, 60 volumes, fMRIPrep-style derivatives) whose sub-02 has a
    BOLD sidecar without RepetitionTime and a BOLD file with an entity BIDS does not have; the
    participant level run on it (with the validator), its exit code and what it printed."""
    import contextlib
    import io

    from fmri_pain.simulate.dataset import simulate_trial

    root = tmp_path_factory.mktemp("one_bad")
    sim = simulate_trial(root, n_subjects=3, seed=3, n_volumes=60, voxel_size=8.0, derivatives=True)
    sidecar = sim.bids_dir / BAD_SIDECAR
    meta = json.loads(sidecar.read_text())
    del meta["RepetitionTime"]
    sidecar.write_text(json.dumps(meta))
    shutil.copy(sim.bids_dir / BAD_STRAY.replace("foo-1", "run-1"), sim.bids_dir / BAD_STRAY)
    out = root / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(sim.bids_dir), str(out), "participant", "--derivatives",
                     str(sim.derivatives_dir), "--scheduler", "none"])
    return sim, out, code, stdout.getvalue(), stderr.getvalue()


def test_a_subject_with_validator_errors_fails_alone(one_bad_subject):
    sim, out, code, stdout, stderr = one_bad_subject
    assert code == 2 and "Traceback" not in stdout + stderr
    # one line names the subject, the validator's error and the file
    (line,) = [ln for ln in (stdout + stderr).splitlines() if "sub-02 failed" in ln]
    assert "BIDS validator: " in line and re.search(r"\(\+\d+ more problem\(s\)", line)
    assert f"[{sim.bids_dir / BAD_STRAY}]" in line or f"[{sim.bids_dir / BAD_SIDECAR[:-5]}.nii.gz]" in line
    table = pd.read_csv(out / "logs" / "participant_latest.tsv", sep="\t", dtype=str)
    assert dict(zip(table["subject"], table["status"])) == {"01": "done", "02": "failed", "03": "done"}
    assert table.set_index("subject").loc["02", "path"].startswith(str(sim.bids_dir / "sub-02"))
    listed = pd.read_csv(out / "logs" / "participant_input_errors.tsv", sep="\t")
    assert set(listed["path"]) >= {str(sim.bids_dir / BAD_STRAY),
                                   str(sim.bids_dir / BAD_SIDECAR.replace(".json", ".nii.gz"))}
    assert listed["error"].str.startswith("BIDS validator: ").all() and set(listed["subject"]) == {2}
    for s in ("01", "03"):  # the others ran to the end
        assert (out / Z_MAP.format(s=s)).is_file() and (out / f"sub-{s}.html").is_file()
    assert not (out / "sub-02").exists()  # not run at all


def test_the_group_leaves_out_a_subject_with_validator_errors_even_with_old_maps(one_bad_subject):
    from fmri_pain.bids.layout import load_layout
    from fmri_pain.config.spec import load_spec
    from fmri_pain.glm.second_level.fit import run_group

    sim, out, _, _, _ = one_bad_subject
    old = out / "sub-02" / "func"  # maps an earlier run (before the files broke) left behind
    old.mkdir(parents=True)
    for path in (out / "sub-01" / "func").glob("*_statmap.*"):  # maps and their sidecars
        shutil.copy(path, old / path.name.replace("sub-01", "sub-02"))
    spec = load_spec()
    runs = load_layout(sim.bids_dir, sim.derivatives_dir, spec=spec, check_data=False).runs

    def group(excluded=None):
        return run_group(out, [r for r in runs if r.subject not in (excluded or {})], spec.group,
                         conditions=spec.conditions, task=spec.task, space=spec.space,
                         first_level=spec.first_level, events=spec.events, excluded=excluded)

    assert group().subjects == ["01", "02", "03"]  # the maps alone would bring it in
    result = group({"02": "BIDS validator: SIDECAR_KEY_REQUIRED (RepetitionTime) [x_bold.nii.gz]"})
    assert result.subjects == ["01", "03"] and set(result.subject_maps["subject"]) == {"01", "03"}
    assert result.warnings[0] == ("sub-02 left out: BIDS validator: SIDECAR_KEY_REQUIRED "
                                  "(RepetitionTime) [x_bold.nii.gz]")
    assert result.left_out == []  # not "without subject maps": its own warning says why
    shutil.rmtree(out / "sub-02")


def test_the_group_command_hands_the_validator_s_subjects_over_as_left_out(one_bad_subject, tmp_path,
                                                                            monkeypatch, capsys):
    from types import SimpleNamespace

    sim, out, _, _, _ = one_bad_subject
    seen = {}

    def fake_group_level(output_dir, runs, spec, *, excluded=None, verbosity=1, model_name=None):
        seen.update(runs=runs, excluded=excluded)
        return SimpleNamespace(left_out=[], report=tmp_path / "group.html", timings={}, stage_log=None,
                               group=SimpleNamespace(warnings=[f"sub-{s} left out: {r}"
                                                               for s, r in excluded.items()]))

    monkeypatch.setattr("fmri_pain.pipeline.group.run_group_level", fake_group_level)
    assert main([str(sim.bids_dir), str(out), "group", "--derivatives", str(sim.derivatives_dir)]) == 0
    assert {r.subject for r in seen["runs"]} == {"01", "03"}
    (reason,) = seen["excluded"].values()
    assert list(seen["excluded"]) == ["02"] and reason.startswith("BIDS validator: ")
    assert str(sim.bids_dir / "sub-02") in reason and re.search(r"\(\+\d+ more problem\(s\)\)$", reason)
    assert f"  - sub-02 left out: {reason}" in capsys.readouterr().out


def test_the_demo_refuses_a_simulated_dataset_the_validator_rejects(broken, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from fmri_pain.pipeline.demo import run_demo

    monkeypatch.setattr("fmri_pain.pipeline.demo.simulate_trial",
                        lambda *args, **kwargs: SimpleNamespace(bids_dir=broken))
    with pytest.raises(InputError, match="fails the BIDS validator for sub-01, sub-02"):
        run_demo(tmp_path / "out", n_subjects=2)
    assert not (tmp_path / "out" / "dataset_description.json").exists()
