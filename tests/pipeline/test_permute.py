"""``fmri-pain permute``: permutation inference on any maps, from the command line."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from fmri_pain.cli import main
from fmri_pain.glm.inference.permutation import permutation_test

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
    stem = "contrast-intercept"
    np.testing.assert_allclose(_masked(group / f"{stem}_desc-perm_stat-logp_statmap.nii.gz", mask),
                               ref.logp("fwe"), rtol=1e-5)
    np.testing.assert_allclose(_masked(group / f"{stem}_desc-tfce_stat-logp_statmap.nii.gz", mask),
                               ref.logp("tfce_fwe"), rtol=1e-5)
    np.testing.assert_allclose(_masked(group / f"{stem}_stat-t_statmap.nii.gz", mask), ref.stat,
                               rtol=1e-5)
    side = json.loads((group / f"{stem}_desc-perm_stat-logp_statmap.json").read_text())
    assert side["NumberOfPermutations"] == ref.n_rearrangements and "NumberOfPermutations" not in side["PermutationSummary"]
    assert side["Parameters"]["n_perm"] == 199 and side["Parameters"]["design_columns"] == ["intercept"]
    from fmri_pain.bids.derivatives import bids_uri

    assert side["Sources"] == [bids_uri(p) for p in [*paths, mask_path]]


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
    logp = _masked(out / "group" / "contrast-c2MinusC0_desc-perm_stat-"
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
    f_map = out / "group" / "contrast-conditionF_stat-F_statmap.nii.gz"
    np.testing.assert_allclose(_masked(f_map, mask), ref.stat, rtol=1e-5)
    assert ref.stat_type == "F"


def _write_maps(folder, values, names, affine=AFFINE):
    paths = []
    for vol, name in zip(values, names):
        paths.append(folder / name)
        nib.save(nib.Nifti1Image(np.asarray(vol, np.float32), affine), paths[-1])
    return paths


def test_six_maps_enumerate_all_64_sign_flips(tmp_path, capsys):
    import itertools

    rng = np.random.default_rng(5)
    shape = (6, 6, 5)
    vols = ndimage.gaussian_filter(rng.standard_normal((6, *shape)), (0, 1, 1, 1)) * 3 + 0.5
    names = [f"sub-{i:02d}_space-MNI152NLin6Asym_stat-effect_statmap.nii.gz" for i in range(6)]
    paths = _write_maps(tmp_path, vols, names)
    mask = np.ones(shape, bool)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), tmp_path / "mask.nii.gz")
    out = tmp_path / "out"
    assert main(["permute", str(out), *map(str, paths), "--mask", str(tmp_path / "mask.nii.gz"),
                 "--n-perm", "1000", "--two-sided"]) == 0
    assert "all 64 distinct rearrangements (exhaustive)" in capsys.readouterr().out
    stem = out / "group" / "space-MNI152NLin6Asym_contrast-intercept"  # the maps' space is kept
    p_unc = 10 ** -_masked(f"{stem}_desc-permUncorrected_stat-logp_statmap.nii.gz", mask)
    p_fwe = 10 ** -_masked(f"{stem}_desc-perm_stat-logp_statmap.nii.gz", mask)
    # an exact enumeration, computed here
    Y = np.stack([_masked(p, mask) for p in paths]).astype(float)
    signs = np.array(list(itertools.product([1.0, -1.0], repeat=6)))
    t_all = np.abs(np.array([(s[:, None] * Y).mean(0) / ((s[:, None] * Y).std(0, ddof=1) / np.sqrt(6))
                             for s in signs]))
    obs = t_all[0]
    np.testing.assert_allclose(p_unc, (t_all >= obs * (1 - 1e-9)).mean(0), rtol=1e-5)
    np.testing.assert_allclose(p_fwe, (t_all.max(1)[:, None] >= obs * (1 - 1e-9)).mean(0),
                               rtol=1e-5)
    for p in (p_unc, p_fwe):
        np.testing.assert_allclose(p * 64, np.round(p * 64), atol=1e-3)
    side = json.loads(Path(f"{stem}_desc-perm_stat-logp_statmap.json").read_text())
    assert side["NumberOfDistinctRearrangements"] == 64 and side["NumberOfPermutations"] == 64
    assert side["Exhaustive"] is True and side["MinimumAttainableP"] == pytest.approx(2 / 64)
    assert "exceeds the 64 distinct" in side["PermutationWarnings"][0]
    assert side["Space"] == "MNI152NLin6Asym" and side["Parameters"]["n_perm"] == 1000


def test_three_maps_with_a_huge_t_give_no_impossible_p(tmp_path, capsys):
    """Issue 12.5: t ~ 200 at one voxel of 3 maps, --n-perm 100: 8 sign flips, p >= 2/8."""
    rng = np.random.default_rng(0)
    shape = (5, 5, 5)
    vols = rng.standard_normal((3, *shape))
    vols[:, 2, 2, 2] = 10.0 + np.array([0.03, -0.05, 0.02])
    paths = _write_maps(tmp_path, vols, [f"hi{i}.nii.gz" for i in range(3)])
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), AFFINE), tmp_path / "m.nii.gz")
    out = tmp_path / "O"
    assert main(["permute", str(out), *map(str, paths), "--mask", str(tmp_path / "m.nii.gz"),
                 "--n-perm", "100", "--two-sided", "--tfce", "--cluster-p", "0.05"]) == 0
    assert "0 voxels FWE p < 0.05" in capsys.readouterr().out
    group = out / "group"
    assert not list(group.glob("*space-*"))  # no space- entity in, none claimed out
    unc = np.asarray(nib.load(group / "contrast-intercept_desc-permUncorrected_stat-logp_statmap"
                                      ".nii.gz").dataobj)
    assert unc[2, 2, 2] < 1 and np.abs(np.asarray(nib.load(
        group / "contrast-intercept_stat-t_statmap.nii.gz").dataobj)[2, 2, 2]) > 100
    for desc in ("perm", "tfce", "clusterMass"):
        logp = np.asarray(nib.load(group / f"contrast-intercept_desc-{desc}_stat-logp_statmap"
                                           ".nii.gz").dataobj)
        assert logp.max() <= -np.log10(2 / 8) + 1e-5  # never below the smallest attainable p
        if desc == "perm":
            assert np.all(logp <= unc + 1e-6)  # FWE p >= uncorrected p
    side = json.loads((group / "contrast-intercept_desc-perm_stat-logp_statmap.json").read_text())
    assert side["Space"] is None and side["SpaceSource"].startswith("unknown")
    assert side["PermutationSummary"]["FWEThreshold"] is None  # strict JSON: nothing can pass


def test_space_label_from_option_and_refused_labels(maps, tmp_path, capsys):
    paths, mask_path, _ = maps
    out = tmp_path / "out"
    assert main(["permute", str(out), *map(str, paths), "--mask", str(mask_path), "--n-perm", "9",
                 "--space", "MNI152NLin2009aAsym"]) == 0
    side = json.loads((out / "group" / "space-MNI152NLin2009aAsym_contrast-intercept_stat-t_statmap"
                                       ".json").read_text())
    assert side["Space"] == "MNI152NLin2009aAsym" and side["SpaceSource"] == "--space"
    capsys.readouterr()
    assert main(["permute", str(tmp_path / "o2"), *map(str, paths), "--mask", str(mask_path),
                 "--space", "MNI_152"]) == 2
    assert "--space 'MNI_152' is not a BIDS label" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_degenerate_inputs_one_line_exit_2_nothing_written(maps, tmp_path, capsys):
    paths, mask_path, mask = maps
    out = tmp_path / "out"
    nib.save(nib.Nifti1Image(np.zeros(mask.shape, np.uint8), AFFINE), tmp_path / "empty.nii.gz")
    assert main(["permute", str(out), *map(str, paths), "--mask", str(tmp_path / "empty.nii.gz")]) == 2
    assert "empty.nii.gz: the mask has no non-zero voxel" in capsys.readouterr().err
    const = _write_maps(tmp_path, [np.full(mask.shape, 100.0)] * 4, [f"c{i}.nii.gz" for i in range(4)])
    assert main(["permute", str(out), *map(str, const), "--mask", str(mask_path)]) == 2
    err = capsys.readouterr().err
    assert "mask.nii.gz: every voxel has zero residual variance" in err and "c0.nii.gz" in err
    # equal shapes, different affines: both affines are shown
    shifted = AFFINE.copy()
    shifted[0, 3] = 2.0  # half a voxel
    moved = _write_maps(tmp_path, [np.zeros(mask.shape)], ["moved.nii.gz"], affine=shifted)
    assert main(["permute", str(out), *map(str, paths[:-1]), str(moved[0]),
                 "--mask", str(mask_path)]) == 2
    err = capsys.readouterr().err
    assert "moved.nii.gz: affine [4 0 0 2; 0 4 0 0; 0 0 4 0] differs from the mask's " \
           "[4 0 0 0; 0 4 0 0; 0 0 4 0]" in err and err.count("\n") == 1
    # 40 maps have 2^40 sign flips: 1e9 random ones do not fit in memory
    many = _write_maps(tmp_path, np.random.default_rng(0).standard_normal((40, 3, 3, 3)),
                       [f"m{i}.nii.gz" for i in range(40)])
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), AFFINE), tmp_path / "small.nii.gz")
    assert main(["permute", str(out), *map(str, many), "--mask", str(tmp_path / "small.nii.gz"),
                 "--n-perm", "1000000000"]) == 2
    err = capsys.readouterr().err
    assert "--n-perm 1000000000" in err and "GiB of memory" in err and "available" in err
    assert not out.exists()


def test_constant_voxels_are_excluded_and_reported(maps, tmp_path):
    paths, mask_path, mask = maps
    vols = [np.asarray(nib.load(p).dataobj).copy() for p in paths]
    for vol in vols:
        vol[2, 2, 2] = 5.0  # the same value in every map: no variance
    edited = _write_maps(tmp_path, vols, [f"e{i}.nii.gz" for i in range(len(vols))])
    out = tmp_path / "out"
    assert main(["permute", str(out), *map(str, edited), "--mask", str(mask_path), "--n-perm", "19",
                 "--tfce"]) == 0
    t = np.asarray(nib.load(out / "group" / "contrast-intercept_stat-t_statmap.nii.gz").dataobj)
    logp = np.asarray(nib.load(out / "group" / "contrast-intercept_desc-perm_stat-logp_statmap"
                                               ".nii.gz").dataobj)
    assert t[2, 2, 2] == 0 and logp[2, 2, 2] == 0 and np.abs(t[mask]).max() < 50
    side = json.loads((out / "group" / "contrast-intercept_desc-perm_stat-logp_statmap.json")
                      .read_text())
    assert side["VoxelsExcludedZeroVariance"] == 1
    assert "1 of" in side["PermutationWarnings"][0] and "zero residual variance" in \
        side["PermutationWarnings"][0]


def test_resolve_space_keeps_only_a_common_bids_label():
    from fmri_pain.pipeline.permute import resolve_space

    assert resolve_space(["d/sub-1_space-T1w_stat-z_statmap.nii.gz", "sub-2_space-T1w.nii.gz"])[:2] \
        == ("T1w", "the space- entity of every input map")
    label, source, notes = resolve_space(["sub-1_space-T1w_x.nii.gz", "sub-2_space-MNI152NLin6Asym.nii"])
    assert label is None and source.startswith("unknown") and "different spaces" in notes[0]
    label, _, notes = resolve_space(["sub-1_space-MNI-6_x.nii.gz"])
    assert label is None and "MNI-6" in notes[0]  # not a BIDS label: never written into a name
    label, source, notes = resolve_space(["sub-1_space-T1w.nii.gz"], "MNI152NLin2009aAsym")
    assert (label, source) == ("MNI152NLin2009aAsym", "--space") and "space-T1w" in notes[0]
    assert resolve_space(["map.nii.gz"])[0] is None
