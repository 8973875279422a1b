"""Between-subject designs: two groups and a covariate slope, their values, null calibration, permutation."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fmri_pain.config.group import BetweenSubjectsTest
from fmri_pain.glm.inference.permutation import permutation_test
from fmri_pain.glm.second_level.between_subjects import between_subjects_design
from fmri_pain.glm.second_level.models import compute_group_contrast, fit_second_level

TWO_GROUP = BetweenSubjectsTest(name="patientsMinusControls", design="two-group", column="group",
                                levels=("patient",))
SLOPE = BetweenSubjectsTest(name="age", design="covariate", column="age")


def _rows(n, rng):
    return pd.DataFrame({"subject": [f"{i:02d}" for i in range(n)],
                         "group": ["patient" if i % 3 else "control" for i in range(n)],
                         "age": rng.normal(50, 10, n).round(1), "weight": rng.normal(70, 8, n)})


def _images(values):
    """One ROI-sized image per subject: ``values`` (n_subjects, n_voxels) on a (n_voxels, 1, 1) grid."""
    return [nib.Nifti1Image(v.reshape(-1, 1, 1).astype(np.float32), np.eye(4)) for v in values]


def _fit(values, design):
    mask = nib.Nifti1Image(np.ones((values.shape[1], 1, 1), np.uint8), np.eye(4))
    model = fit_second_level(_images(values), design, mask_img=mask)
    key = next(iter(design.contrasts))
    return {k: np.asanyarray(img.dataobj).ravel() for k, img in
            compute_group_contrast(model, design, key).items()}


def test_two_group_effect_and_t_are_the_pooled_variance_two_sample_test():
    rng = np.random.default_rng(0)
    rows = _rows(12, rng)
    y = rng.normal(size=(12, 5)) + (rows["group"] == "patient").to_numpy()[:, None] * 2.0
    design, notes = between_subjects_design(rows, TWO_GROUP)
    assert list(design.design.columns) == ["group-patient", "group-control"] and not notes
    maps = _fit(y, design)
    a, b = y[rows["group"] == "patient"], y[rows["group"] == "control"]
    assert np.allclose(maps["effect"], a.mean(0) - b.mean(0), atol=1e-5)
    assert np.allclose(maps["t"], stats.ttest_ind(a, b).statistic, atol=1e-4)
    assert design.residual_dof == 10
    reversed_design, _ = between_subjects_design(rows, BetweenSubjectsTest(
        "c", "two-group", "group", levels=("control", "patient")))
    assert np.allclose(_fit(y, reversed_design)["t"], -maps["t"], atol=1e-4)


def test_covariate_slope_is_adjusted_for_the_other_covariates():
    rng = np.random.default_rng(1)
    rows = _rows(15, rng)
    y = rng.normal(size=(15, 4)) + 0.1 * rows["age"].to_numpy()[:, None]
    design, _ = between_subjects_design(rows, SLOPE, covariates=("weight", "age"))
    assert list(design.design.columns) == ["intercept", "age", "weight"]
    maps = _fit(y, design)
    x = np.column_stack([np.ones(15), rows["age"], rows["weight"]])
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    assert np.allclose(maps["effect"], beta[1], atol=1e-5)
    resid = y - x @ beta
    se = np.sqrt((resid ** 2).sum(0) / 12 * np.linalg.inv(x.T @ x)[1, 1])
    assert np.allclose(maps["t"], beta[1] / se, rtol=1e-4)


def test_subjects_without_a_value_are_left_out_and_named():
    rng = np.random.default_rng(2)
    rows = _rows(9, rng).astype({"age": object})
    rows.loc[3, "age"] = np.nan
    rows.loc[5, "age"] = "n/a"
    rows.loc[7, "weight"] = np.nan
    design, notes = between_subjects_design(rows, SLOPE, covariates=("weight",))
    assert list(design.rows["subject"]) == ["00", "01", "02", "04", "06", "08"]
    assert notes == ["sub-03, sub-05 left out: no numeric value of age",
                     "sub-07 left out: no numeric value of the covariate weight"]


@pytest.mark.parametrize("change, message", [
    (lambda r: r.assign(group="patient"), r"1 level\(s\)"),
    (lambda r: r.assign(group=["a", "b", "c"] * 3), r"3 level\(s\)"),
    (lambda r: r.drop(columns="group"), "not in participants.tsv"),
    (lambda r: r.assign(group=["patient"] * 8 + ["control"]), "1 in control"),
])
def test_two_group_designs_that_cannot_be_fitted_say_why(change, message):
    rows = change(_rows(9, np.random.default_rng(3)))
    with pytest.raises(ValueError, match=message):
        between_subjects_design(rows, TWO_GROUP)


def test_a_level_not_in_the_column_is_refused():
    with pytest.raises(ValueError, match="level.s. healthy of group not found"):
        between_subjects_design(_rows(9, np.random.default_rng(4)),
                                BetweenSubjectsTest("x", "two-group", "group", levels=("healthy",)))


@pytest.mark.parametrize("n", [8, 20])
@pytest.mark.parametrize("test", [TWO_GROUP, SLOPE], ids=["two-group", "covariate"])
def test_false_positive_rate_under_the_null_is_nominal(n, test):
    # 500 null tables as 500 independent voxels of one ROI-sized map, fitted by nilearn
    rng = np.random.default_rng(100 + n)
    rows = _rows(n, rng)
    design, _ = between_subjects_design(rows, test, covariates=("weight",))
    maps = _fit(rng.normal(size=(n, 500)) * rng.uniform(0.5, 3.0, 500), design)
    p = 2 * stats.t.sf(np.abs(maps["t"]), design.residual_dof)
    rejected = int((p < 0.05).sum())
    assert 16 <= rejected <= 35, rejected
    # nilearn's one-sided p agrees with the t and the design's df
    assert np.allclose(maps["p"], stats.t.sf(maps["t"], design.residual_dof), atol=1e-4)


def test_the_permutation_engine_permutes_subjects_between_groups():
    rng = np.random.default_rng(5)
    rows = _rows(10, rng)
    y = rng.normal(size=(10, 30))
    y[:, 0] += (rows["group"] == "patient").to_numpy() * 3.0
    design, _ = between_subjects_design(rows, TWO_GROUP)
    result = permutation_test(y, design.design.to_numpy(), design.contrasts[TWO_GROUP.name],
                              n_perm=199, two_sided=True, random_state=0)
    assert result.scheme == "permute"
    assert np.allclose(result.stat, _fit(y, design)["t"], atol=1e-4)
    assert result.p_fwe[0] < 0.05 and np.median(result.p_fwe[1:]) > 0.5


def test_group_level_writes_the_maps_with_sidecars_and_the_permutation_stage_permutes_them(tmp_path):
    import json

    from fmri_pain.config.spec import spec_from_dict
    from fmri_pain.glm.inference.group_contrasts import run_permutation_inference
    from tests.glm.second_level.test_group_honesty import make_one_condition
    from tests.support.group import run_group_glm

    spec = spec_from_dict({
        "events": {"on_trial_type": "stim"}, "pathways": {"enabled": False},
        "inference": {"n_perm": 19}, "group": {"between_subjects": [
            {"name": "patientsMinusControls", "design": "two-group", "column": "group",
             "contrast": "stim", "levels": ["patient", "control"]},
            {"name": "Age", "design": "covariate", "column": "age"}]}})
    runs = make_one_condition(tmp_path, 7, spec, group=["patient", "control"] * 3 + ["patient"],
                              age=[31, 45, None, 38, 60, 41, 55])
    group = run_group_glm(tmp_path, runs, spec)
    by_name = {m.contrast: m for m in group.maps}
    assert set(by_name) == {"stim", "patientsMinusControls", "stimAge"}
    two, slope = by_name["patientsMinusControls"], by_name["stimAge"]
    assert (two.route, slope.route) == ("two-group", "covariate")
    assert slope.subjects == ["01", "02", "04", "05", "06", "07"]
    assert {"effect", "t", "z", "p", "z_fdr", "z_fwe"} <= set(two.paths)
    sidecar = json.loads(two.paths["t"].with_name(two.paths["t"].name.replace(".nii.gz", ".json"))
                         .read_text())
    assert sidecar["ModelRoute"] == "two-group" and sidecar["DegreesOfFreedom"] == 5
    assert sidecar["DesignColumns"] == ["group-patient", "group-control"]
    assert sidecar["ModelTerms"] == "group (cell means: patient, control)"
    assert "contrast-patientsMinusControls_stat-t" in two.paths["t"].name
    side = json.loads(slope.paths["t"].with_name(slope.paths["t"].name.replace(".nii.gz", ".json"))
                      .read_text())
    assert side["Warnings"] == ["sub-03 left out: no numeric value of age"]
    assert any("sub-03 left out" in w for w in group.warnings)
    # the t map is the two-sample t of the subject maps
    images = two.load_images()
    y = np.stack([np.asanyarray(i.dataobj) for i in images])
    patient = (two.design.rows["group"] == "patient").to_numpy()
    t = np.asanyarray(nib.load(two.paths["t"]).dataobj)
    mask = np.asanyarray(nib.load(group.mask).dataobj).astype(bool)
    assert np.allclose(t[mask], stats.ttest_ind(y[patient], y[~patient]).statistic[mask], atol=1e-3)
    p = np.asanyarray(nib.load(two.paths["p"]).dataobj)
    assert np.allclose(p[mask], stats.t.sf(t[mask], 5), atol=1e-4)
    from fmri_pain.report.methods import group_section

    text = group_section(group, spec).text
    assert ("The between-subject test patientsMinusControls modelled one map per subject (7 subjects; "
            "terms group (cell means: patient, control); df 5) and tested the difference of the group "
            "means, patient minus control.") in text
    assert "stimAge modelled one map per subject (6 subjects; terms intercept + age; df 4)" in text
    outputs = {o.contrast: o for o in run_permutation_inference(group, spec.inference, alpha=0.05)}
    assert outputs["patientsMinusControls"].result.scheme == "permute"
    assert np.allclose(outputs["stimAge"].result.stat, np.asanyarray(
        nib.load(slope.paths["t"]).dataobj)[mask], atol=1e-3)
    assert "z_fwe" in outputs["patientsMinusControls"].paths
