"""The simulated crossover trial: BIDS validity, determinism, realism and recoverable ground truth."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_pain.simulate.dataset import SimulatedTrial, simulate_trial

SPACE = "MNI152NLin2009aSym"
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
N_VOLUMES = 60


@pytest.fixture(scope="module")
def trial(tmp_path_factory) -> SimulatedTrial:
    return simulate_trial(tmp_path_factory.mktemp("sim") / "out", n_subjects=2, seed=7, n_volumes=N_VOLUMES)


@pytest.fixture(scope="module")
def null_trial(tmp_path_factory) -> SimulatedTrial:
    return simulate_trial(tmp_path_factory.mktemp("null") / "out", n_subjects=2, seed=11, n_volumes=40,
                          null=True, dropout=True)


def _run_files(sim: SimulatedTrial, sub: str, ses: str) -> dict[str, Path]:
    stem = f"{sub}_{ses}_task-stim_run-1"
    d = (sim.derivatives_dir or sim.truth_dir) / sub / ses / "func"
    return {
        "raw": sim.bids_dir / sub / ses / "func" / f"{stem}_bold.nii.gz",
        "events": sim.bids_dir / sub / ses / "func" / f"{stem}_events.tsv",
        "bold": d / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz",
        "bold_json": d / f"{stem}_space-{SPACE}_desc-preproc_bold.json",
        "mask": d / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz",
        "confounds": d / f"{stem}_desc-confounds_timeseries.tsv",
    }


def _masks(sim: SimulatedTrial) -> dict[str, np.ndarray]:
    return {r["name"]: np.asarray(nib.load(sim.truth_dir / r["mask"]).dataobj) > 0 for r in sim.truth["rois"]}


def _fit(sim: SimulatedTrial, sub: str, ses: str):
    """A plain nilearn GLM (6 motion confounds) on one simulated run; returns z and effect (percent) maps.

    nilearn's "spm" HRF is used: with 20 s blocks, "glover" (large overshoot) reads the simulated plateau
    amplitudes about 0.65x, "spm" about 0.9x.
    """
    from nilearn.glm.first_level import FirstLevelModel

    f = _run_files(sim, sub, ses)
    meta = json.loads(f["bold_json"].read_text())
    confounds = pd.read_csv(f["confounds"], sep="\t")[MOTION]
    model = FirstLevelModel(t_r=meta["RepetitionTime"], slice_time_ref=meta["StartTime"] / meta["RepetitionTime"],
                            mask_img=str(f["mask"]), hrf_model="spm", drift_model="cosine",
                            minimize_memory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(str(f["bold"]), events=pd.read_csv(f["events"], sep="\t"), confounds=confounds)
        z = model.compute_contrast("on", output_type="z_score").get_fdata()
        effect = model.compute_contrast("on", output_type="effect_size").get_fdata()  # percent (mean scaling)
    return z, effect


@pytest.fixture(scope="module")
def glm(trial):
    """GLM z and effect maps for every run of the main trial."""
    out = {}
    for sub, info in trial.truth["subjects"].items():
        for ses in info["sessions"]:
            out[(sub, ses)] = _fit(trial, sub, ses)
    return out


# ---------------------------------------------------------------------------------------- layout
def test_layout_and_tables(trial):
    assert trial.bids_dir == trial.truth_dir.parent / "bids"
    assert trial.derivatives_dir == trial.truth_dir.parent / "derivatives" / "fmriprep"
    desc = json.loads((trial.bids_dir / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] == "1.8.0" and desc["Name"]
    deriv = json.loads((trial.derivatives_dir / "dataset_description.json").read_text())
    assert deriv["DatasetType"] == "derivative" and deriv["GeneratedBy"][0]["Name"] == "fmri-pain-simulator"

    participants = pd.read_csv(trial.bids_dir / "participants.tsv", sep="\t")
    assert list(participants.participant_id) == ["sub-01", "sub-02"]
    assert set(participants.columns) >= {"sequence", "age", "sex", "pain_side"}
    for _, row in participants.iterrows():
        sequence = row.sequence.split("-")
        assert sorted(sequence) == ["DRGS", "DUAL", "SCS"]
        sessions = pd.read_csv(trial.bids_dir / row.participant_id / f"{row.participant_id}_sessions.tsv", sep="\t")
        assert list(sessions.columns) == ["session_id", "condition", "period", "vas_pain", "pain_relief",
                                          "stim_amplitude_ma"]
        for _, s in sessions.iterrows():
            assert s.session_id == f"ses-{s.condition.lower()}"
            assert sequence[s.period - 1] == s.condition
            assert 0 <= s.vas_pain <= 10 and 0 <= s.pain_relief <= 100 and s.stim_amplitude_ma > 0
        # one T1w, in the first period's session
        t1 = sorted(trial.bids_dir.joinpath(row.participant_id).glob("ses-*/anat/*_T1w.nii.gz"))
        assert [p.parent.parent.name for p in t1] == [f"ses-{sequence[0].lower()}"]

    events = pd.read_csv(_run_files(trial, "sub-01", "ses-scs")["events"], sep="\t")
    assert list(events.columns) == ["onset", "duration", "trial_type"]
    assert set(events.trial_type) == {"on"} and list(events.onset) == [20.0, 60.0, 100.0]
    assert (events.onset + events.duration).max() <= N_VOLUMES * 2.0


def test_pybids_and_the_official_validator_accept_everything(trial, null_trial):
    import bids

    # the community's schema-based validator (bids-validator-deno), as the participant level runs it
    from fmri_pain.bids.validator import run_validator

    for sim in (trial, null_trial):  # null_trial has drop-outs
        report = run_validator(sim.bids_dir)
        assert report.errors == [], report.lines()
        assert report.schema_version
    kinds = {i.code for i in run_validator(trial.bids_dir).warnings}
    assert "SIDECAR_KEY_REQUIRED" not in kinds and "README_FILE_MISSING" not in kinds

    layout = bids.BIDSLayout(trial.bids_dir, validate=True, derivatives=str(trial.derivatives_dir))
    assert layout.get_subjects() == ["01", "02"]
    assert sorted(layout.get_sessions()) == ["drgs", "dual", "scs"]
    raw = layout.get(suffix="bold", extension=".nii.gz", task="stim", scope="raw")
    assert len(raw) == 6
    meta = raw[0].get_metadata()
    nslices = nib.load(raw[0].path).shape[2]
    assert meta["RepetitionTime"] == 2.0 and len(meta["SliceTiming"]) == nslices
    assert max(meta["SliceTiming"]) < 2.0
    assert len(layout.get(suffix="events", extension=".tsv")) == 6
    assert len(layout.get(suffix="T1w", extension=".nii.gz")) == 2
    pre = layout.get(suffix="bold", desc="preproc", space=SPACE, extension=".nii.gz", scope="derivatives")
    assert len(pre) == 6
    assert len(layout.get(suffix="mask", desc="brain", scope="derivatives", extension=".nii.gz")) == 6
    assert len(layout.get(suffix="timeseries", desc="confounds", scope="derivatives", extension=".tsv")) == 6


def test_images_grids_and_types(trial):
    f = _run_files(trial, "sub-02", "ses-dual")
    raw, bold, mask = nib.load(f["raw"]), nib.load(f["bold"]), nib.load(f["mask"])
    assert raw.get_data_dtype() == np.int16 and raw.shape[-1] == N_VOLUMES
    assert raw.header.get_zooms() == (4.0, 4.0, 4.0, 2.0)
    assert bold.shape == (50, 59, 48, N_VOLUMES)  # nilearn's 4 mm MNI152 grid
    from nilearn.datasets import load_mni152_brain_mask

    assert np.allclose(bold.affine, load_mni152_brain_mask(resolution=4).affine)
    assert mask.get_data_dtype() == np.uint8 and set(np.unique(mask.dataobj)) == {0, 1}
    for roi in trial.truth["rois"]:
        m = nib.load(trial.truth_dir / roi["mask"])
        assert np.allclose(m.affine, bold.affine) and 0 < np.asarray(m.dataobj).sum() < 200
    # realistic intensities: grey matter near 1000 in the raw data
    mean = np.asarray(bold.dataobj, dtype=np.float32).mean(axis=-1)
    gm = _masks(trial)["dACC"]
    assert 800 < np.median(mean[gm]) < 1200


# ----------------------------------------------------------------------------------- determinism
def test_same_seed_same_data(trial, tmp_path):
    again = simulate_trial(tmp_path / "again", n_subjects=1, seed=7, n_volumes=N_VOLUMES)
    for ses in again.truth["subjects"]["sub-01"]["sessions"]:
        a, b = _run_files(trial, "sub-01", ses), _run_files(again, "sub-01", ses)
        for key in ("raw", "bold", "mask"):
            assert np.array_equal(np.asarray(nib.load(a[key]).dataobj), np.asarray(nib.load(b[key]).dataobj))
        assert a["confounds"].read_text() == b["confounds"].read_text()
    assert again.truth["subjects"]["sub-01"] == trial.truth["subjects"]["sub-01"]
    other = simulate_trial(tmp_path / "other", n_subjects=1, seed=8, n_volumes=N_VOLUMES, derivatives=False)
    x = np.asarray(nib.load(_run_files(other, "sub-01", "ses-scs")["raw"]).dataobj)
    y = np.asarray(nib.load(_run_files(trial, "sub-01", "ses-scs")["raw"]).dataobj)
    assert not np.array_equal(x, y)
    assert other.derivatives_dir is None and not (tmp_path / "other" / "derivatives").exists()


# ------------------------------------------------------------------------------------- confounds
def test_confounds_like_fmriprep(trial):
    f = _run_files(trial, "sub-01", "ses-dual")
    text = f["confounds"].read_text().splitlines()
    header = text[0].split("\t")
    frame = pd.read_csv(f["confounds"], sep="\t")
    n_cos = int(np.floor(2 * N_VOLUMES * 2.0 / 128)) - 1  # fMRIPrep: 128 s DCT basis without the constant
    expected = ["global_signal", "csf", "white_matter", "framewise_displacement", "dvars", "std_dvars",
                *[f"a_comp_cor_{i:02d}" for i in range(6)], *[f"t_comp_cor_{i:02d}" for i in range(3)],
                *[f"cosine{i:02d}" for i in range(n_cos)]]
    for base in ["global_signal", "csf", "white_matter", *MOTION]:
        expected += [base, f"{base}_derivative1", f"{base}_power2", f"{base}_derivative1_power2"]
    assert set(expected) <= set(header), set(expected) - set(header)
    na_first = {c for c in header if c.endswith(("derivative1", "derivative1_power2"))} | {
        "framewise_displacement", "dvars", "std_dvars"}
    first = dict(zip(header, text[1].split("\t")))
    assert {c for c, v in first.items() if v == "n/a"} == na_first
    assert not frame.iloc[1:].isna().any().any()

    truth_run = trial.truth["subjects"]["sub-01"]["sessions"]["ses-dual"]["runs"]["run-1"]
    motion = np.array(truth_run["motion"])
    assert np.allclose(frame[MOTION].to_numpy(), motion, atol=1e-6)
    assert np.allclose(frame["framewise_displacement"][1:], truth_run["framewise_displacement"][1:], atol=1e-5)
    # jerks of 0.5-1.5 mm are flagged as motion outliers, one column per outlier volume
    outliers = [c for c in header if c.startswith("motion_outlier")]
    flagged = {int(np.flatnonzero(frame[c].to_numpy())[0]) for c in outliers}
    assert truth_run["jerk_volumes"] and set(truth_run["jerk_volumes"]) <= flagged
    assert all(frame[c].sum() == 1 for c in outliers)
    # the slice-intensity spikes at the jerks show in DVARS
    std_dvars = frame["std_dvars"].to_numpy()
    assert np.nanmedian(std_dvars[truth_run["jerk_volumes"]]) > 1.5 > np.nanmedian(std_dvars)

    from nilearn.interfaces.fmriprep import load_confounds

    conf, sample_mask = load_confounds(str(f["bold"]), strategy=("motion", "high_pass", "wm_csf", "compcor"),
                                       motion="full", wm_csf="basic", compcor="anat_combined", n_compcor=5)
    assert conf.shape[0] == N_VOLUMES and conf.shape[1] == 24 + 2 + 5 + frame.filter(like="cosine").shape[1]
    assert not conf.isna().any().any()


# ---------------------------------------------------------------------------------------- realism
def test_tsnr_in_grey_matter(trial):
    from nilearn.datasets import load_mni152_gm_mask

    gm = load_mni152_gm_mask(resolution=4).get_fdata() > 0
    t = np.linspace(-1, 1, N_VOLUMES)
    trend = np.column_stack([np.ones(N_VOLUMES), t, t**2, t**3])  # slow drifts out, task and noise in
    for sub, info in trial.truth["subjects"].items():
        for ses in info["sessions"]:
            data = np.asarray(nib.load(_run_files(trial, sub, ses)["bold"]).dataobj, dtype=np.float64)[gm].T
            resid = data - trend @ np.linalg.lstsq(trend, data, rcond=None)[0]
            tsnr = np.median(data.mean(axis=0) / resid.std(axis=0, ddof=4))
            assert 60 <= tsnr <= 100, (sub, ses, tsnr)


def test_raw_data_need_registration(trial):
    """The native mean image lines up with MNI only after applying the recorded transform."""
    from nilearn.image import resample_img

    for sub, info in trial.truth["subjects"].items():
        ses = next(iter(info["sessions"]))
        f = _run_files(trial, sub, ses)
        raw = nib.load(f["raw"])
        mean_raw = np.asarray(raw.dataobj, dtype=np.float32).mean(axis=-1)
        bold = nib.load(f["bold"])
        mean_mni = np.asarray(bold.dataobj, dtype=np.float32).mean(axis=-1)
        brain = np.asarray(nib.load(f["mask"]).dataobj) > 0
        native_from_mni = np.array(info["native_from_mni"])
        assert np.allclose(native_from_mni[3], [0, 0, 0, 1])
        assert np.allclose(native_from_mni[:3, :3] @ native_from_mni[:3, :3].T, np.eye(3), atol=1e-8)

        def corr(affine):
            img = resample_img(nib.Nifti1Image(mean_raw, affine), target_affine=bold.affine,
                               target_shape=bold.shape[:3], interpolation="linear",
                               force_resample=True, copy_header=True)
            return np.corrcoef(img.get_fdata()[brain], mean_mni[brain])[0, 1]

        registered = corr(np.linalg.inv(native_from_mni) @ raw.affine)
        naive = corr(raw.affine)
        assert registered > 0.95, (sub, registered)
        assert naive < registered - 0.05, (sub, naive, registered)


def test_t1w_is_in_native_space(trial):
    from nilearn.datasets import load_mni152_template
    from nilearn.image import resample_to_img

    info = trial.truth["subjects"]["sub-01"]
    t1 = nib.load(next(trial.bids_dir.joinpath("sub-01").glob("ses-*/anat/*_T1w.nii.gz")))
    template = load_mni152_template(resolution=2)
    moved = nib.Nifti1Image(np.asarray(t1.dataobj, dtype=np.float32),
                            np.linalg.inv(np.array(info["native_from_mni"])) @ t1.affine)
    brain = template.get_fdata() > 0.2
    back = resample_to_img(moved, template, interpolation="linear", force_resample=True, copy_header=True)
    as_is = resample_to_img(t1, template, interpolation="linear", force_resample=True, copy_header=True)
    r_back = np.corrcoef(back.get_fdata()[brain], template.get_fdata()[brain])[0, 1]
    r_as_is = np.corrcoef(as_is.get_fdata()[brain], template.get_fdata()[brain])[0, 1]
    assert r_back > 0.9 and r_as_is < r_back - 0.05, (r_back, r_as_is)


# -------------------------------------------------------------------------------- ground truth
def test_truth_schema(trial):
    truth = json.loads((trial.truth_dir / "truth.json").read_text())
    assert truth["period_effect"]["percent_per_period"] == -0.25 and "negative" in truth["period_effect"]["sign"]
    assert "native_from_mni" in truth["transform_convention"]
    rois = {r["name"]: r for r in truth["rois"]}
    assert {"S1leg_L", "S1leg_R", "S2_L", "S2_R", "pINS_L", "pINS_R", "dACC", "control"} <= set(rois)
    assert rois["control"]["amplitudes"] == {"SCS": 0.0, "DRGS": 0.0, "DUAL": 0.0}
    for r in rois.values():
        a = r["amplitudes"]
        if r["name"] != "control":
            assert a["DUAL"] > a["SCS"] and a["DUAL"] > a["DRGS"]
    assert rois["S1leg_R"]["amplitudes"]["DRGS"] > rois["S1leg_R"]["amplitudes"]["SCS"]
    assert rois["S2_L"]["amplitudes"]["SCS"] > rois["S2_L"]["amplitudes"]["DRGS"]
    for sub, info in truth["subjects"].items():
        contra = "S1leg_R" if info["pain_side"] == "left" else "S1leg_L"
        ipsi = "S1leg_L" if contra == "S1leg_R" else "S1leg_R"
        for ses in info["sessions"].values():
            assert ses["amplitudes"]["control"] == 0 and ses["amplitudes"][ipsi] == 0
            assert ses["amplitudes"][contra] != 0
            run = ses["runs"]["run-1"]
            assert np.array(run["motion"]).shape == (N_VOLUMES, 6)
            assert 60 <= run["tsnr_gm_median"] <= 100
        # the recorded amplitudes follow the stated model (period effect included)
        for ses in info["sessions"].values():
            base = rois["dACC"]["amplitudes"][ses["condition"]]
            expected = base - 0.25 * (ses["period"] - 1) + info["random_effects_percent"]["dACC"]
            assert abs(ses["amplitudes"]["dACC"] - expected) < 0.5  # + subject-by-condition effect (SD 0.1)


def test_glm_recovers_roi_effects(trial, glm):
    """A plain nilearn GLM on the derivatives finds the true effects in the true places."""
    masks = _masks(trial)
    true, est, dual_z, control_z = [], [], [], []
    for (sub, ses), (z, effect) in glm.items():
        amps = trial.truth["subjects"][sub]["sessions"][ses]["amplitudes"]
        for name, m in masks.items():
            true.append(amps[name])
            est.append(effect[m].mean())
        if amps and trial.truth["subjects"][sub]["sessions"][ses]["condition"] == "DUAL":
            dual_z.append(np.mean([z[masks[n]].mean() for n in ("pINS_L", "pINS_R", "dACC", "S2_L", "S2_R")]))
        control_z.append(abs(z[masks["control"]].mean()))
    true, est = np.array(true), np.array(est)
    assert np.corrcoef(true, est)[0, 1] > 0.85
    slope = np.polyfit(true, est, 1)[0]
    assert 0.6 < slope < 1.3, slope  # amplitudes are percent signal change, recovered on that scale
    assert np.mean(dual_z) > 3.0, dual_z
    assert np.mean(control_z) < 1.5, control_z

    # amplitude orderings: S1 (contralateral) DRGS > SCS and S2 SCS > DRGS, summed over subjects
    s1_diff = s2_diff = 0.0
    for sub, info in trial.truth["subjects"].items():
        s1 = "S1leg_R" if info["pain_side"] == "left" else "S1leg_L"
        by_cond = {v["condition"]: k for k, v in info["sessions"].items()}
        eff = {c: glm[(sub, ses)][1] for c, ses in by_cond.items()}
        s1_diff += eff["DRGS"][masks[s1]].mean() - eff["SCS"][masks[s1]].mean()
        s2 = masks["S2_L"] | masks["S2_R"]
        s2_diff += eff["SCS"][s2].mean() - eff["DRGS"][s2].mean()
    assert s1_diff > 0 and s2_diff > 0, (s1_diff, s2_diff)


def test_activation_sits_in_the_truth_masks(trial, glm):
    """The strongest voxels of each subject's session-averaged z map lie in (or next to) its active ROIs."""
    from scipy import ndimage

    masks = _masks(trial)
    for sub, info in trial.truth["subjects"].items():
        z = np.mean([glm[(sub, ses)][0] for ses in info["sessions"]], axis=0)
        active = np.zeros(z.shape, bool)
        for name, m in masks.items():
            if max(ses["amplitudes"][name] for ses in info["sessions"].values()) > 0.3:
                active |= m
        assert not (active & masks["control"]).any()
        near = ndimage.binary_dilation(active, iterations=1)
        top = np.argsort(z, axis=None)[-25:]
        assert near.reshape(-1)[top].mean() >= 0.8, (sub, near.reshape(-1)[top].mean())
        assert z[masks["control"]].mean() < 1.5


# ------------------------------------------------------------------------------ options
def test_null_and_dropout(null_trial):
    truth = null_trial.truth
    assert truth["period_effect"]["percent_per_period"] == 0
    for info in truth["subjects"].values():
        for ses in info["sessions"].values():
            assert all(v == 0 for v in ses["amplitudes"].values())
    # drop-out: the last subject lacks its last period
    assert truth["subjects"]["sub-02"]["n_sessions"] == 2
    seq = pd.read_csv(null_trial.bids_dir / "participants.tsv", sep="\t").set_index("participant_id")
    last = seq.loc["sub-02", "sequence"].split("-")[-1].lower()
    sessions = pd.read_csv(null_trial.bids_dir / "sub-02" / "sub-02_sessions.tsv", sep="\t")
    assert len(sessions) == 2 and f"ses-{last}" not in set(sessions.session_id)
    assert not (null_trial.bids_dir / "sub-02" / f"ses-{last}").exists()
    assert not (null_trial.derivatives_dir / "sub-02" / f"ses-{last}").exists()
    # no effect anywhere: ROI z-scores are noise
    masks = _masks(null_trial)
    zs = []
    for sub, info in truth["subjects"].items():
        ses = next(iter(info["sessions"]))
        z, _ = _fit(null_trial, sub, ses)
        zs += [z[m].mean() for m in masks.values()]
    assert np.max(np.abs(zs)) < 3.0 and abs(np.mean(zs)) < 1.0


def test_ppi_coupling(tmp_path):
    """With ppi=True the target follows the seed during ON blocks only, more so under DUAL."""
    sim = simulate_trial(tmp_path, n_subjects=1, seed=5, n_volumes=100, raw=False, ppi=True)
    assert not list(sim.bids_dir.rglob("*.nii.gz"))  # raw=False: no raw images, but the tables the analysis reads
    assert len(list(sim.bids_dir.rglob("*_events.tsv"))) == 3 and (sim.bids_dir / "participants.tsv").exists()
    ppi = sim.truth["ppi"]
    assert ppi["enabled"] and ppi["coupling"]["DUAL"] > ppi["coupling"]["SCS"]
    masks = _masks(sim)
    onsets = sim.truth["design"]["onsets_s"]
    t = np.arange(100) * 2.0 + 1.0
    on = np.zeros(100, bool)
    for o in onsets:  # ON blocks shifted by the haemodynamic delay
        on |= (t >= o + 6) & (t < o + 20 + 4)
    off = np.zeros(100, bool)
    for o in [0.0, *onsets]:
        off |= (t >= o + (20 if o else 0) + 8) & (t < o + (40 if o else 20) + 2)
    from nilearn.glm.first_level import compute_regressor

    task = compute_regressor(np.array([onsets, [20.0] * len(onsets), [1.0] * len(onsets)]), "glover", t)[0]
    design = np.column_stack([task, np.ones(100), np.linspace(-1, 1, 100), np.linspace(-1, 1, 100) ** 2])
    r = {}
    for ses, info in sim.truth["subjects"]["sub-01"]["sessions"].items():
        data = np.asarray(nib.load(_run_files(sim, "sub-01", ses)["bold"]).dataobj, dtype=np.float64)

        def ts(name):
            x = data[masks[name]].mean(axis=0)
            return x - design @ np.linalg.lstsq(design, x, rcond=None)[0]

        seed, target, other = ts(ppi["seed"]), ts(ppi["target"]), ts("DLPFC_R")
        r[info["condition"]] = {
            "on": np.corrcoef(seed[on], target[on])[0, 1],
            "off": np.corrcoef(seed[off], target[off])[0, 1],
            "other_on": np.corrcoef(seed[on], other[on])[0, 1],
        }
    assert r["DUAL"]["on"] > 0.5 and r["DUAL"]["on"] > r["DUAL"]["off"] + 0.3, r
    assert r["DUAL"]["on"] > r["DUAL"]["other_on"] + 0.3, r
    assert r["DUAL"]["on"] > r["SCS"]["on"], r


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_subjects"):
        simulate_trial(tmp_path, n_subjects=0)
    with pytest.raises(ValueError, match="shorter"):
        simulate_trial(tmp_path, n_volumes=10)


def test_tsnr_of_grey_matter_ignores_voxels_without_signal():
    """A grey-matter voxel moved out of the field of view (all zeros) has no tSNR: the
    median is over the others, not NaN."""
    from fmri_pain.simulate.subject import _tsnr_gm

    rng = np.random.default_rng(0)
    n = 80
    data = 100.0 + rng.normal(0, 2.0, (3, 1, 1, n))
    data[2] = 0.0
    gm = np.zeros((3, 1, 1), dtype=bool)
    gm[:] = True
    t = np.linspace(-1, 1, n)
    x = np.column_stack([t**k for k in range(4)])
    expected = []
    for y in data[:2, 0, 0]:
        resid = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
        expected.append(y.mean() / np.sqrt((resid**2).sum() / (n - 4)))
    assert _tsnr_gm(data, gm, 2.0) == pytest.approx(np.median(expected), rel=1e-6)
