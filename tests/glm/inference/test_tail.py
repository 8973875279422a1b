"""Tail acceleration (generalised Pareto fit to the null's tail): fit, accuracy, error rate, logic."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage, stats

from fmri_pain.glm.inference import tail
from fmri_pain.glm.inference.permutation import permutation_test
from fmri_pain.glm.inference.result import fwe_threshold


def test_fit_recovers_a_generalised_pareto_tail():
    # scipy's genpareto shape c is minus Hosking's k; exceedances of a GPD keep its shape
    for k in (-0.2, 0.0, 0.2):
        null = stats.genpareto.rvs(-k, scale=1.0, size=50_000, random_state=1) + 3.0
        fit = tail.fit_tail(null)
        assert fit is not None and fit.quantile == pytest.approx(0.751)
        assert fit.shape == pytest.approx(k, abs=0.05)
        x = 3.0 + stats.genpareto.isf(1e-3, -k)
        got = tail.tail_p(np.array([x]), fit, np.array([1.0]))[0]
        assert got == pytest.approx(1e-3, rel=0.25)
        assert fit.critical_value(0.01) == pytest.approx(3.0 + stats.genpareto.isf(0.01, -k),
                                                         rel=0.02)


def test_no_fit_keeps_the_permutation_p_values():
    rng = np.random.default_rng(0)
    p_perm = np.array([0.5, 0.02, 0.002])
    # a tail of two point masses is no Pareto tail: every quantile fails the test
    lumpy = np.concatenate([rng.standard_normal(300), np.full(60, 5.0), np.full(40, 9.0)])
    p, fit = tail.accelerate(np.array([1.0, 6.0, 9.5]), lumpy, p_perm)
    assert fit is None and np.array_equal(p, p_perm)
    # nothing below 0.10: no fit is attempted
    p, fit = tail.accelerate(np.array([0.1]), rng.standard_normal(500), np.array([0.4]))
    assert fit is None and p[0] == 0.4


def test_tail_on_the_max_of_gaussians_matches_the_exact_distribution():
    """A simulator-free random null: the maximum of 1000 independent normals, whose
    distribution is known exactly. 500 draws + tail against the exact p-values."""
    m, n_rep = 1000, 60
    rng = np.random.default_rng(2)
    ps = np.array([0.05, 0.01])
    xs = stats.norm.ppf((1 - ps) ** (1 / m))
    err, thr_err, plain_err = [], [], []
    for _ in range(n_rep):
        null = rng.standard_normal((500, m)).max(axis=1)
        fit = tail.fit_tail(null)
        assert fit is not None
        p = tail.tail_p(xs, fit, np.ones(2))
        err.append(np.abs(np.log10(p / ps)))
        thr_err.append(abs(fit.critical_value(0.05) / xs[0] - 1))
        plain_err.append(abs(fwe_threshold(null, 0.05) / xs[0] - 1))
    err = np.median(err, axis=0)
    assert err[0] < 0.1 and err[1] < 0.15, err  # typical |log10 p error| at p 0.05 and 0.01
    assert np.median(thr_err) < 0.01  # the FWE threshold within 1 % (median over draws)
    assert np.median(thr_err) <= 1.2 * np.median(plain_err)


def _smooth(rng, n, shape):
    maps = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 1.3) for _ in range(n)])
    return maps / maps.reshape(n, -1).std(axis=1)[:, None, None, None]


def test_familywise_error_rate_under_the_null_with_tail_acceleration():
    """Max-t, TFCE and cluster-mass FWER at alpha 0.05 over null simulations (8-20 maps)."""
    n_sim, alpha = 240, 0.05
    rng = np.random.default_rng(5)
    shape = (9, 9, 9)
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    hits = np.zeros(3, int)
    fitted = 0
    for sim in range(n_sim):
        n = (8, 14, 20)[sim % 3]
        Y = _smooth(rng, n, shape)[:, mask]
        r = permutation_test(Y, np.ones((n, 1)), [1.0], n_perm=100, mask=mask, tfce=True,
                             cluster_threshold=0.01, random_state=sim, accel="tail")
        hits += [r.p_fwe.min() <= alpha, r.p_tfce_fwe.min() <= alpha,
                 r.cluster_p_mass_fwe.min() <= alpha]
        fitted += r.tail_fits["stat"] is not None
    lo, hi = stats.binom.interval(0.99, n_sim, alpha)
    assert fitted >= 10  # fits are tried when some p < 0.10: about one null map in ten
    for name, count in zip(("max-t", "TFCE", "cluster mass"), hits):
        assert lo <= count <= hi, f"{name} FWER {count}/{n_sim} outside [{lo}, {hi}]"


def test_every_p_value_obeys_its_logic_and_the_sidecar_records_the_fit():
    rng = np.random.default_rng(7)
    shape = (10, 10, 10)
    mask = np.ones(shape, bool)
    signal = np.zeros(shape)
    signal[3:7, 3:7, 3:7] = 2.5
    Y = (_smooth(rng, 12, shape) + signal)[:, mask]
    Y[:, 0] = 1.0  # a constant voxel: excluded, p = 1
    r = permutation_test(Y, np.ones((12, 1)), [1.0], n_perm=200, mask=mask, tfce=True,
                         cluster_threshold=0.01, random_state=0, accel="tail")
    plain = permutation_test(Y, np.ones((12, 1)), [1.0], n_perm=200, mask=mask, tfce=True,
                             cluster_threshold=0.01, random_state=0)
    assert r.tail_fits["stat"] is not None and r.tail_fits["tfce"] is not None
    assert r.p_fwe.min() < 1 / 201  # below what 200 permutations can give
    pairs = [(r.p_fwe, r.p_uncorrected), (r.p_tfce_fwe, r.p_tfce_uncorrected),
             (r.cluster_p_mass_fwe, r.cluster_p_mass_uncorrected)]
    for fwe, unc in pairs:
        assert np.all(fwe > 0) and np.all(unc > 0) and np.all(fwe <= 1) and np.all(unc <= 1)
        assert np.all(fwe >= unc)
    assert r.p_fwe[0] == 1.0 and r.n_excluded == 1
    # outside the fitted tail, the permutation p-values are untouched
    below = np.abs(r.stat) <= r.tail_fits["stat"].threshold
    np.testing.assert_array_equal(r.p_fwe[below], plain.p_fwe[below])
    # thresholds: the fitted quantile, consistent with the p-values
    thr = r.threshold(0.05)
    assert np.all((r.p_fwe <= 0.05) == (r.stat >= thr) | (r.p_fwe <= 0.05) & (r.stat >= thr))
    assert np.all(r.p_fwe[r.stat > thr * 1.0001] < 0.05)
    side = json.loads(json.dumps(r.sidecar_fields(), allow_nan=False))
    assert side["TailAcceleration"] == "tail"
    assert side["TailFits"]["MaxStatistic"]["Quantile"] >= 0.751
    assert set(side["TailFits"]) == {"MaxStatistic", "MaxTFCE", "MaxClusterMass"}
    assert plain.sidecar_fields()["TailAcceleration"] == "none"
    assert "TailFits" not in plain.sidecar_fields()
    with pytest.raises(ValueError, match="accel"):
        permutation_test(Y, np.ones((12, 1)), [1.0], n_perm=10, accel="fast")


def test_pain21_500_permutations_with_tail_against_10000(pain21):
    """The real maps, max-t: 500 permutations + tail against 10,000 plain permutations.
    500 draws cannot pin the far tail: the tolerances are what the fit achieves over draws
    (see benchmarks/bench_tail.py), and the fit must beat the plain 500-permutation p."""
    Y, _ = pain21
    x = np.ones((Y.shape[0], 1))
    big = permutation_test(Y, x, [1.0], n_perm=10_000, random_state=123)
    fast = permutation_test(Y, x, [1.0], n_perm=500, random_state=0, accel="tail")
    plain = permutation_test(Y, x, [1.0], n_perm=500, random_state=0)
    assert fast.threshold(0.05) == pytest.approx(big.threshold(0.05), rel=0.03)
    for lo, hi, tol in ((1e-2, 1.0, 0.2), (1e-3, 1e-2, 0.45), (1e-4, 1e-3, 0.8)):
        sel = (big.p_fwe > lo) & (big.p_fwe <= hi)
        assert sel.any()
        d_tail = np.abs(np.log10(fast.p_fwe[sel] / big.p_fwe[sel])).max()
        d_plain = np.abs(np.log10(plain.p_fwe[sel] / big.p_fwe[sel])).max()
        assert d_tail < tol and d_tail < d_plain, (lo, hi, d_tail, d_plain)
    assert fast.p_fwe.min() < 1 / 501 and np.all(fast.p_fwe >= fast.p_uncorrected)


def test_spec_key_and_cli_flag(tmp_path, capsys):
    from fmri_pain.cli import main
    from fmri_pain.config.spec import SpecError, spec_from_dict

    assert spec_from_dict({}).inference.accel == "none"
    assert spec_from_dict({"inference": {"accel": "tail"}}).inference.accel == "tail"
    with pytest.raises(SpecError, match="accel"):
        spec_from_dict({"inference": {"accel": "fast"}})
    rng = np.random.default_rng(3)
    shape = (8, 8, 8)
    signal = np.zeros(shape)
    signal[2:6, 2:6, 2:6] = 3.0
    maps = _smooth(rng, 10, shape) + signal
    paths = []
    for i, vol in enumerate(maps):
        paths.append(tmp_path / f"map{i}.nii.gz")
        nib.save(nib.Nifti1Image(vol.astype(np.float32), np.eye(4)), paths[-1])
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), np.eye(4)), tmp_path / "mask.nii.gz")
    out = tmp_path / "out"
    assert main(["permute", str(out), *map(str, paths), "--mask", str(tmp_path / "mask.nii.gz"),
                 "--n-perm", "99", "--accel", "tail"]) == 0
    side = json.loads(next((out / "group").glob("*desc-perm_stat-logp_statmap.json")).read_text())
    assert side["TailAcceleration"] == "tail" and side["TailFits"]["MaxStatistic"]["TailSize"] > 0
    logp = np.asarray(nib.load(next((out / "group").glob("*desc-perm_stat-logp_statmap.nii.gz")))
                      .dataobj)
    assert logp.max() > np.log10(100)  # below 1 / (n_perm + 1)
