"""The command line: help, errors, exit codes, outputs of a BIDS-App run."""

import json
import shutil
import subprocess
import sys

import pytest

from fmri_pain.cli import main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("participant", "group", "simulate", "demo", "atlas"):
        assert word in out


def test_console_script_is_installed():
    exe = shutil.which("fmri-pain") or str(__import__("pathlib").Path(sys.executable).parent / "fmri-pain")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("fmri-pain ")


def test_participant_help_lists_execution_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bids", "out", "participant", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--participant-label", "--derivatives", "--spec", "--scheduler", "--force"):
        assert option in out


def test_bad_spec_is_a_clear_error(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("first_level:\n  smoothing: 6\n")
    code = main([str(tmp_path), str(tmp_path / "out"), "participant", "--spec", str(spec)])
    assert code == 2
    err = capsys.readouterr().err
    assert "first_level.smoothing" in err and "spec.yaml" in err


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    code = main([str(tmp_path / "nope"), str(tmp_path / "out"), "participant"])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_participant_run_with_a_bad_subject(sim_trial, tmp_path, capsys):
    """A corrupted subject fails with its file named; the others finish; exit code 1."""
    bids = tmp_path / "bids"
    shutil.copytree(sim_trial.bids_dir, bids)
    deriv = tmp_path / "deriv"
    shutil.copytree(sim_trial.derivatives_dir, deriv)
    for sub in sorted(p.name for p in bids.glob("sub-*"))[3:]:
        shutil.rmtree(bids / sub)
        shutil.rmtree(deriv / sub, ignore_errors=True)
    bad = next((deriv / "sub-02").rglob("*ses-dual*_desc-preproc_bold.nii.gz"))
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 3])  # truncated gzip
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "--derivatives", str(deriv),
                 "--scheduler", "none"])
    captured = capsys.readouterr()
    assert code != 0
    assert bad.name in captured.out + captured.err
    assert "sub-02" in captured.out + captured.err
    # clean subjects have their full set of maps; the bad one only what its valid sessions allow
    for sub in ("01", "03"):
        assert (out / f"sub-{sub}" / "func" /
                f"sub-{sub}_task-stim_space-MNI152NLin2009aSym_contrast-dualMinusScs_stat-z_statmap.nii.gz").exists()
    assert not list((out / "sub-02").rglob("*contrast-dualMinusScs_stat-z_statmap.nii.gz"))
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    assert not list(out.rglob("*.tmp*"))
