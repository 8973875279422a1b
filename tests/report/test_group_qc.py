"""The group QC table reads the participant outputs: design sidecars, the confounds they name,
and the subject maps against the group mask."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_pain.report.group_qc import QC_COLUMNS, group_qc_table


def _design(out, sub, ses, run, volumes, censored, dof, sources):
    folder = out / f"sub-{sub}" / f"ses-{ses}" / "func"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"sub-{sub}_ses-{ses}_task-stim_run-{run}_design.json").write_text(json.dumps(
        {"NumberOfVolumes": volumes, "CensoredVolumes": censored, "ResidualDegreesOfFreedom": dof,
         "Sources": sources}))


def _confounds(deriv, sub, ses, run, fd):
    folder = deriv / f"sub-{sub}" / f"ses-{ses}" / "func"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"sub-{sub}_ses-{ses}_task-stim_run-{run}_desc-confounds_timeseries.tsv"
    pd.DataFrame({"framewise_displacement": fd, "trans_x": 0.0}).to_csv(
        folder / name, sep="\t", index=False, na_rep="n/a")
    return f"bids:fmriprep:sub-{sub}/ses-{ses}/func/{name}"


def test_group_qc_table_per_subject_and_session(tmp_path):
    out, deriv = tmp_path / "out", tmp_path / "fmriprep"
    out.mkdir()
    (out / "dataset_description.json").write_text(json.dumps(
        {"DatasetType": "derivative", "DatasetLinks": {"fmriprep": deriv.as_uri()}}))
    c1 = _confounds(deriv, "01", "a", 1, [np.nan, 0.1, 0.3, 0.2])
    c2 = _confounds(deriv, "01", "a", 2, [np.nan, 0.5])
    c3 = _confounds(deriv, "01", "b", 1, [np.nan, 1.0, 2.0])
    _design(out, "01", "a", 1, 4, 2, 30.0, ["bids:raw:sub-01/x_bold.nii.gz", c1])
    _design(out, "01", "a", 2, 2, 3, 20.0, [c2])
    _design(out, "01", "b", 1, 3, 0, 10.0, [c3])
    _design(out, "02", "a", 1, 5, 1, 7.0, ["bids:fmriprep:sub-02/missing_desc-confounds_timeseries.tsv"])
    _design(out, "09", "a", 1, 5, 1, 7.0, [])  # not in the group: left out
    mask = np.ones((2, 2, 2), dtype=np.uint8)
    mask[1, 1, 1] = 0  # 7 voxels
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    z = np.zeros((2, 2, 2), dtype=np.float32)
    z[0] = 1.5  # 4 voxels, all inside the mask
    z[1, 1, 1] = 2.0  # outside the mask: not counted
    nib.save(nib.Nifti1Image(z, np.eye(4)), tmp_path / "z.nii.gz")
    maps = pd.DataFrame({"subject": ["01", "01"], "session": ["a", None], "contrast": ["scs", "stim"],
                         "z": [tmp_path / "z.nii.gz", tmp_path / "z.nii.gz"]})

    table = group_qc_table(out, ["01", "02"], maps, tmp_path / "mask.nii.gz")

    assert list(table.columns) == QC_COLUMNS
    rows = {(r.subject, r.session): r for r in table.itertuples(index=False)}
    assert set(rows) == {("01", "a"), ("01", "b"), ("02", "a")}
    a = table[(table["subject"] == "01") & (table["session"] == "a")].iloc[0]
    assert a["runs"] == 2 and a["volumes"] == 6 and a["censored"] == 5
    assert a["residual dof"] == 50.0
    assert a["censored %"] == pytest.approx(100 * 5 / 6)
    assert a["mean FD (mm)"] == pytest.approx((0.1 + 0.3 + 0.2 + 0.5) / 4)  # over all volumes
    assert a["mask coverage %"] == pytest.approx(100 * 4 / 7)
    b = table[(table["subject"] == "01") & (table["session"] == "b")].iloc[0]
    assert b["mean FD (mm)"] == pytest.approx(1.5) and np.isnan(b["mask coverage %"])
    missing = table[table["subject"] == "02"].iloc[0]
    assert np.isnan(missing["mean FD (mm)"])  # its confounds file is not there: n/a, no error


def test_group_qc_table_empty_without_designs(tmp_path):
    table = group_qc_table(tmp_path, ["01"])
    assert table.empty and list(table.columns) == QC_COLUMNS
