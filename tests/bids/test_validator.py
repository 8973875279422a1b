"""The official BIDS validator on the input: its report parsed, broken datasets named, exit 2, skippable."""

from __future__ import annotations

import json
import shutil
import stat
import sys
from pathlib import Path

import pytest

from fmri_pain.bids import validator as bv
from fmri_pain.bids.validator import (ValidatorUnavailable, find_validator, parse_report,
                                      run_validator)
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
    lines = [line for line in err.splitlines() if line.strip()]
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


def test_participant_and_group_stop_with_exit_2_naming_the_files(broken, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(broken), str(out), "participant", "--boilerplate"]) == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert str(broken) in line and "--skip-bids-validation" in line and "2 file(s)" in line
    assert "4 kind(s) of error (and " in captured.out
    assert f"SIDECAR_KEY_REQUIRED (RepetitionTime)" in captured.out and STRAY in captured.out
    assert not (out / "logs" / "CITATION.md").exists()  # stopped before anything was written
    assert main([str(broken), str(out), "group", "--scheduler", "none"]) == 2
    captured = capsys.readouterr()
    assert "--skip-bids-validation" in _one_line(captured.err) and STRAY in captured.out
    # only the selected subject's problems count, as in fMRIPrep
    assert main([str(broken), str(out), "participant", "--boilerplate", "--participant-label", "01"]) == 2
    captured = capsys.readouterr()
    assert "in 1 file(s)" in _one_line(captured.err)
    assert f"{BOLD}.nii.gz" in captured.out and "sub-02" not in captured.out


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
