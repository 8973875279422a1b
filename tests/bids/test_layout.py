"""Tests of fmri_pain.bids.layout (and runs, checks, sessions, fmriprep): trial layouts,
real BIDS examples, corrupted copies."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_pain.errors import InputError, LayoutErrors
from fmri_pain.bids.layout import TrialLayout, load_layout
from fmri_pain.bids.runs import Run
from fmri_pain.config.spec import AnalysisSpec

EXAMPLES = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "bids-examples").resolve()
if not EXAMPLES.is_dir():  # the shared data lives next to the project checkout
    EXAMPLES = Path("/work/shared/data/bids-examples")
needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="bids-examples not available")

TR = 2.0
N_VOL = 30
SHAPE = (8, 8, 8)
SEQUENCES = ["SCS-DRGS-DUAL", "DRGS-DUAL-SCS", "DUAL-SCS-DRGS"]


# --------------------------------------------------------------------------- an independent tiny writer
def _nifti(path: Path, data: np.ndarray, tr: float | None = TR) -> None:
    img = nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4 and tr is not None:
        img.header.set_zooms((4.0, 4.0, 4.0, tr))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _bold(rng: np.random.Generator, n_vol: int = N_VOL) -> np.ndarray:
    return (100 + rng.standard_normal(SHAPE + (n_vol,))).astype(np.float32)


def _events() -> pd.DataFrame:
    onsets = np.arange(0, N_VOL * TR, 20.0)
    return pd.DataFrame({"onset": onsets, "duration": 10.0,
                         "trial_type": ["on" if i % 2 else "off" for i in range(len(onsets))]})


def write_trial(root: Path, n_subjects: int = 3, numbered_sessions: bool = False,
                sessions_tsv: bool = True, seed: int = 0) -> tuple[Path, Path]:
    """A tiny crossover trial: raw BIDS plus fMRIPrep-named derivatives.

    ``numbered_sessions`` names sessions ``ses-1..3`` so that only sessions.tsv
    tells the condition; otherwise sessions are ``ses-scs`` etc.
    """
    rng = np.random.default_rng(seed)
    bids, deriv = root / "bids", root / "derivatives" / "fmriprep"
    bids.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0"}))
    (bids / "task-stim_bold.json").write_text(json.dumps({"TaskName": "stim", "RepetitionTime": TR}))
    deriv.mkdir(parents=True)
    (deriv / "dataset_description.json").write_text(json.dumps(
        {"Name": "fmriprep", "BIDSVersion": "1.8.0", "DatasetType": "derivative"}))
    rows = []
    for i in range(1, n_subjects + 1):
        sub = f"{i:02d}"
        seq = SEQUENCES[(i - 1) % len(SEQUENCES)].split("-")
        rows.append({"participant_id": f"sub-{sub}", "sequence": "-".join(seq), "age": 40 + i,
                     "sex": "F" if i % 2 else "M"})
        sess_rows = []
        for period, cond in enumerate(seq, start=1):
            ses = str(period) if numbered_sessions else cond.lower()
            sess_rows.append({"session_id": f"ses-{ses}", "condition": cond, "period": period,
                              "vas_pain": round(5 + period * 0.5, 1)})
            stem = f"sub-{sub}_ses-{ses}_task-stim_run-1"
            func = bids / f"sub-{sub}" / f"ses-{ses}" / "func"
            data = _bold(rng)
            _nifti(func / f"{stem}_bold.nii.gz", data)
            _events().to_csv(func / f"{stem}_events.tsv", sep="\t", index=False)
            if period == 1:
                _nifti(bids / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_T1w.nii.gz",
                       rng.random(SHAPE).astype(np.float32))
            dfunc = deriv / f"sub-{sub}" / f"ses-{ses}" / "func"
            prefix = f"{stem}_space-MNI152NLin2009cAsym"
            _nifti(dfunc / f"{prefix}_desc-preproc_bold.nii.gz", data)
            (dfunc / f"{prefix}_desc-preproc_bold.json").write_text(
                json.dumps({"RepetitionTime": TR, "SkullStripped": False}))
            mask = np.zeros(SHAPE, dtype=np.uint8)
            mask[2:6, 2:6, 2:6] = 1
            _nifti(dfunc / f"{prefix}_desc-brain_mask.nii.gz", mask)
            motion = {k: rng.standard_normal(N_VOL) * 0.1 for k in
                      ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")}
            pd.DataFrame({**motion, "framewise_displacement":
                          np.r_[np.nan, rng.random(N_VOL - 1)]}).to_csv(
                dfunc / f"{stem}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
        if sessions_tsv:
            pd.DataFrame(sess_rows).to_csv(bids / f"sub-{sub}" / f"sub-{sub}_sessions.tsv",
                                           sep="\t", index=False)
    pd.DataFrame(rows).to_csv(bids / "participants.tsv", sep="\t", index=False)
    return bids, deriv


@pytest.fixture(scope="module")
def trial(tmp_path_factory) -> tuple[Path, Path]:
    return write_trial(tmp_path_factory.mktemp("trial"))


@pytest.fixture
def trial_copy(trial, tmp_path) -> tuple[Path, Path]:
    bids, deriv = trial
    root = bids.parent
    shutil.copytree(root, tmp_path / "copy")
    return tmp_path / "copy" / "bids", tmp_path / "copy" / "derivatives" / "fmriprep"


def _func(root: Path, sub: str, ses: str) -> Path:
    return root / f"sub-{sub}" / f"ses-{ses}" / "func"


def _raw_bold(bids, sub, ses):
    return _func(bids, sub, ses) / f"sub-{sub}_ses-{ses}_task-stim_run-1_bold.nii.gz"


def _deriv_bold(deriv, sub, ses):
    return _func(deriv, sub, ses) / (f"sub-{sub}_ses-{ses}_task-stim_run-1_space-MNI152NLin2009cAsym"
                                     "_desc-preproc_bold.nii.gz")


def _events_path(bids, sub, ses):
    return _func(bids, sub, ses) / f"sub-{sub}_ses-{ses}_task-stim_run-1_events.tsv"


# --------------------------------------------------------------------------- clean trial
def test_clean_trial_with_derivatives(trial):
    bids, deriv = trial
    layout = load_layout(bids, deriv)
    assert layout.errors == [] and layout.failed_subjects == {}
    assert layout.mode == "trial" and layout.task == "stim"
    assert layout.subjects == ["01", "02", "03"]
    assert len(layout.runs) == 9
    for run in layout.runs:
        assert isinstance(run, Run)
        seq = SEQUENCES[int(run.subject) - 1].split("-")
        assert run.condition == run.session.upper()
        assert run.period == seq.index(run.condition) + 1
        assert run.sequence == "-".join(seq)
        assert run.bold == _deriv_bold(deriv, run.subject, run.session)
        assert run.mask.name.endswith("_desc-brain_mask.nii.gz")
        assert run.confounds.name.endswith("_desc-confounds_timeseries.tsv")
        assert run.events == _events_path(bids, run.subject, run.session)
        # raw top-level sidecar (inheritance) merged with the derivative sidecar
        assert run.metadata["TaskName"] == "stim" and run.metadata["SkullStripped"] is False
        assert run.tr == TR and run.run == 1
        assert run.anat is not None and run.anat.name.endswith("_T1w.nii.gz")
        assert run.covariates["age"] == 40 + int(run.subject)
        assert run.covariates["vas_pain"] == pytest.approx(5 + run.period * 0.5)
        assert "condition" not in run.covariates and "session_id" not in run.covariates
    summary = layout.summary()
    assert list(summary.columns) == ["subject", "session", "condition", "period", "task", "run",
                                     "n_volumes", "tr"]
    assert (summary["n_volumes"] == N_VOL).all() and (summary["tr"] == TR).all()
    assert sorted(layout.conditions_for("sub-02")) == ["DRGS", "DUAL", "SCS"]
    layout.raise_for_errors()  # nothing to raise


def test_raw_only_and_selection(trial):
    bids, _ = trial
    layout = load_layout(bids, participant_label=["sub-02", "03"], n_jobs=2)
    assert layout.errors == []
    assert layout.subjects == ["02", "03"]
    run = layout.runs_for("02")[0]
    assert run.bold == _raw_bold(bids, "02", run.session)
    assert run.mask is None and run.confounds is None


def test_condition_from_sessions_tsv_and_period_from_sequence(tmp_path):
    # ses-1..3: only sessions.tsv tells the condition
    bids, deriv = write_trial(tmp_path / "a", n_subjects=2, numbered_sessions=True)
    layout = load_layout(bids, deriv, check_data=False)
    assert layout.errors == []
    got = {(r.subject, r.session): (r.condition, r.period) for r in layout.runs}
    assert got[("01", "1")] == ("SCS", 1) and got[("02", "1")] == ("DRGS", 1)
    assert got[("02", "3")] == ("SCS", 3)
    # no sessions.tsv: condition from the label, period from participants.tsv sequence
    bids, _ = write_trial(tmp_path / "b", n_subjects=2, sessions_tsv=False)
    layout = load_layout(bids, check_data=False)
    assert layout.errors == []
    got = {(r.subject, r.condition): r.period for r in layout.runs}
    assert got == {("01", "SCS"): 1, ("01", "DRGS"): 2, ("01", "DUAL"): 3,
                   ("02", "DRGS"): 1, ("02", "DUAL"): 2, ("02", "SCS"): 3}


def test_configurable_conditions_case_insensitive(tmp_path):
    bids, _ = write_trial(tmp_path, n_subjects=1, sessions_tsv=False)
    spec = AnalysisSpec(conditions=("scs", "drgs", "dual"))
    layout = load_layout(bids, spec=spec, check_data=False)
    assert layout.errors == [] and {r.condition for r in layout.runs} == {"scs", "drgs", "dual"}


# --------------------------------------------------------------------------- real BIDS examples
@needs_examples
def test_ds114_sessions_one_condition_study():
    spec = AnalysisSpec(task="fingerfootlips")
    layout = load_layout(EXAMPLES / "ds114", spec=spec, check_data=False)
    assert layout.errors == [] and layout.mode == "single"
    assert len(layout.subjects) == 10 and len(layout.runs) == 20
    assert {r.session for r in layout.runs} == {"test", "retest"}
    assert {r.condition for r in layout.runs} == {"fingerfootlips"}
    assert all(r.tr == 2.5 and r.period is None for r in layout.runs)
    # events inherited from the top-level task-fingerfootlips_events.tsv
    assert {r.events.name for r in layout.runs} == {"task-fingerfootlips_events.tsv"}
    assert layout.runs_for("01")[0].covariates == {"dominant_hand": "left"}
    # the images are 0-byte placeholders: one error per run, naming the file and subject
    checked = load_layout(EXAMPLES / "ds114", spec=spec, participant_label=["01", "02"])
    assert checked.runs == [] and len(checked.errors) == 6
    for err in checked.errors:
        assert "0 bytes" in str(err) and f"sub-{err.subject}" in err.path.name
        assert err.path.name in str(err) and err.path.is_file()
    names = {e.path.name for e in checked.errors}
    assert names == {f"sub-0{s}_ses-{t}_task-fingerfootlips_bold.nii.gz"
                     for s in (1, 2) for t in ("retest", "test")} | {
        "sub-01_ses-retest_T1w.nii.gz", "sub-02_ses-retest_T1w.nii.gz"}
    assert sorted(checked.failed_subjects) == ["01", "02"]


@needs_examples
def test_ds114_task_must_be_chosen():
    with pytest.raises(InputError, match="fingerfootlips"):
        load_layout(EXAMPLES / "ds114", spec=AnalysisSpec(task=None), check_data=False)
    with pytest.raises(InputError, match="no BOLD run of task 'stim'"):
        load_layout(EXAMPLES / "ds114", check_data=False)


@needs_examples
@pytest.mark.parametrize("name,task", [("ds001", "balloonanalogrisktask"),
                                       ("ds005", "mixedgamblestask")])
def test_sessionless_examples(name, task):
    layout = load_layout(EXAMPLES / name, spec=AnalysisSpec(task=None), check_data=False)
    assert layout.errors == [] and layout.task == task and layout.mode == "single"
    assert len(layout.subjects) == 16 and len(layout.runs) == 48
    assert {r.run for r in layout.runs} == {1, 2, 3}
    assert all(r.session is None and r.condition == task and r.tr == 2.0 for r in layout.runs)
    first = layout.runs_for("01")[0]
    assert first.covariates["age"] in (26, 28) and first.anat.name == "sub-01_T1w.nii.gz"


@needs_examples
def test_ds000001_fmriprep_derivatives():
    spec = AnalysisSpec(task=None)
    subjects = ["10", "11", "13", "16"]
    layout = load_layout(EXAMPLES / "ds001", EXAMPLES / "ds000001-fmriprep", spec=spec,
                         participant_label=subjects, check_data=False)
    assert layout.errors == [] and layout.subjects == subjects and len(layout.runs) == 12
    for run in layout.runs:
        # res-2 derivative of raw run-01 matched through the run index
        assert "_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold" in run.bold.name
        assert run.mask.name.endswith("_res-2_desc-brain_mask.nii.gz")
        assert f"_run-{run.run}_desc-confounds_timeseries.tsv" in run.confounds.name
        assert run.events.parent.parts[-3] == "ds001"
        assert run.metadata["RepetitionTime"] == 2.0
        assert run.metadata["Resolution"] == "2mm, isotropic"  # from the derivative sidecar
    checked = load_layout(EXAMPLES / "ds001", EXAMPLES / "ds000001-fmriprep", spec=spec,
                          participant_label=["16"])
    assert checked.runs == [] and len(checked.errors) == 4  # 3 runs + the raw T1w
    assert sum("0 bytes" in str(e) and "desc-preproc_bold" in e.path.name
               for e in checked.errors) == 3
    # a raw subject that has no derivatives: error naming the expected file
    missing = load_layout(EXAMPLES / "ds001", EXAMPLES / "ds000001-fmriprep", spec=spec,
                          participant_label=["01"], check_data=False)
    assert missing.runs == [] and len(missing.errors) == 3
    assert sorted(e.path.name for e in missing.errors) == [
        f"sub-01_task-balloonanalogrisktask_run-0{i}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
        for i in (1, 2, 3)]
    assert all(e.path.parent == EXAMPLES / "ds000001-fmriprep" / "sub-01" / "func"
               and "no preprocessed BOLD" in str(e) for e in missing.errors)


# --------------------------------------------------------------------------- corrupted copies
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set_nan(path: Path, where: str) -> None:
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).copy()
    if where == "volume":
        data[..., 7] = np.nan
    else:
        data[3, 3, 3, 12] = np.nan
        data[4, 3, 3, 20] = np.inf
    _nifti(path, data)


def _edit_events(path: Path, fn) -> None:
    df = pd.read_csv(path, sep="\t")
    fn(df).to_csv(path, sep="\t", index=False)


def _reheader_tr(path: Path, tr: float) -> None:
    _nifti(path, np.asarray(nib.load(str(path)).dataobj), tr=tr)


def _set_onset(df, value):
    df["onset"] = df["onset"].astype(object)
    df.loc[1, "onset"] = value
    return df


def _uncompressed_truncated(path: Path) -> None:
    nii = path.with_name(path.name[: -len(".gz")])
    nii.write_bytes(gzip.decompress(path.read_bytes())[:-1000])
    path.unlink()


def _drop_tr(bids: Path, deriv: Path, sub: str, ses: str) -> None:
    """RepetitionTime only in the derivative sidecars, and removed for one run."""
    (bids / "task-stim_bold.json").write_text('{"TaskName": "stim"}')
    sidecar = _deriv_bold(deriv, sub, ses)
    sidecar.with_name(sidecar.name.replace(".nii.gz", ".json")).unlink()


# name -> (mutation(bids, deriv), subject, file name fragment, message fragment)
CORRUPTIONS = {
    "zero_byte_bold": (lambda b, d: _deriv_bold(d, "01", "scs").write_bytes(b""),
                       "01", "ses-scs_task-stim_run-1_space", "0 bytes"),
    "truncated_gzip": (lambda b, d: _truncate(_deriv_bold(d, "02", "dual")),
                       "02", "ses-dual_task-stim_run-1_space", "truncated"),
    "nan_volume": (lambda b, d: _set_nan(_deriv_bold(d, "03", "drgs"), "volume"),
                   "03", "sub-03_ses-drgs_task-stim_run-1_space", "NaN"),
    "nan_in_brain": (lambda b, d: _set_nan(_deriv_bold(d, "01", "dual"), "voxels"),
                     "01", "sub-01_ses-dual_task-stim_run-1_space", "2 NaN/inf value(s) in 2 volume"),
    "missing_column": (lambda b, d: _edit_events(_events_path(b, "02", "scs"),
                                                 lambda df: df.drop(columns="trial_type")),
                       "02", "sub-02_ses-scs_task-stim_run-1_events.tsv", "trial_type"),
    "onset_beyond_run": (lambda b, d: _edit_events(_events_path(b, "03", "scs"),
                                                   lambda df: _set_onset(df, 500.0)),
                         "03", "sub-03_ses-scs_task-stim_run-1_events.tsv", "beyond the end"),
    "negative_onset": (lambda b, d: _edit_events(_events_path(b, "01", "drgs"),
                                                 lambda df: _set_onset(df, -4.0)),
                       "01", "sub-01_ses-drgs_task-stim_run-1_events.tsv", "negative onset"),
    "text_onset": (lambda b, d: _edit_events(_events_path(b, "01", "drgs"),
                                             lambda df: _set_onset(df, "soon")),
                   "01", "sub-01_ses-drgs_task-stim_run-1_events.tsv", "non-numeric"),
    "no_on_events": (lambda b, d: _edit_events(_events_path(b, "02", "drgs"),
                                               lambda df: df.assign(trial_type="ON")),
                     "02", "sub-02_ses-drgs_task-stim_run-1_events.tsv", "did you mean 'ON'"),
    "missing_events": (lambda b, d: _events_path(b, "03", "dual").unlink(),
                       "03", "sub-03_ses-dual_task-stim_run-1_events.tsv", "no events.tsv"),
    "tr_mismatch": (lambda b, d: _reheader_tr(_deriv_bold(d, "02", "scs"), 2.5),
                    "02", "sub-02_ses-scs_task-stim_run-1_space", "pixdim[4] = 2.5"),
    "tr_missing": (lambda b, d: _drop_tr(b, d, "01", "scs"),
                   "01", "sub-01_ses-scs_task-stim_run-1_bold.json", "RepetitionTime missing"),
    "bad_json": (lambda b, d: _deriv_bold(d, "03", "scs").with_name(
                     _deriv_bold(d, "03", "scs").name.replace(".nii.gz", ".json")).write_text("{oops"),
                 "03", "sub-03_ses-scs_task-stim_run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.json",
                 "invalid JSON"),
    "short_run": (lambda b, d: _nifti(_deriv_bold(d, "03", "dual"),
                                      _bold(np.random.default_rng(1), 12)),
                  "03", "sub-03_ses-dual_task-stim_run-1_space", "only 12 volumes"),
    "three_d": (lambda b, d: _nifti(_deriv_bold(d, "02", "dual"), np.ones(SHAPE, np.float32)),
                "02", "sub-02_ses-dual_task-stim_run-1_space", "must be 4D"),
    "not_nifti": (lambda b, d: _deriv_bold(d, "01", "dual").write_bytes(gzip.compress(b"hello" * 100)),
                  "01", "sub-01_ses-dual_task-stim_run-1_space", "cannot read NIfTI header"),
    "mask_shape": (lambda b, d: _nifti(_deriv_bold(d, "01", "scs").with_name(
                       _deriv_bold(d, "01", "scs").name.replace("preproc_bold", "brain_mask")),
                       np.ones((9, 8, 8), np.uint8)),
                   "01", "sub-01_ses-scs_task-stim_run-1_space-MNI152NLin2009cAsym_desc-brain_mask",
                   "mask shape"),
    "confounds_rows": (lambda b, d: _edit_events(
                           _func(d, "02", "drgs") / "sub-02_ses-drgs_task-stim_run-1_desc-confounds_timeseries.tsv",
                           lambda df: df.iloc[:-3]),
                       "02", "sub-02_ses-drgs_task-stim_run-1_desc-confounds_timeseries.tsv",
                       "27 rows but the BOLD has 30 volumes"),
    "confounds_columns": (lambda b, d: _edit_events(
                              _func(d, "03", "dual") / "sub-03_ses-dual_task-stim_run-1_desc-confounds_timeseries.tsv",
                              lambda df: df.drop(columns=["rot_x", "rot_y"])),
                          "03", "sub-03_ses-dual_task-stim_run-1_desc-confounds_timeseries.tsv",
                          "missing confound column(s) ['rot_x', 'rot_y']"),
    "raw_sidecar_tr": (lambda b, d: (_func(b, "01", "dual") / "sub-01_ses-dual_task-stim_run-1_bold.json")
                       .write_text('{"RepetitionTime": 3.0}'),
                       "01", "sub-01_ses-dual_task-stim_run-1_bold.json",
                       "RepetitionTime 3 s here but 2 s in the derivative sidecar"),
    "missing_derivative": (lambda b, d: _deriv_bold(d, "03", "scs").unlink(),
                           "03", "sub-03_ses-scs_task-stim_run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz",
                           "no preprocessed BOLD"),
    "unknown_condition": (lambda b, d: _edit_events(b / "sub-02" / "sub-02_sessions.tsv",
                                                    lambda df: df.replace({"DUAL": "PLACEBO"})),
                          "02", "sub-02_sessions.tsv", "'PLACEBO' is not one of SCS, DRGS, DUAL"),
    "duplicate_condition": (lambda b, d: _edit_events(b / "sub-01" / "sub-01_sessions.tsv",
                                                      lambda df: df.replace({"DRGS": "SCS"})),
                            "01", "sub-01_sessions.tsv", "all map to condition SCS"),
    "traversal_label": (lambda b, d: (b / "participants.tsv").write_text(
                            (b / "participants.tsv").read_text() + "sub-../../etc\tSCS-DRGS-DUAL\t50\tF\n"),
                        "../../etc", "participants.tsv", "not 'sub-' + an alphanumeric label"),
    "raw_zero_byte": (lambda b, d: _raw_bold(b, "02", "dual").write_bytes(b""),
                      "02", "sub-02_ses-dual_task-stim_run-1_bold.nii.gz", "raw BOLD: empty"),
    "raw_truncated": (lambda b, d: _truncate(_raw_bold(b, "03", "drgs")),
                      "03", "sub-03_ses-drgs_task-stim_run-1_bold.nii.gz", "raw BOLD: truncated"),
    "raw_short": (lambda b, d: _nifti(_raw_bold(b, "01", "scs"), _bold(np.random.default_rng(2), 25)),
                  "01", "sub-01_ses-scs_task-stim_run-1_bold.nii.gz", "raw BOLD has 25 volumes"),
    "nii_truncated": (lambda b, d: _uncompressed_truncated(_deriv_bold(d, "02", "scs")),
                      "02", "sub-02_ses-scs_task-stim_run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.nii",
                      "truncated image"),
    "bad_sequence": (lambda b, d: _edit_events(b / "participants.tsv",
                                               lambda df: df.replace({"DRGS-DUAL-SCS": "DRGS-XYZ-SCS"})),
                     "02", "participants.tsv", "unknown conditions"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corruption_is_reported_and_clean_subjects_pass(trial_copy, case):
    bids, deriv = trial_copy
    mutate, subject, fragment, message = CORRUPTIONS[case]
    mutate(bids, deriv)
    layout = load_layout(bids, deriv)
    assert layout.errors, case
    for err in layout.errors:
        assert isinstance(err, InputError) and err.subject == subject
        assert f"sub-{subject}" in str(err) and err.path is not None and str(err.path) in str(err)
    assert any(fragment in str(e) and message in str(e) for e in layout.errors), \
        [str(e) for e in layout.errors]
    assert subject in layout.failed_subjects
    for clean in {"01", "02", "03"} - {subject}:
        assert len(layout.runs_for(clean)) == 3, (case, clean)
    with pytest.raises(LayoutErrors, match=re.escape(message)):
        layout.raise_for_errors()


def test_bad_run_keeps_other_runs_of_subject(trial_copy):
    bids, deriv = trial_copy
    _deriv_bold(deriv, "01", "scs").write_bytes(b"")
    layout = load_layout(bids, deriv)
    assert layout.subjects == ["01", "02", "03"]
    assert sorted(r.condition for r in layout.runs_for("01")) == ["DRGS", "DUAL"]
    assert len(layout.failed_subjects["01"]) == 1


def test_subject_wide_problem_drops_all_its_runs(trial_copy):
    bids, deriv = trial_copy
    CORRUPTIONS["bad_sequence"][0](bids, deriv)
    layout = load_layout(bids, deriv, check_data=False)
    assert layout.subjects == ["01", "03"] and layout.runs_for("02") == []
    assert len(layout.errors) == 1


def test_dropout_is_not_an_error(trial_copy):
    bids, deriv = trial_copy
    for root in (bids, deriv):
        shutil.rmtree(root / "sub-03" / "ses-dual")
    layout = load_layout(bids, deriv)
    assert layout.errors == [] and layout.subjects == ["01", "02", "03"]
    assert sorted(layout.conditions_for("03")) == ["DRGS", "SCS"]
    assert {r.period for r in layout.runs_for("03")} == {2, 3}  # DUAL-SCS-DRGS without period 1


def test_unexpected_files_are_ignored(trial, trial_copy):
    bids, deriv = trial_copy
    func = _func(bids, "02", "scs")
    (func / "notes.txt").write_text("scanner was loud")
    (func / ".DS_Store").write_bytes(b"\0\1")
    (func / "sub-02_ses-scs_task-stim_run-1_bold.nii.gz.bak").write_bytes(b"junk")
    (func / "sub-02_ses-scs_task-stim_run-1_physio.tsv.gz").write_bytes(b"junk")
    (bids / "sub-02" / "ses-scs" / "extra").mkdir()
    (bids / "sub-02" / "ses-scs" / "extra" / "sub-02_ses-scs_task-stim_bold.nii.gz").write_bytes(b"")
    misplaced = bids / "sub-03" / "ses-scs" / "func" / "sub-01_ses-scs_task-stim_run-2_bold.nii.gz"
    misplaced.write_bytes(b"")
    for junk in ("sourcedata/raw.zip", "code/run.sh", "README", "sub-01/ses-scs/func/Thumbs.db",
                 "derivatives/other/sub-01/func/sub-01_task-stim_bold.nii.gz"):
        (bids / junk).parent.mkdir(parents=True, exist_ok=True)
        (bids / junk).write_bytes(b"x")
    (deriv / "sub-01" / "figures").mkdir()
    (deriv / "sub-01" / "figures" / "sub-01_desc-summary_T1w.html").write_text("<html/>")
    (deriv / "logs").mkdir()
    layout = load_layout(bids, deriv)
    assert layout.errors == [] and len(layout.runs) == 9
    assert any(misplaced.name in w for w in layout.warnings)
    clean = load_layout(*trial)
    assert [r.bold.name for r in layout.runs] == [r.bold.name for r in clean.runs]


def test_broken_t1w_reported_runs_kept(trial_copy):
    bids, deriv = trial_copy
    t1w = bids / "sub-02" / "ses-drgs" / "anat" / "sub-02_ses-drgs_T1w.nii.gz"
    _truncate(t1w)
    layout = load_layout(bids, deriv)
    (err,) = layout.errors
    assert err.subject == "02" and err.path == t1w and "truncated" in str(err)
    assert len(layout.runs) == 9 and all(r.anat is None for r in layout.runs_for("02"))
    assert layout.runs_for("01")[0].anat is not None


def test_subject_without_bold_is_skipped_not_failed(trial_copy):
    bids, deriv = trial_copy
    (bids / "sub-04" / "anat").mkdir(parents=True)
    layout = load_layout(bids, deriv, check_data=False)
    assert layout.errors == [] and layout.subjects == ["01", "02", "03"]
    assert any("sub-04" in w and "no BOLD run" in w for w in layout.warnings)
    asked = load_layout(bids, deriv, participant_label=["04"], check_data=False)
    assert [e.subject for e in asked.errors] == ["04"]


def test_truncated_last_block_warns(trial_copy):
    bids, deriv = trial_copy
    _edit_events(_events_path(bids, "01", "scs"),
                 lambda df: pd.concat([df, pd.DataFrame({"onset": [55.0], "duration": [20.0],
                                                         "trial_type": ["on"]})]))
    layout = load_layout(bids, deriv)
    assert layout.errors == [] and len(layout.runs) == 9
    assert any("end after the run" in w for w in layout.warnings)
    _edit_events(_events_path(bids, "01", "scs"), lambda df: df.assign(duration=1000.0))
    layout = load_layout(bids, deriv)
    assert [e.subject for e in layout.errors] == ["01"]
    assert "longer than the run" in str(layout.errors[0])


def test_participant_label_validation(trial):
    bids, deriv = trial
    layout = load_layout(bids, deriv, participant_label=["../x", "sub-01", "07", "0 1"],
                         check_data=False)
    assert layout.subjects == ["01"] and len(layout.runs) == 3
    msgs = {e.subject: str(e) for e in layout.errors}
    assert "not alphanumeric" in msgs["../x"] and "not alphanumeric" in msgs["0 1"]
    assert "not found; available: 01, 02, 03" in msgs["07"]


def test_bad_subject_folder_name(trial_copy):
    bids, deriv = trial_copy
    shutil.copytree(bids / "sub-01", bids / "sub-01_backup")
    layout = load_layout(bids, deriv, check_data=False)
    assert len(layout.runs) == 9
    (err,) = layout.errors
    assert err.path == bids / "sub-01_backup" and "alphanumeric" in str(err)


def test_missing_dataset_and_derivatives(tmp_path, trial):
    with pytest.raises(InputError, match="does not exist"):
        load_layout(tmp_path / "nope")
    with pytest.raises(InputError, match="derivatives folder does not exist"):
        load_layout(trial[0], tmp_path / "nope")


def test_one_condition_mode_when_no_session_is_a_condition(tmp_path):
    bids, _ = write_trial(tmp_path, n_subjects=2, numbered_sessions=True, sessions_tsv=False)
    layout = load_layout(bids, check_data=False)
    assert layout.mode == "single" and layout.errors == []
    assert {r.condition for r in layout.runs} == {"stim"} and len(layout.runs) == 6


def test_trial_mode_session_without_condition_is_error(trial_copy):
    bids, deriv = trial_copy
    for root in (bids, deriv):
        (root / "sub-02" / "ses-scs").rename(root / "sub-02" / "ses-baseline")
        for f in (root / "sub-02" / "ses-baseline").rglob("*ses-scs*"):
            f.rename(f.with_name(f.name.replace("ses-scs", "ses-baseline")))
    tsv = bids / "sub-02" / "sub-02_sessions.tsv"
    df = pd.read_csv(tsv, sep="\t")
    df.loc[df.session_id == "ses-scs", ["session_id", "condition"]] = ["ses-baseline", None]
    df.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    layout = load_layout(bids, deriv, check_data=False)
    (err,) = layout.errors
    assert err.subject == "02" and err.path.name == "ses-baseline"
    assert "not a condition" in str(err)
    assert len(layout.runs_for("02")) == 2


# --------------------------------------------------------------------------- the project's simulator
@pytest.mark.slow
def test_project_simulator(tmp_path):
    simulate = pytest.importorskip("fmri_pain.simulate.dataset")
    sim = simulate.simulate_trial(tmp_path, n_subjects=3, seed=1, n_volumes=30, derivatives=True,
                                  dropout=True)
    layout = load_layout(sim.bids_dir, sim.derivatives_dir)
    assert layout.errors == [], [str(e) for e in layout.errors]
    assert layout.mode == "trial" and layout.subjects == ["01", "02", "03"]
    assert len(layout.runs) == 8  # the last subject dropped out before its last period
    assert (layout.summary()["n_volumes"] == 30).all()
    for run in layout.runs:
        assert run.mask is not None and run.confounds is not None and run.tr == 2.0
        assert run.period is not None and run.sequence.split("-")[run.period - 1] == run.condition
    assert isinstance(layout, TrialLayout)
