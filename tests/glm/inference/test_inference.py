"""Tests of the permutation engine, TFCE and the inference image layer."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import linalg, ndimage, stats

from fmri_pain.glm.inference import tfce as tf
from fmri_pain.glm.inference.maps import (
    MAP_ENTITIES,
    permutation_inference,
    permutation_maps,
    stat_to_z,
    write_permutation_maps,
)
from fmri_pain.glm.inference.permutation import permutation_test
from fmri_pain.glm.inference.rearrangements import draw_rearrangements, nilearn_rearrangements
from fmri_pain.glm.inference.result import fwe_threshold
from fmri_pain.glm.inference.tfce import neighbour_table, tfce_scores
from fmri_pain.glm.second_level.thresholds import bonferroni_threshold, fdr_threshold

PAIN21 = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "pain21"


def _smooth_maps(rng, n, shape, fwhm_vox=2.0):
    sigma = fwhm_vox / 2.3548
    maps = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(n)])
    return maps / maps.reshape(n, -1).std(axis=1)[:, None, None, None]


def _crossover(n_sub, rng):
    """Subject + condition + period design of a 3-period crossover."""
    subj = np.repeat(np.arange(n_sub), 3)
    cond = np.tile(np.arange(3), n_sub)
    period = np.concatenate([rng.permutation(3) for _ in range(n_sub)])
    x = np.hstack([np.eye(n_sub)[subj], np.eye(3)[cond][:, 1:], np.eye(3)[period][:, 1:]])
    return x, subj, cond, period


def _explicit_freedman_lane(Y, X, C, index, signs):
    """Freedman-Lane by brute force: rebuild Y*, refit with lstsq, t or F."""
    C = np.atleast_2d(C)
    Z = X @ linalg.null_space(C)
    hz = Z @ np.linalg.pinv(Z)
    e = Y - hz @ Y
    df = X.shape[0] - np.linalg.matrix_rank(X)
    xtx = np.linalg.pinv(X.T @ X)
    out = []
    for idx, s in zip(index, signs):
        ys = s[:, None] * e[idx] + hz @ Y
        b = np.linalg.lstsq(X, ys, rcond=None)[0]
        s2 = ((ys - X @ b) ** 2).sum(0) / df
        cb = C @ b
        v = C @ xtx @ C.T
        if C.shape[0] == 1:
            out.append(cb[0] / np.sqrt(s2 * v[0, 0]))
        else:
            out.append(np.einsum("ij,ik,kj->j", cb, np.linalg.inv(v), cb) / C.shape[0] / s2)
    return np.array(out)


# --------------------------------------------------------------------------- TFCE
@pytest.mark.parametrize("connectivity", [6, 26])
@pytest.mark.parametrize("two_sided", [True, False])
def test_union_find_tfce_equals_threshold_loop(connectivity, two_sided):
    rng = np.random.default_rng(0)
    mask = np.ones((14, 13, 12), bool)
    mask[:2] = False
    mask[6, 6, 6] = False
    vol = _smooth_maps(rng, 1, mask.shape, 4.0)[0]
    vals = vol[mask] * 2
    nbrs = neighbour_table(mask, connectivity)
    for dh in ("auto", 0.1):
        fast = tf.tfce_masked(vals, nbrs, two_sided=two_sided, dh=dh)
        ref = tf.tfce_reference(vals, mask, two_sided=two_sided, dh=dh, connectivity=connectivity)
        np.testing.assert_allclose(fast, ref, rtol=1e-10, atol=1e-9)
    assert np.abs(fast).max() > 100  # smooth map: real clusters, not a trivial zero


def test_tfce_matches_nilearn_and_exact_integral():
    from nilearn.mass_univariate._utils import calculate_tfce

    rng = np.random.default_rng(1)
    mask = np.ones((12, 12, 12), bool)
    vol = _smooth_maps(rng, 1, mask.shape, 4.0)[0] * 2
    ours = tfce_scores(vol, mask, connectivity=6)
    theirs = calculate_tfce(vol[..., None], ndimage.generate_binary_structure(3, 1))[..., 0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-9)
    # dh=None integrates exactly: a fine discrete sum times dh converges to it
    exact = tfce_scores(vol, mask, dh=None)
    h = np.abs(vol).max() / 1000
    fine = tf.tfce_reference(vol[mask], mask, dh=h) * h
    np.testing.assert_allclose(exact[mask], fine, rtol=0, atol=2e-3 * np.abs(exact).max())
    # one isolated voxel of height t: exact TFCE = t^3 / 3 (extent 1)
    single = np.zeros((5, 5, 5))
    single[2, 2, 2] = 3.0
    assert tfce_scores(single, np.ones_like(single, bool), dh=None)[2, 2, 2] == pytest.approx(9.0)


def test_cluster_measures_match_scipy_label():
    rng = np.random.default_rng(2)
    mask = np.ones((15, 15, 15), bool)
    vol = _smooth_maps(rng, 1, mask.shape, 3.0)[0]
    nbrs = neighbour_table(mask, 26)
    size, mass = tf.cluster_measures(vol[mask], 1.0, nbrs, two_sided=False)
    labels, n_lab = ndimage.label(vol > 1.0, ndimage.generate_binary_structure(3, 3))
    assert n_lab > 1
    sizes = np.bincount(labels.ravel())
    masses = np.bincount(labels.ravel(), weights=np.where(labels > 0, vol - 1.0, 0).ravel())
    lab = labels[mask]
    np.testing.assert_array_equal(size[lab > 0], sizes[lab[lab > 0]])
    np.testing.assert_allclose(mass[lab > 0], masses[lab[lab > 0]])
    assert np.all(size[lab == 0] == 0)


# --------------------------------------------------------------------------- engine
@pytest.mark.parametrize("scheme", ["within", "within+signflip", "block-signflip", "signflip", "permute"])
def test_engine_equals_explicit_freedman_lane(scheme):
    rng = np.random.default_rng(3)
    x, subj, _, _ = _crossover(7, rng)
    Y = rng.standard_normal((x.shape[0], 40)) + subj[:, None] * 0.7
    c = np.zeros(x.shape[1])
    c[7 + 1] = 1.0  # DUAL - SCS
    r = permutation_test(Y, x, c, n_perm=25, scheme=scheme, blocks=subj, random_state=5,
                         two_sided=True)
    index, signs = draw_rearrangements(x.shape[0], 25, scheme, blocks=subj, random_state=5)
    ref = _explicit_freedman_lane(Y, x, c, index, signs)
    np.testing.assert_allclose(r.max_null, np.abs(ref).max(axis=1), rtol=1e-10)
    np.testing.assert_allclose(r.p_uncorrected,
                               (1 + (np.abs(ref) >= np.abs(r.stat) - 1e-12).sum(0)) / 26)
    # F contrast (condition effect, 2 rows)
    C = np.zeros((2, x.shape[1]))
    C[0, 7], C[1, 8] = 1.0, 1.0
    rf = permutation_test(Y, x, C, n_perm=25, scheme=scheme, blocks=subj, random_state=5)
    ref_f = _explicit_freedman_lane(Y, x, C, index, signs)
    np.testing.assert_allclose(rf.max_null, ref_f.max(axis=1), rtol=1e-10)
    assert rf.stat_type == "F" and rf.df == (2.0, x.shape[0] - np.linalg.matrix_rank(x))


def test_observed_statistics_match_statsmodels():
    import statsmodels.api as sm

    rng = np.random.default_rng(4)
    x, subj, _, _ = _crossover(6, rng)
    Y = rng.standard_normal((x.shape[0], 3))
    c = np.zeros(x.shape[1])
    c[6 + 1] = 1.0
    C = np.zeros((2, x.shape[1]))
    C[0, 6], C[1, 7] = 1.0, 1.0
    r = permutation_test(Y, x, c, n_perm=3, blocks=subj)
    rf = permutation_test(Y, x, C, n_perm=3, blocks=subj)
    assert r.scheme == "within"
    for v in range(3):
        fit = sm.OLS(Y[:, v], x).fit()
        assert r.stat[v] == pytest.approx(float(fit.t_test(c).tvalue.item()), rel=1e-9)
        assert rf.stat[v] == pytest.approx(float(fit.f_test(C).fvalue), rel=1e-9)


def test_auto_scheme_and_reproducibility():
    rng = np.random.default_rng(5)
    n = 12
    Y = rng.standard_normal((n, 200))
    one = np.ones((n, 1))
    r1 = permutation_test(Y, one, [1.0], n_perm=60, random_state=0)
    r2 = permutation_test(Y, one, [1.0], n_perm=60, random_state=0, n_jobs=2, chunk_size=7)
    assert r1.scheme == "signflip"
    # other chunks group the table sums differently: equal up to rounding
    np.testing.assert_allclose(r1.max_null, r2.max_null, rtol=1e-12)
    np.testing.assert_array_equal(r1.max_null, permutation_test(Y, one, [1.0], n_perm=60,
                                                                random_state=0).max_null)
    np.testing.assert_array_equal(r1.p_uncorrected, r2.p_uncorrected)
    x = np.column_stack([one, rng.standard_normal(n)])
    assert permutation_test(Y, x, [0, 1.0], n_perm=5).scheme == "permute"
    blocks = np.repeat(np.arange(4), 3)
    between = np.column_stack([one, np.repeat(rng.standard_normal(4), 3)])
    assert permutation_test(Y, between, [0, 1.0], n_perm=5, blocks=blocks).scheme == "block-signflip"
    # within-block shuffles never move a row to another block
    index, _ = draw_rearrangements(n, 50, "within", blocks=blocks, random_state=1)
    assert np.all(blocks[index] == blocks[None])
    _, signs = draw_rearrangements(n, 50, "block-signflip", blocks=blocks, random_state=1)
    assert np.all(signs.reshape(50, 4, 3).std(axis=2) == 0)


def test_bad_input_errors():
    Y = np.zeros((6, 10))
    with pytest.raises(ValueError, match="design has 5 rows but Y has 6"):
        permutation_test(Y, np.ones((5, 1)), [1.0])
    with pytest.raises(ValueError, match="not estimable"):
        permutation_test(Y, np.ones((6, 2)), [1.0, -0.5])
    with pytest.raises(ValueError, match="blocks"):
        permutation_test(Y, np.ones((6, 1)), [1.0], scheme="within")
    with pytest.raises(ValueError, match="NaN"):
        permutation_test(np.full((6, 10), np.nan), np.ones((6, 1)), [1.0])
    with pytest.raises(ValueError, match="mask"):
        permutation_test(Y, np.ones((6, 1)), [1.0], tfce=True)
    with pytest.raises(ValueError, match="n_perm >= 1"):
        permutation_test(Y + np.arange(6)[:, None], np.ones((6, 1)), [1.0], n_perm=0)
    with pytest.raises(ValueError, match="mask has 8 voxels"):
        permutation_test(Y, np.ones((6, 1)), [1.0], tfce=True, mask=np.ones((2, 2, 2), bool))


# --------------------------------------------------------------------------- nilearn agreement
@pytest.mark.parametrize("case", ["one_sample", "one_sample_2jobs", "intercept_covariates", "covariate"])
def test_same_permutations_same_null_as_nilearn(case):
    from nilearn.mass_univariate import permuted_ols

    rng = np.random.default_rng(6)
    n, n_perm = 16, 300
    Y = rng.standard_normal((n, 500)) + 0.2
    cov = rng.standard_normal((n, 2))
    n_jobs = 2 if case == "one_sample_2jobs" else 1
    if case.startswith("one_sample"):
        kw, x, c, two = {}, np.ones((n, 1)), [1.0], True
        tested = np.ones((n, 1))
    elif case == "intercept_covariates":
        kw, x, c, two = {"confounding_vars": cov}, np.column_stack([np.ones(n), cov]), [1.0, 0, 0], False
        tested = np.ones((n, 1))
    else:
        kw, x, c, two = ({"confounding_vars": cov[:, 1:]}, np.column_stack([np.ones(n), cov]),
                         [0, 1.0, 0], True)
        tested = cov[:, :1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = permuted_ols(tested, Y, n_perm=n_perm, random_state=42, n_jobs=n_jobs,
                           two_sided_test=two, **kw)
    perms = nilearn_rearrangements(n, n_perm, intercept_test=tested.std() == 0, random_state=42,
                                   n_jobs=min(n_jobs, __import__("joblib").cpu_count()))
    ours = permutation_test(Y, x, c, permutations=perms, two_sided=two)
    np.testing.assert_allclose(ours.stat, ref["t"][0], rtol=1e-10)
    np.testing.assert_allclose(ours.max_null, ref["h0_max_t"][0], rtol=1e-10)
    np.testing.assert_allclose(ours.logp("fwe"), ref["logp_max_t"][0], rtol=1e-10)
    for alpha in (0.05, 0.01):
        assert ours.threshold(alpha) == pytest.approx(fwe_threshold(ref["h0_max_t"][0], alpha), rel=1e-10)
    np.testing.assert_allclose(ours.threshold(0.05),
                               np.sort(ref["h0_max_t"][0])[::-1][int(0.05 * (n_perm + 1)) - 1])


def test_tfce_and_cluster_nulls_match_nilearn():
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols

    rng = np.random.default_rng(7)
    shape, n, n_perm = (10, 10, 10), 12, 40
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    maps = _smooth_maps(rng, n, shape, 3.0) + 0.4
    Y = maps[:, mask]
    masker = NiftiMasker(nib.Nifti1Image(mask.astype(np.int8), np.eye(4))).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = permuted_ols(np.ones((n, 1)), Y, n_perm=n_perm, random_state=3, masker=masker,
                           tfce=True, threshold=0.01, two_sided_test=True)
    perms = nilearn_rearrangements(n, n_perm, intercept_test=True, random_state=3)
    ours = permutation_test(Y, np.ones((n, 1)), [1.0], permutations=perms, two_sided=True,
                            mask=mask, tfce=True, connectivity=6, cluster_threshold=0.01)
    np.testing.assert_allclose(ours.tfce, ref["tfce"][0], rtol=1e-9)
    np.testing.assert_allclose(ours.tfce_max_null, ref["h0_max_tfce"][0], rtol=1e-9)
    np.testing.assert_allclose(ours.logp("tfce_fwe"), ref["logp_max_tfce"][0], rtol=1e-9)
    np.testing.assert_allclose(ours.cluster_size_null, ref["h0_max_size"][0])
    np.testing.assert_allclose(ours.cluster_mass_null, ref["h0_max_mass"][0], rtol=1e-9)
    np.testing.assert_allclose(ours.cluster_size, ref["size"][0])
    np.testing.assert_allclose(ours.cluster_mass, ref["mass"][0], rtol=1e-9)
    assert ours.cluster_size.max() > 10


# --------------------------------------------------------------------------- validity and power
def _null_fwer(kind, n_sim, n_perm=100, alpha=0.05, seed=0):
    """Family-wise rejection counts (max-t, TFCE) over null simulations."""
    rng = np.random.default_rng(seed)
    shape = (12, 12, 12)
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    rejections = np.zeros(2, int)
    for sim in range(n_sim):
        if kind == "signflip":
            n = 10
            Y = _smooth_maps(rng, n, shape, 3.0)[:, mask]
            x, c, blocks, two = np.ones((n, 1)), [1.0], None, False
        else:  # crossover: subjects x 3 conditions, subject random effects, period effect
            n_sub = 8
            x, subj, _, period = _crossover(n_sub, rng)
            subject_maps = 2.0 * _smooth_maps(rng, n_sub, shape, 3.0)[subj]
            period_maps = 0.5 * period[:, None, None, None] * _smooth_maps(rng, 1, shape, 3.0)
            Y = (subject_maps + period_maps + _smooth_maps(rng, x.shape[0], shape, 3.0))[:, mask]
            c = np.zeros(x.shape[1])
            c[n_sub + 1] = 1.0
            blocks, two = subj, True
        r = permutation_test(Y, x, c, n_perm=n_perm, blocks=blocks, two_sided=two, mask=mask,
                             tfce=True, random_state=sim)
        assert r.scheme == kind
        rejections += [r.p_fwe.min() <= alpha, r.p_tfce_fwe.min() <= alpha]
    return rejections


@pytest.mark.parametrize("kind", ["signflip", "within"])
def test_familywise_error_rate_under_the_null(kind):
    n_sim = 300
    lo, hi = stats.binom.interval(0.99, n_sim, 0.05)
    max_t, tfce_count = _null_fwer(kind, n_sim, seed=11 if kind == "within" else 10)
    assert lo <= max_t <= hi, f"max-t FWER {max_t}/{n_sim} outside [{lo}, {hi}]"
    assert lo <= tfce_count <= hi, f"TFCE FWER {tfce_count}/{n_sim} outside [{lo}, {hi}]"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["signflip", "within"])
def test_familywise_error_rate_under_the_null_large(kind):
    n_sim = 2000
    lo, hi = stats.binom.interval(0.99, n_sim, 0.05)
    max_t, tfce_count = _null_fwer(kind, n_sim, n_perm=200, seed=20)
    assert lo <= max_t <= hi and lo <= tfce_count <= hi


def test_power_detects_dual_minus_scs_in_insula_and_acc():
    """Crossover maps with a known DUAL > SCS effect in two blobs."""
    rng = np.random.default_rng(8)
    shape, n_sub = (16, 16, 12), 12
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    x, subj, cond, _ = _crossover(n_sub, rng)
    truth = np.zeros(shape, bool)
    truth[3:6, 3:6, 4:7] = True    # "insula"
    truth[10:13, 9:12, 4:7] = True  # "ACC"
    effect = np.where(truth, 1.5, 0.0)
    Y = (1.5 * _smooth_maps(rng, n_sub, shape, 2.0)[subj] + _smooth_maps(rng, x.shape[0], shape, 2.0)
         + (cond == 2)[:, None, None, None] * effect)[:, mask]
    c = np.zeros(x.shape[1])
    c[n_sub + 1] = 1.0
    r = permutation_test(Y, x, c, n_perm=500, blocks=subj, mask=mask, tfce=True,
                         cluster_threshold=0.001, random_state=0)
    assert r.scheme == "within"
    t_mask = truth[mask]
    insula = np.zeros(shape, bool)
    insula[3:6, 3:6, 4:7] = True
    acc = truth & ~insula
    for blob in (insula[mask], acc[mask]):
        assert (r.p_fwe[blob] < 0.05).any()
        assert (r.p_tfce_fwe[blob] < 0.05).mean() > 0.5
        assert (r.cluster_p_mass_fwe[blob] < 0.05).any()
    far = ~ndimage.binary_dilation(truth, iterations=3)[mask]
    assert (r.p_fwe[far] < 0.05).sum() == 0
    assert (r.p_tfce_fwe[far] < 0.05).sum() == 0
    assert r.summary()["n_voxels_tfce_fwe"] >= t_mask.sum() // 2


# --------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def pain21_4mm():
    from nilearn.image import resample_img

    if not (PAIN21 / "mask.nii.gz").exists():
        pytest.skip("pain21 data not available")
    mask_img = nib.load(PAIN21 / "mask.nii.gz")
    target = mask_img.affine.copy()
    target[:3, :3] *= 2  # 2 mm -> 4 mm, same orientation and origin
    shape = tuple(int(np.ceil(s / 2)) for s in mask_img.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask4 = resample_img(mask_img, target, shape, interpolation="nearest",
                             force_resample=True, copy_header=True)
        maps = [resample_img(nib.load(PAIN21 / f"contrast_pain_{i:02d}.nii.gz"), target, shape,
                             interpolation="linear", force_resample=True, copy_header=True)
                for i in range(1, 22)]
    mask = np.asarray(mask4.dataobj) > 0
    Y = np.stack([np.asarray(m.dataobj)[mask] for m in maps])
    keep = np.all(np.isfinite(Y), axis=0) & np.all(Y != 0, axis=0)
    mask[mask] = keep
    mask_img = nib.Nifti1Image(mask.astype(np.int8), target)
    return Y[:, keep], mask, mask_img


def test_pain21_posterior_insula_survives_fwe(pain21_4mm, tmp_path):
    Y, mask, mask_img = pain21_4mm
    r = permutation_test(Y, np.ones((21, 1)), [1.0], n_perm=400, mask=mask, tfce=True,
                         cluster_threshold=0.001, random_state=0)
    assert r.scheme == "signflip"
    ijk = np.argwhere(mask)
    xyz = nib.affines.apply_affine(mask_img.affine, ijk)
    near = np.linalg.norm(xyz - [32, -16, 14], axis=1) <= 8
    assert near.any()
    assert r.p_fwe[near].min() < 0.05
    assert r.p_tfce_fwe[near].min() < 0.05
    assert r.cluster_p_mass_fwe[near].min() < 0.05
    peak = np.argmax(r.stat)
    assert r.stat[peak] > 6
    assert r.p_fwe[peak] == pytest.approx(1 / 401)
    # image layer and contract names
    written = write_permutation_maps(r, mask_img, tmp_path, contrast="pain", task="stim",
                                     sidecar={"inputs": ["pain21"]})
    assert set(written) == set(MAP_ENTITIES)
    name = written["logp_fwe"].name
    assert name == "task-stim_contrast-pain_desc-perm_stat-logp_statmap.nii.gz"  # template unknown: no space-
    assert written["logp_tfce_fwe"].name.endswith("desc-tfce_stat-logp_statmap.nii.gz")
    back = np.asarray(nib.load(written["logp_fwe"]).dataobj)[mask]
    np.testing.assert_allclose(back, -np.log10(r.p_fwe), rtol=1e-6)
    meta = json.loads(written["logp_fwe"].with_name(name.replace(".nii.gz", ".json")).read_text())
    assert meta["Parameters"]["n_perm"] == 400 and meta["PermutationSummary"]["NumberOfVoxelsFWE"] > 0
    zf = np.asarray(permutation_maps(r, mask_img)["z_fwe"].dataobj)[mask]
    assert np.all((zf != 0) == (r.p_fwe < 0.05))
    assert written["p_fwe"].name == "task-stim_contrast-pain_desc-perm_stat-p_statmap.nii.gz"
    p_back = np.asarray(nib.load(written["p_fwe"]).dataobj)
    np.testing.assert_allclose(p_back[mask], r.p_fwe, rtol=1e-5)
    assert np.all(p_back[~mask] == 1.0)


def test_every_logp_map_has_its_p_map(tmp_path):
    rng = np.random.default_rng(3)
    mask = np.zeros((6, 6, 3), bool)
    mask[1:5, 1:5, :] = True
    mask_img = nib.Nifti1Image(mask.astype(np.int8), np.eye(4))
    Y = rng.normal(size=(10, int(mask.sum())))
    Y[:, :6] += 1.5  # a few real effects, so p values differ from 1
    r = permutation_test(Y, np.ones((10, 1)), [1.0], n_perm=99, mask=mask, tfce=True,
                         cluster_threshold=0.01, random_state=0)
    written = write_permutation_maps(r, mask_img, tmp_path, contrast="pain", task="stim")
    logp_keys = [k for k, (_, stat) in MAP_ENTITIES.items() if stat == "logp"]
    assert len(logp_keys) == 5
    for key in logp_keys:
        logp = np.asarray(nib.load(written[key]).dataobj)
        p_path = written[key.replace("logp", "p", 1)]
        assert p_path.name == written[key].name.replace("_stat-logp_", "_stat-p_")
        p_map = np.asarray(nib.load(p_path).dataobj)
        np.testing.assert_allclose(p_map[mask], 10.0 ** -logp[mask], rtol=1e-6)
        assert np.all(p_map[~mask] == 1.0) and p_map[mask].min() < 0.2
    np.testing.assert_allclose(np.asarray(nib.load(written["p_fwe"]).dataobj)[mask], r.p_fwe, rtol=1e-5)


# --------------------------------------------------------------------------- parametric helpers
def test_stat_to_z_keeps_both_tails():
    t = np.array([-40.0, -5.0, -1e-3, 0.0, 2.0, 40.0])
    z = stat_to_z(t, "t", (1.0, 20.0))
    np.testing.assert_allclose(z[t > 0], stats.norm.isf(stats.t.sf(t[t > 0], 20)), rtol=1e-12)
    np.testing.assert_allclose(z[t < 0], stats.norm.ppf(stats.t.cdf(t[t < 0], 20)), rtol=1e-9)
    assert z[3] == 0.0 and z[0] < -9  # no saturation at -inf in the far tail
    f = np.array([0.5, 3.0, 30.0])
    np.testing.assert_allclose(stat_to_z(f, "F", (2.0, 20.0)),
                               stats.norm.isf(stats.f.sf(f, 2, 20)), rtol=1e-12)


def test_permutation_inference_from_files_equals_arrays(tmp_path):
    rng = np.random.default_rng(11)
    mask = np.zeros((8, 9, 7), bool)
    mask[1:7, 2:8, 1:6] = True
    maps = _smooth_maps(rng, 10, mask.shape) + 0.4
    paths = []
    for i, vol in enumerate(maps):
        paths.append(tmp_path / f"map{i}.nii.gz")
        nib.save(nib.Nifti1Image(vol.astype(np.float32), np.eye(4)), paths[-1])
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))
    design = np.ones((10, 1))
    res, images = permutation_inference(paths, design, [1.0], mask_img, n_perm=99, random_state=0,
                                        tfce=True)
    ref = permutation_test(maps[:, mask].astype(np.float32).astype(float), design, [1.0],
                           n_perm=99, random_state=0, mask=mask, tfce=True)
    np.testing.assert_allclose(res.max_null, ref.max_null, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(images["logp_fwe"].dataobj)[mask], ref.logp("fwe"),
                               rtol=1e-6)
    bad = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(maps[0].astype(np.float32), np.diag([2.0, 2, 2, 1])), bad)
    with pytest.raises(ValueError, match=r"shifted.nii.gz \(affine \[\[2.0, 0.0, 0.0, 0.0\].*"
                                         r"not on the mask's grid \(affine \[\[1.0, 0.0"):
        permutation_inference(paths[:9] + [bad], design, [1.0], mask_img, n_perm=9)


def test_fdr_and_bonferroni_match_nilearn():
    from nilearn.glm import fdr_threshold as nl_fdr

    rng = np.random.default_rng(9)
    z = np.concatenate([rng.standard_normal(5000), rng.normal(4, 1, 300), -rng.normal(4, 1, 200)])
    for q in (0.05, 0.1):
        assert fdr_threshold(z, q) == pytest.approx(nl_fdr(np.abs(z), q / 2), abs=1e-9)
        assert fdr_threshold(z, q, two_sided=False) == pytest.approx(nl_fdr(z, q), abs=1e-9)
    assert fdr_threshold(rng.standard_normal(1000) * 0.1, 0.05) == np.inf
    assert bonferroni_threshold(1000, 0.05) == pytest.approx(stats.norm.isf(0.05 / 2000))
    assert bonferroni_threshold(1000, 0.05, two_sided=False) == pytest.approx(stats.norm.isf(5e-5))


# --------------------------------------------------------------------------- exhaustive enumeration
def _one_sample_t(Y):
    n = Y.shape[0]
    return Y.mean(0) / (Y.std(0, ddof=1) / np.sqrt(n))


def test_count_and_enumerate_rearrangements():
    from fmri_pain.glm.inference.rearrangements import count_rearrangements, enumerate_rearrangements

    blocks = np.repeat(np.arange(3), 3)
    treated = np.tile([0.0, 1.0, 1.0], 3)  # two tied rows in every block
    x = np.column_stack([np.eye(3)[blocks], treated])
    cases = {("signflip", None): 2 ** 9, ("block-signflip", None): 2 ** 3,
             ("within", None): 6 ** 3, ("within", "ties"): 3 ** 3,
             ("within+signflip", "ties"): 3 ** 3 * 2 ** 3,
             ("permute", "ties"): math.factorial(9) // 2 ** 3, ("permute", None): math.factorial(9)}
    for (scheme, ties), expected in cases.items():
        design = x if ties else None
        assert count_rearrangements(9, scheme, blocks=blocks, design=design) == expected
        if expected > 5000:
            continue
        index, signs = enumerate_rearrangements(9, scheme, blocks=blocks, design=design)
        assert index.shape == signs.shape == (expected, 9)
        np.testing.assert_array_equal(index[0], np.arange(9))  # the identity first
        np.testing.assert_array_equal(signs[0], np.ones(9))
        # each distinct once: the design rows and signs each position receives differ
        labels = np.unique(design, axis=0, return_inverse=True)[1].ravel() if ties else np.arange(9)
        received = np.empty((expected, 9))
        rows = np.arange(expected)[:, None]
        received[rows, index] = signs * (labels[None] + 1)
        assert np.unique(received, axis=0).shape[0] == expected
        if scheme.startswith("within"):
            assert np.all(blocks[index] == blocks[None])


def test_exhaustive_sign_flips_equal_an_independent_enumeration():
    import itertools

    rng = np.random.default_rng(12)
    n = 6
    mask = np.zeros((5, 5, 4), bool)
    mask[1:4, 1:4, :] = True
    Y = _smooth_maps(rng, n, mask.shape, 2.0)[:, mask] + 0.6
    r = permutation_test(Y, np.ones((n, 1)), [1.0], n_perm=1000, two_sided=True, mask=mask,
                         tfce=True, cluster_threshold=0.05)
    assert r.exhaustive and r.n_distinct == 64 and r.n_rearrangements == 64 and r.n_perm == 63
    assert r.min_p == pytest.approx(2 / 64)  # the identity and the global flip
    assert "exceeds the 64 distinct rearrangements" in r.warnings[0]
    signs = np.array(list(itertools.product([1.0, -1.0], repeat=n)))
    t_all = np.abs(np.array([_one_sample_t(s[:, None] * Y) for s in signs]))  # (64, n_vox)
    obs = np.abs(_one_sample_t(Y))
    tol = 1e-9 * obs
    np.testing.assert_allclose(r.stat, _one_sample_t(Y), rtol=1e-10)
    np.testing.assert_allclose(r.p_uncorrected, (t_all >= obs - tol).mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.p_fwe, (t_all.max(1)[:, None] >= obs - tol).mean(0), rtol=0,
                               atol=1e-12)
    nbrs = neighbour_table(mask, 26)
    tfce_all = np.abs(np.array([tf.tfce_masked(_one_sample_t(s[:, None] * Y), nbrs, two_sided=True)
                                for s in signs]))
    tfce_obs = np.abs(tf.tfce_masked(_one_sample_t(Y), nbrs, two_sided=True))
    np.testing.assert_allclose(r.p_tfce_fwe, (tfce_all.max(1)[:, None] >= tfce_obs * (1 - 1e-9))
                               .mean(0), rtol=0, atol=1e-12)
    for p in (r.p_uncorrected, r.p_fwe, r.p_tfce_fwe, r.cluster_p_mass_fwe):
        np.testing.assert_allclose(p * 64, np.round(p * 64), atol=1e-9)
    assert r.p_fwe.min() < 0.05  # the exact test can still reject: 2/64


def test_exhaustive_within_blocks_with_tied_rows_equal_brute_force():
    import itertools

    rng = np.random.default_rng(13)
    n_sub = 4
    blocks = np.repeat(np.arange(n_sub), 3)
    treated = np.tile([0.0, 1.0, 1.0], n_sub)  # rows 2 and 3 of a subject are tied
    x = np.column_stack([np.eye(n_sub)[blocks], treated])
    Y = rng.standard_normal((12, 30)) + blocks[:, None] + 0.8 * treated[:, None]
    c = np.zeros(n_sub + 1)
    c[-1] = 1.0
    r = permutation_test(Y, x, c, n_perm=100, blocks=blocks, two_sided=True)
    assert r.scheme == "within" and r.exhaustive and r.n_distinct == 3 ** n_sub
    # every within-block shuffle (6^4), tied swaps included: each distinct one 2^4 times
    per_block = [np.array(list(itertools.permutations(range(3 * b, 3 * b + 3))))
                 for b in range(n_sub)]
    index = np.array([np.concatenate(choice) for choice in itertools.product(*per_block)])
    ref = np.abs(_explicit_freedman_lane(Y, x, c, index, np.ones(index.shape)))
    obs = np.abs(r.stat)
    np.testing.assert_allclose(r.p_uncorrected, (ref >= obs - 1e-9 * obs).mean(0), atol=1e-12)
    np.testing.assert_allclose(r.p_fwe, (ref.max(1)[:, None] >= obs - 1e-9 * obs).mean(0),
                               atol=1e-12)
    np.testing.assert_allclose(r.p_fwe * 81, np.round(r.p_fwe * 81), atol=1e-9)
    # fewer permutations asked than exist: random draws, no exhaustive claim
    r_rand = permutation_test(Y, x, c, n_perm=50, blocks=blocks, two_sided=True)
    assert not r_rand.exhaustive and r_rand.n_rearrangements == 51 and not r_rand.warnings


def test_exact_test_holds_its_rate_under_the_null():
    """n = 6 sign flips, exhaustive: FWE p <= 0.05 needs 3 of 64, a 3/64 rate exactly."""
    rng = np.random.default_rng(14)
    n_sim, n = 300, 6
    hits = 0
    for _ in range(n_sim):
        Y = rng.standard_normal((n, 20))
        r = permutation_test(Y, np.ones((n, 1)), [1.0], n_perm=100)
        assert r.exhaustive
        hits += r.p_fwe.min() <= 0.05
    lo, hi = stats.binom.interval(0.95, n_sim, 3 / 64)
    assert lo <= hits <= hi, f"{hits}/{n_sim} outside [{lo}, {hi}]"


def test_uncorrected_tfce_and_cluster_mass_hold_their_rate_under_the_null():
    rng = np.random.default_rng(15)
    mask = np.ones((6, 6, 5), bool)
    centre = np.ravel_multi_index((3, 3, 2), mask.shape)
    n_sim, n = 200, 10
    hits = np.zeros(2, int)
    for sim in range(n_sim):
        Y = _smooth_maps(rng, n, mask.shape, 2.0)[:, mask]
        r = permutation_test(Y, np.ones((n, 1)), [1.0], n_perm=99, mask=mask, tfce=True,
                             cluster_threshold=0.2, random_state=sim)
        hits += [r.p_tfce_uncorrected[centre] <= 0.05, r.cluster_p_mass_uncorrected[centre] <= 0.05]
    lo, hi = stats.binom.interval(0.95, n_sim, 0.05)
    assert lo <= hits[0] <= hi and hits[1] <= hi, f"TFCE {hits[0]}, mass {hits[1]} of {n_sim}"


# --------------------------------------------------------------------------- p-value invariants
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PROP_MASK = np.ones((4, 4, 3), bool)


@st.composite
def _small_designs(draw):
    """Random small designs (2-8 maps): one-sample or within-block, with large and tied t."""
    kind = draw(st.sampled_from(["one-sample", "within", "two-group"]))
    if kind == "one-sample":
        n = draw(st.integers(2, 8))
        x, c, blocks = np.ones((n, 1)), np.array([1.0]), None
    elif kind == "two-group":  # free permutation of tied group rows
        n = draw(st.integers(4, 8))
        group = (np.arange(n) < draw(st.integers(2, n - 2))).astype(float)
        x, c, blocks = np.column_stack([np.ones(n), group]), np.array([0.0, 1.0]), None
    else:
        n_sub, per = draw(st.sampled_from([(2, 2), (3, 2), (4, 2), (2, 3)]))  # within blocks
        n = n_sub * per
        blocks = np.repeat(np.arange(n_sub), per)
        cond = np.tile(np.arange(per), n_sub)
        x = np.column_stack([np.eye(n_sub)[blocks], (cond == per - 1).astype(float)])
        c = np.eye(n_sub + 1)[-1]
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_vox = int(_PROP_MASK.sum())
    scale = draw(st.sampled_from([1e-2, 1.0]))
    offset = draw(st.sampled_from([0.0, 0.5, 30.0, 300.0]))  # up to |t| ~ 1e4-1e5
    Y = offset + scale * rng.standard_normal((n, n_vox))
    if draw(st.booleans()):  # tied values: coarse integers
        Y = np.round(Y * (3 / scale)) * (scale / 3)
    n_dup = draw(st.integers(0, n_vox // 2))  # tied t across voxels: duplicated columns
    if n_dup:
        Y[:, rng.choice(n_vox, n_dup)] = Y[:, [0]]
    if draw(st.booleans()):  # a few voxels constant across maps
        Y[:, -3:] = 7.0
    if np.all(np.isclose(np.ptp(Y - x @ np.linalg.lstsq(x, Y, rcond=None)[0], axis=0), 0)):
        Y[:, 1] += rng.standard_normal(n)
    two_sided = draw(st.booleans())
    n_perm = draw(st.sampled_from([3, 10, 40, 300]))
    return Y, x, c, blocks, two_sided, n_perm, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_small_designs())
def test_p_values_obey_their_own_logic(case):
    from fmri_pain.glm.inference.permutation import ZeroVarianceError

    Y, x, c, blocks, two_sided, n_perm, seed = case
    try:
        r = permutation_test(Y, x, c, n_perm=n_perm, blocks=blocks, two_sided=two_sided,
                             mask=_PROP_MASK, tfce=True, cluster_threshold=0.05,
                             random_state=seed)
    except ZeroVarianceError:
        return
    assert r.exhaustive == (r.n_distinct - 1 <= n_perm)
    denominator = r.n_perm + 1
    assert r.min_p >= 1.0 / r.n_distinct - 1e-15
    pairs = [(r.p_fwe, r.p_uncorrected), (r.p_tfce_fwe, r.p_tfce_uncorrected),
             (r.cluster_p_mass_fwe, r.cluster_p_mass_uncorrected)]
    for fwe, unc in pairs:
        assert np.all(fwe >= unc - 1e-12)  # FWE p >= uncorrected p, in every voxel
        for p in (fwe, unc):
            assert np.all(p >= r.min_p - 1e-12) and np.all(p <= 1.0)
            np.testing.assert_allclose(p * denominator, np.round(p * denominator), atol=1e-6)
    if r.exhaustive and r.scheme == "signflip" and two_sided:  # the global flip ties with the data
        assert r.min_p == pytest.approx(2.0 / r.n_distinct)
    excluded = np.isclose(np.ptp(Y, axis=0), 0)
    assert np.all(r.stat[excluded] == 0) and np.all(r.p_fwe[excluded] == 1)
    assert r.n_excluded >= int(excluded.sum())


# --------------------------------------------------------------------------- resource guard
def test_resource_estimate_and_refusal_before_any_permutation():
    import copy
    import dataclasses
    from types import SimpleNamespace

    import pandas as pd
    import pydantic

    from fmri_pain.glm.inference.group_contrasts import check_permutation_resources
    from fmri_pain.glm.inference.resources import ResourceError, check_resources, estimate_resources
    from fmri_pain.config.fields import SpecError
    from fmri_pain.config.spec import AnalysisSpec

    small = estimate_resources(24, 50000, 1000, tfce=True, clusters=True)
    big = estimate_resources(24, 50000, 10**9, tfce=True, clusters=True)
    # index + signs alone are 16 bytes per map and rearrangement
    assert big.memory_bytes > 16 * 24 * 10**9 and small.memory_bytes < 2 * 2**30
    assert big.seconds > 1000 * small.seconds
    check_resources(small, available_bytes=4 * 2**30)
    with pytest.raises(ResourceError, match="1000000000 rearrangements to evaluate need about"):
        check_resources(big, available_bytes=4 * 2**30)
    with pytest.raises(ResourceError, match="GiB of memory are available"):  # before drawing
        permutation_test(np.random.default_rng(0).standard_normal((40, 5)), np.ones((40, 1)),
                         [1.0], n_perm=10**9)
    # the group level refuses before the first contrast is permuted, naming the spec key
    n_sub = 12
    rows = pd.DataFrame({"subject": np.repeat([f"{i:02d}" for i in range(n_sub)], 3)})
    x = pd.DataFrame(np.column_stack([np.eye(n_sub)[np.repeat(np.arange(n_sub), 3)],
                                      np.tile(np.eye(3)[:, 1:], (n_sub, 1))]))
    entry = SimpleNamespace(contrast="dualMinusScs", key="dualMinusScs", route="repeated",
                            design=SimpleNamespace(design=x, rows=rows, route="repeated",
                                                   contrasts={"dualMinusScs": np.eye(14)[-1]}))
    spec = AnalysisSpec()
    check_permutation_resources([entry], 50000, spec.inference)  # the default spec fits
    with pytest.raises(pydantic.ValidationError):  # a spec cannot hold it: sections validate on construction
        dataclasses.replace(spec.inference, n_perm=10**9)
    huge = copy.copy(spec.inference)  # the guard of the engine, for a caller that bypasses the spec
    object.__setattr__(huge, "n_perm", 10**9)
    with pytest.raises(SpecError, match=r"inference.n_perm = 1000000000: contrast dualMinusScs"):
        check_permutation_resources([entry], 50000, huge)


def test_two_group_swap_ties_with_the_data_at_a_huge_t():
    """3 vs 3 maps: 20 distinct assignments; swapping the groups gives -t exactly (two-sided tie)."""
    rng = np.random.default_rng(16)
    group = np.repeat([1.0, 0.0], 3)
    x = np.column_stack([np.ones(6), group])
    Y = rng.standard_normal((6, 10))
    Y[:, 0] = 50.0 * group + 1e-3 * rng.standard_normal(6)  # |t| ~ 1e4
    r = permutation_test(Y, x, [0.0, 1.0], n_perm=500, two_sided=True)
    assert r.scheme == "permute" and r.exhaustive and r.n_distinct == 20
    assert abs(r.stat[0]) > 1e3 and r.min_p == pytest.approx(2 / 20)
    assert r.p_uncorrected[0] == pytest.approx(2 / 20) and r.p_fwe[0] == pytest.approx(2 / 20)
    r1 = permutation_test(Y, x, [0.0, 1.0], n_perm=500)  # one-sided: only the identity
    assert r1.min_p == pytest.approx(1 / 20) and r1.p_fwe[0] == pytest.approx(1 / 20)


def test_group_permutation_stage_names_its_space_and_records_the_rearrangements(tmp_path):
    import dataclasses

    import pandas as pd

    from fmri_pain.glm.second_level.outputs import GroupMap, GroupResult
    from fmri_pain.glm.inference.group_contrasts import inference_summary, run_permutation_inference
    from fmri_pain.glm.second_level.models import GroupDesign
    from fmri_pain.config.spec import AnalysisSpec

    rng = np.random.default_rng(17)
    shape = (6, 6, 5)
    mask = np.ones(shape, bool)
    mask_path = tmp_path / "task-stim_space-MNI152NLin2009aAsym_desc-group_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), mask_path)
    paths = []
    for i, vol in enumerate(_smooth_maps(rng, 8, shape, 2.0) + 0.5):
        paths.append(tmp_path / f"sub-{i:02d}_map.nii.gz")
        nib.save(nib.Nifti1Image(vol.astype(np.float32), np.eye(4)), paths[-1])
    design = GroupDesign("one-sample", pd.DataFrame({"intercept": np.ones(8)}),
                         {"dual": np.array([1.0])}, pd.DataFrame({"subject": range(8)}))
    entry = GroupMap("dual", "dual", "one-sample", "t", {}, design, paths, [False] * 8)
    # the group stage names its maps by the space of the group mask (that of the subject maps)
    group = GroupResult(tmp_path, "stim", [entry], [f"{i:02d}" for i in range(8)], [],
                        mask_path, {}, pd.DataFrame())
    spec = AnalysisSpec()
    spec = dataclasses.replace(spec, inference=dataclasses.replace(spec.inference, n_perm=1000))
    (out,) = run_permutation_inference(group, spec.inference, alpha=spec.group.fwe_alpha)
    assert out.result.exhaustive and out.result.n_rearrangements == 256
    name = out.paths["logp_fwe"].name
    assert name == "task-stim_space-MNI152NLin2009aAsym_contrast-dual_desc-perm_stat-logp_statmap.nii.gz"
    side = json.loads(out.paths["logp_fwe"].with_name(name.replace(".nii.gz", ".json")).read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert side["NumberOfDistinctRearrangements"] == 256 and side["Exhaustive"] is True
    assert side["MinimumAttainableP"] == pytest.approx(2 / 256)  # two-sided t: the global flip
    row = inference_summary([out], 0.05).iloc[0]
    assert row["permutations"] == 256 and row["exhaustive"] == "yes"
    assert row["smallest attainable p"] == pytest.approx(2 / 256)


def test_rearrangements_to_use_enumerates_without_the_identity_or_draws():
    from fmri_pain.glm.inference.rearrangements import rearrangements_to_use

    index, signs, notes = rearrangements_to_use(5, 100, "signflip", n_distinct=32, exhaustive=True)
    assert signs.shape == (31, 5) and not np.all(signs == 1, axis=1).any()  # identity left out
    assert len({tuple(s) for s in signs}) == 31 and "exact test" in notes[0]
    index, signs, notes = rearrangements_to_use(5, 20, "signflip", n_distinct=32, exhaustive=False,
                                                random_state=0)
    assert signs.shape == (20, 5) and notes == []
