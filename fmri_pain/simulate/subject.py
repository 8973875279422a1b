"""One simulated subject: render its runs and write its raw BIDS images, tables and derivatives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmri_pain.simulate import model as M
from fmri_pain.simulate.anatomy import epi_baseline, mni_grid, native_grid, tissue
from fmri_pain.simulate.confounds import compute_confounds
from fmri_pain.simulate.files import write_json, write_nifti, write_tsv
from fmri_pain.simulate.layout import ON_TRIAL_TYPE, SPACE, TASK, TEMPLATE_NOTE
from fmri_pain.simulate.plan import keyed_rng, plan_run
from fmri_pain.simulate.render import bias_field, render_raw, resample_to_mni, slice_time_correct


def _tsnr_gm(data: np.ndarray, gm: np.ndarray, tr: float) -> float:
    """Median grey-matter tSNR after removing a cubic trend."""
    y = data[gm].T.astype(np.float64)
    n = y.shape[0]
    t = np.linspace(-1, 1, n)
    x = np.column_stack([t**k for k in range(4)])
    q, _ = np.linalg.qr(x)
    resid = y - q @ (q.T @ y)
    sd = resid.std(axis=0, ddof=4)
    # voxels with no signal left in the field of view (sd 0) have no tSNR, not NaN or inf
    keep = sd > 0
    return float(np.median(y.mean(axis=0)[keep] / sd[keep])) if keep.any() else float("nan")


def simulate_subject(args: dict) -> dict:
    """Render and write one subject's runs (a job of :func:`~fmri_pain.simulate.simulate_trial`); returns its truth."""
    subj = args["subject"]
    out: Path = args["out"]
    seed, vs, n_vol, tr = args["seed"], args["voxel_size"], args["n_volumes"], args["tr"]
    bids, deriv = out / "bids", out / "derivatives" / "fmriprep"
    fine_vs = 2.0 if vs >= 3 else 1.0
    fine = tissue(fine_vs)
    s0_fine = epi_baseline(fine)
    mni = tissue(vs)
    shape, affine = mni.shape, mni.affine
    nat_shape, nat_affine = native_grid(vs)
    slice_times = M.slice_timing(nat_shape[2], tr)
    tzero = round(0.5 * float(slice_times.max()), 4)
    sub = f"sub-{subj['label']}"
    t2m = subj["native_from_mni"]
    sessions = subj["sessions"][: args["n_sessions"]]
    subject_truth: dict[str, Any] = {"sessions": {}}

    if args["raw"]:
        first = sessions[0]["session"]
        _write_t1w(bids / sub / f"ses-{first}" / "anat" / f"{sub}_ses-{first}_T1w.nii.gz", t2m, subj["bias"],
                   keyed_rng(seed, 4, subj["index"]))
    for sess in sessions:
        ses = f"ses-{sess['session']}"
        stem = f"{sub}_{ses}_task-{TASK}_run-1"
        plan = plan_run(seed, subj, sess, n_vol, tr, nat_shape[2], slice_times, args["ppi"], args["null"],
                        args["effect_scale"])
        raw = render_raw(plan, s0_fine, fine.affine, nat_shape, nat_affine, t2m, slice_times, subj["bias"])
        raw16 = np.asfortranarray(np.clip(np.round(raw), 0, 32767).astype(np.int16))
        del raw
        run_truth: dict[str, Any] = {
            "motion": np.round(plan.motion, 6).tolist(),
            "motion_columns": list(M.MOTION_COLUMNS),
            "jerk_volumes": plan.jerks,
            "spike_volumes": {str(k): {"slices": v[0].tolist(), "intensity_drop": round(v[1], 4)}
                              for k, v in plan.spike_slices.items()},
            "ar1_rho": plan.rho,
            "framewise_displacement": np.round(M.framewise_displacement(plan.motion), 6).tolist(),
        }
        if args["ppi"]:
            run_truth["ppi_coupling"] = plan.ppi_coupling
        func = bids / sub / ses / "func"
        if args["raw"]:
            write_nifti(raw16, nat_affine, func / f"{stem}_bold.nii.gz", xform_code=1, tr=tr)
        # events and sidecars are written even without the raw images: the analysis reads them from there
        write_json(_bold_sidecar(tr, slice_times), func / f"{stem}_bold.json")
        onsets = M.block_onsets(n_vol, tr)
        events = pd.DataFrame({"onset": onsets, "duration": M.BLOCK_S, "trial_type": ON_TRIAL_TYPE})
        write_tsv(events, func / f"{stem}_events.tsv")
        if args["derivatives"]:
            stc = slice_time_correct(raw16.astype(np.float32), slice_times, tr, tzero)
            pre = resample_to_mni(stc, plan.motion, nat_affine, t2m, shape, affine)
            del stc
            ddir = deriv / sub / ses / "func"
            brain = mni.brain_mask
            frame, meta = compute_confounds(pre, brain, mni.wm, mni.csf, plan.motion, tr)
            run_truth["tsnr_gm_median"] = round(_tsnr_gm(pre, (mni.gm > 0.6) & brain, tr), 2)
            prefix = f"{stem}_space-{SPACE}"
            write_nifti(np.asfortranarray(np.clip(np.round(pre), 0, 32767).astype(np.int16)), affine,
                        ddir / f"{prefix}_desc-preproc_bold.nii.gz", xform_code=4, tr=tr)
            write_json({"RepetitionTime": tr, "TaskName": TASK, "SkullStripped": False,
                        "SliceTimingCorrected": True, "StartTime": tzero,
                        "Sources": [f"bids:raw:{sub}/{ses}/func/{stem}_bold.nii.gz"],
                        "SpatialReference": {"Space": SPACE, "Template": TEMPLATE_NOTE}},
                       ddir / f"{prefix}_desc-preproc_bold.json")
            write_nifti(brain.astype(np.uint8), affine, ddir / f"{prefix}_desc-brain_mask.nii.gz", xform_code=4)
            write_json({"Type": "Brain", "RawSources": [f"{sub}/{ses}/func/{stem}_bold.nii.gz"]},
                       ddir / f"{prefix}_desc-brain_mask.json")
            write_tsv(frame, ddir / f"{stem}_desc-confounds_timeseries.tsv")
            write_json(meta, ddir / f"{stem}_desc-confounds_timeseries.json")
        subject_truth["sessions"][ses] = {
            "condition": sess["condition"], "period": sess["period"], "amplitudes": sess["amplitudes"],
            "carryover_from": sess.get("carryover_from"),
            "carryover_percent": sess.get("carryover_percent", 0.0),
            "pain_relief": sess["pain_relief"], "vas_pain": sess["vas_pain"],
            "stim_amplitude_ma": sess["stim_amplitude_ma"], "runs": {"run-1": run_truth},
        }
    return subject_truth


def _bold_sidecar(tr: float, slice_times: np.ndarray) -> dict:
    """The raw BOLD JSON sidecar."""
    return {
        "TaskName": TASK,
        "RepetitionTime": tr,
        "SliceTiming": [float(v) for v in slice_times],
        "SliceEncodingDirection": "k",
        "PhaseEncodingDirection": "j-",
        "EffectiveEchoSpacing": 0.00058,
        "TotalReadoutTime": 0.0348,
        "EchoTime": 0.03,
        "FlipAngle": 80,
        "MagneticFieldStrength": 3,
        "Manufacturer": "Simulated",
        "InstitutionName": "fmri-pain simulator",
    }


def _write_t1w(path: Path, native_from_mni: np.ndarray, bias_coefs: np.ndarray, rng: np.random.Generator) -> None:
    """A native-space T1w: the 1 mm template moved by the head offset, bias field and noise, at 2 mm."""
    from nilearn import datasets  # the template's 1 mm T1 image; native space at 2 mm
    from scipy import ndimage

    src = datasets.load_mni152_template(resolution=1)
    data = np.asarray(src.dataobj, dtype=np.float32)
    shape, affine = mni_grid(2.0)
    q = np.linalg.inv(src.affine) @ np.linalg.inv(native_from_mni) @ affine
    t1 = ndimage.affine_transform(data, q[:3, :3], q[:3, 3], output_shape=shape, order=1)
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape((3, *shape))
    t1 = t1 * 800.0 * bias_field(xyz, bias_coefs) + rng.normal(0.0, 12.0, size=shape)
    write_nifti(np.clip(np.round(np.abs(t1)), 0, 32767).astype(np.int16), affine, path, xform_code=1)
