"""Group models: designs, agreement with independent computations, real pain maps."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from fmri_pain.glm.second_level.models import (compute_group_contrast, fit_second_level, group_mask,
                                        one_sample_design, paired_design,
                                        repeated_measures_design)
from fmri_pain.trial import CONDITIONS, williams_sequences, trial_contrasts


def _crossover_rows(n_subjects, rng, drop=()):
    seqs = williams_sequences()
    rows = []
    for s in range(n_subjects):
        for period, cond in enumerate(seqs[s % 6], start=1):
            if (s, cond) in drop:
                continue
            rows.append({"subject": f"{s + 1:02d}", "condition": cond, "period": period,
                         "pain_relief": rng.normal(40, 10)})
    return pd.DataFrame(rows)


def _images(values, shape=(4, 4, 4)):
    """One small image per row; voxel 0 holds the row's value, the rest noise."""
    rng = np.random.default_rng(0)
    out = []
    for v in values:
        data = rng.normal(0, 1, shape).astype(np.float32) + 5
        data[0, 0, 0] = v
        out.append(nib.Nifti1Image(data, np.diag([4, 4, 4, 1])))
    return out


def test_repeated_measures_model_matches_statsmodels():
    rng = np.random.default_rng(3)
    rows = _crossover_rows(12, rng, drop={(4, "DUAL")})  # one drop-out session
    effect = {"SCS": 1.0, "DRGS": 1.5, "DUAL": 2.5}
    y = (rows["condition"].map(effect) + 0.3 * rows["period"]
         + rows["subject"].astype(int).map(lambda s: rng.normal(0, 1)) + rng.normal(0, 0.5, len(rows)))
    rows = rows.assign(y=y.to_numpy())
    design = repeated_measures_design(rows, CONDITIONS, trial_contrasts(), ("pain_relief",))
    model = fit_second_level(_images(rows["y"]), design, nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.diag([4, 4, 4, 1])))

    centred = rows.assign(pain_relief=rows["pain_relief"] - rows["pain_relief"].mean())
    ols = smf.ols("y ~ 0 + C(condition) + C(subject) + C(period) + pain_relief", centred).fit()
    for name, (a, b) in {"dualMinusScs": ("DUAL", "SCS"), "drgsMinusScs": ("DRGS", "SCS"),
                         "dualMinusDrgs": ("DUAL", "DRGS")}.items():
        t_ref = ols.t_test(f"C(condition)[{a}] - C(condition)[{b}] = 0").tvalue.item()
        t_img = compute_group_contrast(model, design, name)["t"]
        assert np.asanyarray(t_img.dataobj)[0, 0, 0] == pytest.approx(t_ref, rel=1e-5)
    f_ref = ols.f_test("C(condition)[DRGS] - C(condition)[SCS] = 0, "
                       "C(condition)[DUAL] - C(condition)[SCS] = 0").fvalue
    f_img = compute_group_contrast(model, design, "conditionF")["F"]
    assert np.asanyarray(f_img.dataobj)[0, 0, 0] == pytest.approx(float(np.squeeze(f_ref)), rel=1e-5)
    # the period slope: simulated +0.3 per period
    period = compute_group_contrast(model, design, "periodLinear")["effect"]
    assert np.asanyarray(period.dataobj)[0, 0, 0] == pytest.approx(
        ols.params["C(period)[T.3]"] / 2, rel=1e-6)


def test_paired_design_intercept_is_period_adjusted():
    rows = pd.DataFrame({"subject": [f"{i:02d}" for i in range(8)],
                         "period_difference": [2, 1, -1, -2, 1, -1, 2, -2]})
    design = paired_design(rows)
    assert list(design.design.columns) == ["intercept", "period_difference"]
    # a difference map equal to 1 + 0.5 * period_difference has intercept exactly 1
    values = 1 + 0.5 * rows["period_difference"].to_numpy() + np.array([0.1, -0.1] * 4)
    model = fit_second_level(_images(values), design)
    eff = compute_group_contrast(model, design, "intercept")["effect"]
    ref = smf.ols("v ~ period_difference", rows.assign(v=values)).fit().params["Intercept"]
    assert np.asanyarray(eff.dataobj)[0, 0, 0] == pytest.approx(ref, rel=1e-5)


def test_one_sample_on_real_pain_maps_peaks_in_posterior_insula(shared_data):
    folder = shared_data / "pain21"
    maps = [folder / f"contrast_pain_{i:02d}.nii.gz" for i in range(1, 22)]
    mask = nib.load(folder / "mask.nii.gz")
    design = one_sample_design(pd.DataFrame({"subject": range(21)}))
    model = fit_second_level(maps, design, mask)
    t_img = compute_group_contrast(model, design, "intercept")["t"]
    t = np.asanyarray(t_img.dataobj)
    peak = np.unravel_index(np.nanargmax(t), t.shape)
    xyz = nib.affines.apply_affine(t_img.affine, peak)
    assert np.linalg.norm(xyz - np.array([32, -16, 14])) < 12, xyz
    assert 7 < t[peak] < 9.5
    # independent computation: scipy's one-sample t test at the peak and across the mask
    data = np.stack([np.asanyarray(nib.load(m).dataobj, dtype=float)[peak] for m in maps])
    assert t[peak] == pytest.approx(stats.ttest_1samp(data, 0).statistic, rel=1e-4)
    inside = np.asanyarray(mask.dataobj) > 0
    sample = np.argwhere(inside)[:: max(1, inside.sum() // 500)]
    all_data = np.stack([np.asanyarray(nib.load(m).dataobj, dtype=float)[tuple(sample.T)] for m in maps])
    ref = stats.ttest_1samp(all_data, 0).statistic
    ours = t[tuple(sample.T)]
    ok = np.isfinite(ref)
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-4, atol=1e-5)


def test_group_mask_is_intersection():
    a = np.ones((3, 3, 3), np.float32)
    b = a.copy()
    b[0] = 0
    b[1, 1, 1] = np.nan
    mask = group_mask([nib.Nifti1Image(a, np.eye(4)), nib.Nifti1Image(b, np.eye(4))])
    assert np.asanyarray(mask.dataobj).sum() == 27 - 9 - 1


def test_mirroring_moves_a_blob_to_the_other_hemisphere():
    from nilearn.datasets import load_mni152_brain_mask

    from fmri_pain.glm.second_level.models import mirror_left_right, needs_flip

    ref = load_mni152_brain_mask(resolution=4)
    data = np.zeros(ref.shape, np.float32)
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(ref.affine), [10, -40, 66])).astype(int)
    data[tuple(ijk)] = 1.0
    mirrored = mirror_left_right(nib.Nifti1Image(data, ref.affine))
    peak = np.unravel_index(np.argmax(np.asanyarray(mirrored.dataobj)), ref.shape)
    np.testing.assert_allclose(nib.affines.apply_affine(ref.affine, peak), [-10, -40, 66], atol=2)
    assert needs_flip("left", "right") and needs_flip("L", "right")
    assert not needs_flip("right", "right") and not needs_flip(None, "right")
    assert not needs_flip("left", "none") and not needs_flip("bilateral", "right")


def test_contrast_maps_are_written_as_nilearn_names_them(tmp_path):
    import json

    from fmri_pain.glm.second_level.outputs import write_contrast_maps, write_design

    rng = np.random.default_rng(5)
    rows = _crossover_rows(12, rng)
    effect = {"SCS": 1.0, "DRGS": 1.5, "DUAL": 2.5}
    rows = rows.assign(y=(rows["condition"].map(effect) + rng.normal(0, 0.5, len(rows))).to_numpy())
    design = repeated_measures_design(rows, CONDITIONS, trial_contrasts())
    mask = nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.diag([4, 4, 4, 1]))
    model = fit_second_level(_images(rows["y"]), design, mask)
    ols = smf.ols("y ~ 0 + C(condition) + C(subject) + C(period)", rows).fit()
    where = {"output_dir": tmp_path, "task": "stim", "space": "MNI152NLin2009aSym"}

    t_maps = compute_group_contrast(model, design, "dualMinusScs")
    paths = write_contrast_maps(t_maps, "t", {"Description": "x"}, contrast="dualMinusScs", **where)
    assert sorted(paths) == ["p", "t", "variance", "z"]  # stat-effect: write_effect_size_maps
    assert paths["p"].name == ("task-stim_space-MNI152NLin2009aSym_contrast-dualMinusScs_stat-p"
                               "_statmap.nii.gz")
    test = ols.t_test("C(condition)[DUAL] - C(condition)[SCS] = 0")
    at = {s: float(np.asanyarray(nib.load(p).dataobj)[0, 0, 0]) for s, p in paths.items()}
    assert at["variance"] == pytest.approx(float(test.sd.item()) ** 2, rel=1e-4)
    assert at["p"] == pytest.approx(stats.t.sf(test.tvalue.item(), ols.df_resid), rel=1e-3)
    assert at["z"] == pytest.approx(stats.norm.isf(at["p"]), rel=1e-3)

    f_maps = compute_group_contrast(model, design, "conditionF")
    paths = write_contrast_maps(f_maps, "F", {"Description": "x"}, contrast="conditionF", **where)
    assert sorted(paths) == ["F", "effect", "p", "variance", "z"]
    eff = np.asanyarray(nib.load(paths["effect"]).dataobj)[0, 0, 0]
    var = float(np.asanyarray(nib.load(paths["variance"]).dataobj)[0, 0, 0])
    f_val = float(np.asanyarray(nib.load(paths["F"]).dataobj)[0, 0, 0])
    assert eff.shape == (2,) and var == pytest.approx(ols.scale, rel=1e-4)
    assert f_val == pytest.approx(float(np.sum(eff ** 2)) / 2 / var, rel=1e-4)
    side = json.loads(paths["effect"].with_name(paths["effect"].name.replace(".nii.gz", ".json")).read_text())
    assert "whitened" in side["StatisticDescription"] and side["StatisticType"] == "effect"

    from fmri_pain.glm.second_level.outputs import model_record
    record = model_record(design, "dualMinusScs", sorted(rows["subject"].unique()), [], [])
    design_path = write_design(design, record, {"dualMinusScs": "dualMinusScs"}, label="repeated", **where)
    statmap = json.loads(design_path.with_name(
        "task-stim_space-MNI152NLin2009aSym_desc-repeated_statmap.json").read_text())
    assert statmap["Description"] == record["Description"]
    assert statmap["ModelParameters"]["ResidualDegreesOfFreedom"] == ols.df_resid
