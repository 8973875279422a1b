"""A realistic simulated SCS / DRGS / DUAL crossover fMRI trial with known ground truth.

:func:`simulate_trial` writes three trees under ``OUT``:

``OUT/bids``
    A raw BIDS dataset: ``participants.tsv`` (with the treatment ``sequence`` and the ``pain_side``),
    per-subject ``sessions.tsv`` (condition, period, behaviour), one session per condition, a T1w in
    the first period's session, and one block-design run per session (``trial_type`` ``"on"``).
    The images are in each subject's own native space: the head sits a few mm and degrees away
    from MNI, which the NIfTI affine does *not* encode, so registration is needed. Head motion is
    applied by resampling each volume, and every slice is sampled at its own acquisition time.
``OUT/derivatives/fmriprep``
    What a perfect fMRIPrep would output: the raw data slice-time corrected and resampled to the
    MNI grid with the *true* motion and head position (one interpolation per volume), the brain
    mask, and an fMRIPrep-style confounds table (true motion parameters, FD, DVARS, CompCor ...).
``OUT/truth``
    ``truth.json`` (ROIs, amplitudes used for every session, period effect, transforms, motion,
    HRF, noise) and ``roi-<name>_mask.nii.gz`` on the derivatives' MNI grid.

The simulator shares no code with the analysis it is meant to test.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain._version import __version__
from fmri_pain.simulate import model as M
from fmri_pain.simulate.anatomy import epi_baseline, mni_grid, native_grid, tissue
from fmri_pain.simulate.confounds import compute_confounds
from fmri_pain.simulate.render import (
    bias_field,
    render_raw,
    resample_to_mni,
    slice_time_correct,
)

__all__ = ["SimulatedTrial", "simulate_trial"]

# The simulated brain is built from nilearn's shipped MNI152 files (ICBM 2009a symmetric, on their
# grid), so its "fMRIPrep-style" derivatives are in that template, not fMRIPrep's 2009cAsym.
SPACE = "MNI152NLin2009aSym"
TEMPLATE_NOTE = ("nilearn's bundled MNI152 files (mni_icbm152_*_tal_nlin_sym_09a: ICBM 2009a "
                 "nonlinear symmetric)")
TASK = "stim"
ON_TRIAL_TYPE = "on"

TRANSFORM_CONVENTION = (
    "native_from_mni is a 4x4 matrix in mm: a point at MNI coordinates x (mm) lies at native scanner "
    "coordinates y = native_from_mni @ [x, 1]; the raw images' affines map voxel indices to scanner "
    "coordinates y (they are plain MNI-like grids and do not encode this offset). Head motion of volume "
    "t is the 4x4 pose P_t = rigid(trans_x, trans_y, trans_z [mm], rot_x, rot_y, rot_z [rad]) = "
    "T @ Rx @ Ry @ Rz about the scanner origin, relative to the first volume: the point at y in the "
    "first volume is at P_t @ y in volume t. So raw voxel v of volume t shows MNI point "
    "inv(native_from_mni) @ inv(P_t) @ raw_affine @ v."
)


@dataclass
class SimulatedTrial:
    """Paths of a simulated trial and its ground truth."""

    bids_dir: Path
    derivatives_dir: Path | None
    truth_dir: Path
    truth: dict[str, Any]


# --------------------------------------------------------------------------------------- file I/O
def _atomic_path(path: Path) -> Path:
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    return path.with_name(f".tmp-{os.getpid()}-{path.name[: -len(suffix)] if suffix else path.name}{suffix}")


def _write_nifti(data: np.ndarray, affine: np.ndarray, path: Path, *, xform_code: int,
                 tr: float | None = None) -> None:
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=xform_code)
    img.set_qform(affine, code=xform_code)
    if tr is not None:
        zooms = hdr.get_zooms()
        hdr.set_zooms((*zooms[:3], tr))
    if data.dtype == np.int16:
        hdr.set_slope_inter(1.0, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_path(path)
    nib.save(img, tmp)
    os.replace(tmp, path)


def _write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(obj: Any, path: Path) -> None:
    _write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def _write_tsv(frame: pd.DataFrame, path: Path) -> None:
    _write_text(frame.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n"), path)


# ------------------------------------------------------------------------------------- the plan
def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _plan_subjects(n_subjects: int, seed: int, scale: float, null: bool) -> list[dict[str, Any]]:
    rng = _rng(seed, 0)
    order = rng.permutation(len(M.WILLIAMS))
    subjects = []
    for i in range(n_subjects):
        srng = _rng(seed, 1, i)
        block_right = int(_rng(seed, 2, i // 3).integers(0, 3))  # one right-sided pain in every 3 subjects
        pain_side = "right" if i % 3 == block_right else "left"
        sequence = M.WILLIAMS[order[i % len(M.WILLIAMS)]]
        age = int(srng.integers(35, 76))
        sex = str(srng.choice(["F", "M"]))
        subject_re = {r.name: float(srng.normal(0.0, M.SUBJECT_SD)) for r in M.ROIS}
        session_re = {c: {r.name: float(srng.normal(0.0, M.SESSION_SD)) for r in M.ROIS} for c in M.CONDITIONS}
        offset = M.head_offset(srng)
        latency = float(srng.normal(0.0, M.HRF_PARAMS["subject_latency_sd_s"]))
        bias = srng.normal(0.0, 0.05, size=4)
        vas_baseline = float(srng.uniform(6.0, 8.5))
        sessions = []
        for period, cond in enumerate(sequence, start=1):
            amps = {}
            for roi in M.ROIS:
                active = roi.amplitudes[cond] != 0 and roi.active_when_pain_side in (None, pain_side)
                value = roi.amplitudes[cond] + M.PERIOD_EFFECT * (period - 1) + subject_re[roi.name] \
                    + session_re[cond][roi.name]
                amps[roi.name] = 0.0 if (null or not active) else round(scale * value, 6)
            lateral = np.mean([amps["pINS_L"], amps["pINS_R"], amps["S2_L"], amps["S2_R"]])
            relief = float(np.clip(20.0 + 15.0 * lateral + srng.normal(0.0, 8.0), 0.0, 95.0))
            vas = float(np.clip(vas_baseline * (1 - relief / 100) + srng.normal(0.0, 0.4), 0.0, 10.0))
            if cond == "SCS":
                stim = srng.uniform(2.0, 6.0)
            elif cond == "DRGS":
                stim = srng.uniform(0.3, 1.2)
            else:
                stim = srng.uniform(2.0, 6.0) + srng.uniform(0.3, 1.2)
            sessions.append({"session": cond.lower(), "condition": cond, "period": period, "amplitudes": amps,
                             "pain_relief": round(relief, 1), "vas_pain": round(vas, 1),
                             "stim_amplitude_ma": round(float(stim), 2)})
        subjects.append({
            "label": f"{i + 1:02d}", "index": i, "sequence": sequence, "pain_side": pain_side, "age": age,
            "sex": sex, "offset": offset, "native_from_mni": M.rigid_matrix(offset), "latency": latency,
            "bias": bias, "subject_re": subject_re, "session_re": session_re, "sessions": sessions,
        })
    return subjects


def _plan_run(seed: int, subj: dict, sess: dict, n_volumes: int, tr: float, n_slices: int,
              slice_times: np.ndarray, ppi: bool, null: bool, scale: float) -> M.RunPlan:
    cond_index = M.CONDITIONS.index(sess["condition"])
    rng = _rng(seed, 3, subj["index"], cond_index)
    motion, jerks = M.motion_trajectory(rng, n_volumes)
    n_fine = M.fine_times(n_volumes, tr).size
    gsig = M.smooth_series(rng, n_fine, 4.0, M.NOISE["global_signal_sd_percent"] / 100.0)
    # scanner drift grows with run length (about 0.6 % per 200 s, plus spatial gradients)
    dscale = n_volumes * tr / 200.0
    drift = np.column_stack([rng.normal(0.0, 0.006 * dscale, 2), rng.normal(0.0, 0.003 * dscale, (2, 3))])
    acq_order = np.argsort(slice_times, kind="stable")
    spikes = {}
    for j in jerks:
        length = max(n_slices // 3, 1)
        start = int(rng.integers(0, n_slices - length + 1))
        drop = float(rng.uniform(*M.NOISE["spike_drop_range"]))
        spikes[j] = (np.sort(acq_order[start:start + length]), drop)
    plan = M.RunPlan(
        subject=subj["label"], session=sess["session"], condition=sess["condition"], period=sess["period"],
        n_volumes=n_volumes, tr=tr, roi_amplitudes=sess["amplitudes"], latency=subj["latency"],
        motion=motion, jerks=jerks, rho=float(rng.uniform(*M.NOISE["ar1_rho_range"])), global_signal=gsig,
        drift_coefs=drift, spike_slices=spikes, noise_seed=int(rng.integers(0, 2**31 - 1)),
    )
    if ppi:
        box = M.boxcar(n_volumes, tr)
        neural = {r.name: M.smooth_series(rng, n_fine, 1.0, 1.0) for r in M.ROIS}
        for roi in M.ROIS:
            bold = M.convolve(neural[roi.name], subj["latency"])
            plan.roi_fluct[roi.name] = bold * (M.PPI_FLUCT_PSC / bold.std())
        seed_bold = M.convolve(neural[M.PPI_SEED], subj["latency"])
        factor = M.PPI_FLUCT_PSC / seed_bold.std()
        coupling = 0.0 if null else scale * M.PPI_COUPLING[sess["condition"]]
        plan.roi_fluct[M.PPI_TARGET] = plan.roi_fluct[M.PPI_TARGET] + coupling * factor * M.convolve(
            neural[M.PPI_SEED] * box, subj["latency"])
        plan.ppi_coupling = coupling
    return plan


# --------------------------------------------------------------------------------- rendering
def _tsnr_gm(data: np.ndarray, gm: np.ndarray, tr: float) -> float:
    """Median grey-matter tSNR after removing a cubic trend and the 128 s cosine basis."""
    y = data[gm].T.astype(np.float64)
    n = y.shape[0]
    t = np.linspace(-1, 1, n)
    x = np.column_stack([t**k for k in range(4)])
    q, _ = np.linalg.qr(x)
    resid = y - q @ (q.T @ y)
    return float(np.median(y.mean(axis=0) / resid.std(axis=0, ddof=4)))


def _simulate_subject(args: dict) -> dict:
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
                   _rng(seed, 4, subj["index"]))
    for sess in sessions:
        ses = f"ses-{sess['session']}"
        stem = f"{sub}_{ses}_task-{TASK}_run-1"
        plan = _plan_run(seed, subj, sess, n_vol, tr, nat_shape[2], slice_times, args["ppi"], args["null"],
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
            _write_nifti(raw16, nat_affine, func / f"{stem}_bold.nii.gz", xform_code=1, tr=tr)
        # events and sidecars are written even without the raw images: the analysis reads them from there
        _write_json(_bold_sidecar(tr, slice_times), func / f"{stem}_bold.json")
        onsets = M.block_onsets(n_vol, tr)
        events = pd.DataFrame({"onset": onsets, "duration": M.BLOCK_S, "trial_type": ON_TRIAL_TYPE})
        _write_tsv(events, func / f"{stem}_events.tsv")
        if args["derivatives"]:
            stc = slice_time_correct(raw16.astype(np.float32), slice_times, tr, tzero)
            pre = resample_to_mni(stc, plan.motion, nat_affine, t2m, shape, affine)
            del stc
            ddir = deriv / sub / ses / "func"
            brain = mni.brain_mask
            frame, meta = compute_confounds(pre, brain, mni.wm, mni.csf, plan.motion, tr)
            run_truth["tsnr_gm_median"] = round(_tsnr_gm(pre, (mni.gm > 0.6) & brain, tr), 2)
            prefix = f"{stem}_space-{SPACE}"
            _write_nifti(np.asfortranarray(np.clip(np.round(pre), 0, 32767).astype(np.int16)), affine,
                         ddir / f"{prefix}_desc-preproc_bold.nii.gz", xform_code=4, tr=tr)
            _write_json({"RepetitionTime": tr, "TaskName": TASK, "SkullStripped": False,
                         "SliceTimingCorrected": True, "StartTime": tzero,
                         "Sources": [f"bids:raw:{sub}/{ses}/func/{stem}_bold.nii.gz"],
                         "SpatialReference": {"Space": SPACE, "Template": TEMPLATE_NOTE}},
                        ddir / f"{prefix}_desc-preproc_bold.json")
            _write_nifti(brain.astype(np.uint8), affine, ddir / f"{prefix}_desc-brain_mask.nii.gz", xform_code=4)
            _write_json({"Type": "Brain", "RawSources": [f"{sub}/{ses}/func/{stem}_bold.nii.gz"]},
                        ddir / f"{prefix}_desc-brain_mask.json")
            _write_tsv(frame, ddir / f"{stem}_desc-confounds_timeseries.tsv")
            _write_json(meta, ddir / f"{stem}_desc-confounds_timeseries.json")
        subject_truth["sessions"][ses] = {
            "condition": sess["condition"], "period": sess["period"], "amplitudes": sess["amplitudes"],
            "pain_relief": sess["pain_relief"], "vas_pain": sess["vas_pain"],
            "stim_amplitude_ma": sess["stim_amplitude_ma"], "runs": {"run-1": run_truth},
        }
    return subject_truth


def _bold_sidecar(tr: float, slice_times: np.ndarray) -> dict:
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
    _write_nifti(np.clip(np.round(np.abs(t1)), 0, 32767).astype(np.int16), affine, path, xform_code=1)


# ------------------------------------------------------------------------------------- top level
def simulate_trial(output_dir: str | Path, n_subjects: int = 6, seed: int = 0, *, voxel_size: float = 4.0,
                   n_volumes: int = 100, tr: float = 2.0, derivatives: bool = True, raw: bool = True,
                   null: bool = False, ppi: bool = False, effect_scale: float = 1.0,
                   dropout: bool = False) -> SimulatedTrial:
    """Simulate the crossover trial and write raw BIDS, fMRIPrep-style derivatives and ground truth.

    Parameters
    ----------
    output_dir : str or Path
        ``OUT``; receives ``bids/``, ``derivatives/fmriprep/`` and ``truth/``.
    n_subjects : int
        Subjects; sequences follow the six Williams sequences of three treatments in a seeded order.
    seed : int
        Everything random derives from it: the same seed gives identical data.
    voxel_size : float
        Isotropic voxel size (mm) of the BOLD grids (MNI-like; nilearn's MNI152 grid for integers).
    n_volumes, tr : int, float
        Volumes per run and repetition time (s). Blocks: 20 s OFF, 20 s ON, ...
    derivatives, raw : bool
        Which images to write. ``raw=False`` skips the raw NIfTI images (BOLD, T1w) but still writes the
        BIDS tables and sidecars (participants, sessions, events), which the analysis reads; the ground
        truth is always written.
    null : bool
        No stimulus effect anywhere (amplitudes, period effect, random effects, PPI coupling all 0).
    ppi : bool
        Add intrinsic ROI fluctuations and a condition-dependent seed->target coupling during ON blocks.
    effect_scale : float
        Multiplies every effect (amplitudes, random effects, period effect, coupling).
    dropout : bool
        The last subject drops out before its last period (it has 2 sessions).

    Returns
    -------
    SimulatedTrial

    Notes
    -----
    Subjects are simulated in up to two worker processes (``FMRI_PAIN_SIM_WORKERS`` overrides, 1 = in
    process); every random draw is keyed by (seed, subject, condition), so the output does not depend on
    the number of workers, and subject ``k`` is the same whatever ``n_subjects`` is.
    """
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    if n_volumes < 4:
        raise ValueError(f"n_volumes must be >= 4, got {n_volumes}")
    if voxel_size <= 0 or tr <= 0:
        raise ValueError(f"voxel_size and tr must be positive, got {voxel_size}, {tr}")
    if not (raw or derivatives):
        raise ValueError("nothing to write: raw and derivatives are both False")
    if n_volumes * tr < 2 * M.BLOCK_S:
        raise ValueError(f"a run of {n_volumes} x {tr} s is shorter than one OFF+ON cycle ({2 * M.BLOCK_S} s)")
    start = time.perf_counter()
    out = Path(output_dir)
    bids_dir, deriv_dir, truth_dir = out / "bids", out / "derivatives" / "fmriprep", out / "truth"
    scale = float(effect_scale)
    subjects = _plan_subjects(n_subjects, seed, scale, null)
    mni = tissue(float(voxel_size))
    tissue(2.0 if voxel_size >= 3 else 1.0)  # warm the cache before any worker forks

    jobs = []
    for subj in subjects:
        n_sess = 2 if (dropout and subj["index"] == n_subjects - 1) else 3
        jobs.append({"subject": subj, "out": out, "seed": seed, "voxel_size": float(voxel_size),
                     "n_volumes": n_volumes, "tr": float(tr), "raw": raw, "derivatives": derivatives,
                     "null": null, "ppi": ppi, "effect_scale": scale, "n_sessions": n_sess})
    n_workers = _n_workers(len(jobs))
    if n_workers > 1:
        import multiprocessing
        import threading

        # fork shares the cached tissue maps for free, but is unsafe once other threads run (dask, BLAS pools
        # started by a caller): then pay for fresh interpreters instead.
        method = "fork" if threading.active_count() == 1 else "spawn"
        with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context(method)) as pool:
            results = list(pool.map(_simulate_subject, jobs))
    else:
        results = [_simulate_subject(job) for job in jobs]

    _write_dataset_files(bids_dir, subjects, jobs)
    if derivatives:
        _write_json({"Name": "fMRIPrep-style derivatives of the simulated trial", "BIDSVersion": "1.8.0",
                     "DatasetType": "derivative",
                     "GeneratedBy": [{"Name": "fmri-pain-simulator", "Version": __version__,
                                      "Description": "true-transform preprocessing of the simulated raw data"}]},
                    deriv_dir / "dataset_description.json")
    truth = _truth(subjects, results, jobs, seed=seed, voxel_size=float(voxel_size), n_volumes=n_volumes,
                   tr=float(tr), null=null, ppi=ppi, scale=scale, dropout=dropout)
    _write_roi_masks(truth_dir, mni.shape, mni.affine)
    truth["generation_seconds"] = round(time.perf_counter() - start, 2)
    _write_json(truth, truth_dir / "truth.json")
    return SimulatedTrial(bids_dir=bids_dir, derivatives_dir=deriv_dir if derivatives else None,
                          truth_dir=truth_dir, truth=truth)


def _n_workers(n_jobs: int) -> int:
    env = os.environ.get("FMRI_PAIN_SIM_WORKERS")
    if env:
        return max(1, min(int(env), n_jobs))
    return max(1, min(2, os.cpu_count() or 1, n_jobs))


def _write_roi_masks(truth_dir: Path, shape: tuple[int, int, int], affine: np.ndarray) -> None:
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    for roi in M.ROIS:
        d = np.sqrt(((xyz - np.array(roi.centre)[:, None]) ** 2).sum(axis=0))
        mask = (d <= roi.radius).reshape(shape).astype(np.uint8)
        _write_nifti(mask, affine, truth_dir / f"roi-{roi.name}_mask.nii.gz", xform_code=4)


def _write_dataset_files(bids_dir: Path, subjects: list[dict], jobs: list[dict]) -> None:
    _write_json({"Name": "Simulated SCS/DRGS/DUAL crossover trial (fmri-pain simulator)", "BIDSVersion": "1.8.0",
                 "DatasetType": "raw", "License": "CC0",
                 "Authors": ["fmri-pain simulator"],
                 "GeneratedBy": [{"Name": "fmri-pain-simulator", "Version": __version__}]},
                bids_dir / "dataset_description.json")
    _write_text(
        "# Simulated crossover trial\n\nPatients with refractory neuropathic leg pain receive spinal cord "
        "stimulation (SCS), dorsal root ganglion stimulation (DRGS) and both (DUAL) in a randomised "
        "crossover (Williams sequences). Each session ends with a block-design fMRI run, stimulator ON "
        "(trial_type 'on', 20 s) vs OFF (implicit baseline, 20 s). Simulated by fmri-pain; the ground "
        "truth is in ../truth/truth.json.\n", bids_dir / "README")
    rows = [{"participant_id": f"sub-{s['label']}", "sequence": "-".join(s["sequence"]), "age": s["age"],
             "sex": s["sex"], "pain_side": s["pain_side"]} for s in subjects]
    _write_tsv(pd.DataFrame(rows), bids_dir / "participants.tsv")
    _write_json({
        "sequence": {"Description": "treatment order, period 1 first (Williams design)"},
        "age": {"Description": "age at enrolment", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
        "pain_side": {"Description": "side of the painful leg",
                      "Levels": {"left": "left leg", "right": "right leg"}},
    }, bids_dir / "participants.json")
    _write_json({"TaskName": TASK, "TaskDescription": "spinal/DRG stimulator switched ON and OFF in 20 s blocks"},
                bids_dir / f"task-{TASK}_bold.json")
    _write_json({"trial_type": {"Description": "stimulator state", "Levels": {ON_TRIAL_TYPE: "stimulator ON"}},
                 "onset": {"Units": "s"}, "duration": {"Units": "s"}}, bids_dir / f"task-{TASK}_events.json")
    for subj, job in zip(subjects, jobs):
        sub = f"sub-{subj['label']}"
        rows = [{"session_id": f"ses-{s['session']}", "condition": s["condition"], "period": s["period"],
                 "vas_pain": s["vas_pain"], "pain_relief": s["pain_relief"],
                 "stim_amplitude_ma": s["stim_amplitude_ma"]} for s in subj["sessions"][: job["n_sessions"]]]
        _write_tsv(pd.DataFrame(rows), bids_dir / sub / f"{sub}_sessions.tsv")
        _write_json({
            "condition": {"Description": "treatment of the period ending with this session",
                          "Levels": {"SCS": "spinal cord stimulation", "DRGS": "dorsal root ganglion stimulation",
                                     "DUAL": "SCS and DRGS together"}},
            "period": {"Description": "treatment period (1..3) in the crossover"},
            "vas_pain": {"Description": "pain intensity, visual analogue scale", "Units": "0-10"},
            "pain_relief": {"Description": "pain relief from baseline", "Units": "%"},
            "stim_amplitude_ma": {"Description": "stimulation amplitude (DUAL: sum of both)", "Units": "mA"},
        }, bids_dir / sub / f"{sub}_sessions.json")


def _truth(subjects: list[dict], results: list[dict], jobs: list[dict], **params: Any) -> dict[str, Any]:
    scale = 0.0 if params["null"] else params["scale"]
    fine = M.fine_times(params["n_volumes"], params["tr"])
    rois = []
    for roi in M.ROIS:
        entry = roi.to_json()
        entry["amplitudes"] = {c: round(scale * v, 6) for c, v in roi.amplitudes.items()}
        entry["mask"] = f"roi-{roi.name}_mask.nii.gz"
        rois.append(entry)
    subj_truth = {}
    for subj, res, job in zip(subjects, results, jobs):
        subj_truth[f"sub-{subj['label']}"] = {
            "sequence": "-".join(subj["sequence"]),
            "pain_side": subj["pain_side"],
            "n_sessions": job["n_sessions"],
            "native_from_mni": np.round(subj["native_from_mni"], 10).tolist(),
            "head_offset_params": np.round(subj["offset"], 10).tolist(),
            "hrf_latency_s": round(subj["latency"], 4),
            "random_effects_percent": {k: round(0.0 if params["null"] else scale * v, 6)
                                       for k, v in subj["subject_re"].items()},
            **res,
        }
    return {
        "description": "Ground truth of the simulated crossover trial (fmri-pain simulator).",
        "simulator_version": __version__,
        "parameters": {k: params[k] for k in ("seed", "voxel_size", "n_volumes", "tr", "null", "ppi", "dropout")}
        | {"effect_scale": params["scale"], "n_subjects": len(subjects)},
        "space": {"name": SPACE, "template": TEMPLATE_NOTE,
                  "grid": "nilearn MNI152 grid corner (-98, -134, -72) mm at voxel_size",
                  "note": "ROI masks and derivatives share this grid"},
        "conditions": list(M.CONDITIONS),
        "design": {"task": TASK, "trial_type": ON_TRIAL_TYPE, "block_s": M.BLOCK_S,
                   "onsets_s": M.block_onsets(params["n_volumes"], params["tr"]).tolist(),
                   "baseline": "OFF blocks (implicit, not in events.tsv)"},
        "amplitude_definition": (
            "percent signal change of the ON vs OFF plateau relative to the voxel's baseline, uniform inside "
            "an ROI's radius, tapering as a Gaussian (SD 2 mm) outside; the HRF has unit area so a long "
            "block plateaus at the amplitude. Per-session amplitudes actually used are under subjects. With "
            "the 20 s blocks a nilearn GLM (mean scaling) reads them about 0.9x with hrf_model='spm' and about "
            "0.65x with 'glover', whose large overshoot dominates short blocks."),
        "rois": rois,
        "period_effect": {
            "percent_per_period": round(scale * M.PERIOD_EFFECT, 6),
            "sign": "negative (habituation): later periods respond less" if scale * M.PERIOD_EFFECT < 0
            else ("none" if scale == 0 else "positive"),
            "definition": "added to every active ROI amplitude: percent_per_period * (period - 1)",
        },
        "random_effects": {"subject_sd_percent": scale * M.SUBJECT_SD, "subject_by_condition_sd_percent":
                           scale * M.SESSION_SD,
                           "definition": "amplitude = effect_scale * (roi amplitude[condition] + period effect "
                                         "+ subject effect[roi] + subject-by-condition effect[roi])"},
        "behaviour": {"pain_relief": "clip(20 + 15 * mean amplitude of S2_L, S2_R, pINS_L, pINS_R + N(0, 8), 0, 95) %",
                      "vas_pain": "baseline VAS (U 6-8.5) * (1 - relief/100) + N(0, 0.4)"},
        "hrf": {**M.HRF_PARAMS, "sampled_s": np.round(np.arange(0, 32.0, 0.5), 2).tolist(),
                "values": np.round(M.hrf(np.arange(0, 32.0, 0.5)), 6).tolist()},
        "noise": {**M.NOISE, "tsnr_target_gm": [60, 100]},
        "slice_timing": {"order": "ascending interleaved (0, 2, 4, ..., 1, 3, ...) along the 3rd axis",
                         "derivatives_reference_s": "StartTime in the preproc bold JSON (0.5 x max slice time)"},
        "transform_convention": TRANSFORM_CONVENTION,
        "ppi": {"enabled": params["ppi"], "seed": M.PPI_SEED, "target": M.PPI_TARGET,
                "coupling": {c: round(scale * v, 6) for c, v in M.PPI_COUPLING.items()},
                "fluctuation_sd_percent": M.PPI_FLUCT_PSC,
                "definition": "every ROI gets an independent intrinsic fluctuation (HRF-convolved smoothed "
                              "noise, SD fluctuation_sd_percent); the target also gets coupling[condition] x "
                              "HRF * (seed neural signal x ON boxcar), i.e. coupling only during ON blocks; "
                              "all other pairs are uncoupled"},
        "fine_time_step_s": M.DT,
        "run_duration_s": float(fine[-1]),
        "subjects": subj_truth,
    }
