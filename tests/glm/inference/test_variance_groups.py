"""The G statistic (Winkler et al. 2014) and its permutation test with variance groups."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fmri_pain.glm.inference.permutation import permutation_test
from fmri_pain.glm.inference.variance_groups import (_model_basis, check_groups, g_statistic,
                                                     g_to_z, permutation_test_g)


def _g(Y, design, contrast, groups):
    basis, s = _model_basis(np.asarray(design, float), np.asarray(contrast, float))
    return g_statistic(Y, basis, s, np.asarray(groups))


@pytest.mark.parametrize("n1, n2, sd2", [(8, 8, 3.0), (5, 11, 0.5), (10, 10, 1.0)])
def test_g_is_welch_t_with_its_df_when_the_groups_are_the_variance_groups(n1, n2, sd2):
    rng = np.random.default_rng(n1 + n2)
    group = np.r_[np.zeros(n1), np.ones(n2)]
    Y = rng.normal(size=(n1 + n2, 40)) * np.where(group[:, None] == 1, sd2, 1.0) + 0.3
    g, nu = _g(Y, np.c_[1 - group, group], [1.0, -1.0], group)
    welch = stats.ttest_ind(Y[:n1], Y[n1:], equal_var=False)
    np.testing.assert_allclose(g, welch.statistic, rtol=1e-10)
    np.testing.assert_allclose(nu, welch.df, rtol=1e-10)
    # the z map carries Welch's two-sided p
    np.testing.assert_allclose(2 * stats.norm.sf(np.abs(g_to_z(g, nu, 1))), welch.pvalue, rtol=1e-6)
    # the same model parametrised as intercept + group difference gives the same G
    g2, _ = _g(Y, np.c_[np.ones(n1 + n2), group], [0.0, -1.0], group)
    np.testing.assert_allclose(g2, g, rtol=1e-10)


def test_g_with_one_variance_group_is_ordinary_t_and_f():
    rng = np.random.default_rng(3)
    n = 18
    x = np.c_[np.ones(n), rng.normal(size=n), rng.normal(size=n)]
    Y = rng.normal(size=(n, 30))
    one = np.zeros(n)
    beta, rss = np.linalg.lstsq(x, Y, rcond=None)[:2]
    sigma2 = rss / (n - 3)
    xtx = np.linalg.inv(x.T @ x)
    g, nu = _g(Y, x, [0.0, 1.0, 0.0], one)
    np.testing.assert_allclose(g, beta[1] / np.sqrt(sigma2 * xtx[1, 1]), rtol=1e-10)
    np.testing.assert_allclose(nu, n - 3)
    c = np.array([[0.0, 1, 0], [0, 0, 1]])
    f, nu_f = _g(Y, x, c, one)
    cb = c @ beta
    f_ref = np.einsum("iv,ij,jv->v", cb, np.linalg.inv(c @ xtx @ c.T), cb) / (2 * sigma2)
    np.testing.assert_allclose(f, f_ref, rtol=1e-10)
    np.testing.assert_allclose(nu_f, n - 3)


def test_g_of_a_rank_two_contrast_follows_the_paper_formula():
    """Winkler et al. 2014 eqs. 5-7 written out per voxel with explicit matrices."""
    rng = np.random.default_rng(5)
    n = 24
    groups = np.repeat([0, 1, 2], 8)
    x = np.c_[np.ones(n), rng.normal(size=n), rng.normal(size=n), groups == 1, groups == 2]
    Y = rng.normal(size=(n, 12)) * np.array([1.0, 2.0, 0.5])[groups][:, None]
    c = np.array([[0.0, 1, 0, 0, 0], [0, 0, 1, 0, 0]])
    g, nu = _g(Y, x, c, groups)
    s = 2
    resid_former = np.eye(n) - x @ np.linalg.pinv(x)
    for v in range(Y.shape[1]):
        psi = np.linalg.pinv(x) @ Y[:, v]
        e = resid_former @ Y[:, v]
        w = np.empty(n)
        for k in range(3):
            in_k = groups == k
            w[in_k] = np.trace(resid_former[np.ix_(in_k, in_k)]) / np.sum(e[in_k] ** 2)
        cov = c @ np.linalg.inv(x.T @ np.diag(w) @ x) @ c.T
        b = sum((1 - w[groups == k].sum() / w.sum()) ** 2
                / np.trace(resid_former[np.ix_(groups == k, groups == k)]) for k in range(3))
        lam = 1 + 2 * (s - 1) / (s * (s + 2)) * b
        assert g[v] == pytest.approx((c @ psi) @ np.linalg.solve(cov, c @ psi) / (lam * s), rel=1e-9)
        assert nu[v] == pytest.approx(2 * (s - 1) / (3 * (lam - 1)), rel=1e-9)


@pytest.mark.parametrize("s", [1, 2])
def test_two_group_shortcut_equals_the_general_solve(s):
    rng = np.random.default_rng(11)
    n = 20
    groups = np.repeat(["a", "b"], [8, 12])
    x = np.c_[np.ones(n), rng.normal(size=(n, 3)), groups == "b"]
    Y = rng.normal(size=(3, n, 25)) * np.where(groups == "a", 1.0, 2.5)[None, :, None]
    c = np.eye(5)[1:1 + s]
    basis, rank = _model_basis(x, c)
    fast = g_statistic(Y, basis, rank, groups)
    slow = g_statistic(Y, basis, rank, groups, _general=True)
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-9)
    np.testing.assert_allclose(fast[1], slow[1], rtol=1e-12)


def test_one_variance_group_gives_the_main_engine_results():
    rng = np.random.default_rng(8)
    n = 14
    cov = rng.normal(size=n)
    x = np.c_[np.ones(n), cov - cov.mean()]
    Y = rng.normal(size=(n, 60)) + 0.4
    for contrast, scheme in (([1.0, 0.0], "signflip"), ([0.0, 1.0], "permute")):
        a = permutation_test(Y, x, contrast, n_perm=199, random_state=2, two_sided=True)
        b = permutation_test(Y, x, contrast, n_perm=199, random_state=2, two_sided=True,
                             variance_groups=np.zeros(n))
        assert a.scheme == scheme and b.variance_groups["Statistic"].startswith("G")
        np.testing.assert_allclose(b.stat, a.stat, rtol=1e-10)
        np.testing.assert_array_equal(b.p_uncorrected, a.p_uncorrected)
        np.testing.assert_array_equal(b.p_fwe, a.p_fwe)


def test_rearrangements_keep_the_variance_groups():
    n = 12
    groups = np.repeat(["a", "b"], 6)
    x = np.c_[np.ones(n), np.arange(n) % 6 - 2.5, groups == "b"]
    Y = np.random.default_rng(0).normal(size=(n, 5))
    r = permutation_test_g(Y, x, [0.0, 1.0, 0.0], groups, n_perm=50, random_state=0)
    assert r.scheme == "within" and any("within variance groups" in w for w in r.warnings)
    with pytest.raises(ValueError, match="span several variance groups"):
        permutation_test_g(Y, x, [0.0, 1.0, 0.0], groups, n_perm=50, scheme="within",
                           blocks=np.zeros(n))
    # a site of one subject: its indicator fits it exactly, its variance is unknown
    lone = np.r_[["a"] * 11, ["b"]]
    with pytest.raises(ValueError, match="no residual degrees of freedom"):
        check_groups(np.c_[np.ones(n), lone == "b"], lone)
    with pytest.raises(ValueError, match="cannot be combined"):
        permutation_test(Y, x, [1.0, 0.0, 0.0], variance_groups=groups,
                         permutations=(np.tile(np.arange(n), (3, 1)), np.ones((3, n))))
    # clusters are not computed with variance groups, and the result says so
    r = permutation_test(Y, x, [1.0, 0.0, 0.0], n_perm=20, random_state=0, cluster_threshold=0.01,
                         mask=np.ones((5, 1, 1), bool), variance_groups=groups)
    assert r.cluster_size is None and r.parameters["cluster_threshold"] is None
    assert any("cluster-extent and cluster-mass inference are not computed" in w
               for w in r.warnings)
    # tail acceleration fits the max-G null like any other (FWE p >= uncorrected p kept)
    Y[:, 0] += np.where(groups == "a", 3.0, 1.0)
    r = permutation_test(Y, x, [1.0, 0.0, 0.0], n_perm=200, random_state=0, two_sided=True,
                         accel="tail", variance_groups=groups)
    assert r.accel == "tail" and "stat" in r.tail_fits and r.parameters["accel"] == "tail"
    assert np.all(r.p_fwe >= r.p_uncorrected - 1e-15)


def _null_fwer(n_sims, make, contrast, groups, rng, n_vox=200, n_perm=99):
    """Datasets (of 500) whose smallest max-G FWE p is at or below 0.05."""
    hits = 0
    for _ in range(n_sims):
        x, Y = make(rng, n_vox)
        r = permutation_test_g(Y, x, contrast, groups, n_perm=n_perm, two_sided=True,
                               random_state=rng)
        assert np.all(r.p_fwe >= r.p_uncorrected) and r.p_uncorrected.min() >= 1 / (n_perm + 1)
        hits += bool(r.p_fwe.min() <= 0.05)
    return hits


SITES = np.repeat(["A", "B"], 8)
SD = np.where(SITES == "A", 1.0, 3.0)


def _one_sample_two_sites(rng, n_vox):
    site = (SITES == "B").astype(float)
    x = np.c_[np.ones(16), site - site.mean()]
    # null: mean 0 over subjects, site offsets -1 / +1 (modelled), noise SD 1 (A) and 3 (B)
    Y = rng.normal(size=(16, n_vox)) * SD[:, None] + 2.0 * (site - site.mean())[:, None]
    return x, Y


def _slope_two_sites(rng, n_vox):
    site = (SITES == "B").astype(float)
    age = rng.normal(size=16) + 1.5 * site  # the covariate differs between sites
    x = np.c_[np.ones(16), site - site.mean(), age - age.mean()]
    return x, rng.normal(size=(16, n_vox)) * SD[:, None] + 2.0 * site[:, None]


@pytest.mark.parametrize("make, contrast", [(_one_sample_two_sites, [1.0, 0.0]),
                                            (_slope_two_sites, [0.0, 0.0, 1.0])],
                         ids=["one-sample-signflip", "covariate-within-site"])
def test_two_site_null_keeps_the_familywise_error_rate(make, contrast):
    """Sites of 8 + 8 subjects with noise SD 1 and 3: max-G FWER at 5 % (500 datasets)."""
    lo, hi = stats.binom.interval(0.95, 500, 0.05)  # (16, 35)
    hits = _null_fwer(500, make, contrast, SITES, np.random.default_rng(2014))
    assert lo <= hits <= hi, hits


def test_tfce_of_z_g_equals_a_brute_force_loop_over_every_sign_flip():
    from fmri_pain.glm.inference import tfce as tfce_kernels
    from fmri_pain.glm.inference.rearrangements import enumerate_rearrangements

    rng = np.random.default_rng(21)
    mask = np.ones((4, 3, 2), bool)
    groups = np.repeat(["a", "b"], 4)
    site = (groups == "b").astype(float)
    x = np.c_[np.ones(8), site - site.mean()]
    Y = rng.normal(size=(8, mask.sum())) * np.where(groups == "a", 1.0, 3.0)[:, None] + 0.8
    r = permutation_test(Y, x, [1.0, 0.0], n_perm=1000, two_sided=True, tfce=True, mask=mask,
                         variance_groups=groups)
    assert r.exhaustive and r.n_perm == 255 and r.parameters["tfce_on"] == "z(G)"
    basis, s = _model_basis(x, np.array([1.0, 0.0]))
    e = Y - basis[:, 1:] @ (basis[:, 1:].T @ Y)
    nbrs = tfce_kernels.neighbour_table(mask, 26)
    index, signs = enumerate_rearrangements(8, "signflip")
    maxima = []
    for idx, sg in zip(index, signs):
        g, nu = g_statistic(sg[:, None] * e[idx], basis, s, groups)
        maxima.append(np.abs(tfce_kernels.tfce_masked(g_to_z(g, nu, 1), nbrs)).max())
    observed = tfce_kernels.tfce_masked(g_to_z(*_g(Y, x, [1.0, 0.0], groups), 1), nbrs)
    np.testing.assert_allclose(r.tfce, observed, rtol=1e-10)
    np.testing.assert_allclose(np.sort(r.tfce_max_null), np.sort(maxima[1:]), rtol=1e-10)
    expected = (1 + np.sum(np.asarray(maxima)[1:, None] >= np.abs(observed)[None] * (1 - 1e-12),
                           axis=0)) / 256
    np.testing.assert_allclose(r.p_tfce_fwe, expected)
    assert r.p_tfce_fwe.min() >= 2 / 256 - 1e-12  # the global flip ties with the data


def test_tfce_of_z_g_keeps_the_familywise_error_rate_under_a_two_site_null():
    """8 + 8 subjects, noise SD 1 and 3, smooth-free 6 x 6 x 4 maps: TFCE-FWER at 5 % (500)."""
    rng = np.random.default_rng(92)
    mask = np.ones((6, 6, 4), bool)
    hits = 0
    for _ in range(500):
        x, Y = _one_sample_two_sites(rng, int(mask.sum()))
        r = permutation_test_g(Y, x, [1.0, 0.0], SITES, n_perm=99, two_sided=True, tfce=True,
                               mask=mask, random_state=rng)
        assert np.all(r.p_tfce_fwe >= r.p_tfce_uncorrected)
        hits += bool(r.p_tfce_fwe.min() <= 0.05)
    lo, hi = stats.binom.interval(0.95, 500, 0.05)
    assert lo <= hits <= hi, hits
