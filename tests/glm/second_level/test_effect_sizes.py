"""Group effect-size maps: dz and Hedges' g against numpy on the subjects' maps, and the files written."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.glm.second_level.effect_sizes import (effect_size_maps, hedges_correction,
                                                     standardisable)
from fmri_pain.glm.second_level.models import (compute_group_contrast, fit_second_level,
                                               one_sample_design, paired_design,
                                               repeated_measures_design)
from fmri_pain.report.methods import cited_keys, group_section
from fmri_pain.trial import trial_contrasts
from tests.glm.second_level.test_group_honesty import SHAPE, make_trial
from tests.support.group import run_group_glm

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
MASK = nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), AFFINE)


def _images(stack: np.ndarray) -> list[nib.Nifti1Image]:
    return [nib.Nifti1Image(v.astype(np.float32), AFFINE) for v in stack]


def _data(img) -> np.ndarray:
    return np.asanyarray(img.dataobj).astype(float)


def test_one_sample_dz_and_g_are_mean_over_sd_of_the_subject_maps():
    rng = np.random.default_rng(0)
    maps = rng.normal(0.5, 1.0, (9, 3, 3, 3))
    rows = pd.DataFrame({"subject": [f"{i:02d}" for i in range(9)]})
    design = one_sample_design(rows)
    model = fit_second_level(_images(maps), design, MASK)
    out = effect_size_maps(compute_group_contrast(model, design, "intercept"), design, "intercept")
    dz = maps.mean(axis=0) / maps.std(axis=0, ddof=1)
    assert _data(out["dz"]) == pytest.approx(dz, rel=1e-4)
    assert _data(out["hedgesg"]) == pytest.approx(dz * (1 - 3 / (4 * 8 - 1)), rel=1e-4)


def test_repeated_two_conditions_dz_is_mean_over_sd_of_the_differences():
    rng = np.random.default_rng(1)
    n = 10
    subject = rng.normal(0, 2, (n, 1, 1, 1))
    scs = subject + rng.normal(1.0, 1.0, (n, 3, 3, 3))
    dual = subject + rng.normal(1.6, 1.0, (n, 3, 3, 3))
    rows = pd.DataFrame({"subject": [f"{i:02d}" for i in range(n)] * 2,
                         "condition": ["SCS"] * n + ["DUAL"] * n})
    design = repeated_measures_design(rows, ("SCS", "DUAL"), trial_contrasts(("SCS", "DUAL")))
    assert design.residual_dof == n - 1
    model = fit_second_level(_images(np.concatenate([scs, dual])), design, MASK)
    key = "dualMinusScs"
    assert standardisable(design, key)
    out = effect_size_maps(compute_group_contrast(model, design, key), design, key)
    d = dual - scs
    dz = d.mean(axis=0) / d.std(axis=0, ddof=1)
    assert _data(out["dz"]) == pytest.approx(dz, rel=1e-4)
    assert _data(out["hedgesg"]) == pytest.approx(dz * hedges_correction(n - 1), rel=1e-4)


def test_paired_dz_uses_the_residual_sd_after_the_period_difference():
    rng = np.random.default_rng(2)
    n = 8
    period_difference = np.array([2, 1, -1, -2, 1, -1, 2, -2], dtype=float)
    maps = 0.8 + 0.3 * period_difference[:, None, None, None] + rng.normal(0, 1, (n, 3, 3, 3))
    rows = pd.DataFrame({"subject": [f"{i:02d}" for i in range(n)],
                         "period_difference": period_difference})
    design = paired_design(rows)
    model = fit_second_level(_images(maps), design, MASK)
    out = effect_size_maps(compute_group_contrast(model, design, "intercept"), design, "intercept")
    x = np.column_stack([np.ones(n), period_difference])
    beta, *_ = np.linalg.lstsq(x, maps.reshape(n, -1), rcond=None)
    sigma = np.sqrt(((maps.reshape(n, -1) - x @ beta) ** 2).sum(axis=0) / (n - 2))
    dz = (beta[0] / sigma).reshape(3, 3, 3)
    assert _data(out["dz"]) == pytest.approx(dz, rel=1e-4)
    assert _data(out["hedgesg"]) == pytest.approx(dz * (1 - 3 / (4 * (n - 2) - 1)), rel=1e-4)


def test_slopes_period_and_f_contrasts_get_no_standardised_map():
    rows = pd.DataFrame({"subject": [f"{i:02d}" for i in range(6)] * 3,
                         "condition": ["SCS"] * 6 + ["DRGS"] * 6 + ["DUAL"] * 6,
                         "period": [1, 2, 3, 1, 2, 3, 2, 3, 1, 2, 3, 1, 3, 1, 2, 3, 1, 2]})
    design = repeated_measures_design(rows, ("SCS", "DRGS", "DUAL"), trial_contrasts())
    assert standardisable(design, "dualMinusMean")
    assert not standardisable(design, "periodLinear")
    assert not standardisable(design, "conditionF")
    covariate = one_sample_design(rows.iloc[:6].assign(age=np.arange(6.0)), ("age",))
    assert standardisable(covariate, "intercept")  # the covariate-adjusted mean over the residual SD
    assert not standardisable(covariate, "byAge")


def test_group_level_writes_effect_dz_and_g_with_sidecars(tmp_path):
    spec = AnalysisSpec()
    runs = make_trial(tmp_path, 7, spec)
    result = run_group_glm(tmp_path, runs, spec)
    methods = group_section(result, spec)
    assert "Hedges' g" in methods.text and "dualMinusScs" in methods.text
    assert {"hedges1981", "lakens2013"} <= set(cited_keys([methods]))
    group = tmp_path / "group"
    stem = "task-stim_space-MNI152NLin2009cAsym_contrast-scs_stat-{}_statmap"
    subject_maps = np.stack([_data(nib.load(p)) for p in sorted(
        tmp_path.glob("sub-*/func/*_contrast-scs_stat-effect_statmap.nii.gz"))])
    dz = subject_maps.mean(axis=0) / subject_maps.std(axis=0, ddof=1)
    assert _data(nib.load(group / (stem.format("dz") + ".nii.gz"))) == pytest.approx(dz, rel=1e-3)
    g = _data(nib.load(group / (stem.format("hedgesg") + ".nii.gz")))
    assert g == pytest.approx(dz * (1 - 3 / 23), rel=1e-3)
    effect = _data(nib.load(group / (stem.format("effect") + ".nii.gz")))
    assert effect == pytest.approx(subject_maps.mean(axis=0), rel=1e-4)
    sidecars = {s: json.loads((group / (stem.format(s) + ".json")).read_text())
                for s in ("effect", "dz", "hedgesg")}
    assert sidecars["effect"]["Units"] == "percent signal change"
    assert sidecars["dz"]["DegreesOfFreedom"] == 6 and "t / sqrt(n)" in sidecars["dz"]["Formula"]
    assert sidecars["hedgesg"]["HedgesJ"] == pytest.approx(1 - 3 / 23)
    # the repeated-measures differences and the paired route have them too
    assert (group / (stem.replace("scs", "dualMinusScs").format("dz") + ".nii.gz")).is_file()
    assert (group / "paired" / ("task-stim_space-MNI152NLin2009cAsym_contrast-dualMinusScs_desc-paired_"
                                "stat-hedgesg_statmap.nii.gz")).is_file()
    # no standardised map of the period slope, only its effect
    period = stem.replace("scs", "periodLinear")
    assert (group / (period.format("effect") + ".nii.gz")).is_file()
    assert not (group / (period.format("dz") + ".nii.gz")).exists()
    assert SHAPE == effect.shape
