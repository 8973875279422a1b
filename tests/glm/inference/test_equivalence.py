"""Voxelwise non-inferiority / TOST maps: one-sided sign-flip tests of maps shifted by the margin.

Small arrays (10 x 10 x 10 voxels, 10 subject difference maps): one half has D = 0, the other
D = 2 x margin; the TOST map declares the first and not the second, with exact (exhaustive)
p values that obey their logic. Statistics and p values are recomputed here independently
(scipy's one-sample t, least squares, all 2^10 sign flips by brute force).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fmri_pain.config.equivalence import EquivalenceSpec, EquivalenceTest
from fmri_pain.config.inference import InferenceSpec
from fmri_pain.glm.inference.equivalence import (margin_permutation_test, run_equivalence_maps,
                                                 shift_direction)
from fmri_pain.glm.second_level.models import paired_design
from fmri_pain.glm.second_level.outputs import GroupMap, GroupResult

N, SHAPE, MARGIN = 10, (10, 10, 10), 0.5


def _differences(rng, sd: float = 0.1) -> np.ndarray:
    """(N, 1000) difference maps: D = 0 in the first 500 voxels, 2 x margin in the others."""
    truth = np.r_[np.zeros(500), np.full(500, 2 * MARGIN)]
    return truth + rng.normal(0, sd, (N, truth.size))


def _brute_force_p(y: np.ndarray) -> np.ndarray:
    """Uncorrected one-sided sign-flip p of the one-sample t, over all 2^n flips."""
    n = y.shape[0]
    flips = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)  # row 0: identity
    mean = flips @ y / n  # the sum of squares does not change under sign flips
    t = mean / np.sqrt(((y ** 2).sum(axis=0) - n * mean ** 2) / (n - 1) / n)
    return np.mean(t >= t[0] - 1e-9 * np.abs(t[0]), axis=0)


def test_tost_declares_the_equivalent_region_and_not_the_other():
    Y = _differences(np.random.default_rng(0))
    ones = np.ones((N, 1))
    res = margin_permutation_test(Y, ones, np.array([1.0]), "equivalence", MARGIN, n_perm=5000,
                                  mask=np.ones(SHAPE, bool), random_state=0)
    assert all(t.exhaustive and t.n_distinct == 2 ** N for t in res.tests)
    low, high = res.tests
    assert low.stat == pytest.approx(stats.ttest_1samp(Y + MARGIN, 0).statistic)
    assert high.stat == pytest.approx(stats.ttest_1samp(MARGIN - Y, 0).statistic)
    assert res.p_uncorrected == pytest.approx(np.maximum(low.p_uncorrected, high.p_uncorrected))
    declared = res.p_fwe < 0.05
    assert declared[:500].mean() > 0.95 and not declared[500:].any()
    assert np.all(res.p_fwe >= 1 / 2 ** N) and np.all(res.p_fwe >= res.p_uncorrected)
    assert res.min_p == pytest.approx(1 / 2 ** N)
    assert res.estimate == pytest.approx(Y.mean(axis=0))
    # exact p values: the brute-force enumeration of every sign flip, on a few voxels
    voxels = [0, 1, 2, 600, 601]
    sub = Y[:, voxels] * 10  # values spread so that the brute force sees the same ties
    sub_res = margin_permutation_test(sub, ones, np.array([1.0]), "equivalence", 10 * MARGIN,
                                      n_perm=5000, random_state=0)
    assert sub_res.tests[0].p_uncorrected == pytest.approx(_brute_force_p(sub + 10 * MARGIN))
    assert sub_res.tests[1].p_uncorrected == pytest.approx(_brute_force_p(10 * MARGIN - sub))


@pytest.mark.parametrize("n", [8, 20])
def test_margin_tests_at_the_margin_reject_at_alpha(n):
    """Null at D = -margin: 500 single-voxel sets (n = 8: all 256 flips; n = 20: 999 random),
    non-inferiority rejections (uncorrected p <= 0.05) inside the binomial 95 % interval of 5 %
    (16, 35); TOST at D = +margin rejects at most that often."""
    rng = np.random.default_rng(n)
    low, high = stats.binom.interval(0.95, 500, 0.05)
    Y = -MARGIN + rng.normal(0, 1.0, (n, 500))
    res = margin_permutation_test(Y, np.ones((n, 1)), np.array([1.0]), "non-inferiority", MARGIN,
                                  n_perm=999, random_state=0)
    assert low <= np.sum(res.p_uncorrected <= 0.05) <= high
    res = margin_permutation_test(MARGIN + rng.normal(0, 1.0, (n, 500)), np.ones((n, 1)),
                                  np.array([1.0]), "equivalence", MARGIN, n_perm=999, random_state=0)
    assert np.sum(res.p_uncorrected <= 0.05) <= high


def test_the_shift_moves_the_intercept_only_with_a_nuisance_column():
    rng = np.random.default_rng(2)
    period = rng.choice([-2.0, -1.0, 1.0, 2.0], N)
    x = np.column_stack([np.ones(N), period])
    Y = 0.3 + 0.2 * period[:, None] + rng.normal(0, 0.3, (N, 50))
    np.testing.assert_allclose(shift_direction(x, np.array([1.0, 0.0])), 1.0)
    res = margin_permutation_test(Y, x, np.array([1.0, 0.0]), "superiority", 0.1, n_perm=200,
                                  random_state=0)
    beta, rss = np.linalg.lstsq(x, Y, rcond=None)[:2]
    se = np.sqrt(rss / (N - 2) * np.linalg.inv(x.T @ x)[0, 0])
    np.testing.assert_allclose(res.tests[0].stat, (beta[0] - 0.1) / se, rtol=1e-8)
    np.testing.assert_allclose(res.estimate, beta[0], rtol=1e-10)


def test_maps_written_from_the_paired_route(tmp_path):
    rng = np.random.default_rng(3)
    Y = _differences(rng)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mask_path = tmp_path / "group" / "task-stim_desc-group_mask.nii.gz"
    mask_path.parent.mkdir(parents=True)
    nib.Nifti1Image(np.ones(SHAPE, np.uint8), affine).to_filename(mask_path)
    images = []
    for i in range(N):
        path = tmp_path / f"sub-{i:02d}_contrast-drgsMinusScs_stat-effect_statmap.nii.gz"
        nib.Nifti1Image(Y[i].reshape(SHAPE).astype(np.float32), affine).to_filename(path)
        images.append(path)
    rows = pd.DataFrame({"subject": [f"{i:02d}" for i in range(N)], "effect": images,
                         "period_difference": np.nan})
    design = paired_design(rows)
    entry = GroupMap("drgsMinusScs", "intercept", "paired", "t", {}, design, images, [False] * N,
                     subjects=list(rows["subject"]))
    group = GroupResult(tmp_path, "stim", [entry], list(rows["subject"]), [], mask_path, {}, rows)
    section = EquivalenceSpec(tests=(EquivalenceTest("drgsMinusScs", "equivalence", MARGIN),
                                     EquivalenceTest("dualMinusScs", "non-inferiority", MARGIN)))
    out = run_equivalence_maps(group, section, InferenceSpec(n_perm=2000))
    assert out[1].result is None and "no paired or one-sample group map" in out[1].note
    paths = out[0].paths
    assert paths["logp_fwe"].name == "task-stim_contrast-drgsMinusScs_desc-tost_stat-logp_statmap.nii.gz"
    assert paths["logp_uncorrected"].name.endswith("desc-tostUncorrected_stat-logp_statmap.nii.gz")
    logp = np.asarray(nib.load(paths["logp_fwe"]).dataobj).ravel()
    np.testing.assert_allclose(logp, -np.log10(out[0].result.p_fwe), rtol=1e-6)
    sidecar = json.loads(paths["logp_fwe"].with_name(paths["logp_fwe"].name.replace(
        ".nii.gz", ".json")).read_text(), parse_constant=pytest.fail)
    assert sidecar["Margin"] == MARGIN and sidecar["Kind"] == "equivalence"
    assert sidecar["NumberOfDistinctRearrangements"] == 2 ** N and sidecar["Exhaustive"] is True
    assert sidecar["MinimumAttainableP"] == pytest.approx(1 / 2 ** N)
    assert sidecar["Parameters"]["equivalence"]["unit"] == "psc"
    assert sidecar["NumberOfVoxelsDeclared"] == int(np.sum(out[0].result.p_fwe < 0.05)) > 450
