"""``fmri-pain permute``: permutation inference on any maps, from the command line."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from fmri_pain.cli import main
from fmri_pain.glm.inference import permutation_test

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])


@pytest.fixture()
def maps(tmp_path):
    """12 smooth maps (4 subjects x 3 conditions) with an effect of condition 2 in a blob."""
    rng = np.random.default_rng(0)
    shape = (10, 11, 9)
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    blob = np.zeros(shape)
    blob[3:6, 3:6, 3:6] = 2.5
    paths = []
    for i in range(12):
        vol = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) * 3
        vol += blob * (i % 3 == 2) + 0.8 * (i // 3)  # condition effect + subject offsets
        paths.append(tmp_path / f"map{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(vol.astype(np.float32), AFFINE), paths[-1])
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), tmp_path / "mask.nii.gz")
    return paths, tmp_path / "mask.nii.gz", mask


def _masked(path, mask):
    return np.asarray(nib.load(path).dataobj)[mask]


def test_one_sample_equals_the_engine(maps, tmp_path, capsys):
    paths, mask_path, mask = maps
    out = tmp_path / "out"
    code = main(["permute", str(out), *map(str, paths), "--mask", str(mask_path), "--n-perm", "199",
                 "--tfce", "--seed", "3"])
    assert code == 0
    assert "signflip, 199 rearrangements" in capsys.readouterr().out
    Y = np.stack([_masked(p, mask) for p in paths]).astype(float)
    ref = permutation_test(Y, np.ones((12, 1)), [1.0], n_perm=199, random_state=3, mask=mask,
                           tfce=True)
    group = out / "group"
    stem = "space-MNI152NLin2009aSym_contrast-intercept"
    np.testing.assert_allclose(_masked(group / f"{stem}_desc-perm_stat-logp_statmap.nii.gz", mask),
                               ref.logp("fwe"), rtol=1e-5)
    np.testing.assert_allclose(_masked(group / f"{stem}_desc-tfce_stat-logp_statmap.nii.gz", mask),
                               ref.logp("tfce_fwe"), rtol=1e-5)
    np.testing.assert_allclose(_masked(group / f"{stem}_stat-t_statmap.nii.gz", mask), ref.stat,
                               rtol=1e-5)
    side = json.loads((group / f"{stem}_desc-perm_stat-logp_statmap.json").read_text())
    assert side["permutation_summary"]["n_perm"] == 199
    assert side["Parameters"]["n_perm"] == 199 and side["Parameters"]["design_columns"] == ["intercept"]
    assert [s["path"] for s in side["Sources"]] == [*map(str, paths), str(mask_path)]


def test_design_with_blocks_shuffles_within_subjects(maps, tmp_path):
    paths, mask_path, mask = maps
    design = pd.DataFrame({"subject": np.repeat(["s1", "s2", "s3", "s4"], 3),
                           **{f"c{j}": np.tile(np.eye(3)[j], 4) for j in range(3)}})
    design.to_csv(tmp_path / "design.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    code = main(["permute", str(out), *map(str, paths), "--mask", str(mask_path),
                 "--design", str(tmp_path / "design.tsv"), "--blocks", "subject",
                 "--contrast=-1,0,1", "--name", "c2MinusC0", "--n-perm", "99",
                 "--two-sided", "--seed", "1"])
    assert code == 0
    Y = np.stack([_masked(p, mask) for p in paths]).astype(float)
    x = design[["c0", "c1", "c2"]].to_numpy(float)
    ref = permutation_test(Y, x, [-1.0, 0, 1.0], n_perm=99, blocks=design["subject"].to_numpy(),
                           two_sided=True, random_state=1)
    assert ref.scheme == "within"
    logp = _masked(out / "group" / "space-MNI152NLin2009aSym_contrast-c2MinusC0_desc-perm_stat-"
                   "logp_statmap.nii.gz", mask)
    np.testing.assert_allclose(logp, ref.logp("fwe"), rtol=1e-5)
    # the simulated blob is found, FWE-corrected
    blob = np.zeros(mask.shape, bool)
    blob[3:6, 3:6, 3:6] = True
    assert (logp[blob[mask]] > -np.log10(0.05)).mean() > 0.5
    assert (logp[~blob[mask]] > -np.log10(0.05)).mean() < 0.05


def test_bad_input_names_the_file(maps, tmp_path, capsys):
    paths, mask_path, _ = maps
    out = str(tmp_path / "out")
    assert main(["permute", out, *map(str, paths[:-1]), str(tmp_path / "missing.nii.gz"),
                 "--mask", str(mask_path)]) == 2
    assert "missing.nii.gz: file not found" in capsys.readouterr().err
    pd.DataFrame({"age": np.arange(5.0)}).to_csv(tmp_path / "short.tsv", sep="\t", index=False)
    assert main(["permute", out, *map(str, paths), "--mask", str(mask_path),
                 "--design", str(tmp_path / "short.tsv")]) == 2
    assert "short.tsv: the design has 5 rows but 12 maps" in capsys.readouterr().err
    shifted = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.float32), AFFINE), shifted)
    assert main(["permute", out, *map(str, paths[:-1]), str(shifted), "--mask", str(mask_path),
                 "--n-perm", "9"]) == 2
    assert "shifted.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "out" / "group").exists()  # nothing half-written


def test_f_contrast_from_weight_rows(maps, tmp_path):
    paths, mask_path, mask = maps
    design = pd.DataFrame({"subject": np.repeat(["s1", "s2", "s3", "s4"], 3),
                           **{f"c{j}": np.tile(np.eye(3)[j], 4) for j in range(3)}})
    design.to_csv(tmp_path / "design.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    assert main(["permute", str(out), *map(str, paths), "--mask", str(mask_path),
                 "--design", str(tmp_path / "design.tsv"), "--blocks", "subject",
                 "--contrast=1,0,-1;0,1,-1", "--name", "conditionF", "--n-perm", "19"]) == 0
    Y = np.stack([_masked(p, mask) for p in paths]).astype(float)
    ref = permutation_test(Y, design[["c0", "c1", "c2"]].to_numpy(float),
                           [[1.0, 0, -1], [0, 1, -1]], n_perm=19, blocks=design["subject"].to_numpy(),
                           random_state=0)
    f_map = out / "group" / "space-MNI152NLin2009aSym_contrast-conditionF_stat-F_statmap.nii.gz"
    np.testing.assert_allclose(_masked(f_map, mask), ref.stat, rtol=1e-5)
    assert ref.stat_type == "F"
