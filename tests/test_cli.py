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


# --------------------------------------------------------------------------- fMRIPrep's options

@pytest.fixture(scope="module")
def tiny_sim(tmp_path_factory):
    """Two simulated subjects at 8 mm, 60 volumes, with fMRIPrep-style derivatives (a few seconds)."""
    from fmri_pain.simulate.dataset import simulate_trial

    return simulate_trial(tmp_path_factory.mktemp("tiny_sim"), n_subjects=2, seed=3, n_volumes=60,
                          voxel_size=8.0, derivatives=True)


@pytest.fixture(scope="module")
def confoundless_trial(tmp_path_factory):
    """The layout tests' tiny trial: valid files whose confounds lack std_dvars (the first level fails)."""
    from tests.bids.test_layout import write_trial

    return write_trial(tmp_path_factory.mktemp("tiny_trial"))


@pytest.mark.parametrize("argv", [
    ["bids", "out", "participant", "--version"],
    ["bids", "--version", "out"],
    ["bids", "out", "grp", "--spec", "x.yaml", "-V"],
    ["simulate", "out", "--subjects", "2", "--version"],
    ["permute", "--version"],
])
def test_version_anywhere(argv, capsys):
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().startswith("fmri-pain ")


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    # one line for the user (log records of the libraries may precede it)
    lines = [line for line in captured.err.splitlines() if line.startswith("fmri-pain:")]
    assert len(lines) == 1 and lines[0].startswith("fmri-pain: error: "), captured.err
    return lines[0]


def test_group_before_participant_is_a_usage_error(tiny_sim, tmp_path, capsys):
    bids, deriv = str(tiny_sim.bids_dir), str(tiny_sim.derivatives_dir)
    assert main([bids, str(tmp_path / "none"), "group", "--derivatives", deriv]) == 2
    assert "run `fmri-pain BIDS_DIR OUTPUT_DIR participant` first" in _one_line_error(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([bids, str(empty), "group", "--derivatives", deriv]) == 2
    assert "no participant-level maps" in _one_line_error(capsys)
    # subject maps of another task only (the group level once raised a RuntimeError here: exit 1)
    other = tmp_path / "other" / "sub-01" / "func"
    other.mkdir(parents=True)
    (other / "sub-01_task-rest_space-MNI152NLin2009aSym_contrast-stim_stat-effect_statmap.nii.gz").write_bytes(b"")
    assert main([bids, str(tmp_path / "other"), "group", "--derivatives", deriv]) == 2
    assert "no subject maps of task 'stim'" in _one_line_error(capsys)


@pytest.mark.parametrize("content, message", [
    ('{"bold": {"session": ["scs"', "not valid JSON"),
    ('{"bold": {"sesion": "scs"}}', "unknown entity 'sesion'"),
])
def test_malformed_filter_file_exits_2_naming_the_file(tiny_sim, tmp_path, capsys, content, message):
    path = tmp_path / "filter.json"
    path.write_text(content)
    code = main([str(tiny_sim.bids_dir), str(tmp_path / "out"), "participant",
                 "--bids-filter-file", str(path)])
    assert code == 2
    err = _one_line_error(capsys)
    assert str(path) in err and message in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_filter_file_selects_the_runs_analysed(tiny_sim, tmp_path, capsys):
    path = tmp_path / "filter.json"
    path.write_text(json.dumps({"bold": {"session": ["scs", "dual"]}, "fmap": {"run": 1}}))
    out = tmp_path / "out"
    code = main([str(tiny_sim.bids_dir), str(out), "participant", "--derivatives",
                 str(tiny_sim.derivatives_dir), "--participant-label", "01", "--scheduler", "none",
                 "--bids-filter-file", str(path), "--quiet"])
    assert code == 0
    sessions = {p.parent.parent.name for p in out.glob("sub-01/ses-*/func/*_stat-z_statmap.nii.gz")}
    assert sessions == {"ses-scs", "ses-dual"}
    subject_maps = {p.name.split("contrast-")[1].split("_")[0]
                    for p in out.glob("sub-01/func/*_stat-z_statmap.nii.gz")}
    assert "dualMinusScs" in subject_maps and not subject_maps & {"drgs", "drgsMinusScs", "dualMinusDrgs"}
    assert not (out / "sub-02").exists()
    notes = (out / "logs" / "dataset_notes.tsv").read_text()
    assert "not selected" in notes and "ignored filter" in notes and "drop-out" not in notes
    capsys.readouterr()
    # narrowing the selection into the same OUTPUT_DIR: the maps of ses-dual stay, and we say so
    assert main([str(tiny_sim.bids_dir), str(out), "group", "--derivatives", str(tiny_sim.derivatives_dir),
                 "--participant-label", "01", "--session-label", "scs", "--boilerplate"]) == 0
    assert "1 session(s) this selection leaves out" in capsys.readouterr().err


def test_session_label_selects_sessions(tiny_sim, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([str(tiny_sim.bids_dir), str(out), "participant", "--derivatives",
                 str(tiny_sim.derivatives_dir), "--session-label", "ses-drgs", "--boilerplate"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "drgs" in printed and " scs " not in printed and " dual " not in printed
    text = (out / "logs" / "CITATION.md").read_text()
    assert "2 BOLD run(s) of task stim from 2 subject(s)" in text
    assert "the others were left out by the selection (sessions drgs)" in text


@pytest.mark.parametrize("level", ["participant", "group"])
def test_boilerplate_writes_methods_and_runs_nothing(tiny_sim, tmp_path, level):
    out = tmp_path / "out"
    code = main([str(tiny_sim.bids_dir), str(out), level, "--boilerplate", "--quiet"])
    assert code == 0
    text = (out / "logs" / "CITATION.md").read_text()
    assert text.startswith("# Planned methods") and "before anything ran" in text
    # raw input: the project's own preprocessing is planned, through each subject's T1w
    assert "preprocessed with the Nipype workflows [@nipype]" in text
    assert "6 BOLD run(s) of task stim from 2 subject(s)" in text
    assert "1000 random rearrangements" in text and "## References" in text
    bib = (out / "logs" / "CITATION.bib").read_text()
    assert "@article{nipype," in bib and "@book{senn2002," in bib
    left = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"logs/CITATION.md", "logs/CITATION.bib"} <= left
    assert not list(out.glob("sub-*")) and not (out / "dataset_description.json").exists()
    assert not (out / "group").exists() and not (out / "CITATION.md").exists()


def test_stop_on_first_crash_starts_no_further_subject(confoundless_trial, tmp_path, capsys):
    bids, deriv = confoundless_trial
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "--derivatives", str(deriv),
                 "--scheduler", "none", "--stop-on-first-crash"])
    assert code == 1
    printed = capsys.readouterr().out
    assert "0 done, 0 skipped (up to date), 1 failed, 2 not started" in printed
    table = (out / "logs" / "participant_latest.tsv").read_text().splitlines()
    assert [line.split("\t")[:2] for line in table[1:]] == [
        ["01", "failed"], ["02", "not started"], ["03", "not started"]]
    assert not list((out / "logs").glob("sub-0[23]_participant.log"))  # never started


# --------------------------------------------------------------------------- console

def test_local_cluster_participant_run_is_quiet_and_measures_its_stages(tiny_sim, tmp_path, capfd):
    """Default verbosity on real dask workers: progress lines and the summary, no distributed.* lines."""
    import pandas as pd

    out = tmp_path / "out"
    code = main([str(tiny_sim.bids_dir), str(out), "participant", "--derivatives",
                 str(tiny_sim.derivatives_dir), "--participant-label", "01", "--scheduler", "local",
                 "--n-workers", "1", "--threads-per-worker", "1", "--memory", "1GiB"])
    captured = capfd.readouterr()  # file descriptors: the worker processes write there too
    assert code == 0
    for stream in (captured.err, captured.out):
        assert "distributed." not in stream and "tornado" not in stream and " INFO" not in stream
    # not a terminal: one plain line per subject done, and the summary table
    assert "sub-01 done (" in captured.err and "\x1b" not in captured.err
    assert "participant level: 1 done, 0 skipped (up to date), 0 failed of 1 subjects" in captured.out

    stages = pd.read_csv(out / "logs" / "participant_stages_latest.tsv", sep="\t",
                         dtype={"subject": str})
    assert list(stages["stage"]) == ["first_level", "report", "total"]
    assert list(stages["subject"]) == ["01"] * 3
    assert (stages["wall_s"] > 0).all() and (stages["peak_rss_mb"] > 0).all()
    assert stages["worker"].str.contains("/").all() and not stages["worker"].str.endswith("/main").any()
    for _, rows in stages.groupby("subject"):
        total = rows[rows["stage"] == "total"].iloc[0]
        assert rows.loc[rows["stage"] != "total", "wall_s"].sum() <= total["wall_s"]
    summary = pd.read_csv(out / "logs" / "participant_latest.tsv", sep="\t", dtype={"subject": str})
    for _, row in summary.iterrows():  # the task's total is the duration the summary reports
        total = stages[(stages["subject"] == row["subject"]) & (stages["stage"] == "total")]
        assert total["wall_s"].iloc[0] == pytest.approx(row["duration_s"], abs=0.1)
