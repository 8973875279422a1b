"""Tests of the permutation engine, TFCE and the inference image layer."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import linalg, ndimage, stats

from fmri_pain.glm import tfce as tf
from fmri_pain.glm.inference import (
    MAP_ENTITIES,
    bonferroni_threshold,
    draw_rearrangements,
    fdr_threshold,
    fwe_threshold,
    neighbour_table,
    nilearn_rearrangements,
    permutation_maps,
    permutation_inference,
    permutation_test,
    stat_to_z,
    tfce_scores,
    write_permutation_maps,
)

PAIN21 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pain21"


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
    assert name == "task-stim_space-MNI152NLin2009aSym_contrast-pain_desc-perm_stat-logp_statmap.nii.gz"
    assert written["logp_tfce_fwe"].name.endswith("desc-tfce_stat-logp_statmap.nii.gz")
    back = np.asarray(nib.load(written["logp_fwe"]).dataobj)[mask]
    np.testing.assert_allclose(back, -np.log10(r.p_fwe), rtol=1e-6)
    meta = json.loads(written["logp_fwe"].with_name(name.replace(".nii.gz", ".json")).read_text())
    assert meta["Parameters"]["n_perm"] == 400 and meta["permutation_summary"]["n_voxels_fwe"] > 0
    zf = np.asarray(permutation_maps(r, mask_img)["z_fwe"].dataobj)[mask]
    assert np.all((zf != 0) == (r.p_fwe < 0.05))


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
    with pytest.raises(ValueError, match="shifted.nii.gz.*not on the mask's grid"):
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
