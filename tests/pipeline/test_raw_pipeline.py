"""From raw BIDS through the project's own preprocessing: same answers as from derivatives.

Two subjects of the shared simulated trial go through `fmri-pain BIDS OUT
participant` without `--derivatives` (realignment, slice timing, registration,
confounds, then the first level); their maps are compared with those the same
subjects got from the simulator's ideal fMRIPrep-style derivatives.
"""

import shutil

import nibabel as nib
import numpy as np
import pytest

from fmri_pain.cli import main
from fmri_pain.bids.naming import pathway_table_name

SUBJECTS = ("01", "02")
MAP = "sub-{s}/func/sub-{s}_task-stim_space-MNI152NLin2009aSym_contrast-{c}_stat-{k}_statmap.nii.gz"


@pytest.fixture(scope="module")
def raw_output(sim_trial, tmp_path_factory):
    root = tmp_path_factory.mktemp("raw_pipeline")
    bids = root / "bids"
    shutil.copytree(sim_trial.bids_dir, bids, ignore=shutil.ignore_patterns(
        *[f"sub-{i:02d}" for i in range(3, 100)]))
    out = root / "out"
    code = main([str(bids), str(out), "participant", "--scheduler", "none", "--quiet",
                 "--work-dir", str(root / "work")])
    assert code == 0
    return out


def _roi(sim, *names):
    masks = [np.asanyarray(nib.load(sim.truth_dir / f"roi-{n}_mask.nii.gz").dataobj) > 0 for n in names]
    return np.logical_or.reduce(masks)


def test_outputs_are_fmriprep_named(raw_output):
    for s in SUBJECTS:
        for ses in ("scs", "drgs", "dual"):
            func = raw_output / f"sub-{s}" / f"ses-{ses}" / "func"
            stem = f"sub-{s}_ses-{ses}_task-stim_run-1"
            assert (func / f"{stem}_space-MNI152NLin2009aSym_desc-preproc_bold.nii.gz").exists()
            assert (func / f"{stem}_space-MNI152NLin2009aSym_desc-brain_mask.nii.gz").exists()
            assert (func / f"{stem}_desc-confounds_timeseries.tsv").exists()
    assert (raw_output / "sub-01.html").read_text().count("data:image/png;base64") > 3


@pytest.mark.parametrize("contrast", ["dual", "dualMinusScs", "drgsMinusScs"])
def test_effects_agree_with_the_derivatives_route(raw_output, demo_output, sim_trial, contrast):
    rois = _roi(sim_trial, "S2_L", "S2_R", "pINS_L", "pINS_R", "dACC", "thalamus_L",
                "thalamus_R", "S1leg_L", "S1leg_R", "control")
    ours, ideal = [], []
    for s in SUBJECTS:
        path = MAP.format(s=s, c=contrast, k="effect")
        ours.append(np.asanyarray(nib.load(raw_output / path).dataobj)[rois])
        ideal.append(np.asanyarray(nib.load(demo_output / path).dataobj)[rois])
    ours, ideal = np.concatenate(ours), np.concatenate(ideal)
    assert np.corrcoef(ours, ideal)[0, 1] > 0.8
    # same scale: regression slope of ours on the ideal within 25 %
    slope = np.polyfit(ideal, ours, 1)[0]
    assert 0.75 < slope < 1.25, slope


def test_group_level_reads_own_preprocessing(raw_output, sim_trial):
    code = main([str(raw_output.parent / "bids"), str(raw_output), "group", "--quiet",
                 "--spec", str(_small_group_spec(raw_output.parent))])
    assert code == 0
    group = raw_output / "group"
    assert (group / "task-stim_space-MNI152NLin2009aSym_contrast-dual_stat-t_statmap.nii.gz").exists()
    # connectivity needs the preprocessed runs: found through the own derivatives
    assert (group / "pathways" / pathway_table_name("connectivity_ppi")).exists()
    assert "Nipype workflows" in (raw_output / "group.html").read_text()


def _small_group_spec(folder):
    path = folder / "spec.yaml"
    path.write_text("inference:\n  n_perm: 50\n  tfce: false\npathways:\n  decoding: false\n")
    return path
