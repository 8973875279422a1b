"""Unit tests of the preprocessing building blocks on small synthetic data (4 mm)."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from fmri_pain.config.preprocess import PreprocessSpec
from fmri_pain.preprocess import init_func_preproc_wf, preproc_report_section
from fmri_pain.preprocess.confounds import compute_confounds, dvars
from fmri_pain.preprocess.motion import framewise_displacement, realign
from fmri_pain.preprocess.slice_timing import slice_time_correct
from fmri_pain.preprocess.templates import on_grid, output_grid, tissue_masks
from fmri_pain.preprocess.transforms import apply_affine, grid_points, rigid_matrix, rigid_params, volume_center


@pytest.fixture(scope="module")
def template4():
    shape, aff = output_grid(4.0)
    return on_grid("t1", shape, aff) * 1000.0, aff


def _moved_series(base, aff, params, noise, rng):
    """Volume t shows the head displaced by rigid(params[t]) about the FOV centre."""
    c = volume_center(base.shape, aff)
    inv = np.linalg.inv(aff)
    out = np.empty(base.shape + (len(params),), np.float32)
    for t, p in enumerate(params):
        full = inv @ np.linalg.inv(rigid_matrix(p, c)) @ aff
        out[..., t] = ndimage.affine_transform(base, full[:3, :3], full[:3, 3], order=3) \
            + rng.normal(0, noise, base.shape)
    return out


def test_rigid_params_roundtrip():
    p = np.array([1.5, -2.0, 0.7, 0.04, -0.02, 0.03])
    c = np.array([3.0, -18.0, 20.0])
    np.testing.assert_allclose(rigid_params(rigid_matrix(p, c), c), p, atol=1e-12)
    # about another centre: same rotation, translation changes
    q = rigid_params(rigid_matrix(p, c))
    np.testing.assert_allclose(q[3:], p[3:], atol=1e-12)
    assert not np.allclose(q[:3], p[:3])


def test_realign_recovers_known_motion(template4):
    base, aff = template4
    rng = np.random.default_rng(3)
    n = 30
    true = np.cumsum(rng.normal(0, [0.25] * 3 + [0.004] * 3, size=(n, 6)), axis=0)
    true[0] = 0
    data = _moved_series(base, aff, true, noise=10.0, rng=rng)
    res = realign(data, aff)
    # parameters relative to the first volume, same centre and convention
    rel = np.array([rigid_params(m @ np.linalg.inv(res.matrices[0]), res.center) for m in res.matrices])
    for k in range(6):
        assert np.corrcoef(rel[:, k], true[:, k])[0, 1] > 0.98, k
    assert np.abs(rel[:, :3] - true[:, :3]).max() < 0.15  # mm
    assert np.abs(rel[:, 3:] - true[:, 3:]).max() < 0.003  # rad
    fd = framewise_displacement(res.params)
    assert np.isnan(fd[0])
    np.testing.assert_allclose(fd[1:], framewise_displacement(true)[1:], atol=0.3)


def test_slice_timing_aligns_slices():
    tr, n_t, n_z = 2.0, 80, 6
    slice_times = np.array([0.0, 1.0, 0.333, 1.333, 0.667, 1.667])
    freq = 0.03  # Hz, well below Nyquist (0.25 Hz)
    data = np.zeros((2, 2, n_z, n_t), np.float32)
    for k in range(n_z):
        t = np.arange(n_t) * tr + slice_times[k]
        data[:, :, k, :] = 100 + 10 * np.sin(2 * np.pi * freq * t) + 0.05 * t
    out, ref = slice_time_correct(data, tr, slice_times)
    assert ref == pytest.approx(0.5 * (slice_times.max() + slice_times.min()))
    expected = 100 + 10 * np.sin(2 * np.pi * freq * (np.arange(n_t) * tr + ref)) + 0.05 * (np.arange(n_t) * tr + ref)
    inner = slice(5, -5)  # ends are extrapolated
    for k in range(n_z):
        np.testing.assert_allclose(out[0, 0, k, inner], expected[inner], atol=0.15)
    before = np.abs(data[0, 0, 5, inner] - expected[inner]).max()
    assert before > 1.0  # the test would fail without correction
    with pytest.raises(ValueError, match="SliceTiming has 3 entries"):
        slice_time_correct(data, tr, slice_times[:3])


def test_ants_registration_convention(template4):
    from fmri_pain.preprocess.registration import register

    base, aff = template4
    truth = rigid_matrix([5.0, -3.0, 4.0, 0.06, -0.04, 0.05], [0, -18, 18])
    inv = np.linalg.inv(aff)
    full = inv @ np.linalg.inv(truth) @ aff
    moved = ndimage.affine_transform(base, full[:3, :3], full[:3, 3], order=1)
    reg = register(base, aff, moved, aff, kind="rigid")
    brain = on_grid("brain", base.shape, aff) >= 0.5
    pts = grid_points(base.shape, aff)[brain]
    err = np.linalg.norm(apply_affine(reg.matrix, pts) - apply_affine(truth, pts), axis=1)
    assert err.mean() < 1.0


def _synthetic_run(rng, n_t=80):
    shape, aff = output_grid(8.0)
    masks = tissue_masks(shape, aff)
    data = 800 + rng.normal(0, 8, shape + (n_t,))
    data[masks["wm"]] += 5 * np.sin(np.arange(n_t) / 3.0)
    data[..., :2] += 200  # two non-steady volumes
    motion = np.cumsum(rng.normal(0, [0.05] * 3 + [0.001] * 3, (n_t, 6)), axis=0)
    motion[20] += [0.8, 0, 0, 0, 0, 0]  # a jerk -> FD outliers at 20 and 21
    return data.astype(np.float32), aff, masks, motion


def test_confounds_fmriprep_columns(tmp_path):
    rng = np.random.default_rng(0)
    data, aff, masks, motion = _synthetic_run(rng)
    table, meta = compute_confounds(data, masks["brain"], masks["wm"], masks["csf"], motion, 2.0, n_dummy=2)
    for col in ("global_signal", "csf", "white_matter", "std_dvars", "dvars", "framewise_displacement",
                "trans_x", "trans_x_derivative1", "trans_x_power2", "trans_x_derivative1_power2",
                "rot_z_derivative1_power2", "a_comp_cor_00", "t_comp_cor_00", "cosine00",
                "non_steady_state_outlier00", "non_steady_state_outlier01", "motion_outlier00"):
        assert col in table.columns, col
    assert len(table) == data.shape[-1]
    na_first = [c for c in table.columns if table[c].isna().any()]
    assert set(na_first) >= {"framewise_displacement", "std_dvars", "dvars", "trans_x_derivative1"}
    assert all(table[c].isna().sum() == 1 and np.isnan(table[c].iloc[0]) for c in na_first)
    # the jerk is flagged, the non-steady volumes are flagged separately (one-hot)
    spikes = table.filter(like="motion_outlier").to_numpy()
    assert set(np.flatnonzero(spikes.sum(axis=1))) >= {20, 21}
    assert table["non_steady_state_outlier01"].tolist()[:3] == [0, 1, 0]
    assert meta["a_comp_cor_00"]["Mask"] == "combined" and meta["a_comp_cor_00"]["Method"] == "aCompCor"
    # CompCor ignores the non-steady volumes (zero-padded like fMRIPrep)
    assert np.all(table["a_comp_cor_00"].iloc[:2] == 0)
    # nilearn reads the table as an fMRIPrep output
    from nilearn.interfaces.fmriprep import load_confounds

    func = tmp_path / "sub-01_task-x_space-MNI152NLin2009aSym_desc-preproc_bold.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), func)
    table.to_csv(tmp_path / "sub-01_task-x_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
    (tmp_path / "sub-01_task-x_desc-confounds_timeseries.json").write_text(json.dumps(meta))
    conf, sample_mask = load_confounds(str(func), strategy=("motion", "high_pass", "wm_csf", "compcor", "scrub"),
                                       motion="full", wm_csf="basic", compcor="anat_combined", n_compcor="all",
                                       scrub=0, fd_threshold=0.5, std_dvars_threshold=1.5)
    assert "trans_x_derivative1_power2" in conf.columns and "a_comp_cor_00" in conf.columns
    assert 20 not in sample_mask and 0 not in sample_mask and 1 not in sample_mask and 30 in sample_mask


def test_dvars_matches_nipype(tmp_path):
    from nipype.algorithms.confounds import compute_dvars

    rng = np.random.default_rng(1)
    data = (500 + rng.normal(0, 10, (6, 6, 5, 40))).astype(np.float32)
    data[..., 1:] += 0.5 * data[..., :-1] - 250  # some autocorrelation
    mask = np.ones(data.shape[:3], bool)
    mask[0] = False
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "f.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), tmp_path / "m.nii.gz")
    ref_std, ref_raw, _ = compute_dvars(str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz"))
    std, raw = dvars(data[mask])
    np.testing.assert_allclose(std[1:], ref_std, rtol=1e-4)
    np.testing.assert_allclose(raw[1:], ref_raw, rtol=1e-4)


def test_spec_validation():
    assert PreprocessSpec().backend == "python"
    with pytest.raises(ValueError, match="backend"):
        PreprocessSpec(backend="spm")
    with pytest.raises(ValueError, match="unknown preprocess option"):
        PreprocessSpec.from_dict({"nonsense": 1})
    with pytest.raises(ValueError, match="dummy_scans"):
        PreprocessSpec(dummy_scans=-1)
    assert PreprocessSpec.from_dict({"plugin": "MultiProc", "n_procs": 2}).n_procs == 2


def test_func_workflow_graph():
    wf = init_func_preproc_wf(PreprocessSpec(), has_t1w=True)
    names = set(wf.list_node_names())
    assert {"inputnode", "outputnode", "hmc", "stc", "coreg", "resample", "confounds", "qc"} <= names
    graph = wf._graph
    node = {n.name: n for n in graph.nodes()}
    # one-shot resampling: resample reads the slice-timed series and the motion transforms
    assert graph.has_edge(node["stc"], node["resample"]) and graph.has_edge(node["hmc"], node["resample"])
    assert graph.has_edge(node["inputnode"], node["resample"])  # MNI -> T1w transform
    wf_no_t1 = init_func_preproc_wf(PreprocessSpec(), has_t1w=False)
    g = wf_no_t1._graph
    n2 = {n.name: n for n in g.nodes()}
    assert not g.has_edge(n2["inputnode"], n2["resample"]) or "std_xfm" not in str(
        g.get_edge_data(n2["inputnode"], n2["resample"]))


def test_unimplemented_backend_is_rejected_by_the_spec():
    with pytest.raises(ValueError, match="backend"):
        PreprocessSpec(backend="fsl")


def test_report_section_embeds_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.plot([0, 1])
    fig.savefig(tmp_path / "c.png")
    plt.close(fig)
    qc = [{"run": "ses-scs_task-stim_run-1", "metrics": {"tsnr_median": 55.0, "fd_mean": 0.1, "fd_max": 0.4,
                                                         "n_outliers": 2, "n_nonsteady": 0},
           "carpet": str(tmp_path / "c.png"), "overlay": str(tmp_path / "c.png"), "route": "EPI-template",
           "notes": ["no T1w"]}]
    html = preproc_report_section(qc)
    assert html.count("data:image/png;base64,") == 2
    assert "55.0" in html and "EPI-template" in html


def test_tissue_masks_are_plausible():
    shape, aff = output_grid(4.0)
    m = tissue_masks(shape, aff)
    # the MNI brain is ~1.5-2 litres; WM inside the brain; CSF (ventricles) near the midline
    vol = m["brain"].sum() * 64 / 1e6
    assert 1.2 < vol < 2.2
    assert not (m["wm"] & ~m["brain"]).any()
    assert m["csf"].sum() >= 20
    pts = grid_points(shape, aff)[m["csf"]]
    assert np.abs(np.median(pts[:, 0])) < 15


def test_compcor_matches_nipype():
    from nipype.algorithms.confounds import compute_noise_components

    from fmri_pain.preprocess.confounds import noise_components

    rng = np.random.default_rng(2)
    n_t = 90
    shared = rng.normal(size=(n_t, 3))
    data = (rng.normal(size=(4, 5, 6, n_t)) + np.einsum("xyzk,tk->xyzt", rng.normal(size=(4, 5, 6, 3)), shared))
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3] = True
    ref, _, meta = compute_noise_components(data.astype(np.float32), [nib.Nifti1Image(mask.astype(np.uint8),
                                            np.eye(4))], 5, filter_type="cosine", period_cut=128,
                                            repetition_time=2.0)
    ours, info = noise_components(data[mask], 5, 2.0, 128.0)
    assert ours.shape == ref.shape == (n_t, 5)
    for k in range(5):
        assert abs(np.corrcoef(ours[:, k], ref[:, k])[0, 1]) > 0.999
    np.testing.assert_allclose(info["variance_explained"][:5], meta["variance_explained"][:5], rtol=1e-4)


def test_tsnr_inside_a_mask_equals_the_whole_grid_computation():
    from fmri_pain.preprocess.qc import tsnr

    rng = np.random.default_rng(3)
    t = np.arange(40.0)
    data = (100 + 0.5 * t + 0.01 * t**2 + rng.normal(0, 2, (6, 5, 4, 40))).astype(np.float32)
    mask = rng.random((6, 5, 4)) > 0.4
    whole = tsnr(data, skip=3)
    masked = tsnr(data, skip=3, mask=mask)
    np.testing.assert_array_equal(masked[mask], whole[mask])
    assert np.all(masked[~mask] == 0) and np.all(whole[~mask] > 0)
    # independent: mean over SD of the residual of a least-squares quadratic fit (numpy.polyfit)
    ts = data[1, 2, 3, 3:].astype(float)
    x = np.arange(ts.size)
    resid = ts - np.polyval(np.polyfit(x, ts, 2), x)
    np.testing.assert_allclose(whole[1, 2, 3], ts.mean() / resid.std(), rtol=1e-5)


def test_to_volume_fortran_order_same_values_and_nifti_bytes(tmp_path):
    from fmri_pain.preprocess.resample import to_volume

    rng = np.random.default_rng(0)
    shape = (5, 6, 7)
    index = np.sort(rng.choice(np.prod(shape), 60, replace=False))
    values = rng.normal(size=(60, 9)).astype(np.float32)
    c, f = to_volume(values, index, shape), to_volume(values, index, shape, order="F")
    assert f.flags.f_contiguous and c.shape == f.shape == shape + (9,)
    np.testing.assert_array_equal(c, f)
    np.testing.assert_array_equal(c.reshape(-1, 9)[index], values)
    nib.save(nib.Nifti1Image(c, np.eye(4)), tmp_path / "c.nii")
    nib.save(nib.Nifti1Image(f, np.eye(4)), tmp_path / "f.nii")
    assert (tmp_path / "c.nii").read_bytes() == (tmp_path / "f.nii").read_bytes()
    with pytest.raises(ValueError):
        to_volume(values, index, shape, order="K")


def test_shift_series_equals_the_plain_fourier_formula():
    from fmri_pain.preprocess.slice_timing import shift_series

    rng = np.random.default_rng(5)
    ts = rng.normal(size=(4, 3, 30)) + np.linspace(0, 3, 30)
    shift = rng.uniform(-0.5, 0.5, (4, 3))
    # the formula written out with numpy.fft: detrend, mirror, phase shift, add the line back
    n = ts.shape[-1]
    tc = np.arange(n) - (n - 1) / 2
    slope = (ts * tc).sum(-1, keepdims=True) / (tc @ tc)
    icpt = ts.mean(-1, keepdims=True)
    resid = ts - icpt - slope * tc
    spec = np.fft.rfft(np.concatenate([resid, resid[..., ::-1]], -1), axis=-1)
    spec *= np.exp(2j * np.pi * np.fft.rfftfreq(2 * n) * shift[..., None])
    expected = np.fft.irfft(spec, n=2 * n, axis=-1)[..., :n] + icpt + slope * (tc + shift[..., None])
    np.testing.assert_allclose(shift_series(ts, shift), expected, rtol=0, atol=1e-12)
    # an integer shift of a band-limited periodic signal is a plain sample shift
    k = np.arange(64)
    sig = np.cos(2 * np.pi * 3 * k / 64)
    np.testing.assert_allclose(shift_series(sig, 2.0)[5:-5], np.cos(2 * np.pi * 3 * (k + 2) / 64)[5:-5],
                               atol=1e-2)


def test_read_series_equals_nibabel(tmp_path):
    from fmri_pain.preprocess.interfaces.base import read_series

    data = np.random.default_rng(1).normal(size=(4, 5, 3, 6)).astype(np.float32)
    aff = np.diag([3.0, 3.0, 3.5, 1.0])
    nib.save(nib.Nifti1Image(data, aff), tmp_path / "b.nii.gz")
    img, arr = read_series(str(tmp_path / "b.nii.gz"))
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr, data)
    np.testing.assert_array_equal(img.affine, aff)


def test_carpet_pixels_equal_matplotlib_rgba_stage(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mimage
    import pandas as pd

    from fmri_pain.preprocess.qc import carpet_figure

    rng = np.random.default_rng(2)
    bold = nib.Nifti1Image(rng.normal(100, 5, (12, 12, 10, 30)).astype(np.float32), np.diag([4.0] * 3 + [1]))
    mask = nib.Nifti1Image((rng.random((12, 12, 10)) > 0.3).astype(np.uint8), bold.affine)
    conf = pd.DataFrame({"framewise_displacement": rng.random(30), "std_dvars": rng.random(30)})
    fig = carpet_figure(bold, mask, conf, 2.0)
    images = [im for ax in fig.axes for im in ax.images]
    assert images and all(im.get_interpolation_stage() == "data" for im in images)
    fig.savefig(tmp_path / "data.png", dpi=80)
    for im in images:
        im.set_interpolation_stage("rgba")
    fig.savefig(tmp_path / "rgba.png", dpi=80)
    np.testing.assert_array_equal(mimage.imread(tmp_path / "data.png"), mimage.imread(tmp_path / "rgba.png"))


def test_process_budget_follows_the_worker_thread_limit():
    """MultiProc processes never exceed the BLAS limit a participant worker runs under, nor the CPUs."""
    import os

    from threadpoolctl import threadpool_info, threadpool_limits

    from fmri_pain.preprocess.run import process_budget

    assert threadpool_info(), "numpy's BLAS must be visible to threadpoolctl for the cap to work"
    cpus = len(os.sched_getaffinity(0))
    with threadpool_limits(limits=1):
        assert process_budget(4) == 1
    assert process_budget(1) == 1
    assert 1 <= process_budget(1024) <= cpus
    if cpus >= 2:
        with threadpool_limits(limits=2):
            assert process_budget(8) == 2
