"""Output plumbing: names, atomic writes, provenance."""

import json

import nibabel as nib
import numpy as np
import pytest

from fmri_pain.derivatives import (atomic_write, bids_filename, provenance, sha256_file,
                                   statmap_path, write_dataset_description, write_nifti)


def test_statmap_names_follow_the_output_contract(tmp_path):
    p = statmap_path(tmp_path, contrast="stim", stat="z", subject="01", session="scs", task="stim")
    assert p == tmp_path / "sub-01/ses-scs/func/sub-01_ses-scs_task-stim_space-MNI152NLin2009aSym_contrast-stim_stat-z_statmap.nii.gz"
    g = statmap_path(tmp_path, contrast="dualMinusScs", stat="z", task="stim", desc="fdr")
    assert g == tmp_path / "group/task-stim_space-MNI152NLin2009aSym_contrast-dualMinusScs_desc-fdr_stat-z_statmap.nii.gz"


def test_entities_must_be_alphanumeric():
    with pytest.raises(ValueError, match="alphanumeric"):
        bids_filename({"sub": "../etc"}, "bold", ".nii.gz")
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        bids_filename({"subject": "01"}, "bold", ".nii.gz")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tsv"]


def test_nifti_sidecar_has_inputs_with_sha256(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("data")
    img = nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4))
    out = write_nifti(img, tmp_path / "x_stat-z_statmap.nii.gz",
                      provenance({"source": src}, {"alpha": 0.05}))
    side = json.loads((tmp_path / "x_stat-z_statmap.json").read_text())
    assert side["Sources"][0]["sha256"] == sha256_file(src)
    assert side["Sources"][0]["sha256"] == "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"
    assert side["Parameters"] == {"alpha": 0.05}
    assert "nilearn" in side["SoftwareVersions"]
    assert np.asanyarray(nib.load(out).dataobj).sum() == 8


def test_dataset_description(tmp_path):
    desc = json.loads(write_dataset_description(tmp_path, tmp_path).read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "fmri-pain"


def test_atomic_writes_have_ordinary_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    out = write_nifti(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
