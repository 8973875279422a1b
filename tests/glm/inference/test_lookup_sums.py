"""The table-sum evaluation of rearranged projections equals the direct matrix product."""
from __future__ import annotations

import numpy as np
import pytest

from fmri_pain.glm.inference import lookup_sums as lk
from fmri_pain.glm.inference.rearrangements import draw_rearrangements


def _rearranged(basis, index, signs):
    n_perm, n = index.shape
    u = np.zeros((n_perm, basis.shape[1], n))
    for p in range(n_perm):
        u[p][:, index[p]] = (signs[p][:, None] * basis).T
    return u


@pytest.mark.parametrize("scheme,n_basis", [("signflip", 1), ("within", 1), ("within", 3),
                                            ("permute", 2), ("within+signflip", 2)])
def test_table_sums_equal_the_matrix_product(scheme, n_basis):
    rng = np.random.default_rng(0)
    n, n_vox, n_perm = 18, 300, 400
    blocks = np.repeat(np.arange(n // 3), 3)
    basis = np.linalg.qr(rng.standard_normal((n, n_basis)))[0]
    index, signs = draw_rearrangements(n, n_perm, scheme, blocks=blocks, random_state=1)
    u = _rearranged(basis, index, signs)
    e = rng.standard_normal((n, n_vox))
    plan = lk.plan_lookup(u)
    table = lk.build_tables(plan, e)
    sums = table[plan.ids].sum(axis=1)  # (n_perm, n_basis, n_vox)
    np.testing.assert_allclose(sums, np.einsum("pjn,nv->pjv", u, e), rtol=0, atol=1e-12)
    if scheme in ("signflip", "within"):  # few distinct values per group: real tables
        assert 1 < len(plan.bounds) < n and plan.n_entries < n_perm


def test_plan_falls_back_to_the_plain_product_for_few_rearrangements():
    rng = np.random.default_rng(1)
    n = 30
    index, signs = draw_rearrangements(n, 4, "signflip", random_state=2)
    plan = lk.plan_lookup(_rearranged(np.ones((n, 1)) / np.sqrt(n), index, signs))
    assert plan.bounds == [(0, n)] and plan.n_entries == 4
    e = rng.standard_normal((n, 10))
    np.testing.assert_allclose(lk.build_tables(plan, e)[plan.ids[:, 0], 0],
                               signs / np.sqrt(n) @ e, atol=1e-12)


@pytest.mark.parametrize("two_sided", [False, True])
def test_scan_maxima_counts_and_maps(two_sided):
    rng = np.random.default_rng(3)
    n, n_vox, n_perm, df = 16, 257, 300, 15.0
    index, signs = draw_rearrangements(n, n_perm, "signflip", random_state=4)
    q = np.ones((n, 1)) / np.sqrt(n)
    e = rng.standard_normal((n, n_vox)) + 0.3
    e /= np.linalg.norm(e, axis=0)
    plan = lk.plan_lookup(_rearranged(q, index, signs))
    a = (signs * q[:, 0]) @ e  # direct projections
    score = np.abs(a) if two_sided else a
    thr = score[0] - 0.01  # something between the extremes
    maxes, count = np.full(n_perm, -np.inf), np.zeros(n_vox, dtype=np.int64)
    stat = np.empty((n_perm, n_vox))
    lk.scan_tile(lk.build_tables(plan, e), plan.ids, k=1, normalized=True, ss_e=np.ones(n_vox),
                 df=df, two_sided=two_sided, threshold=thr, maxes=maxes, count=count, stat_out=stat)
    np.testing.assert_allclose(maxes, score.max(axis=1), atol=1e-13)
    np.testing.assert_array_equal(count, (score >= thr).sum(axis=0))
    np.testing.assert_allclose(stat, a * np.sqrt(df / (1 - a ** 2)), rtol=1e-10)
    np.testing.assert_allclose(lk.score_to_stat(maxes, 1, df),
                               (np.abs(stat) if two_sided else stat).max(axis=1), rtol=1e-10)
    # the numpy fallback (used without numba) gives the same
    maxes_np, count_np, stat_np = np.full(n_perm, -np.inf), np.zeros(n_vox, np.int64), stat * 0
    lk._scan_numpy(lk.build_tables(plan, e), plan.ids, 1, True, np.ones(n_vox), df, two_sided, thr,
                   maxes_np, count_np, stat_np, True)
    np.testing.assert_allclose(maxes_np, maxes, atol=1e-13)
    np.testing.assert_array_equal(count_np, count)
    np.testing.assert_allclose(stat_np, stat, rtol=1e-12)
