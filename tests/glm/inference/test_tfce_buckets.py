"""The level-bucket TFCE kernel against the sorted (reference) engine: same maps, same nulls."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmri_pain.glm.inference import tfce as tf
from fmri_pain.glm.inference import tfce_buckets as tb
from fmri_pain.glm.inference.permutation import permutation_test
from fmri_pain.glm.inference.result import fwe_threshold

def test_voxel_grid_has_the_neighbour_table_neighbours():
    rng = np.random.default_rng(0)
    mask = rng.random((7, 6, 5)) > 0.3
    for connectivity in (6, 18, 26):
        grid = tb.voxel_grid(mask, connectivity)
        table = tf.neighbour_table(mask, connectivity)
        box_index = np.full(grid.size, -1)
        box_index[grid.pos] = np.arange(grid.pos.size)
        via_grid = box_index[grid.pos[:, None] + grid.offsets[None]]
        np.testing.assert_array_equal(np.sort(via_grid, 1), np.sort(table, 1))


@st.composite
def _maps(draw):
    shape = tuple(draw(st.integers(2, 7)) for _ in range(3))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) > draw(st.sampled_from([0.0, 0.3, 0.6]))
    if not mask.any():
        mask[0, 0, 0] = True
    values = rng.standard_normal(int(mask.sum())) * draw(st.sampled_from([1e-3, 1.0, 50.0]))
    if draw(st.booleans()):  # tied values, some exactly on a height
        values = np.round(values * 4) / 4
    return mask, values, rng


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_maps(), st.sampled_from([6, 18, 26]), st.booleans(), st.sampled_from(["auto", 0.1, 0.37]),
       st.sampled_from([(2.0, 0.5), (1.0, 1.0)]))
def test_bucket_kernel_equals_sorted_kernel(case, connectivity, two_sided, dh, he):
    mask, values, rng = case
    H, E = he
    nbrs = tf.neighbour_table(mask, connectivity)
    grid = tb.voxel_grid(mask, connectivity)
    ref = tf.tfce_masked(values, nbrs, H=H, E=E, dh=dh, two_sided=two_sided)
    fast = tb.tfce_grid(values, grid, H=H, E=E, dh=dh, two_sided=two_sided)
    np.testing.assert_allclose(fast, ref, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(ref).max()))
    # batch maxima and exceedance counts (thresholds away from the values: no rounding ties)
    stats = np.vstack([values, -values, rng.permutation(values)])
    thr = np.abs(ref) * rng.uniform(0.5, 1.5, ref.size)
    m_ref, c_ref = tf.tfce_max_count(stats, nbrs, thr, H=H, E=E, dh=dh, two_sided=two_sided)
    m_fast, c_fast = tb.tfce_grid_max_count(stats, grid, thr, H=H, E=E, dh=dh, two_sided=two_sided)
    np.testing.assert_allclose(m_fast, m_ref, rtol=1e-10, atol=1e-300)
    np.testing.assert_array_equal(c_fast, c_ref)
    assert tb.tfce_grid_max_count(stats, grid, None, H=H, E=E, dh=dh, two_sided=two_sided)[1] is None


def test_bucket_kernel_refuses_the_exact_integral():
    grid = tb.voxel_grid(np.ones((3, 3, 3), bool))
    with pytest.raises(ValueError, match="discrete heights"):
        tb.tfce_grid(np.ones(27), grid, dh=None)
    assert not tb.buckets_apply(None) and not tb.buckets_apply(0) and tb.buckets_apply("auto")


@pytest.mark.parametrize("two_sided", [False, True])
def test_pain21_tfce_maps_and_fwe_thresholds_equal_the_sorted_engine(pain21, two_sided):
    """193k voxels, 26-connectivity, H 2, E 0.5: the engine's TFCE (bucket kernel) against
    the sorted kernel on the very same rearranged t maps."""
    Y, mask = pain21
    n = Y.shape[0]
    rng = np.random.default_rng(3)
    signs = rng.choice([-1.0, 1.0], size=(24, n))
    res = permutation_test(Y, np.ones((n, 1)), [1.0], mask=mask, tfce=True, two_sided=two_sided,
                           permutations=(np.tile(np.arange(n), (24, 1)), signs))
    nbrs = tf.neighbour_table(mask, 26)
    ref_obs = tf.tfce_masked(res.stat, nbrs, two_sided=two_sided)
    np.testing.assert_allclose(res.tfce, ref_obs, rtol=1e-10, atol=0)
    t_null = np.empty((24, Y.shape[1]))  # one-sample t of the sign-flipped maps
    for p, s in enumerate(signs):
        y = s[:, None] * Y
        t_null[p] = y.mean(0) / (y.std(0, ddof=1) / np.sqrt(n))
    ref_null = tf.tfce_max(t_null, nbrs, two_sided=two_sided)
    np.testing.assert_allclose(res.tfce_max_null, ref_null, rtol=1e-10)
    for alpha in (0.05, 0.1, 0.5):
        assert fwe_threshold(res.tfce_max_null, alpha) == pytest.approx(
            fwe_threshold(ref_null, alpha), rel=1e-10)


def _tfce_by_labels(mask, values, connectivity, two_sided, H=2.0, E=0.5):
    """TFCE from scratch: at each of the 100 heights, label the supra-height voxels
    (scipy) and add ``size**E * height**H`` to each voxel of each component."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    vol = np.zeros(mask.shape)
    vol[mask] = values
    h_max = np.abs(values).max() if two_sided else max(values.max(), 0.0)
    out = np.zeros(mask.shape)
    if h_max <= 0:
        return out[mask]
    for sign in (1.0, -1.0) if two_sided else (1.0,):
        for h in np.linspace(0.0, h_max, 101)[1:]:
            labels, _ = ndimage.label((sign * vol >= h) & mask, structure)
            sizes = np.bincount(labels.ravel())
            hit = labels > 0
            out[hit] += sign * sizes[labels[hit]] ** E * h ** H
    return out[mask]


def _holey_mask():
    mask = np.ones((6, 7, 5), bool)
    mask[2:4, 2:5, 1:4] = False  # a hole through the middle
    mask[0, 0, :] = False
    return mask


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("case", ["empty", "one voxel", "all equal", "holes", "smooth"])
def test_bucket_kernel_equals_per_height_labelling(case, connectivity, two_sided):
    rng = np.random.default_rng(7)
    mask = _holey_mask() if case in ("holes", "smooth") else np.ones((4, 5, 3), bool)
    n = int(mask.sum())
    values = {"empty": np.zeros(n), "all equal": np.full(n, 1.5),
              "holes": rng.standard_normal(n)}.get(case)
    if case == "one voxel":
        values = np.zeros(n)
        values[n // 2] = -2.0 if two_sided else 2.0
    if case == "smooth":
        from scipy import ndimage

        vol = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 1.0)
        values = vol[mask] / vol[mask].std()
    grid = tb.voxel_grid(mask, connectivity)
    ref = _tfce_by_labels(mask, values, connectivity, two_sided)
    fast = tb.tfce_grid(values, grid, two_sided=two_sided)
    np.testing.assert_allclose(fast, ref, rtol=1e-10, atol=1e-12)
    stats = np.vstack([values, -values])
    thr = np.abs(ref) * 0.9 + 1e-9
    ref2 = _tfce_by_labels(mask, -values, connectivity, two_sided)
    m_fast, c_fast = tb.tfce_grid_max_count(stats, grid, thr, two_sided=two_sided)
    np.testing.assert_allclose(m_fast, [np.abs(ref).max(), np.abs(ref2).max()], rtol=1e-10)
    np.testing.assert_array_equal(c_fast, (np.abs(ref) >= thr).astype(int)
                                  + (np.abs(ref2) >= thr).astype(int))
    if case == "smooth":
        assert np.count_nonzero(ref) > n // 4  # the labelling reference is not trivially 0


def _lattice_maps(rng, shape):
    """Maps whose supra-height sets are many small pieces touching at faces, edges and
    corners only, with saddles: where skipping a neighbour wrongly would show."""
    z, y, x = np.indices(shape)
    checker = np.where((x + y + z) % 2 == 0, 1.0, -1.0)  # at 6-conn every voxel alone
    saddle = np.sin(1.9 * x) * np.sin(1.7 * y) * np.cos(2.3 * z)
    sparse = np.where(rng.random(shape) < 0.35, rng.uniform(0.5, 3.0, shape), -rng.random(shape))
    return {"checker": checker + 0.3 * rng.random(shape), "saddle": saddle,
            "sparse": sparse, "ties": np.round(2 * saddle + rng.standard_normal(shape)) / 2}


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bucket_kernel_on_touching_pieces_equals_per_height_labelling(connectivity, seed):
    rng = np.random.default_rng(seed)
    shape = (9, 8, 10)
    mask = rng.random(shape) > 0.15
    mask[4, :, :] |= True  # one full plane: some long-range links
    for name, vol in _lattice_maps(rng, shape).items():
        values = vol[mask]
        grid = tb.voxel_grid(mask, connectivity)
        for two_sided in (False, True):
            ref = _tfce_by_labels(mask, values, connectivity, two_sided)
            fast = tb.tfce_grid(values, grid, two_sided=two_sided)
            np.testing.assert_allclose(fast, ref, rtol=1e-10, atol=1e-12, err_msg=name)
            assert np.count_nonzero(ref) > mask.sum() // 5, name
