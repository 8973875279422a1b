"""End-to-end preprocessing of the simulator's raw data, checked against its ground truth."""
from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_pain.bids.layout import load_layout
from fmri_pain.config.preprocess import PreprocessSpec
from fmri_pain.preprocess import load_qc, preproc_report_section, preprocess_subject
from fmri_pain.preprocess.registration import Registration, map_points
from fmri_pain.preprocess.templates import on_grid, output_grid
from fmri_pain.preprocess.transforms import apply_affine, grid_points, rigid_params
from fmri_pain.simulate.dataset import simulate_trial

SPEC = PreprocessSpec(registration_resolution=4.0)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    trial = simulate_trial(root, n_subjects=1, seed=5, voxel_size=4.0, n_volumes=40)
    layout = load_layout(trial.bids_dir)
    runs = list(layout.runs)
    assert all(r.anat is not None for r in runs)  # one T1w serves every session
    return trial, runs[:2]  # two sessions keep the test short


@pytest.fixture(scope="module")
def preprocessed(sim, tmp_path_factory):
    trial, runs = sim
    out = tmp_path_factory.mktemp("prep")
    new = preprocess_subject(runs, out / "derivatives", out / "work", SPEC)
    return out, runs, new


def _chain_points(xfm: dict, pts: np.ndarray) -> np.ndarray:
    """MNI points -> EPI-reference points through a written ``desc-std2bold_xfm.json``."""
    if xfm["NormalizationRoute"] == "T1w":
        std = xfm["T1w_from_MNI"]
        reg = Registration(np.asarray(std["matrix"]), std["kind"], std["ants_transforms"])
        return apply_affine(np.asarray(xfm["boldref_from_T1w"]["matrix"]), map_points(reg, pts))
    std = xfm["boldref_from_MNI"]
    return map_points(Registration(np.asarray(std["matrix"]), std["kind"], std["ants_transforms"]), pts)


def _misregistration(xfm: dict, native_from_mni: np.ndarray) -> np.ndarray:
    """Distance (mm) between estimated and true positions of MNI brain voxels in the first volume."""
    shape, aff = output_grid(4.0)
    pts = grid_points(shape, aff)[on_grid("brain", shape, aff) >= 0.5]
    est = apply_affine(np.asarray(xfm["motion"][0]), _chain_points(xfm, pts))
    return np.linalg.norm(est - apply_affine(native_from_mni, pts), axis=1)


def _xfm_path(run):
    return run.bold.parent / run.bold.name.replace(
        "_space-MNI152NLin2009aSym_desc-preproc_bold.nii.gz", "_desc-std2bold_xfm.json")


def test_outputs_have_fmriprep_names(preprocessed):
    out, runs, new = preprocessed
    assert len(new) == len(runs) == 2
    for old, r in zip(runs, new):
        assert r.bold.name.endswith("_space-MNI152NLin2009aSym_desc-preproc_bold.nii.gz")
        assert r.mask.name.endswith("_space-MNI152NLin2009aSym_desc-brain_mask.nii.gz")
        assert r.confounds.name.endswith("_desc-confounds_timeseries.tsv")
        assert r.bold.is_file() and r.mask.is_file() and r.confounds.is_file()
        assert r.events == old.events and r.metadata["RepetitionTime"] == old.metadata["RepetitionTime"]
        img = nib.load(r.bold)
        assert img.shape[-1] == nib.load(old.bold).shape[-1]  # no volume dropped
        side = json.loads(r.bold.with_name(r.bold.name.replace(".nii.gz", ".json")).read_text())
        assert side["SpatialReference"]["NormalizationRoute"] == "T1w"
        assert side["SliceTimingCorrected"] is True and 0 < side["StartTime"] < side["RepetitionTime"]
        conf = pd.read_csv(r.confounds, sep="\t")
        assert conf.loc[0, "framewise_displacement"] != conf.loc[0, "framewise_displacement"]  # NaN
        assert r.confounds.read_text().splitlines()[1].count("n/a") >= 10
    assert (out / "derivatives" / "sub-01" / "anat" /
            "sub-01_space-MNI152NLin2009aSym_desc-preproc_T1w.nii.gz").is_file()
    html = preproc_report_section(load_qc(new))
    assert html.count("data:image/png;base64,") == 4


def test_motion_matches_truth(sim, preprocessed):
    trial, _ = sim
    _, runs, new = preprocessed
    sub = trial.truth["subjects"]["sub-01"]
    for r in new:
        true = np.asarray(sub["sessions"][f"ses-{r.session}"]["runs"]["run-1"]["motion"])
        mats = np.asarray(json.loads(_xfm_path(r).read_text())["motion"])
        # simulator convention: pose relative to the first volume, about the scanner origin
        est = np.array([rigid_params(m @ np.linalg.inv(mats[0])) for m in mats])
        for k in range(6):
            if true[:, k].std() > 1e-4:
                assert np.corrcoef(est[:, k], true[:, k])[0, 1] >= 0.9, (r.session, k)
        conf = pd.read_csv(r.confounds, sep="\t", na_values="n/a")
        true_fd = np.asarray(sub["sessions"][f"ses-{r.session}"]["runs"]["run-1"]["framewise_displacement"])
        assert np.corrcoef(conf["framewise_displacement"][1:], true_fd[1:])[0, 1] > 0.9


def test_normalization_within_2mm(sim, preprocessed):
    trial, _ = sim
    _, _, new = preprocessed
    n2m = np.asarray(trial.truth["subjects"]["sub-01"]["native_from_mni"])
    for r in new:
        err = _misregistration(json.loads(_xfm_path(r).read_text()), n2m)
        assert err.mean() <= 2.0, (r.session, err.mean())


def test_effects_match_simulated_derivatives(sim, preprocessed):
    """ON-OFF effects in the truth ROIs agree with those from the simulator's ideal preprocessing."""
    from nilearn.glm.first_level import make_first_level_design_matrix

    trial, _ = sim
    _, _, new = preprocessed
    ours, ideal = [], []
    for r in new:
        events = pd.read_csv(r.events, sep="\t")
        n = nib.load(r.bold).shape[-1]
        x = make_first_level_design_matrix(np.arange(n) * r.tr + r.metadata["StartTime"], events,
                                           drift_model="cosine", high_pass=1 / 128).to_numpy()
        ideal_bold = trial.derivatives_dir / r.bold.relative_to(r.bold.parents[3])
        series = [(ours, np.asarray(nib.load(r.bold).dataobj, dtype=np.float64)),
                  (ideal, np.asarray(nib.load(ideal_bold).dataobj, dtype=np.float64))]
        for roi in trial.truth["rois"]:
            mask = np.asarray(nib.load(trial.truth_dir / roi["mask"]).dataobj) > 0
            for store, data in series:
                y = data[mask].mean(axis=0)
                beta = np.linalg.lstsq(x, y, rcond=None)[0]
                store.append(100 * beta[0] / y.mean())
    ours, ideal = np.array(ours), np.array(ideal)
    assert np.corrcoef(ours, ideal)[0, 1] > 0.9
    assert np.median(np.abs(ours - ideal)) < 0.3  # percent signal change


def test_rerun_reuses_work_dir(sim, preprocessed):
    out, runs, new = preprocessed
    node_result = next((out / "work").rglob("hmc/result_hmc.pklz"))
    before = node_result.stat().st_mtime
    again = preprocess_subject(runs, out / "derivatives", out / "work", SPEC)
    assert node_result.stat().st_mtime == before
    assert [r.bold for r in again] == [r.bold for r in new]


def test_subject_without_t1w_uses_epi_template(sim, tmp_path):
    trial, runs = sim
    run = replace(runs[0], anat=None)
    (new,) = preprocess_subject([run], tmp_path / "derivatives", tmp_path / "work", SPEC)
    side = json.loads(new.bold.with_name(new.bold.name.replace(".nii.gz", ".json")).read_text())
    assert side["SpatialReference"]["NormalizationRoute"] == "EPI-template"
    assert any("no T1w" in note for note in side["Notes"])
    n2m = np.asarray(trial.truth["subjects"]["sub-01"]["native_from_mni"])
    err = _misregistration(json.loads(_xfm_path(new).read_text()), n2m)
    assert err.mean() <= 2.0
    assert "EPI-template" in preproc_report_section(load_qc([new]))
