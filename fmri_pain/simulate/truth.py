"""The ground truth of a simulated trial: the ``truth.json`` record and the ROI masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmri_pain._version import __version__
from fmri_pain.simulate import model as M
from fmri_pain.simulate.files import write_nifti
from fmri_pain.simulate.layout import ON_TRIAL_TYPE, SPACE, TASK, TEMPLATE_NOTE

TRANSFORM_CONVENTION = (
    "native_from_mni is a 4x4 matrix in mm: a point at MNI coordinates x (mm) lies at native scanner "
    "coordinates y = native_from_mni @ [x, 1]; the raw images' affines map voxel indices to scanner "
    "coordinates y (they are plain MNI-like grids and do not encode this offset). Head motion of volume "
    "t is the 4x4 pose P_t = rigid(trans_x, trans_y, trans_z [mm], rot_x, rot_y, rot_z [rad]) = "
    "T @ Rx @ Ry @ Rz about the scanner origin, relative to the first volume: the point at y in the "
    "first volume is at P_t @ y in volume t. So raw voxel v of volume t shows MNI point "
    "inv(native_from_mni) @ inv(P_t) @ raw_affine @ v."
)


def write_roi_masks(truth_dir: Path, shape: tuple[int, int, int], affine: np.ndarray) -> None:
    """``roi-<name>_mask.nii.gz``: the voxels within each ROI's radius on the derivatives' grid."""
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    for roi in M.ROIS:
        d = np.sqrt(((xyz - np.array(roi.centre)[:, None]) ** 2).sum(axis=0))
        mask = (d <= roi.radius).reshape(shape).astype(np.uint8)
        write_nifti(mask, affine, truth_dir / f"roi-{roi.name}_mask.nii.gz", xform_code=4)


def truth_record(subjects: list[dict], results: list[dict], jobs: list[dict], **params: Any) -> dict[str, Any]:
    """The ``truth.json`` record of a trial from its plan, the subjects' truths and the parameters."""
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
        "carryover": {
            "after": {c: round(scale * v, 6) for c, v in params.get("carryover", {}).items()},
            "definition": "first-order carry-over: after[condition] percent added to the amplitude of "
                          "every ROI active in the session of the period right after that condition "
                          "(none in period 1); per session under subjects (carryover_from, "
                          "carryover_percent)"},
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

